//! The cleanup branch: safe to repeat and safe when apply never ran (AWS "not found" counts
//! as done). The cluster children go with the pipeline through their ownerReferences.

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::info;

use super::Context;
use crate::api::{DeletionPolicy, TrackingPipeline};
use crate::aws;
use crate::error::Result;

pub async fn cleanup(pipeline: Arc<TrackingPipeline>, ctx: &Context) -> Result<Action> {
    ctx.reset_failures(&pipeline);
    if pipeline.spec.deletion_policy == DeletionPolicy::Retain {
        let note = "deletionPolicy Retain: every AWS resource of this pipeline is left in place";
        info!("{note}");
        ctx.publish(&pipeline, EventType::Normal, "Retained", "Delete", note)
            .await;
        return Ok(Action::await_change());
    }
    let desired = aws::desired(&pipeline, &ctx.config.aws_settings)?;
    let outputs = pipeline.status.clone().unwrap_or_default().outputs;
    let report = aws::delete_all(&ctx.aws, &desired, &outputs).await?;
    for deleted in &report.deleted {
        ctx.publish(&pipeline, EventType::Normal, "Deleted", "Delete", deleted)
            .await;
    }
    for retained in &report.retained {
        ctx.publish(
            &pipeline,
            EventType::Warning,
            "NotDeleted",
            "Delete",
            retained,
        )
        .await;
    }
    info!(
        deleted = report.deleted.len(),
        retained = report.retained.len(),
        "AWS resources deleted"
    );
    Ok(Action::await_change())
}

//! The cleanup branch: safe to repeat and safe when apply never ran (AWS "not found" counts
//! as done). The worker is scaled to zero first, so it does not consume from a queue or
//! write to a table that is going away. Every part is attempted even when one fails; the
//! failures are reported on the object (`Deleting=False` with the AWS code per part, and a
//! Warning Event) and the finalizer stays until the next pass gets them through. The other
//! cluster children go with the pipeline through their ownerReferences.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::Context;
use super::conditions::{self, FALSE, Wanted};
use crate::api::{DeletionPolicy, ManagementPolicy, TrackingPipeline, condition};
use crate::aws;
use crate::error::{Error, Result};
use crate::k8s;

pub async fn cleanup(pipeline: Arc<TrackingPipeline>, ctx: &Context) -> Result<Action> {
    // Observing never writes to AWS, not even on the way out.
    let observing = pipeline.spec.management_policy == ManagementPolicy::Observe;
    if pipeline.spec.deletion_policy == DeletionPolicy::Retain || observing {
        ctx.reset_failures(&pipeline);
        let note = if observing {
            "managementPolicy Observe: every AWS resource is left in place"
        } else {
            "deletionPolicy Retain: every AWS resource of this pipeline is left in place"
        };
        info!("{note}");
        ctx.publish(&pipeline, EventType::Normal, "Retained", "Delete", note)
            .await;
        return Ok(Action::await_change());
    }
    stop_worker(&pipeline, ctx).await?;
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
    if !report.failed.is_empty() {
        let summary = report.failure_summary();
        let message = format!(
            "cleanup of AWS resources failed, retrying: {summary}. Fix the cause (often a \
             missing IAM permission), or set deletionPolicy: Retain to keep the rest and \
             release the pipeline"
        );
        warn!(failed = %summary, "AWS cleanup incomplete");
        set_deleting(&pipeline, ctx, &message).await;
        ctx.publish(
            &pipeline,
            EventType::Warning,
            "DeleteFailed",
            "Delete",
            &message,
        )
        .await;
        // The error policy backs off; the finalizer stays until every part is through.
        let first = &report.failed[0];
        return Err(Error::Aws {
            service: "AWS",
            operation: "cleanup",
            code: first.code.clone(),
            message,
            status: None,
            retryable: true,
        });
    }
    ctx.reset_failures(&pipeline);
    info!(
        deleted = report.deleted.len(),
        retained = report.retained.len(),
        "AWS resources deleted"
    );
    Ok(Action::await_change())
}

/// Scales the worker Deployment to zero before its queue and table go; a missing
/// Deployment (apply never got that far) is fine.
async fn stop_worker(pipeline: &TrackingPipeline, ctx: &Context) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(
        ctx.client.clone(),
        &pipeline.namespace().unwrap_or_default(),
    );
    let name = k8s::deployment_name(pipeline);
    let patch = json!({ "spec": { "replicas": 0 } });
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes `Deleting=False` with the failures; best effort, the Event says the same.
async fn set_deleting(pipeline: &TrackingPipeline, ctx: &Context, message: &str) {
    let mut conds = pipeline
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let wanted = Wanted {
        type_: condition::DELETING,
        status: FALSE,
        reason: "DeleteFailed",
        message,
    };
    conditions::set(
        &mut conds,
        &wanted,
        pipeline.metadata.generation,
        &Time(Timestamp::now()),
    );
    let api: Api<TrackingPipeline> = Api::namespaced(
        ctx.client.clone(),
        &pipeline.namespace().unwrap_or_default(),
    );
    let patch = json!({ "status": { "conditions": conds } });
    if let Err(err) = api
        .patch_status(
            &pipeline.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        warn!(%err, "cannot write the Deleting condition");
    }
}

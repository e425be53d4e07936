//! The apply branch: validate and build the desired state (no client) → converge each AWS
//! part in dependency order, writing identifiers to status as soon as they are known →
//! apply the cluster children → summarise conditions.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::Context;
use super::conditions::{self, FALSE, TRUE, UNKNOWN, Wanted};
use crate::api::{TrackingPipeline, TrackingPipelineStatus, condition};
use crate::aws::{self, Part, PartReport, Readiness};
use crate::error::{Error, Result};
use crate::k8s;

/// Every condition the pipeline reports besides kstatus'.
const REPORTED: [&str; 7] = [
    condition::KEYS_READY,
    condition::QUEUES_READY,
    condition::TABLE_READY,
    condition::ALERTS_READY,
    condition::SCHEDULE_READY,
    condition::WORKER_READY,
    condition::READY,
];

/// One pass over a pipeline's status: what it was, what we last wrote, what it is becoming.
struct StatusWriter {
    api: Api<TrackingPipeline>,
    name: String,
    generation: Option<i64>,
    original: TrackingPipelineStatus,
    written: TrackingPipelineStatus,
    pub current: TrackingPipelineStatus,
}

impl StatusWriter {
    fn set(&mut self, type_: &str, status: &str, reason: &str, message: &str) {
        let wanted = Wanted {
            type_,
            status,
            reason,
            message,
        };
        conditions::set(
            &mut self.current.conditions,
            &wanted,
            self.generation,
            &now(),
        );
    }

    /// Writes the status when it changed since the last write; a steady state writes nothing.
    async fn flush(&mut self) -> Result<()> {
        if self.current == self.written {
            return Ok(());
        }
        self.api
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": self.current })),
            )
            .await?;
        self.written = self.current.clone();
        Ok(())
    }
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// How a part's failure reads in its condition: the AWS error code first.
fn failure_reason(err: &Error) -> (&'static str, String) {
    if err.is_conflict() {
        return ("Conflict", err.to_string());
    }
    match err.aws_code() {
        Some(code) => ("AwsError", format!("{code}: {err}")),
        None if err.is_retryable() => ("AwsUnreachable", err.to_string()),
        None => ("Error", err.to_string()),
    }
}

pub async fn apply(pipeline: Arc<TrackingPipeline>, ctx: &Context) -> Result<Action> {
    let namespace = pipeline.namespace().unwrap_or_default();
    let name = pipeline.name_any();
    let original = pipeline.status.clone().unwrap_or_default();
    let mut status = StatusWriter {
        api: Api::namespaced(ctx.client.clone(), &namespace),
        name: name.clone(),
        generation: pipeline.metadata.generation,
        written: original.clone(),
        current: original.clone(),
        original,
    };

    // First pass of a generation: every condition exists (Unknown if new) and kstatus says
    // we are working on it, before anything slow happens.
    let now = now();
    for type_ in REPORTED {
        conditions::ensure_present(
            &mut status.current.conditions,
            type_,
            status.generation,
            &now,
        );
    }
    if status.current.observed_generation != status.generation {
        status.current.observed_generation = status.generation;
        conditions::set_or_remove(
            &mut status.current.conditions,
            condition::RECONCILING,
            Some((
                "NewGeneration",
                "converging AWS and cluster resources to the new spec",
            )),
            status.generation,
            &now,
        );
    }
    status.flush().await?;

    let desired = match aws::desired(&pipeline, &ctx.config.aws_settings) {
        Ok(desired) => desired,
        Err(err) => {
            // Only a spec that bypassed validation gets here; retrying cannot help.
            let message = err.to_string();
            status.set(condition::READY, FALSE, "InvalidSpec", &message);
            stall(&mut status, "InvalidSpec", &message);
            status.flush().await?;
            ctx.publish(
                &pipeline,
                EventType::Warning,
                "InvalidSpec",
                "Validate",
                &message,
            )
            .await;
            return Ok(Action::await_change());
        }
    };

    let mut not_ready: Option<(String, String)> = None;
    for part in Part::ALL {
        let mut outputs = status.current.outputs.clone();
        let result = aws::ensure(&ctx.aws, &desired, part, &mut outputs).await;
        status.current.outputs = outputs;
        let result = match (part, result) {
            (Part::WorkerIdentity, Ok(report)) if report.is_ready() => {
                apply_children(&pipeline, ctx, &mut status, report).await
            }
            (_, result) => result,
        };
        match result {
            Ok(report) => {
                announce(&pipeline, ctx, &report).await;
                match report.readiness {
                    Readiness::Ready => status.set(
                        part.condition_type(),
                        TRUE,
                        "Ready",
                        &ready_message(part, &status.current),
                    ),
                    Readiness::NotReady { reason, message } => {
                        status.set(part.condition_type(), FALSE, &reason, &message);
                        not_ready.get_or_insert((reason, format!("{}: {message}", part.as_str())));
                    }
                }
                status.flush().await?;
            }
            Err(err) => {
                let (reason, message) = failure_reason(&err);
                status.set(part.condition_type(), FALSE, reason, &message);
                status.set(
                    condition::READY,
                    FALSE,
                    reason,
                    &format!("{}: {message}", part.as_str()),
                );
                ctx.publish(
                    &pipeline,
                    EventType::Warning,
                    reason,
                    part.as_str(),
                    &message,
                )
                .await;
                if err.is_conflict() {
                    // A human must resolve it; retrying on a timer would only repeat the Event.
                    stall(&mut status, "Conflict", &message);
                    finish(&pipeline, ctx, &mut status).await?;
                    return Ok(Action::requeue(ctx.config.resync_interval));
                }
                conditions::set_or_remove(
                    &mut status.current.conditions,
                    condition::RECONCILING,
                    Some(("Retrying", message.as_str())),
                    status.generation,
                    &Time(Timestamp::now()),
                );
                finish(&pipeline, ctx, &mut status).await?;
                return Err(err);
            }
        }
    }

    conditions::set_or_remove(
        &mut status.current.conditions,
        condition::STALLED,
        None,
        status.generation,
        &now,
    );
    let action = match &not_ready {
        None => {
            status.set(
                condition::READY,
                TRUE,
                "Ready",
                "every AWS resource and the worker are provisioned",
            );
            conditions::set_or_remove(
                &mut status.current.conditions,
                condition::RECONCILING,
                None,
                status.generation,
                &now,
            );
            Action::requeue(ctx.config.resync_interval)
        }
        Some((reason, message)) => {
            status.set(condition::READY, FALSE, reason, message);
            conditions::set_or_remove(
                &mut status.current.conditions,
                condition::RECONCILING,
                Some((reason.as_str(), message.as_str())),
                status.generation,
                &now,
            );
            Action::requeue(ctx.config.not_ready_requeue)
        }
    };
    finish(&pipeline, ctx, &mut status).await?;
    ctx.reset_failures(&pipeline);
    Ok(action)
}

fn stall(status: &mut StatusWriter, reason: &str, message: &str) {
    let generation = status.generation;
    let now = now();
    let conditions = &mut status.current.conditions;
    conditions::set_or_remove(
        conditions,
        condition::STALLED,
        Some((reason, message)),
        generation,
        &now,
    );
    conditions::set_or_remove(conditions, condition::RECONCILING, None, generation, &now);
}

/// Writes the final status and announces condition transitions as Events.
async fn finish(
    pipeline: &TrackingPipeline,
    ctx: &Context,
    status: &mut StatusWriter,
) -> Result<()> {
    status.flush().await?;
    for changed in conditions::transitions(&status.original.conditions, &status.current.conditions)
    {
        let type_ = if changed.status == FALSE {
            EventType::Warning
        } else {
            EventType::Normal
        };
        if changed.status == UNKNOWN || changed.type_ == condition::RECONCILING {
            continue;
        }
        let reason = if changed.status == TRUE {
            changed.type_.clone()
        } else {
            changed.reason.clone()
        };
        ctx.publish(pipeline, type_, &reason, &changed.type_, &changed.message)
            .await;
    }
    Ok(())
}

fn ready_message(part: Part, status: &TrackingPipelineStatus) -> String {
    let o = &status.outputs;
    let shown = match part {
        Part::Keys => o.queue_key_arn.clone(),
        Part::Queues => o.queue_url.clone(),
        Part::Table => o.table_name.clone(),
        Part::Alerts => o.alert_topic_arn.clone(),
        Part::Schedule => o.schedule_arn.clone(),
        Part::WorkerIdentity => o.outputs_config_map.clone(),
    };
    match shown {
        Some(id) => format!("{} ready: {id}", part.as_str()),
        None => format!("{} ready", part.as_str()),
    }
}

/// One Event per resource created and per attribute repaired. The action names the
/// resource because kube's Recorder folds Events with equal reason and action into one
/// series, keeping only the first note.
async fn announce(pipeline: &TrackingPipeline, ctx: &Context, report: &PartReport) {
    for created in &report.created {
        info!(resource = %created, "created");
        let action = format!("Create {created}");
        ctx.publish(pipeline, EventType::Normal, "Created", &action, created)
            .await;
    }
    for repaired in &report.repaired {
        warn!(attribute = %repaired, "repaired drift");
        let action = format!("Repair {repaired}");
        ctx.publish(
            pipeline,
            EventType::Normal,
            "DriftRepaired",
            &action,
            repaired,
        )
        .await;
    }
}

/// The worker's ServiceAccount, outputs ConfigMap and Deployment, once the worker identity
/// exists. They join the WorkerReady condition: the worker is ready when it can run.
async fn apply_children(
    pipeline: &TrackingPipeline,
    ctx: &Context,
    status: &mut StatusWriter,
    mut report: PartReport,
) -> Result<PartReport> {
    let outputs = &status.current.outputs;
    let (Some(queue_url), Some(dlq_url), Some(table_name)) = (
        outputs.queue_url.clone(),
        outputs.dead_letter_queue_url.clone(),
        outputs.table_name.clone(),
    ) else {
        report.readiness = Readiness::NotReady {
            reason: "WaitingForOutputs".into(),
            message: "the queue URLs and the table name are not known yet".into(),
        };
        return Ok(report);
    };
    let desired_sa = aws::desired(pipeline, &ctx.config.aws_settings)?
        .worker
        .service_account;
    let role_arn = status
        .current
        .outputs
        .worker_role_arn
        .clone()
        .or_else(|| pipeline.spec.worker.role_arn.clone());
    k8s::apply(
        &ctx.client,
        &k8s::worker_service_account(pipeline, &desired_sa, role_arn.as_deref())?,
    )
    .await?;

    status.current.outputs.outputs_config_map = Some(k8s::config_map_name(pipeline));
    k8s::apply(
        &ctx.client,
        &k8s::outputs_config_map(pipeline, &status.current.outputs)?,
    )
    .await?;

    let inputs = k8s::WorkerInputs {
        image: pipeline
            .spec
            .worker
            .image
            .clone()
            .unwrap_or_else(|| ctx.config.worker_image.clone()),
        service_account: desired_sa,
        queue_url,
        dead_letter_queue_url: dlq_url,
        table_name,
        region: ctx.config.region.clone(),
        endpoint_url: ctx.config.endpoint_url.clone(),
    };
    k8s::apply(&ctx.client, &k8s::worker_deployment(pipeline, &inputs)?).await?;
    Ok(report)
}

//! The apply branch: first-pass conditions → desired state (pure) → each AWS part in
//! dependency order, identifiers written to status as soon as they are known → the cluster
//! children → the summary. What the outcomes mean for conditions lives in [`super::outcome`].

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use super::Context;
use super::conditions::{self, FALSE, UNKNOWN};
use super::observe;
use super::outcome::{self, Next, Stamp};
use super::status_writer::StatusWriter;
use crate::api::{TrackingPipeline, TrackingPipelineStatus, condition};
use crate::aws::{self, Part, PartReport, Readiness};
use crate::error::Result;
use crate::k8s;

pub async fn apply(pipeline: Arc<TrackingPipeline>, ctx: &Context) -> Result<Action> {
    let api = Api::namespaced(
        ctx.client.clone(),
        &pipeline.namespace().unwrap_or_default(),
    );
    let mut status = StatusWriter::new(api, &pipeline);
    let stamp = || Stamp {
        generation: pipeline.metadata.generation,
        now: Time(Timestamp::now()),
    };

    if let Some(delay) = ctx.startup_delay(&pipeline) {
        return Ok(Action::requeue(delay));
    }
    if status.original.observed_generation != pipeline.metadata.generation {
        // A new spec deserves a quick look again, whatever the old one waited for.
        ctx.reset_waiting(&pipeline);
    }
    outcome::begin(&mut status.current, &stamp());
    status.flush().await?;

    let desired = match aws::desired(&pipeline, &ctx.config.aws_settings) {
        Ok(mut desired) => {
            desired.trusted = ctx.trusted_first_pass(&pipeline);
            desired
        }
        Err(err) => {
            let message = err.to_string();
            outcome::invalid_spec(&mut status.current, &stamp(), &message);
            finish(&pipeline, ctx, &mut status).await?;
            return Ok(Action::await_change());
        }
    };

    let mut not_ready = None;
    // A part is not ready but does not hold Ready back (an unconfirmed e-mail): look again.
    let mut waiting = false;
    // Worker Pods starting: their becoming available is an event, their failing to is not,
    // so look again when the grace period ends.
    let mut starting = false;
    // The first failure, returned after the parts that do not need the failed ones ran.
    let mut failure: Option<crate::error::Error> = None;
    let mut failed: Vec<Part> = Vec::new();
    // Observing: the differences every part found, for InSync.
    let mut drift: Vec<String> = Vec::new();
    for part in Part::ALL {
        if part.needs().iter().any(|p| failed.contains(p)) {
            failed.push(part);
            continue;
        }
        let mut outputs = status.current.outputs.clone();
        let result = aws::ensure(&ctx.aws, &desired, part, &mut outputs).await;
        status.current.outputs = outputs;
        let result = match (part, result) {
            // Observing creates no worker: its ServiceAccount, ConfigMap and Deployment wait
            // for managementPolicy Full.
            (Part::WorkerIdentity, Ok(mut report)) if desired.observe && report.is_ready() => {
                report.not_ready(
                    observe::OBSERVING,
                    "managementPolicy Observe: no worker runs",
                );
                Ok(report)
            }
            (Part::WorkerIdentity, Ok(report)) if report.is_ready() => {
                apply_children(&pipeline, ctx, &mut status.current, report).await
            }
            // Observing: a resource an earlier part found missing leaves this part nothing
            // to compare against; that is a finding, not a failure.
            (_, Err(crate::error::Error::AwsDependency { missing, .. })) if desired.observe => {
                let mut report = PartReport::default();
                report.not_ready(
                    "NotObservable",
                    format!("{missing} is not known: an earlier part's resource is missing"),
                );
                Ok(report)
            }
            (_, result) => result,
        };
        match result {
            Ok(report) => {
                if desired.observe {
                    drift.extend(observe::differences(&report));
                } else {
                    announce(&pipeline, ctx, &report).await;
                }
                if let Some(queue) = &report.queue {
                    status.current.queue = Some(queue.clone());
                }
                let message = ready_message(part, &status.current);
                let this = outcome::part_done(
                    &mut status.current,
                    &stamp(),
                    part,
                    &report.readiness,
                    &message,
                );
                if outcome::blocks_ready(part, &report.readiness, &pipeline.spec.alerts) {
                    not_ready = not_ready.or(this);
                } else if this
                    .as_ref()
                    .is_some_and(|(reason, _)| reason == observe::OBSERVING)
                {
                } else if this
                    .as_ref()
                    .is_some_and(|(reason, _)| reason == k8s::WORKER_STARTING)
                {
                    starting = true;
                } else if this.is_some() {
                    waiting = true;
                }
                status.flush().await?;
            }
            Err(err) => {
                let (reason, message) =
                    outcome::part_failed(&mut status.current, &stamp(), part, &err);
                // A wait is announced once, by the condition's transition in `finish`; a
                // Warning on every throttled pass of 1,000 pipelines would bury real ones.
                if !err.asks_to_wait() {
                    ctx.publish(
                        &pipeline,
                        EventType::Warning,
                        reason,
                        part.as_str(),
                        &message,
                    )
                    .await;
                }
                status.flush().await?;
                failed.push(part);
                failure = failure.or(Some(err));
            }
        }
    }
    if let Some(err) = failure {
        finish(&pipeline, ctx, &mut status).await?;
        if outcome::is_conflict(&err) {
            // A human must resolve it; a timer would only repeat the Event. The resync
            // still notices when the conflicting resource is gone.
            return Ok(Action::requeue(ctx.resync()));
        }
        return Err(err);
    }

    status.current.resources = aws::adopt::resources(&desired, &status.current.outputs);
    if let Some(message) =
        observe::set_in_sync(&mut status.current, &stamp(), desired.observe, &drift)
    {
        // A transition to False is announced by `finish`; a changed list only here.
        let was_false = conditions::get(&status.original.conditions, condition::IN_SYNC)
            .is_some_and(|c| c.status == FALSE);
        if was_false {
            ctx.publish(
                &pipeline,
                EventType::Warning,
                observe::DRIFT_DETECTED,
                "Observe",
                &message,
            )
            .await;
        }
    }
    let next = outcome::conclude(&mut status.current, &stamp(), not_ready.as_ref());
    finish(&pipeline, ctx, &mut status).await?;
    ctx.reset_failures(&pipeline);
    Ok(match (next, waiting) {
        (Next::Resync, false) => {
            ctx.reset_waiting(&pipeline);
            let resync = ctx.resync();
            Action::requeue(if starting {
                resync.min(ctx.config.worker_start_grace)
            } else {
                resync
            })
        }
        // Looked at again soon at first, then less and less often up to the resync: a
        // confirmation click can take days, a new table minutes.
        _ => Action::requeue(ctx.next_look(&pipeline)),
    })
}

/// Writes the final status and announces condition transitions as Events (Warning when a
/// condition turned False for a reason that is not a normal step).
async fn finish(
    pipeline: &TrackingPipeline,
    ctx: &Context,
    status: &mut StatusWriter,
) -> Result<()> {
    status.flush().await?;
    for changed in conditions::transitions(&status.original.conditions, &status.current.conditions)
    {
        if changed.status == UNKNOWN || changed.type_ == condition::RECONCILING {
            continue;
        }
        let (type_, reason) = if conditions::warns(changed) {
            (EventType::Warning, changed.reason.clone())
        } else if changed.status == FALSE {
            (EventType::Normal, changed.reason.clone())
        } else {
            (EventType::Normal, changed.type_.clone())
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
    status: &mut TrackingPipelineStatus,
    mut report: PartReport,
) -> Result<PartReport> {
    let outputs = &status.outputs;
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
        .outputs
        .worker_role_arn
        .clone()
        .or_else(|| pipeline.spec.worker.role_arn.clone());
    k8s::apply(
        &ctx.client,
        &k8s::worker_service_account(pipeline, &desired_sa, role_arn.as_deref())?,
    )
    .await?;

    status.outputs.outputs_config_map = Some(k8s::config_map_name(pipeline));
    k8s::apply(
        &ctx.client,
        &k8s::outputs_config_map(pipeline, &status.outputs)?,
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
        credentials_secret: ctx.config.worker_credentials_secret.clone(),
    };
    let deployment = k8s::apply(&ctx.client, &k8s::worker_deployment(pipeline, &inputs)?).await?;
    report.readiness =
        k8s::worker_readiness(&deployment, Timestamp::now(), ctx.config.worker_start_grace);
    Ok(report)
}

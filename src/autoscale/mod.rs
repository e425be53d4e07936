//! The worker autoscaler: a small loop beside the reconciler, not a branch inside apply.
//!
//! Every `--autoscale-interval` (default 15 s), for each pipeline with
//! `spec.worker.autoscaling.mode: operator`: measure the queue ([`measure`]: one
//! `GetQueueAttributes`) → decide (pure, [`policy::decide`]) → write the Deployment's scale
//! subresource, only when the count changes, with an Event → merge-patch `status.worker`,
//! only when it changed. It writes nothing else: the reconciler leaves `replicas` out of
//! the Deployment it applies, and its watch ignores replica-only changes
//! ([`crate::k8s::deployment_change`]), so scaling costs no reconcile and no AWS call beyond
//! the measurement. Only the leader runs it (it is spawned next to the controller after the
//! Lease is won). With `mode: external` it does nothing at all: KEDA or an HPA measures and
//! scales.

pub mod measure;
mod metrics;
pub mod policy;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

pub use self::metrics::AutoscaleMetrics;
use self::policy::{History, Observation, Policy};
use crate::api::{AutoscalingMode, TrackingPipeline, WorkerStatus};
use crate::controller::Context;
use crate::error::Result;
use crate::k8s;

/// Field manager of the scale writes, distinct from the reconciler's
/// [`k8s::FIELD_MANAGER`] so `managedFields` shows who set `replicas`.
pub const FIELD_MANAGER: &str = "tracking-operator-autoscaler";

/// What the loop keeps per pipeline (by uid, so a recreated pipeline starts afresh).
#[derive(Debug)]
struct Tracked {
    history: History,
    /// The last CloudWatch age reading and when it was taken.
    age: Option<(Instant, Option<i64>)>,
}

/// Runs until dropped (the caller stops it with the controller).
pub async fn run(ctx: Arc<Context>, interval: Duration) {
    info!(
        interval_ms = interval.as_millis() as u64,
        "autoscaler started"
    );
    let mut tracked: HashMap<String, Tracked> = HashMap::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(err) = tick(&ctx, &mut tracked).await {
            warn!(%err, "autoscaler: cannot list pipelines");
        }
    }
}

async fn tick(ctx: &Context, tracked: &mut HashMap<String, Tracked>) -> Result<()> {
    let api: Api<TrackingPipeline> = match &ctx.config.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let pipelines = api.list(&ListParams::default()).await?;
    let mut seen = HashSet::new();
    for pipeline in &pipelines.items {
        let autoscaled = pipeline
            .spec
            .worker
            .autoscaling
            .as_ref()
            .is_some_and(|a| a.mode == AutoscalingMode::Operator);
        let (Some(uid), true, None) = (
            pipeline.uid(),
            autoscaled,
            pipeline.metadata.deletion_timestamp.as_ref(),
        ) else {
            continue;
        };
        seen.insert(uid.clone());
        if let Err(err) = scale(ctx, pipeline, &uid, tracked).await {
            warn!(
                namespace = %pipeline.namespace().unwrap_or_default(),
                pipeline = %pipeline.name_any(),
                %err,
                "autoscaler: cannot scale"
            );
        }
    }
    for pipeline in &pipelines.items {
        if pipeline.uid().is_some_and(|u| seen.contains(&u)) {
            continue;
        }
        let namespace = pipeline.namespace().unwrap_or_default();
        ctx.metrics
            .autoscale
            .forget(&namespace, &pipeline.name_any());
        // Autoscaling turned off or handed to KEDA: our last measurement would mislead.
        let stale = pipeline.status.as_ref().is_some_and(|s| s.worker.is_some());
        if stale && pipeline.metadata.deletion_timestamp.is_none() {
            let api: Api<TrackingPipeline> = Api::namespaced(ctx.client.clone(), &namespace);
            let clear = json!({ "status": { "worker": null } });
            if let Err(err) = api
                .patch_status(
                    &pipeline.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(clear),
                )
                .await
            {
                warn!(%err, pipeline = %pipeline.name_any(), "autoscaler: cannot clear status.worker");
            }
        }
    }
    tracked.retain(|uid, _| seen.contains(uid));
    Ok(())
}

/// One pipeline, one measurement.
async fn scale(
    ctx: &Context,
    pipeline: &TrackingPipeline,
    uid: &str,
    tracked: &mut HashMap<String, Tracked>,
) -> Result<()> {
    let Some(spec) = &pipeline.spec.worker.autoscaling else {
        return Ok(());
    };
    let status = pipeline.status.clone().unwrap_or_default();
    // Not provisioned yet: the reconciler will get there; nothing to measure or scale.
    let Some(queue_url) = status.outputs.queue_url.as_deref() else {
        return Ok(());
    };
    let namespace = pipeline.namespace().unwrap_or_default();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let name = k8s::deployment_name(pipeline);
    let Some(deployment) = deployments.get_opt(&name).await? else {
        return Ok(());
    };
    let current = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let running = deployment.status.as_ref().and_then(|s| s.replicas);

    let policy = Policy::from_spec(spec);
    let now = Instant::now();
    let entry = tracked.entry(uid.to_string()).or_insert_with(|| Tracked {
        history: History::new(now, current),
        age: None,
    });
    let mut observation: Observation = measure::queue_backlog(&ctx.aws, queue_url).await?;
    if policy.max_oldest_message_age_seconds.is_some() && observation.backlog() > 0 {
        let fresh = entry
            .age
            .filter(|(at, _)| now.duration_since(*at) < measure::AGE_REFRESH);
        observation.oldest_age_seconds = match fresh {
            Some((_, age)) => age,
            None => {
                // The age only adds to the backlog rule: without it, scaling still works.
                let age = measure::oldest_message_age(&ctx.aws, queue_url)
                    .await
                    .unwrap_or_else(|err| {
                        warn!(%err, "autoscaler: cannot read the oldest message's age");
                        None
                    });
                entry.age = Some((now, age));
                age
            }
        };
    }

    let decision = policy::decide(&policy, &observation, current, &mut entry.history, now);
    let mut worker = status.worker.clone().unwrap_or_default();
    if decision.desired != current {
        deployments
            .patch_scale(
                &name,
                // Server-side apply, so `managedFields` names the autoscaler as the owner of
                // `replicas`; forced, as the one writer of that field in this mode.
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(json!({
                    "apiVersion": "autoscaling/v1",
                    "kind": "Scale",
                    "spec": { "replicas": decision.desired },
                })),
            )
            .await?;
        entry.history.scaled(now, current, decision.desired);
        let (reason, verb) = if decision.desired > current {
            ("ScaledUp", "up")
        } else {
            ("ScaledDown", "down")
        };
        info!(
            namespace = %namespace,
            pipeline = %pipeline.name_any(),
            from = current,
            to = decision.desired,
            why = %decision.reason,
            "scaled the worker {verb}"
        );
        let note = format!(
            "worker scaled from {current} to {}: {}",
            decision.desired, decision.reason
        );
        // The action carries the counts: kube's Recorder folds Events with equal reason
        // and action into one series that keeps only the first note.
        let action = format!("Scale {current} to {}", decision.desired);
        ctx.publish(pipeline, EventType::Normal, reason, &action, &note)
            .await;
        worker.last_scale_time = Some(Time(Timestamp::now()));
        worker.last_scale_reason = Some(decision.reason.clone());
    }
    ctx.metrics.autoscale.observe(
        &namespace,
        &pipeline.name_any(),
        decision.desired,
        observation.backlog(),
    );

    worker.current_replicas = running.or(Some(current));
    worker.desired_replicas = Some(decision.desired);
    worker.backlog = Some(observation.backlog());
    worker.oldest_message_age_seconds = observation.oldest_age_seconds;
    if status.worker.as_ref() != Some(&worker) {
        let pipelines: Api<TrackingPipeline> = Api::namespaced(ctx.client.clone(), &namespace);
        pipelines
            .patch_status(
                &pipeline.name_any(),
                &PatchParams::default(),
                &Patch::Merge(status_patch(&worker)),
            )
            .await?;
    }
    Ok(())
}

/// A merge patch of `status.worker` only, so the reconciler's conditions and outputs are
/// never touched; fields no longer known (the age) are sent as null to clear them.
fn status_patch(worker: &WorkerStatus) -> serde_json::Value {
    json!({ "status": { "worker": {
        "currentReplicas": worker.current_replicas,
        "desiredReplicas": worker.desired_replicas,
        "backlog": worker.backlog,
        "oldestMessageAgeSeconds": worker.oldest_message_age_seconds,
        "lastScaleTime": worker.last_scale_time,
        "lastScaleReason": worker.last_scale_reason,
    }}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_patch_touches_only_status_worker() {
        let worker = WorkerStatus {
            current_replicas: Some(2),
            desired_replicas: Some(3),
            backlog: Some(250),
            ..WorkerStatus::default()
        };
        let patch = status_patch(&worker);
        let status = patch["status"].as_object().unwrap();
        assert_eq!(status.keys().collect::<Vec<_>>(), ["worker"]);
        assert_eq!(patch["status"]["worker"]["desiredReplicas"], 3);
        // Cleared, not left over from an earlier measurement.
        assert!(patch["status"]["worker"]["oldestMessageAgeSeconds"].is_null());
        // The same field names as the CRD's schema.
        let typed: WorkerStatus =
            serde_json::from_value(patch["status"]["worker"].clone()).unwrap();
        assert_eq!(typed, worker);
    }
}

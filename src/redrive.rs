//! The declarative DLQ redrive (`spec.redrive`): a small loop beside the reconciler, like the
//! autoscaler. Every few seconds it lists the pipelines; one whose `spec.redrive.requestId`
//! differs from `status.redrive.requestId`, or whose redrive was `Running` when the last
//! leader stopped, gets a task that moves its DLQ back with the worker crate's
//! receive → send → delete loop ([`tracking_worker::redrive::redrive_copy`]).
//!
//! That loop keeps a move ledger synced to disk at every step, so a redrive interrupted by a
//! restart resumes without sending anything twice, and a later request leaves the poison that
//! came back in the DLQ; the ledger lives under `--state-dir` (an `emptyDir` in the chart,
//! which survives container restarts). A leader change to another Pod loses the ledger: the
//! new leader's run repeats at most the one message whose send was in flight (the worker's
//! idempotent write absorbs that copy), and returned poison makes one more round trip before
//! it is back in the DLQ with its reason. Only the leader runs it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tracing::{info, warn};
use tracking_worker::redrive::{self as dlq, Filter, Ledger, Options, Report};

use crate::api::{ManagementPolicy, RedrivePhase, RedriveSpec, RedriveStatus, TrackingPipeline};
use crate::controller::Context;
use crate::error::Result;

/// How often the loop looks for new requests.
const POLL: Duration = Duration::from_secs(3);
/// How often a running redrive reports its progress in status.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Seconds a DLQ message stays leased while it is being moved (`main` uses this; tests
/// shorten it so that an interrupted run's leases end sooner).
pub const LEASE_SECONDS: i32 = 30;

/// What to do for one pipeline (pure).
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Nothing,
    /// Start (or resume) the request.
    Run,
}

/// A new request id, or one this process has not finished that a previous leader left
/// `Pending`/`Running`, needs a run; a finished one never runs again.
pub fn next(spec: Option<&RedriveSpec>, status: Option<&RedriveStatus>) -> Next {
    let Some(spec) = spec else {
        return Next::Nothing;
    };
    match status {
        Some(s) if s.request_id == spec.request_id => match s.phase {
            RedrivePhase::Pending | RedrivePhase::Running => Next::Run,
            RedrivePhase::Succeeded | RedrivePhase::Failed => Next::Nothing,
        },
        _ => Next::Run,
    }
}

/// The ledger of one pipeline, shared by its requests (as `trackctl` keeps one per DLQ): it
/// also knows which messages an earlier request already moved, so that poison which came
/// back stays in the DLQ unless `includeReturned` says otherwise.
pub fn ledger_path(state_dir: &Path, uid: &str) -> PathBuf {
    let hash = hex::encode(&Sha256::digest(uid)[..8]);
    state_dir.join(format!("redrive-{hash}.jsonl"))
}

/// Runs until dropped (the caller stops it with the controller).
pub async fn run(ctx: Arc<Context>, state_dir: PathBuf, lease_seconds: i32) {
    info!(state_dir = %state_dir.display(), "redrive loop started");
    let running: Arc<Mutex<HashMap<String, JoinHandle<()>>>> = Arc::default();
    let mut ticker = tokio::time::interval(POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Dropping this loop (lost Lease, shutdown) must stop its tasks too.
    let _abort = AbortOnDrop(running.clone());
    loop {
        ticker.tick().await;
        if let Err(err) = tick(&ctx, &state_dir, lease_seconds, &running).await {
            warn!(%err, "redrive: cannot list pipelines");
        }
    }
}

struct AbortOnDrop(Arc<Mutex<HashMap<String, JoinHandle<()>>>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in self.0.lock().unwrap_or_else(|e| e.into_inner()).values() {
            task.abort();
        }
    }
}

async fn tick(
    ctx: &Arc<Context>,
    state_dir: &Path,
    lease_seconds: i32,
    running: &Arc<Mutex<HashMap<String, JoinHandle<()>>>>,
) -> Result<()> {
    let api: Api<TrackingPipeline> = match &ctx.config.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let pipelines = api.list(&ListParams::default()).await?;
    let mut tasks = running.lock().unwrap_or_else(|e| e.into_inner());
    tasks.retain(|_, task| !task.is_finished());
    for pipeline in pipelines.items {
        let (Some(uid), None) = (pipeline.uid(), &pipeline.metadata.deletion_timestamp) else {
            continue;
        };
        // Observe writes nothing to AWS, and a redrive is a stream of writes.
        if pipeline.spec.management_policy == ManagementPolicy::Observe {
            continue;
        }
        let spec = pipeline.spec.redrive.clone();
        let status = pipeline.status.as_ref().and_then(|s| s.redrive.as_ref());
        let (Some(spec), Next::Run) = (spec.clone(), next(spec.as_ref(), status)) else {
            continue;
        };
        let key = format!("{uid}/{}", spec.request_id);
        if tasks.contains_key(&key) {
            continue;
        }
        let ledger = ledger_path(state_dir, &uid);
        let ctx = ctx.clone();
        tasks.insert(
            key,
            tokio::spawn(
                async move { carry_out(&ctx, &pipeline, &spec, &ledger, lease_seconds).await },
            ),
        );
    }
    Ok(())
}

/// One request, start to end; every outcome lands in `status.redrive` and an Event.
async fn carry_out(
    ctx: &Context,
    pipeline: &TrackingPipeline,
    spec: &RedriveSpec,
    ledger: &Path,
    lease_seconds: i32,
) {
    let api: Api<TrackingPipeline> = Api::namespaced(
        ctx.client.clone(),
        &pipeline.namespace().unwrap_or_default(),
    );
    let name = pipeline.name_any();
    let outputs = pipeline
        .status
        .as_ref()
        .map(|s| s.outputs.clone())
        .unwrap_or_default();
    let started_at = pipeline
        .status
        .as_ref()
        .and_then(|s| s.redrive.as_ref())
        .filter(|s| s.request_id == spec.request_id)
        .and_then(|s| s.started_at.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    let mut status = RedriveStatus {
        request_id: spec.request_id.clone(),
        phase: RedrivePhase::Running,
        started_at: Some(started_at),
        ..RedriveStatus::default()
    };
    let (Some(queue), Some(dlq_url)) = (outputs.queue_url, outputs.dead_letter_queue_url) else {
        status.phase = RedrivePhase::Pending;
        status.message = Some("waiting for the queue and the dead-letter queue to exist".into());
        write(&api, &name, &status).await;
        return;
    };
    write(&api, &name, &status).await;
    ctx.publish(
        pipeline,
        EventType::Normal,
        "RedriveStarted",
        "Redrive",
        &format!(
            "redrive {} started: {} at {} messages/s",
            spec.request_id,
            spec.reason
                .as_deref()
                .map_or("every message".to_string(), |r| format!(
                    "messages with reason {r}"
                )),
            spec.rate
        ),
    )
    .await;

    let progress = Arc::new(Mutex::new(Report::default()));
    let result = {
        let work = redrive(
            ctx,
            spec,
            (&queue, &dlq_url),
            ledger,
            lease_seconds,
            progress.clone(),
        );
        tokio::pin!(work);
        let mut report_every = tokio::time::interval(PROGRESS_EVERY);
        report_every.tick().await;
        loop {
            tokio::select! {
                result = &mut work => break result,
                _ = report_every.tick() => {
                    let report = progress.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    counts(&mut status, &report);
                    write(&api, &name, &status).await;
                }
            }
        }
    };
    status.finished_at = Some(Time(Timestamp::now()));
    match result {
        Ok(report) => {
            counts(&mut status, &report);
            status.phase = RedrivePhase::Succeeded;
            let note = format!(
                "redrive {} finished: {} moved, {} kept, {} refused, {} left in the DLQ",
                spec.request_id, status.moved, status.kept, status.failed, status.remaining
            );
            info!(pipeline = %name, %note);
            write(&api, &name, &status).await;
            ctx.publish(
                pipeline,
                EventType::Normal,
                "RedriveSucceeded",
                "Redrive",
                &note,
            )
            .await;
        }
        Err(err) => {
            let report = progress.lock().unwrap_or_else(|e| e.into_inner()).clone();
            counts(&mut status, &report);
            status.phase = RedrivePhase::Failed;
            status.message = Some(err.to_string());
            warn!(pipeline = %name, %err, "redrive failed");
            write(&api, &name, &status).await;
            ctx.publish(
                pipeline,
                EventType::Warning,
                "RedriveFailed",
                "Redrive",
                &format!("redrive {} failed: {err}", spec.request_id),
            )
            .await;
        }
    }
}

async fn redrive(
    ctx: &Context,
    spec: &RedriveSpec,
    (queue, dlq_url): (&str, &str),
    ledger: &Path,
    lease_seconds: i32,
    progress: Arc<Mutex<Report>>,
) -> dlq::Result<Report> {
    let mut ledger = Ledger::open(ledger)?;
    let options = Options {
        filter: Filter {
            reason: spec.reason.clone(),
            include_returned: spec.include_returned,
        },
        rate: f64::from(spec.rate),
        lease_seconds,
        max: None,
        // Messages an interrupted run had leased come back when their lease ends.
        wait_for_leased: Duration::from_secs(lease_seconds.unsigned_abs().into())
            + Duration::from_secs(5),
    };
    dlq::redrive_copy(
        &ctx.aws.sqs,
        dlq_url,
        queue,
        &mut ledger,
        &options,
        |report| {
            *progress.lock().unwrap_or_else(|e| e.into_inner()) = report.clone();
        },
    )
    .await
}

fn counts(status: &mut RedriveStatus, report: &Report) {
    status.moved = report.moved + report.finished_from_earlier_run;
    status.kept = report.kept;
    status.failed = report.failed;
    status.remaining = report.remaining;
}

/// Merge-patches `status.redrive` only; a failure is logged and the next report retries.
async fn write(api: &Api<TrackingPipeline>, name: &str, status: &RedriveStatus) {
    let patch = json!({ "status": { "redrive": status } });
    if let Err(err) = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        warn!(%err, pipeline = name, "redrive: cannot write status.redrive");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str) -> RedriveSpec {
        RedriveSpec {
            request_id: id.into(),
            reason: None,
            rate: 10,
            include_returned: false,
        }
    }

    fn status(id: &str, phase: RedrivePhase) -> RedriveStatus {
        RedriveStatus {
            request_id: id.into(),
            phase,
            ..RedriveStatus::default()
        }
    }

    #[test]
    fn each_request_runs_once_and_an_interrupted_one_resumes() {
        assert_eq!(next(None, None), Next::Nothing);
        assert_eq!(next(Some(&spec("a")), None), Next::Run);
        let done = status("a", RedrivePhase::Succeeded);
        assert_eq!(next(Some(&spec("a")), Some(&done)), Next::Nothing);
        let failed = status("a", RedrivePhase::Failed);
        assert_eq!(next(Some(&spec("a")), Some(&failed)), Next::Nothing);
        assert_eq!(next(Some(&spec("b")), Some(&done)), Next::Run);
        let running = status("a", RedrivePhase::Running);
        assert_eq!(next(Some(&spec("a")), Some(&running)), Next::Run);
    }

    #[test]
    fn each_pipeline_has_its_own_ledger() {
        let dir = Path::new("/state");
        assert_eq!(ledger_path(dir, "u1"), ledger_path(dir, "u1"));
        assert_ne!(ledger_path(dir, "u1"), ledger_path(dir, "u2"));
    }
}

//! The worker autoscaler against the real API server and moto: a burst scales the Deployment
//! up within the rate limit and `maxReplicas`, an empty queue scales it to zero only after
//! the stabilisation window, one message brings it back, scaling never triggers a reconcile,
//! and `mode: external` never writes `replicas` nor spends an AWS call on a replica change.
//!
//! No worker runs here (the queue is driven directly), so what is measured is exactly what
//! the test sends. Intervals are shortened through the spec and the loop's interval.

mod controller_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use controller_support::*;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::task::JoinHandle;
use tracking_operator::api::TrackingPipeline;
use tracking_operator::autoscale;
use tracking_operator::aws::{AwsClients, CallCounter};
use tracking_operator::controller::{self, Config, Context};
use tracking_operator::http::Health;
use tracking_operator::metrics::Metrics;

const INTERVAL: Duration = Duration::from_millis(500);
const WINDOW_SECONDS: u64 = 4;
const STEP_PERIOD_SECONDS: u64 = 3;

/// The controller and the autoscaler, as `main` runs them for the leader.
struct Running {
    tasks: Vec<JoinHandle<()>>,
    calls: CallCounter,
    metrics: Arc<Metrics>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn start(namespace: &str) -> Running {
    let endpoint = testenv::moto().endpoint();
    let client = testenv::kube().client().await;
    let sdk = testenv::sdk_config_for(&endpoint).await;
    let calls = CallCounter::new();
    let aws = AwsClients::with_counter(&sdk, calls.clone());
    let metrics = Arc::new(Metrics::new(calls.clone()));
    let mut config = Config::new("example.com/tracking-worker:test");
    // No resync during the test: every AWS call after the first reconciles is the
    // autoscaler's or one a watch event caused.
    config.resync_interval = Duration::from_secs(3600);
    config.not_ready_requeue = Duration::from_secs(2);
    config.error_backoff_base = Duration::from_millis(500);
    config.error_backoff_max = Duration::from_secs(5);
    config.namespace = Some(namespace.to_string());
    config.endpoint_url = Some(endpoint);
    let ctx = Arc::new(Context::new(client, &sdk, config, metrics.clone(), aws));
    let controller = tokio::spawn(controller::run(
        ctx.clone(),
        Arc::new(Health::default()),
        std::future::pending(),
    ));
    let scaler = tokio::spawn(autoscale::run(ctx, INTERVAL));
    Running {
        tasks: vec![controller, scaler],
        calls,
        metrics,
    }
}

/// AWS calls other than the autoscaler's measurement: any of these means a reconcile ran.
fn reconcile_calls(calls: &CallCounter) -> u64 {
    calls
        .snapshot()
        .iter()
        .filter(|(k, _)| k.operation != "GetQueueAttributes")
        .map(|(_, n)| n)
        .sum()
}

/// Waits until `count` stops moving for 3 s (the reconciles that follow the first one, e.g.
/// for the Deployment's first watch event, have finished).
async fn settle(count: impl Fn() -> u64) -> u64 {
    let mut last = count();
    let mut since = Instant::now();
    let deadline = Instant::now() + WAIT;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = count();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= Duration::from_secs(3) {
            return now;
        }
        assert!(Instant::now() < deadline, "AWS calls never settled");
    }
}

async fn replicas(deployments: &Api<Deployment>, name: &str) -> Option<i32> {
    deployments
        .get(name)
        .await
        .expect("get Deployment")
        .spec
        .and_then(|s| s.replicas)
}

/// Managers that own `spec.replicas` of the Deployment.
async fn replica_owners(deployments: &Api<Deployment>, name: &str) -> Vec<String> {
    let d = deployments.get(name).await.expect("get Deployment");
    d.metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:spec"))
                .is_some_and(|spec| spec.get("f:replicas").is_some())
        })
        .filter_map(|m| m.manager)
        .collect()
}

/// Polls the Deployment's replicas until `done`; returns every value seen with its time.
async fn watch_replicas(
    deployments: &Api<Deployment>,
    name: &str,
    what: &str,
    done: impl Fn(i32) -> bool,
) -> Vec<(Instant, i32)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen: Vec<(Instant, i32)> = Vec::new();
    loop {
        let n = replicas(deployments, name).await.unwrap_or(-1);
        if seen.last().map(|(_, v)| *v) != Some(n) {
            seen.push((Instant::now(), n));
        }
        if done(n) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting for {what}; replicas seen: {:?}",
            seen.iter().map(|(_, v)| v).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn send(sqs: &aws_sdk_sqs::Client, queue_url: &str, count: usize) {
    for chunk in (0..count).collect::<Vec<_>>().chunks(10) {
        let entries = chunk
            .iter()
            .map(|i| {
                SendMessageBatchRequestEntry::builder()
                    .id(format!("m{i}"))
                    .message_body(
                        json!({"tracking_id": format!("T{i}"), "status": "IN_TRANSIT"}).to_string(),
                    )
                    .build()
                    .expect("entry")
            })
            .collect();
        sqs.send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("send burst");
    }
}

async fn ready_pipeline(
    ns: &str,
    name: &str,
    autoscaling: serde_json::Value,
) -> (Api<TrackingPipeline>, TrackingPipeline, Api<Deployment>) {
    let api = pipelines(ns).await;
    create(
        &api,
        name,
        json!({"deletionPolicy": "Delete", "worker": {"autoscaling": autoscaling}}),
    )
    .await;
    let p = wait_ready(&api, name).await;
    let deployments: Api<Deployment> = Api::namespaced(testenv::kube().client().await, ns);
    (api, p, deployments)
}

#[tokio::test]
async fn a_burst_scales_up_within_limits_then_to_zero_and_one_message_brings_it_back() {
    let ns = testenv::kube().namespace("autoscale").await;
    let op = start(&ns).await;
    let (api, p, deployments) = ready_pipeline(
        &ns,
        "burst",
        json!({
            "minReplicas": 0,
            "maxReplicas": 5,
            "targetBacklogPerReplica": 10,
            "scaleDownStabilizationSeconds": WINDOW_SECONDS,
            "scaleUpStep": 2,
            "scaleUpPeriodSeconds": STEP_PERIOD_SECONDS,
        }),
    )
    .await;
    let name = format!("{}-worker", p.metadata.name.clone().unwrap());
    let queue_url = p
        .status
        .as_ref()
        .and_then(|s| s.outputs.queue_url.clone())
        .expect("queue URL in status");
    let sqs = aws_sdk_sqs::Client::new(&testenv::sdk_config_for(&testenv::moto().endpoint()).await);

    // An empty queue: the Deployment the reconciler created (1 replica, the API server's
    // default for an absent field) goes to zero, but only after a whole window.
    watch_replicas(&deployments, &name, "scale to zero", |n| n == 0).await;
    let d = deployments.get(&name).await.unwrap();
    let created = d.metadata.creation_timestamp.clone().unwrap().0;
    let zeroed = wait_for(&api, "burst", "status.worker after scaling to 0", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.worker.as_ref())
            .is_some_and(|w| w.desired_replicas == Some(0) && w.last_scale_time.is_some())
    })
    .await;
    let worker = zeroed.status.unwrap().worker.unwrap();
    let waited = worker
        .last_scale_time
        .clone()
        .unwrap()
        .0
        .duration_since(created);
    assert!(
        waited.as_secs_f64() >= WINDOW_SECONDS as f64 - 1.0,
        "scaled to zero {waited:?} after the Deployment was created, window {WINDOW_SECONDS}s"
    );
    assert!(
        worker
            .last_scale_reason
            .as_deref()
            .unwrap_or_default()
            .contains("backlog 0"),
        "{worker:?}"
    );

    // From here on, scaling must not cause a reconcile.
    let before = settle(|| reconcile_calls(&op.calls)).await;

    // A burst of 60 wants 6 Pods: capped at 5, added at most 2 per 3 s.
    let burst = Instant::now();
    send(&sqs, &queue_url, 60).await;
    let seen = watch_replicas(&deployments, &name, "scale up to max", |n| n == 5).await;
    let values: Vec<i32> = seen.iter().map(|(_, v)| *v).collect();
    assert!(values.iter().all(|v| *v <= 5), "{values:?}");
    // Each increase is at most the step, and two increases within one period add up to at
    // most the step too.
    for (i, (at, v)) in seen.iter().enumerate().skip(1) {
        let (_, previous) = seen[i - 1];
        assert!(
            v - previous <= 2,
            "a step of {} in {values:?}",
            v - previous
        );
        let period_start = seen
            .iter()
            .take(i)
            .rev()
            .find(|(t, _)| {
                at.duration_since(*t) >= Duration::from_millis(STEP_PERIOD_SECONDS * 1000 - 500)
            })
            .map(|(_, v)| *v)
            .unwrap_or(0);
        assert!(
            v - period_start <= 2,
            "more than 2 added within {STEP_PERIOD_SECONDS}s: {values:?}"
        );
    }
    let took = burst.elapsed();
    // 0 → 2 → 4 → 5 needs two full periods after the first step.
    assert!(
        took >= Duration::from_millis(2 * STEP_PERIOD_SECONDS * 1000 - 250),
        "reached 5 in {took:?}: {values:?}"
    );
    let scaled = wait_for(&api, "burst", "status.worker for the burst", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.worker.as_ref())
            .is_some_and(|w| w.desired_replicas == Some(5) && w.backlog == Some(60))
    })
    .await;
    assert!(
        scaled
            .status
            .unwrap()
            .worker
            .unwrap()
            .last_scale_reason
            .unwrap()
            .contains("maxReplicas 5")
    );
    // Only the autoscaler's field manager owns replicas; the reconciler's apply does not.
    assert_eq!(
        replica_owners(&deployments, &name).await,
        [autoscale::FIELD_MANAGER]
    );
    let reasons: Vec<String> = event_reasons(&testenv::kube().client().await, &p)
        .await
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    assert!(reasons.iter().any(|r| r == "ScaledUp"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "ScaledDown"), "{reasons:?}");
    let metrics = op.metrics.encode().unwrap();
    assert!(
        metrics.contains(&format!(
            r#"tracking_operator_worker_desired_replicas{{namespace="{ns}",pipeline="burst"}} 5"#
        )),
        "{metrics}"
    );

    // Queue emptied: down only after the window, then to zero.
    sqs.purge_queue()
        .queue_url(&queue_url)
        .send()
        .await
        .expect("purge");
    let purged = Instant::now();
    let seen = watch_replicas(&deployments, &name, "scale back to zero", |n| n == 0).await;
    let first_down = seen
        .iter()
        .find(|(_, v)| *v < 5)
        .map(|(t, _)| *t)
        .expect("replicas went down");
    assert!(
        first_down.duration_since(purged) >= Duration::from_millis(WINDOW_SECONDS * 1000 - 700),
        "scaled down {:?} after the queue emptied, window {WINDOW_SECONDS}s",
        first_down.duration_since(purged)
    );

    // One message (e.g. the daily maintenance message) brings a replica back within one
    // measuring interval (plus the poll's own delay).
    send(&sqs, &queue_url, 1).await;
    let sent = Instant::now();
    watch_replicas(&deployments, &name, "scale from zero", |n| n >= 1).await;
    assert!(
        sent.elapsed() <= INTERVAL * 4,
        "one message took {:?} to bring a replica up",
        sent.elapsed()
    );

    let after = reconcile_calls(&op.calls);
    assert_eq!(
        after,
        before,
        "scaling caused a reconcile: {:?}",
        op.calls.snapshot()
    );

    api.delete("burst", &Default::default()).await.unwrap();
    wait_gone(&api, "burst").await;
}

#[tokio::test]
async fn mode_external_never_writes_replicas_and_a_replica_change_costs_no_aws_call() {
    let ns = testenv::kube().namespace("autoscale-ext").await;
    let op = start(&ns).await;
    let (api, p, deployments) =
        ready_pipeline(&ns, "keda", json!({"mode": "external", "minReplicas": 0})).await;
    let name = format!("{}-worker", p.metadata.name.clone().unwrap());
    // Nobody set replicas yet: the reconciler's apply does not own it.
    let owners = replica_owners(&deployments, &name).await;
    assert!(
        owners.iter().all(|m| !m.starts_with("tracking-operator")),
        "{owners:?}"
    );

    let before = settle(|| op.calls.total()).await;
    // What KEDA's HPA does: write the scale subresource under its own manager.
    deployments
        .patch_scale(
            &name,
            &PatchParams {
                field_manager: Some("keda-hpa".into()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"spec": {"replicas": 7}})),
        )
        .await
        .expect("external scale");
    // Ten of the autoscaler's intervals, and time for any reconcile the watch would cause.
    tokio::time::sleep(INTERVAL * 10).await;
    assert_eq!(
        op.calls.total(),
        before,
        "an external replica change made AWS calls: {:?}",
        op.calls.snapshot()
    );
    assert_eq!(replicas(&deployments, &name).await, Some(7));
    let owners = replica_owners(&deployments, &name).await;
    assert!(
        owners.iter().all(|m| !m.starts_with("tracking-operator")),
        "{owners:?}"
    );
    let p = api.get("keda").await.unwrap();
    assert!(
        p.status.unwrap().worker.is_none(),
        "external: no status.worker"
    );

    api.delete("keda", &Default::default()).await.unwrap();
    wait_gone(&api, "keda").await;
}

//! Runs the real controller in-process (a tokio task) against testenv's API server and moto,
//! watching one namespace so tests in the same binary never see each other's pipelines.

#![allow(dead_code)] // each test binary uses a different subset

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracking_operator::api::{TrackingPipeline, TrackingPipelineSpec};
use tracking_operator::aws::{AwsClients, CallCounter, Desired, Limits, Settings, desired};
use tracking_operator::controller::{self, Config, Context, conditions};
use tracking_operator::http::Health;
use tracking_operator::metrics::Metrics;

pub const WAIT: Duration = Duration::from_secs(180);

pub struct Operator {
    task: JoinHandle<()>,
    /// Loops `main` runs beside the controller for the leader (autoscaler, redrive), when a
    /// test asked for them.
    beside: Vec<JoinHandle<()>>,
    stop: Option<oneshot::Sender<()>>,
    pub calls: CallCounter,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

impl Operator {
    /// An operator for `namespace` with its AWS calls going to `endpoint`.
    pub async fn start(endpoint: &str, namespace: &str, resync: Duration) -> Operator {
        Self::start_with(endpoint, namespace, resync, |_| {}).await
    }

    /// Like [`Operator::start`], with the operator's settings adjusted by `configure`.
    pub async fn start_with(
        endpoint: &str,
        namespace: &str,
        resync: Duration,
        configure: impl FnOnce(&mut Config),
    ) -> Operator {
        Self::start_with_health(endpoint, namespace, resync, configure, Health::default()).await
    }

    /// Like [`Operator::start_with`], reporting its progress into `health` (`/healthz`).
    pub async fn start_with_health(
        endpoint: &str,
        namespace: &str,
        resync: Duration,
        configure: impl FnOnce(&mut Config),
        health: Health,
    ) -> Operator {
        Self::start_full(
            endpoint,
            namespace,
            resync,
            configure,
            health,
            AwsClients::with_counter,
            |_| Vec::new(),
        )
        .await
    }

    /// Like [`Operator::start`], with loops that `main` runs beside the controller, spawned
    /// by `beside` with the controller's context.
    pub async fn start_beside(
        endpoint: &str,
        namespace: &str,
        resync: Duration,
        beside: impl FnOnce(Arc<Context>) -> Vec<JoinHandle<()>>,
    ) -> Operator {
        Self::start_full(
            endpoint,
            namespace,
            resync,
            |_| {},
            Health::default(),
            AwsClients::with_counter,
            beside,
        )
        .await
    }

    /// Like [`Operator::start`], with client-side AWS rate limits (the binary's defaults are
    /// [`Limits::default`]; tests run without, to stay fast).
    pub async fn start_limited(
        endpoint: &str,
        namespace: &str,
        resync: Duration,
        limits: Limits,
    ) -> Operator {
        Self::start_with_clients(endpoint, namespace, resync, move |sdk, calls| {
            AwsClients::with_limits(sdk, calls, &limits)
        })
        .await
    }

    /// Like [`Operator::start`], with the AWS clients built by `make` (rate limits, the
    /// tag re-check window).
    pub async fn start_with_clients(
        endpoint: &str,
        namespace: &str,
        resync: Duration,
        make: impl FnOnce(&aws_config::SdkConfig, CallCounter) -> AwsClients,
    ) -> Operator {
        Self::start_full(
            endpoint,
            namespace,
            resync,
            |_| {},
            Health::default(),
            make,
            |_| Vec::new(),
        )
        .await
    }

    async fn start_full(
        endpoint: &str,
        namespace: &str,
        resync: Duration,
        configure: impl FnOnce(&mut Config),
        health: Health,
        make: impl FnOnce(&aws_config::SdkConfig, CallCounter) -> AwsClients,
        beside: impl FnOnce(Arc<Context>) -> Vec<JoinHandle<()>>,
    ) -> Operator {
        let health = Arc::new(health);
        let client = testenv::kube().client().await;
        let sdk = testenv::sdk_config_for(endpoint).await;
        let calls = CallCounter::new();
        let aws = make(&sdk, calls.clone());
        let metrics = Arc::new(Metrics::new(calls.clone()));
        let mut config = Config::new("example.com/tracking-worker:test");
        config.resync_interval = resync;
        config.not_ready_requeue = Duration::from_secs(2);
        config.error_backoff_base = Duration::from_millis(500);
        config.error_backoff_max = Duration::from_secs(5);
        config.namespace = Some(namespace.to_string());
        config.endpoint_url = Some(endpoint.to_string());
        // No node here: the worker's Pods never run, so its Deployment never becomes
        // available. Tests that judge availability set their own grace.
        config.worker_start_grace = Duration::from_secs(24 * 3600);
        configure(&mut config);
        let ctx = Arc::new(Context::new(client, &sdk, config, metrics.clone(), aws));
        let (stop, stopped) = oneshot::channel::<()>();
        let beside = beside(ctx.clone());
        let task = tokio::spawn(controller::run(ctx, health.clone(), async {
            let _ = stopped.await;
        }));
        Operator {
            task,
            beside,
            stop: Some(stop),
            calls,
            metrics,
            health,
        }
    }

    /// Stops like a killed process would: in-flight reconciles are dropped mid-way.
    pub fn kill(mut self) {
        self.stop.take();
        self.task.abort();
        self.beside.iter().for_each(JoinHandle::abort);
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.task.abort();
        self.beside.iter().for_each(JoinHandle::abort);
    }
}

pub async fn moto_operator(namespace: &str, resync: Duration) -> Operator {
    Operator::start(&testenv::moto().endpoint(), namespace, resync).await
}

pub async fn pipelines(namespace: &str) -> Api<TrackingPipeline> {
    Api::namespaced(testenv::kube().client().await, namespace)
}

pub async fn create(api: &Api<TrackingPipeline>, name: &str, spec: Value) -> TrackingPipeline {
    let spec: TrackingPipelineSpec = serde_json::from_value(spec).expect("spec JSON");
    api.create(&PostParams::default(), &TrackingPipeline::new(name, spec))
        .await
        .expect("create pipeline")
}

fn condition_status(p: &TrackingPipeline, type_: &str) -> Option<(String, String, String)> {
    let status = p.status.as_ref()?;
    conditions::get(&status.conditions, type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Polls the pipeline until `done` holds; panics with the last status after [`WAIT`].
pub async fn wait_for(
    api: &Api<TrackingPipeline>,
    name: &str,
    what: &str,
    done: impl Fn(&TrackingPipeline) -> bool,
) -> TrackingPipeline {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let current = api.get_opt(name).await.expect("get pipeline");
        if let Some(p) = &current {
            if done(p) {
                return p.clone();
            }
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "{name}: gave up waiting for {what}; last seen: {:#?}",
                current.map(|p| p.status)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub fn is(p: &TrackingPipeline, type_: &str, status: &str) -> bool {
    condition_status(p, type_).is_some_and(|(s, _, _)| s == status)
}

/// The worker part is done: its Deployment is applied and either available or still within
/// its start grace. Without a node its Pods never run, and whether the deployment controller
/// has reported `Available=False` yet is a race, so both answers count.
pub fn worker_applied(p: &TrackingPipeline) -> bool {
    is(p, "WorkerReady", "True") || reason(p, "WorkerReady").as_deref() == Some("WorkerStarting")
}

pub fn reason(p: &TrackingPipeline, type_: &str) -> Option<String> {
    condition_status(p, type_).map(|(_, r, _)| r)
}

pub fn message(p: &TrackingPipeline, type_: &str) -> Option<String> {
    condition_status(p, type_).map(|(_, _, m)| m)
}

/// Ready=True for the pipeline's current generation.
pub async fn wait_ready(api: &Api<TrackingPipeline>, name: &str) -> TrackingPipeline {
    wait_for(api, name, "Ready=True", |p| {
        is(p, "Ready", "True")
            && reason(p, "Reconciling").is_none()
            && p.status.as_ref().and_then(|s| s.observed_generation) == p.metadata.generation
    })
    .await
}

pub async fn wait_gone(api: &Api<TrackingPipeline>, name: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while api.get_opt(name).await.expect("get").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The AWS names and tags the pipeline maps to (the aws module's own pure mapping).
pub fn desired_of(p: &TrackingPipeline) -> Desired {
    desired(p, &Settings::default()).expect("desired state")
}

/// Reasons of the Events about a pipeline.
pub async fn event_reasons(client: &Client, p: &TrackingPipeline) -> Vec<(String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), &p.namespace().unwrap_or_default());
    let list = api
        .list(&ListParams::default().fields(&format!("regarding.name={}", p.name_any())))
        .await
        .expect("list events");
    list.items
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// Polls until `check` passes (drift repair, deletion): returns whether it did in time.
pub async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// Every attribute of an SQS queue.
pub async fn queue_attributes(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
) -> std::collections::HashMap<aws_sdk_sqs::types::QueueAttributeName, String> {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .unwrap_or_default()
}

/// Audit items, without the worker's own bookkeeping (`#`-prefixed partition keys).
pub async fn audit_item_count(ddb: &aws_sdk_dynamodb::Client, table: &str) -> usize {
    use aws_sdk_dynamodb::types::{AttributeValue, Select};
    let mut count = 0;
    let mut start = None;
    loop {
        let page = ddb
            .scan()
            .table_name(table)
            .select(Select::Count)
            .filter_expression("NOT begins_with(tracking_id, :hash)")
            .expression_attribute_values(":hash", AttributeValue::S("#".into()))
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        count += page.count() as usize;
        start = page.last_evaluated_key;
        if start.is_none() {
            return count;
        }
    }
}

//! The TrackingPipeline controller.
//!
//! `reconcile` only calls kube's [`finalizer()`] with one apply and one cleanup branch
//! ([`apply`], [`cleanup`]); the finalizer is in place before the first AWS create. Apply
//! runs again after `--resync-interval`, which is how AWS drift is found and repaired.

mod apply;
mod backoff;
mod cleanup;
pub mod conditions;
pub mod leader;
pub mod liveness;
mod observe;
mod outcome;
pub mod status_writer;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::SdkConfig;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::{WatchStreamExt, predicates, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use rand::Rng;
use serde::de::DeserializeOwned;
use tracing::{Instrument, info, info_span, warn};

use crate::api::TrackingPipeline;
use crate::aws::{self, AwsClients};
use crate::error::{Error, Result};
use crate::http::Health;
use crate::metrics::Metrics;

/// The finalizer that guards AWS cleanup.
pub const FINALIZER: &str = "tracking-operator.io/cleanup";

/// The reporting controller in Events.
pub const CONTROLLER_NAME: &str = "tracking-operator";

/// Operator-wide settings, read once at start.
#[derive(Clone, Debug)]
pub struct Config {
    pub worker_image: String,
    pub resync_interval: Duration,
    /// Requeue while a part is not ready yet (e.g. an unconfirmed e-mail subscription).
    pub not_ready_requeue: Duration,
    pub error_backoff_base: Duration,
    pub error_backoff_max: Duration,
    /// Region and endpoint handed to the workers.
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    /// Secret the workers take extra environment from (static credentials off EKS).
    pub worker_credentials_secret: Option<String>,
    pub aws_settings: aws::Settings,
    /// Watch one namespace, or all.
    pub namespace: Option<String>,
    pub concurrency: u16,
    /// This replica's name in Events.
    pub identity: String,
    /// How long the worker Deployment may have no available replica before WorkerReady
    /// turns False (Pods starting, an image being pulled).
    pub worker_start_grace: Duration,
    /// Pipelines per second given their first pass after a start when they were already
    /// Ready and up to date: bounds the wave of AWS reads after a restart or leader change.
    /// 0 verifies them all at once.
    pub startup_rate: f64,
}

impl Config {
    pub fn new(worker_image: impl Into<String>) -> Self {
        Self {
            worker_image: worker_image.into(),
            resync_interval: Duration::from_secs(300),
            not_ready_requeue: Duration::from_secs(30),
            error_backoff_base: Duration::from_secs(2),
            error_backoff_max: Duration::from_secs(300),
            region: None,
            endpoint_url: None,
            worker_credentials_secret: None,
            aws_settings: aws::Settings::default(),
            namespace: None,
            concurrency: 16,
            identity: CONTROLLER_NAME.into(),
            worker_start_grace: Duration::from_secs(90),
            startup_rate: 4.0,
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub aws: AwsClients,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    /// Warnings only: kube's recorder keeps every Event it sent for 6 minutes, to fold a
    /// repeat into a series. A failing part repeats its Warning on every pass, so that is
    /// worth it; Normal Events announce transitions and rarely repeat, and holding them
    /// cost several MiB per 100 pipelines created (a table of ~1.6 KB entries that never
    /// shrinks, measured with heaptrack on `make bench-operator`).
    warnings: Recorder,
    reporter: Reporter,
    /// Consecutive failures per pipeline, for the error backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Consecutive passes per pipeline with a part not ready yet, for the not-ready backoff.
    waiting: Mutex<HashMap<String, u32>>,
    /// Pipelines this process has looked at, and how many settled ones it found, for the
    /// start-up spread.
    seen: Mutex<HashSet<String>>,
    /// Pipelines this process has begun a pass over.
    passed: Mutex<HashSet<String>>,
    settled_at_start: AtomicU64,
}

impl Context {
    pub fn new(
        client: Client,
        sdk: &SdkConfig,
        mut config: Config,
        metrics: Arc<Metrics>,
        aws: AwsClients,
    ) -> Self {
        if config.region.is_none() {
            config.region = sdk.region().map(|r| r.to_string());
        }
        let reporter = Reporter {
            controller: CONTROLLER_NAME.into(),
            instance: Some(config.identity.clone()),
        };
        Self {
            warnings: Recorder::new(client.clone(), reporter.clone()),
            reporter,
            client,
            aws,
            config,
            metrics,
            failures: Mutex::default(),
            waiting: Mutex::default(),
            seen: Mutex::default(),
            passed: Mutex::default(),
            settled_at_start: AtomicU64::new(0),
        }
    }

    /// Publishes an Event on the pipeline; a failure to do so is logged, never fatal.
    pub(crate) async fn publish(
        &self,
        pipeline: &TrackingPipeline,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        let event = Event {
            type_,
            reason: reason.chars().take(128).collect(),
            note: Some(note.chars().take(1024).collect()),
            action: action.chars().take(128).collect(),
            secondary: None,
        };
        // A Normal Event through a recorder of its own: nothing is kept, and a second one
        // with the same reason is an Event of its own with its own note (a series keeps the
        // first note).
        let recorder = match type_ {
            EventType::Warning => &self.warnings,
            EventType::Normal => &Recorder::new(self.client.clone(), self.reporter.clone()),
        };
        if let Err(err) = recorder.publish(&event, &pipeline.object_ref(&())).await {
            warn!(%err, reason, "cannot publish Event");
        }
    }

    fn key(pipeline: &TrackingPipeline) -> String {
        format!(
            "{}/{}",
            pipeline.namespace().unwrap_or_default(),
            pipeline.name_any()
        )
    }

    pub(crate) fn reset_failures(&self, pipeline: &TrackingPipeline) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&Self::key(pipeline));
    }

    pub(crate) fn reset_waiting(&self, pipeline: &TrackingPipeline) {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&Self::key(pipeline));
    }

    /// The first time this process meets a pipeline whose AWS parts were in place at its
    /// current generation, when to give it its first pass: after a restart 1,000 such
    /// pipelines are verified over minutes, not in one burst of AWS reads. New specs and
    /// deletions never wait.
    pub(crate) fn startup_delay(&self, pipeline: &TrackingPipeline) -> Option<Duration> {
        let first = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(Self::key(pipeline));
        let status = pipeline.status.as_ref()?;
        // AWS parts, not Ready: the first pass is about AWS reads, and a worker not Ready
        // yet (no node, an image being pulled) is watched through its Deployment anyway.
        let settled = status.aws_converged(pipeline.metadata.generation);
        if !first || !settled {
            return None;
        }
        let n = self.settled_at_start.fetch_add(1, Ordering::Relaxed);
        backoff::startup_slot(n, self.config.startup_rate)
    }

    /// Whether this pass is this process's first over a pipeline whose status says its AWS
    /// parts were in place at its current generation: then the status is trusted for what
    /// it proves, and the re-reads are spread over the tag window (`aws::verified`).
    pub(crate) fn trusted_first_pass(&self, pipeline: &TrackingPipeline) -> bool {
        let first = self
            .passed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(Self::key(pipeline));
        first
            && pipeline
                .status
                .as_ref()
                .is_some_and(|s| s.aws_converged(pipeline.metadata.generation))
    }

    /// The resync delay, spread so that pipelines do not resync in waves.
    pub(crate) fn resync(&self) -> Duration {
        backoff::spread(
            self.config.resync_interval,
            rand::rng().random_range(-1.0..=1.0),
        )
    }

    /// When to look again at a pipeline with a part not ready yet: `not_ready_requeue`,
    /// doubling per pass up to the resync interval.
    pub(crate) fn next_look(&self, pipeline: &TrackingPipeline) -> Duration {
        let passes = {
            let mut map = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(Self::key(pipeline)).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        backoff::base_delay(
            passes,
            self.config.not_ready_requeue,
            self.config.resync_interval,
        )
    }

    fn next_retry(&self, pipeline: &TrackingPipeline) -> Duration {
        let failures = {
            let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(Self::key(pipeline)).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let jitter = rand::rng().random_range(0.5..1.5);
        backoff::jittered(
            failures,
            self.config.error_backoff_base,
            self.config.error_backoff_max,
            jitter,
        )
    }
}

async fn reconcile(pipeline: Arc<TrackingPipeline>, ctx: Arc<Context>) -> Result<Action> {
    let reconcile_id = format!("{:016x}", rand::rng().random::<u64>());
    // `pipeline`, not `name`: the JSON formatter already writes the span's own name as `name`.
    let span = info_span!(
        "reconcile",
        namespace = %pipeline.namespace().unwrap_or_default(),
        pipeline = %pipeline.name_any(),
        reconcile_id = %reconcile_id,
    );
    async move {
        let _timer = ctx.metrics.reconcile_timer();
        let namespace = pipeline
            .namespace()
            .ok_or_else(|| Error::InvalidSpec("a TrackingPipeline must be namespaced".into()))?;
        let api: Api<TrackingPipeline> = Api::namespaced(ctx.client.clone(), &namespace);
        let result = finalizer(&api, FINALIZER, pipeline, |event| async {
            match event {
                Finalizer::Apply(p) => match apply::apply(p.clone(), &ctx).await {
                    // Not a failure: the watch cache had not caught up with a newer write.
                    // Start again from the newer copy once it arrives.
                    Err(err @ Error::StaleStatus(_)) => {
                        info!(error = %err, "pass started from an out-of-date copy; again");
                        Ok(Action::requeue(ctx.next_retry(&p)))
                    }
                    result => result,
                },
                Finalizer::Cleanup(p) => cleanup::cleanup(p, &ctx).await,
            }
        })
        .await
        .map_err(|e| Error::Finalizer(Box::new(e)));
        ctx.metrics
            .reconciled(result.as_ref().err().map(Error::metric_label));
        result
    }
    .instrument(span)
    .await
}

fn error_policy(pipeline: Arc<TrackingPipeline>, err: &Error, ctx: Arc<Context>) -> Action {
    let retry = ctx.next_retry(&pipeline);
    if err.asks_to_wait() {
        info!(
            namespace = %pipeline.namespace().unwrap_or_default(),
            pipeline = %pipeline.name_any(),
            reason = %err,
            retry_in_ms = retry.as_millis() as u64,
            "waiting on AWS"
        );
    } else {
        warn!(
            namespace = %pipeline.namespace().unwrap_or_default(),
            pipeline = %pipeline.name_any(),
            error = %err,
            retry_in_ms = retry.as_millis() as u64,
            "reconcile failed"
        );
    }
    Action::requeue(retry)
}

/// What makes a pipeline worth reconciling now: a new generation, a finalizer change or a
/// deletion, but not our own status writes (the resync timer covers everything else).
fn spec_or_lifecycle(pipeline: &TrackingPipeline) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    pipeline.metadata.generation.hash(&mut hasher);
    pipeline.metadata.finalizers.hash(&mut hasher);
    pipeline
        .metadata
        .deletion_timestamp
        .is_some()
        .hash(&mut hasher);
    Some(hasher.finish())
}

/// What the cache keeps of a pipeline: never read, `managedFields` and kubectl's copy of
/// the last applied manifest are often larger than the rest of the object, and there is one
/// copy per pipeline in memory for the life of the process.
fn prune(pipeline: &mut TrackingPipeline) {
    pipeline.managed_fields_mut().clear();
    pipeline
        .annotations_mut()
        .remove("kubectl.kubernetes.io/last-applied-configuration");
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller until `shutdown` completes.
pub async fn run(
    ctx: Arc<Context>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let namespace = ctx.config.namespace.clone();
    let ns = namespace.as_deref();
    let (reader, writer) = reflector::store();
    ctx.metrics.observe_pipelines(reader.clone());
    let pipelines = watcher(
        scoped::<TrackingPipeline>(&client, ns),
        watcher::Config::default(),
    )
    .default_backoff()
    .inspect({
        let health = health.clone();
        move |event| health.liveness.watch_result(event.is_ok())
    })
    .modify(prune)
    .reflect(writer)
    .applied_objects()
    .predicate_filter(spec_or_lifecycle, Default::default());
    let children =
        watcher::Config::default().labels("app.kubernetes.io/managed-by=tracking-operator");
    let deployments = watcher(scoped::<Deployment>(&client, ns), children.clone())
        .default_backoff()
        .applied_objects()
        .predicate_filter(crate::k8s::deployment_change, Default::default());
    // The ConfigMap and ServiceAccount children matter only as "changed or deleted": their
    // metadata is enough, so their data never sits in this process's memory.
    let config_maps = watcher(
        scoped::<PartialObjectMeta<ConfigMap>>(&client, ns),
        children.clone(),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(predicates::resource_version, Default::default());
    let service_accounts = watcher(
        scoped::<PartialObjectMeta<ServiceAccount>>(&client, ns),
        children,
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(predicates::resource_version, Default::default());

    health.running.store(true, Ordering::Relaxed);
    info!(
        namespace = namespace.as_deref().unwrap_or("(all)"),
        "controller started"
    );
    Controller::for_stream(pipelines, reader)
        .owns_stream(deployments)
        .owns_stream(config_maps)
        .owns_stream(service_accounts)
        .with_config(ControllerConfig::default().concurrency(ctx.config.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(
            {
                let health = health.clone();
                move |pipeline, ctx| {
                    let health = health.clone();
                    async move {
                        let _running = health.liveness.reconcile_started();
                        reconcile(pipeline, ctx).await
                    }
                }
            },
            error_policy,
            ctx,
        )
        .for_each(|result| async move {
            if let Err(err) = result {
                warn!(error = %err, "controller");
            }
        })
        .await;
    health.running.store(false, Ordering::Relaxed);
    info!("controller stopped");
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use kube::ResourceExt;

    use super::prune;
    use crate::api::{TrackingPipeline, TrackingPipelineSpec};

    #[test]
    fn the_cache_drops_managed_fields_and_the_last_applied_copy_but_keeps_the_rest() {
        let mut p = TrackingPipeline::new("parcels", TrackingPipelineSpec::default());
        p.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        p.metadata.annotations = Some(
            [
                ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
                ("team", "logistics"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        );
        prune(&mut p);
        assert!(p.managed_fields().is_empty());
        assert_eq!(p.annotations().len(), 1);
        assert_eq!(p.annotations()["team"], "logistics");
        assert_eq!(p.spec, TrackingPipelineSpec::default());
    }
}

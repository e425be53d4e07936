//! Wiring: the shared context, start-up, and the SIGTERM drain.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use aws_config::SdkConfig;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{self, ClientKind, Config};
use crate::error::{Error, Result};
use crate::lean::Lean;
use crate::maintenance::DailyCounters;
use crate::metrics::{Metrics, Report};
use crate::queue::Sqs;
use crate::store::Store;

/// What every task shares.
pub struct Ctx {
    pub config: Config,
    pub sqs: Sqs,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub counters: DailyCounters,
    /// Fired on SIGTERM: receive nothing more.
    pub stop: CancellationToken,
    /// Fired when the drain deadline passes: give up retrying in-flight work (it stays in
    /// the queue and is redelivered; the idempotent write makes that safe).
    pub abandon: CancellationToken,
    /// The receive count from which a message is requeued before processing (0: never);
    /// set at start from the queue's redrive policy (`requeue::load_threshold`).
    requeue_from: AtomicU32,
}

impl Ctx {
    /// The context for `config`, with the clients built from `sdk` (the hot path on the lean
    /// client unless the configuration says otherwise or it cannot serve it).
    pub fn new(config: Config, sdk: &SdkConfig) -> Self {
        let lean = match config.client {
            ClientKind::Lean => {
                let lean = Lean::new(sdk).map(Arc::new);
                if lean.is_none() {
                    tracing::info!(
                        "the lean client cannot serve this configuration; using the SDK"
                    );
                }
                lean
            }
            ClientKind::Sdk => None,
        };
        Self {
            sqs: Sqs::new(config::sqs_client(sdk), lean.clone()),
            store: Store::new(
                config::dynamodb_client(sdk),
                config.settings.table_name.clone(),
            )
            .with_lean(lean),
            metrics: Arc::new(Metrics::new()),
            counters: DailyCounters::default(),
            stop: CancellationToken::new(),
            abandon: CancellationToken::new(),
            requeue_from: AtomicU32::new(0),
            config,
        }
    }

    pub fn set_requeue_threshold(&self, from: Option<u32>) {
        self.requeue_from
            .store(from.unwrap_or(0), Ordering::Relaxed);
    }

    pub fn requeue_threshold(&self) -> Option<u32> {
        Some(self.requeue_from.load(Ordering::Relaxed)).filter(|n| *n > 0)
    }
}

/// A running worker.
pub struct Worker {
    ctx: Arc<Ctx>,
    receivers: JoinSet<()>,
    background: JoinSet<()>,
    background_stop: CancellationToken,
    ready: Arc<AtomicBool>,
    /// The address `/metrics`, `/healthz` and `/readyz` are served on.
    pub http_addr: std::net::SocketAddr,
}

impl Worker {
    /// Binds the HTTP port and starts the receivers.
    pub async fn start(config: Config, sdk: &SdkConfig) -> Result<Self> {
        let ctx = Arc::new(Ctx::new(config, sdk));
        let metrics = ctx.metrics.clone();
        let ready = Arc::new(AtomicBool::new(false));
        let background_stop = CancellationToken::new();
        let mut background = JoinSet::new();

        let addr = ctx.config.settings.metrics_addr.clone();
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|source| Error::Http {
                addr: addr.clone(),
                source,
            })?;
        let http_addr = listener
            .local_addr()
            .map_err(|source| Error::Http { addr, source })?;
        background.spawn(crate::http::serve(
            listener,
            metrics.clone(),
            ready.clone(),
            background_stop.clone(),
        ));
        background.spawn(crate::metrics::publish_cloudwatch(
            metrics.clone(),
            config::cloudwatch_client(sdk),
            ctx.config.settings.metrics_namespace.clone(),
            ctx.config.settings.pipeline.clone(),
            background_stop.clone(),
        ));
        background.spawn(crate::maintenance::flush_counters_periodically(
            ctx.clone(),
            background_stop.clone(),
        ));

        background.spawn(crate::sweep::sweep_periodically(
            ctx.clone(),
            background_stop.clone(),
        ));

        crate::requeue::load_threshold(&ctx).await;
        let mut receivers = JoinSet::new();
        for id in 0..ctx.config.settings.concurrency {
            receivers.spawn(crate::consumer::receive_loop(ctx.clone(), id));
        }
        ready.store(true, Ordering::SeqCst);
        tracing::info!(
            queue = %ctx.config.settings.queue_url,
            table = %ctx.config.settings.table_name,
            pipeline = %ctx.config.settings.pipeline,
            concurrency = ctx.config.settings.concurrency,
            %http_addr,
            "worker started"
        );
        Ok(Self {
            ctx,
            receivers,
            background,
            background_stop,
            ready,
            http_addr,
        })
    }

    /// Totals so far.
    pub fn report(&self) -> Report {
        self.ctx.metrics.report()
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.ctx.metrics.clone()
    }

    /// Stops receiving, finishes and deletes what is in flight (abandoning retries after
    /// the drain deadline), flushes counters and metrics, and returns the totals.
    pub async fn shutdown(mut self) -> Report {
        tracing::info!("shutting down: no more receives, draining in-flight messages");
        self.ready.store(false, Ordering::SeqCst);
        self.ctx.stop.cancel();
        let drained = tokio::time::timeout(self.ctx.config.drain, drain(&mut self.receivers)).await;
        // Every step after the drain has its own bound, so the whole shutdown fits
        // `contract::drain_budget_seconds`, the Pod's termination grace period.
        if drained.is_err() {
            tracing::warn!("drain deadline passed; abandoning in-flight retries");
            self.ctx.abandon.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(3), drain(&mut self.receivers)).await;
            self.receivers.abort_all();
        }
        // One last attempt for the day counters, then stop the background tasks (the
        // CloudWatch publisher sends its final aggregate as it stops).
        self.ctx.abandon.cancel();
        let flushed = tokio::time::timeout(
            Duration::from_secs(4),
            crate::maintenance::flush_counters(&self.ctx),
        )
        .await;
        if flushed.is_err() {
            tracing::warn!(
                "final counter flush timed out; the last seconds of day counts are lost"
            );
        }
        self.background_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(3), drain(&mut self.background)).await;
        self.background.abort_all();
        let report = self.ctx.metrics.report();
        tracing::info!(?report, "worker stopped");
        report
    }
}

async fn drain(set: &mut JoinSet<()>) {
    while let Some(joined) = set.join_next().await {
        if let Err(e) = joined
            && e.is_panic()
        {
            tracing::error!(error = %e, "worker task panicked");
        }
    }
}

/// Runs until `shutdown` completes, then drains.
pub async fn run(
    config: Config,
    sdk: &SdkConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Report> {
    let worker = Worker::start(config, sdk).await?;
    shutdown.await;
    Ok(worker.shutdown().await)
}

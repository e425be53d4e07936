//! Prometheus metrics for `/metrics`, and the CloudWatch metrics the pipeline's alarms watch
//! (aggregated in memory, published at most once a minute per replica).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::contract::cloudwatch;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabel {
    pub service: &'static str,
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub received: Counter,
    pub written: Counter,
    pub duplicates: Counter,
    /// Messages moved to a fresh copy before SQS's redrive (see `requeue`).
    pub requeued: Counter,
    /// Updates SQS had moved to the DLQ, taken back by a sweep (see `sweep`), by result.
    pub recovered: Family<ResultLabel, Counter>,
    pub failed: Family<ReasonLabel, Counter>,
    pub dead_lettered: Family<ReasonLabel, Counter>,
    pub throttles: Family<CallLabel, Counter>,
    pub aws_calls: Family<CallLabel, Counter>,
    pub maintenance: Family<ResultLabel, Counter>,
    pub batch_seconds: Histogram,
    /// From SQS's SentTimestamp to the audit item written: what a producer waits for.
    pub end_to_end_seconds: Histogram,
    pub in_flight: Gauge,
    /// Updates whose key held different content, written under a conflict key.
    pub key_conflicts: Counter,
    /// Calls refused by the environment (access, missing resources, KMS, credentials, clock).
    pub environment_errors: Family<CallLabel, Counter>,
    /// Services whose last call failed for an environment reason: the worker is not ready
    /// and stops receiving while one is listed.
    env_failing: std::sync::Mutex<std::collections::BTreeSet<&'static str>>,
    cw: CloudWatchCounters,
    totals: Totals,
}

/// Label-free totals for [`Report`] (a `Family` cannot be summed through its public API).
#[derive(Default)]
struct Totals {
    recovered: AtomicU64,
    dead_lettered: AtomicU64,
    failed: AtomicU64,
    throttles: AtomicU64,
    sqs_calls: AtomicU64,
    dynamodb_calls: AtomicU64,
    environment_errors: AtomicU64,
}

/// Counts since the last CloudWatch publish.
#[derive(Default)]
struct CloudWatchCounters {
    errors: AtomicU64,
    throttles: AtomicU64,
    processed: AtomicU64,
}

/// Totals for the process lifetime, printed at exit (and used by tests and the benchmark).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub received: u64,
    pub written: u64,
    pub duplicates: u64,
    pub requeued: u64,
    /// Updates taken back from the DLQ (written now, or found already stored).
    pub recovered: u64,
    pub dead_lettered: u64,
    pub failed: u64,
    pub throttles: u64,
    pub sqs_calls: u64,
    pub dynamodb_calls: u64,
    pub key_conflicts: u64,
    pub environment_errors: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tracking_worker");
        let m = Self {
            received: Counter::default(),
            written: Counter::default(),
            duplicates: Counter::default(),
            requeued: Counter::default(),
            recovered: Family::default(),
            failed: Family::default(),
            dead_lettered: Family::default(),
            throttles: Family::default(),
            aws_calls: Family::default(),
            maintenance: Family::default(),
            batch_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            end_to_end_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 16)),
            in_flight: Gauge::default(),
            key_conflicts: Counter::default(),
            environment_errors: Family::default(),
            env_failing: Default::default(),
            cw: CloudWatchCounters::default(),
            totals: Totals::default(),
            registry: Registry::default(),
        };
        registry.register(
            "messages_received",
            "Messages received from the queue",
            m.received.clone(),
        );
        registry.register(
            "updates_written",
            "Updates written to the audit table",
            m.written.clone(),
        );
        registry.register(
            "duplicates",
            "Updates already in the audit table (redeliveries, producer retries)",
            m.duplicates.clone(),
        );
        registry.register(
            "requeued",
            "Messages sent back to the queue as a fresh copy before SQS's redrive policy would move them to the DLQ",
            m.requeued.clone(),
        );
        registry.register(
            "recovered_from_dlq",
            "Updates SQS had moved to the DLQ after lost deliveries, taken back by a sweep (written, or already_stored)",
            m.recovered.clone(),
        );
        registry.register(
            "failures",
            "Failed message attempts, by reason",
            m.failed.clone(),
        );
        registry.register(
            "dead_lettered",
            "Poison messages sent to the DLQ, by reason",
            m.dead_lettered.clone(),
        );
        registry.register(
            "throttles",
            "Throttled or failed backend calls that were retried",
            m.throttles.clone(),
        );
        registry.register("aws_calls", "AWS API calls made", m.aws_calls.clone());
        registry.register(
            "maintenance_runs",
            "Maintenance messages handled, by result",
            m.maintenance.clone(),
        );
        registry.register(
            "batch_duration_seconds",
            "Time to process and delete a batch",
            m.batch_seconds.clone(),
        );
        registry.register(
            "end_to_end_latency_seconds",
            "From the message's SQS SentTimestamp until its audit item was written",
            m.end_to_end_seconds.clone(),
        );
        registry.register(
            "messages_in_flight",
            "Messages received and not yet settled",
            m.in_flight.clone(),
        );
        registry.register(
            "key_conflicts",
            "Updates whose key already held different content (stored under a conflict key)",
            m.key_conflicts.clone(),
        );
        registry.register(
            "environment_errors",
            "Calls refused by the environment (access denied, missing resource, KMS, credentials, clock skew); retried, never dead-lettered",
            m.environment_errors.clone(),
        );
        Self { registry, ..m }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn call(&self, service: &'static str, operation: &'static str) {
        self.aws_calls
            .get_or_create(&CallLabel { service, operation })
            .inc();
        let total = match service {
            "sqs" => &self.totals.sqs_calls,
            "dynamodb" => &self.totals.dynamodb_calls,
            _ => return,
        };
        total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn throttled(&self, service: &'static str, operation: &'static str) {
        self.throttles
            .get_or_create(&CallLabel { service, operation })
            .inc();
        self.cw.throttles.fetch_add(1, Ordering::Relaxed);
        self.totals.throttles.fetch_add(1, Ordering::Relaxed);
    }

    /// An environment error on `service`: counted, and the service is marked failing.
    pub fn environment_failed(&self, service: &'static str, operation: &'static str) {
        self.environment_errors
            .get_or_create(&CallLabel { service, operation })
            .inc();
        self.totals
            .environment_errors
            .fetch_add(1, Ordering::Relaxed);
        self.cw.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.env_failing.lock() {
            f.insert(service);
        }
    }

    /// A call to `service` succeeded: the environment works again for it.
    pub fn environment_recovered(&self, service: &'static str) {
        if let Ok(mut f) = self.env_failing.lock() {
            f.remove(service);
        }
    }

    pub fn environment_failing(&self, service: &str) -> bool {
        self.env_failing
            .lock()
            .map(|f| f.contains(service))
            .unwrap_or(false)
    }

    pub fn any_environment_failing(&self) -> bool {
        self.env_failing
            .lock()
            .map(|f| !f.is_empty())
            .unwrap_or(false)
    }

    pub fn record_written(&self) {
        self.written.inc();
        self.cw.processed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_duplicate(&self) {
        self.duplicates.inc();
        self.cw.processed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_failure(&self, reason: &str) {
        self.failed
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
        self.cw.errors.fetch_add(1, Ordering::Relaxed);
        self.totals.failed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_recovered(&self, result: &'static str) {
        self.recovered.get_or_create(&ResultLabel { result }).inc();
        self.totals.recovered.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_dead_lettered(&self, reason: &str) {
        self.dead_lettered
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
        self.totals.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    pub fn report(&self) -> Report {
        let t = &self.totals;
        Report {
            received: self.received.get(),
            written: self.written.get(),
            duplicates: self.duplicates.get(),
            requeued: self.requeued.get(),
            recovered: t.recovered.load(Ordering::Relaxed),
            dead_lettered: t.dead_lettered.load(Ordering::Relaxed),
            failed: t.failed.load(Ordering::Relaxed),
            throttles: t.throttles.load(Ordering::Relaxed),
            sqs_calls: t.sqs_calls.load(Ordering::Relaxed),
            dynamodb_calls: t.dynamodb_calls.load(Ordering::Relaxed),
            key_conflicts: self.key_conflicts.get(),
            environment_errors: t.environment_errors.load(Ordering::Relaxed),
        }
    }

    fn take_cloudwatch(&self) -> [(&'static str, u64); 3] {
        [
            (
                cloudwatch::METRIC_ERRORS,
                self.cw.errors.swap(0, Ordering::Relaxed),
            ),
            (
                cloudwatch::METRIC_THROTTLES,
                self.cw.throttles.swap(0, Ordering::Relaxed),
            ),
            (
                cloudwatch::METRIC_PROCESSED,
                self.cw.processed.swap(0, Ordering::Relaxed),
            ),
        ]
    }

    fn restore_cloudwatch(&self, values: &[(&'static str, u64); 3]) {
        self.cw.errors.fetch_add(values[0].1, Ordering::Relaxed);
        self.cw.throttles.fetch_add(values[1].1, Ordering::Relaxed);
        self.cw.processed.fetch_add(values[2].1, Ordering::Relaxed);
    }
}

/// The datums for one publish: one per alarm metric, with the pipeline dimension.
pub fn cloudwatch_datums(pipeline: &str, values: &[(&'static str, u64)]) -> Vec<MetricDatum> {
    values
        .iter()
        .map(|(name, value)| {
            MetricDatum::builder()
                .metric_name(*name)
                .dimensions(
                    Dimension::builder()
                        .name(cloudwatch::DIMENSION_PIPELINE)
                        .value(pipeline)
                        .build(),
                )
                .value(*value as f64)
                .unit(StandardUnit::Count)
                .build()
        })
        .collect()
}

/// Publishes the alarm metrics every [`cloudwatch::PUBLISH_PERIOD_SECONDS`], and once more
/// when `stop` fires, so a replica's last minute is not lost on shutdown.
pub async fn publish_cloudwatch(
    metrics: Arc<Metrics>,
    client: aws_sdk_cloudwatch::Client,
    namespace: String,
    pipeline: String,
    stop: CancellationToken,
) {
    let period = Duration::from_secs(cloudwatch::PUBLISH_PERIOD_SECONDS as u64);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        let last = tokio::select! {
            _ = ticker.tick() => false,
            _ = stop.cancelled() => true,
        };
        let values = metrics.take_cloudwatch();
        let sent = client
            .put_metric_data()
            .namespace(&namespace)
            .set_metric_data(Some(cloudwatch_datums(&pipeline, &values)))
            .send()
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %aws_smithy_types::error::display::DisplayErrorContext(&e), "CloudWatch publish failed; keeping the counts for the next period");
            metrics.restore_cloudwatch(&values);
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_sums_label_sets() {
        let m = Metrics::new();
        m.record_dead_lettered("not_json");
        m.record_dead_lettered("not_json");
        m.record_dead_lettered("bad_timestamp");
        m.call("sqs", "ReceiveMessage");
        m.call("dynamodb", "PutItem");
        m.call("dynamodb", "PutItem");
        let r = m.report();
        assert_eq!(r.dead_lettered, 3);
        assert_eq!(r.failed, 0);
        assert_eq!((r.sqs_calls, r.dynamodb_calls), (1, 2));
        assert!(
            m.encode()
                .contains("tracking_worker_dead_lettered_total{reason=\"not_json\"} 2")
        );
    }

    #[test]
    fn datums_carry_the_pipeline_dimension() {
        let d = cloudwatch_datums("ns/p", &[(cloudwatch::METRIC_ERRORS, 3)]);
        assert_eq!(d[0].metric_name(), Some(cloudwatch::METRIC_ERRORS));
        assert_eq!(d[0].value(), Some(3.0));
        assert_eq!(d[0].dimensions()[0].value(), Some("ns/p"));
    }
}

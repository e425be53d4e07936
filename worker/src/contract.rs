//! The contract between the operator and the worker: the environment variables the
//! worker reads, the CloudWatch metrics it publishes for the pipeline's alarms, and the
//! maintenance message the pipeline's schedule sends. The operator builds the worker
//! Deployment and the alarms from these definitions, so the two can never drift apart.

use std::collections::BTreeMap;

/// Environment variable names read by the worker.
pub mod env {
    pub const QUEUE_URL: &str = "TRACKING_QUEUE_URL";
    pub const DEAD_LETTER_QUEUE_URL: &str = "TRACKING_DEAD_LETTER_QUEUE_URL";
    pub const TABLE_NAME: &str = "TRACKING_TABLE_NAME";
    /// `namespace/name` of the TrackingPipeline; also the CloudWatch dimension value.
    pub const PIPELINE: &str = "TRACKING_PIPELINE";
    pub const BATCH_SIZE: &str = "TRACKING_BATCH_SIZE";
    pub const MAX_BATCHING_WINDOW_SECONDS: &str = "TRACKING_MAX_BATCHING_WINDOW_SECONDS";
    pub const CONCURRENCY: &str = "TRACKING_CONCURRENCY";
    pub const TTL_DAYS: &str = "TRACKING_TTL_DAYS";
    pub const VISIBILITY_TIMEOUT_SECONDS: &str = "TRACKING_VISIBILITY_TIMEOUT_SECONDS";
    pub const METRICS_NAMESPACE: &str = "TRACKING_METRICS_NAMESPACE";
    pub const METRICS_ADDR: &str = "TRACKING_METRICS_ADDR";
    /// Standard AWS SDK variables, listed so the operator sets them the same way.
    pub const AWS_REGION: &str = "AWS_REGION";
    pub const AWS_ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";
}

/// CloudWatch metrics the worker publishes and the operator's alarms watch.
pub mod cloudwatch {
    /// Default namespace; overridable per pipeline through [`super::env::METRICS_NAMESPACE`].
    pub const DEFAULT_NAMESPACE: &str = "TrackingOperator/Worker";
    /// Dimension name; its value is the pipeline's `namespace/name`.
    pub const DIMENSION_PIPELINE: &str = "Pipeline";
    /// Messages that failed processing (counted once per failed attempt). Unit: Count.
    pub const METRIC_ERRORS: &str = "Errors";
    /// Backend throttling or 5xx answers that were retried. Unit: Count.
    pub const METRIC_THROTTLES: &str = "Throttles";
    /// Messages written to the audit table (including absorbed duplicates). Unit: Count.
    pub const METRIC_PROCESSED: &str = "Processed";
    /// Period, in seconds, over which the worker aggregates before publishing.
    pub const PUBLISH_PERIOD_SECONDS: i32 = 60;
}

/// The body the pipeline's EventBridge schedule sends to the queue to trigger the daily
/// maintenance job. `<aws.scheduler.scheduled-time>` is substituted by EventBridge Scheduler.
pub const MAINTENANCE_MESSAGE_BODY: &str =
    r#"{"maintenance":"daily","scheduled_time":"<aws.scheduler.scheduled-time>"}"#;

/// Key of the maintenance marker in a message body; a body with this key is not a tracking update.
pub const MAINTENANCE_KEY: &str = "maintenance";

/// The shortest visibility timeout the worker accepts: its heartbeat extends a batch's
/// visibility every third of it, and below 30 s one slow call lets SQS hand the batch to
/// another replica. The CRD should refuse the same values.
pub const MIN_VISIBILITY_TIMEOUT_SECONDS: u32 = 30;

/// How long the worker may take, at most, to finish the batches in flight after SIGTERM
/// before it abandons their retries (they stay in the queue and are redelivered).
pub const DRAIN_SECONDS: u64 = 25;
/// What follows the drain: joining abandoned tasks (3 s), the last counter flush (4 s) and
/// stopping the HTTP server and CloudWatch publisher (3 s), each bounded by its own timeout.
pub const SHUTDOWN_TAIL_SECONDS: u64 = 10;
/// Slack for the process to start handling the signal and exit.
pub const SHUTDOWN_SLACK_SECONDS: u64 = 5;

/// Seconds from SIGTERM to the worker's exit, at most: the operator sets the Pod's
/// `terminationGracePeriodSeconds` to this, so Kubernetes never SIGKILLs a worker that is
/// still settling its batches. It takes the settings so that a future knob that lengthens the
/// drain changes the Pod with it; today the budget is the same for every pipeline.
pub fn drain_budget_seconds(_settings: &WorkerSettings) -> i64 {
    (DRAIN_SECONDS + SHUTDOWN_TAIL_SECONDS + SHUTDOWN_SLACK_SECONDS) as i64
}

/// Everything the worker needs, as the operator computes it from a pipeline and as the
/// worker parses it from its environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerSettings {
    pub queue_url: String,
    pub dead_letter_queue_url: String,
    pub table_name: String,
    /// `namespace/name` of the pipeline.
    pub pipeline: String,
    /// Messages per batch, 1..=10 per receive (accumulated up to the batching window).
    pub batch_size: u16,
    pub max_batching_window_seconds: u32,
    /// Concurrent receivers per replica.
    pub concurrency: u16,
    pub ttl_days: u32,
    pub visibility_timeout_seconds: u32,
    pub metrics_namespace: String,
    pub metrics_addr: String,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

/// A missing or invalid worker setting, naming the variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("environment variable {0} is required but not set")]
    Missing(&'static str),
    #[error("environment variable {var} is invalid: {reason} (got {value:?})")]
    Invalid {
        var: &'static str,
        value: String,
        reason: String,
    },
}

impl WorkerSettings {
    pub const DEFAULT_BATCH_SIZE: u16 = 10;
    pub const DEFAULT_MAX_BATCHING_WINDOW_SECONDS: u32 = 30;
    pub const DEFAULT_CONCURRENCY: u16 = 4;
    pub const DEFAULT_TTL_DAYS: u32 = 90;
    pub const DEFAULT_VISIBILITY_TIMEOUT_SECONDS: u32 = 150;
    pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:9090";

    /// The environment the operator puts on the worker container, in a stable order.
    pub fn to_env(&self) -> BTreeMap<&'static str, String> {
        let mut out = BTreeMap::from([
            (env::QUEUE_URL, self.queue_url.clone()),
            (
                env::DEAD_LETTER_QUEUE_URL,
                self.dead_letter_queue_url.clone(),
            ),
            (env::TABLE_NAME, self.table_name.clone()),
            (env::PIPELINE, self.pipeline.clone()),
            (env::BATCH_SIZE, self.batch_size.to_string()),
            (
                env::MAX_BATCHING_WINDOW_SECONDS,
                self.max_batching_window_seconds.to_string(),
            ),
            (env::CONCURRENCY, self.concurrency.to_string()),
            (env::TTL_DAYS, self.ttl_days.to_string()),
            (
                env::VISIBILITY_TIMEOUT_SECONDS,
                self.visibility_timeout_seconds.to_string(),
            ),
            (env::METRICS_NAMESPACE, self.metrics_namespace.clone()),
            (env::METRICS_ADDR, self.metrics_addr.clone()),
        ]);
        if let Some(region) = &self.region {
            out.insert(env::AWS_REGION, region.clone());
        }
        if let Some(endpoint) = &self.endpoint_url {
            out.insert(env::AWS_ENDPOINT_URL, endpoint.clone());
        }
        out
    }

    /// Parses settings from a variable lookup (`std::env::var` in production, a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let required = |var: &'static str| {
            lookup(var)
                .filter(|v| !v.trim().is_empty())
                .ok_or(SettingsError::Missing(var))
        };
        let number =
            |var: &'static str, default: u32, min: u32, max: u32| -> Result<u32, SettingsError> {
                match lookup(var).filter(|v| !v.trim().is_empty()) {
                    None => Ok(default),
                    Some(raw) => {
                        let invalid = |reason: String| SettingsError::Invalid {
                            var,
                            value: raw.clone(),
                            reason,
                        };
                        let n: u32 = raw
                            .trim()
                            .parse()
                            .map_err(|_| invalid("not a whole number".into()))?;
                        if n < min || n > max {
                            return Err(invalid(format!("must be between {min} and {max}")));
                        }
                        Ok(n)
                    }
                }
            };
        Ok(Self {
            queue_url: required(env::QUEUE_URL)?,
            dead_letter_queue_url: required(env::DEAD_LETTER_QUEUE_URL)?,
            table_name: required(env::TABLE_NAME)?,
            pipeline: required(env::PIPELINE)?,
            batch_size: number(env::BATCH_SIZE, Self::DEFAULT_BATCH_SIZE.into(), 1, 10_000)? as u16,
            max_batching_window_seconds: number(
                env::MAX_BATCHING_WINDOW_SECONDS,
                Self::DEFAULT_MAX_BATCHING_WINDOW_SECONDS,
                0,
                300,
            )?,
            concurrency: number(env::CONCURRENCY, Self::DEFAULT_CONCURRENCY.into(), 1, 256)? as u16,
            ttl_days: number(env::TTL_DAYS, Self::DEFAULT_TTL_DAYS, 1, 36_500)?,
            visibility_timeout_seconds: number(
                env::VISIBILITY_TIMEOUT_SECONDS,
                Self::DEFAULT_VISIBILITY_TIMEOUT_SECONDS,
                MIN_VISIBILITY_TIMEOUT_SECONDS,
                43_200,
            )?,
            metrics_namespace: lookup(env::METRICS_NAMESPACE)
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| cloudwatch::DEFAULT_NAMESPACE.to_string()),
            metrics_addr: lookup(env::METRICS_ADDR)
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| Self::DEFAULT_METRICS_ADDR.to_string()),
            region: lookup(env::AWS_REGION).filter(|v| !v.trim().is_empty()),
            endpoint_url: lookup(env::AWS_ENDPOINT_URL).filter(|v| !v.trim().is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> WorkerSettings {
        WorkerSettings {
            queue_url: "http://q".into(),
            dead_letter_queue_url: "http://dlq".into(),
            table_name: "t".into(),
            pipeline: "ns/p".into(),
            batch_size: 10,
            max_batching_window_seconds: 30,
            concurrency: 4,
            ttl_days: 90,
            visibility_timeout_seconds: 150,
            metrics_namespace: cloudwatch::DEFAULT_NAMESPACE.into(),
            metrics_addr: "0.0.0.0:9090".into(),
            region: Some("eu-west-1".into()),
            endpoint_url: None,
        }
    }

    #[test]
    fn env_round_trips() {
        let s = sample();
        let env = s.to_env();
        let parsed = WorkerSettings::from_lookup(|k| env.get(k).cloned()).unwrap();
        assert_eq!(parsed, s);
    }

    #[test]
    fn missing_and_invalid_name_the_variable() {
        let mut env = sample().to_env();
        env.remove(env::TABLE_NAME);
        let err = WorkerSettings::from_lookup(|k| env.get(k).cloned()).unwrap_err();
        assert_eq!(err, SettingsError::Missing(env::TABLE_NAME));
        let mut env = sample().to_env();
        env.insert(env::BATCH_SIZE, "zero".into());
        let err = WorkerSettings::from_lookup(|k| env.get(k).cloned()).unwrap_err();
        assert!(err.to_string().contains(env::BATCH_SIZE), "{err}");
    }

    #[test]
    fn a_visibility_timeout_below_30_seconds_is_refused() {
        for bad in ["0", "5", "29"] {
            let mut env = sample().to_env();
            env.insert(env::VISIBILITY_TIMEOUT_SECONDS, bad.into());
            let err = WorkerSettings::from_lookup(|k| env.get(k).cloned()).unwrap_err();
            assert!(
                err.to_string().contains(env::VISIBILITY_TIMEOUT_SECONDS),
                "{err}"
            );
        }
        let mut env = sample().to_env();
        env.insert(env::VISIBILITY_TIMEOUT_SECONDS, "30".into());
        assert!(WorkerSettings::from_lookup(|k| env.get(k).cloned()).is_ok());
    }

    #[test]
    fn the_drain_budget_covers_the_whole_shutdown() {
        let budget = drain_budget_seconds(&sample());
        assert!(budget >= (DRAIN_SECONDS + SHUTDOWN_TAIL_SECONDS) as i64);
        // Kubernetes' default grace period is 30 s: the operator must set it.
        assert!(budget > 30);
    }
}

//! Settings from the process environment, and the AWS clients built from them.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::contract::{SettingsError, WorkerSettings};

/// Worker-only knob (not part of the operator contract): how long a SIGTERM drain may
/// take before in-flight retries are abandoned. Kubernetes' default grace period is 30 s.
pub const DRAIN_SECONDS_ENV: &str = "TRACKING_DRAIN_SECONDS";
pub const DEFAULT_DRAIN_SECONDS: u64 = crate::contract::DRAIN_SECONDS;

/// Worker-only knob: seconds between sweeps of the DLQ for updates SQS moved there (0: none).
pub const DLQ_SWEEP_SECONDS_ENV: &str = "TRACKING_DLQ_SWEEP_SECONDS";
pub const DEFAULT_DLQ_SWEEP_SECONDS: u64 = 60;

/// Worker-only knob: how a batch's updates reach the table.
pub const WRITE_MODE_ENV: &str = "TRACKING_WRITE_MODE";

/// Worker-only knob: which client makes the hot-path calls.
pub const AWS_CLIENT_ENV: &str = "TRACKING_AWS_CLIENT";

/// Which client makes the hot-path calls (`ReceiveMessage`, `DeleteMessageBatch`, `PutItem`,
/// `TransactWriteItems`); every other call is the SDK's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    /// [`crate::lean::Lean`]: hyper + `aws-sigv4`, a fraction of the SDK's CPU per call (the
    /// default). Falls back to the SDK where it cannot serve the configuration.
    Lean,
    /// The AWS SDK for everything.
    Sdk,
}

/// How a batch's updates are written. Both are exactly-once (conditional puts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// One conditional `PutItem` per update, concurrently (the default: one write unit per
    /// update, and what every DynamoDB emulator implements correctly).
    Put,
    /// One `TransactWriteItems` of conditional puts per batch: about ten times fewer calls
    /// and much less CPU per message, at twice the write units. Not for moto, whose
    /// transaction rollback restores a whole-table snapshot and loses concurrent writes.
    Transaction,
}

/// Everything [`crate::run`] needs besides the AWS configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub settings: WorkerSettings,
    pub drain: Duration,
    /// Identifies this replica in bookkeeping items (the pod name in Kubernetes).
    pub replica: String,
    pub write_mode: WriteMode,
    pub client: ClientKind,
    /// How often the DLQ is swept for updates SQS moved there (`crate::sweep`); zero: never.
    pub dlq_sweep: Duration,
}

impl Config {
    pub fn new(settings: WorkerSettings) -> Self {
        Self {
            settings,
            drain: Duration::from_secs(DEFAULT_DRAIN_SECONDS),
            replica: replica_name(),
            write_mode: WriteMode::Put,
            client: ClientKind::Lean,
            dlq_sweep: Duration::from_secs(DEFAULT_DLQ_SWEEP_SECONDS),
        }
    }

    /// Reads and validates the environment; the error names the offending variable.
    pub fn from_env() -> Result<Self, SettingsError> {
        let settings = WorkerSettings::from_lookup(|k| std::env::var(k).ok())?;
        let mut config = Self::new(settings);
        if let Some(drain) = seconds_var(DRAIN_SECONDS_ENV)? {
            config.drain = drain;
        }
        if let Some(every) = seconds_var(DLQ_SWEEP_SECONDS_ENV)? {
            config.dlq_sweep = every;
        }
        if let Ok(raw) = std::env::var(WRITE_MODE_ENV) {
            config.write_mode = match raw.trim() {
                "" | "put" => WriteMode::Put,
                "transaction" => WriteMode::Transaction,
                _ => {
                    return Err(SettingsError::Invalid {
                        var: WRITE_MODE_ENV,
                        value: raw.clone(),
                        reason: "must be put or transaction".into(),
                    });
                }
            };
        }
        if let Ok(raw) = std::env::var(AWS_CLIENT_ENV) {
            config.client = match raw.trim() {
                "" | "lean" => ClientKind::Lean,
                "sdk" => ClientKind::Sdk,
                _ => {
                    return Err(SettingsError::Invalid {
                        var: AWS_CLIENT_ENV,
                        value: raw.clone(),
                        reason: "must be lean or sdk".into(),
                    });
                }
            };
        }
        Ok(config)
    }
}

/// A whole number of seconds from the variable `var`, if it is set.
fn seconds_var(var: &'static str) -> Result<Option<Duration>, SettingsError> {
    let Ok(raw) = std::env::var(var) else {
        return Ok(None);
    };
    let secs: u64 = raw.trim().parse().map_err(|_| SettingsError::Invalid {
        var,
        value: raw.clone(),
        reason: "not a whole number".into(),
    })?;
    Ok(Some(Duration::from_secs(secs)))
}

fn replica_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("pid-{}", std::process::id()))
}

/// The shared SDK configuration: region and endpoint from the settings when given, else
/// the SDK's standard chain (which also honours `AWS_ENDPOINT_URL_SQS` and friends).
pub async fn sdk_config(settings: &WorkerSettings) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &settings.endpoint_url {
        loader = loader.endpoint_url(endpoint.clone());
    }
    loader.load().await
}

/// The worker does its own retrying (with visibility extension and throttle counting), so
/// the SDK makes one attempt per call; timeouts bound a backend that hangs instead of
/// refusing (which also makes the SDK's per-poll stalled-stream monitor redundant).
pub fn sqs_client(sdk: &SdkConfig) -> aws_sdk_sqs::Client {
    let conf = aws_sdk_sqs::config::Builder::from(sdk)
        .retry_config(RetryConfig::standard().with_max_attempts(1))
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .timeout_config(timeouts(Duration::from_secs(30)))
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

pub fn dynamodb_client(sdk: &SdkConfig) -> aws_sdk_dynamodb::Client {
    let conf = aws_sdk_dynamodb::config::Builder::from(sdk)
        .retry_config(RetryConfig::standard().with_max_attempts(1))
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .timeout_config(timeouts(Duration::from_secs(10)))
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

pub fn cloudwatch_client(sdk: &SdkConfig) -> aws_sdk_cloudwatch::Client {
    let conf = aws_sdk_cloudwatch::config::Builder::from(sdk)
        .timeout_config(timeouts(Duration::from_secs(10)))
        .build();
    aws_sdk_cloudwatch::Client::from_conf(conf)
}

fn timeouts(attempt: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(attempt)
        .build()
}

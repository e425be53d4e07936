//! The AWS side of a pipeline, ACK-style: for every resource, read → create if missing →
//! compare → update only what differs.
//!
//! Data flow: [`desired()`] maps a `TrackingPipeline` to a [`Desired`] (pure, no client);
//! [`ensure`] converges one [`Part`] at a time in dependency order (keys → queues → table →
//! alerts → schedule → worker identity), writing identifiers into the status [`Outputs`] as
//! soon as they are known; [`delete_all`] removes everything in reverse order. Every
//! resource carries ownership tags; one with our name but another owner is a conflict and is
//! never touched. Every call is counted by service/operation/outcome ([`calls`]).

pub mod adopt;
pub mod calls;
pub mod desired;
pub mod error;
pub mod naming;
pub mod ratelimit;
pub mod tags;

mod alarms;
mod arn;
mod dynamodb;
mod iam;
mod kms;
mod policy;
mod scheduler;
mod sns;
mod sqs;
mod verified;

use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use tokio::sync::OnceCell;

pub use self::arn::Account;
pub use self::calls::{CallCounter, CallKey};
pub use self::desired::{Desired, Settings, desired};
pub use self::error::Error;
pub use self::policy::{WorkerResources, worker_policy};
pub use self::ratelimit::Limits;
pub use crate::api::Outputs;
use crate::api::condition;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One client per service, all counting their calls into the same [`CallCounter`] and
/// retrying throttling/5xx with the SDK's standard mode (exponential backoff with jitter).
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub kms: aws_sdk_kms::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sns: aws_sdk_sns::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub scheduler: aws_sdk_scheduler::Client,
    pub iam: aws_sdk_iam::Client,
    pub sts: aws_sdk_sts::Client,
    pub calls: CallCounter,
    account: std::sync::Arc<OnceCell<Account>>,
    /// Resources whose ownership tags were recently read complete (see [`verified`]).
    verified: std::sync::Arc<verified::Verified>,
}

/// Attempts per call, including the first. The reconcile loop retries further with its
/// own backoff, so a few attempts here are enough to absorb short throttling bursts.
const MAX_ATTEMPTS: u32 = 4;

impl AwsClients {
    pub fn new(config: &SdkConfig) -> Self {
        Self::with_counter(config, CallCounter::new())
    }

    /// Clients without client-side rate limits (tests against moto).
    pub fn with_counter(config: &SdkConfig, calls: CallCounter) -> Self {
        Self::with_limits(config, calls, &Limits::none())
    }

    /// Clients whose requests wait for `limits`' buckets; throttling that still happens
    /// slows only the throttled service (adaptive retry keeps a limiter per client).
    pub fn with_limits(config: &SdkConfig, calls: CallCounter, limits: &Limits) -> Self {
        let retry = RetryConfig::adaptive()
            .with_max_attempts(MAX_ATTEMPTS)
            .with_initial_backoff(Duration::from_millis(200))
            .with_max_backoff(Duration::from_secs(10));
        // A hung endpoint must not stall a reconcile forever, but a request waiting for its
        // bucket is not hung: at 1,000 pipelines a PutMetricAlarm queues for minutes behind
        // CloudWatch's 3/s. The wait happens inside the HTTP connector, so an attempt timeout
        // would count it (and fail every queued call); the connect and read timeouts do not.
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(30))
            .build();
        // For the same reason the upload stall detector (a body not sent for 5 s) is off: the
        // body waits with the bucket, it is not stalled. The download side stays protected.
        let stalls = StalledStreamProtectionConfig::enabled()
            .upload_enabled(false)
            .build();
        macro_rules! client {
            ($sdk:ident, $service:literal) => {{
                let mut builder = $sdk::config::Builder::from(config)
                    .retry_config(retry.clone())
                    .timeout_config(timeouts.clone())
                    .stalled_stream_protection(stalls.clone())
                    .interceptor(calls.clone())
                    .interceptor(ratelimit::OperationTag);
                let http = config
                    .http_client()
                    .unwrap_or_else(ratelimit::default_client);
                builder =
                    builder.http_client(ratelimit::Paced::wrap(http, limits.buckets($service)));
                $sdk::Client::from_conf(builder.build())
            }};
        }
        AwsClients {
            kms: client!(aws_sdk_kms, "kms"),
            sqs: client!(aws_sdk_sqs, "sqs"),
            dynamodb: client!(aws_sdk_dynamodb, "dynamodb"),
            sns: client!(aws_sdk_sns, "sns"),
            cloudwatch: client!(aws_sdk_cloudwatch, "cloudwatch"),
            scheduler: client!(aws_sdk_scheduler, "scheduler"),
            iam: client!(aws_sdk_iam, "iam"),
            sts: client!(aws_sdk_sts, "sts"),
            calls,
            account: Default::default(),
            verified: Default::default(),
        }
    }

    /// Re-read a resource's tags on a steady pass only once they are older than `every`
    /// (deletes and observe mode always read). `Duration::ZERO`: every pass.
    pub fn recheck_tags_every(mut self, every: Duration) -> Self {
        self.verified = std::sync::Arc::new(verified::Verified::new(every));
        self
    }

    /// The account, partition and region we work in (one STS call per process).
    pub async fn account(&self) -> Result<&Account> {
        self.account
            .get_or_try_init(|| async {
                let me = self
                    .sts
                    .get_caller_identity()
                    .send()
                    .await
                    .map_err(error::api("STS", "GetCallerIdentity"))?;
                let region = self
                    .sts
                    .config()
                    .region()
                    .map(|r| r.to_string())
                    .ok_or_else(|| error::unexpected("STS", "no AWS region configured"))?;
                Account::from_caller(me.arn(), me.account(), region)
            })
            .await
    }
}

/// The AWS parts of a pipeline, in dependency order; each has its own condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    Keys,
    Queues,
    Table,
    Alerts,
    Schedule,
    WorkerIdentity,
}

impl Part {
    pub const ALL: [Part; 6] = [
        Part::Keys,
        Part::Queues,
        Part::Table,
        Part::Alerts,
        Part::Schedule,
        Part::WorkerIdentity,
    ];

    /// The status condition that reports this part.
    pub fn condition_type(self) -> &'static str {
        match self {
            Part::Keys => condition::KEYS_READY,
            Part::Queues => condition::QUEUES_READY,
            Part::Table => condition::TABLE_READY,
            Part::Alerts => condition::ALERTS_READY,
            Part::Schedule => condition::SCHEDULE_READY,
            Part::WorkerIdentity => condition::WORKER_READY,
        }
    }

    /// The parts whose outputs this one needs. A failing part stops only the parts that need
    /// it: the worker runs without alerts or schedule, so neither blocks it.
    pub fn needs(self) -> &'static [Part] {
        match self {
            Part::Keys => &[],
            Part::Queues | Part::Table => &[Part::Keys],
            Part::Alerts | Part::Schedule => &[Part::Keys, Part::Queues],
            Part::WorkerIdentity => &[Part::Keys, Part::Queues, Part::Table],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Part::Keys => "Keys",
            Part::Queues => "Queues",
            Part::Table => "Table",
            Part::Alerts => "Alerts",
            Part::Schedule => "Schedule",
            Part::WorkerIdentity => "WorkerIdentity",
        }
    }
}

/// Whether a part is usable, as a typed outcome rather than an error.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Readiness {
    #[default]
    Ready,
    /// Converged as far as we can for now (e.g. an e-mail awaiting confirmation, a table
    /// still being created); not a failure.
    NotReady { reason: String, message: String },
}

/// What one [`ensure`] did, for conditions and Events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartReport {
    pub readiness: Readiness,
    /// Resources created in this pass, e.g. `SQS queue tp_ns_name-queue`.
    pub created: Vec<String>,
    /// Attributes changed back to the desired value, e.g.
    /// `SQS queue tp_ns_name-queue: VisibilityTimeout`.
    pub repaired: Vec<String>,
    /// Queue depths read along the way (the queues part only), for `status.queue`.
    pub queue: Option<crate::api::QueueStatus>,
}

impl PartReport {
    pub fn is_ready(&self) -> bool {
        self.readiness == Readiness::Ready
    }

    pub(crate) fn created(&mut self, what: impl Into<String>) {
        self.created.push(what.into());
    }

    pub(crate) fn repaired(&mut self, resource: &str, attributes: &[String]) {
        self.repaired
            .extend(attributes.iter().map(|a| format!("{resource}: {a}")));
    }

    pub(crate) fn not_ready(&mut self, reason: &str, message: impl Into<String>) {
        // The first reason wins: it is the one the user must act on first.
        if self.readiness == Readiness::Ready {
            self.readiness = Readiness::NotReady {
                reason: reason.into(),
                message: message.into(),
            };
        }
    }
}

/// What [`delete_all`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteReport {
    /// Resources deleted (KMS keys: scheduled for deletion).
    pub deleted: Vec<String>,
    /// Resources left in place, with why (another owner's, deletion protection, a key that
    /// still encrypts a kept table).
    pub retained: Vec<String>,
    /// Parts whose deletion failed this pass, with the AWS error code; the next pass tries
    /// them again.
    pub failed: Vec<DeleteFailure>,
}

/// One part whose deletion failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteFailure {
    /// The part, e.g. `Alerts`.
    pub part: &'static str,
    /// The AWS error code, when AWS answered (`AccessDeniedException`).
    pub code: Option<String>,
    pub message: String,
}

impl DeleteReport {
    /// Records a part's deletion failure and carries on: one refused call must not leave
    /// every other resource in place.
    fn step(&mut self, part: &'static str, result: Result<()>) {
        if let Err(err) = result {
            self.failed.push(DeleteFailure {
                part,
                code: err.aws_code().map(str::to_string),
                message: err.to_string(),
            });
        }
    }

    /// One line per failure, `Part: Code`, for the Deleting condition.
    pub fn failure_summary(&self) -> String {
        self.failed
            .iter()
            .map(|f| format!("{}: {}", f.part, f.code.as_deref().unwrap_or(&f.message)))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Converges one part. Identifiers land in `outputs` as soon as they are known, even when
/// a later step of the same part fails.
pub async fn ensure(
    clients: &AwsClients,
    desired: &Desired,
    part: Part,
    outputs: &mut Outputs,
) -> Result<PartReport> {
    let mut report = PartReport::default();
    match part {
        Part::Keys => kms::ensure(clients, desired, outputs, &mut report).await?,
        Part::Queues => sqs::ensure(clients, desired, outputs, &mut report).await?,
        Part::Table => dynamodb::ensure(clients, desired, outputs, &mut report).await?,
        Part::Alerts => {
            sns::ensure(clients, desired, outputs, &mut report).await?;
            alarms::ensure(clients, desired, outputs, &mut report).await?;
        }
        Part::Schedule => scheduler::ensure(clients, desired, outputs, &mut report).await?,
        Part::WorkerIdentity => iam::ensure_worker(clients, desired, outputs, &mut report).await?,
    }
    Ok(report)
}

/// Deletes everything in reverse dependency order. "Not found" counts as done and
/// resources that are not ours are left alone, so this is safe to repeat and works when
/// nothing was ever created. A part that fails is recorded in [`DeleteReport::failed`] and
/// the others still go. KMS keys are scheduled for deletion with the spec's window, and
/// only once nothing encrypted with them is left: a key still needed by a kept table (or by
/// a resource whose deletion failed) is retained, since deleting it makes that data
/// unreadable.
pub async fn delete_all(
    clients: &AwsClients,
    desired: &Desired,
    outputs: &Outputs,
) -> Result<DeleteReport> {
    let mut report = DeleteReport::default();
    let r = iam::delete_worker(clients, desired, &mut report).await;
    report.step("WorkerIdentity", r);
    let r = scheduler::delete(clients, desired, &mut report).await;
    report.step("Schedule", r);
    let r = alarms::delete(clients, desired, &mut report).await;
    report.step("Alerts", r);
    let r = sns::delete(clients, desired, &mut report).await;
    report.step("Alerts", r);
    let table = dynamodb::delete(clients, desired, &mut report).await;
    let table_kept = matches!(table, Ok(dynamodb::Deleted::Kept) | Err(_));
    report.step("Table", table.map(|_| ()));
    let r = sqs::delete(clients, desired, &mut report).await;
    report.step("Queues", r);
    let keep = kms::Keep {
        // The queue key also encrypts the alert topic.
        queue_key: report
            .failed
            .iter()
            .find(|f| matches!(f.part, "Queues" | "Alerts"))
            .map(|f| {
                format!(
                    "the deletion of {} failed ({})",
                    f.part,
                    f.code.as_deref().unwrap_or("error")
                )
            }),
        table_key: table_kept.then(|| {
            format!(
                "DynamoDB table {} is kept and is encrypted with it",
                desired.names.table
            )
        }),
    };
    let r = kms::delete(clients, desired, outputs, &keep, &mut report).await;
    report.step("Keys", r);
    Ok(report)
}

/// Treats "not found" as `None` so callers can branch on existence.
pub(crate) fn found<T>(result: Result<T>) -> Result<Option<T>> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Dependencies between parts: an identifier an earlier part writes into the outputs.
pub(crate) fn need<'a>(
    value: &'a Option<String>,
    part: &'static str,
    missing: &'static str,
) -> Result<&'a str> {
    value
        .as_deref()
        .ok_or(Error::AwsDependency { part, missing })
}

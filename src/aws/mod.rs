//! The AWS side of a pipeline, ACK-style: for every resource, read → create if missing →
//! compare → update only what differs.
//!
//! Data flow: [`desired()`] maps a `TrackingPipeline` to a [`Desired`] (pure, no client);
//! [`ensure`] converges one [`Part`] at a time in dependency order (keys → queues → table →
//! alerts → schedule → worker identity), writing identifiers into the status [`Outputs`] as
//! soon as they are known; [`delete_all`] removes everything in reverse order. Every
//! resource carries ownership tags; one with our name but another owner is a conflict and is
//! never touched. Every call is counted by service/operation/outcome ([`calls`]).

pub mod calls;
pub mod desired;
pub mod error;
pub mod naming;
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

use std::time::Duration;

use aws_config::SdkConfig;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use tokio::sync::OnceCell;

pub use self::arn::Account;
pub use self::calls::{CallCounter, CallKey};
pub use self::desired::{Desired, Settings, desired};
pub use self::error::Error;
pub use self::policy::{WorkerResources, worker_policy};
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
}

/// Attempts per call, including the first. The reconcile loop retries further with its
/// own backoff, so a few attempts here are enough to absorb short throttling bursts.
const MAX_ATTEMPTS: u32 = 4;

impl AwsClients {
    pub fn new(config: &SdkConfig) -> Self {
        Self::with_counter(config, CallCounter::new())
    }

    pub fn with_counter(config: &SdkConfig, calls: CallCounter) -> Self {
        let retry = RetryConfig::standard()
            .with_max_attempts(MAX_ATTEMPTS)
            .with_initial_backoff(Duration::from_millis(200))
            .with_max_backoff(Duration::from_secs(10));
        // Bounded attempts keep a hung endpoint from stalling a reconcile forever.
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(30))
            .build();
        macro_rules! client {
            ($sdk:ident) => {
                $sdk::Client::from_conf(
                    $sdk::config::Builder::from(config)
                        .retry_config(retry.clone())
                        .timeout_config(timeouts.clone())
                        .interceptor(calls.clone())
                        .build(),
                )
            };
        }
        AwsClients {
            kms: client!(aws_sdk_kms),
            sqs: client!(aws_sdk_sqs),
            dynamodb: client!(aws_sdk_dynamodb),
            sns: client!(aws_sdk_sns),
            cloudwatch: client!(aws_sdk_cloudwatch),
            scheduler: client!(aws_sdk_scheduler),
            iam: client!(aws_sdk_iam),
            sts: client!(aws_sdk_sts),
            calls,
            account: Default::default(),
        }
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
    /// Resources left in place, with why (another owner's, deletion protection).
    pub retained: Vec<String>,
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
/// nothing was ever created. KMS keys are scheduled for deletion with the spec's window.
pub async fn delete_all(
    clients: &AwsClients,
    desired: &Desired,
    outputs: &Outputs,
) -> Result<DeleteReport> {
    let mut report = DeleteReport::default();
    iam::delete_worker(clients, desired, &mut report).await?;
    scheduler::delete(clients, desired, &mut report).await?;
    alarms::delete(clients, desired, &mut report).await?;
    sns::delete(clients, desired, &mut report).await?;
    dynamodb::delete(clients, desired, &mut report).await?;
    sqs::delete(clients, desired, &mut report).await?;
    kms::delete(clients, desired, outputs, &mut report).await?;
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

//! Taking over what already runs: `spec.adopt` names existing AWS resources the pipeline
//! uses instead of creating its own, and `spec.managementPolicy: Observe` reads everything
//! and writes nothing (see docs/migration.md for moving the original CDK stack over).

use std::collections::BTreeMap;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::spec::DeletionPolicy;

/// Whether the operator changes AWS and runs the worker, or only looks.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum ManagementPolicy {
    /// Create what is missing, converge what differs, run the worker.
    #[default]
    Full,
    /// Read every resource and report each difference from the spec (condition `InSync`,
    /// Event `DriftDetected`); no AWS write and no worker Deployment.
    Observe,
}

/// Existing AWS resources the pipeline takes over instead of creating its own. Each one is
/// read, checked (key schema of the table, redrive of the queue), tagged with the
/// pipeline's ownership tags and from then on converged to the spec like a created one. A
/// change AWS cannot make in place is refused (reason `AdoptionRefused`) and nothing is
/// touched; a resource another pipeline or cluster owns is refused (reason `Conflict`).
/// Resources not named here are created as usual.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new(r"!has(self.queue) || self.queue.matches('^(https?://[^\\s]+/)?[A-Za-z0-9_-]{1,80}$')").message("spec.adopt.queue must be an SQS queue URL or a queue name (standard queues only)").field_path(".queue"))]
#[x_kube(validation = Rule::new(r"!has(self.deadLetterQueue) || self.deadLetterQueue.matches('^(https?://[^\\s]+/)?[A-Za-z0-9_-]{1,80}$')").message("spec.adopt.deadLetterQueue must be an SQS queue URL or a queue name (standard queues only)").field_path(".deadLetterQueue"))]
#[x_kube(validation = Rule::new(r"!has(self.table) || self.table.matches('^[A-Za-z0-9_.-]{3,255}$')").message("spec.adopt.table must be a DynamoDB table name").field_path(".table"))]
#[x_kube(validation = Rule::new(r"!has(self.queueKey) || self.queueKey.matches('^(arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key|alias)/[A-Za-z0-9/_-]+|alias/[A-Za-z0-9/_-]+)$')").message("spec.adopt.queueKey must be a KMS key ARN, an alias ARN or alias/<name>").field_path(".queueKey"))]
#[x_kube(validation = Rule::new(r"!has(self.tableKey) || self.tableKey.matches('^(arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key|alias)/[A-Za-z0-9/_-]+|alias/[A-Za-z0-9/_-]+)$')").message("spec.adopt.tableKey must be a KMS key ARN, an alias ARN or alias/<name>").field_path(".tableKey"))]
#[x_kube(validation = Rule::new(r"!has(self.topic) || self.topic.matches('^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}$')").message("spec.adopt.topic must be an SNS topic ARN").field_path(".topic"))]
#[x_kube(validation = Rule::new(r"!has(self.schedule) || self.schedule.matches('^[0-9A-Za-z_.-]{1,64}$')").message("spec.adopt.schedule must be an EventBridge Scheduler schedule name (default group)").field_path(".schedule"))]
#[serde(rename_all = "camelCase")]
pub struct AdoptSpec {
    /// The main queue: its URL or its name. Standard queue; its visibility, retention,
    /// encryption and redrive are converged to `spec.queue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub queue: Option<String>,

    /// The dead-letter queue: URL or name. Wired as the main queue's redrive target if it
    /// is not already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub dead_letter_queue: Option<String>,

    /// The audit table's name. Its key schema must be pk `tracking_id` (S), sk `timestamp`
    /// (S): a key schema cannot change in place, so any other is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255))]
    pub table: Option<String>,

    /// The KMS key of the queues and the alert topic: key ARN, alias ARN or `alias/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub queue_key: Option<String>,

    /// The KMS key of the table: key ARN, alias ARN or `alias/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub table_key: Option<String>,

    /// The SNS alert topic's ARN. Subscriptions on it that the operator did not make are
    /// never removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub topic: Option<String>,

    /// Existing CloudWatch alarms, by name, converged to the operator's definitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarms: Option<AdoptAlarms>,

    /// An EventBridge Scheduler schedule (default group), by name. The original stack's
    /// EventBridge *rule* cannot be adopted: the operator replaces it with a schedule (see
    /// docs/migration.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub schedule: Option<String>,

    /// What happens to the adopted resources when the pipeline is deleted: `Retain`
    /// (default) leaves them in place whatever `spec.deletionPolicy` says; `Delete` lets
    /// `spec.deletionPolicy: Delete` remove them like created ones.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Names of existing CloudWatch alarms to take over, one per operator alarm.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdoptAlarms {
    /// Alarm on visible messages in the main queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub queue_depth: Option<String>,
    /// Alarm on the age of the oldest message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub oldest_message: Option<String>,
    /// Alarm on processing errors (the Lambda's `Errors` alarm; repointed at the worker's
    /// metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub worker_errors: Option<String>,
    /// Alarm on throttles (the Lambda's `Throttles` alarm; repointed at the worker's metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub worker_throttles: Option<String>,
    /// Alarm on messages in the dead-letter queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub dead_letters: Option<String>,
}

/// Whether a resource was made by the operator or taken over.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum Origin {
    /// Created by the operator (deleted with `spec.deletionPolicy: Delete`).
    #[default]
    Created,
    /// Named in `spec.adopt` (retained on delete unless `spec.adopt.deletionPolicy: Delete`).
    Adopted,
}

/// One AWS resource of the pipeline in `status.resources`.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// `Created` or `Adopted`.
    pub origin: Origin,
    /// The resource's ARN (a queue's URL is in `status.outputs`; an alarm's name).
    pub id: String,
}

/// `status.resources`: keyed by `queue`, `deadLetterQueue`, `table`, `queueKey`, `tableKey`,
/// `topic`, `schedule`, `alarm/<which>`.
pub type Resources = BTreeMap<String, ResourceStatus>;

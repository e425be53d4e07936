//! What the operator reports: `TrackingPipeline.status`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Observed state of a pipeline.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrackingPipelineStatus {
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, one condition per part (`KeysReady`, `QueuesReady`, `TableReady`,
    /// `AlertsReady`, `ScheduleReady`, `WorkerReady`), and kstatus' `Reconciling` / `Stalled`
    /// while they are true.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Identifiers of everything the pipeline created, written as soon as each is known.
    #[serde(default)]
    pub outputs: Outputs,

    /// What the autoscaler saw and did (only with `spec.worker.autoscaling`). Written by the
    /// autoscaler alone, with a merge patch of this key; the reconciler never writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerStatus>,
}

/// Identifiers of the pipeline's resources (what producers and the worker need).
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Outputs {
    /// URL of the main queue (producers send here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_url: Option<String>,
    /// ARN of the main queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_arn: Option<String>,
    /// URL of the dead-letter queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_queue_url: Option<String>,
    /// ARN of the dead-letter queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_queue_arn: Option<String>,
    /// Name of the DynamoDB audit table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_name: Option<String>,
    /// ARN of the DynamoDB audit table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_arn: Option<String>,
    /// ARN of the KMS key that encrypts both queues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_key_arn: Option<String>,
    /// ARN of the KMS key that encrypts the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_key_arn: Option<String>,
    /// ARN of the SNS alert topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_topic_arn: Option<String>,
    /// ARN of the e-mail subscription once confirmed (AWS reports `PendingConfirmation`
    /// before that).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_arn: Option<String>,
    /// ARN of the EventBridge Scheduler schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_arn: Option<String>,
    /// ARN of the IAM role the schedule assumes to send to the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_role_arn: Option<String>,
    /// ARN of the worker's IAM role: `spec.worker.roleArn`, or the role the operator created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_role_arn: Option<String>,
    /// The worker's least-privilege IAM policy document (JSON), to attach to its role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_policy: Option<String>,
    /// Name of the ConfigMap (same namespace) holding these outputs for producers and the
    /// worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs_config_map: Option<String>,
}

/// The worker as the autoscaler last measured and scaled it.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    /// Pods the worker Deployment has (its `status.replicas`) when last measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_replicas: Option<i32>,
    /// Replicas the autoscaler wants (after limits, rate limit and stabilisation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// Messages visible plus in flight in the main queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<i64>,
    /// Age of the oldest message in seconds, from CloudWatch (absent when not measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_message_age_seconds: Option<i64>,
    /// When the autoscaler last changed the replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// Why it last changed it, e.g. `backlog 2400 wants 24 replicas, limited to 8 by scaleUpStep`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_reason: Option<String>,
}

/// Condition types written to `status.conditions`.
pub mod condition {
    /// Summary: every part is ready.
    pub const READY: &str = "Ready";
    pub const KEYS_READY: &str = "KeysReady";
    pub const QUEUES_READY: &str = "QueuesReady";
    pub const TABLE_READY: &str = "TableReady";
    pub const ALERTS_READY: &str = "AlertsReady";
    pub const SCHEDULE_READY: &str = "ScheduleReady";
    pub const WORKER_READY: &str = "WorkerReady";
    /// kstatus: present (True) only while the operator works towards a new generation.
    pub const RECONCILING: &str = "Reconciling";
    /// kstatus: present (True) only while progress needs a human (e.g. a name conflict).
    pub const STALLED: &str = "Stalled";
}

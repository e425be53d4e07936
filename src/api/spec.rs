//! The desired state a user writes: `TrackingPipeline.spec`.
//!
//! Every field has a default taken from the stack this operator replaces (REFERENCE §1), so
//! `spec: {}` is a complete pipeline. Validation lives in the schema as CEL rules (see
//! [`super::rules`]) so the API server refuses bad specs with a message naming the field.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::adopt::{AdoptSpec, ManagementPolicy};
use super::duration::Period;
use super::redrive::RedriveSpec;
use super::rules::{at_least, immutable, in_range, period_in_range};
use super::status::TrackingPipelineStatus;

/// A tracking-update pipeline: encrypted SQS queue and dead-letter queue, a DynamoDB audit
/// table, alarms to an SNS topic, a daily maintenance schedule, and the worker that consumes
/// the queue into the table.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tracking-operator.io",
    version = "v1alpha1",
    kind = "TrackingPipeline",
    doc = "A TrackingPipeline: SQS queue and dead-letter queue, DynamoDB audit table, KMS keys, alerts, maintenance schedule and the worker Deployment, reconciled by tracking-operator.",
    namespaced,
    shortname = "tp",
    category = "tracking",
    status = "TrackingPipelineStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Queue","type":"integer","description":"Messages waiting in the main queue","jsonPath":".status.queue.visible"}"#,
    printcolumn = r#"{"name":"In-Flight","type":"integer","priority":1,"description":"Messages received by a worker and not yet deleted","jsonPath":".status.queue.inFlight"}"#,
    printcolumn = r#"{"name":"Backlog","type":"integer","description":"Messages visible + in flight, as the autoscaler measured them","jsonPath":".status.worker.backlog"}"#,
    printcolumn = r#"{"name":"DLQ","type":"integer","description":"Messages in the dead-letter queue","jsonPath":".status.queue.deadLetter"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","priority":1,"description":"Worker replicas (reported by the autoscaler)","jsonPath":".status.worker.currentReplicas"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("size(self.environment) >= 1 && size(self.environment) <= 256").message("spec.environment must be 1 to 256 characters (an AWS tag value)").field_path(".environment"))]
#[x_kube(validation = Rule::new("self.tags.all(k, size(k) >= 1 && size(k) <= 128 && !k.startsWith('aws:') && !k.startsWith('tracking-operator.io/') && k != 'Environment')").message("spec.tags keys must be 1 to 128 characters and must not start with 'aws:' or 'tracking-operator.io/' nor be 'Environment' (use spec.environment)").field_path(".tags"))]
#[x_kube(validation = Rule::new("self.tags.all(k, size(self.tags[k]) <= 256)").message("spec.tags values must be at most 256 characters").field_path(".tags"))]
#[x_kube(validation = Rule::new(r"self.environment.matches(r'^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$')").message("spec.environment may contain only letters, digits, spaces and _ . : / = + - @ (it is an AWS tag value)").field_path(".environment"))]
#[serde(rename_all = "camelCase")]
pub struct TrackingPipelineSpec {
    /// Value of the `Environment` tag on every AWS resource (for example `Production`).
    #[serde(default = "defaults::environment")]
    #[schemars(length(max = 256))]
    pub environment: String,

    /// Extra tags put on every AWS resource, next to `Environment` and the ownership tags
    /// (`tracking-operator.io/*`). At most 40, since AWS allows 50 tags per resource.
    #[serde(default = "defaults::tags")]
    /// Keys and values may contain only letters, digits, spaces and `_ . : / = + - @`, the
    /// characters AWS accepts in tags (checked by the API server, value by value).
    #[schemars(extend("maxProperties" = 40, "additionalProperties" = {"type": "string", "maxLength": 256, "pattern": "^[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*$"}))]
    pub tags: BTreeMap<String, String>,

    /// What happens to the AWS resources when the pipeline is deleted: `Retain` (default)
    /// leaves them untouched; `Delete` removes them and schedules both KMS keys for deletion
    /// after `encryption.keyDeletionWindowDays`.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// The SQS queue and its dead-letter queue.
    #[serde(default)]
    pub queue: QueueSpec,

    /// The two customer managed KMS keys (one for SQS, one for DynamoDB).
    #[serde(default)]
    pub encryption: EncryptionSpec,

    /// The DynamoDB audit table.
    #[serde(default)]
    pub table: TableSpec,

    /// The SNS alert topic, its e-mail subscription and the five CloudWatch alarms.
    #[serde(default)]
    pub alerts: AlertsSpec,

    /// The EventBridge Scheduler schedule that triggers the daily maintenance job.
    #[serde(default)]
    pub schedule: ScheduleSpec,

    /// The worker Deployment that consumes the queue into the table.
    #[serde(default)]
    pub worker: WorkerSpec,

    /// Move the dead-letter queue's messages back to the main queue, once per
    /// `requestId` (after the producer bug that sent them there is fixed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redrive: Option<RedriveSpec>,

    /// `Full` (default): the operator creates, converges and runs the worker. `Observe`:
    /// it only reads, reports every difference from this spec (condition `InSync`, Event
    /// `DriftDetected`), writes nothing to AWS and runs no worker. Switching to `Full`
    /// converges the differences.
    #[serde(default)]
    pub management_policy: ManagementPolicy,

    /// Existing AWS resources to take over instead of creating new ones (for example the
    /// original CDK stack's queue, table and keys; see docs/migration.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt: Option<AdoptSpec>,
}

impl Default for TrackingPipelineSpec {
    fn default() -> Self {
        Self {
            environment: defaults::environment(),
            tags: defaults::tags(),
            deletion_policy: DeletionPolicy::default(),
            queue: QueueSpec::default(),
            encryption: EncryptionSpec::default(),
            table: TableSpec::default(),
            alerts: AlertsSpec::default(),
            schedule: ScheduleSpec::default(),
            worker: WorkerSpec::default(),
            redrive: None,
            management_policy: ManagementPolicy::default(),
            adopt: None,
        }
    }
}

/// What to do with the AWS resources when the pipeline is deleted.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum DeletionPolicy {
    /// Leave every AWS resource in place.
    #[default]
    Retain,
    /// Delete every AWS resource; KMS keys are scheduled for deletion.
    Delete,
}

/// The main queue and its dead-letter queue (both standard, SSE-KMS with the SQS key).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = in_range("visibilityTimeoutSeconds", "spec.queue.visibilityTimeoutSeconds", 30, 43_200, "seconds (the worker's visibility heartbeat needs at least 30; 43200 is SQS's limit)"))]
#[x_kube(validation = in_range("deadLetterVisibilityTimeoutSeconds", "spec.queue.deadLetterVisibilityTimeoutSeconds", 0, 43_200, "seconds (SQS limit)"))]
#[x_kube(validation = period_in_range("retentionPeriod", "spec.queue.retentionPeriod", 60, 1_209_600, "60s and 14d (SQS limit)"))]
#[x_kube(validation = period_in_range("deadLetterRetentionPeriod", "spec.queue.deadLetterRetentionPeriod", 60, 1_209_600, "60s and 14d (SQS limit)"))]
#[x_kube(validation = in_range("maxReceiveCount", "spec.queue.maxReceiveCount", 1, 1_000, "(SQS redrive limit)"))]
#[serde(rename_all = "camelCase")]
pub struct QueueSpec {
    /// Seconds a received message stays invisible to other consumers (30–43200). Keep it
    /// several times the worker's batch processing time; the worker extends it while a
    /// batch is in progress and refuses to start below 30.
    #[serde(default = "defaults::visibility_timeout_seconds")]
    pub visibility_timeout_seconds: i32,

    /// How long the queue keeps a message: a whole number with unit `s`, `m`, `h` or `d`,
    /// between `60s` and `14d`.
    #[serde(default = "defaults::retention_period")]
    pub retention_period: Period,

    /// Receives after which a message moves to the dead-letter queue (1–1000).
    #[serde(default = "defaults::max_receive_count")]
    pub max_receive_count: i32,

    /// How long the dead-letter queue keeps a message, between `60s` and `14d`.
    #[serde(default = "defaults::dead_letter_retention_period")]
    pub dead_letter_retention_period: Period,

    /// Visibility timeout of the dead-letter queue in seconds (0–43200).
    #[serde(default = "defaults::dead_letter_visibility_timeout_seconds")]
    pub dead_letter_visibility_timeout_seconds: i32,
}

impl Default for QueueSpec {
    fn default() -> Self {
        Self {
            visibility_timeout_seconds: defaults::visibility_timeout_seconds(),
            retention_period: defaults::retention_period(),
            max_receive_count: defaults::max_receive_count(),
            dead_letter_retention_period: defaults::dead_letter_retention_period(),
            dead_letter_visibility_timeout_seconds:
                defaults::dead_letter_visibility_timeout_seconds(),
        }
    }
}

/// The customer managed KMS keys.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = period_in_range("dataKeyReusePeriod", "spec.encryption.dataKeyReusePeriod", 60, 86_400, "60s and 24h (SQS limit)"))]
#[x_kube(validation = in_range("keyDeletionWindowDays", "spec.encryption.keyDeletionWindowDays", 7, 30, "days (KMS limit)"))]
#[serde(rename_all = "camelCase")]
pub struct EncryptionSpec {
    /// Yearly automatic rotation of both keys.
    #[serde(default = "defaults::yes")]
    pub key_rotation: bool,

    /// How long SQS reuses a data key before asking KMS again, between `60s` and `24h`.
    #[serde(default = "defaults::data_key_reuse_period")]
    pub data_key_reuse_period: Period,

    /// Waiting period in days (7–30) before KMS deletes a key that the `Delete` policy
    /// scheduled for deletion.
    #[serde(default = "defaults::key_deletion_window_days")]
    pub key_deletion_window_days: i32,
}

impl Default for EncryptionSpec {
    fn default() -> Self {
        Self {
            key_rotation: true,
            data_key_reuse_period: defaults::data_key_reuse_period(),
            key_deletion_window_days: defaults::key_deletion_window_days(),
        }
    }
}

/// The DynamoDB audit table (on-demand, pk `tracking_id`, sk `timestamp`, SSE with the
/// DynamoDB key).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = in_range("ttlDays", "spec.table.ttlDays", 1, 36_500, "days"))]
// Adding or removing a global secondary index is not a setting but a backfill of the whole
// table (hours on a large table, one index change at a time, the table UPDATING meanwhile),
// and the maintenance job's queries depend on the index: it is chosen at creation.
#[x_kube(validation = immutable("statusIndex", "spec.table.statusIndex", "adding or removing a DynamoDB global secondary index rebuilds it over the whole table; recreate the pipeline instead"))]
#[serde(rename_all = "camelCase")]
pub struct TableSpec {
    /// Days an audit item lives before DynamoDB's TTL removes it (the worker sets `ttl`).
    #[serde(default = "defaults::ttl_days")]
    pub ttl_days: i32,

    /// Continuous backups (point-in-time recovery).
    #[serde(default = "defaults::yes")]
    pub point_in_time_recovery: bool,

    /// The `StatusIndex` global secondary index (pk `status`, sk `timestamp`). Immutable.
    #[serde(default = "defaults::yes")]
    pub status_index: bool,

    /// DynamoDB deletion protection. While true, the `Delete` policy cannot remove the table.
    #[serde(default)]
    pub deletion_protection: bool,
}

impl Default for TableSpec {
    fn default() -> Self {
        Self {
            ttl_days: defaults::ttl_days(),
            point_in_time_recovery: true,
            status_index: true,
            deletion_protection: false,
        }
    }
}

/// Alerting: an SNS topic, an optional e-mail subscription and five alarms that notify it
/// (queue depth, oldest message age, worker errors, worker throttles, dead-letter messages).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.email) || self.email.matches('^[^@\\\\s]+@[^@\\\\s]+\\\\.[^@\\\\s]+$')").message("spec.alerts.email must be an e-mail address like ops@example.com").field_path(".email"))]
#[x_kube(validation = at_least("queueDepthThreshold", "spec.alerts.queueDepthThreshold", 1))]
#[x_kube(validation = at_least("oldestMessageAgeSeconds", "spec.alerts.oldestMessageAgeSeconds", 1))]
#[x_kube(validation = at_least("workerErrorsThreshold", "spec.alerts.workerErrorsThreshold", 1))]
#[x_kube(validation = at_least("workerThrottlesThreshold", "spec.alerts.workerThrottlesThreshold", 1))]
#[serde(rename_all = "camelCase")]
pub struct AlertsSpec {
    /// Address subscribed to the alert topic. AWS sends a confirmation mail; until it is
    /// confirmed the `AlertsReady` condition stays False with reason `PendingConfirmation`.
    /// Without an address the topic and alarms exist but nobody is subscribed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 254))]
    pub email: Option<String>,

    /// Alarm when more messages than this are visible in the queue (2 of 3 one-minute periods).
    #[serde(default = "defaults::queue_depth_threshold")]
    pub queue_depth_threshold: i32,

    /// Alarm when the oldest message is older than this many seconds (3 periods).
    #[serde(default = "defaults::oldest_message_age_seconds")]
    pub oldest_message_age_seconds: i32,

    /// Alarm when the worker reports more errors than this per period (3 periods).
    #[serde(default = "defaults::worker_errors_threshold")]
    pub worker_errors_threshold: i32,

    /// Alarm when the worker reports more throttled calls than this per period (3 periods).
    #[serde(default = "defaults::worker_throttles_threshold")]
    pub worker_throttles_threshold: i32,

    /// Keep `Ready` False until the e-mail subscription is confirmed. By default a pipeline
    /// whose address has not confirmed yet is Ready (the queue, table and worker work; only
    /// the alert mails wait for a person) and reports `AlertsReady=False` with reason
    /// `PendingConfirmation`, so `helm --wait`, Flux and Argo CD sync waves do not block on
    /// a mailbox.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait_for_confirmation: bool,
}

impl Default for AlertsSpec {
    fn default() -> Self {
        Self {
            email: None,
            queue_depth_threshold: defaults::queue_depth_threshold(),
            oldest_message_age_seconds: defaults::oldest_message_age_seconds(),
            worker_errors_threshold: defaults::worker_errors_threshold(),
            worker_throttles_threshold: defaults::worker_throttles_threshold(),
            wait_for_confirmation: false,
        }
    }
}

/// The EventBridge Scheduler schedule that sends the maintenance message to the queue.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new(r"self.maintenance.matches('^(cron\\(\\S+ \\S+ \\S+ \\S+ \\S+ \\S+\\)|rate\\([1-9][0-9]* (minute|minutes|hour|hours|day|days)\\)|at\\([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\))$')").message("spec.schedule.maintenance must be an EventBridge Scheduler expression: cron(min hour day-of-month month day-of-week year), rate(N unit) or at(yyyy-mm-ddThh:mm:ss)").field_path(".maintenance"))]
#[x_kube(validation = Rule::new(r"self.timezone.matches('^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$')").message("spec.schedule.timezone must be an IANA time zone name like UTC or Europe/Berlin").field_path(".timezone"))]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSpec {
    /// When the maintenance job runs: `cron(...)`, `rate(...)` or `at(...)` as EventBridge
    /// Scheduler accepts them. Default: daily at 01:00.
    #[serde(default = "defaults::maintenance")]
    #[schemars(length(max = 256))]
    pub maintenance: String,

    /// IANA time zone the expression is evaluated in.
    #[serde(default = "defaults::timezone")]
    #[schemars(length(max = 64))]
    pub timezone: String,
}

impl Default for ScheduleSpec {
    fn default() -> Self {
        Self {
            maintenance: defaults::maintenance(),
            timezone: defaults::timezone(),
        }
    }
}

/// The worker Deployment and its identity.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = in_range("replicas", "spec.worker.replicas", 0, 100, ""))]
#[x_kube(validation = in_range("batchSize", "spec.worker.batchSize", 1, 10_000, "messages"))]
#[x_kube(validation = in_range("maxBatchingWindowSeconds", "spec.worker.maxBatchingWindowSeconds", 0, 300, "seconds"))]
#[x_kube(validation = in_range("concurrency", "spec.worker.concurrency", 1, 256, ""))]
#[x_kube(validation = Rule::new("!has(self.roleArn) || self.roleArn.matches('^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$')").message("spec.worker.roleArn must be an IAM role ARN like arn:aws:iam::123456789012:role/tracking-worker").field_path(".roleArn"))]
#[x_kube(validation = Rule::new("!has(self.serviceAccountName) || self.serviceAccountName.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("spec.worker.serviceAccountName must be a DNS subdomain name").field_path(".serviceAccountName"))]
#[serde(rename_all = "camelCase")]
pub struct WorkerSpec {
    /// Container image of the worker. Defaults to the operator's `--worker-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub image: Option<String>,

    /// Number of worker Pods. Ignored when `autoscaling` is set.
    #[serde(default = "defaults::replicas")]
    pub replicas: i32,

    /// Scale the worker with its queue instead of a fixed `replicas`. Without it the
    /// Deployment has exactly `replicas` Pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// Messages handled per batch (receives of up to 10 are accumulated up to the window).
    #[serde(default = "defaults::batch_size")]
    pub batch_size: i32,

    /// Longest time in seconds the worker waits to fill a batch (0–300).
    #[serde(default = "defaults::max_batching_window_seconds")]
    pub max_batching_window_seconds: i32,

    /// Concurrent receivers per Pod (1–256).
    #[serde(default = "defaults::concurrency")]
    pub concurrency: i32,

    /// Compute resources of the worker container. Default: requests 100m CPU / 128Mi,
    /// limit 512Mi memory (the original function's size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Name of the ServiceAccount the operator creates for the worker. Default:
    /// `<pipeline>-worker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub service_account_name: Option<String>,

    /// IAM role for the worker (IRSA): put on the ServiceAccount as
    /// `eks.amazonaws.com/role-arn`. Attach `status.outputs.workerPolicy` to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub role_arn: Option<String>,
}

impl Default for WorkerSpec {
    fn default() -> Self {
        Self {
            image: None,
            replicas: defaults::replicas(),
            autoscaling: None,
            batch_size: defaults::batch_size(),
            max_batching_window_seconds: defaults::max_batching_window_seconds(),
            concurrency: defaults::concurrency(),
            resources: None,
            service_account_name: None,
            role_arn: None,
        }
    }
}

/// Who sets the worker's replica count when autoscaling is on.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[serde(rename_all = "lowercase")]
pub enum AutoscalingMode {
    /// The operator measures the queue and writes the Deployment's scale subresource.
    #[default]
    Operator,
    /// Something else (an HPA, a KEDA `ScaledObject`) owns `replicas`; the operator never
    /// writes it and a replica change never triggers a reconcile.
    External,
}

/// Scaling the worker with its queue, to zero and back (like the Lambda SQS trigger it
/// replaces). Desired replicas = ceil((visible + in-flight messages) / `targetBacklogPerReplica`),
/// between `minReplicas` and `maxReplicas`, raised by at most `scaleUpStep` per
/// `scaleUpPeriodSeconds` and lowered only to the highest count wanted during the last
/// `scaleDownStabilizationSeconds`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("spec.worker.autoscaling.minReplicas must not be greater than maxReplicas").field_path(".minReplicas"))]
#[x_kube(validation = in_range("minReplicas", "spec.worker.autoscaling.minReplicas", 0, 1_000, ""))]
#[x_kube(validation = in_range("maxReplicas", "spec.worker.autoscaling.maxReplicas", 1, 1_000, ""))]
#[x_kube(validation = at_least("targetBacklogPerReplica", "spec.worker.autoscaling.targetBacklogPerReplica", 1))]
#[x_kube(validation = Rule::new("!has(self.maxOldestMessageAgeSeconds) || self.maxOldestMessageAgeSeconds >= 1").message("spec.worker.autoscaling.maxOldestMessageAgeSeconds must be at least 1").field_path(".maxOldestMessageAgeSeconds"))]
#[x_kube(validation = in_range("scaleDownStabilizationSeconds", "spec.worker.autoscaling.scaleDownStabilizationSeconds", 0, 86_400, "seconds"))]
#[x_kube(validation = in_range("scaleUpStep", "spec.worker.autoscaling.scaleUpStep", 1, 1_000, "replicas"))]
#[x_kube(validation = in_range("scaleUpPeriodSeconds", "spec.worker.autoscaling.scaleUpPeriodSeconds", 1, 3_600, "seconds"))]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// `operator` (default): the operator scales the worker. `external`: an HPA or KEDA
    /// does; the operator leaves `replicas` alone entirely.
    #[serde(default)]
    pub mode: AutoscalingMode,

    /// Fewest worker Pods (0 allowed: no Pod while the queue is empty and nothing is in
    /// flight for the whole stabilisation window).
    #[serde(default)]
    pub min_replicas: i32,

    /// Most worker Pods (1–1000).
    #[serde(default = "defaults::max_replicas")]
    pub max_replicas: i32,

    /// Messages (visible + in flight) one Pod is expected to keep up with. Desired replicas
    /// = ceil(backlog / this).
    #[serde(default = "defaults::target_backlog_per_replica")]
    pub target_backlog_per_replica: i32,

    /// When the oldest message in the queue is older than this many seconds, add a Pod even
    /// if the backlog alone would not (read from CloudWatch at most once a minute, and only
    /// while there is a backlog). Unset: the age never forces a scale-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_oldest_message_age_seconds: Option<i32>,

    /// Seconds the backlog must have wanted fewer Pods before the operator removes any: it
    /// scales down only to the highest count wanted during this window (0–86400).
    #[serde(default = "defaults::scale_down_stabilization_seconds")]
    pub scale_down_stabilization_seconds: i32,

    /// Most Pods added within `scaleUpPeriodSeconds` (1–1000).
    #[serde(default = "defaults::scale_up_step")]
    pub scale_up_step: i32,

    /// The period of the scale-up rate limit, in seconds (1–3600).
    #[serde(default = "defaults::scale_up_period_seconds")]
    pub scale_up_period_seconds: i32,
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        Self {
            mode: AutoscalingMode::default(),
            min_replicas: 0,
            max_replicas: defaults::max_replicas(),
            target_backlog_per_replica: defaults::target_backlog_per_replica(),
            max_oldest_message_age_seconds: None,
            scale_down_stabilization_seconds: defaults::scale_down_stabilization_seconds(),
            scale_up_step: defaults::scale_up_step(),
            scale_up_period_seconds: defaults::scale_up_period_seconds(),
        }
    }
}

/// Defaults from the original stack (REFERENCE §1) and the worker contract.
pub mod defaults {
    use std::collections::BTreeMap;

    use tracking_worker::contract::WorkerSettings;

    use crate::api::duration::Period;

    pub fn environment() -> String {
        "Production".into()
    }
    pub fn tags() -> BTreeMap<String, String> {
        BTreeMap::from([("Project".to_string(), "LogisticsTracking".to_string())])
    }
    pub fn yes() -> bool {
        true
    }
    pub fn visibility_timeout_seconds() -> i32 {
        WorkerSettings::DEFAULT_VISIBILITY_TIMEOUT_SECONDS as i32
    }
    pub fn retention_period() -> Period {
        Period::days(7)
    }
    pub fn max_receive_count() -> i32 {
        3
    }
    pub fn dead_letter_retention_period() -> Period {
        Period::days(14)
    }
    pub fn dead_letter_visibility_timeout_seconds() -> i32 {
        300
    }
    pub fn data_key_reuse_period() -> Period {
        Period::minutes(5)
    }
    pub fn key_deletion_window_days() -> i32 {
        7
    }
    pub fn ttl_days() -> i32 {
        WorkerSettings::DEFAULT_TTL_DAYS as i32
    }
    pub fn queue_depth_threshold() -> i32 {
        1000
    }
    pub fn oldest_message_age_seconds() -> i32 {
        300
    }
    pub fn worker_errors_threshold() -> i32 {
        5
    }
    pub fn worker_throttles_threshold() -> i32 {
        5
    }
    pub fn maintenance() -> String {
        "cron(0 1 * * ? *)".into()
    }
    pub fn timezone() -> String {
        "UTC".into()
    }
    pub fn replicas() -> i32 {
        1
    }
    pub fn batch_size() -> i32 {
        WorkerSettings::DEFAULT_BATCH_SIZE as i32
    }
    pub fn max_batching_window_seconds() -> i32 {
        WorkerSettings::DEFAULT_MAX_BATCHING_WINDOW_SECONDS as i32
    }
    pub fn concurrency() -> i32 {
        WorkerSettings::DEFAULT_CONCURRENCY as i32
    }
    pub fn max_replicas() -> i32 {
        10
    }
    /// A default worker receives `concurrency` batches of `batchSize` at a time (40
    /// messages); 100 per Pod keeps a short queue without adding a Pod per burst of 10.
    pub fn target_backlog_per_replica() -> i32 {
        100
    }
    /// HPA's default scale-down window.
    pub fn scale_down_stabilization_seconds() -> i32 {
        300
    }
    pub fn scale_up_step() -> i32 {
        4
    }
    pub fn scale_up_period_seconds() -> i32 {
        60
    }
}

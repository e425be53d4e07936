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

    /// Every AWS resource of the pipeline with whether the operator created it or adopted
    /// it (`spec.adopt`), keyed by `queue`, `deadLetterQueue`, `table`, `queueKey`,
    /// `tableKey`, `topic`, `schedule` and `alarm/<which>`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub resources: super::adopt::Resources,

    /// Depths of the main and dead-letter queues as SQS reported them on the last
    /// reconcile (read from the attributes the drift check fetches anyway, so they cost no
    /// extra call; refreshed every resync interval, approximate as SQS's counts are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueStatus>,
    /// What the autoscaler saw and did (only with `spec.worker.autoscaling`). Written by the
    /// autoscaler alone, with a merge patch of this key; the reconciler never writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerStatus>,

    /// The last `spec.redrive` request and its progress. Written by the redrive loop alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redrive: Option<super::RedriveStatus>,
}

/// Queue depths for `kubectl get tp` and the operator's per-pipeline gauges.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    /// Messages waiting in the main queue (`ApproximateNumberOfMessages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visible: Option<i64>,
    /// Messages a worker has received and not yet deleted
    /// (`ApproximateNumberOfMessagesNotVisible`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<i64>,
    /// Messages sent with a delay that are not visible yet (`ApproximateNumberOfMessagesDelayed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delayed: Option<i64>,
    /// Messages in the dead-letter queue, visible or being inspected (`trackctl dlq`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<i64>,
}

impl QueueStatus {
    /// From the `GetQueueAttributes` answers of the main queue and of the dead-letter queue
    /// (attribute name to value; a missing or unparsable count stays unknown).
    pub fn from_attributes(
        main: &std::collections::BTreeMap<String, String>,
        dead_letter: &std::collections::BTreeMap<String, String>,
    ) -> Self {
        let count = |attrs: &std::collections::BTreeMap<String, String>, name: &str| {
            attrs.get(name).and_then(|v| v.parse::<i64>().ok())
        };
        let dlq_visible = count(dead_letter, "ApproximateNumberOfMessages");
        let dlq_hidden = count(dead_letter, "ApproximateNumberOfMessagesNotVisible");
        Self {
            visible: count(main, "ApproximateNumberOfMessages"),
            in_flight: count(main, "ApproximateNumberOfMessagesNotVisible"),
            delayed: count(main, "ApproximateNumberOfMessagesDelayed"),
            dead_letter: match (dlq_visible, dlq_hidden) {
                (None, None) => None,
                (v, h) => Some(v.unwrap_or(0) + h.unwrap_or(0)),
            },
        }
    }
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
    /// The address the operator subscribed to the alert topic. Only this subscription is
    /// ever removed by the operator (when spec.alerts.email changes); addresses subscribed
    /// by hand stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_email: Option<String>,
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

impl TrackingPipelineStatus {
    /// Whether the last pass found every AWS part in place for `generation`: the status
    /// describes that generation and the five AWS conditions are True. (Ready also needs the
    /// worker's Pods, which say nothing about AWS.)
    pub fn aws_converged(&self, generation: Option<i64>) -> bool {
        use condition::*;
        self.observed_generation.is_some()
            && self.observed_generation == generation
            && [
                KEYS_READY,
                QUEUES_READY,
                TABLE_READY,
                ALERTS_READY,
                SCHEDULE_READY,
            ]
            .iter()
            .all(|t| {
                self.conditions
                    .iter()
                    .any(|c| c.type_ == *t && c.status == "True")
            })
    }
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
    /// Present only while a deletion is in progress: False with the AWS error code of every
    /// part whose cleanup failed (the finalizer stays until they are gone or retained).
    pub const DELETING: &str = "Deleting";
    /// Whether AWS matches the spec. Written with `spec.managementPolicy: Observe` (False
    /// with every difference named) and, once written, kept up to date in `Full`.
    pub const IN_SYNC: &str = "InSync";
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::QueueStatus;

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn queue_status_reads_the_approximate_counts() {
        let main = attrs(&[
            ("ApproximateNumberOfMessages", "12"),
            ("ApproximateNumberOfMessagesNotVisible", "3"),
            ("ApproximateNumberOfMessagesDelayed", "0"),
            ("VisibilityTimeout", "150"),
        ]);
        let dlq = attrs(&[
            ("ApproximateNumberOfMessages", "4"),
            ("ApproximateNumberOfMessagesNotVisible", "1"),
        ]);
        let q = QueueStatus::from_attributes(&main, &dlq);
        assert_eq!(
            q,
            QueueStatus {
                visible: Some(12),
                in_flight: Some(3),
                delayed: Some(0),
                dead_letter: Some(5),
            }
        );
        let unknown = QueueStatus::from_attributes(&attrs(&[]), &attrs(&[("x", "y")]));
        assert_eq!(unknown, QueueStatus::default());
    }
}

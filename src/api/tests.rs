//! The CEL rules, evaluated client-side with kube's `cel` feature, and the committed CRD.

use kube::core::cel::{validate_cel, validate_cel_update};
use serde_json::json;

use super::*;

fn pipeline(spec: serde_json::Value) -> TrackingPipeline {
    let spec: TrackingPipelineSpec = serde_json::from_value(spec).expect("test spec deserializes");
    TrackingPipeline::new("parcels", spec)
}

/// The messages of the refused rules, or `None` when the spec is accepted.
fn refusal(spec: serde_json::Value) -> Option<String> {
    validate_cel(&pipeline(spec)).err().map(|e| e.to_string())
}

#[test]
fn defaults_are_the_reference_stack() {
    let spec: TrackingPipelineSpec = serde_json::from_value(json!({})).unwrap();
    assert_eq!(spec, TrackingPipelineSpec::default());
    assert_eq!(spec.environment, "Production");
    assert_eq!(
        spec.tags.get("Project").map(String::as_str),
        Some("LogisticsTracking")
    );
    assert_eq!(spec.deletion_policy, DeletionPolicy::Retain);
    assert_eq!(spec.queue.visibility_timeout_seconds, 150);
    assert_eq!(spec.queue.retention_period.seconds(), Some(7 * 86_400));
    assert_eq!(spec.queue.max_receive_count, 3);
    assert_eq!(
        spec.queue.dead_letter_retention_period.seconds(),
        Some(14 * 86_400)
    );
    assert_eq!(spec.queue.dead_letter_visibility_timeout_seconds, 300);
    assert!(spec.encryption.key_rotation);
    assert_eq!(spec.encryption.data_key_reuse_period.seconds(), Some(300));
    assert_eq!(spec.encryption.key_deletion_window_days, 7);
    assert_eq!(spec.table.ttl_days, 90);
    assert!(spec.table.point_in_time_recovery && spec.table.status_index);
    assert!(!spec.table.deletion_protection);
    assert_eq!(spec.alerts.queue_depth_threshold, 1000);
    assert_eq!(spec.alerts.oldest_message_age_seconds, 300);
    assert_eq!(
        (
            spec.alerts.worker_errors_threshold,
            spec.alerts.worker_throttles_threshold
        ),
        (5, 5)
    );
    assert_eq!(spec.schedule.maintenance, "cron(0 1 * * ? *)");
    assert_eq!(spec.schedule.timezone, "UTC");
    assert_eq!(
        (
            spec.worker.batch_size,
            spec.worker.max_batching_window_seconds
        ),
        (10, 30)
    );
}

#[test]
fn the_default_and_a_full_spec_are_accepted() {
    assert_eq!(refusal(json!({})), None);
    let full = json!({
        "environment": "staging",
        "tags": {"Project": "Parcels", "CostCenter": "42"},
        "deletionPolicy": "Delete",
        "queue": {"visibilityTimeoutSeconds": 43200, "retentionPeriod": "60s", "maxReceiveCount": 1000,
                  "deadLetterRetentionPeriod": "14d", "deadLetterVisibilityTimeoutSeconds": 0},
        "encryption": {"keyRotation": false, "dataKeyReusePeriod": "24h", "keyDeletionWindowDays": 30},
        "table": {"ttlDays": 1, "pointInTimeRecovery": false, "statusIndex": false, "deletionProtection": true},
        "alerts": {"email": "ops@example.com", "queueDepthThreshold": 1, "oldestMessageAgeSeconds": 1,
                   "workerErrorsThreshold": 1, "workerThrottlesThreshold": 1},
        "schedule": {"maintenance": "rate(12 hours)", "timezone": "Europe/Berlin"},
        "worker": {"image": "example.com/worker:1", "replicas": 0, "batchSize": 10000,
                   "maxBatchingWindowSeconds": 300, "concurrency": 256, "serviceAccountName": "parcels.worker",
                   "roleArn": "arn:aws:iam::123456789012:role/tracking-worker"}
    });
    assert_eq!(refusal(full), None);
    for expr in [
        "cron(0 1 * * ? *)",
        "rate(1 day)",
        "at(2026-01-01T01:00:00)",
    ] {
        assert_eq!(
            refusal(json!({"schedule": {"maintenance": expr}})),
            None,
            "{expr}"
        );
    }
}

/// Each bad spec is refused, and the message names the field.
#[test]
fn bad_specs_are_refused_naming_the_field() {
    let cases = [
        (
            json!({"queue": {"visibilityTimeoutSeconds": 43201}}),
            "spec.queue.visibilityTimeoutSeconds",
        ),
        (
            json!({"queue": {"visibilityTimeoutSeconds": -1}}),
            "spec.queue.visibilityTimeoutSeconds",
        ),
        (
            json!({"queue": {"retentionPeriod": "59s"}}),
            "spec.queue.retentionPeriod",
        ),
        (
            json!({"queue": {"retentionPeriod": "15d"}}),
            "spec.queue.retentionPeriod",
        ),
        (
            json!({"queue": {"retentionPeriod": "7 days"}}),
            "spec.queue.retentionPeriod",
        ),
        (
            json!({"queue": {"maxReceiveCount": 0}}),
            "spec.queue.maxReceiveCount",
        ),
        (
            json!({"queue": {"maxReceiveCount": 1001}}),
            "spec.queue.maxReceiveCount",
        ),
        (
            json!({"queue": {"deadLetterRetentionPeriod": "1w"}}),
            "spec.queue.deadLetterRetentionPeriod",
        ),
        (
            json!({"queue": {"deadLetterVisibilityTimeoutSeconds": 50000}}),
            "spec.queue.deadLetterVisibilityTimeoutSeconds",
        ),
        (
            json!({"encryption": {"dataKeyReusePeriod": "30s"}}),
            "spec.encryption.dataKeyReusePeriod",
        ),
        (
            json!({"encryption": {"dataKeyReusePeriod": "25h"}}),
            "spec.encryption.dataKeyReusePeriod",
        ),
        (
            json!({"encryption": {"keyDeletionWindowDays": 6}}),
            "spec.encryption.keyDeletionWindowDays",
        ),
        (
            json!({"encryption": {"keyDeletionWindowDays": 31}}),
            "spec.encryption.keyDeletionWindowDays",
        ),
        (json!({"table": {"ttlDays": 0}}), "spec.table.ttlDays"),
        (
            json!({"alerts": {"email": "not-an-address"}}),
            "spec.alerts.email",
        ),
        (
            json!({"alerts": {"email": "ops@localhost"}}),
            "spec.alerts.email",
        ),
        (
            json!({"alerts": {"queueDepthThreshold": 0}}),
            "spec.alerts.queueDepthThreshold",
        ),
        (
            json!({"alerts": {"oldestMessageAgeSeconds": -5}}),
            "spec.alerts.oldestMessageAgeSeconds",
        ),
        (
            json!({"alerts": {"workerErrorsThreshold": 0}}),
            "spec.alerts.workerErrorsThreshold",
        ),
        (
            json!({"alerts": {"workerThrottlesThreshold": 0}}),
            "spec.alerts.workerThrottlesThreshold",
        ),
        (
            json!({"schedule": {"maintenance": "0 1 * * *"}}),
            "spec.schedule.maintenance",
        ),
        (
            json!({"schedule": {"maintenance": "cron(0 1 * * *)"}}),
            "spec.schedule.maintenance",
        ),
        (
            json!({"schedule": {"maintenance": "rate(0 days)"}}),
            "spec.schedule.maintenance",
        ),
        (
            json!({"schedule": {"maintenance": "at(tomorrow)"}}),
            "spec.schedule.maintenance",
        ),
        (
            json!({"schedule": {"timezone": "not a zone"}}),
            "spec.schedule.timezone",
        ),
        (json!({"worker": {"replicas": -1}}), "spec.worker.replicas"),
        (json!({"worker": {"batchSize": 0}}), "spec.worker.batchSize"),
        (
            json!({"worker": {"maxBatchingWindowSeconds": 301}}),
            "spec.worker.maxBatchingWindowSeconds",
        ),
        (
            json!({"worker": {"concurrency": 0}}),
            "spec.worker.concurrency",
        ),
        (
            json!({"worker": {"roleArn": "tracking-worker"}}),
            "spec.worker.roleArn",
        ),
        (
            json!({"worker": {"serviceAccountName": "Worker_SA"}}),
            "spec.worker.serviceAccountName",
        ),
        (json!({"environment": ""}), "spec.environment"),
        (json!({"tags": {"aws:createdBy": "me"}}), "spec.tags"),
        (
            json!({"tags": {"tracking-operator.io/pipeline": "x"}}),
            "spec.tags",
        ),
        (json!({"tags": {"Environment": "dev"}}), "spec.tags"),
    ];
    for (spec, field) in cases {
        let message = refusal(spec.clone()).unwrap_or_else(|| panic!("accepted {spec}"));
        assert!(
            message.contains(field),
            "refusal of {spec} does not name {field}: {message}"
        );
    }
}

#[test]
fn status_index_is_immutable_but_other_settings_change_in_place() {
    let old = pipeline(json!({"table": {"statusIndex": true}}));
    let dropped = pipeline(json!({"table": {"statusIndex": false}}));
    let err = validate_cel_update(&dropped, &old).expect_err("statusIndex change refused");
    assert!(err.to_string().contains("spec.table.statusIndex"), "{err}");

    let changed = pipeline(json!({
        "table": {"statusIndex": true, "ttlDays": 30, "pointInTimeRecovery": false},
        "queue": {"visibilityTimeoutSeconds": 600},
        "alerts": {"queueDepthThreshold": 10, "email": "a@b.example"},
    }));
    assert!(validate_cel_update(&changed, &old).is_ok());
}

#[test]
fn committed_crd_matches_the_types() {
    let generated = crd_yaml().expect("CRD renders");
    let committed = include_str!("../../crds/tracking-operator.io_trackingpipelines.yaml");
    assert!(
        generated == committed,
        "{CRD_PATH} is stale: run `cargo run -- crd > {CRD_PATH}`"
    );
}

#[test]
fn crd_shape() {
    let crd = serde_json::to_value(TrackingPipeline::crd()).unwrap();
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["tp"]));
    assert_eq!(crd["spec"]["names"]["categories"], json!(["tracking"]));
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["subresources"]["status"], json!({}));
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Ready",
            "Reason",
            "Queue",
            "In-Flight",
            "Backlog",
            "DLQ",
            "Replicas",
            "Age"
        ]
    );
    let conditions =
        &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
    let size = serde_json::to_string(&crd).unwrap().len();
    assert!(
        size < 64 * 1024,
        "CRD is {size} bytes; Argo CD's annotation limit is 256 KiB"
    );
}

#[test]
fn adopt_names_are_checked_by_the_api_server() {
    let good = json!({
        "managementPolicy": "Observe",
        "adopt": {
            "queue": "https://sqs.eu-west-1.amazonaws.com/123456789012/TapStack-TrackingQueue-AB12",
            "deadLetterQueue": "TapStack-TrackingDLQ-CD34",
            "table": "TapStack-TrackingAuditTable-EF56",
            "queueKey": "alias/logistics-sqs-key",
            "tableKey": "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "topic": "arn:aws:sns:eu-west-1:123456789012:TapStack-AlertTopic-GH78",
            "alarms": {"queueDepth": "TapStack-QueueDepthAlarm-1"},
            "schedule": "tapstack-maintenance",
            "deletionPolicy": "Delete"
        }
    });
    assert_eq!(refusal(good), None);
    for (field, value, message) in [
        ("queue", "my queue.fifo", "spec.adopt.queue"),
        ("queueKey", "logistics-sqs-key", "spec.adopt.queueKey"),
        ("topic", "TapStack-AlertTopic", "spec.adopt.topic"),
        ("table", "a", "spec.adopt.table"),
    ] {
        let refused = refusal(json!({"adopt": {field: value}}));
        assert!(
            refused.as_deref().is_some_and(|r| r.contains(message)),
            "{field}={value}: {refused:?}"
        );
    }
}

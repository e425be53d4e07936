//! The CRD's validation, enforced by the real API server: bad specs are refused with a
//! message naming the field, defaults are applied, and immutable fields stay immutable.

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tracking_operator::api::TrackingPipeline;

fn object(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "tracking-operator.io/v1alpha1",
        "kind": "TrackingPipeline",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("valid object JSON")
}

async fn api() -> Api<DynamicObject> {
    let kube = testenv::kube();
    let ns = kube.namespace("crd").await;
    let resource = ApiResource::erase::<TrackingPipeline>(&());
    Api::namespaced_with(kube.client().await, &ns, &resource)
}

#[tokio::test]
async fn bad_specs_are_refused_naming_the_field() {
    let api = api().await;
    let cases = [
        (
            json!({"queue": {"visibilityTimeoutSeconds": 43201}}),
            "spec.queue.visibilityTimeoutSeconds",
        ),
        (
            json!({"queue": {"visibilityTimeoutSeconds": 29}}),
            "spec.queue.visibilityTimeoutSeconds must be between 30",
        ),
        (
            json!({"queue": {"retentionPeriod": "30s"}}),
            "spec.queue.retentionPeriod",
        ),
        (
            json!({"queue": {"retentionPeriod": "15d"}}),
            "spec.queue.retentionPeriod",
        ),
        (
            json!({"queue": {"maxReceiveCount": 0}}),
            "spec.queue.maxReceiveCount",
        ),
        (
            json!({"queue": {"deadLetterRetentionPeriod": "2w"}}),
            "spec.queue.deadLetterRetentionPeriod",
        ),
        (
            json!({"encryption": {"keyDeletionWindowDays": 3}}),
            "spec.encryption.keyDeletionWindowDays",
        ),
        (
            json!({"encryption": {"dataKeyReusePeriod": "2d"}}),
            "spec.encryption.dataKeyReusePeriod",
        ),
        (
            json!({"alerts": {"email": "ops-at-example.com"}}),
            "spec.alerts.email",
        ),
        (
            json!({"alerts": {"queueDepthThreshold": 0}}),
            "spec.alerts.queueDepthThreshold",
        ),
        (
            json!({"alerts": {"workerErrorsThreshold": -1}}),
            "spec.alerts.workerErrorsThreshold",
        ),
        (
            json!({"schedule": {"maintenance": "every day at 1"}}),
            "spec.schedule.maintenance",
        ),
        (
            json!({"schedule": {"maintenance": "cron(0 1 * * *)"}}),
            "spec.schedule.maintenance",
        ),
        (json!({"worker": {"batchSize": 0}}), "spec.worker.batchSize"),
        (
            json!({"worker": {"roleArn": "my-role"}}),
            "spec.worker.roleArn",
        ),
        (
            json!({"tags": {"aws:cloudformation:stack-name": "x"}}),
            "spec.tags",
        ),
        (json!({"deletionPolicy": "Destroy"}), "spec.deletionPolicy"),
    ];
    let mut refused = 0;
    for (i, (spec, field)) in cases.iter().enumerate() {
        let result = api
            .create(
                &PostParams::default(),
                &object(&format!("bad-{i}"), spec.clone()),
            )
            .await;
        match result {
            Ok(_) => panic!("the API server accepted {spec}"),
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{spec}: {status:?}");
                assert!(
                    status.message.contains(field),
                    "refusal of {spec} does not name {field}: {}",
                    status.message
                );
                refused += 1;
            }
            Err(other) => panic!("{spec}: unexpected error {other}"),
        }
    }
    assert!(refused >= 10);
}

#[tokio::test]
async fn defaults_are_applied_by_the_api_server() {
    let api = api().await;
    let created = api
        .create(&PostParams::default(), &object("defaults", json!({})))
        .await
        .expect("an empty spec is valid");
    let spec = &created.data["spec"];
    assert_eq!(spec["environment"], "Production");
    assert_eq!(spec["deletionPolicy"], "Retain");
    assert_eq!(spec["queue"]["visibilityTimeoutSeconds"], 150);
    assert_eq!(spec["queue"]["retentionPeriod"], "7d");
    assert_eq!(spec["queue"]["deadLetterRetentionPeriod"], "14d");
    assert_eq!(spec["encryption"]["dataKeyReusePeriod"], "5m");
    assert_eq!(spec["table"]["ttlDays"], 90);
    assert_eq!(spec["alerts"]["queueDepthThreshold"], 1000);
    assert_eq!(spec["schedule"]["maintenance"], "cron(0 1 * * ? *)");
    // What the controller reads back deserializes into the typed spec.
    let typed: TrackingPipeline = serde_json::from_value(serde_json::to_value(&created).unwrap())
        .expect("stored object deserializes");
    assert_eq!(typed.spec, Default::default());
}

#[tokio::test]
async fn status_index_cannot_change_but_settings_can() {
    let api = api().await;
    api.create(
        &PostParams::default(),
        &object("immutable", json!({"table": {"statusIndex": true}})),
    )
    .await
    .expect("created");
    let params = PatchParams::default();
    let err = api
        .patch(
            "immutable",
            &params,
            &Patch::Merge(json!({"spec": {"table": {"statusIndex": false}}})),
        )
        .await
        .expect_err("statusIndex is immutable");
    assert!(err.to_string().contains("spec.table.statusIndex"), "{err}");
    api.patch(
        "immutable",
        &params,
        &Patch::Merge(
            json!({"spec": {"table": {"ttlDays": 30}, "queue": {"visibilityTimeoutSeconds": 900}}}),
        ),
    )
    .await
    .expect("in-place settings change");
}

//! `spec.worker.autoscaling` as the real API server enforces it: bad values are refused with
//! a message naming the field, defaults are filled in, and the typed spec reads them back.

use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::{Value, json};
use tracking_operator::api::{AutoscalingMode, TrackingPipeline};

fn object(name: &str, autoscaling: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "tracking-operator.io/v1alpha1",
        "kind": "TrackingPipeline",
        "metadata": {"name": name},
        "spec": {"worker": {"autoscaling": autoscaling}},
    }))
    .expect("valid object JSON")
}

async fn api() -> Api<DynamicObject> {
    let kube = testenv::kube();
    let ns = kube.namespace("autoscale-crd").await;
    let resource = ApiResource::erase::<TrackingPipeline>(&());
    Api::namespaced_with(kube.client().await, &ns, &resource)
}

#[tokio::test]
async fn bad_autoscaling_is_refused_naming_the_field() {
    let api = api().await;
    let field = |f: &str| format!("spec.worker.autoscaling.{f}");
    let cases = [
        (
            json!({"minReplicas": 5, "maxReplicas": 2}),
            field("minReplicas"),
        ),
        (json!({"minReplicas": -1}), field("minReplicas")),
        (json!({"maxReplicas": 0}), field("maxReplicas")),
        (json!({"maxReplicas": 1001}), field("maxReplicas")),
        (
            json!({"targetBacklogPerReplica": 0}),
            field("targetBacklogPerReplica"),
        ),
        (
            json!({"maxOldestMessageAgeSeconds": 0}),
            field("maxOldestMessageAgeSeconds"),
        ),
        (
            json!({"scaleDownStabilizationSeconds": -5}),
            field("scaleDownStabilizationSeconds"),
        ),
        (json!({"scaleUpStep": 0}), field("scaleUpStep")),
        (
            json!({"scaleUpPeriodSeconds": 0}),
            field("scaleUpPeriodSeconds"),
        ),
        (json!({"mode": "keda"}), field("mode")),
    ];
    for (i, (autoscaling, field)) in cases.iter().enumerate() {
        let result = api
            .create(
                &PostParams::default(),
                &object(&format!("bad-{i}"), autoscaling.clone()),
            )
            .await;
        match result {
            Ok(_) => panic!("the API server accepted {autoscaling}"),
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{autoscaling}: {status:?}");
                assert!(
                    status.message.contains(field.as_str()),
                    "refusal of {autoscaling} does not name {field}: {}",
                    status.message
                );
            }
            Err(other) => panic!("{autoscaling}: unexpected error {other}"),
        }
    }
}

#[tokio::test]
async fn autoscaling_defaults_and_zero_minimum_are_accepted() {
    let api = api().await;
    let created = api
        .create(&PostParams::default(), &object("defaults", json!({})))
        .await
        .expect("an empty autoscaling block is valid");
    let a = &created.data["spec"]["worker"]["autoscaling"];
    assert_eq!(a["mode"], "operator");
    assert_eq!(a["minReplicas"], 0);
    assert_eq!(a["maxReplicas"], 10);
    assert_eq!(a["targetBacklogPerReplica"], 100);
    assert_eq!(a["scaleDownStabilizationSeconds"], 300);
    assert_eq!(a["scaleUpStep"], 4);
    assert_eq!(a["scaleUpPeriodSeconds"], 60);
    assert!(a.get("maxOldestMessageAgeSeconds").is_none());
    let typed: TrackingPipeline = serde_json::from_value(serde_json::to_value(&created).unwrap())
        .expect("stored object deserializes");
    let typed = typed.spec.worker.autoscaling.expect("autoscaling kept");
    assert_eq!(typed.mode, AutoscalingMode::Operator);

    api.create(
        &PostParams::default(),
        &object(
            "external",
            json!({"mode": "external", "minReplicas": 0, "maxReplicas": 1, "maxOldestMessageAgeSeconds": 60}),
        ),
    )
    .await
    .expect("mode external with min 0 is valid");
    // Without the block, the pipeline has none (fixed replicas as before).
    let plain: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "tracking-operator.io/v1alpha1",
        "kind": "TrackingPipeline",
        "metadata": {"name": "plain"},
        "spec": {},
    }))
    .unwrap();
    let plain = api.create(&PostParams::default(), &plain).await.unwrap();
    assert!(plain.data["spec"]["worker"].get("autoscaling").is_none());
}

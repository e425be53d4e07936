//! WorkerReady follows the worker Deployment's availability as the real deployment
//! controller reports it. The control plane here has no node, so the Deployment's Pods never
//! become available: to the operator that looks exactly like a crash-looping worker.

mod controller_support;

use std::time::Duration;

use controller_support::*;
use kube::api::{Patch, PatchParams};
use serde_json::json;

#[tokio::test]
async fn a_worker_that_never_becomes_available_is_not_ready_until_scaled_to_zero() {
    let kube = testenv::kube();
    let ns = kube.namespace("e2e-worker-ready").await;
    let _operator = Operator::start_with(
        &testenv::moto().endpoint(),
        &ns,
        Duration::from_secs(3600),
        |config| config.worker_start_grace = Duration::ZERO,
    )
    .await;
    let api = pipelines(&ns).await;
    create(&api, "stuck", json!({"worker": {"replicas": 1}})).await;

    let stuck = wait_for(&api, "stuck", "WorkerReady=False", |p| {
        is(p, "WorkerReady", "False")
    })
    .await;
    assert_eq!(
        reason(&stuck, "WorkerReady").as_deref(),
        Some("WorkerUnavailable")
    );
    assert!(
        message(&stuck, "WorkerReady").is_some_and(|m| m.contains("0 of 1 replicas available")),
        "{:?}",
        message(&stuck, "WorkerReady")
    );
    let stuck = wait_for(&api, "stuck", "Ready=False", |p| is(p, "Ready", "False")).await;
    assert_eq!(
        reason(&stuck, "Ready").as_deref(),
        Some("WorkerUnavailable")
    );

    // Nothing is expected to run at zero replicas: the pipeline is usable again.
    api.patch(
        "stuck",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"worker": {"replicas": 0}}})),
    )
    .await
    .unwrap();
    let ready = wait_ready(&api, "stuck").await;
    assert!(is(&ready, "WorkerReady", "True"));
}

//! The declarative redrive (`spec.redrive`) through the operator, against the real API server
//! and moto: a request moves the DLQ's messages (only those with its reason) back to the main
//! queue once and reports it in status and Events; an operator killed half way and started
//! again resumes from its ledger, and every message arrives in the main queue exactly once.

mod controller_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::time::Instant;

use aws_sdk_sqs::types::MessageAttributeValue;
use controller_support::*;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tracking_operator::api::{RedrivePhase, TrackingPipeline};
use tracking_operator::redrive;
use tracking_worker::Worker;
use tracking_worker::config::Config as WorkerConfig;
use tracking_worker::contract::WorkerSettings;

const RESYNC: Duration = Duration::from_secs(3600);
/// Short leases, so that what a killed run had leased comes back within seconds.
const LEASE_SECONDS: i32 = 3;

fn state_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("redrive-spec-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn operator(ns: &str, dir: &Path) -> Operator {
    let dir = dir.to_path_buf();
    Operator::start_beside(&testenv::moto().endpoint(), ns, RESYNC, move |ctx| {
        vec![tokio::spawn(redrive::run(ctx, dir, LEASE_SECONDS))]
    })
    .await
}

async fn sqs() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&testenv::sdk_config_for(&testenv::moto().endpoint()).await)
}

fn update(id: &str) -> String {
    json!({"tracking_id": id, "status": "IN_TRANSIT", "timestamp": "2026-12-01T10:00:00Z"})
        .to_string()
}

/// Puts messages in the DLQ as the worker does: body plus the rejection reason attribute.
async fn dead_letter(sqs: &aws_sdk_sqs::Client, dlq: &str, reason: &str, ids: &[String]) {
    let bodies: Vec<String> = ids.iter().map(|id| update(id)).collect();
    dead_letter_bodies(sqs, dlq, reason, &bodies).await;
}

async fn dead_letter_bodies(sqs: &aws_sdk_sqs::Client, dlq: &str, reason: &str, bodies: &[String]) {
    for body in bodies {
        let attr = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(reason)
            .build()
            .unwrap();
        sqs.send_message()
            .queue_url(dlq)
            .message_body(body.clone())
            .message_attributes("tracking.poison.reason", attr)
            .send()
            .await
            .expect("send to the DLQ");
    }
}

/// Receives everything in `queue` (deleting it), as tracking id → how many times seen.
async fn drain(sqs: &aws_sdk_sqs::Client, queue: &str) -> BTreeMap<String, u32> {
    let mut seen = BTreeMap::new();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .send()
            .await
            .expect("receive");
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return seen;
        }
        for m in messages {
            let body: Value = serde_json::from_str(m.body().unwrap_or_default()).unwrap();
            *seen
                .entry(body["tracking_id"].as_str().unwrap().to_string())
                .or_default() += 1;
            sqs.delete_message()
                .queue_url(queue)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .expect("delete");
        }
    }
}

async fn ask(api: &Api<TrackingPipeline>, name: &str, redrive: Value) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"redrive": redrive}})),
    )
    .await
    .expect("patch spec.redrive");
}

fn phase(p: &TrackingPipeline) -> Option<(String, RedrivePhase, u64)> {
    let r = p.status.as_ref()?.redrive.as_ref()?;
    Some((r.request_id.clone(), r.phase, r.moved))
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test]
async fn a_request_moves_its_reason_once_and_reports_it() {
    let kube = testenv::kube();
    let ns = kube.namespace("redrive-spec").await;
    let dir = state_dir("reason");
    let _operator = operator(&ns, &dir).await;
    let api = pipelines(&ns).await;
    create(&api, "redrive", json!({"deletionPolicy": "Delete"})).await;
    let p = wait_ready(&api, "redrive").await;
    let outputs = p.status.clone().unwrap().outputs;
    let (queue, dlq) = (
        outputs.queue_url.unwrap(),
        outputs.dead_letter_queue_url.unwrap(),
    );
    let sqs = sqs().await;
    dead_letter(&sqs, &dlq, "dynamodb_unavailable", &ids("V", 6)).await;
    dead_letter(&sqs, &dlq, "invalid_json", &ids("P", 3)).await;

    ask(
        &api,
        "redrive",
        json!({"requestId": "r1", "reason": "dynamodb_unavailable", "rate": 100}),
    )
    .await;
    let p = wait_for(&api, "redrive", "redrive r1 Succeeded", |p| {
        phase(p).is_some_and(|(id, phase, _)| id == "r1" && phase == RedrivePhase::Succeeded)
    })
    .await;
    let r = p.status.unwrap().redrive.unwrap();
    assert_eq!(
        (r.moved, r.kept, r.failed, r.remaining),
        (6, 3, 0, 3),
        "{r:?}"
    );
    assert!(r.started_at.is_some() && r.finished_at.is_some());
    let moved = drain(&sqs, &queue).await;
    assert_eq!(moved, ids("V", 6).into_iter().map(|id| (id, 1)).collect());
    let reasons = event_reasons(&kube.client().await, &p_named(&api, "redrive").await).await;
    for reason in ["RedriveStarted", "RedriveSucceeded"] {
        assert!(reasons.iter().any(|(r, _)| r == reason), "{reasons:?}");
    }

    // A new request without a reason takes the rest; the finished one never runs again.
    // A merge patch keeps fields it does not name: the reason is removed explicitly.
    ask(
        &api,
        "redrive",
        json!({"requestId": "r2", "rate": 100, "reason": null}),
    )
    .await;
    let p = wait_for(&api, "redrive", "redrive r2 Succeeded", |p| {
        phase(p).is_some_and(|(id, phase, _)| id == "r2" && phase == RedrivePhase::Succeeded)
    })
    .await;
    let r = p.status.unwrap().redrive.unwrap();
    assert_eq!(r.moved, 3, "{r:?}");
    let moved = drain(&sqs, &queue).await;
    assert_eq!(moved, ids("P", 3).into_iter().map(|id| (id, 1)).collect());
    let _ = std::fs::remove_dir_all(&dir);
}

async fn p_named(api: &Api<TrackingPipeline>, name: &str) -> TrackingPipeline {
    api.get(name).await.expect("get pipeline")
}

#[tokio::test]
async fn a_redrive_killed_half_way_resumes_and_moves_every_message_once() {
    let kube = testenv::kube();
    let ns = kube.namespace("redrive-kill").await;
    let dir = state_dir("kill");
    let first = operator(&ns, &dir).await;
    let api = pipelines(&ns).await;
    create(&api, "resume", json!({"deletionPolicy": "Delete"})).await;
    let p = wait_ready(&api, "resume").await;
    let outputs = p.status.clone().unwrap().outputs;
    let (queue, dlq) = (
        outputs.queue_url.unwrap(),
        outputs.dead_letter_queue_url.unwrap(),
    );
    let sqs = sqs().await;
    dead_letter(&sqs, &dlq, "dynamodb_unavailable", &ids("K", 16)).await;

    // One message per second: the first progress report (after 5 s) comes half way.
    ask(&api, "resume", json!({"requestId": "k1", "rate": 1})).await;
    wait_for(&api, "resume", "some messages moved", |p| {
        phase(p).is_some_and(|(_, phase, moved)| phase == RedrivePhase::Running && moved >= 2)
    })
    .await;
    first.kill();
    let p = p_named(&api, "resume").await;
    assert_eq!(
        phase(&p).map(|(_, phase, _)| phase),
        Some(RedrivePhase::Running),
        "the killed run left its request Running"
    );

    let _second = operator(&ns, &dir).await;
    ask(&api, "resume", json!({"requestId": "k1", "rate": 100})).await;
    let p = wait_for(
        &api,
        "resume",
        "redrive k1 Succeeded after the restart",
        |p| phase(p).is_some_and(|(_, phase, _)| phase == RedrivePhase::Succeeded),
    )
    .await;
    let r = p.status.unwrap().redrive.unwrap();
    assert_eq!(r.remaining, 0, "{r:?}");
    let moved = drain(&sqs, &queue).await;
    let sent: Vec<_> = moved.keys().cloned().collect();
    let mut expected = ids("K", 16);
    expected.sort();
    assert_eq!(sent, expected, "every message reached the main queue");
    // The one window the ledger cannot close: a kill inside the single in-flight SendMessage
    // (SQS keeps no idempotency key). The pacing sleep is where the kill almost always lands.
    let doubled: Vec<_> = moved.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubled.len() <= 1 && doubled.iter().all(|(_, n)| **n == 2),
        "at most the in-flight message twice: {doubled:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> (i64, i64) {
    tracking_worker::redrive::depth(sqs, url)
        .await
        .expect("queue depth")
}

/// The proof of the whole loop: after a declarative redrive, the worker writes the valid
/// updates exactly once and sends the poison back to the DLQ once, with its reason; the next
/// request leaves that returned poison where it is.
#[tokio::test]
async fn after_a_redrive_valid_updates_are_written_once_and_poison_returns_once() {
    let kube = testenv::kube();
    let ns = kube.namespace("redrive-worker").await;
    let dir = state_dir("worker");
    let _operator = operator(&ns, &dir).await;
    let api = pipelines(&ns).await;
    create(&api, "loop", json!({"deletionPolicy": "Delete"})).await;
    let p = wait_ready(&api, "loop").await;
    let outputs = p.status.clone().unwrap().outputs;
    let (queue, dlq, table) = (
        outputs.queue_url.unwrap(),
        outputs.dead_letter_queue_url.unwrap(),
        outputs.table_name.unwrap(),
    );
    let sqs = sqs().await;
    // Rejected earlier by an outage (valid) and by a producer bug (poison).
    dead_letter(&sqs, &dlq, "dynamodb_unavailable", &ids("W", 8)).await;
    let poison: Vec<String> = (0..3).map(|i| format!("not json {i} {{")).collect();
    dead_letter_bodies(&sqs, &dlq, "invalid_json", &poison).await;

    ask(&api, "loop", json!({"requestId": "fix-1", "rate": 100})).await;
    let p = wait_for(&api, "loop", "redrive fix-1 Succeeded", |p| {
        phase(p).is_some_and(|(id, phase, _)| id == "fix-1" && phase == RedrivePhase::Succeeded)
    })
    .await;
    assert_eq!(p.status.unwrap().redrive.unwrap().moved, 11);

    let settings = WorkerSettings {
        queue_url: queue.clone(),
        dead_letter_queue_url: dlq.clone(),
        table_name: table.clone(),
        pipeline: format!("{ns}/loop"),
        batch_size: 10,
        max_batching_window_seconds: 1,
        concurrency: 2,
        ttl_days: 90,
        visibility_timeout_seconds: 60,
        metrics_namespace: "TrackingOperator/Tests".into(),
        metrics_addr: "127.0.0.1:0".into(),
        region: Some(testenv::REGION.into()),
        endpoint_url: Some(testenv::moto().endpoint()),
    };
    let mut config = WorkerConfig::new(settings);
    config.drain = Duration::from_secs(10);
    let sdk = testenv::sdk_config_for(&testenv::moto().endpoint()).await;
    let worker = Worker::start(config, &sdk).await.expect("worker starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    while depth(&sqs, &queue).await != (0, 0) || depth(&sqs, &dlq).await.0 < 3 {
        assert!(
            Instant::now() < deadline,
            "the worker did not drain the queue"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let report = worker.shutdown().await;
    assert_eq!((report.written, report.dead_lettered), (8, 3), "{report:?}");
    let ddb =
        aws_sdk_dynamodb::Client::new(&testenv::sdk_config_for(&testenv::moto().endpoint()).await);
    assert_eq!(
        audit_item_count(&ddb, &table).await,
        8,
        "each valid update once"
    );
    assert_eq!(depth(&sqs, &dlq).await, (3, 0), "each poison back once");

    // The next request finds only returned poison: it stays in the DLQ.
    ask(&api, "loop", json!({"requestId": "fix-2", "rate": 100})).await;
    let p = wait_for(&api, "loop", "redrive fix-2 Succeeded", |p| {
        phase(p).is_some_and(|(id, phase, _)| id == "fix-2" && phase == RedrivePhase::Succeeded)
    })
    .await;
    let r = p.status.unwrap().redrive.unwrap();
    assert_eq!((r.moved, r.kept, r.remaining), (0, 3, 3), "{r:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

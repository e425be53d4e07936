//! Poison goes to the DLQ at once, with the reason, and nothing else is affected.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use tracking_worker::Worker;
use tracking_worker::consumer::dlq_attr;
use tracking_worker::synth::{POISON_KINDS, Spec, plan, poison_body};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_kind_of_poison_is_dead_lettered_at_once_with_its_reason() {
    let p = common::pipeline("poison", 30).await;
    let moto = testenv::moto();
    let valid = plan(&Spec {
        count: 40,
        duplicate_percent: 0.0,
        poison_percent: 0.0,
        seed: 3,
        prefix: "PZ".into(),
    });
    let mut bodies = valid.bodies.clone();
    let mut expected: BTreeMap<String, String> = BTreeMap::new(); // body -> reason
    for (n, kind) in POISON_KINDS.iter().enumerate() {
        let body = poison_body(kind, "PZ", n);
        expected.insert(body.clone(), kind.to_string());
        bodies.insert(n * 3, body);
    }
    // A reserved key and a body with unbalanced braces, beyond the generator's kinds.
    for (body, reason) in [
        (
            r##"{"tracking_id":"#SUMMARY","timestamp":"2026-11-20T00:00:00Z"}"##,
            "reserved_tracking_id",
        ),
        (
            r#"{"tracking_id":"X","timestamp":"2026-11-20T00:00:00Z""#,
            "not_json",
        ),
    ] {
        expected.insert(body.to_string(), reason.to_string());
        bodies.push(body.to_string());
    }

    // One receiver: moto's threaded server can hand the same message to two concurrent
    // long-polls within its visibility timeout, which would dead-letter it twice and blur what
    // this test proves (poison is never retried). Concurrency is covered by the other tests.
    let mut config = p.config(&moto.endpoint());
    config.settings.concurrency = 1;
    let worker = Worker::start(config, &moto.sdk_config().await)
        .await
        .expect("worker starts");
    p.send_paced(&bodies, 50).await;
    common::wait_for("all messages settled", Duration::from_secs(300), || async {
        let r = worker.report();
        r.written + r.duplicates + r.dead_lettered >= bodies.len() as u64
    })
    .await;
    let report = worker.shutdown().await;

    assert_eq!(report.written, 40, "valid updates unaffected: {report:?}");
    assert_eq!(report.dead_lettered, expected.len() as u64, "{report:?}");
    assert_eq!(report.failed, 0, "poison is never retried: {report:?}");
    assert_eq!(
        report.received,
        bodies.len() as u64,
        "each poison message was received once: {report:?}"
    );
    assert_eq!(p.update_keys().await.len(), 40);
    assert_eq!(
        p.depth().await,
        (0, 0),
        "poison deleted from the main queue"
    );

    let dlq = p.drain_dlq(expected.len()).await;
    let got: BTreeMap<String, String> = dlq
        .iter()
        .map(|m| {
            let reason = m
                .message_attributes()
                .and_then(|a| a.get(dlq_attr::REASON))
                .and_then(|v| v.string_value())
                .unwrap_or("none")
                .to_string();
            assert!(
                m.message_attributes()
                    .is_some_and(|a| a.contains_key(dlq_attr::DETAIL)),
                "detail attribute present"
            );
            (m.body().unwrap_or_default().to_string(), reason)
        })
        .collect();
    assert_eq!(
        got, expected,
        "the original body with its reason, each once"
    );
}

/// The poison leaves the main queue as soon as the DLQ has it, not when its marker is written
/// or its batch is done: a replica killed while DynamoDB cannot take the marker (an outage
/// that starts right after the send) or while a valid update of the same batch is still being
/// retried must not leave it behind to be sent a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_leaves_the_queue_once_the_dlq_has_it_even_while_dynamodb_is_down() {
    let p = common::pipeline("poisonkill", 30).await;
    let proxy = testenv::faults::FaultProxy::start(&testenv::moto().endpoint());
    // The marker check (GetItem) passes; every write fails: the marker and the update.
    proxy.add_rule(testenv::faults::Rule::error(
        "dynamodb",
        "PutItem",
        "ServiceUnavailable",
    ));
    let poison = r#"{"status":"LOST"}"#.to_string();
    let update = r#"{"tracking_id":"PK-1","timestamp":"2026-11-20T12:00:00Z"}"#.to_string();
    // One batch: the poison and an update that cannot be written.
    common::send_batch(&p.sqs, &p.queue_url, &[poison.clone(), update]).await;
    let mut config = p.config(&proxy.endpoint());
    config.settings.concurrency = 1;
    let worker = Worker::start(config, &proxy.sdk_config().await)
        .await
        .expect("worker starts");
    common::wait_for(
        "the poison dead-lettered",
        Duration::from_secs(20),
        || async { worker.report().dead_lettered >= 1 },
    )
    .await;
    let gone = common::poll_until(Duration::from_secs(5), || async {
        p.depth().await == (0, 1)
    })
    .await;
    let depth = p.depth().await;
    // SIGKILLed while the marker and the update are still being retried.
    drop(worker);
    assert!(
        gone,
        "the dead-lettered poison is still in the main queue (visible, in flight): {depth:?}; \
         a killed replica would leave it to be sent again"
    );
    let dlq = common::dlq_reasons(&p.drain_dlq(1).await);
    assert_eq!(dlq, vec![(poison, "missing_tracking_id".to_string())]);
}

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

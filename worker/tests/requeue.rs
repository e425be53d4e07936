//! Lost deliveries (replicas killed while they hold a message) must not make SQS's redrive
//! policy move a valid update to the DLQ: from the receive before the last, the worker sends
//! the message back as a fresh copy before processing it. The copy is the same message: the
//! same item key (even for an update keyed by its `SentTimestamp`), the same `message_id` on
//! the item, one poison marker, one DLQ copy naming the original.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use testenv::faults::{FaultProxy, Rule};
use tracking_worker::Worker;
use tracking_worker::consumer::dlq_attr;
use tracking_worker::model::attr;

/// Receives every message of the queue `times` times without settling it, as replicas
/// SIGKILLed right after their receive would; returns each message's id and SentTimestamp.
async fn lose_deliveries(p: &common::Pipeline, times: usize) -> BTreeMap<String, String> {
    let mut seen: BTreeMap<String, (usize, String)> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !(seen.len() == 2 && seen.values().all(|(n, _)| *n == times)) {
        assert!(
            std::time::Instant::now() < deadline,
            "lost deliveries: {seen:?}"
        );
        let out = p
            .sqs
            .receive_message()
            .queue_url(&p.queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .expect("receive");
        for m in out.messages() {
            let sent = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                .cloned()
                .unwrap_or_default();
            let e = seen
                .entry(m.message_id().unwrap_or_default().to_string())
                .or_insert((0, sent));
            e.0 += 1;
            if e.0 == times {
                // Not received again by this loop; visible again shortly, for the worker.
                p.sqs
                    .change_message_visibility()
                    .queue_url(&p.queue_url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .visibility_timeout(2)
                    .send()
                    .await
                    .expect("hide");
            }
        }
    }
    seen.into_iter().map(|(id, (_, sent))| (id, sent)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_whose_deliveries_were_lost_is_requeued_not_dead_lettered() {
    // maxReceiveCount 3: the fourth receive would move the message to the DLQ.
    let p = common::pipeline("requeue", 30).await;
    let proxy = FaultProxy::start(&testenv::moto().endpoint());
    // An update without a timestamp (keyed by SentTimestamp) and a poison message.
    let update = r#"{"tracking_id":"RQ-1","status":"IN_TRANSIT"}"#.to_string();
    let poison = r#"{"tracking_id":"","status":"IN_TRANSIT"}"#.to_string();
    common::send_batch(&p.sqs, &p.queue_url, &[update.clone(), poison.clone()]).await;
    let originals = lose_deliveries(&p, 2).await;

    // The third delivery: DynamoDB fails, so the worker holds both messages; the copies
    // (slowed down so the test can stop this worker's receives first) are not received by it.
    proxy.add_rule(Rule::error("dynamodb", "*", "ServiceUnavailable"));
    proxy.add_rule(Rule::delay("sqs", "SendMessage", Duration::from_secs(2)));
    let mut config = p.config(&proxy.endpoint());
    config.settings.concurrency = 1;
    let sdk = proxy.sdk_config().await;
    let first = Worker::start(config.clone(), &sdk)
        .await
        .expect("worker starts");
    common::wait_for("the third delivery", Duration::from_secs(20), || async {
        first.report().received >= 2
    })
    .await;
    proxy.add_rule(Rule::error("sqs", "ReceiveMessage", "ServiceUnavailable"));
    common::poll_until(Duration::from_secs(6), || async {
        first.report().requeued >= 2
    })
    .await;
    let during = first.report();
    // SIGKILLed: no drain, no delete, no visibility change.
    drop(first);

    proxy.clear_rules();
    let second = Worker::start(config, &sdk).await.expect("worker starts");
    let settled = common::poll_until(Duration::from_secs(20), || async {
        let r = second.report();
        r.written + r.dead_lettered >= 2
    })
    .await;
    let report = second.report();
    // Nothing is left in flight; a drain would only wait for the long poll to end.
    drop(second);
    assert!(
        settled,
        "the messages were held by the killed worker instead of requeued: {during:?}, then {report:?}"
    );
    assert_eq!(during.requeued, 2, "{during:?}");
    assert_eq!((report.written, report.dead_lettered), (1, 1), "{report:?}");

    // The update: one item, named after the original message, keyed by its SentTimestamp.
    let items = p.items_of("RQ-1").await;
    assert_eq!(items.len(), 1, "{items:?}");
    let item = &items[0];
    let id = common::text(item, attr::MESSAGE_ID).unwrap_or_default();
    let sent_ms: i64 = originals[id].parse().expect("SentTimestamp");
    let key_time = chrono::DateTime::from_timestamp_millis(sent_ms)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert!(
        common::text(item, attr::TIMESTAMP)
            .unwrap_or_default()
            .starts_with(&key_time),
        "keyed by the original SentTimestamp {key_time}: {item:?}"
    );

    // The poison: once, with its reason, naming the original message.
    let dlq = p.drain_dlq(1).await;
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(
        p.dlq_depth().await,
        (0, 1),
        "only the one copy (now being read)"
    );
    let a = |name: &str| {
        dlq[0]
            .message_attributes()
            .and_then(|m| m.get(name))
            .and_then(|v| v.string_value())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(dlq[0].body(), Some(poison.as_str()));
    assert_eq!(a(dlq_attr::REASON), "empty_tracking_id");
    assert!(
        originals.contains_key(&a(dlq_attr::SOURCE_MESSAGE_ID)),
        "names the original: {dlq:?}"
    );
    assert_ne!(a(dlq_attr::SOURCE_MESSAGE_ID), id);
    assert_eq!(p.depth().await, (0, 0));
}

/// A message one receive away from SQS's redrive goes back at receipt, not after the
/// batching window: a replica killed while it collects a batch (up to the 30 s default)
/// would otherwise cost the message the receive that sends it to the DLQ.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_near_the_limit_is_requeued_at_receipt_not_after_the_batching_window() {
    let p = common::pipeline("requeue-early", 30).await;
    let bodies = [
        r#"{"tracking_id":"RE-1","status":"IN_TRANSIT"}"#.to_string(),
        r#"{"tracking_id":"RE-2","status":"DELIVERED"}"#.to_string(),
    ];
    common::send_batch(&p.sqs, &p.queue_url, &bodies).await;
    lose_deliveries(&p, 2).await;

    let mut config = p.config(&testenv::moto().endpoint());
    config.settings.concurrency = 1;
    config.settings.max_batching_window_seconds = 20;
    let worker = Worker::start(config, &testenv::moto().sdk_config().await)
        .await
        .expect("worker starts");
    let early = common::poll_until(Duration::from_secs(8), || async {
        worker.report().requeued >= 2
    })
    .await;
    let during = worker.report();
    // SIGKILLed inside its batching window.
    drop(worker);
    assert!(
        early,
        "requeued only after the 20 s batching window: {during:?}"
    );
    assert_eq!((during.requeued, during.written), (2, 0), "{during:?}");
    assert_eq!(p.dlq_depth().await, (0, 0));
    // The originals are gone; what is left are the two copies, at zero receives or held by
    // the killed worker's batch.
    let (visible, in_flight) = p.depth().await;
    assert_eq!(
        visible + in_flight,
        2,
        "{visible} visible, {in_flight} in flight"
    );
}

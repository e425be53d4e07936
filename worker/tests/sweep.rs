//! Updates SQS moved to the DLQ (their deliveries lost `maxReceiveCount` times, beyond the
//! requeue's reach) are taken back by the DLQ sweep: stored if they were not, deleted from
//! the DLQ either way. Poison SQS moved there gets its one reasoned copy; the worker's own
//! dead letters are left as they are, visible.

mod common;

use std::time::Duration;

use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use testenv::faults::{FaultProxy, Rule};
use tracking_worker::Worker;
use tracking_worker::consumer::dlq_attr;
use tracking_worker::model::{Parsed, parse};
use tracking_worker::sweep::{Swept, sweep};
use tracking_worker::write::{Pending, Written, write_updates};

/// Receives the main queue without settling anything until SQS's redrive policy has moved
/// `n` messages to the DLQ, as lost deliveries would.
async fn moved_by_sqs(p: &common::Pipeline, n: u64) {
    common::wait_for(
        "SQS to move the messages",
        Duration::from_secs(30),
        || async {
            p.sqs
                .receive_message()
                .queue_url(&p.queue_url)
                .max_number_of_messages(10)
                .visibility_timeout(0)
                .send()
                .await
                .expect("receive");
            p.dlq_depth().await.0 >= n
        },
    )
    .await;
    assert_eq!(p.depth().await, (0, 0), "everything moved");
}

/// (written, already stored, poison, left, to retry later) of a sweep, which must have seen
/// the whole DLQ.
fn counts(s: &Swept) -> (u64, u64, u64, u64, u64) {
    assert!(s.complete, "{s:?}");
    (s.written, s.already_stored, s.poison, s.left, s.retry_later)
}

/// Writes `body` as the worker would have before its delete was lost.
async fn store(ctx: &tracking_worker::Ctx, body: &str) {
    let Ok(Parsed::Update(u)) = parse(body) else {
        panic!("not an update: {body}");
    };
    let item = u.to_item("earlier-delivery", "earlier-token", chrono::Utc::now(), 90);
    let out = write_updates(ctx, vec![Pending { index: 0, item }]).await;
    assert!(matches!(out[0].1, Ok(Written::New)), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_stores_what_sqs_moved_once_and_leaves_the_workers_own_dead_letters() {
    let p = common::pipeline("sweep", 30).await;
    let ctx = p.ctx().await;
    let lost = r#"{"tracking_id":"SW-1","status":"IN_TRANSIT","timestamp":"2026-12-01T10:00:00Z"}"#;
    let stored =
        r#"{"tracking_id":"SW-2","status":"DELIVERED","timestamp":"2026-12-01T11:00:00Z"}"#;
    let poison = r#"{"tracking_id":"","status":"IN_TRANSIT"}"#;
    store(&ctx, stored).await;
    common::send_batch(
        &p.sqs,
        &p.queue_url,
        &[lost.into(), stored.into(), poison.into()],
    )
    .await;
    moved_by_sqs(&p, 3).await;
    // A dead letter of the worker's own, with its reason: not the sweep's business.
    let reason = MessageAttributeValue::builder()
        .data_type("String")
        .string_value("not_json")
        .build()
        .expect("attribute");
    p.sqs
        .send_message()
        .queue_url(&p.dlq_url)
        .message_body("garbage")
        .message_attributes(dlq_attr::REASON, reason)
        .send()
        .await
        .expect("send");

    let first = sweep(&ctx).await.expect("sweep");
    assert_eq!(
        (first.written, first.already_stored, first.poison),
        (1, 1, 1),
        "{first:?}"
    );
    assert!(first.complete, "{first:?}");
    // Every lease handed back: the DLQ is visible as before, minus what was taken back.
    assert_eq!(
        p.dlq_depth().await,
        (2, 0),
        "the worker's dead letter and the poison's reasoned copy"
    );
    for id in ["SW-1", "SW-2"] {
        assert_eq!(p.items_of(id).await.len(), 1, "{id} stored once");
    }
    // Nothing more to do: a second sweep changes nothing.
    let second = sweep(&ctx).await.expect("sweep");
    assert_eq!(counts(&second), (0, 0, 0, 2, 0), "{second:?}");

    let mut reasons = common::dlq_reasons(&p.drain_dlq(2).await);
    reasons.sort();
    assert_eq!(
        reasons,
        vec![
            ("garbage".to_string(), "not_json".to_string()),
            (poison.to_string(), "empty_tracking_id".to_string()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_worker_sweeps_its_dlq_on_its_own() {
    let p = common::pipeline("sweep-run", 30).await;
    let body = r#"{"tracking_id":"SW-3","status":"IN_TRANSIT"}"#;
    common::send_batch(&p.sqs, &p.queue_url, &[body.into()]).await;
    moved_by_sqs(&p, 1).await;
    let mut config = p.config(&testenv::moto().endpoint());
    config.dlq_sweep = Duration::from_secs(1);
    let sdk = testenv::moto().sdk_config().await;
    let worker = Worker::start(config, &sdk).await.expect("worker starts");
    let taken_back = common::poll_until(Duration::from_secs(20), || async {
        p.dlq_depth().await == (0, 0) && p.items_of("SW-3").await.len() == 1
    })
    .await;
    let report = worker.shutdown().await;
    assert!(taken_back, "the DLQ was never swept: {report:?}");
    assert_eq!((report.recovered, report.written), (1, 1), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_the_table_refuses_stays_visible_in_the_dlq_for_a_later_sweep() {
    let p = common::pipeline("sweep-denied", 30).await;
    let body = r#"{"tracking_id":"SW-4","status":"IN_TRANSIT","timestamp":"2026-12-01T12:00:00Z"}"#;
    common::send_batch(&p.sqs, &p.queue_url, &[body.into()]).await;
    moved_by_sqs(&p, 1).await;
    // IAM still propagating for the worker's role: every write is refused.
    let proxy = FaultProxy::start(&testenv::moto().endpoint());
    proxy.add_rule(Rule::error("dynamodb", "PutItem", "AccessDeniedException"));
    let ctx = p.ctx_at(&proxy.endpoint()).await;
    let refused = sweep(&ctx).await.expect("sweep");
    assert_eq!(counts(&refused), (0, 0, 0, 1, 1), "{refused:?}");
    assert_eq!(p.dlq_depth().await, (1, 0), "handed back at once");
    assert!(p.items_of("SW-4").await.is_empty());

    proxy.clear_rules();
    let later = sweep(&ctx).await.expect("sweep");
    assert_eq!(counts(&later), (1, 0, 0, 0, 0), "{later:?}");
    assert_eq!(p.dlq_depth().await, (0, 0));
    assert_eq!(p.items_of("SW-4").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_update_behind_many_dead_letters_is_found() {
    let p = common::pipeline("sweep-deep", 30).await;
    // 150 of the worker's own dead letters, older than the update SQS moves: queues hand out
    // their oldest messages first.
    let reason = MessageAttributeValue::builder()
        .data_type("String")
        .string_value("not_json")
        .build()
        .expect("attribute");
    for batch in 0..15 {
        let entries = (0..10)
            .map(|i| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(format!("garbage-{batch}-{i}"))
                    .message_attributes(dlq_attr::REASON, reason.clone())
                    .build()
                    .expect("entry")
            })
            .collect();
        p.sqs
            .send_message_batch()
            .queue_url(&p.dlq_url)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("fill DLQ");
    }
    let body = r#"{"tracking_id":"SW-5","status":"IN_TRANSIT","timestamp":"2026-12-01T13:00:00Z"}"#;
    common::send_batch(&p.sqs, &p.queue_url, &[body.into()]).await;
    moved_by_sqs(&p, 151).await;

    let swept = sweep(&p.ctx().await).await.expect("sweep");
    assert_eq!(counts(&swept), (1, 0, 0, 150, 0), "{swept:?}");
    assert_eq!(p.items_of("SW-5").await.len(), 1);
    assert_eq!(p.dlq_depth().await, (150, 0), "every lease handed back");
}

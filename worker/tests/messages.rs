//! Every message shape the original stack stored is stored; only the schedule's exact
//! message is maintenance; a key reused for other content is kept under a conflict key; a
//! number re-spelt by another serializer is a duplicate.

mod common;

use std::time::Duration;

use tracking_worker::Worker;
use tracking_worker::model::attr;

const TS: &str = "2026-11-20T12:00:00Z";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shapes_the_original_stored_are_accepted_and_garbage_is_not() {
    let p = common::pipeline("shapes", 30).await;
    let moto = testenv::moto();
    let long_id = format!("MS-LONG-{}", "L".repeat(2000));
    let long_event = "E".repeat(3000);
    let accepted: Vec<(String, String)> = [
        ("MS-no-ts", r#"{"tracking_id":"MS-no-ts","status":"PICKED_UP"}"#.to_string()),
        ("MS-null-ts", r#"{"tracking_id":"MS-null-ts","timestamp":null}"#.to_string()),
        ("MS-epoch", r#"{"tracking_id":"MS-epoch","timestamp":1795176000}"#.to_string()),
        ("MS-epoch-ms", r#"{"tracking_id":"MS-epoch-ms","timestamp":1795176000123}"#.to_string()),
        ("MS-naive", r#"{"tracking_id":"MS-naive","timestamp":"2026-11-20T12:00:00"}"#.to_string()),
        ("MS-hhmm", r#"{"tracking_id":"MS-hhmm","timestamp":"2026-11-20T13:00:00+0100"}"#.to_string()),
        (
            "MS-details",
            format!(r#"{{"tracking_id":"MS-details","timestamp":"{TS}","details":"fragile","location":{{"lat":53.8}},"carrier":["DHL",7]}}"#),
        ),
        (
            "MS-num-event",
            format!(r#"{{"tracking_id":"MS-num-event","timestamp":"{TS}","event_id":42}}"#),
        ),
        (
            "MS-empty-event",
            format!(r#"{{"tracking_id":"MS-empty-event","timestamp":"{TS}","event_id":""}}"#),
        ),
        (
            "MS-long-event",
            format!(r#"{{"tracking_id":"MS-long-event","timestamp":"{TS}","event_id":"{long_event}"}}"#),
        ),
        (
            long_id.as_str(),
            format!(r#"{{"tracking_id":"{long_id}","timestamp":"{TS}"}}"#),
        ),
        (
            "MS-maint-field",
            format!(r#"{{"tracking_id":"MS-maint-field","maintenance":"daily","timestamp":"{TS}"}}"#),
        ),
    ]
    .into_iter()
    .map(|(id, body)| (id.to_string(), body))
    .collect();
    let conflict = [
        format!(
            r#"{{"tracking_id":"MS-conflict","timestamp":"{TS}","event_id":"e1","status":"IN_TRANSIT"}}"#
        ),
        format!(
            r#"{{"tracking_id":"MS-conflict","timestamp":"{TS}","event_id":"e1","status":"DELIVERED"}}"#
        ),
    ];
    let respelt = ["1", "1.0", "1e0"].map(|n| {
        format!(r#"{{"tracking_id":"MS-num","timestamp":"{TS}","details":{{"weight":{n},"big":123456789012345678901234567890}}}}"#)
    });
    let poison = [
        (r#"{"maintenance":null}"#.to_string(), "missing_tracking_id"),
        (
            r#"{"tracking_id":"MS-bad","timestamp":"yesterday"}"#.to_string(),
            "bad_timestamp",
        ),
        (
            format!(
                r#"{{"tracking_id":"MS-deep","timestamp":"{TS}","details":{}1{}}}"#,
                "[".repeat(40),
                "]".repeat(40)
            ),
            "nesting_too_deep",
        ),
    ];
    let mut bodies: Vec<String> = accepted.iter().map(|(_, b)| b.clone()).collect();
    bodies.extend(conflict.iter().cloned());
    bodies.extend(respelt.iter().cloned());
    bodies.extend(poison.iter().map(|(b, _)| b.clone()));

    let mut config = p.config(&moto.endpoint());
    config.settings.concurrency = 1;
    let worker = Worker::start(config, &moto.sdk_config().await)
        .await
        .expect("worker starts");
    p.send_paced(&bodies, 50).await;
    common::wait_for("all messages settled", Duration::from_secs(120), || async {
        let r = worker.report();
        r.written + r.duplicates + r.dead_lettered >= bodies.len() as u64
    })
    .await;
    let report = worker.shutdown().await;

    for (id, body) in &accepted {
        let items = p.items_of(id).await;
        assert_eq!(items.len(), 1, "one item for {body:.120}");
    }
    for id in ["MS-no-ts", "MS-null-ts"] {
        let item = &p.items_of(id).await[0];
        assert_eq!(
            common::text(item, attr::TIME_SOURCE),
            Some("sqs_sent_timestamp")
        );
    }
    let epoch = &p.items_of("MS-epoch").await[0];
    assert!(
        common::text(epoch, attr::TIMESTAMP)
            .unwrap()
            .starts_with("2026-11-20T12:00:00.000Z#")
    );
    assert_eq!(common::text(epoch, attr::TIME_SOURCE), Some("producer"));
    let details = &p.items_of("MS-details").await[0];
    assert_eq!(common::text(details, attr::DETAILS), Some("fragile"));
    let num_event = &p.items_of("MS-num-event").await[0];
    assert!(
        common::text(num_event, attr::TIMESTAMP)
            .unwrap()
            .ends_with("#id:42")
    );

    // The schedule's claim was never taken by an update carrying a `maintenance` field.
    assert!(p.items_of("#MAINTENANCE").await.is_empty());

    // Same event_id and time, other content: both kept, the second under a conflict key.
    let conflicted = p.items_of("MS-conflict").await;
    assert_eq!(conflicted.len(), 2, "different content is never dropped");
    assert_eq!(
        conflicted
            .iter()
            .filter(|i| i.contains_key(attr::CONFLICTS_WITH))
            .count(),
        1
    );
    assert_eq!(report.key_conflicts, 1, "{report:?}");

    // 1, 1.0 and 1e0 are one number: one item, two duplicates.
    assert_eq!(p.items_of("MS-num").await.len(), 1);
    assert!(report.duplicates >= 2, "{report:?}");
    assert_eq!(report.written, accepted.len() as u64 + 2 + 1, "{report:?}");

    let dlq = common::dlq_reasons(&p.drain_dlq(poison.len()).await);
    let mut got: Vec<(String, String)> = dlq;
    got.sort();
    let mut want: Vec<(String, String)> = poison
        .iter()
        .map(|(b, r)| (b.clone(), r.to_string()))
        .collect();
    want.sort();
    assert_eq!(got, want, "garbage is dead-lettered once, with its reason");
    assert_eq!(p.depth().await, (0, 0));
}

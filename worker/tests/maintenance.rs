//! The schedule's maintenance message delivered to two replicas produces one summary, from
//! the counters kept while processing, and one set of DLQ_DETECTED items.

mod common;

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{Duration as Days, Utc};
use tracking_worker::Worker;
use tracking_worker::contract::MAINTENANCE_MESSAGE_BODY;
use tracking_worker::maintenance::{
    COUNT_PREFIX, PK_CLAIM, PK_DLQ, PK_STATS, PK_SUMMARY, STATUS_DLQ_DETECTED, parse_counts,
};
use tracking_worker::model::attr;
use tracking_worker::synth::{Spec, plan};

fn pk_items<'a>(
    items: &'a [std::collections::HashMap<String, AttributeValue>],
    pk: &str,
) -> Vec<&'a std::collections::HashMap<String, AttributeValue>> {
    items
        .iter()
        .filter(|i| {
            i.get(attr::TRACKING_ID)
                .and_then(|v| v.as_s().ok())
                .is_some_and(|s| s == pk)
        })
        .collect()
}

fn n(item: &std::collections::HashMap<String, AttributeValue>, name: &str) -> u64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn maintenance_to_two_replicas_writes_one_summary() {
    let p = common::pipeline("maint", 30).await;
    let moto = testenv::moto();
    let sdk = moto.sdk_config().await;
    let plan = plan(&Spec {
        count: 60,
        duplicate_percent: 10.0,
        poison_percent: 5.0,
        seed: 11,
        prefix: "MT".into(),
    });
    let total = plan.bodies.len() as u64;
    let a = Worker::start(p.config(&moto.endpoint()), &sdk)
        .await
        .expect("worker a");
    // Half a flush period apart: both replicas ADD into the same day-counter item, which
    // DynamoDB applies atomically but moto's threaded server does not (two UpdateItems on one
    // item at the same moment lose one of them). Started together, their flush timers line
    // up and this test failed about once in three loaded runs for moto's reason, not ours.
    tokio::time::sleep(tracking_worker::maintenance::FLUSH_EVERY / 2).await;
    let b = Worker::start(p.config(&moto.endpoint()), &sdk)
        .await
        .expect("worker b");
    p.send_paced(&plan.bodies, 50).await;
    common::wait_for("updates settled", Duration::from_secs(300), || async {
        let (ra, rb) = (a.report(), b.report());
        ra.written
            + ra.duplicates
            + ra.dead_lettered
            + rb.written
            + rb.duplicates
            + rb.dead_lettered
            >= total
    })
    .await;
    // Both replicas flush their day counters within seconds; the real schedule runs an hour
    // after midnight, long after that.
    let today = Utc::now().date_naive().to_string();
    let last_seen = std::sync::Mutex::new(None);
    let flushed = common::poll_until(Duration::from_secs(120), || async {
        let items = p.items().await;
        let counts = pk_items(&items, PK_STATS)
            .iter()
            .find(|i| {
                i.get(attr::TIMESTAMP)
                    .and_then(|v| v.as_s().ok())
                    .is_some_and(|s| *s == today)
            })
            .map(|i| parse_counts(i));
        let done = counts
            .as_ref()
            .is_some_and(|c| c.statuses.values().sum::<u64>() == 60 && c.dead_lettered == 3);
        *last_seen.lock().unwrap() = counts;
        done
    })
    .await;
    assert!(
        flushed,
        "day counters never reached 60 updates and 3 dead-lettered; last seen: {:?}",
        last_seen.lock().unwrap()
    );

    // The schedule fires "tomorrow" at 01:00, so the summary covers today. Delivered twice.
    let tomorrow = (Utc::now() + Days::days(1)).date_naive();
    let body = MAINTENANCE_MESSAGE_BODY.replace(
        "<aws.scheduler.scheduled-time>",
        &format!("{tomorrow}T01:00:00Z"),
    );
    p.send_paced(&[body.clone(), body], 50).await;
    common::wait_for("maintenance settled", Duration::from_secs(120), || async {
        p.depth().await == (0, 0) && {
            let text = a.metrics().encode() + &b.metrics().encode();
            text.matches("maintenance_runs_total{result=").count() >= 1
                && sum_metric(&text, "tracking_worker_maintenance_runs_total") >= 2
        }
    })
    .await;
    let text = a.metrics().encode() + &b.metrics().encode();
    a.shutdown().await;
    b.shutdown().await;

    assert_eq!(
        sum_metric(
            &text,
            "tracking_worker_maintenance_runs_total{result=\"ran\"}"
        ),
        1,
        "{text}"
    );
    assert_eq!(
        sum_metric(
            &text,
            "tracking_worker_maintenance_runs_total{result=\"skipped\"}"
        ),
        1,
        "{text}"
    );
    let items = p.items().await;
    let summaries = pk_items(&items, PK_SUMMARY);
    assert_eq!(summaries.len(), 1, "one summary: {summaries:?}");
    let summary = summaries[0];
    assert_eq!(
        summary.get(attr::TIMESTAMP).and_then(|v| v.as_s().ok()),
        Some(&today)
    );
    assert_eq!(n(summary, "total_written"), 60);
    assert_eq!(n(summary, "dead_lettered"), 3);
    assert!(n(summary, "duplicates") >= 6);
    assert_eq!(n(summary, "dlq_depth"), 3);
    let counts = summary
        .get("counts")
        .and_then(|v| v.as_m().ok())
        .expect("counts map");
    let per_status: u64 = counts
        .values()
        .filter_map(|v| v.as_n().ok()?.parse::<u64>().ok())
        .sum();
    assert_eq!(per_status, 60);
    for (status, expected) in &plan.summary.by_status {
        assert_eq!(
            counts.get(status).and_then(|v| v.as_n().ok()),
            Some(&expected.to_string()),
            "{status}"
        );
    }
    let dlq = pk_items(&items, PK_DLQ);
    assert_eq!(dlq.len(), 3, "one DLQ_DETECTED item per DLQ message");
    assert!(dlq.iter().all(|i| {
        i.get(attr::STATUS)
            .and_then(|v| v.as_s().ok())
            .is_some_and(|s| s == STATUS_DLQ_DETECTED)
    }));
    let claims = pk_items(&items, PK_CLAIM);
    assert_eq!(claims.len(), 1);
    assert_eq!(
        claims[0]
            .get("state")
            .and_then(|v| v.as_s().ok())
            .map(String::as_str),
        Some("done")
    );
}

/// Sums every sample line starting with `prefix` in Prometheus text.
fn sum_metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn a_retried_counter_flush_counts_once() {
    use tracking_worker::store::Store;
    let p = common::pipeline("flush", 30).await;
    let store = Store::new(p.ddb.clone(), p.table.clone());
    let counts = vec![(format!("{COUNT_PREFIX}DELIVERED"), 5)];
    let read = || async {
        let items = p.items().await;
        pk_items(&items, PK_STATS)
            .first()
            .map(|i| parse_counts(i))
            .unwrap_or_default()
    };
    store
        .add_counts(PK_STATS, "2026-11-21", &counts, None, ("flush:a", "t1"))
        .await
        .unwrap();
    // The same flush again (its answer was lost and it is retried): refused, counted once.
    store
        .add_counts(PK_STATS, "2026-11-21", &counts, None, ("flush:a", "t1"))
        .await
        .unwrap();
    assert_eq!(read().await.statuses["DELIVERED"], 5);
    // A new flush of this replica, and one of another replica, both add.
    store
        .add_counts(PK_STATS, "2026-11-21", &counts, None, ("flush:a", "t2"))
        .await
        .unwrap();
    store
        .add_counts(PK_STATS, "2026-11-21", &counts, None, ("flush:b", "t1"))
        .await
        .unwrap();
    assert_eq!(read().await.statuses["DELIVERED"], 15);
}

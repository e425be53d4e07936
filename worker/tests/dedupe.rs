//! Redeliveries and producer retries map to the same item: exactly one item per update.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use tracking_worker::Worker;
use tracking_worker::synth::{Spec, plan};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_updates_with_duplicates_are_written_once_each() {
    let p = common::pipeline("dedupe", 30).await;
    let moto = testenv::moto();
    let plan = plan(&Spec {
        count: 1000,
        duplicate_percent: 10.0,
        poison_percent: 0.0,
        seed: 42,
        prefix: "DD".into(),
    });
    assert_eq!(plan.bodies.len(), 1100);

    let worker = Worker::start(p.config(&moto.endpoint()), &moto.sdk_config().await)
        .await
        .expect("worker starts");
    p.send_paced(&plan.bodies, 50).await;
    common::wait_for("all messages settled", Duration::from_secs(600), || async {
        let r = worker.report();
        r.written + r.duplicates >= 1100
    })
    .await;
    let report = worker.shutdown().await;

    assert_eq!(report.written, 1000, "{report:?}");
    // Every repeat is counted; SQS (and moto) may add redeliveries of its own on top of ours.
    assert!(report.duplicates >= 100, "{report:?}");
    // A message moto delivered a second time (two concurrent long polls) is requeued: its
    // copy is received and counted again.
    assert_eq!(
        report.received,
        report.written + report.duplicates + report.requeued,
        "{report:?}"
    );
    assert_eq!(report.dead_lettered, 0, "{report:?}");
    let keys = p.update_keys().await;
    assert_eq!(keys.len(), 1000, "one item per distinct update");
    let keys: BTreeSet<_> = keys.into_iter().collect();
    assert_eq!(keys, common::expected_keys(&plan.distinct));
    assert_eq!(p.depth().await, (0, 0), "every message deleted");
    assert_eq!(p.dlq_depth().await, (0, 0), "nothing dead-lettered");
}

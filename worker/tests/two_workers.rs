//! Two workers on one queue: no duplicates in the table, every repeat counted once overall.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use tracking_worker::Worker;
use tracking_worker::synth::{Spec, plan};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_write_each_update_once() {
    let p = common::pipeline("two", 30).await;
    let moto = testenv::moto();
    let plan = plan(&Spec {
        count: 500,
        duplicate_percent: 10.0,
        poison_percent: 0.0,
        seed: 5,
        prefix: "TW".into(),
    });
    let total = plan.bodies.len() as u64;
    let sdk = moto.sdk_config().await;
    let a = Worker::start(p.config(&moto.endpoint()), &sdk)
        .await
        .expect("worker a");
    let b = Worker::start(p.config(&moto.endpoint()), &sdk)
        .await
        .expect("worker b");
    p.send_paced(&plan.bodies, 50).await;
    common::wait_for("all messages settled", Duration::from_secs(600), || async {
        let (ra, rb) = (a.report(), b.report());
        // A message moto hands to both workers at once may be requeued by the one that sees
        // it a second time, and its copy processed after the original: settled means every
        // message processed and none left in the queue.
        ra.written + ra.duplicates + rb.written + rb.duplicates >= total
            && p.depth().await == (0, 0)
    })
    .await;
    let (ra, rb) = (a.shutdown().await, b.shutdown().await);

    assert!(
        ra.written > 0 && rb.written > 0,
        "both did work: {ra:?} {rb:?}"
    );
    assert_eq!(ra.written + rb.written, 500, "{ra:?} {rb:?}");
    assert!(ra.duplicates + rb.duplicates >= 50, "{ra:?} {rb:?}");
    let keys = p.update_keys().await;
    assert_eq!(keys.len(), 500);
    assert_eq!(
        keys.into_iter().collect::<BTreeSet<_>>(),
        common::expected_keys(&plan.distinct)
    );
    assert_eq!(p.depth().await, (0, 0));
}

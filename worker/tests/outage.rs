//! A backend outage mid-run: every valid update lands exactly once afterwards, none in the DLQ.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use tracking_worker::Worker;
use tracking_worker::synth::{Spec, plan};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outage_delays_but_never_dead_letters_or_duplicates() {
    let p = common::pipeline("outage", 30).await;
    let moto = testenv::moto();
    let proxy = testenv::FlakyProxy::start(&moto.endpoint());
    let plan = plan(&Spec {
        count: 400,
        duplicate_percent: 5.0,
        poison_percent: 0.0,
        seed: 9,
        prefix: "OU".into(),
    });
    let total = plan.bodies.len() as u64;

    // The worker talks to moto through the proxy; the test talks to moto directly.
    let worker = Worker::start(
        p.config(&proxy.endpoint()),
        &testenv::sdk_config_for(&proxy.endpoint()).await,
    )
    .await
    .expect("worker starts");
    let sender = {
        let bodies = plan.bodies.clone();
        let p = p.clone();
        tokio::spawn(async move { p.send_paced(&bodies, 50).await })
    };
    common::wait_for("a quarter written", Duration::from_secs(300), || async {
        worker.report().written >= 100
    })
    .await;
    proxy.set_down(true);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let during = worker.report();
    proxy.set_down(false);
    sender.await.expect("sender");
    // Deletes the outage cut off leave written messages in flight; they come back after the
    // visibility timeout and are recognised as duplicates. Settled means the counters cover
    // every message sent and the queue is empty, not only the first.
    common::wait_for("all messages settled", Duration::from_secs(600), || async {
        let r = worker.report();
        r.written + r.duplicates >= total && p.depth().await == (0, 0)
    })
    .await;
    let report = worker.shutdown().await;

    assert!(
        during.throttles > 0,
        "the outage was seen and retried: {during:?}"
    );
    // A write whose answer the outage cut off is recognised on retry by its write token and
    // counted as written (not as a duplicate), so written is at most the 400 distinct
    // updates and every message is accounted for; the table is the proof.
    assert!(
        report.written <= 400 && report.written + report.duplicates >= total,
        "{report:?}"
    );
    assert_eq!(report.dead_lettered, 0, "{report:?}");
    let keys = p.update_keys().await;
    assert_eq!(keys.len(), 400, "exactly once");
    assert_eq!(
        keys.into_iter().collect::<BTreeSet<_>>(),
        common::expected_keys(&plan.distinct)
    );
    assert_eq!(p.dlq_depth().await, (0, 0), "no valid update in the DLQ");
    assert_eq!(p.depth().await, (0, 0));
}

//! An environment error (here: the table does not exist yet, as while the operator is still
//! creating it; AccessDenied while IAM propagates behaves the same) never dead-letters a
//! valid update: the batch is held, the worker reports not-ready, and everything is written
//! once the environment is fixed.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use tracking_worker::Worker;

fn readyz(addr: std::net::SocketAddr) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_table_holds_the_batch_instead_of_dead_lettering_it() {
    let p = common::pipeline("envfail", 30).await;
    let moto = testenv::moto();
    let late_table = format!("{}-late", p.table);
    let mut config = p.config(&moto.endpoint());
    config.settings.table_name = late_table.clone();
    let worker = Worker::start(config, &moto.sdk_config().await)
        .await
        .expect("worker starts");
    let bodies: Vec<String> = (0..5)
        .map(|n| format!(r#"{{"tracking_id":"EV-{n}","timestamp":"2026-11-20T12:00:00Z"}}"#))
        .collect();
    p.send_paced(&bodies, 50).await;

    common::wait_for(
        "the environment error seen",
        Duration::from_secs(60),
        || async { worker.report().environment_errors >= 3 },
    )
    .await;
    assert!(
        readyz(worker.http_addr).contains("503"),
        "not ready while the table is missing"
    );
    let during = worker.report();
    assert_eq!(
        (during.written, during.failed, during.dead_lettered),
        (0, 0, 0),
        "{during:?}"
    );

    common::create_table(&p.ddb, &late_table).await;
    common::wait_for("all written", Duration::from_secs(90), || async {
        worker.report().written >= 5
    })
    .await;
    assert!(readyz(worker.http_addr).contains("200"), "ready again");
    let report = worker.shutdown().await;
    assert_eq!(report.written, 5, "{report:?}");
    assert_eq!(report.dead_lettered, 0, "{report:?}");
    assert_eq!(p.dlq_depth().await, (0, 0), "no valid update in the DLQ");
    assert_eq!(p.depth().await, (0, 0));
}

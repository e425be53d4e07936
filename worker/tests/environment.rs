//! An environment error never dead-letters a valid update: the batch is held, the worker
//! reports not-ready, and everything is written once the environment is fixed. A real missing
//! table (as while the operator is still creating it), and, through the fault layer, the
//! answers AWS gives while IAM propagates, after credentials expire or a KMS key is disabled,
//! on `PutItem` and on `TransactWriteItems`.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use testenv::faults::{FaultProxy, Rule};
use tracking_worker::Worker;
use tracking_worker::config::WriteMode;

/// DynamoDB's answers when the environment, not the request, is at fault.
const ENVIRONMENT_CODES: &[&str] = &[
    "AccessDeniedException",
    "ExpiredTokenException",
    "UnrecognizedClientException",
    "KMSInvalidStateException",
    "ResourceNotFoundException",
];

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

/// Runs a worker through `proxy` on five updates, with `rules` installed before they are
/// sent; returns the report and how long the writes took.
async fn hold_through(
    prefix: &str,
    mode: WriteMode,
    rules: Vec<Rule>,
) -> (
    common::Pipeline,
    FaultProxy,
    tracking_worker::metrics::Report,
    Duration,
) {
    let p = common::pipeline(prefix, 30).await;
    let proxy = FaultProxy::start(&testenv::moto().endpoint());
    let bodies: Vec<String> = (0..5)
        .map(|n| format!(r#"{{"tracking_id":"{prefix}-{n}","timestamp":"2026-11-20T12:00:00Z"}}"#))
        .collect();
    // Sent before the worker starts, so they arrive as one batch (one transaction).
    p.send_paced(&bodies, 50).await;
    for rule in rules {
        proxy.add_rule(rule);
    }
    let mut config = p.config(&proxy.endpoint());
    config.write_mode = mode;
    // One receiver: moto's transactions are not safe next to concurrent writes.
    config.settings.concurrency = 1;
    let started = Instant::now();
    let worker = Worker::start(config, &proxy.sdk_config().await)
        .await
        .expect("worker starts");
    common::wait_for("all written", Duration::from_secs(60), || async {
        let r = worker.report();
        r.written + r.duplicates + r.failed + r.dead_lettered >= 5
    })
    .await;
    let took = started.elapsed();
    (p, proxy, worker.shutdown().await, took)
}

/// What must hold after any environment error: written once, never returned, never
/// dead-lettered.
async fn assert_held(p: &common::Pipeline, report: &tracking_worker::metrics::Report) {
    assert_eq!(
        (
            report.written,
            report.duplicates,
            report.failed,
            report.dead_lettered
        ),
        (5, 0, 0, 0),
        "{report:?}"
    );
    assert_eq!(
        report.received, 5,
        "each message received once: the batch was held, not returned: {report:?}"
    );
    assert_eq!(p.update_keys().await.len(), 5);
    assert_eq!(p.dlq_depth().await, (0, 0), "no valid update in the DLQ");
    assert_eq!(p.depth().await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_errors_on_put_item_hold_and_retry_each_update() {
    // Each update meets another code, twice.
    let rules = ENVIRONMENT_CODES
        .iter()
        .enumerate()
        .map(|(n, code)| {
            Rule::error("dynamodb", "PutItem", code)
                .when_body_contains(&format!("ENVPUT-{n}\""))
                .times(2)
        })
        .collect();
    let (p, proxy, report, took) = hold_through("ENVPUT", WriteMode::Put, rules).await;
    assert_eq!(
        proxy.faulted("dynamodb", "PutItem"),
        10,
        "every rule was met"
    );
    assert!(report.environment_errors >= 10, "{report:?}");
    // Two environment retries wait at least 250 ms + 500 ms: a backoff, not a hot loop.
    assert!(took >= Duration::from_millis(750), "retried after {took:?}");
    assert_held(&p, &report).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_errors_on_transact_write_items_hold_the_whole_batch() {
    // The batch's transaction meets every code once, in turn.
    let rules = ENVIRONMENT_CODES
        .iter()
        .map(|code| Rule::error("dynamodb", "TransactWriteItems", code).times(1))
        .collect();
    let (p, proxy, report, took) = hold_through("ENVTX", WriteMode::Transaction, rules).await;
    let faulted = proxy.faulted("dynamodb", "TransactWriteItems");
    assert_eq!(
        faulted,
        ENVIRONMENT_CODES.len() as u64,
        "every rule was met"
    );
    // Retried as a transaction: an environment error is not a reason to split the batch.
    assert_eq!(
        proxy.calls("dynamodb", "TransactWriteItems"),
        faulted + 1,
        "{:?}",
        proxy.call_counts()
    );
    assert_eq!(
        proxy.calls("dynamodb", "PutItem"),
        0,
        "{:?}",
        proxy.call_counts()
    );
    // Five environment retries wait at least 0.25 + 0.5 + 1 + 2 + 4 s.
    assert!(
        took >= Duration::from_millis(7_750),
        "retried after {took:?}"
    );
    assert_held(&p, &report).await;
}

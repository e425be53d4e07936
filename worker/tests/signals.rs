//! The worker binary under SIGTERM (clean drain) and SIGKILL (restart: no loss, no duplicate).

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tracking_worker::metrics::Report;
use tracking_worker::synth::{Spec, plan};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn spawn_worker(p: &common::Pipeline, port: u16) -> Child {
    let mut settings = p.settings(&testenv::moto().endpoint());
    settings.metrics_addr = format!("127.0.0.1:{port}");
    settings.concurrency = 2;
    Command::new(env!("CARGO_BIN_EXE_tracking-worker"))
        .envs(settings.to_env())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("TRACKING_DRAIN_SECONDS", "20")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start tracking-worker")
}

/// GET /metrics; empty until the server is up.
fn scrape(port: u16) -> String {
    get(port, "/metrics")
}

/// The raw HTTP/1.0 response (status line included); empty if nothing listens.
fn get(port: u16, path: &str) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes());
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn metric(text: &str, name: &str) -> i64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Waits until the worker is mid-batch (messages in flight) with some work already done.
async fn wait_mid_batch(port: u16) {
    common::wait_for("the worker mid-batch", Duration::from_secs(120), || async {
        let text = scrape(port);
        metric(&text, "tracking_worker_updates_written_total") >= 30
            && metric(&text, "tracking_worker_messages_in_flight") > 0
    })
    .await;
}

async fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "worker did not exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn report(child: &mut Child) -> Report {
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read stdout");
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("report {out:?}: {e}"));
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    Report {
        received: n("received"),
        written: n("written"),
        duplicates: n("duplicates"),
        requeued: n("requeued"),
        recovered: n("recovered"),
        dead_lettered: n("dead_lettered"),
        failed: n("failed"),
        throttles: n("throttles"),
        sqs_calls: n("sqs_calls"),
        dynamodb_calls: n("dynamodb_calls"),
        key_conflicts: n("key_conflicts"),
        environment_errors: n("environment_errors"),
    }
}

/// Runs a fresh worker until the queue is empty and the table holds `expected` updates.
async fn finish_with_new_worker(p: &common::Pipeline, expected: usize) -> Report {
    let port = free_port();
    let mut child = spawn_worker(p, port);
    common::wait_for("the rest drained", Duration::from_secs(300), || async {
        p.depth().await == (0, 0) && p.update_keys().await.len() >= expected
    })
    .await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(
        wait_exit(&mut child, Duration::from_secs(40))
            .await
            .success()
    );
    report(&mut child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_batch_drains_cleanly() {
    let p = common::pipeline("term", 60).await;
    let plan = plan(&Spec {
        count: 200,
        duplicate_percent: 0.0,
        poison_percent: 0.0,
        seed: 21,
        prefix: "ST".into(),
    });
    p.send_paced(&plan.bodies, 1_000).await;
    let port = free_port();
    let mut child = spawn_worker(&p, port);
    wait_mid_batch(port).await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    let status = wait_exit(&mut child, Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");
    let first = report(&mut child);
    assert_eq!(
        first.received,
        first.written + first.duplicates + first.dead_lettered,
        "all in-flight settled: {first:?}"
    );
    let (visible, in_flight) = p.depth().await;
    assert_eq!(in_flight, 0, "nothing left in flight after the drain");
    assert_eq!(visible, 200 - first.received, "the rest untouched");

    let second = finish_with_new_worker(&p, 200).await;
    assert_eq!(first.written + second.written, 200, "{first:?} {second:?}");
    let keys: BTreeSet<_> = p.update_keys().await.into_iter().collect();
    assert_eq!(keys, common::expected_keys(&plan.distinct));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_long_polling_strands_nothing() {
    // A scale-in of an idle worker: SIGTERM while its receivers long-poll an empty queue,
    // then messages arrive before those polls end. The server hands them to the polls
    // whether or not the client still listens, so a worker that dropped its polls would
    // leave them invisible for a visibility timeout (received twice). It must wait for
    // its polls and settle what they bring.
    let p = common::pipeline("idleterm", 600).await;
    let plan = plan(&Spec {
        count: 10,
        duplicate_percent: 0.0,
        poison_percent: 0.0,
        seed: 23,
        prefix: "IT".into(),
    });
    let port = free_port();
    let mut child = spawn_worker(&p, port);
    common::wait_for("the worker polling", Duration::from_secs(60), || async {
        !scrape(port).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    // Inside the poll under way (2 s at most), which the worker waits for.
    tokio::time::sleep(Duration::from_millis(500)).await;
    p.send_paced(&plan.bodies, 1_000).await;
    let status = wait_exit(&mut child, Duration::from_secs(40)).await;
    assert!(status.success(), "{status}");
    let r = report(&mut child);
    let (visible, in_flight) = p.depth().await;
    assert_eq!(in_flight, 0, "nothing stranded in flight: {r:?}");
    assert_eq!(r.received, r.written, "{r:?}");
    assert_eq!(visible + r.written, 10, "the rest still visible: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_while_long_polling_takes_nothing_sent_after_its_death() {
    // The server hands a message to a waiting long poll whether or not its caller is alive:
    // the polls of a SIGKILLed replica take what arrives until they end, each a receive that
    // counts towards `maxReceiveCount` and hides the message for a visibility timeout. With
    // replicas killed every few seconds, a message in a quiet queue could be taken by dead
    // polls three times in a row and be moved to the DLQ by the redrive policy (the soak
    // benchmark). The polls must end within seconds of the replica.
    let p = common::pipeline("killpoll", 600).await;
    let port = free_port();
    let mut child = spawn_worker(&p, port);
    common::wait_for("the worker polling", Duration::from_secs(60), || async {
        !scrape(port).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let bodies: Vec<String> = (0..10)
        .map(|n| format!(r#"{{"tracking_id":"KP-{n}","timestamp":"2026-11-20T12:00:00Z"}}"#))
        .collect();
    p.send_paced(&bodies, 1_000).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        p.depth().await,
        (10, 0),
        "messages sent 3 s after the replica died were taken by its polls (visible, in flight)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_then_restart_loses_and_duplicates_nothing() {
    // The shortest visibility timeout the worker accepts, so the killed worker's in-flight
    // messages come back soon.
    let p = common::pipeline("kill", 30).await;
    let plan = plan(&Spec {
        count: 200,
        duplicate_percent: 0.0,
        poison_percent: 0.0,
        seed: 22,
        prefix: "SK".into(),
    });
    p.send_paced(&plan.bodies, 1_000).await;
    let port = free_port();
    let mut child = spawn_worker(&p, port);
    wait_mid_batch(port).await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    // A PutItem the killed worker had already sent may still be applied by moto after the
    // process is gone; let it land so the count below is final.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let written_before = p.update_keys().await.len();
    assert!(written_before < 200, "killed before the end");

    let second = finish_with_new_worker(&p, 200).await;
    let keys = p.update_keys().await;
    assert_eq!(keys.len(), 200, "no loss, no duplicate item");
    assert_eq!(
        keys.into_iter().collect::<BTreeSet<_>>(),
        common::expected_keys(&plan.distinct)
    );
    assert_eq!(second.written as usize, 200 - written_before, "{second:?}");
    assert_eq!(p.dlq_depth().await, (0, 0));
}

#[test]
fn invalid_configuration_is_refused_naming_the_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_tracking-worker"))
        .env_clear()
        .env("TRACKING_QUEUE_URL", "http://127.0.0.1:1/q")
        .env("TRACKING_DEAD_LETTER_QUEUE_URL", "http://127.0.0.1:1/dlq")
        .env("TRACKING_TABLE_NAME", "t")
        .env("TRACKING_PIPELINE", "ns/p")
        .env("TRACKING_BATCH_SIZE", "lots")
        .output()
        .expect("run tracking-worker");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TRACKING_BATCH_SIZE"), "{stderr}");
}

#[test]
fn a_visibility_timeout_below_30_seconds_is_refused_at_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_tracking-worker"))
        .env_clear()
        .env("TRACKING_QUEUE_URL", "http://127.0.0.1:1/q")
        .env("TRACKING_DEAD_LETTER_QUEUE_URL", "http://127.0.0.1:1/dlq")
        .env("TRACKING_TABLE_NAME", "t")
        .env("TRACKING_PIPELINE", "ns/p")
        .env("TRACKING_VISIBILITY_TIMEOUT_SECONDS", "10")
        .output()
        .expect("run tracking-worker");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TRACKING_VISIBILITY_TIMEOUT_SECONDS"),
        "{stderr}"
    );
}

//! The operator benchmark (prints figures, asserts none of them): run with
//! `bench/operator/run.sh` or
//! `cargo test --test controller_bench -- --ignored --nocapture`.
//!
//! It runs the real `tracking-operator run` binary against testenv's API server and moto,
//! reads AWS call counts from its /metrics, and its peak RSS from /proc.

mod controller_support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use controller_support::*;
use futures::future::join_all;
use serde_json::json;
use tracking_operator::aws::calls::is_write;

struct OperatorProcess {
    child: Child,
    port: u16,
}

impl OperatorProcess {
    fn start(namespace: &str, resync: &str, log: &str) -> Self {
        let kube = testenv::kube();
        let port = testenv::process::free_port();
        let log = std::fs::File::create(log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_tracking-operator"))
            .args(["run", "--namespace", namespace, "--resync-interval", resync])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(["--concurrency", "32"])
            .env("KUBECONFIG", kube.kubeconfig_path())
            .env("AWS_ENDPOINT_URL", testenv::moto().endpoint())
            .env("AWS_REGION", testenv::REGION)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env(
                "RUST_LOG",
                "info,kube=warn,aws_smithy_runtime=warn,aws_config=warn",
            )
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start tracking-operator");
        OperatorProcess { child, port }
    }

    fn metrics(&self) -> String {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// (reads, writes, reconciles, per-operation writes) so far.
    fn counts(&self) -> (u64, u64, u64, BTreeMap<String, u64>) {
        let (mut reads, mut writes, mut reconciles) = (0, 0, 0);
        let mut per_write = BTreeMap::new();
        for line in self.metrics().lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let value: u64 = value.parse::<f64>().map(|v| v as u64).unwrap_or(0);
            if series.starts_with("tracking_operator_aws_api_calls_total{") {
                let operation = series
                    .split("operation=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("");
                let service = series
                    .split("service=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("");
                if is_write(operation) {
                    writes += value;
                    *per_write
                        .entry(format!("{service}:{operation}"))
                        .or_insert(0) += value;
                } else {
                    reads += value;
                }
            } else if series.starts_with("controller_runtime_reconcile_total{") {
                reconciles += value;
            }
        }
        (reads, writes, reconciles, per_write)
    }

    /// Peak resident set size in MiB (VmHWM).
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
#[ignore = "benchmark: prints figures; run with --ignored --nocapture"]
async fn operator_benchmark() {
    let kube = testenv::kube();
    let pipelines_count: usize = std::env::var("BENCH_PIPELINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = std::env::temp_dir();

    // One pipeline: apply → Ready, calls to create, calls per steady-state resync.
    let ns = kube.namespace("bench-one").await;
    let op = OperatorProcess::start(&ns, "10s", &dir.join("bench-one.log").to_string_lossy());
    let api = pipelines(&ns).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (r0, w0, _, _) = op.counts();
    let start = Instant::now();
    create(&api, "one", json!({})).await;
    wait_ready(&api, "one").await;
    let to_ready = start.elapsed();
    let (r1, w1, c1, writes_create) = op.counts();
    // Let a few resyncs pass, then measure a window of whole resyncs.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let (r2, w2, c2, _) = op.counts();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (r3, w3, c3, per_write) = op.counts();
    let resyncs = c3.saturating_sub(c2).max(1);
    println!("== one pipeline ==");
    println!("apply -> Ready: {:.2} s", to_ready.as_secs_f64());
    println!(
        "AWS calls to create: {} ({} reads, {} writes)",
        (r1 - r0) + (w1 - w0),
        r1 - r0,
        w1 - w0
    );
    println!("  writes by operation: {writes_create:?}");
    println!("reconciles until Ready: {c1}");
    println!(
        "steady-state resync: {:.1} AWS calls per resync ({} reads, {} writes over {resyncs} resyncs)",
        (r3 - r2 + w3 - w2) as f64 / resyncs as f64,
        r3 - r2,
        w3 - w2
    );
    if w3 != w2 {
        println!("  steady-state writes: {per_write:?}");
    }
    println!("operator peak RSS: {:.1} MiB", op.peak_rss_mib());
    drop(op);

    // Many pipelines at once.
    let ns = kube.namespace("bench-many").await;
    let op = OperatorProcess::start(&ns, "5m", &dir.join("bench-many.log").to_string_lossy());
    let api = pipelines(&ns).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (r0, w0, _, _) = op.counts();
    let start = Instant::now();
    join_all((0..pipelines_count).map(|i| {
        let api = api.clone();
        async move { create(&api, &format!("p{i:03}"), json!({})).await }
    }))
    .await;
    let created = start.elapsed();
    let mut peak = 0.0f64;
    loop {
        peak = peak.max(op.peak_rss_mib());
        let list = api.list(&Default::default()).await.expect("list");
        let ready = list.items.iter().filter(|p| is(p, "Ready", "True")).count();
        if ready == pipelines_count {
            break;
        }
        if start.elapsed() > Duration::from_secs(3600) {
            println!("gave up after 1 h with {ready}/{pipelines_count} Ready");
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let all_ready = start.elapsed();
    let (r1, w1, c1, _) = op.counts();
    peak = peak.max(op.peak_rss_mib());
    println!("== {pipelines_count} pipelines at once ==");
    println!(
        "created in {:.1} s; all Ready after {:.1} s",
        created.as_secs_f64(),
        all_ready.as_secs_f64()
    );
    println!(
        "AWS calls: {} ({:.1} per pipeline; {} writes), reconciles: {c1}",
        (r1 - r0) + (w1 - w0),
        ((r1 - r0) + (w1 - w0)) as f64 / pipelines_count as f64,
        w1 - w0
    );
    println!("operator peak RSS: {peak:.1} MiB");
}

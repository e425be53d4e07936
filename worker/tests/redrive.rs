//! `trackctl dlq redrive`, killed half way and run again, against moto and a running worker:
//! every valid message is written exactly once, every poison message is back in the DLQ once
//! with its reason, nothing is lost. `trackctl dlq list` looks without consuming.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tracking_worker::Worker;
use tracking_worker::consumer::dlq_attr;
use tracking_worker::synth::{POISON_KINDS, Spec, plan, poison_body};

fn trackctl(p: &common::Pipeline, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trackctl"));
    cmd.args(args)
        .args(["--queue-url", &p.queue_url])
        .args(["--dead-letter-queue-url", &p.dlq_url])
        .env("AWS_ENDPOINT_URL", testenv::moto().endpoint())
        .env("AWS_REGION", testenv::REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_PROFILE");
    cmd
}

/// Runs the redrive and SIGKILLs it once its progress shows `kill_after` messages moved.
fn run_and_kill(p: &common::Pipeline, args: &[&str], kill_after: u64) -> Vec<String> {
    let mut child: Child = trackctl(p, args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("trackctl starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut seen = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("stderr line");
        let done = line
            .split_once("] ")
            .and_then(|(_, rest)| rest.split('/').next())
            .and_then(|n| n.parse::<u64>().ok());
        seen.push(line);
        if done.is_some_and(|d| d >= kill_after) {
            child.kill().expect("SIGKILL");
            break;
        }
    }
    let status = child.wait().expect("wait");
    assert!(
        !status.success(),
        "trackctl finished before it could be killed: {seen:?}"
    );
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redrive_killed_half_way_and_run_again_moves_every_message_exactly_once() {
    let p = common::pipeline("redrive", 30).await;
    let moto = testenv::moto();
    let valid = plan(&Spec {
        count: 30,
        duplicate_percent: 0.0,
        poison_percent: 0.0,
        seed: 13,
        prefix: "RD".into(),
    });
    let poison: Vec<String> = POISON_KINDS
        .iter()
        .enumerate()
        .map(|(n, kind)| poison_body(kind, "RD", n))
        .collect();

    // The state a producer bug plus an outage leave behind: the valid updates reached the DLQ
    // the way SQS's redrive puts them there after maxReceiveCount failed receives (no reason
    // attribute; here sent straight to the DLQ to skip three visibility timeouts), and the
    // poison was dead-lettered by a worker, with its reason.
    for body in &valid.bodies {
        p.sqs
            .send_message()
            .queue_url(&p.dlq_url)
            .message_body(body)
            .send()
            .await
            .expect("fill DLQ");
    }
    let mut config = p.config(&moto.endpoint());
    // One receiver: moto can hand a message to two concurrent long-polls (see poison.rs).
    config.settings.concurrency = 1;
    // The updates stand for what SQS moved and a human redrives; the worker's own sweep,
    // which would take them back by itself, is tested in sweep.rs.
    config.dlq_sweep = Duration::ZERO;
    let worker = Worker::start(config, &moto.sdk_config().await)
        .await
        .expect("worker starts");
    p.send_paced(&poison, 50).await;
    common::wait_for("poison dead-lettered", Duration::from_secs(60), || async {
        worker.report().dead_lettered >= poison.len() as u64
    })
    .await;
    let total = valid.bodies.len() + poison.len();
    common::wait_for(
        "the DLQ holds everything",
        Duration::from_secs(30),
        || async {
            let (v, h) = p.dlq_depth().await;
            v + h == total as u64
        },
    )
    .await;

    // Listing consumes nothing.
    let listed = trackctl(&p, &["dlq", "list", "--json", "--lease", "5"])
        .output()
        .expect("trackctl dlq list");
    assert!(listed.status.success(), "{listed:?}");
    let reasons: BTreeMap<String, usize> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
        .fold(BTreeMap::new(), |mut acc, m| {
            *acc.entry(m["reason"].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
            acc
        });
    assert_eq!(
        reasons.get("max_receive_count"),
        Some(&valid.bodies.len()),
        "{reasons:?}"
    );
    assert_eq!(reasons.values().sum::<usize>(), total, "{reasons:?}");
    assert_eq!(
        p.dlq_depth().await,
        (total as u64, 0),
        "the listing handed every lease back"
    );

    // Redrive message by message (the path with the ledger), kill it, run it again.
    let ledger = std::env::temp_dir().join(format!("{}-ledger.jsonl", p.table));
    let ledger_arg = ledger.to_str().expect("ledger path").to_owned();
    let args = [
        "dlq",
        "redrive",
        "--method",
        "copy",
        "--rate",
        "8",
        "--lease",
        "5",
        "--wait",
        "30",
        "--ledger",
        &ledger_arg,
    ];
    let first = run_and_kill(&p, &args, 12);
    let out = trackctl(&p, &args).output().expect("second redrive");
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    let in_doubt: BTreeSet<String> = report["in_doubt"]
        .as_array()
        .expect("in_doubt")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    assert!(in_doubt.len() <= 1, "one send at a time: {report}");

    // The worker takes the redriven messages: valid ones written, poison back in the DLQ.
    common::wait_for(
        "redriven messages settled",
        Duration::from_secs(120),
        || async {
            let r = worker.report();
            let (v, h) = p.depth().await;
            r.written >= valid.bodies.len() as u64
                && r.dead_lettered >= 2 * poison.len() as u64
                && v + h == 0
        },
    )
    .await;
    let report_after = worker.shutdown().await;

    let keys = p.update_keys().await;
    let distinct: BTreeSet<_> = keys.iter().cloned().collect();
    assert_eq!(keys.len(), distinct.len(), "an item written twice");
    assert_eq!(
        distinct,
        common::expected_keys(&valid.bodies),
        "every valid update written"
    );
    // A copy of an in-doubt valid message would be a duplicate, never a second item.
    assert_eq!(
        report_after.written,
        valid.bodies.len() as u64,
        "{report_after:?}"
    );

    let dlq = p.drain_dlq(poison.len() + in_doubt.len()).await;
    let mut back: BTreeMap<String, usize> = BTreeMap::new();
    for m in &dlq {
        let reason = m
            .message_attributes()
            .and_then(|a| a.get(dlq_attr::REASON))
            .and_then(|v| v.string_value());
        assert!(reason.is_some(), "a DLQ message without its reason: {m:?}");
        *back
            .entry(m.body().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    for body in &poison {
        assert!(back.contains_key(body), "poison lost: {body}");
    }
    let doubled: usize = back.values().map(|n| n - 1).sum();
    assert!(
        doubled <= in_doubt.len(),
        "poison back more than once beyond the reported in-doubt send: {back:?} {report}"
    );
    assert_eq!(
        back.keys().collect::<BTreeSet<_>>(),
        poison.iter().collect::<BTreeSet<_>>(),
        "only poison is left in the DLQ"
    );
    eprintln!("first run (killed): {:?}", first.last());
    eprintln!("second run: {report}");
    let _ = std::fs::remove_file(&ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_by_reason_moves_only_that_reason_and_stops() {
    let p = common::pipeline("redrive-reason", 30).await;
    let attr = |v: &str| {
        aws_sdk_sqs::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
            .expect("attribute")
    };
    for (n, reason) in ["not_json", "bad_timestamp", "not_json"].iter().enumerate() {
        p.sqs
            .send_message()
            .queue_url(&p.dlq_url)
            .message_body(format!("body-{n}"))
            .message_attributes(dlq_attr::REASON, attr(reason))
            .send()
            .await
            .expect("fill DLQ");
    }
    let ledger = std::env::temp_dir().join(format!("{}-ledger.jsonl", p.table));
    let started = Instant::now();
    let out = trackctl(
        &p,
        &[
            "dlq",
            "redrive",
            "--reason",
            "bad_timestamp",
            "--rate",
            "20",
            "--ledger",
            ledger.to_str().expect("path"),
        ],
    )
    .output()
    .expect("redrive");
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
    assert_eq!(report["moved"], 1, "{report}");
    assert_eq!(report["kept"], 2, "{report}");
    assert_eq!(report["remaining"], 2, "{report}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the kept messages must not make it wait for its own leases"
    );
    assert_eq!(p.depth().await, (1, 0));
    assert_eq!(
        p.dlq_depth().await,
        (2, 0),
        "kept messages handed back at once"
    );
    let _ = std::fs::remove_file(&ledger);
}

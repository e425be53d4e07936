//! The soak benchmark's driver (`make bench-worker-soak`; bench/soak/run.sh starts ElasticMQ,
//! DynamoDB Local and moto and builds the release worker). Not part of `make test`.
//!
//! 100,000 messages (10% duplicates, half of them re-serialised by "another producer", 1%
//! poison of every kind) go to two release-built worker processes. Every 10 s one of them is
//! SIGKILLed and restarted. DynamoDB is reached through the fault layer, which plays, in turn,
//! 10 s of lost answers (the write happens, the answer never arrives), a 30 s outage
//! (connections refused and cut) and a 30 s burst of throttling. Then the table and the DLQ
//! are read back and compared with what was sent; the test fails on any difference.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testenv::FlakyProxy;
use testenv::faults::{FaultProxy, Rule};
use tracking_worker::model::{Parsed, attr, parse};
use tracking_worker::synth::{Spec, plan};

/// Counters a replica exposes on /metrics (and prints at exit).
const COUNTERS: &[(&str, &str)] = &[
    ("written", "tracking_worker_updates_written_total"),
    ("duplicates", "tracking_worker_duplicates_total"),
    ("dead_lettered", "tracking_worker_dead_lettered_total"),
    ("key_conflicts", "tracking_worker_key_conflicts_total"),
    ("received", "tracking_worker_messages_received_total"),
    ("requeued", "tracking_worker_requeued_total"),
    ("recovered", "tracking_worker_recovered_from_dlq_total"),
];

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run bench/soak/run.sh"))
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// One worker process; `life` counts its restarts.
struct Replica {
    name: &'static str,
    life: u32,
    child: Child,
    metrics_port: u16,
    /// The counters of the current life as last scraped.
    last: BTreeMap<&'static str, u64>,
}

struct Fleet {
    binary: String,
    env: Vec<(String, String)>,
    log_dir: String,
    replicas: Vec<Replica>,
    /// Counters of SIGKILLed lives, as last scraped (up to a second short).
    killed: BTreeMap<&'static str, u64>,
    kills: u32,
}

impl Fleet {
    fn spawn(&self, name: &'static str, life: u32) -> Replica {
        let metrics_port = free_port();
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(format!("{}/{name}.log", self.log_dir))
            .expect("worker log");
        // Marks where each life starts, so a message id in the log can be placed in a life.
        let _ = writeln!(
            log,
            "{{\"soak\":\"life {life} of {name} starts\",\"timestamp\":\"{}\"}}",
            chrono::Utc::now().to_rfc3339()
        );
        let child = Command::new(&self.binary)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("TRACKING_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .env("HOSTNAME", format!("soak-{name}-{life}"))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start the worker");
        Replica {
            name,
            life,
            child,
            metrics_port,
            last: BTreeMap::new(),
        }
    }

    fn kill_and_restart(&mut self, i: usize) {
        let r = &mut self.replicas[i];
        let _ = r.child.kill(); // SIGKILL
        let _ = r.child.wait();
        for (k, v) in &r.last {
            *self.killed.entry(*k).or_default() += v;
        }
        let (name, life) = (r.name, r.life + 1);
        self.replicas[i] = self.spawn(name, life);
        self.kills += 1;
    }

    fn scrape(&mut self) {
        for r in &mut self.replicas {
            if let Some(counts) = scrape(r.metrics_port) {
                r.last = counts;
            }
        }
    }

    /// SIGTERM, wait for the drain, read the exit totals (one JSON line on stdout).
    fn stop(&mut self) -> BTreeMap<&'static str, u64> {
        let mut totals = self.killed.clone();
        for r in &mut self.replicas {
            let _ = Command::new("kill")
                .args(["-TERM", &r.child.id().to_string()])
                .status();
            let mut out = String::new();
            if let Some(s) = r.child.stdout.as_mut() {
                let _ = s.read_to_string(&mut out);
            }
            let status = r.child.wait().expect("worker exit");
            let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| {
                panic!(
                    "{} exited {status} without its totals ({e}): {out:?}",
                    r.name
                )
            });
            for (k, _) in COUNTERS {
                *totals.entry(*k).or_default() += report[*k].as_u64().unwrap_or(0);
            }
        }
        totals
    }
}

/// The replica's counters from /metrics; `None` while it is starting or gone.
fn scrape(port: u16) -> Option<BTreeMap<&'static str, u64>> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        for (key, metric) in COUNTERS {
            // Labelled families (dead_lettered{reason=...}) are summed.
            if line.starts_with(metric)
                && let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok())
            {
                *out.entry(*key).or_default() += v as u64;
            }
        }
    }
    text.contains("200 OK").then_some(out)
}

/// Sends `bodies` at about `rate` messages a second, in batches of at most ten messages and
/// 250 KB (the poison includes bodies of 240 KB).
async fn send_all(sqs: aws_sdk_sqs::Client, queue_url: String, bodies: Vec<String>, rate: u64) {
    let started = Instant::now();
    let mut batches: Vec<Vec<String>> = Vec::new();
    let mut size = 0;
    for b in bodies {
        let full = batches.last().is_none_or(|l| l.len() == 10);
        if full || size + b.len() > 250_000 {
            batches.push(Vec::new());
            size = 0;
        }
        size += b.len();
        batches.last_mut().expect("a batch").push(b);
    }
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let queue = Arc::new(Mutex::new(batches.into_iter()));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (sqs, url, queue, sent) =
                (sqs.clone(), queue_url.clone(), queue.clone(), sent.clone());
            tokio::spawn(async move {
                loop {
                    let Some(batch) = queue.lock().expect("batches").next() else {
                        return;
                    };
                    let due = Duration::from_secs_f64(
                        sent.load(std::sync::atomic::Ordering::Relaxed) as f64 / rate as f64,
                    );
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                    let n = batch.len() as u64;
                    common::send_batch(&sqs, &url, &batch).await;
                    sent.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("sender");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak of minutes against ElasticMQ and DynamoDB Local: make bench-worker-soak"]
async fn soak() {
    let sqs_endpoint = env("SOAK_SQS_ENDPOINT");
    let ddb_endpoint = env("SOAK_DYNAMODB_ENDPOINT");
    let distinct_count = env_or("SOAK_DISTINCT", 90_090) as usize;
    let send_rate = env_or("SOAK_SEND_RATE", 1_000);
    let log_dir = env("SOAK_LOG_DIR");

    let sqs = aws_sdk_sqs::Client::new(&testenv::sdk_config_for(&sqs_endpoint).await);
    let ddb = aws_sdk_dynamodb::Client::new(&testenv::sdk_config_for(&ddb_endpoint).await);
    let p = common::pipeline_on(sqs.clone(), ddb, "soak", 30).await;

    // Worker -> outage switch (TCP) -> fault layer (HTTP) -> DynamoDB Local.
    let faults = FaultProxy::start(&ddb_endpoint);
    let outage = FlakyProxy::start(&faults.endpoint());

    let plan = plan(&Spec {
        count: distinct_count,
        duplicate_percent: 10.0,
        poison_percent: 1.0,
        seed: 2026,
        prefix: "SOAK".into(),
    });
    let poison: BTreeMap<String, String> = plan
        .bodies
        .iter()
        .filter_map(|b| parse(b).err().map(|e| (b.clone(), e.code().to_string())))
        .collect();
    let valid_messages = plan.bodies.len() - poison.len();
    println!(
        "soak: {} messages: {} distinct updates, {} duplicates (half re-serialised), {} poison of {} kinds",
        plan.bodies.len(),
        plan.summary.distinct_updates,
        plan.summary.duplicates,
        poison.len(),
        plan.summary.poison_by_kind.len()
    );

    // How often each replica sweeps the DLQ for updates SQS moved there (default 60 s).
    let sweep = env_or("SOAK_DLQ_SWEEP_SECONDS", 10);
    let mut fleet = Fleet {
        binary: env("SOAK_WORKER"),
        env: vec![
            ("TRACKING_QUEUE_URL".into(), p.queue_url.clone()),
            ("TRACKING_DEAD_LETTER_QUEUE_URL".into(), p.dlq_url.clone()),
            ("TRACKING_TABLE_NAME".into(), p.table.clone()),
            ("TRACKING_PIPELINE".into(), format!("soak/{}", p.table)),
            ("TRACKING_BATCH_SIZE".into(), "10".into()),
            ("TRACKING_MAX_BATCHING_WINDOW_SECONDS".into(), "1".into()),
            ("TRACKING_CONCURRENCY".into(), "8".into()),
            ("TRACKING_VISIBILITY_TIMEOUT_SECONDS".into(), "30".into()),
            ("TRACKING_DLQ_SWEEP_SECONDS".into(), sweep.to_string()),
            (
                "TRACKING_METRICS_NAMESPACE".into(),
                "TrackingOperator/Soak".into(),
            ),
            ("AWS_REGION".into(), testenv::REGION.into()),
            // DynamoDB Local keeps one database per access key and region: the driver's.
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
            ("AWS_ENDPOINT_URL_SQS".into(), sqs_endpoint.clone()),
            ("AWS_ENDPOINT_URL_DYNAMODB".into(), outage.endpoint()),
            (
                "AWS_ENDPOINT_URL_CLOUDWATCH".into(),
                env("SOAK_CLOUDWATCH_ENDPOINT"),
            ),
            // Warnings, plus each redelivery, dead-lettering and sweep with its message id.
            (
                "RUST_LOG".into(),
                "warn,tracking_worker::consumer=info,tracking_worker::settle=info,tracking_worker::sweep=info".into(),
            ),
        ],
        log_dir,
        replicas: Vec::new(),
        killed: BTreeMap::new(),
        kills: 0,
    };
    fleet.replicas = vec![fleet.spawn("a", 0), fleet.spawn("b", 0)];

    let started = Instant::now();
    let sender = tokio::spawn(send_all(
        sqs.clone(),
        p.queue_url.clone(),
        plan.bodies.clone(),
        send_rate,
    ));

    // The fault timeline, in seconds from the start.
    const LOST_ANSWERS: (u64, u64) = (15, 25);
    const OUTAGE: (u64, u64) = (30, 60);
    const THROTTLING: (u64, u64) = (70, 100);
    const THROTTLE_RATE: f64 = 10.0;
    let mut events: Vec<String> = Vec::new();
    // SOAK_KILL_JITTER_SECONDS spreads the kills over 10 ± j s (the mean stays one per 10 s).
    // Strictly every 10 s, a kill lands whenever a message a killed replica held becomes
    // visible again (30 s later, a multiple of 10): its dead long polls take it, twice in a
    // row, and SQS's redrive moves it. Irregular kills, as OOM kills and node losses are,
    // show how much of that is the schedule's resonance.
    let jitter: u64 = env_or("SOAK_KILL_JITTER_SECONDS", 0).min(9);
    let mut next_kill = 10;
    let mut lost_rule = None;
    let mut down = false;
    let mut throttle_rule = None;
    let mut sent_at = None;
    let mut empty_polls = 0;
    let limit = Duration::from_secs(env_or("SOAK_LIMIT_SECONDS", 1_200));
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t = started.elapsed().as_secs();
        fleet.scrape();
        if t >= next_kill {
            let i = (fleet.kills % 2) as usize;
            fleet.kill_and_restart(i);
            next_kill += 10 - jitter + rand::random_range(0..=2 * jitter);
        }
        if t >= LOST_ANSWERS.0 && t < LOST_ANSWERS.1 && lost_rule.is_none() {
            lost_rule = Some(faults.add_rule(Rule::drop_response("dynamodb", "*")));
            events.push(format!(
                "{t:>4} s  DynamoDB answers lost (writes take effect)"
            ));
        }
        if t >= LOST_ANSWERS.1
            && let Some(id) = lost_rule.take()
        {
            faults.remove_rule(id);
            events.push(format!("{t:>4} s  DynamoDB answers again"));
        }
        if t >= OUTAGE.0 && t < OUTAGE.1 && !down {
            outage.set_down(true);
            down = true;
            events.push(format!(
                "{t:>4} s  DynamoDB outage: connections refused and cut"
            ));
        }
        if t >= OUTAGE.1 && down {
            outage.set_down(false);
            down = false;
            events.push(format!("{t:>4} s  DynamoDB back"));
        }
        if t >= THROTTLING.0 && t < THROTTLING.1 && throttle_rule.is_none() {
            // A rate the workers exceed whatever the machine's speed: most calls are throttled.
            throttle_rule = Some(faults.add_rule(Rule::rate_limit(
                "dynamodb",
                THROTTLE_RATE,
                THROTTLE_RATE as u32,
            )));
            events.push(format!(
                "{t:>4} s  DynamoDB throttles above {THROTTLE_RATE} calls/s"
            ));
        }
        if t >= THROTTLING.1
            && let Some(id) = throttle_rule.take()
        {
            faults.remove_rule(id);
            events.push(format!("{t:>4} s  throttling over"));
        }
        if sent_at.is_none() && sender.is_finished() {
            sent_at = Some(started.elapsed());
            events.push(format!("{t:>4} s  all {} messages sent", plan.bodies.len()));
        }
        if sent_at.is_some() && t >= THROTTLING.1 && p.depth().await == (0, 0) {
            empty_polls += 1;
            if empty_polls >= 3 {
                break;
            }
        } else {
            empty_polls = 0;
        }
        assert!(
            started.elapsed() < limit,
            "not drained after {limit:?}: queue {:?}, events {events:#?}",
            p.depth().await
        );
    }
    let drained = started.elapsed();
    // Kills stop here. What SQS moved to the DLQ is taken back by the replicas' sweeps: wait
    // for the leases of killed sweeps to end, then for two sweeps of every replica.
    events.push(format!(
        "{:>4} s  queue drained; kills stop, the DLQ sweeps (every {sweep} s) finish",
        drained.as_secs()
    ));
    let leases_end = Instant::now() + Duration::from_secs(60);
    while p.dlq_depth().await.1 > 0 && Instant::now() < leases_end {
        tokio::time::sleep(Duration::from_millis(500)).await;
        fleet.scrape();
    }
    tokio::time::sleep(Duration::from_secs(2 * sweep + 2)).await;
    fleet.scrape();
    sender.await.expect("sender");
    let kills = fleet.kills;
    let totals = fleet.stop();
    let run_time = started.elapsed();

    // The table, read directly (not through the fault layer).
    let items = p.items().await;
    let mut update_keys = BTreeSet::new();
    let (mut update_items, mut conflict_items, mut bookkeeping) = (0usize, 0usize, 0usize);
    for i in &items {
        let pk = common::text(i, attr::TRACKING_ID).unwrap_or_default();
        if pk.starts_with('#') {
            bookkeeping += 1;
        } else if i.contains_key(attr::CONFLICTS_WITH) {
            conflict_items += 1;
        } else {
            update_items += 1;
            update_keys.insert((
                pk.to_string(),
                common::text(i, attr::TIMESTAMP)
                    .unwrap_or_default()
                    .to_string(),
            ));
        }
    }
    let expected = common::expected_keys(&plan.distinct);
    let missing = expected.difference(&update_keys).count();
    let unexpected = update_keys.difference(&expected).count();

    // The DLQ, every message once (received with a long visibility, so none comes back).
    let (dlq_visible, dlq_hidden) = p.dlq_depth().await;
    let dlq = p.drain_dlq((dlq_visible + dlq_hidden) as usize).await;
    let mut dlq_count: BTreeMap<String, (usize, BTreeSet<String>)> = BTreeMap::new();
    let mut valid_in_dlq = 0;
    let by_key: BTreeMap<(String, String), &std::collections::HashMap<_, _>> = items
        .iter()
        .map(|i| {
            let text = |n| common::text(i, n).unwrap_or_default().to_string();
            ((text(attr::TRACKING_ID), text(attr::TIMESTAMP)), i)
        })
        .collect();
    let mut diagnosis = Vec::new();
    for (m, (body, reason)) in dlq.iter().zip(common::dlq_reasons(&dlq)) {
        if let Ok(Parsed::Update(u)) = parse(&body) {
            valid_in_dlq += 1;
            diagnosis.push(dlq_line(
                m,
                &reason,
                by_key.get(&(u.tracking_id.clone(), u.sort_key())),
            ));
        } else if dlq
            .iter()
            .filter(|o| o.body() == Some(body.as_str()))
            .count()
            > 1
        {
            diagnosis.push(dlq_line(m, &reason, None));
        }
        let e = dlq_count.entry(body).or_default();
        e.0 += 1;
        e.1.insert(reason);
    }
    let mut by_kind: BTreeMap<&str, (usize, usize, usize, usize)> = BTreeMap::new(); // sent, once, twice+, wrong reason
    for (body, code) in &poison {
        let e = by_kind.entry(code.as_str()).or_default();
        e.0 += 1;
        match dlq_count.get(body) {
            Some((1, reasons)) if reasons.len() == 1 && reasons.contains(code) => e.1 += 1,
            Some((n, _)) if *n > 1 => e.2 += 1,
            _ => e.3 += 1,
        }
    }
    let poison_once: usize = by_kind.values().map(|k| k.1).sum();
    let poison_twice: usize = by_kind.values().map(|k| k.2).sum();
    let poison_bad: usize = by_kind.values().map(|k| k.3).sum();
    // The only rule that answers in place of DynamoDB is the throttling one.
    let throttled = faults.faulted("dynamodb", "*");
    let left = p.depth().await;
    let left_dlq = p.dlq_depth().await;

    println!("\nsoak: fault timeline");
    for e in &events {
        println!("  {e}");
    }
    println!("  every 10 s (± {jitter} s) one replica SIGKILLed and restarted: {kills} kills");
    println!("\nsoak: results");
    println!(
        "  audit items                  {update_items} (distinct updates sent: {}; missing {missing}, unexpected {unexpected})",
        expected.len()
    );
    println!(
        "  items under a conflict key   {conflict_items} (must be 0: every retry has the same content)"
    );
    println!("  bookkeeping items            {bookkeeping} (dead-letter markers, counters)");
    println!(
        "  duplicates absorbed          {} (valid messages sent {valid_messages} - audit items)",
        valid_messages.saturating_sub(update_items)
    );
    println!(
        "  poison in the DLQ            {poison_once} of {} exactly once with its reason; {poison_twice} more than once; {poison_bad} missing or wrong reason",
        poison.len()
    );
    for (kind, (sent, once, twice, bad)) in &by_kind {
        println!(
            "    {kind:<22} sent {sent:>4}  once {once:>4}  twice+ {twice}  missing/wrong {bad}"
        );
    }
    println!("  valid updates in the DLQ     {valid_in_dlq}");
    println!(
        "  taken back from the DLQ      {} (updates SQS moved there after lost deliveries, stored or found stored by a sweep)",
        totals.get("recovered").copied().unwrap_or(0)
    );
    if !diagnosis.is_empty() {
        println!("  DLQ messages to explain (valid updates; poison copies of one body):");
        for line in &diagnosis {
            println!("    {line}");
        }
    }
    println!(
        "  left in queues               main {} visible + {} in flight, DLQ {} after reading it",
        left.0,
        left.1,
        left_dlq.0 + left_dlq.1
    );
    println!(
        "  workers' counters            {totals:?} (SIGKILLed lives: last scrape, up to 0.5 s short)"
    );
    println!(
        "  DynamoDB calls through the fault layer {}, throttled {throttled}",
        faults.calls("dynamodb", "*"),
    );
    println!(
        "  run time                     {:.0} s to drain ({:.0} s sending at {send_rate}/s), {:.0} s with the final drain (wall clock, shared machine)",
        drained.as_secs_f64(),
        sent_at.unwrap_or_default().as_secs_f64(),
        run_time.as_secs_f64()
    );

    assert_eq!(
        (missing, unexpected, conflict_items),
        (0, 0, 0),
        "every distinct update exactly once"
    );
    assert_eq!(update_items, expected.len());
    assert_eq!(valid_in_dlq, 0, "no valid update in the DLQ");
    assert_eq!(
        (poison_twice, poison_bad),
        (0, 0),
        "each poison once, with its reason"
    );
    assert_eq!(left, (0, 0), "nothing left in the queue");
    assert!(throttled > 0, "the throttling window throttled no call");
}

/// One DLQ message, for the diagnosis: its ids, receive count, reason, and (for an update)
/// the item that stores it and which message wrote it.
fn dlq_line(
    m: &aws_sdk_sqs::types::Message,
    reason: &str,
    item: Option<&&std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>,
) -> String {
    use aws_sdk_sqs::types::MessageSystemAttributeName as A;
    let system = |n: A| {
        m.attributes()
            .and_then(|a| a.get(&n))
            .cloned()
            .unwrap_or_default()
    };
    let user = |n: &str| {
        m.message_attributes()
            .and_then(|a| a.get(n))
            .and_then(|v| v.string_value())
            .unwrap_or("-")
            .to_string()
    };
    let stored = match item {
        Some(i) => format!(
            "item written by {} at {}",
            common::text(i, attr::MESSAGE_ID).unwrap_or("?"),
            common::text(i, attr::PROCESSED_AT).unwrap_or("?")
        ),
        None => "no item".to_string(),
    };
    format!(
        "dlq id {} receives {} reason {reason} source {} sent {}: {stored}",
        m.message_id().unwrap_or("?"),
        system(A::ApproximateReceiveCount),
        user(tracking_worker::consumer::dlq_attr::SOURCE_MESSAGE_ID),
        system(A::SentTimestamp),
    )
}

//! `trackctl`: send realistic tracking traffic to a pipeline's queue, read a shipment's
//! audit history back, and inspect or redrive the dead-letter queue (`trackctl dlq`; how it
//! avoids losing or doubling a message is in `tracking_worker::redrive`). Endpoint, region
//! and credentials come from the standard AWS environment (`AWS_ENDPOINT_URL`, `AWS_REGION`,
//! ...); a pipeline named with `-n NAMESPACE NAME` is looked up with `kubectl`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use tracking_worker::model::{attr, attr_to_json};
use tracking_worker::redrive::{self, Ledger, MoveTask};
use tracking_worker::synth;

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send tracking updates (with some duplicates and poison) and print a JSON summary.
    Send(SendArgs),
    /// Print a tracking id's audit history in time order.
    History(HistoryArgs),
    /// Inspect the dead-letter queue, or move its messages back to the main queue.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List messages with their rejection reason and receive count, without consuming them.
    List(ListArgs),
    /// Print one message (body and attributes), without consuming it.
    Show(ShowArgs),
    /// Move messages (all, or those with one reason) back to the main queue, rate-limited.
    Redrive(RedriveArgs),
}

/// Which pipeline: `-n NAMESPACE NAME` (read from the cluster with kubectl), or the queue URLs.
#[derive(Parser)]
struct Target {
    /// Namespace of the TrackingPipeline.
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Name of the TrackingPipeline (its status.outputs give the queue URLs).
    name: Option<String>,
    /// URL of the main queue (instead of a pipeline name).
    #[arg(long, env = "TRACKING_QUEUE_URL")]
    queue_url: Option<String>,
    /// URL of the dead-letter queue (instead of a pipeline name).
    #[arg(long, env = "TRACKING_DEAD_LETTER_QUEUE_URL")]
    dead_letter_queue_url: Option<String>,
}

#[derive(Parser)]
struct ListArgs {
    #[command(flatten)]
    target: Target,
    /// List at most this many messages.
    #[arg(long, default_value_t = 100)]
    max: usize,
    /// Seconds each message is hidden from other readers while the listing runs.
    #[arg(long, default_value_t = 30)]
    lease: i32,
    /// Print JSON lines (with bodies) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Parser)]
struct ShowArgs {
    #[command(flatten)]
    target: Target,
    /// The DLQ message id (from `trackctl dlq list`).
    #[arg(long)]
    id: String,
    /// Look through at most this many messages.
    #[arg(long, default_value_t = 10_000)]
    max: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Method {
    /// SQS's message-move task when the backend has it and no --reason is given, else copy.
    Auto,
    /// SQS's message-move task only.
    Task,
    /// Receive, send to the main queue, delete; with the move ledger.
    Copy,
}

#[derive(Parser)]
struct RedriveArgs {
    #[command(flatten)]
    target: Target,
    /// Only messages with this reason (`trackctl dlq list` shows them; `max_receive_count`
    /// for those SQS moved after repeated failures).
    #[arg(long)]
    reason: Option<String>,
    /// Messages moved per second at most.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    #[arg(long, value_enum, default_value = "auto")]
    method: Method,
    /// The move ledger (default: one file per DLQ under $XDG_STATE_HOME/trackctl).
    #[arg(long)]
    ledger: Option<std::path::PathBuf>,
    /// Seconds a message being moved stays hidden in the DLQ.
    #[arg(long, default_value_t = 60)]
    lease: i32,
    /// Stop after this many messages.
    #[arg(long)]
    max: Option<usize>,
    /// Also move messages an earlier redrive moved already and that came back.
    #[arg(long)]
    include_returned: bool,
    /// Seconds to wait for messages another reader (an interrupted run) still holds.
    #[arg(long, default_value_t = 90)]
    wait: u64,
}

#[derive(Parser)]
struct SendArgs {
    /// URL of the pipeline's queue.
    #[arg(long, env = "TRACKING_QUEUE_URL")]
    queue_url: String,
    /// Distinct updates to send.
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Percentage of updates sent a second time (half verbatim, half re-encoded).
    #[arg(long, default_value_t = 5.0)]
    duplicate_percent: f64,
    /// Poison messages, as a percentage of `count`.
    #[arg(long, default_value_t = 0.5)]
    poison_percent: f64,
    /// Seed for a reproducible set (default: random, printed in the summary).
    #[arg(long)]
    seed: Option<u64>,
    /// Tracking id prefix.
    #[arg(long, default_value = "TRK")]
    prefix: String,
    /// Maximum messages per second (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// Pause while the queue holds more than this many visible messages (0: never); keeps
    /// an emulator that slows with depth (moto) shallow.
    #[arg(long, default_value_t = 0)]
    max_depth: u64,
    /// SendMessageBatch calls in flight.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

#[derive(Parser)]
struct HistoryArgs {
    /// The audit table.
    #[arg(long, env = "TRACKING_TABLE_NAME")]
    table: String,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
    tracking_id: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let result = match cli.command {
        Command::Send(args) => send(&sdk, args).await,
        Command::History(args) => history(&sdk, args).await,
        Command::Dlq(cmd) => dlq(&sdk, cmd).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trackctl: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

async fn send(sdk: &aws_config::SdkConfig, args: SendArgs) -> BoxResult<()> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let seed = args.seed.unwrap_or_else(rand::random);
    let plan = synth::plan(&synth::Spec {
        count: args.count,
        duplicate_percent: args.duplicate_percent,
        poison_percent: args.poison_percent,
        seed,
        prefix: args.prefix.clone(),
    });
    let total = plan.bodies.len();
    let sent = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let chunks: Vec<Vec<String>> = plan.bodies.chunks(10).map(<[String]>::to_vec).collect();
    // Rate limiting and depth control happen per wave of `concurrency` batches.
    let mut last_report = Instant::now();
    for wave in chunks.chunks(args.concurrency.max(1)) {
        if args.max_depth > 0 {
            wait_for_depth(&sqs, &args.queue_url, args.max_depth).await?;
        }
        let results: Vec<BoxResult<()>> = futures::stream::iter(wave.iter().cloned())
            .map(|bodies| send_batch(&sqs, &args.queue_url, bodies, sent.clone()))
            .buffer_unordered(args.concurrency.max(1))
            .collect()
            .await;
        for r in results {
            r?;
        }
        let done = sent.load(Ordering::Relaxed);
        if args.rate > 0 {
            let due = Duration::from_secs_f64(done as f64 / f64::from(args.rate));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            last_report = Instant::now();
            eprintln!(
                "trackctl: sent {done}/{total} messages ({:.0}/s)",
                done as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!(
        "trackctl: sent {total} messages in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    println!("{}", serde_json::to_string_pretty(&plan.summary)?);
    Ok(())
}

async fn send_batch(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    bodies: Vec<String>,
    sent: Arc<AtomicUsize>,
) -> BoxResult<()> {
    let mut pending: Vec<(String, String)> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, b)| (i.to_string(), b))
        .collect();
    for attempt in 0..10u32 {
        let entries = pending
            .iter()
            .map(|(id, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(id)
                    .message_body(body)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = sqs
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await?;
        sent.fetch_add(out.successful.len(), Ordering::Relaxed);
        let failed: Vec<&str> = out.failed.iter().map(|f| f.id.as_str()).collect();
        if let Some(f) = out.failed.iter().find(|f| f.sender_fault) {
            return Err(format!("message rejected: {} {:?}", f.code, f.message).into());
        }
        pending.retain(|(id, _)| failed.contains(&id.as_str()));
        if pending.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100 << attempt.min(6))).await;
    }
    Err("SendMessageBatch kept failing".into())
}

async fn wait_for_depth(sqs: &aws_sdk_sqs::Client, queue_url: &str, max: u64) -> BoxResult<()> {
    loop {
        let out = sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await?;
        let depth = out
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if depth <= max {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn history(sdk: &aws_config::SdkConfig, args: HistoryArgs) -> BoxResult<()> {
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    let mut pages = ddb
        .query()
        .table_name(&args.table)
        .key_condition_expression("#pk = :id")
        .expression_attribute_names("#pk", attr::TRACKING_ID)
        .expression_attribute_values(":id", AttributeValue::S(args.tracking_id.clone()))
        .scan_index_forward(true)
        .into_paginator()
        .items()
        .send();
    let mut n = 0usize;
    while let Some(item) = pages.next().await {
        let item = item?;
        n += 1;
        let get = |k: &str| {
            item.get(k)
                .and_then(|v| v.as_s().ok())
                .map(String::as_str)
                .unwrap_or("-")
        };
        if args.json {
            let obj: serde_json::Map<String, serde_json::Value> = item
                .iter()
                .map(|(k, v)| (k.clone(), attr_to_json(v)))
                .collect();
            println!("{}", serde_json::Value::Object(obj));
        } else {
            println!(
                "{:<24}  {:<18}  {:<20}  {:<10}  {}",
                get(attr::EVENT_TIME)
                    .get(..24)
                    .unwrap_or(get(attr::EVENT_TIME)),
                get(attr::STATUS),
                get(attr::LOCATION),
                get(attr::CARRIER),
                get(attr::IDEMPOTENCY_KEY),
            );
        }
    }
    if n == 0 {
        return Err(format!("no history for {:?} in {}", args.tracking_id, args.table).into());
    }
    Ok(())
}

/// The queues of a pipeline.
struct Queues {
    main: String,
    dead_letter: String,
}

impl Target {
    fn resolve(&self) -> BoxResult<Queues> {
        if let (Some(main), Some(dead_letter), None) =
            (&self.queue_url, &self.dead_letter_queue_url, &self.name)
        {
            return Ok(Queues {
                main: main.clone(),
                dead_letter: dead_letter.clone(),
            });
        }
        let Some(name) = &self.name else {
            return Err("name a pipeline (-n NAMESPACE NAME) or give --queue-url and --dead-letter-queue-url".into());
        };
        let mut cmd = std::process::Command::new("kubectl");
        cmd.args([
            "get",
            "trackingpipelines.tracking-operator.io",
            name,
            "-o",
            "json",
        ]);
        if let Some(ns) = &self.namespace {
            cmd.args(["-n", ns]);
        }
        let out = cmd
            .output()
            .map_err(|e| format!("running kubectl (needed for -n NAMESPACE NAME): {e}"))?;
        if !out.status.success() {
            return Err(format!("kubectl: {}", String::from_utf8_lossy(&out.stderr).trim()).into());
        }
        let tp: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let get = |key: &str| {
            tp["status"]["outputs"][key]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("pipeline {name} has no status.outputs.{key} yet"))
        };
        Ok(Queues {
            main: get("queueUrl")?,
            dead_letter: get("deadLetterQueueUrl")?,
        })
    }
}

async fn dlq(sdk: &aws_config::SdkConfig, cmd: DlqCommand) -> BoxResult<()> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    match cmd {
        DlqCommand::List(args) => {
            let q = args.target.resolve()?;
            let messages = redrive::peek(&sqs, &q.dead_letter, args.max, args.lease).await?;
            if args.json {
                for m in &messages {
                    println!("{}", serde_json::to_string(m)?);
                }
            } else {
                println!(
                    "{:<38}  {:<22}  {:>8}  {:<24}  DETAIL",
                    "MESSAGE ID", "REASON", "RECEIVES", "SENT"
                );
                for m in &messages {
                    let sent = m
                        .sent_timestamp
                        .and_then(chrono::DateTime::from_timestamp_millis)
                        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                        .unwrap_or_else(|| "-".into());
                    let detail: String = m
                        .detail
                        .as_deref()
                        .unwrap_or("-")
                        .chars()
                        .take(60)
                        .collect();
                    println!(
                        "{:<38}  {:<22}  {:>8}  {:<24}  {detail}",
                        m.message_id,
                        m.reason,
                        m.receive_count
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| "-".into()),
                        sent,
                    );
                }
            }
            let mut by_reason = std::collections::BTreeMap::<&str, usize>::new();
            for m in &messages {
                *by_reason.entry(m.reason.as_str()).or_default() += 1;
            }
            eprintln!(
                "trackctl: {} messages listed, by reason: {by_reason:?}",
                messages.len()
            );
            Ok(())
        }
        DlqCommand::Show(args) => {
            let q = args.target.resolve()?;
            let messages = redrive::peek(&sqs, &q.dead_letter, args.max, 30).await?;
            let m = messages
                .into_iter()
                .find(|m| m.message_id == args.id)
                .ok_or_else(|| format!("message {} is not in the dead-letter queue", args.id))?;
            println!("{}", serde_json::to_string_pretty(&m)?);
            Ok(())
        }
        DlqCommand::Redrive(args) => redrive_cmd(&sqs, args).await,
    }
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> BoxResult<String> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?;
    out.attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| format!("{url} has no QueueArn").into())
}

/// A one-line progress bar on stderr, redrawn in place on a terminal, a line per second
/// otherwise.
struct Progress {
    last: Instant,
    started: Instant,
    tty: bool,
}

impl Progress {
    fn new() -> Self {
        use std::io::IsTerminal;
        Self {
            last: Instant::now() - Duration::from_secs(1),
            started: Instant::now(),
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn show(&mut self, done: u64, total: i64, extra: &str, force: bool) {
        if !force && self.last.elapsed() < Duration::from_millis(if self.tty { 100 } else { 1000 })
        {
            return;
        }
        self.last = Instant::now();
        let total = total.max(done as i64).max(1) as u64;
        let filled = (done * 30 / total) as usize;
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        let line = format!(
            "redrive [{}{}] {done}/{total} {extra} {rate:.1}/s",
            "#".repeat(filled),
            "-".repeat(30 - filled)
        );
        if self.tty {
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
    }
}

async fn redrive_cmd(sqs: &aws_sdk_sqs::Client, args: RedriveArgs) -> BoxResult<()> {
    let q = args.target.resolve()?;
    let use_task = match args.method {
        Method::Copy => false,
        Method::Task => true,
        Method::Auto => args.reason.is_none() && args.max.is_none(),
    };
    let mut progress = Progress::new();
    if use_task {
        let dlq_arn = queue_arn(sqs, &q.dead_letter).await?;
        let main_arn = queue_arn(sqs, &q.main).await?;
        match redrive::start_move_task(sqs, &dlq_arn, &main_arn, args.rate.ceil() as i32).await? {
            MoveTask::Running(handle) => {
                eprintln!(
                    "trackctl: SQS message-move task {handle} (it goes on if this command stops; run it again to follow it)"
                );
                let report = redrive::follow_move_task(sqs, &dlq_arn, |moved, to_move| {
                    progress.show(moved.max(0) as u64, to_move, "moved", false)
                })
                .await?;
                eprintln!();
                println!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(());
            }
            MoveTask::Unsupported(why) => {
                if matches!(args.method, Method::Task) {
                    return Err(format!("the backend cannot run a message-move task: {why}").into());
                }
                eprintln!(
                    "trackctl: no message-move task on this backend ({why}); moving message by message"
                );
            }
        }
    }
    let path = args
        .ledger
        .clone()
        .unwrap_or_else(|| redrive::default_ledger_path(&q.dead_letter));
    let mut ledger = Ledger::open(&path)?;
    eprintln!("trackctl: move ledger {}", path.display());
    let opts = redrive::Options {
        filter: redrive::Filter {
            reason: args.reason.clone(),
            include_returned: args.include_returned,
        },
        rate: args.rate,
        lease_seconds: args.lease,
        max: args.max,
        wait_for_leased: Duration::from_secs(args.wait),
    };
    let report = redrive::redrive_copy(sqs, &q.dead_letter, &q.main, &mut ledger, &opts, |r| {
        let extra = format!(
            "moved, {} finished, {} kept, {} failed",
            r.finished_from_earlier_run, r.kept, r.failed
        );
        progress.show(
            r.moved + r.finished_from_earlier_run,
            r.initial - r.kept as i64,
            &extra,
            false,
        )
    })
    .await?;
    let extra = format!(
        "moved, {} finished, {} kept, {} failed",
        report.finished_from_earlier_run, report.kept, report.failed
    );
    progress.show(
        report.moved + report.finished_from_earlier_run,
        report.initial - report.kept as i64,
        &extra,
        true,
    );
    if progress.tty {
        eprintln!();
    }
    if !report.in_doubt.is_empty() {
        eprintln!(
            "trackctl: {} message(s) were being sent when an earlier run stopped and were sent again: a copy too many of a valid update is absorbed by the worker's idempotent write",
            report.in_doubt.len()
        );
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

//! `trackctl`: send realistic tracking traffic to a pipeline's queue, and read a shipment's
//! audit history back. Endpoint, region and credentials come from the standard AWS
//! environment (`AWS_ENDPOINT_URL`, `AWS_REGION`, ...).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use tracking_worker::model::{attr, attr_to_json};
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

//! The batching window gathers as Lambda's `MaximumBatchingWindowInSeconds` does: receives go
//! on until the batch is full or the window ends, even when the window is shorter than SQS's
//! one-second long-poll granularity; a quiet queue ends the batch when the window does.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracking_worker::consumer::collect_batch;

fn bodies(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!(r#"{{"tracking_id":"{prefix}-{i}","timestamp":"2026-11-20T12:00:00Z"}}"#))
        .collect()
}

async fn ctx(p: &common::Pipeline, batch_size: u16, window: u32) -> Arc<tracking_worker::Ctx> {
    let mut ctx = p.ctx().await;
    ctx.config.settings.batch_size = batch_size;
    ctx.config.settings.max_batching_window_seconds = window;
    Arc::new(ctx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_second_window_gathers_more_than_one_receive() {
    let p = common::pipeline("batchfull", 30).await;
    p.send_paced(&bodies("BF", 100), 1_000).await;
    let ctx = ctx(&p, 100, 1).await;

    let started = Instant::now();
    let batch = collect_batch(&ctx).await.expect("receive");
    let took = started.elapsed();
    let got = batch.messages().len();
    eprintln!("one 1 s window: {got} messages in {took:?}");
    // One receive is at most 10 messages: the window must have gone on receiving.
    assert!(
        got >= 30,
        "a 1 s window gathered only {got} of 100 waiting messages"
    );
    assert!(
        took < Duration::from_secs(3),
        "the window outlasted itself: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_ends_the_window_early() {
    let p = common::pipeline("batchearly", 30).await;
    p.send_paced(&bodies("BE", 30), 1_000).await;
    let ctx = ctx(&p, 20, 20).await;

    let started = Instant::now();
    let batch = collect_batch(&ctx).await.expect("receive");
    let took = started.elapsed();
    assert_eq!(batch.messages().len(), 20, "a full batch");
    assert!(
        took < Duration::from_secs(10),
        "a full batch did not wait for the 20 s window: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_queue_ends_the_batch_with_the_window() {
    let p = common::pipeline("batchquiet", 30).await;
    p.send_paced(&bodies("BQ", 3), 1_000).await;
    let ctx = ctx(&p, 100, 2).await;

    let started = Instant::now();
    let batch = collect_batch(&ctx).await.expect("receive");
    let took = started.elapsed();
    let calls = ctx.metrics.report().sqs_calls;
    eprintln!("quiet queue: {took:?}, {calls} receives");
    assert_eq!(batch.messages().len(), 3);
    assert!(
        took >= Duration::from_millis(1_800) && took < Duration::from_secs(4),
        "the batch ends when the 2 s window does, not before or a long poll later: {took:?}"
    );
    // The sub-second tail is short polls with pauses, not a tight loop.
    assert!(calls <= 10, "{calls} receives for one quiet window");
}

//! Receive: the SQS side — receive loops, the batching window, the visibility heartbeat —
//! and the batch pipeline: receive → decide ([`model::parse_message`], pure) → write
//! ([`crate::write`]) → settle ([`crate::settle`]).
//!
//! Every message settles one of three ways: deleted (written, duplicate, dead-lettered,
//! maintenance done), returned to the queue with a visibility backoff (a failure SQS will
//! redrive after `maxReceiveCount`), or left as is (abandoned at the drain deadline).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, Message, MessageSystemAttributeName,
};
use chrono::{DateTime, Utc};
use futures::future::join_all;

use crate::error::{Error, Result};
use crate::model::{self, Parsed, Poison};
use crate::requeue;
use crate::retry::backoff;
use crate::settle::{Outcome, SQS_BATCH_MAX, dead_letter, delete, failed, return_later};
use crate::worker::Ctx;
use crate::write::{Pending, Written, write_updates};

pub use crate::settle::{dlq_attr, retry_delay_seconds};

/// The long poll of a receive that starts a batch: short, not SQS's longest (20 s), because
/// SQS does not notice that a replica died while its long poll was waiting: a message that
/// arrives (or becomes visible again) meanwhile is handed to the dead call, which SQS counts
/// as a receive, and the message stays invisible for a visibility timeout. Such polls of a
/// killed replica are first in line, ahead of the live replicas' newer ones; with 20 s polls
/// and a replica killed every 10 s (the soak benchmark), a message in a quiet queue was
/// handed to dead polls three times in a row often enough that SQS's redrive policy moved
/// valid updates to the DLQ. With 2 s they outlive their replica by 2 s at most. The cost: an
/// idle receiver makes one call per 2 s instead of per 20 s.
const LONG_POLL_SECONDS: i32 = 2;
/// Past its long-poll wait, how long SIGTERM still waits for a receive call under way.
const RECEIVE_GRACE: Duration = Duration::from_secs(2);
/// While the table refuses writes for an environment reason, receivers wait this long
/// between probes instead of taking more messages they cannot write.
const ENVIRONMENT_PAUSE: Duration = Duration::from_secs(5);
/// In the last fraction of a second of a batching window (below SQS's one-second long-poll
/// granularity) receives are short polls; after an empty one, this long a pause, so a quiet
/// queue is not polled in a tight loop.
const SHORT_POLL_PAUSE: Duration = Duration::from_millis(200);

/// One receiver: receive a batch, process it, settle it; until SIGTERM.
pub async fn receive_loop(ctx: Arc<Ctx>, id: u16) {
    let mut errors = 0u32;
    let mut paused_since: Option<Instant> = None;
    while !ctx.stop.is_cancelled() {
        // The batches in flight are held and retried while the table refuses writes (access
        // not yet granted, a missing table, a disabled key); taking more would only grow
        // the pile. After a while one receive goes ahead as a probe.
        if ctx.metrics.environment_failing("dynamodb")
            && paused_since.get_or_insert_with(Instant::now).elapsed() < Duration::from_secs(60)
        {
            tokio::select! {
                _ = tokio::time::sleep(ENVIRONMENT_PAUSE) => {}
                _ = ctx.stop.cancelled() => {}
            }
            continue;
        }
        paused_since = None;
        match collect_batch(&ctx).await {
            Ok(batch) => {
                errors = 0;
                if !batch.messages.is_empty() {
                    process_batch(&ctx, batch).await;
                }
            }
            Err(e) => {
                if e.is_transient() {
                    ctx.metrics.throttled("sqs", "ReceiveMessage");
                } else if e.class() == Some(crate::error::ErrorClass::Environment) {
                    ctx.metrics.environment_failed("sqs", "ReceiveMessage");
                } else {
                    ctx.metrics.record_failure("receive");
                }
                if errors.is_multiple_of(20) {
                    tracing::warn!(receiver = id, error = %e, "receive failed; backing off");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff(errors)) => {}
                    _ = ctx.stop.cancelled() => {}
                }
                errors = errors.saturating_add(1);
            }
        }
    }
}

/// Messages received together, processed together.
pub struct Batch {
    messages: Vec<Message>,
    /// (message id, receipt handle) of everything received, for the visibility heartbeat.
    receipts: Arc<Mutex<Vec<(String, String)>>>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl Batch {
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

/// Receives until the batch is full or the batching window (counted from the first message,
/// like Lambda's `MaximumBatchingWindow`) has passed: every receive inside the window long
/// polls for the whole seconds left, the last fraction of a second is short polls. A window of
/// 0 is one receive. SIGTERM ends collection early; what was received is still processed.
pub async fn collect_batch(ctx: &Arc<Ctx>) -> Result<Batch> {
    let settings = &ctx.config.settings;
    let size = usize::from(settings.batch_size.max(1));
    let window = Duration::from_secs(u64::from(settings.max_batching_window_seconds));
    let mut batch = Batch {
        messages: Vec::new(),
        receipts: Arc::new(Mutex::new(Vec::new())),
        heartbeat: None,
    };
    let mut deadline: Option<Instant> = None;
    // After SIGTERM no new receive is issued (a call already under way gets its grace).
    while batch.messages.len() < size && !ctx.stop.is_cancelled() {
        let wait = match deadline {
            None => LONG_POLL_SECONDS,
            Some(d) => {
                let remaining = d.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    break;
                }
                // Whole seconds only: a long poll never outlasts the window.
                remaining.as_secs().min(LONG_POLL_SECONDS as u64) as i32
            }
        };
        let want = (size - batch.messages.len()).min(SQS_BATCH_MAX) as i32;
        let call = receive(ctx, want, wait);
        tokio::pin!(call);
        let received = tokio::select! {
            r = &mut call => r,
            // A receive under way is never dropped: SQS does not notice a client that went
            // away, so a message arriving before the long poll ends would be handed to the
            // dropped call and stay invisible for a visibility timeout, then be received
            // again (seen as a stranded message after every scale-in of an idle worker).
            // The poll ends by itself within its wait; what it returns is processed.
            _ = ctx.stop.cancelled() => match tokio::time::timeout(
                Duration::from_secs(wait as u64) + RECEIVE_GRACE,
                &mut call,
            )
            .await
            {
                Ok(r) => r,
                Err(_) => break,
            },
        };
        let messages = match received {
            Ok(m) => {
                ctx.metrics.environment_recovered("sqs");
                m
            }
            Err(e) if batch.messages.is_empty() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "receive failed while filling a batch; processing what we have");
                break;
            }
        };
        if messages.is_empty() {
            if wait == 0
                && let Some(d) = deadline
            {
                let pause = SHORT_POLL_PAUSE.min(d.saturating_duration_since(Instant::now()));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = ctx.stop.cancelled() => {}
                }
            }
            continue;
        }
        ctx.metrics.received.inc_by(messages.len() as u64);
        // Requeued at receipt, not after the batching window: a replica killed while it
        // collects would add one more lost delivery to a message already near SQS's limit.
        let requeued = requeue_due(ctx, &messages).await;
        let messages: Vec<Message> = messages
            .into_iter()
            .zip(requeued)
            .filter_map(|(m, requeued)| (!requeued).then_some(m))
            .collect();
        if messages.is_empty() {
            continue;
        }
        ctx.metrics.in_flight.inc_by(messages.len() as i64);
        if let Ok(mut r) = batch.receipts.lock() {
            r.extend(messages.iter().filter_map(|m| {
                Some((m.message_id()?.to_string(), m.receipt_handle()?.to_string()))
            }));
        }
        batch.messages.extend(messages);
        if deadline.is_none() {
            deadline = Some(Instant::now() + window);
            batch.heartbeat = spawn_heartbeat(ctx, batch.receipts.clone());
        }
    }
    Ok(batch)
}

async fn receive(ctx: &Ctx, max: i32, wait: i32) -> Result<Vec<Message>> {
    ctx.metrics.call("sqs", "ReceiveMessage");
    let visibility = ctx.config.settings.visibility_timeout_seconds;
    // The visibility the heartbeat assumes, whatever the queue's default is.
    ctx.sqs
        .receive(
            &ctx.config.settings.queue_url,
            max,
            wait,
            (visibility > 0).then_some(visibility as i32),
        )
        .await
}

/// Keeps a batch invisible while it is being collected and processed (work that runs long,
/// or retries during an outage), so SQS neither hands it to another replica nor counts a
/// receive towards `maxReceiveCount` while this replica is still working on it.
fn spawn_heartbeat(
    ctx: &Arc<Ctx>,
    receipts: Arc<Mutex<Vec<(String, String)>>>,
) -> Option<tokio::task::JoinHandle<()>> {
    let visibility = ctx.config.settings.visibility_timeout_seconds;
    if visibility == 0 {
        return None;
    }
    let every = Duration::from_secs(u64::from((visibility / 3).max(1)));
    let ctx = ctx.clone();
    Some(tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let entries: Vec<(String, String)> =
                receipts.lock().map(|r| r.clone()).unwrap_or_default();
            for chunk in entries.chunks(SQS_BATCH_MAX) {
                let batch: Vec<_> = chunk
                    .iter()
                    .enumerate()
                    .filter_map(|(i, (_, receipt))| {
                        ChangeMessageVisibilityBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(receipt)
                            .visibility_timeout(visibility as i32)
                            .build()
                            .ok()
                    })
                    .collect();
                ctx.metrics.call("sqs", "ChangeMessageVisibilityBatch");
                let sent = ctx
                    .sqs
                    .change_message_visibility_batch()
                    .queue_url(&ctx.config.settings.queue_url)
                    .set_entries(Some(batch))
                    .send()
                    .await;
                if let Err(e) = sent {
                    tracing::debug!(error = %Error::aws("sqs.ChangeMessageVisibilityBatch", e), "visibility extension failed");
                }
            }
        }
    }))
}

/// Decide (pure) → write → settle. The heartbeat keeps every unsettled message invisible
/// until its delete is done; a message returned to the queue leaves the heartbeat first, so
/// it keeps its backoff.
async fn process_batch(ctx: &Arc<Ctx>, mut batch: Batch) {
    let started = Instant::now();
    let messages = std::mem::take(&mut batch.messages);
    let mut outcomes: Vec<Option<Outcome>> = (0..messages.len()).map(|_| None).collect();
    // Each update's status (for the day counters), by message index, moved out of the update.
    let mut statuses: Vec<Option<String>> = (0..messages.len()).map(|_| None).collect();
    let mut pending = Vec::new();
    let mut others = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let receives = receive_count(m);
        if receives > 1 {
            // Redeliveries are rare and are what SQS counts towards `maxReceiveCount`: each
            // one is logged, so a message's history can be followed across replicas.
            tracing::info!(
                message_id = m.message_id(),
                source_message_id = requeue::source_message_id(m),
                receives,
                "message received again"
            );
        }
        match model::parse_message(m.body().unwrap_or_default(), sent_at(m)) {
            Ok(Parsed::Update(u)) => {
                let item = u.to_item(
                    requeue::source_message_id(m),
                    &write_token(),
                    Utc::now(),
                    ctx.config.settings.ttl_days,
                );
                statuses[i] = Some(u.status);
                pending.push(Pending { index: i, item });
            }
            parsed => others.push((i, parsed)),
        }
    }
    let (written, other) = futures::join!(
        write_updates(ctx, pending),
        join_all(others.into_iter().map(|(i, parsed)| {
            let message = &messages[i];
            async move { (i, handle_other(ctx, message, parsed).await) }
        })),
    );
    for (i, result) in written {
        let status = statuses[i].as_deref().unwrap_or_default();
        outcomes[i] = Some(settle_write(ctx, &messages[i], status, result));
    }
    for (i, outcome) in other {
        outcomes[i] = Some(outcome);
    }
    let mut deletes = Vec::new();
    for (message, outcome) in messages.iter().zip(outcomes) {
        let outcome = outcome.unwrap_or(Outcome::Leave);
        let receives = receive_count(message);
        if receives > 1 {
            tracing::info!(
                message_id = message.message_id(),
                receives,
                ?outcome,
                "redelivered message settled"
            );
        }
        match outcome {
            Outcome::Delete => {
                if let Some(r) = message.receipt_handle() {
                    deletes.push(r.to_string());
                }
            }
            Outcome::Retry(reason) => {
                ctx.metrics.record_failure(reason);
                forget(&batch, message);
                return_later(ctx, message).await;
            }
            Outcome::Leave | Outcome::Deleted => forget(&batch, message),
        }
    }
    delete(ctx, deletes).await;
    if let Some(h) = batch.heartbeat.take() {
        h.abort();
    }
    ctx.metrics.in_flight.dec_by(messages.len() as i64);
    ctx.metrics
        .batch_seconds
        .observe(started.elapsed().as_secs_f64());
}

/// Requeues the messages SQS would soon move to the DLQ (see [`requeue`]); which ones went.
/// One whose copy could not be sent is processed as it is.
async fn requeue_due(ctx: &Ctx, messages: &[Message]) -> Vec<bool> {
    let from = ctx.requeue_threshold();
    join_all(messages.iter().map(|m| async move {
        if !requeue::due(receive_count(m), requeue::requeues(m), from) {
            return false;
        }
        match requeue::requeue(ctx, m).await {
            Ok(()) => {
                // The copy carries it on; the original is deleted.
                tracing::info!(
                    message_id = m.message_id(),
                    source_message_id = requeue::source_message_id(m),
                    receives = receive_count(m),
                    "message requeued as a fresh copy"
                );
                true
            }
            Err(e) => {
                tracing::warn!(message_id = m.message_id(), error = %e, "could not requeue; processing the message as it is");
                false
            }
        }
    }))
    .await
}

/// SQS's `ApproximateReceiveCount` (1 when SQS did not say).
pub fn receive_count(message: &Message) -> u32 {
    message
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Takes a message out of the heartbeat.
fn forget(batch: &Batch, message: &Message) {
    if let (Ok(mut r), Some(id)) = (batch.receipts.lock(), message.message_id()) {
        r.retain(|(m, _)| m != id);
    }
}

/// Unique per processing attempt: stored on the item, it tells a write whose answer was
/// lost (retried by this attempt) from a duplicate.
pub(crate) fn write_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// SQS's `SentTimestamp` (of the first message, for a requeued copy): the event time of an
/// update that carries none, the same on every redelivery of the message.
pub fn sent_at(message: &Message) -> Option<DateTime<Utc>> {
    let ms: i64 = requeue::source_sent_timestamp(message)?.parse().ok()?;
    DateTime::from_timestamp_millis(ms)
}

fn settle_write(ctx: &Ctx, message: &Message, status: &str, result: Result<Written>) -> Outcome {
    match result {
        Ok(Written::New | Written::Conflict) => {
            ctx.metrics.record_written();
            if let Some(seconds) = seconds_since_sent(message, Utc::now()) {
                ctx.metrics.end_to_end_seconds.observe(seconds);
            }
            ctx.counters.record_status(status);
            Outcome::Delete
        }
        Ok(Written::Duplicate) => {
            ctx.metrics.record_duplicate();
            ctx.counters.record_duplicate();
            Outcome::Delete
        }
        Err(e) => failed(ctx, message, &e, "store"),
    }
}

/// Seconds from SQS's `SentTimestamp` (epoch milliseconds) to `now`; `None` when SQS did not
/// say or the clocks disagree.
fn seconds_since_sent(message: &Message, now: DateTime<Utc>) -> Option<f64> {
    let sent_ms = sent_at(message)?.timestamp_millis();
    let ms = now.timestamp_millis().checked_sub(sent_ms)?;
    (ms >= 0).then(|| ms as f64 / 1000.0)
}

async fn handle_other(
    ctx: &Ctx,
    message: &Message,
    parsed: std::result::Result<Parsed, Poison>,
) -> Outcome {
    match parsed {
        Ok(Parsed::Maintenance(request)) => {
            match crate::maintenance::run_daily(ctx, &request, message).await {
                Ok(()) => Outcome::Delete,
                // Left for the next replica, not counted as a failed attempt.
                Err(_) if ctx.abandon.is_cancelled() => Outcome::Leave,
                Err(e) => failed(ctx, message, &e, "maintenance"),
            }
        }
        // Updates are written by `write_updates`; none reach here.
        Ok(Parsed::Update(_)) => Outcome::Leave,
        Err(poison) => dead_letter(ctx, message, &poison).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_to_end_latency_from_sent_timestamp() {
        let now = chrono::DateTime::from_timestamp_millis(1_700_000_002_500).unwrap();
        let msg = |sent: &str| {
            Message::builder()
                .attributes(MessageSystemAttributeName::SentTimestamp, sent)
                .build()
        };
        assert_eq!(seconds_since_sent(&msg("1700000000000"), now), Some(2.5));
        // A sender clock ahead of ours, garbage, or no attribute: no observation.
        assert_eq!(seconds_since_sent(&msg("1700000009000"), now), None);
        assert_eq!(seconds_since_sent(&msg("soon"), now), None);
        assert_eq!(seconds_since_sent(&Message::builder().build(), now), None);
    }
}

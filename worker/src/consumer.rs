//! The SQS side: receive loops, batching window, concurrent processing, deletes, visibility.
//!
//! Every message settles one of three ways: deleted (written, duplicate, dead-lettered,
//! maintenance done), returned to the queue with a visibility backoff (a failure SQS will
//! redrive after `maxReceiveCount`), or left as is (abandoned at the drain deadline).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageAttributeValue, MessageSystemAttributeName,
};
use chrono::Utc;
use futures::future::join_all;

use crate::config::WriteMode;
use crate::error::{Error, Result};
use crate::model::{self, Parsed, Poison};
use crate::retry::{abandoned, backoff, with_backoff};
use crate::store::{ItemVerdict, PutOutcome, TransactOutcome};
use crate::worker::Ctx;

/// SQS's limit per receive and per batch call.
const SQS_BATCH_MAX: usize = 10;
/// SQS's longest long poll.
const LONG_POLL_SECONDS: i32 = 20;
/// How long SIGTERM waits for a receive call already under way.
const RECEIVE_GRACE: Duration = Duration::from_secs(2);

/// Names of the message attributes put on a dead-lettered poison message.
pub mod dlq_attr {
    pub const REASON: &str = "tracking.poison.reason";
    pub const DETAIL: &str = "tracking.poison.detail";
    pub const SOURCE_MESSAGE_ID: &str = "tracking.source.message_id";
    pub const SOURCE_QUEUE: &str = "tracking.source.queue";
}

/// How a message settled.
#[derive(Debug)]
enum Outcome {
    Delete,
    Retry(&'static str),
    Leave,
}

/// One receiver: receive a batch, process it, settle it; until SIGTERM.
pub async fn receive_loop(ctx: Arc<Ctx>, id: u16) {
    let mut errors = 0u32;
    while !ctx.stop.is_cancelled() {
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

struct Batch {
    messages: Vec<Message>,
    /// (message id, receipt handle) of everything received, for the visibility heartbeat.
    receipts: Arc<Mutex<Vec<(String, String)>>>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Batch {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

/// Receives until the batch is full or the batching window (counted from the first message,
/// like Lambda's `MaximumBatchingWindow`) has passed. SIGTERM ends collection early; what was
/// received is still processed.
async fn collect_batch(ctx: &Arc<Ctx>) -> Result<Batch> {
    let settings = &ctx.config.settings;
    let size = usize::from(settings.batch_size.max(1));
    let window = Duration::from_secs(u64::from(settings.max_batching_window_seconds));
    let mut batch = Batch {
        messages: Vec::new(),
        receipts: Arc::new(Mutex::new(Vec::new())),
        heartbeat: None,
    };
    let mut deadline: Option<Instant> = None;
    while batch.messages.len() < size {
        let wait = match deadline {
            None => LONG_POLL_SECONDS,
            Some(d) => {
                let remaining = d.saturating_duration_since(Instant::now());
                if remaining < Duration::from_secs(1) {
                    break;
                }
                remaining.as_secs().min(LONG_POLL_SECONDS as u64) as i32
            }
        };
        let want = (size - batch.messages.len()).min(SQS_BATCH_MAX) as i32;
        let call = receive(ctx, want, wait);
        tokio::pin!(call);
        let received = tokio::select! {
            r = &mut call => r,
            // A receive that is answering right now may already hold messages: give it a
            // moment, so they are processed now instead of waiting out their visibility
            // timeout; a long poll on an empty queue is dropped.
            _ = ctx.stop.cancelled() => match tokio::time::timeout(RECEIVE_GRACE, &mut call).await {
                Ok(r) => r,
                Err(_) => break,
            },
        };
        let messages = match received {
            Ok(m) => m,
            Err(e) if batch.messages.is_empty() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "receive failed while filling a batch; processing what we have");
                break;
            }
        };
        if messages.is_empty() {
            continue;
        }
        ctx.metrics.received.inc_by(messages.len() as u64);
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
    let out = ctx
        .sqs
        .receive_message()
        .queue_url(&ctx.config.settings.queue_url)
        .max_number_of_messages(max)
        .wait_time_seconds(wait)
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
        .send()
        .await
        .map_err(|e| Error::aws("sqs.ReceiveMessage", e))?;
    Ok(out.messages.unwrap_or_default())
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

async fn process_batch(ctx: &Arc<Ctx>, mut batch: Batch) {
    let started = Instant::now();
    let messages = std::mem::take(&mut batch.messages);
    let mut outcomes: Vec<Option<Outcome>> = (0..messages.len()).map(|_| None).collect();
    let mut updates = Vec::new();
    let mut others = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        match model::parse(m.body().unwrap_or_default()) {
            Ok(Parsed::Update(u)) => updates.push((i, u)),
            parsed => others.push((i, parsed)),
        }
    }
    let (written, other) = futures::join!(
        write_updates(ctx, &messages, updates),
        join_all(others.into_iter().map(|(i, parsed)| {
            let message = &messages[i];
            async move { (i, handle_other(ctx, message, parsed).await) }
        })),
    );
    for (i, outcome) in written.into_iter().chain(other) {
        outcomes[i] = Some(outcome);
    }
    // Stop extending before settling, so a retried message keeps its backoff.
    if let Some(h) = batch.heartbeat.take() {
        h.abort();
    }
    let mut deletes = Vec::new();
    for (message, outcome) in messages.iter().zip(outcomes) {
        match outcome.unwrap_or(Outcome::Leave) {
            Outcome::Delete => {
                if let Some(r) = message.receipt_handle() {
                    deletes.push(r.to_string());
                }
            }
            Outcome::Retry(reason) => {
                ctx.metrics.record_failure(reason);
                return_later(ctx, message).await;
            }
            Outcome::Leave => {}
        }
    }
    delete(ctx, deletes).await;
    ctx.metrics.in_flight.dec_by(messages.len() as i64);
    ctx.metrics
        .batch_seconds
        .observe(started.elapsed().as_secs_f64());
}

/// Most updates a single `TransactWriteItems` call may carry.
const TRANSACT_MAX: usize = 100;

/// Writes a batch's updates: repeats inside the batch are duplicates outright; the rest go
/// to the table as concurrent conditional puts or, in [`WriteMode::Transaction`], in
/// transactions of conditional puts (a lone update in a plain put), a cancelled transaction
/// being retried without the items it names as already written.
async fn write_updates(
    ctx: &Ctx,
    messages: &[Message],
    updates: Vec<(usize, Box<model::TrackingUpdate>)>,
) -> Vec<(usize, Outcome)> {
    let mut out = Vec::with_capacity(updates.len());
    let mut seen = std::collections::HashSet::new();
    let mut pending = Vec::with_capacity(updates.len());
    for (i, update) in updates {
        if seen.insert((update.tracking_id.clone(), update.sort_key())) {
            let item = update.to_item(
                messages[i].message_id().unwrap_or_default(),
                Utc::now(),
                ctx.config.settings.ttl_days,
            );
            pending.push((i, update.status.clone(), item));
        } else {
            ctx.metrics.record_duplicate();
            ctx.counters.record_duplicate();
            out.push((i, Outcome::Delete));
        }
    }
    if ctx.config.write_mode == WriteMode::Put {
        let puts = join_all(pending.iter().map(|(i, status, item)| async move {
            let put = with_backoff(&ctx.metrics, &ctx.abandon, "dynamodb", "PutItem", || {
                ctx.store.put_new(item.clone())
            })
            .await;
            (*i, settle_put(ctx, &messages[*i], status, put))
        }))
        .await;
        out.extend(puts);
        return out;
    }
    for chunk in pending.chunks(TRANSACT_MAX) {
        let mut todo: Vec<&(usize, String, _)> = chunk.iter().collect();
        let mut round = 0u32;
        while !todo.is_empty() {
            if let [(i, status, item)] = todo[..] {
                let put = with_backoff(&ctx.metrics, &ctx.abandon, "dynamodb", "PutItem", || {
                    ctx.store.put_new(item.clone())
                })
                .await;
                out.push((*i, settle_put(ctx, &messages[*i], status, put)));
                break;
            }
            let items: Vec<_> = todo.iter().map(|(_, _, item)| item.clone()).collect();
            let token = transaction_token(&items, round);
            let sent = with_backoff(
                &ctx.metrics,
                &ctx.abandon,
                "dynamodb",
                "TransactWriteItems",
                || ctx.store.put_new_all(&items, &token),
            )
            .await;
            match sent {
                Ok(TransactOutcome::AllWritten) => {
                    for (i, status, _) in &todo {
                        out.push((
                            *i,
                            settle_put(ctx, &messages[*i], status, Ok(PutOutcome::Written)),
                        ));
                    }
                    break;
                }
                Ok(TransactOutcome::Cancelled(verdicts)) => {
                    let mut keep = Vec::with_capacity(todo.len());
                    let mut contended = false;
                    for (entry, verdict) in todo.into_iter().zip(verdicts) {
                        let (i, status, _) = entry;
                        match verdict {
                            ItemVerdict::Fine => keep.push(entry),
                            ItemVerdict::Retry => {
                                contended = true;
                                keep.push(entry);
                            }
                            ItemVerdict::AlreadyExists => out.push((
                                *i,
                                settle_put(
                                    ctx,
                                    &messages[*i],
                                    status,
                                    Ok(PutOutcome::AlreadyExists),
                                ),
                            )),
                            ItemVerdict::Rejected => out.push((*i, Outcome::Retry("store"))),
                        }
                    }
                    if contended {
                        ctx.metrics.throttled("dynamodb", "TransactWriteItems");
                        tokio::time::sleep(backoff(round)).await;
                    }
                    todo = keep;
                    round = round.saturating_add(1);
                }
                Err(e) => {
                    for (i, _, _) in &todo {
                        out.push((*i, failed(ctx, &messages[*i], &e, "store")));
                    }
                    break;
                }
            }
        }
    }
    out
}

/// Same items and round → same token, so a retry of a call whose answer was lost is
/// answered from DynamoDB's idempotency record instead of being applied twice.
fn transaction_token(
    items: &[std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>],
    round: u32,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for item in items {
        for key in [model::attr::TRACKING_ID, model::attr::TIMESTAMP] {
            if let Some(aws_sdk_dynamodb::types::AttributeValue::S(v)) = item.get(key) {
                h.update(v.as_bytes());
            }
            h.update([0]);
        }
    }
    h.update(round.to_be_bytes());
    hex::encode(&h.finalize()[..16])
}

fn settle_put(ctx: &Ctx, message: &Message, status: &str, put: Result<PutOutcome>) -> Outcome {
    match put {
        Ok(PutOutcome::Written) => {
            ctx.metrics.record_written();
            if let Some(seconds) = seconds_since_sent(message, Utc::now()) {
                ctx.metrics.end_to_end_seconds.observe(seconds);
            }
            ctx.counters.record_status(status);
            Outcome::Delete
        }
        Ok(PutOutcome::AlreadyExists) => {
            ctx.metrics.record_duplicate();
            ctx.counters.record_duplicate();
            Outcome::Delete
        }
        Err(e) => failed(ctx, message, &e, "store"),
    }
}

/// Seconds from SQS's `SentTimestamp` (epoch milliseconds) to `now`; `None` when SQS did not
/// say or the clocks disagree.
fn seconds_since_sent(message: &Message, now: chrono::DateTime<Utc>) -> Option<f64> {
    let sent_ms: i64 = message
        .attributes()?
        .get(&MessageSystemAttributeName::SentTimestamp)?
        .parse()
        .ok()?;
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
                Err(e) => failed(ctx, message, &e, "maintenance"),
            }
        }
        Ok(Parsed::Update(u)) => {
            let item = u.to_item(
                message.message_id().unwrap_or_default(),
                Utc::now(),
                ctx.config.settings.ttl_days,
            );
            let put = with_backoff(&ctx.metrics, &ctx.abandon, "dynamodb", "PutItem", || {
                ctx.store.put_new(item.clone())
            })
            .await;
            settle_put(ctx, message, &u.status, put)
        }
        Err(poison) => dead_letter(ctx, message, &poison).await,
    }
}

fn failed(ctx: &Ctx, message: &Message, e: &Error, reason: &'static str) -> Outcome {
    if abandoned(e, &ctx.abandon) {
        return Outcome::Leave;
    }
    tracing::warn!(message_id = message.message_id(), error = %e, "message failed; returning it to the queue");
    Outcome::Retry(reason)
}

/// Poison can never succeed: send it to the DLQ at once, with the reason, and delete it from
/// the main queue only once the DLQ has accepted it.
async fn dead_letter(ctx: &Ctx, message: &Message, poison: &Poison) -> Outcome {
    let settings = &ctx.config.settings;
    let attr = |v: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(if v.is_empty() { "-" } else { v })
            .build()
            .ok()
    };
    let detail: String = poison.to_string().chars().take(512).collect();
    let attributes = [
        (dlq_attr::REASON, attr(poison.code())),
        (dlq_attr::DETAIL, attr(&detail)),
        (
            dlq_attr::SOURCE_MESSAGE_ID,
            attr(message.message_id().unwrap_or_default()),
        ),
        (dlq_attr::SOURCE_QUEUE, attr(&settings.queue_url)),
    ];
    let sent = with_backoff(&ctx.metrics, &ctx.abandon, "sqs", "SendMessage", || async {
        let mut req = ctx
            .sqs
            .send_message()
            .queue_url(&settings.dead_letter_queue_url)
            .message_body(message.body().unwrap_or_default());
        for (name, value) in &attributes {
            if let Some(v) = value {
                req = req.message_attributes(*name, v.clone());
            }
        }
        req.send()
            .await
            .map_err(|e| Error::aws("sqs.SendMessage", e))
    })
    .await;
    match sent {
        Ok(_) => {
            tracing::info!(message_id = message.message_id(), reason = poison.code(), detail = %detail, "poison message dead-lettered");
            ctx.metrics.record_dead_lettered(poison.code());
            ctx.counters.record_dead_lettered();
            Outcome::Delete
        }
        Err(e) => failed(ctx, message, &e, "dead_letter"),
    }
}

/// A failed message goes back to the queue after a backoff that grows with its receive
/// count; SQS moves it to the DLQ after `maxReceiveCount`, as it did for the Lambda.
async fn return_later(ctx: &Ctx, message: &Message) {
    let Some(receipt) = message.receipt_handle() else {
        return;
    };
    let receives: u32 = message
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let delay = retry_delay_seconds(receives, ctx.config.settings.visibility_timeout_seconds);
    ctx.metrics.call("sqs", "ChangeMessageVisibility");
    let changed = ctx
        .sqs
        .change_message_visibility()
        .queue_url(&ctx.config.settings.queue_url)
        .receipt_handle(receipt)
        .visibility_timeout(delay as i32)
        .send()
        .await;
    if let Err(e) = changed {
        tracing::debug!(error = %Error::aws("sqs.ChangeMessageVisibility", e), "could not set the retry backoff; the visibility timeout applies");
    }
}

/// 10 s, 20 s, 40 s, ... capped by the queue's visibility timeout (and SQS's 12 h maximum).
pub fn retry_delay_seconds(receive_count: u32, visibility_timeout: u32) -> u32 {
    let exp = 10u32.saturating_mul(1u32 << receive_count.saturating_sub(1).min(16));
    let cap = if visibility_timeout == 0 {
        43_200
    } else {
        visibility_timeout.min(43_200)
    };
    exp.min(cap)
}

/// Deletes settled messages, ten per call, retrying the entries SQS reports as failed
/// without the sender's fault.
async fn delete(ctx: &Ctx, receipts: Vec<String>) {
    for chunk in receipts.chunks(SQS_BATCH_MAX) {
        let mut todo: Vec<(String, String)> = chunk
            .iter()
            .enumerate()
            .map(|(i, r)| (i.to_string(), r.clone()))
            .collect();
        for round in 0..5u32 {
            let entries: Vec<_> = todo
                .iter()
                .filter_map(|(id, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(id)
                        .receipt_handle(r)
                        .build()
                        .ok()
                })
                .collect();
            let out = with_backoff(
                &ctx.metrics,
                &ctx.abandon,
                "sqs",
                "DeleteMessageBatch",
                || async {
                    ctx.sqs
                        .delete_message_batch()
                        .queue_url(&ctx.config.settings.queue_url)
                        .set_entries(Some(entries.clone()))
                        .send()
                        .await
                        .map_err(|e| Error::aws("sqs.DeleteMessageBatch", e))
                },
            )
            .await;
            let failed = match out {
                Ok(out) => out.failed,
                Err(e) => {
                    tracing::warn!(error = %e, "delete failed; the messages will be redelivered and absorbed as duplicates");
                    return;
                }
            };
            let retry: Vec<String> = failed
                .iter()
                .filter(|f| {
                    if f.sender_fault {
                        tracing::warn!(code = f.code, message = f.message, "delete rejected; the message will be redelivered and absorbed as a duplicate");
                    }
                    !f.sender_fault
                })
                .map(|f| f.id.clone())
                .collect();
            todo.retain(|(id, _)| retry.contains(id));
            if todo.is_empty() {
                break;
            }
            tokio::time::sleep(backoff(round)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_and_is_capped() {
        assert_eq!(retry_delay_seconds(1, 150), 10);
        assert_eq!(retry_delay_seconds(2, 150), 20);
        assert_eq!(retry_delay_seconds(3, 150), 40);
        assert_eq!(retry_delay_seconds(9, 150), 150);
        assert_eq!(retry_delay_seconds(40, 0), 43_200);
    }

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

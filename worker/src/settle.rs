//! Settle: what happens to a message once its fate is known — deleted, dead-lettered (poison),
//! or returned to the queue with a backoff.

use std::collections::HashMap;

use aws_sdk_sqs::types::{Message, MessageAttributeValue};
use chrono::Utc;

use crate::error::{Error, Result};
use crate::model::{Poison, attr, s, ttl_attr};
use crate::retry::{abandoned, backoff, with_backoff};
use crate::worker::Ctx;

/// SQS's limit per batch call.
pub const SQS_BATCH_MAX: usize = 10;

/// Partition key of the markers that record a poison message as dead-lettered (sort key: the
/// source message id), so a redelivery after a failed delete does not send it again.
pub const PK_DEAD_LETTERED: &str = "#DEAD_LETTERED";
/// How long a marker is kept: the source queue's longest retention (14 days).
const MARKER_TTL_DAYS: u32 = 14;

/// Names of the message attributes put on a dead-lettered poison message.
pub mod dlq_attr {
    pub const REASON: &str = "tracking.poison.reason";
    pub const DETAIL: &str = "tracking.poison.detail";
    pub const SOURCE_MESSAGE_ID: &str = "tracking.source.message_id";
    pub const SOURCE_QUEUE: &str = "tracking.source.queue";
}

/// How a message settled.
#[derive(Debug)]
pub enum Outcome {
    Delete,
    /// Already deleted (or requeued) by its handler: only taken out of the heartbeat.
    Deleted,
    Retry(&'static str),
    Leave,
}

pub fn failed(ctx: &Ctx, message: &Message, e: &Error, reason: &'static str) -> Outcome {
    if abandoned(e, &ctx.abandon) {
        return Outcome::Leave;
    }
    tracing::warn!(message_id = message.message_id(), error = %e, "message failed; returning it to the queue");
    Outcome::Retry(reason)
}

/// Poison can never succeed: send it to the DLQ at once, with the reason, and delete it from
/// the main queue as soon as the DLQ has accepted it, on its own rather than with its batch:
/// until then a lost delivery (the replica killed) would make the next one send it again,
/// and a batch waits for its slowest write (for the whole of a DynamoDB outage). A marker
/// item keyed by the source message id, written after the delete, makes a redelivery (the
/// delete failed) skip the send: the poison reaches the DLQ once.
pub async fn dead_letter(ctx: &Ctx, message: &Message, poison: &Poison) -> Outcome {
    dead_letter_from(ctx, message, poison, &ctx.config.settings.queue_url).await
}

/// [`dead_letter`] for a message received from `queue_url` (the DLQ itself, for poison SQS
/// moved there without a reason: see [`crate::sweep`]).
pub async fn dead_letter_from(
    ctx: &Ctx,
    message: &Message,
    poison: &Poison,
    queue_url: &str,
) -> Outcome {
    // A requeued copy is the message first received: one marker for all copies.
    let message_id = crate::requeue::source_message_id(message);
    if !message_id.is_empty() {
        let marker = with_backoff(&ctx.metrics, &ctx.abandon, "dynamodb", "GetItem", || {
            ctx.store.get(PK_DEAD_LETTERED, message_id)
        })
        .await;
        match marker {
            Ok(Some(_)) => {
                tracing::info!(
                    message_id,
                    "poison already dead-lettered by an earlier delivery; deleting it"
                );
                return Outcome::Delete;
            }
            Ok(None) => {}
            Err(e) => return failed(ctx, message, &e, "dead_letter"),
        }
    }
    let detail: String = poison.to_string().chars().take(512).collect();
    match send_to_dlq(ctx, message, poison.code(), &detail).await {
        Ok(()) => {
            tracing::info!(message_id, reason = poison.code(), detail = %detail, "poison message dead-lettered");
            ctx.metrics.record_dead_lettered(poison.code());
            ctx.counters.record_dead_lettered();
            if let Some(receipt) = message.receipt_handle() {
                delete_from(ctx, queue_url, vec![receipt.to_string()]).await;
            }
            // Also after a delete SQS accepted: a stale receipt handle (the message was
            // received again meanwhile) is accepted without deleting it.
            if !message_id.is_empty() {
                record_marker(ctx, message_id, poison.code()).await;
            }
            Outcome::Deleted
        }
        Err(e) => failed(ctx, message, &e, "dead_letter"),
    }
}

async fn send_to_dlq(ctx: &Ctx, message: &Message, code: &str, detail: &str) -> Result<()> {
    let settings = &ctx.config.settings;
    let attr_value = |v: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(if v.is_empty() { "-" } else { v })
            .build()
            .ok()
    };
    let attributes = [
        (dlq_attr::REASON, attr_value(code)),
        (dlq_attr::DETAIL, attr_value(detail)),
        (
            dlq_attr::SOURCE_MESSAGE_ID,
            attr_value(crate::requeue::source_message_id(message)),
        ),
        (dlq_attr::SOURCE_QUEUE, attr_value(&settings.queue_url)),
    ];
    with_backoff(&ctx.metrics, &ctx.abandon, "sqs", "SendMessage", || async {
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
    .await
    .map(|_| ())
}

/// The marker is best effort: if it cannot be written the message is still deleted (and
/// only a failed delete on top of that could send it twice).
async fn record_marker(ctx: &Ctx, message_id: &str, code: &str) {
    let now = Utc::now();
    let item = HashMap::from([
        (attr::TRACKING_ID.to_string(), s(PK_DEAD_LETTERED)),
        (attr::TIMESTAMP.to_string(), s(message_id)),
        ("reason".to_string(), s(code)),
        (attr::TTL.to_string(), ttl_attr(now, MARKER_TTL_DAYS)),
    ]);
    let put = with_backoff(&ctx.metrics, &ctx.abandon, "dynamodb", "PutItem", || {
        ctx.store.put_new(item.clone())
    })
    .await;
    if let Err(e) = put {
        tracing::warn!(message_id, error = %e, "could not record the dead-letter marker");
    }
}

/// A failed message goes back to the queue after a backoff that grows with its receive
/// count; SQS moves it to the DLQ after `maxReceiveCount`, as it did for the Lambda.
pub async fn return_later(ctx: &Ctx, message: &Message) {
    let Some(receipt) = message.receipt_handle() else {
        return;
    };
    let receives = crate::consumer::receive_count(message);
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

/// Deletes settled messages, ten per call, the chunks concurrently (a batch of 100 is one
/// round trip, not ten in a row). A chunk that fails does not stop the others; entries SQS
/// reports as failed without the sender's fault are retried; every message left undeleted is
/// counted (`failures_total{reason="delete"}`): it will be redelivered and absorbed as a
/// duplicate.
pub async fn delete(ctx: &Ctx, receipts: Vec<String>) -> usize {
    delete_from(ctx, &ctx.config.settings.queue_url, receipts).await
}

/// [`delete`] from the queue `queue_url`.
pub async fn delete_from(ctx: &Ctx, queue_url: &str, receipts: Vec<String>) -> usize {
    let undeleted: usize = futures::future::join_all(
        receipts
            .chunks(SQS_BATCH_MAX)
            .map(|chunk| delete_chunk(ctx, queue_url, chunk)),
    )
    .await
    .into_iter()
    .sum();
    for _ in 0..undeleted {
        ctx.metrics.record_failure("delete");
    }
    undeleted
}

/// One `DeleteMessageBatch` of up to ten, with its failed entries retried; returns how many
/// stay undeleted.
async fn delete_chunk(ctx: &Ctx, queue_url: &str, chunk: &[String]) -> usize {
    let mut undeleted = 0;
    let mut todo: Vec<(String, &str)> = chunk
        .iter()
        .enumerate()
        .map(|(i, r)| (i.to_string(), r.as_str()))
        .collect();
    for round in 0..5u32 {
        let out = with_backoff(
            &ctx.metrics,
            &ctx.abandon,
            "sqs",
            "DeleteMessageBatch",
            || ctx.sqs.delete_batch(queue_url, &todo),
        )
        .await;
        let failed = match out {
            Ok(failed) => failed,
            Err(e) => {
                tracing::warn!(error = %e, "delete failed; the messages will be redelivered and absorbed as duplicates");
                break;
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
        undeleted += failed.len() - retry.len();
        todo.retain(|(id, _)| retry.contains(id));
        if todo.is_empty() || round == 4 {
            break;
        }
        tokio::time::sleep(backoff(round)).await;
    }
    undeleted + todo.len()
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
}

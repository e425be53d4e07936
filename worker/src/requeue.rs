//! Requeue: a message that SQS is about to move to the DLQ goes back to the main queue as a
//! fresh copy instead.
//!
//! The worker never gives up on a message for the backend's sake (throttling, outages and
//! environment errors are retried in process, poison is dead-lettered with its reason), so
//! the only failures SQS's redrive policy still sees are *lost deliveries*: a replica that is
//! SIGKILLed (OOM, node loss, a crash loop) while it holds the message, or whose receive call
//! SQS answered as it died. SQS counts each one, and after `maxReceiveCount` of them moves a
//! valid update to the DLQ without a reason, even though nothing was wrong with it (often its
//! item is already written). So, from the receive before the last one
//! ([`threshold`]), the worker first sends a copy with the same body, the producer's
//! attributes, and the original's identity ([`attr`]: message id, `SentTimestamp`, how many
//! times it was requeued), then deletes the original; the copy starts again at zero
//! receives and is processed as the original would have been (the same item key, the same
//! poison marker). A copy is requeued at most [`MAX_REQUEUES`] times: a message that keeps
//! being lost that often (one that crashes the worker) is left to SQS's redrive.

use std::collections::HashMap;

use aws_sdk_sqs::types::{Message, MessageAttributeValue, QueueAttributeName};

use crate::error::{Error, Result};
use crate::retry::with_backoff;
use crate::worker::Ctx;

/// Requeues of one message, at most; then SQS's redrive policy applies.
pub const MAX_REQUEUES: u32 = 3;

/// The message attributes a requeued copy carries (under `tracking.`, the prefix the DLQ
/// tools do not carry over).
pub mod attr {
    /// The id of the message first received, for the item's `message_id` and the poison
    /// marker: every copy is that message.
    pub const SOURCE_MESSAGE_ID: &str = "tracking.requeue.source_message_id";
    /// The first message's `SentTimestamp` (epoch ms): the event time of an update without a
    /// `timestamp`, so a copy has the same key.
    pub const SOURCE_SENT_TIMESTAMP: &str = "tracking.requeue.source_sent_timestamp";
    /// How many times the message was requeued.
    pub const COUNT: &str = "tracking.requeue.count";
}

/// `maxReceiveCount` from a queue's `RedrivePolicy` (AWS answers a number, some emulators a
/// string); `None` without one.
pub fn max_receive_count(redrive_policy: &str) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_str(redrive_policy).ok()?;
    match v.get("maxReceiveCount")? {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The receive count from which a message is requeued before it is processed: the one
/// before the last, because the last delivery itself can be lost (a receive answered to a
/// replica as it was killed is counted by SQS without the worker ever seeing the message);
/// the last one for `maxReceiveCount` 2. `None` for 1: every first delivery is the last, and
/// whoever set 1 wants no retries.
pub fn threshold(max_receive_count: u32) -> Option<u32> {
    match max_receive_count {
        0 | 1 => None,
        2 => Some(2),
        n => Some(n - 1),
    }
}

/// Whether a message received for the `receives`-th time, requeued `requeues` times so far,
/// goes back to the queue before it is processed.
pub fn due(receives: u32, requeues: u32, threshold: Option<u32>) -> bool {
    threshold.is_some_and(|t| receives >= t) && requeues < MAX_REQUEUES
}

fn text_attr<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    message
        .message_attributes()?
        .get(name)?
        .string_value()
        .filter(|v| !v.is_empty())
}

/// How many times this message was requeued.
pub fn requeues(message: &Message) -> u32 {
    text_attr(message, attr::COUNT)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The id of the message as the producer sent it (a requeued copy names it).
pub fn source_message_id(message: &Message) -> &str {
    text_attr(message, attr::SOURCE_MESSAGE_ID)
        .or(message.message_id())
        .unwrap_or_default()
}

/// The first message's `SentTimestamp`, as SQS states it (epoch ms).
pub fn source_sent_timestamp(message: &Message) -> Option<&str> {
    text_attr(message, attr::SOURCE_SENT_TIMESTAMP).or_else(|| {
        message
            .attributes()?
            .get(&aws_sdk_sqs::types::MessageSystemAttributeName::SentTimestamp)
            .map(String::as_str)
    })
}

/// Reads the main queue's `maxReceiveCount` (at start: the operator sets it with the queue)
/// and stores the requeue threshold in the context. Without a readable policy nothing is
/// requeued, which is what the worker did before.
pub async fn load_threshold(ctx: &Ctx) {
    let read = with_backoff(
        &ctx.metrics,
        &ctx.abandon,
        "sqs",
        "GetQueueAttributes",
        || async {
            ctx.sqs
                .get_queue_attributes()
                .queue_url(&ctx.config.settings.queue_url)
                .attribute_names(QueueAttributeName::RedrivePolicy)
                .send()
                .await
                .map_err(|e| Error::aws("sqs.GetQueueAttributes", e))
        },
    );
    // A bounded wait: the worker must start even if SQS answers slowly.
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), read).await;
    let policy = match read {
        Ok(Ok(out)) => out
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy).cloned()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read the queue's redrive policy; messages are not requeued before SQS's redrive");
            None
        }
        Err(_) => {
            tracing::warn!(
                "reading the queue's redrive policy timed out; messages are not requeued before SQS's redrive"
            );
            None
        }
    };
    let max = policy.as_deref().and_then(max_receive_count);
    let from = max.and_then(threshold);
    ctx.set_requeue_threshold(from);
    tracing::info!(max_receive_count = ?max, requeue_from_receive = ?from, "redrive policy read");
}

/// Sends the copy, then deletes the original (right away: between the two, a lost original
/// would be moved by SQS). A copy too many (killed between the two) is absorbed like any
/// redelivery.
pub async fn requeue(ctx: &Ctx, message: &Message) -> Result<()> {
    let queue_url = &ctx.config.settings.queue_url;
    let string = |v: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
            .ok()
    };
    let mut attributes: HashMap<String, MessageAttributeValue> = message
        .message_attributes()
        .map(|a| {
            a.iter()
                .filter(|(k, _)| !k.starts_with("tracking.requeue."))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let own = [
        (attr::SOURCE_MESSAGE_ID, Some(source_message_id(message))),
        (attr::SOURCE_SENT_TIMESTAMP, source_sent_timestamp(message)),
    ];
    for (name, value) in own {
        if let Some(v) = value.and_then(string) {
            attributes.insert(name.to_string(), v);
        }
    }
    if let Some(v) = string(&(requeues(message) + 1).to_string()) {
        attributes.insert(attr::COUNT.to_string(), v);
    }
    with_backoff(&ctx.metrics, &ctx.abandon, "sqs", "SendMessage", || async {
        ctx.sqs
            .send_message()
            .queue_url(queue_url)
            .message_body(message.body().unwrap_or_default())
            .set_message_attributes(Some(attributes.clone()))
            .send()
            .await
            .map_err(|e| Error::aws("sqs.SendMessage", e))
    })
    .await?;
    ctx.metrics.requeued.inc();
    if let Some(receipt) = message.receipt_handle() {
        crate::settle::delete(ctx, vec![receipt.to_string()]).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_is_read_as_aws_and_emulators_write_it() {
        assert_eq!(
            max_receive_count(r#"{"deadLetterTargetArn":"a","maxReceiveCount":3}"#),
            Some(3)
        );
        assert_eq!(
            max_receive_count(r#"{"maxReceiveCount":"5","deadLetterTargetArn":"a"}"#),
            Some(5)
        );
        assert_eq!(max_receive_count("{}"), None);
        assert_eq!(max_receive_count("not json"), None);
    }

    #[test]
    fn requeued_from_the_receive_before_the_last_and_at_most_three_times() {
        assert_eq!(threshold(1), None);
        assert_eq!(threshold(2), Some(2));
        assert_eq!(threshold(3), Some(2));
        assert_eq!(threshold(10), Some(9));
        assert!(!due(1, 0, Some(2)));
        assert!(due(2, 0, Some(2)));
        assert!(due(3, 2, Some(2)));
        assert!(!due(3, MAX_REQUEUES, Some(2)));
        assert!(!due(5, 0, None));
    }

    #[test]
    fn a_copy_names_the_first_message() {
        let text = |v: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .unwrap()
        };
        let original = Message::builder()
            .message_id("m1")
            .attributes(
                aws_sdk_sqs::types::MessageSystemAttributeName::SentTimestamp,
                "1700000000000",
            )
            .build();
        assert_eq!(source_message_id(&original), "m1");
        assert_eq!(source_sent_timestamp(&original), Some("1700000000000"));
        assert_eq!(requeues(&original), 0);
        let copy = Message::builder()
            .message_id("m2")
            .attributes(
                aws_sdk_sqs::types::MessageSystemAttributeName::SentTimestamp,
                "1700000099000",
            )
            .message_attributes(attr::SOURCE_MESSAGE_ID, text("m1"))
            .message_attributes(attr::SOURCE_SENT_TIMESTAMP, text("1700000000000"))
            .message_attributes(attr::COUNT, text("1"))
            .build();
        assert_eq!(source_message_id(&copy), "m1");
        assert_eq!(source_sent_timestamp(&copy), Some("1700000000000"));
        assert_eq!(requeues(&copy), 1);
    }
}

//! The SQS client as the worker uses it: the hot-path calls (`ReceiveMessage`,
//! `DeleteMessageBatch`) through the [`Lean`] client when it is on, everything else (and
//! the hot path when it is off) through the SDK.

use std::sync::Arc;

use aws_sdk_sqs::types::{
    BatchResultErrorEntry, DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName,
};

use crate::error::{Error, Result};
use crate::lean::Lean;

#[derive(Clone)]
pub struct Sqs {
    sdk: aws_sdk_sqs::Client,
    lean: Option<Arc<Lean>>,
}

/// The SDK client, for every call that is not on the hot path.
impl std::ops::Deref for Sqs {
    type Target = aws_sdk_sqs::Client;
    fn deref(&self) -> &Self::Target {
        &self.sdk
    }
}

impl Sqs {
    pub fn new(sdk: aws_sdk_sqs::Client, lean: Option<Arc<Lean>>) -> Self {
        Self { sdk, lean }
    }

    /// Whether the hot-path calls go through the lean client.
    pub fn is_lean(&self) -> bool {
        self.lean.is_some()
    }

    /// Up to `max` messages with their `ApproximateReceiveCount` and `SentTimestamp`.
    pub async fn receive(
        &self,
        queue_url: &str,
        max: i32,
        wait: i32,
        visibility: Option<i32>,
    ) -> Result<Vec<Message>> {
        if let Some(lean) = &self.lean {
            return lean.receive(queue_url, max, wait, visibility).await;
        }
        let out = self
            .sdk
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(max)
            .wait_time_seconds(wait)
            .set_visibility_timeout(visibility)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            // The producer's attributes, carried over by a requeue, and the requeue's own.
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| Error::aws("sqs.ReceiveMessage", e))?;
        Ok(out.messages.unwrap_or_default())
    }

    /// One `DeleteMessageBatch` of (entry id, receipt handle); the entries SQS did not delete.
    pub async fn delete_batch(
        &self,
        queue_url: &str,
        entries: &[(String, &str)],
    ) -> Result<Vec<BatchResultErrorEntry>> {
        if let Some(lean) = &self.lean {
            return lean.delete_batch(queue_url, entries).await;
        }
        let entries: Vec<_> = entries
            .iter()
            .filter_map(|(id, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(id)
                    .receipt_handle(*r)
                    .build()
                    .ok()
            })
            .collect();
        let out = self
            .sdk
            .delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| Error::aws("sqs.DeleteMessageBatch", e))?;
        Ok(out.failed)
    }
}

//! `ReceiveMessage` and `DeleteMessageBatch`, answered with the SDK's own types, so the rest
//! of the worker does not know which client made the call.

use std::collections::HashMap;

use aws_sdk_sqs::types::{
    BatchResultErrorEntry, Message, MessageAttributeValue, MessageSystemAttributeName,
};
use aws_smithy_types::Blob;
use serde::{Deserialize, Serialize};

use super::{Lean, Service};
use crate::error::{Error, ErrorClass, Result};

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Receive<'a> {
    queue_url: &'a str,
    max_number_of_messages: i32,
    wait_time_seconds: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    visibility_timeout: Option<i32>,
    message_system_attribute_names: [&'static str; 2],
    /// The producer's attributes (carried over by a requeue) and the requeue's own.
    message_attribute_names: [&'static str; 1],
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Received {
    #[serde(default)]
    messages: Vec<Received1>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Received1 {
    message_id: Option<String>,
    receipt_handle: Option<String>,
    #[serde(rename = "MD5OfBody")]
    md5_of_body: Option<String>,
    body: Option<String>,
    attributes: Option<HashMap<String, String>>,
    message_attributes: Option<HashMap<String, ReceivedAttribute>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReceivedAttribute {
    data_type: String,
    string_value: Option<String>,
    /// Base64, as the JSON protocol carries binary.
    binary_value: Option<String>,
}

impl ReceivedAttribute {
    fn into_sdk(self) -> Option<MessageAttributeValue> {
        let binary = match self.binary_value {
            Some(b) => Some(Blob::new(aws_smithy_types::base64::decode(b).ok()?)),
            None => None,
        };
        MessageAttributeValue::builder()
            .data_type(self.data_type)
            .set_string_value(self.string_value)
            .set_binary_value(binary)
            .build()
            .ok()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Delete<'a> {
    queue_url: &'a str,
    entries: Vec<Entry<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Entry<'a> {
    id: &'a str,
    receipt_handle: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Deleted {
    #[serde(default)]
    failed: Vec<Failed>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Failed {
    id: String,
    #[serde(default)]
    sender_fault: bool,
    code: String,
    message: Option<String>,
}

/// An answer that is not what the operation returns: as the SDK's response error, transient.
fn unreadable(operation: &'static str, e: serde_json::Error) -> Error {
    Error::Aws {
        operation,
        class: ErrorClass::Transient,
        code: None,
        message: format!("response error: {e}"),
    }
}

impl Lean {
    /// Up to `max` messages with their `ApproximateReceiveCount` and `SentTimestamp`,
    /// long-polling `wait` seconds; `visibility` as `ReceiveMessage`'s `VisibilityTimeout`.
    pub async fn receive(
        &self,
        queue_url: &str,
        max: i32,
        wait: i32,
        visibility: Option<i32>,
    ) -> Result<Vec<Message>> {
        const OP: &str = "sqs.ReceiveMessage";
        let body = serde_json::to_vec(&Receive {
            queue_url,
            max_number_of_messages: max,
            wait_time_seconds: wait,
            visibility_timeout: visibility,
            message_system_attribute_names: ["ApproximateReceiveCount", "SentTimestamp"],
            message_attribute_names: ["All"],
        })
        .map_err(|e| unreadable(OP, e))?;
        let answer = self
            .call(Service::Sqs, "ReceiveMessage", body)
            .await
            .map_err(|f| f.into_error(OP))?;
        let received: Received = serde_json::from_slice(&answer).map_err(|e| unreadable(OP, e))?;
        Ok(received
            .messages
            .into_iter()
            .map(|m| {
                Message::builder()
                    .set_message_id(m.message_id)
                    .set_receipt_handle(m.receipt_handle)
                    .set_md5_of_body(m.md5_of_body)
                    .set_body(m.body)
                    .set_attributes(m.attributes.map(|a| {
                        a.into_iter()
                            .map(|(k, v)| (MessageSystemAttributeName::from(k.as_str()), v))
                            .collect()
                    }))
                    .set_message_attributes(m.message_attributes.map(|a| {
                        a.into_iter()
                            .filter_map(|(k, v)| Some((k, v.into_sdk()?)))
                            .collect()
                    }))
                    .build()
            })
            .collect())
    }

    /// One `DeleteMessageBatch` of (entry id, receipt handle); the entries SQS did not delete.
    pub async fn delete_batch(
        &self,
        queue_url: &str,
        entries: &[(String, &str)],
    ) -> Result<Vec<BatchResultErrorEntry>> {
        const OP: &str = "sqs.DeleteMessageBatch";
        let body = serde_json::to_vec(&Delete {
            queue_url,
            entries: entries
                .iter()
                .map(|(id, receipt_handle)| Entry { id, receipt_handle })
                .collect(),
        })
        .map_err(|e| unreadable(OP, e))?;
        let answer = self
            .call(Service::Sqs, "DeleteMessageBatch", body)
            .await
            .map_err(|f| f.into_error(OP))?;
        let deleted: Deleted = serde_json::from_slice(&answer).map_err(|e| unreadable(OP, e))?;
        Ok(deleted
            .failed
            .into_iter()
            .filter_map(|f| {
                BatchResultErrorEntry::builder()
                    .id(f.id)
                    .sender_fault(f.sender_fault)
                    .code(f.code)
                    .set_message(f.message)
                    .build()
                    .ok()
            })
            .collect())
    }
}

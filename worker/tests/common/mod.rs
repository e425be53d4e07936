//! Helpers shared by the worker's integration tests: a pipeline's queue, DLQ and table
//! created in moto, paced sending (moto's SQS slows with depth), and reading results back.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::{
    Message, MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use tracking_worker::config::Config;
use tracking_worker::contract::WorkerSettings;
use tracking_worker::model::{Parsed, attr, parse};

#[derive(Clone)]
pub struct Pipeline {
    pub sqs: aws_sdk_sqs::Client,
    pub ddb: aws_sdk_dynamodb::Client,
    pub queue_url: String,
    pub dlq_url: String,
    pub table: String,
    pub visibility: u32,
}

/// Creates a DLQ, a queue redriving to it after 3 receives, and the audit table.
pub async fn pipeline(prefix: &str, visibility: u32) -> Pipeline {
    let sdk = testenv::moto().sdk_config().await;
    pipeline_on(
        aws_sdk_sqs::Client::new(&sdk),
        aws_sdk_dynamodb::Client::new(&sdk),
        prefix,
        visibility,
    )
    .await
}

/// The same on other backends (the soak's ElasticMQ and DynamoDB Local).
pub async fn pipeline_on(
    sqs: aws_sdk_sqs::Client,
    ddb: aws_sdk_dynamodb::Client,
    prefix: &str,
    visibility: u32,
) -> Pipeline {
    let name = testenv::unique_name(prefix);
    let dlq_url = sqs
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await
        .expect("create DLQ")
        .queue_url
        .expect("DLQ url");
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("DLQ attributes")
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("DLQ arn");
    let queue_url = sqs
        .create_queue()
        .queue_name(&name)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility.to_string(),
        )
        .attributes(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3}).to_string(),
        )
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url");
    create_table(&ddb, &name).await;
    Pipeline {
        sqs,
        ddb,
        queue_url,
        dlq_url,
        table: name,
        visibility,
    }
}

/// Creates an audit table as the operator does: keys, `StatusIndex`, TTL.
pub async fn create_table(ddb: &aws_sdk_dynamodb::Client, name: &str) {
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .expect("key")
    };
    let def = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("attribute")
    };
    ddb.create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(attr::TRACKING_ID, KeyType::Hash))
        .key_schema(key(attr::TIMESTAMP, KeyType::Range))
        .attribute_definitions(def(attr::TRACKING_ID))
        .attribute_definitions(def(attr::TIMESTAMP))
        .attribute_definitions(def(attr::STATUS))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(attr::STATUS_INDEX)
                .key_schema(key(attr::STATUS, KeyType::Hash))
                .key_schema(key(attr::TIMESTAMP, KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .expect("gsi"),
        )
        .send()
        .await
        .expect("create table");
    ddb.update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(attr::TTL)
                .build()
                .expect("ttl"),
        )
        .send()
        .await
        .expect("enable TTL");
}

impl Pipeline {
    /// Worker settings for this pipeline, talking to `endpoint`.
    pub fn settings(&self, endpoint: &str) -> WorkerSettings {
        WorkerSettings {
            queue_url: self.queue_url.clone(),
            dead_letter_queue_url: self.dlq_url.clone(),
            table_name: self.table.clone(),
            pipeline: format!("tests/{}", self.table),
            batch_size: 10,
            max_batching_window_seconds: 1,
            concurrency: 4,
            ttl_days: 90,
            visibility_timeout_seconds: self.visibility,
            metrics_namespace: "TrackingOperator/Tests".into(),
            metrics_addr: "127.0.0.1:0".into(),
            region: Some(testenv::REGION.into()),
            endpoint_url: Some(endpoint.into()),
        }
    }

    pub fn config(&self, endpoint: &str) -> Config {
        let mut c = Config::new(self.settings(endpoint));
        c.drain = Duration::from_secs(20);
        c
    }

    /// Sends `bodies` in batches of ten, waiting while more than `max_depth` messages are
    /// visible, so moto's queue stays shallow.
    pub async fn send_paced(&self, bodies: &[String], max_depth: u64) {
        for chunk in bodies.chunks(10) {
            while self.depth().await.0 > max_depth {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            send_batch(&self.sqs, &self.queue_url, chunk).await;
        }
    }

    /// (visible, in flight) on the main queue.
    pub async fn depth(&self) -> (u64, u64) {
        queue_depth(&self.sqs, &self.queue_url).await
    }

    pub async fn dlq_depth(&self) -> (u64, u64) {
        queue_depth(&self.sqs, &self.dlq_url).await
    }

    /// Every item of the table.
    pub async fn items(&self) -> Vec<HashMap<String, AttributeValue>> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .ddb
                .scan()
                .table_name(&self.table)
                .set_exclusive_start_key(start)
                .send()
                .await
                .expect("scan");
            out.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if start.is_none() {
                return out;
            }
        }
    }

    /// (tracking_id, timestamp) of every item whose partition key is not bookkeeping.
    pub async fn update_keys(&self) -> Vec<(String, String)> {
        self.items()
            .await
            .iter()
            .filter_map(|i| {
                let pk = i.get(attr::TRACKING_ID)?.as_s().ok()?;
                let sk = i.get(attr::TIMESTAMP)?.as_s().ok()?;
                (!pk.starts_with('#')).then(|| (pk.clone(), sk.clone()))
            })
            .collect()
    }

    /// Receives everything in the DLQ (with message attributes), leaving it invisible.
    pub async fn drain_dlq(&self, expected: usize) -> Vec<Message> {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while out.len() < expected && Instant::now() < deadline {
            let page = self
                .sqs
                .receive_message()
                .queue_url(&self.dlq_url)
                .max_number_of_messages(10)
                .visibility_timeout(300)
                .wait_time_seconds(1)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .expect("receive DLQ");
            out.extend(page.messages.unwrap_or_default());
        }
        out
    }
}

pub async fn queue_depth(sqs: &aws_sdk_sqs::Client, url: &str) -> (u64, u64) {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("queue attributes");
    let get = |n: QueueAttributeName| {
        out.attributes()
            .and_then(|a| a.get(&n))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (
        get(QueueAttributeName::ApproximateNumberOfMessages),
        get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

/// The keys the distinct updates must have in the table.
pub fn expected_keys(distinct: &[String]) -> BTreeSet<(String, String)> {
    distinct
        .iter()
        .filter_map(|b| match parse(b) {
            Ok(Parsed::Update(u)) => Some((u.tracking_id.clone(), u.sort_key())),
            _ => None,
        })
        .collect()
}

/// Polls `cond` until it holds; panics with `what` after `limit` (a safety net against a
/// hung test, not a performance assertion).
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !cond().await {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held, so the caller can
/// say what it saw last.
pub async fn poll_until<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

impl Pipeline {
    /// The worker's shared context against this pipeline, for tests that drive one phase
    /// (receive, write, settle) directly against moto.
    pub async fn ctx(&self) -> tracking_worker::Ctx {
        self.ctx_at(&testenv::moto().endpoint()).await
    }

    /// The same, talking to `endpoint` (a fault proxy in front of moto).
    pub async fn ctx_at(&self, endpoint: &str) -> tracking_worker::Ctx {
        let sdk = testenv::sdk_config_for(endpoint).await;
        tracking_worker::Ctx::new(self.config(endpoint), &sdk)
    }

    /// The items of one tracking id.
    pub async fn items_of(&self, tracking_id: &str) -> Vec<HashMap<String, AttributeValue>> {
        self.items()
            .await
            .into_iter()
            .filter(|i| {
                i.get(attr::TRACKING_ID)
                    .and_then(|v| v.as_s().ok())
                    .is_some_and(|v| v == tracking_id)
            })
            .collect()
    }
}

/// The text of a string attribute.
pub fn text<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

/// (body, reason) of every DLQ message.
pub fn dlq_reasons(messages: &[Message]) -> Vec<(String, String)> {
    messages
        .iter()
        .map(|m| {
            let reason = m
                .message_attributes()
                .and_then(|a| a.get(tracking_worker::consumer::dlq_attr::REASON))
                .and_then(|v| v.string_value())
                .unwrap_or("none")
                .to_string();
            (m.body().unwrap_or_default().to_string(), reason)
        })
        .collect()
}

/// Sends up to ten `bodies` in one `SendMessageBatch`; any entry SQS refuses fails the test.
pub async fn send_batch(sqs: &aws_sdk_sqs::Client, queue_url: &str, bodies: &[String]) {
    let entries: Vec<_> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(b)
                .build()
                .expect("entry")
        })
        .collect();
    let out = sqs
        .send_message_batch()
        .queue_url(queue_url)
        .set_entries(Some(entries))
        .send()
        .await
        .expect("send batch");
    assert!(out.failed.is_empty(), "send failed: {:?}", out.failed);
}

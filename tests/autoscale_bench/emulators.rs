//! The data path on ElasticMQ + DynamoDB Local (bench/autoscale/run.sh starts them and sets
//! BENCH_SQS_ENDPOINT and BENCH_DYNAMODB_ENDPOINT): moto's SQS drains a few messages a second
//! and hands one message to two concurrent receivers, so neither 20,000 messages nor a
//! duplicate count that means anything can be had on it.
//!
//! The operator's controller still provisions everything on moto (ElasticMQ and DynamoDB
//! Local have no KMS, SNS, CloudWatch alarms, Scheduler or IAM). The bench then mirrors the
//! pipeline's queue, dead-letter queue and table on the emulators, under the same names and
//! with the same visibility timeout, redrive policy and key schema. The workers read and
//! write the mirror (their Pod environment with the emulators' queue URLs and per-service
//! endpoints; CloudWatch stays on moto), and the operator's autoscaler, unchanged, measures
//! the mirror queue: its SQS client points at ElasticMQ, which finds a queue by the last
//! segment of the `QueueUrl` it is given, here the moto URL in `status.outputs`.

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{BillingMode, GlobalSecondaryIndex, Projection};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::json;
use tracking_operator::api::Outputs;
use tracking_worker::contract::env;

pub struct Emulators {
    pub sqs_endpoint: String,
    pub dynamodb_endpoint: String,
    /// The CloudWatch endpoint the workers publish to (moto).
    pub cloudwatch_endpoint: String,
    pub sqs: SdkConfig,
    pub dynamodb: SdkConfig,
    /// Filled by [`Emulators::mirror`]: (moto URL, ElasticMQ URL) of the queue and the DLQ.
    pub queues: Vec<(String, String)>,
}

impl Emulators {
    /// From BENCH_SQS_ENDPOINT and BENCH_DYNAMODB_ENDPOINT; `None` runs everything on moto.
    pub async fn from_env(cloudwatch_endpoint: &str) -> Option<Emulators> {
        let sqs_endpoint = std::env::var("BENCH_SQS_ENDPOINT").ok()?;
        let dynamodb_endpoint = std::env::var("BENCH_DYNAMODB_ENDPOINT").ok()?;
        Some(Emulators {
            sqs: testenv::sdk_config_for(&sqs_endpoint).await,
            dynamodb: testenv::sdk_config_for(&dynamodb_endpoint).await,
            sqs_endpoint,
            dynamodb_endpoint,
            cloudwatch_endpoint: cloudwatch_endpoint.to_string(),
            queues: Vec::new(),
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "data path on ElasticMQ ({}) + DynamoDB Local ({}); operator's controller on moto; autoscaler's SQS client on ElasticMQ",
            self.sqs_endpoint, self.dynamodb_endpoint
        )
    }

    /// Creates the pipeline's DLQ, queue and table on the emulators as the operator made
    /// them on moto (`moto` is a client config for moto).
    pub async fn mirror(&mut self, moto: &SdkConfig, outputs: &Outputs) {
        let queue = outputs.queue_url.clone().expect("queue URL");
        let dlq = outputs.dead_letter_queue_url.clone().expect("DLQ URL");
        let table = outputs.table_name.clone().expect("table name");
        let from = aws_sdk_sqs::Client::new(moto);
        let to = aws_sdk_sqs::Client::new(&self.sqs);
        let attrs = from
            .get_queue_attributes()
            .queue_url(&queue)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .expect("moto queue attributes")
            .attributes
            .unwrap_or_default();
        let visibility = attrs
            .get(&QueueAttributeName::VisibilityTimeout)
            .cloned()
            .unwrap_or_else(|| "150".into());
        let max_receives = attrs
            .get(&QueueAttributeName::RedrivePolicy)
            .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
            .and_then(|p| p["maxReceiveCount"].as_u64())
            .expect("the pipeline's queue has a redrive policy");
        let dlq_mirror = to
            .create_queue()
            .queue_name(name_of(&dlq))
            .send()
            .await
            .expect("create DLQ mirror")
            .queue_url
            .expect("DLQ mirror URL");
        let dlq_arn = to
            .get_queue_attributes()
            .queue_url(&dlq_mirror)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("DLQ mirror ARN")
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .expect("DLQ mirror ARN");
        let redrive = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives});
        let queue_mirror = to
            .create_queue()
            .queue_name(name_of(&queue))
            .attributes(QueueAttributeName::VisibilityTimeout, visibility)
            .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
            .send()
            .await
            .expect("create queue mirror")
            .queue_url
            .expect("queue mirror URL");
        self.queues = vec![(queue, queue_mirror), (dlq, dlq_mirror)];

        let described = aws_sdk_dynamodb::Client::new(moto)
            .describe_table()
            .table_name(&table)
            .send()
            .await
            .expect("moto table")
            .table
            .expect("table description");
        let indexes = described
            .global_secondary_indexes()
            .iter()
            .map(|i| {
                GlobalSecondaryIndex::builder()
                    .index_name(i.index_name().expect("index name"))
                    .set_key_schema(Some(i.key_schema().to_vec()))
                    .projection(
                        i.projection()
                            .cloned()
                            .unwrap_or(Projection::builder().build()),
                    )
                    .build()
                    .expect("index")
            })
            .collect::<Vec<_>>();
        aws_sdk_dynamodb::Client::new(&self.dynamodb)
            .create_table()
            .table_name(&table)
            .billing_mode(BillingMode::PayPerRequest)
            .set_key_schema(Some(described.key_schema().to_vec()))
            .set_attribute_definitions(Some(described.attribute_definitions().to_vec()))
            .set_global_secondary_indexes((!indexes.is_empty()).then_some(indexes))
            .send()
            .await
            .expect("create table mirror");
    }

    /// The mirror of a moto queue URL.
    pub fn url(&self, moto_url: &str) -> String {
        self.queues
            .iter()
            .find(|(m, _)| m == moto_url)
            .map(|(_, e)| e.clone())
            .expect("a mirrored queue")
    }

    /// The Pod template's environment for a worker on the emulators: the mirrors' queue
    /// URLs, one endpoint per service it calls instead of the template's catch-all
    /// `AWS_ENDPOINT_URL` (which the worker would use for every client).
    pub fn worker_env(&self, template: Vec<(String, String)>) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = template
            .into_iter()
            .filter(|(k, _)| k != env::AWS_ENDPOINT_URL)
            .map(|(k, v)| {
                if k == env::QUEUE_URL || k == env::DEAD_LETTER_QUEUE_URL {
                    let mirror = self.url(&v);
                    (k, mirror)
                } else {
                    (k, v)
                }
            })
            .collect();
        out.extend([
            ("AWS_ENDPOINT_URL_SQS".into(), self.sqs_endpoint.clone()),
            (
                "AWS_ENDPOINT_URL_DYNAMODB".into(),
                self.dynamodb_endpoint.clone(),
            ),
            (
                "AWS_ENDPOINT_URL_CLOUDWATCH".into(),
                self.cloudwatch_endpoint.clone(),
            ),
        ]);
        out
    }
}

fn name_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

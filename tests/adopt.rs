//! Moving the original CDK stack under the operator (issue 12): its resources are created in
//! moto as the stack creates them, observed (no write), adopted (same ARNs, items and
//! messages kept, ownership tags added, drift repaired), drained by the worker, and left in
//! place when the pipeline goes. Resources another pipeline, another cluster or an
//! incompatible key schema holds are refused.

mod controller_support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, PointInTimeRecoverySpecification, Projection, ProjectionType, PutRequest,
    ScalarAttributeType, SseSpecification, SseType, TimeToLiveSpecification, WriteRequest,
};
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use controller_support::*;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use tracking_operator::api::Origin;
use tracking_worker::Worker;
use tracking_worker::config::Config as WorkerConfig;
use tracking_worker::contract::WorkerSettings;
use tracking_worker::synth::{Spec, plan};

const MANAGED_BY: &str = "tracking-operator.io/managed-by";
const ITEMS: usize = 1_000;
const MESSAGES: usize = 500;

/// What the CDK stack created, as its outputs and the console show it.
struct Stack {
    queue_key_arn: String,
    table_key_arn: String,
    queue_url: String,
    queue_arn: String,
    dlq_url: String,
    dlq_arn: String,
    table: String,
    table_arn: String,
    topic_arn: String,
    alarms: [String; 5],
}

fn stack_tags() -> [(&'static str, &'static str); 2] {
    [
        ("Environment", "Production"),
        ("Project", "LogisticsTracking"),
    ]
}

async fn create_key(kms: &aws_sdk_kms::Client, alias: &str) -> String {
    let tags = stack_tags().map(|(k, v)| {
        aws_sdk_kms::types::Tag::builder()
            .tag_key(k)
            .tag_value(v)
            .build()
            .unwrap()
    });
    let key = kms
        .create_key()
        .description(format!("TapStack {alias}"))
        .set_tags(Some(tags.to_vec()))
        .send()
        .await
        .expect("create key")
        .key_metadata
        .unwrap();
    kms.enable_key_rotation()
        .key_id(key.key_id())
        .send()
        .await
        .expect("rotation");
    kms.create_alias()
        .alias_name(alias)
        .target_key_id(key.key_id())
        .send()
        .await
        .expect("alias");
    key.arn().unwrap().to_string()
}

async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attrs: &[(QueueAttributeName, String)],
) -> (String, String) {
    let mut create = sqs.create_queue().queue_name(name);
    for (k, v) in attrs {
        create = create.attributes(k.clone(), v);
    }
    for (k, v) in stack_tags() {
        create = create.tags(k, v);
    }
    let url = create
        .send()
        .await
        .expect("create queue")
        .queue_url
        .unwrap();
    let arn = queue_attributes(sqs, &url).await[&QueueAttributeName::QueueArn].clone();
    (url, arn)
}

fn key(name: &str, kind: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .unwrap()
}

fn attr(name: &str) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .unwrap()
}

/// The audit table as TapStack defines it (REFERENCE §1).
async fn create_table(ddb: &aws_sdk_dynamodb::Client, name: &str, key_arn: &str) -> String {
    let tags = stack_tags().map(|(k, v)| {
        aws_sdk_dynamodb::types::Tag::builder()
            .key(k)
            .value(v)
            .build()
            .unwrap()
    });
    let table = ddb
        .create_table()
        .table_name(name)
        .attribute_definitions(attr("tracking_id"))
        .attribute_definitions(attr("timestamp"))
        .attribute_definitions(attr("status"))
        .key_schema(key("tracking_id", KeyType::Hash))
        .key_schema(key("timestamp", KeyType::Range))
        .billing_mode(BillingMode::PayPerRequest)
        .sse_specification(
            SseSpecification::builder()
                .enabled(true)
                .sse_type(SseType::Kms)
                .kms_master_key_id(key_arn)
                .build(),
        )
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("StatusIndex")
                .key_schema(key("status", KeyType::Hash))
                .key_schema(key("timestamp", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .set_tags(Some(tags.to_vec()))
        .send()
        .await
        .expect("create table")
        .table_description
        .unwrap();
    ddb.update_continuous_backups()
        .table_name(name)
        .point_in_time_recovery_specification(
            PointInTimeRecoverySpecification::builder()
                .point_in_time_recovery_enabled(true)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("PITR");
    ddb.update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name("ttl")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("TTL");
    table.table_arn().unwrap().to_string()
}

/// Months of history, as the Lambda wrote it.
async fn fill_table(ddb: &aws_sdk_dynamodb::Client, table: &str) {
    let s = |v: String| AttributeValue::S(v);
    for chunk in (0..ITEMS).collect::<Vec<_>>().chunks(25) {
        let writes: Vec<WriteRequest> = chunk
            .iter()
            .map(|i| {
                let item = HashMap::from([
                    ("tracking_id".to_string(), s(format!("LEGACY-{:05}", i / 4))),
                    (
                        "timestamp".to_string(),
                        s(format!(
                            "2026-06-{:02}T10:00:{:02}.000Z",
                            1 + i % 28,
                            i % 60
                        )),
                    ),
                    ("message_id".to_string(), s(format!("legacy-msg-{i}"))),
                    ("idempotency_key".to_string(), s(format!("legacy-{i}"))),
                    ("status".to_string(), s("DELIVERED".into())),
                    ("location".to_string(), s("Berlin".into())),
                    ("carrier".to_string(), s("DHL".into())),
                    ("ttl".to_string(), AttributeValue::N("1900000000".into())),
                ]);
                WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(item)).build().unwrap())
                    .build()
            })
            .collect();
        ddb.batch_write_item()
            .request_items(table, writes)
            .send()
            .await
            .expect("batch write");
    }
}

/// Messages waiting, as the producers sent them while the Lambda was stopped.
async fn fill_queue(sqs: &aws_sdk_sqs::Client, url: &str, bodies: &[String]) {
    for chunk in bodies.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, b)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(b)
                    .build()
                    .unwrap()
            })
            .collect();
        let out = sqs
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("send");
        assert!(out.failed.is_empty(), "{:?}", out.failed);
    }
}

/// (visible, in flight).
async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> (usize, usize) {
    let a = queue_attributes(sqs, url).await;
    let n = |k: QueueAttributeName| a.get(&k).and_then(|v| v.parse().ok()).unwrap_or(0);
    (
        n(QueueAttributeName::ApproximateNumberOfMessages),
        n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

async fn create_alarms(
    cw: &aws_sdk_cloudwatch::Client,
    prefix: &str,
    topic_arn: &str,
    queue: &str,
    dlq: &str,
) -> [String; 5] {
    use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, Statistic, Tag};
    let defs = [
        (
            "QueueDepthAlarm",
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            "QueueName",
            queue,
            1000.0,
            3,
            ComparisonOperator::GreaterThanThreshold,
        ),
        (
            "OldestMessageAlarm",
            "AWS/SQS",
            "ApproximateAgeOfOldestMessage",
            "QueueName",
            queue,
            300.0,
            3,
            ComparisonOperator::GreaterThanThreshold,
        ),
        (
            "ProcessorErrorsAlarm",
            "AWS/Lambda",
            "Errors",
            "FunctionName",
            "TapStack-Processor",
            5.0,
            3,
            ComparisonOperator::GreaterThanThreshold,
        ),
        (
            "ProcessorThrottlesAlarm",
            "AWS/Lambda",
            "Throttles",
            "FunctionName",
            "TapStack-Processor",
            5.0,
            3,
            ComparisonOperator::GreaterThanThreshold,
        ),
        (
            "DLQAlarm",
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            "QueueName",
            dlq,
            1.0,
            1,
            ComparisonOperator::GreaterThanOrEqualToThreshold,
        ),
    ];
    let mut names = Vec::new();
    for (suffix, ns, metric, dim, value, threshold, periods, cmp) in defs {
        let name = format!("{prefix}-{suffix}");
        let mut put = cw
            .put_metric_alarm()
            .alarm_name(&name)
            .namespace(ns)
            .metric_name(metric)
            .dimensions(Dimension::builder().name(dim).value(value).build())
            .statistic(Statistic::Maximum)
            .period(60)
            .evaluation_periods(periods)
            .threshold(threshold)
            .comparison_operator(cmp)
            .treat_missing_data("notBreaching")
            .alarm_actions(topic_arn);
        for (k, v) in stack_tags() {
            put = put.tags(Tag::builder().key(k).value(v).build());
        }
        put.send().await.expect("alarm");
        names.push(name);
    }
    names.try_into().unwrap()
}

/// Every resource of TapStack, named as CloudFormation names them (`<stack>-<id>-<hash>`),
/// with the reference settings and tags.
async fn cdk_stack(prefix: &str, key_aliases: (&str, &str)) -> Stack {
    let sdk = testenv::moto().sdk_config().await;
    let kms = aws_sdk_kms::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let sns = aws_sdk_sns::Client::new(&sdk);
    let cw = aws_sdk_cloudwatch::Client::new(&sdk);
    let queue_key_arn = create_key(&kms, key_aliases.0).await;
    let table_key_arn = create_key(&kms, key_aliases.1).await;
    let kms_attrs = |vis: &str, retention: &str| {
        vec![
            (QueueAttributeName::VisibilityTimeout, vis.to_string()),
            (
                QueueAttributeName::MessageRetentionPeriod,
                retention.to_string(),
            ),
            (QueueAttributeName::KmsMasterKeyId, queue_key_arn.clone()),
            (
                QueueAttributeName::KmsDataKeyReusePeriodSeconds,
                "300".into(),
            ),
        ]
    };
    let (dlq_url, dlq_arn) = create_queue(
        &sqs,
        &format!("{prefix}-TrackingDLQ"),
        &kms_attrs("300", "1209600"),
    )
    .await;
    let mut attrs = kms_attrs("150", "604800");
    attrs.push((
        QueueAttributeName::RedrivePolicy,
        json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3}).to_string(),
    ));
    let (queue_url, queue_arn) =
        create_queue(&sqs, &format!("{prefix}-TrackingQueue"), &attrs).await;
    let table = format!("{prefix}-TrackingAuditTable");
    let table_arn = create_table(&ddb, &table, &table_key_arn).await;
    let topic_arn = sns
        .create_topic()
        .name(format!("{prefix}-AlertTopic"))
        .attributes("DisplayName", "Logistics Tracking Alerts")
        .set_tags(Some(
            stack_tags()
                .map(|(k, v)| {
                    aws_sdk_sns::types::Tag::builder()
                        .key(k)
                        .value(v)
                        .build()
                        .unwrap()
                })
                .to_vec(),
        ))
        .send()
        .await
        .expect("topic")
        .topic_arn
        .unwrap();
    let alarms = create_alarms(
        &cw,
        prefix,
        &topic_arn,
        &format!("{prefix}-TrackingQueue"),
        &format!("{prefix}-TrackingDLQ"),
    )
    .await;
    Stack {
        queue_key_arn,
        table_key_arn,
        queue_url,
        queue_arn,
        dlq_url,
        dlq_arn,
        table,
        table_arn,
        topic_arn,
        alarms,
    }
}

/// The `spec.adopt` of docs/migration.md for this stack.
fn adopt_spec(s: &Stack, key_aliases: (&str, &str)) -> serde_json::Value {
    json!({
        "queue": s.queue_url,
        "deadLetterQueue": s.dlq_url,
        "table": s.table,
        "queueKey": key_aliases.0,
        "tableKey": key_aliases.1,
        "topic": s.topic_arn,
        "alarms": {
            "queueDepth": s.alarms[0],
            "oldestMessage": s.alarms[1],
            "workerErrors": s.alarms[2],
            "workerThrottles": s.alarms[3],
            "deadLetters": s.alarms[4],
        },
    })
}

async fn sqs_tags(sqs: &aws_sdk_sqs::Client, url: &str) -> HashMap<String, String> {
    sqs.list_queue_tags()
        .queue_url(url)
        .send()
        .await
        .expect("tags")
        .tags
        .unwrap_or_default()
}

async fn table_tags(ddb: &aws_sdk_dynamodb::Client, arn: &str) -> BTreeMap<String, String> {
    ddb.list_tags_of_resource()
        .resource_arn(arn)
        .send()
        .await
        .expect("table tags")
        .tags()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect()
}

async fn key_tags(kms: &aws_sdk_kms::Client, key: &str) -> BTreeMap<String, String> {
    kms.list_resource_tags()
        .key_id(key)
        .send()
        .await
        .expect("key tags")
        .tags()
        .iter()
        .map(|t| (t.tag_key().to_string(), t.tag_value().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cdk_stack_is_observed_then_adopted_without_losing_a_message_or_an_item() {
    let started = Instant::now();
    let kube = testenv::kube();
    let ns = kube.namespace("adopt-cdk").await;
    let moto = testenv::moto();
    let sdk = moto.sdk_config().await;
    let (sqs, ddb, kms) = (
        aws_sdk_sqs::Client::new(&sdk),
        aws_sdk_dynamodb::Client::new(&sdk),
        aws_sdk_kms::Client::new(&sdk),
    );
    let cw = aws_sdk_cloudwatch::Client::new(&sdk);
    let sns = aws_sdk_sns::Client::new(&sdk);
    // The reference aliases, exactly: only this test uses them in this moto.
    let aliases = ("alias/logistics-sqs-key", "alias/logistics-dynamodb-key");
    let stack = cdk_stack("TapStack", aliases).await;
    fill_table(&ddb, &stack.table).await;
    let traffic = plan(&Spec {
        count: MESSAGES,
        duplicate_percent: 0.0,
        poison_percent: 0.0,
        seed: 12,
        prefix: "MIGR".into(),
    });
    assert_eq!(traffic.bodies.len(), MESSAGES);
    fill_queue(&sqs, &stack.queue_url, &traffic.bodies).await;
    assert_eq!(audit_item_count(&ddb, &stack.table).await, ITEMS);
    assert_eq!(depth(&sqs, &stack.queue_url).await, (MESSAGES, 0));
    eprintln!("stack created in {:?}", started.elapsed());

    // 1. Observe: every difference named, nothing written, no worker.
    let operator = Operator::start(&moto.endpoint(), &ns, Duration::from_secs(10)).await;
    let api = pipelines(&ns).await;
    create(
        &api,
        "parcels",
        json!({
            "managementPolicy": "Observe",
            "deletionPolicy": "Delete",
            "adopt": adopt_spec(&stack, aliases),
        }),
    )
    .await;
    let p = wait_for(&api, "parcels", "InSync=False", |p| {
        reason(p, "InSync").as_deref() == Some("DriftDetected")
    })
    .await;
    let drift = message(&p, "InSync").unwrap();
    let group = |resource: &str| {
        drift
            .split("; ")
            .find(|g| g.contains(&format!("{resource}: ")) || g.starts_with(resource))
            .unwrap_or_else(|| panic!("{resource:?} not in {drift}"))
            .to_string()
    };
    assert!(group("missing EventBridge schedule").contains("-maintenance"));
    assert!(group("SQS queue TapStack-TrackingQueue").ends_with(": ownership tags"));
    assert!(group(&format!("DynamoDB table {}", stack.table)).ends_with(": ownership tags"));
    let errors = group(&format!("CloudWatch alarm {}", stack.alarms[2]));
    assert!(
        errors.contains("Namespace") && errors.contains("Dimensions"),
        "{errors}"
    );
    assert!(group("KMS key alias/logistics-sqs-key").contains("KeyPolicy"));
    assert!(group("SNS topic TapStack-AlertTopic").contains("KmsMasterKeyId"));
    // Settings equal to the reference are no difference.
    assert!(!drift.contains("VisibilityTimeout"), "{drift}");
    assert!(!drift.contains("RedrivePolicy"), "{drift}");
    let o = p.status.clone().unwrap().outputs;
    assert_eq!(o.queue_arn.as_deref(), Some(stack.queue_arn.as_str()));
    assert_eq!(o.table_arn.as_deref(), Some(stack.table_arn.as_str()));
    assert_eq!(
        operator.calls.writes(),
        0,
        "observe wrote: {:?}",
        operator.calls.write_operations()
    );
    assert!(operator.calls.total() > 0, "the operator read AWS");
    assert_eq!(
        reason(&p, "WorkerReady").as_deref(),
        Some("Observing"),
        "{:?}",
        message(&p, "WorkerReady")
    );
    let deployments: Api<Deployment> = Api::namespaced(kube.client().await, &ns);
    assert!(
        deployments
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let client = kube.client().await;
    assert!(
        eventually(|| async {
            event_reasons(&client, &p)
                .await
                .iter()
                .any(|(r, _)| r == "DriftDetected")
        })
        .await,
        "a DriftDetected Event"
    );
    // A few resyncs later: still nothing written.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        operator.calls.writes(),
        0,
        "{:?}",
        operator.calls.write_operations()
    );
    eprintln!("observed in {:?}", started.elapsed());

    // 2. Adopt: switch to Full.
    api.patch(
        "parcels",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"managementPolicy": "Full"}})),
    )
    .await
    .unwrap();
    let p = wait_for(&api, "parcels", "Ready after adoption", |p| {
        is(p, "Ready", "True")
            && is(p, "InSync", "True")
            && p.status.as_ref().and_then(|s| s.observed_generation) == p.metadata.generation
    })
    .await;
    let status = p.status.clone().unwrap();
    let o = &status.outputs;
    // Nothing re-created: the stack's identifiers.
    assert_eq!(o.queue_url.as_deref(), Some(stack.queue_url.as_str()));
    assert_eq!(o.queue_arn.as_deref(), Some(stack.queue_arn.as_str()));
    assert_eq!(
        o.dead_letter_queue_url.as_deref(),
        Some(stack.dlq_url.as_str())
    );
    assert_eq!(
        o.dead_letter_queue_arn.as_deref(),
        Some(stack.dlq_arn.as_str())
    );
    assert_eq!(o.table_arn.as_deref(), Some(stack.table_arn.as_str()));
    assert_eq!(
        o.queue_key_arn.as_deref(),
        Some(stack.queue_key_arn.as_str())
    );
    assert_eq!(
        o.table_key_arn.as_deref(),
        Some(stack.table_key_arn.as_str())
    );
    assert_eq!(o.alert_topic_arn.as_deref(), Some(stack.topic_arn.as_str()));
    let r = &status.resources;
    for adopted in [
        "queue",
        "deadLetterQueue",
        "table",
        "queueKey",
        "tableKey",
        "topic",
        "alarm/workerErrors",
    ] {
        assert_eq!(r[adopted].origin, Origin::Adopted, "{adopted}: {r:?}");
    }
    assert_eq!(r["schedule"].origin, Origin::Created, "{r:?}");
    assert_eq!(r["table"].id, stack.table_arn);
    // The data is still there.
    assert_eq!(audit_item_count(&ddb, &stack.table).await, ITEMS);
    assert_eq!(depth(&sqs, &stack.queue_url).await, (MESSAGES, 0));
    // Ownership tags next to the stack's own.
    let uid = p.metadata.uid.clone().unwrap();
    let qt = sqs_tags(&sqs, &stack.queue_url).await;
    assert_eq!(
        qt.get(MANAGED_BY).map(String::as_str),
        Some("tracking-operator")
    );
    assert_eq!(
        qt.get("Project").map(String::as_str),
        Some("LogisticsTracking")
    );
    let tt = table_tags(&ddb, &stack.table_arn).await;
    assert_eq!(tt.get("tracking-operator.io/pipeline-uid"), Some(&uid));
    for key in [&stack.queue_key_arn, &stack.table_key_arn] {
        assert_eq!(
            key_tags(&kms, key)
                .await
                .get("tracking-operator.io/pipeline-name")
                .map(String::as_str),
            Some("parcels")
        );
    }
    let dlq_tags = sqs_tags(&sqs, &stack.dlq_url).await;
    assert!(dlq_tags.contains_key(MANAGED_BY));
    // The Lambda's error alarm now watches the worker.
    let errors = cw
        .describe_alarms()
        .alarm_names(&stack.alarms[2])
        .send()
        .await
        .unwrap()
        .metric_alarms()[0]
        .clone();
    assert_eq!(
        errors.namespace(),
        Some(tracking_worker::contract::cloudwatch::DEFAULT_NAMESPACE)
    );
    assert_eq!(
        errors.alarm_actions(),
        std::slice::from_ref(&stack.topic_arn)
    );
    let topic = sns
        .get_topic_attributes()
        .topic_arn(&stack.topic_arn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    assert_eq!(topic.get("KmsMasterKeyId"), Some(&stack.queue_key_arn));
    eprintln!("adopted in {:?}", started.elapsed());

    // 3. Drift on an adopted resource is repaired like on a created one.
    sqs.set_queue_attributes()
        .queue_url(&stack.queue_url)
        .attributes(QueueAttributeName::VisibilityTimeout, "30")
        .send()
        .await
        .unwrap();
    assert!(
        eventually(|| async {
            queue_attributes(&sqs, &stack.queue_url).await[&QueueAttributeName::VisibilityTimeout]
                == "150"
        })
        .await,
        "the adopted queue's VisibilityTimeout was not repaired"
    );
    let (queue_url, dlq_url, table) = (
        stack.queue_url.clone(),
        stack.dlq_url.clone(),
        stack.table.clone(),
    );
    let same_arn = queue_attributes(&sqs, &queue_url).await[&QueueAttributeName::QueueArn].clone();
    assert_eq!(same_arn, stack.queue_arn);
    eprintln!("drift repaired in {:?}", started.elapsed());

    // 4. The worker (in-process, the Deployment's Pods cannot run without a node) drains
    // the 500 waiting messages into the same table, each exactly once.
    let settings = WorkerSettings {
        queue_url: queue_url.clone(),
        dead_letter_queue_url: dlq_url.clone(),
        table_name: table.clone(),
        pipeline: format!("{ns}/parcels"),
        batch_size: 10,
        max_batching_window_seconds: 1,
        concurrency: 4,
        ttl_days: 90,
        visibility_timeout_seconds: 150,
        metrics_namespace: "TrackingOperator/Tests".into(),
        metrics_addr: "127.0.0.1:0".into(),
        region: Some(testenv::REGION.into()),
        endpoint_url: Some(moto.endpoint()),
    };
    let mut config = WorkerConfig::new(settings);
    config.drain = Duration::from_secs(20);
    let worker = Worker::start(config, &sdk).await.expect("worker starts");
    let deadline = Instant::now() + Duration::from_secs(600);
    while depth(&sqs, &queue_url).await != (0, 0) {
        assert!(
            Instant::now() < deadline,
            "queue not drained: {:?}",
            depth(&sqs, &queue_url).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let report = worker.shutdown().await;
    assert_eq!(depth(&sqs, &dlq_url).await, (0, 0), "nothing dead-lettered");
    // Every message written once; a redelivery (SQS is at-least-once, and moto does redeliver
    // under concurrent receives) lands on the same item and counts as a duplicate.
    assert_eq!(
        (report.written, report.dead_lettered, report.failed),
        (MESSAGES as u64, 0, 0),
        "{report:?}"
    );
    // A second receive of a message is requeued as a fresh copy before SQS's redrive could
    // count it out (the stack's maxReceiveCount is 3), and the copy is received again.
    assert_eq!(
        report.written + report.duplicates + report.requeued,
        report.received,
        "{report:?}"
    );
    assert_eq!(
        audit_item_count(&ddb, &table).await,
        ITEMS + MESSAGES,
        "every message exactly once next to the history (worker: {report:?})"
    );
    eprintln!("drained in {:?}", started.elapsed());

    // 5. Deleting the pipeline (deletionPolicy Delete) removes what it created and leaves
    // everything it adopted (adopt.deletionPolicy defaults to Retain).
    let schedule = status.outputs.schedule_arn.clone().unwrap();
    let schedule_name = schedule.rsplit('/').next().unwrap().to_string();
    api.delete("parcels", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&api, "parcels").await;
    drop(operator);
    assert_eq!(
        queue_attributes(&sqs, &queue_url).await[&QueueAttributeName::QueueArn],
        stack.queue_arn
    );
    assert!(!queue_attributes(&sqs, &dlq_url).await.is_empty());
    assert_eq!(audit_item_count(&ddb, &table).await, ITEMS + MESSAGES);
    for key in [&stack.queue_key_arn, &stack.table_key_arn] {
        let meta = kms
            .describe_key()
            .key_id(key)
            .send()
            .await
            .unwrap()
            .key_metadata
            .unwrap();
        assert_eq!(
            meta.key_state(),
            Some(&aws_sdk_kms::types::KeyState::Enabled)
        );
    }
    assert!(
        sns.get_topic_attributes()
            .topic_arn(&stack.topic_arn)
            .send()
            .await
            .is_ok()
    );
    let alarms = cw
        .describe_alarms()
        .set_alarm_names(Some(stack.alarms.to_vec()))
        .send()
        .await
        .unwrap();
    assert_eq!(alarms.metric_alarms().len(), 5);
    let scheduler = aws_sdk_scheduler::Client::new(&sdk);
    assert!(
        scheduler
            .get_schedule()
            .name(&schedule_name)
            .send()
            .await
            .is_err(),
        "the schedule the operator created goes with the pipeline"
    );
    eprintln!("done in {:?}", started.elapsed());
}

#[tokio::test]
async fn resources_of_another_pipeline_or_cluster_or_with_another_key_schema_are_refused() {
    let kube = testenv::kube();
    let ns = kube.namespace("adopt-refused").await;
    let moto = testenv::moto();
    let sdk = moto.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let prefix = testenv::unique_name("Other");
    let _operator = Operator::start_with(&moto.endpoint(), &ns, Duration::from_secs(3600), |c| {
        c.aws_settings.cluster = Some("green".into());
    })
    .await;
    let api = pipelines(&ns).await;

    // A queue another pipeline owns, a table another cluster owns.
    let owned_by = |name: &str, cluster: &str| {
        vec![
            (MANAGED_BY.to_string(), "tracking-operator".to_string()),
            (
                "tracking-operator.io/pipeline-namespace".to_string(),
                ns.clone(),
            ),
            (
                "tracking-operator.io/pipeline-name".to_string(),
                name.to_string(),
            ),
            (
                "tracking-operator.io/pipeline-uid".to_string(),
                "u-other".to_string(),
            ),
            (
                "tracking-operator.io/cluster".to_string(),
                cluster.to_string(),
            ),
        ]
    };
    let queue = format!("{prefix}-queue");
    let mut create_q = sqs.create_queue().queue_name(&queue);
    for (k, v) in owned_by("letters", "green") {
        create_q = create_q.tags(k, v);
    }
    create_q.send().await.unwrap();
    let table = format!("{prefix}-table");
    let tags: Vec<_> = owned_by("parcels", "blue")
        .into_iter()
        .map(|(k, v)| {
            aws_sdk_dynamodb::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .unwrap()
        })
        .collect();
    ddb.create_table()
        .table_name(&table)
        .attribute_definitions(attr("tracking_id"))
        .attribute_definitions(attr("timestamp"))
        .key_schema(key("tracking_id", KeyType::Hash))
        .key_schema(key("timestamp", KeyType::Range))
        .billing_mode(BillingMode::PayPerRequest)
        .set_tags(Some(tags))
        .send()
        .await
        .unwrap();
    create(
        &api,
        "parcels",
        json!({"adopt": {"queue": queue, "table": table}}),
    )
    .await;
    let p = wait_for(&api, "parcels", "both refused", |p| {
        reason(p, "QueuesReady").as_deref() == Some("Conflict")
            && reason(p, "TableReady").as_deref() == Some("Conflict")
    })
    .await;
    let q = message(&p, "QueuesReady").unwrap();
    assert!(q.contains(&format!("TrackingPipeline {ns}/letters")), "{q}");
    let t = message(&p, "TableReady").unwrap();
    assert!(
        t.contains("another cluster (tracking-operator.io/cluster=blue)"),
        "{t}"
    );
    assert!(is(&p, "Stalled", "True"));

    // A table whose key schema the worker cannot use: refused, named, untouched.
    let legacy = format!("{prefix}-legacy");
    ddb.create_table()
        .table_name(&legacy)
        .attribute_definitions(attr("id"))
        .key_schema(key("id", KeyType::Hash))
        .billing_mode(BillingMode::Provisioned)
        .provisioned_throughput(
            aws_sdk_dynamodb::types::ProvisionedThroughput::builder()
                .read_capacity_units(5)
                .write_capacity_units(5)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    create(&api, "legacy", json!({"adopt": {"table": legacy}})).await;
    let p = wait_for(&api, "legacy", "AdoptionRefused", |p| {
        reason(p, "TableReady").as_deref() == Some("AdoptionRefused")
    })
    .await;
    let m = message(&p, "TableReady").unwrap();
    assert!(m.contains("KeySchema") && m.contains("tracking_id"), "{m}");
    let described = ddb
        .describe_table()
        .table_name(&legacy)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    assert!(
        table_tags(&ddb, described.table_arn().unwrap())
            .await
            .is_empty(),
        "a refused table gets no tags"
    );
    assert_ne!(
        described
            .billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .map(|m| m.as_str()),
        Some("PAY_PER_REQUEST"),
        "a refused table's billing mode is not changed"
    );
}

#[tokio::test]
async fn observing_a_pipeline_that_does_not_exist_yet_writes_nothing_even_on_delete() {
    let kube = testenv::kube();
    let ns = kube.namespace("adopt-observe").await;
    let operator =
        Operator::start(&testenv::moto().endpoint(), &ns, Duration::from_secs(3600)).await;
    let api = pipelines(&ns).await;
    create(
        &api,
        "parcels",
        json!({"managementPolicy": "Observe", "deletionPolicy": "Delete"}),
    )
    .await;
    let p = wait_for(&api, "parcels", "InSync=False", |p| {
        reason(p, "InSync").as_deref() == Some("DriftDetected")
    })
    .await;
    let drift = message(&p, "InSync").unwrap();
    assert!(
        drift.contains("missing KMS key alias/tracking-operator/"),
        "{drift}"
    );
    // The parts after the missing keys have nothing to compare against: not a failure.
    assert_eq!(reason(&p, "QueuesReady").as_deref(), Some("NotObservable"));
    assert_eq!(reason(&p, "KeysReady").as_deref(), Some("Missing"));
    assert!(reason(&p, "Stalled").is_none());
    assert_eq!(
        operator.calls.writes(),
        0,
        "{:?}",
        operator.calls.write_operations()
    );
    api.delete("parcels", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&api, "parcels").await;
    assert_eq!(
        operator.calls.writes(),
        0,
        "{:?}",
        operator.calls.write_operations()
    );
    let deployments: Api<Deployment> = Api::namespaced(kube.client().await, &ns);
    assert!(
        deployments
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn an_adopted_queue_is_wired_to_its_dead_letter_queue_and_deleted_only_when_the_user_says_so()
{
    let kube = testenv::kube();
    let ns = kube.namespace("adopt-wire").await;
    let sdk = testenv::moto().sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let prefix = testenv::unique_name("Legacy");
    // A queue and a DLQ nobody wired together, no tags, SQS defaults.
    let (queue_url, queue_arn) = create_queue(&sqs, &format!("{prefix}-q"), &[]).await;
    let (dlq_url, dlq_arn) = create_queue(&sqs, &format!("{prefix}-dlq"), &[]).await;
    let _operator = moto_operator(&ns, Duration::from_secs(3600)).await;
    let api = pipelines(&ns).await;
    create(
        &api,
        "parcels",
        json!({
            "deletionPolicy": "Delete",
            "adopt": {"queue": queue_url, "deadLetterQueue": dlq_url, "deletionPolicy": "Delete"},
        }),
    )
    .await;
    let p = wait_ready(&api, "parcels").await;
    let status = p.status.clone().unwrap();
    assert_eq!(
        status.outputs.queue_arn.as_deref(),
        Some(queue_arn.as_str())
    );
    assert_eq!(status.resources["queue"].origin, Origin::Adopted);
    assert_eq!(status.resources["deadLetterQueue"].origin, Origin::Adopted);
    assert_eq!(status.resources["table"].origin, Origin::Created);
    let q = queue_attributes(&sqs, &queue_url).await;
    let redrive: serde_json::Value =
        serde_json::from_str(&q[&QueueAttributeName::RedrivePolicy]).unwrap();
    assert_eq!(redrive["deadLetterTargetArn"], dlq_arn.as_str());
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        "3"
    );
    assert_eq!(q[&QueueAttributeName::VisibilityTimeout], "150");
    let client = kube.client().await;
    let events = event_reasons(&client, &p).await;
    assert!(
        events
            .iter()
            .any(|(r, note)| r == "DriftRepaired" && note.contains("RedrivePolicy")),
        "{events:?}"
    );

    // adopt.deletionPolicy Delete: the adopted queues go with the pipeline.
    api.delete("parcels", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&api, "parcels").await;
    for name in [format!("{prefix}-q"), format!("{prefix}-dlq")] {
        assert!(
            sqs.get_queue_url().queue_name(&name).send().await.is_err(),
            "{name} still exists"
        );
    }
}

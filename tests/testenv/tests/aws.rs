//! The harness gives a working AWS API (moto): KMS, SQS with redrive, and DynamoDB through the
//! Rust SDK, read back attribute by attribute.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_sdk_sqs::types::QueueAttributeName;

#[tokio::test]
async fn kms_sqs_and_dynamodb_round_trip() {
    let cfg = testenv::moto().sdk_config().await;

    let kms = aws_sdk_kms::Client::new(&cfg);
    let key = kms
        .create_key()
        .description("testenv smoke")
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    kms.enable_key_rotation()
        .key_id(key.key_id())
        .send()
        .await
        .unwrap();
    let rotation = kms
        .get_key_rotation_status()
        .key_id(key.key_id())
        .send()
        .await
        .unwrap();
    assert!(rotation.key_rotation_enabled());

    let sqs = aws_sdk_sqs::Client::new(&cfg);
    let dlq_name = testenv::unique_name("smoke-dlq");
    let dlq = sqs
        .create_queue()
        .queue_name(&dlq_name)
        .send()
        .await
        .unwrap();
    let dlq_url = dlq.queue_url().unwrap();
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    let redrive = format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"3"}}"#);
    let q = sqs
        .create_queue()
        .queue_name(testenv::unique_name("smoke-q"))
        .attributes(QueueAttributeName::RedrivePolicy, &redrive)
        .attributes(QueueAttributeName::VisibilityTimeout, "150")
        .attributes(QueueAttributeName::KmsMasterKeyId, key.key_id())
        .send()
        .await
        .unwrap();
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(q.queue_url().unwrap())
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let attrs = attrs.attributes().unwrap();
    assert_eq!(attrs[&QueueAttributeName::VisibilityTimeout], "150");
    assert_eq!(attrs[&QueueAttributeName::KmsMasterKeyId], key.key_id());
    let policy: serde_json::Value =
        serde_json::from_str(&attrs[&QueueAttributeName::RedrivePolicy]).unwrap();
    assert_eq!(policy["deadLetterTargetArn"], dlq_arn.as_str());
    assert_eq!(policy["maxReceiveCount"].to_string().trim_matches('"'), "3");

    let ddb = aws_sdk_dynamodb::Client::new(&cfg);
    let table = testenv::unique_name("smoke-table");
    ddb.create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("tracking_id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("timestamp")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("tracking_id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("timestamp")
                .key_type(KeyType::Range)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let desc = ddb
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    assert_eq!(desc.table_name(), Some(table.as_str()));
    assert_eq!(
        desc.billing_mode_summary().and_then(|b| b.billing_mode()),
        Some(&BillingMode::PayPerRequest)
    );
    let keys: Vec<_> = desc
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name().to_string(), k.key_type().clone()))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("tracking_id".to_string(), KeyType::Hash),
            ("timestamp".to_string(), KeyType::Range)
        ]
    );
}

#[test]
fn flaky_proxy_cuts_and_restores_connections() {
    use std::io::{Read, Write};
    let moto = testenv::moto();
    let proxy = testenv::FlakyProxy::start(&moto.endpoint());
    let port: u16 = proxy
        .endpoint()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let get = || -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.write_all(b"GET /moto-api/data.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    };
    assert!(get().unwrap_or_default().starts_with("HTTP/1.1 200"));
    proxy.set_down(true);
    assert!(!get().unwrap_or_default().starts_with("HTTP/1.1 200"));
    proxy.set_down(false);
    assert!(get().unwrap_or_default().starts_with("HTTP/1.1 200"));
}

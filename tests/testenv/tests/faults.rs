//! The fault layer reproduces AWS behaviour moto lacks, and the real SDK sees it as it would
//! see AWS: each rule kind, through the SDK, against moto.

use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
    Tag,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use testenv::faults::{FaultProxy, Rule};

fn proxy() -> FaultProxy {
    FaultProxy::start(&testenv::moto().endpoint())
}

/// The SDK without its own retries, so each call the test makes is one call on the wire.
async fn no_retries(p: &FaultProxy) -> aws_config::SdkConfig {
    p.sdk_config()
        .await
        .into_builder()
        .retry_config(RetryConfig::disabled())
        .build()
}

async fn create_table(ddb: &aws_sdk_dynamodb::Client, name: &str) {
    ddb.create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .tags(Tag::builder().key("owner").value("test").build().unwrap())
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn error_rule_answers_a_json_protocol_call_n_times() {
    let p = proxy();
    let sqs = aws_sdk_sqs::Client::new(&no_retries(&p).await);
    p.add_rule(Rule::error("sqs", "CreateQueue", "AccessDeniedException").times(2));
    let name = testenv::unique_name("fault-q");
    for _ in 0..2 {
        let err = sqs
            .create_queue()
            .queue_name(&name)
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("AccessDeniedException"), "{err:?}");
    }
    sqs.create_queue().queue_name(&name).send().await.unwrap();
    assert_eq!(p.calls("sqs", "CreateQueue"), 3);
    assert_eq!(p.faulted("sqs", "CreateQueue"), 2);
}

#[tokio::test]
async fn throttling_is_retried_by_the_sdk_as_on_aws() {
    let p = proxy();
    let ddb = aws_sdk_dynamodb::Client::new(&p.sdk_config().await);
    p.add_rule(Rule::error("dynamodb", "ListTables", "ThrottlingException").times(2));
    ddb.list_tables().send().await.unwrap();
    assert_eq!(
        p.calls("dynamodb", "ListTables"),
        3,
        "two throttled, one answered"
    );
}

#[tokio::test]
async fn error_rule_answers_query_and_server_errors_for_a_time() {
    let p = proxy();
    let cfg = no_retries(&p).await;
    let sns = aws_sdk_sns::Client::new(&cfg);
    let kms = aws_sdk_kms::Client::new(&cfg);
    p.add_rule(
        Rule::error("sns", "CreateTopic", "AuthorizationError")
            .for_duration(Duration::from_secs(3)),
    );
    p.add_rule(Rule::error("kms", "CreateKey", "ServiceUnavailable").times(1));

    let topic = testenv::unique_name("fault-t");
    let err = sns.create_topic().name(&topic).send().await.unwrap_err();
    assert_eq!(err.code(), Some("AuthorizationError"), "{err:?}");
    let err = sns.create_topic().name(&topic).send().await.unwrap_err();
    assert_eq!(
        err.code(),
        Some("AuthorizationError"),
        "still inside the window"
    );
    tokio::time::sleep(Duration::from_millis(3100)).await;
    sns.create_topic().name(&topic).send().await.unwrap();

    let err = kms.create_key().send().await.unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(503));
    kms.create_key().send().await.unwrap();
}

#[tokio::test]
async fn delay_rule_slows_the_answer() {
    let p = proxy();
    let ddb = aws_sdk_dynamodb::Client::new(&no_retries(&p).await);
    ddb.list_tables().send().await.unwrap();
    p.add_rule(Rule::delay("dynamodb", "ListTables", Duration::from_millis(1500)).times(1));
    let t = Instant::now();
    ddb.list_tables().send().await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    let t = Instant::now();
    ddb.list_tables().send().await.unwrap();
    assert!(t.elapsed() < Duration::from_millis(1500), "only once");
}

#[tokio::test]
async fn dropped_answer_still_writes() {
    let p = proxy();
    let sqs = aws_sdk_sqs::Client::new(&no_retries(&p).await);
    p.add_rule(Rule::drop_response("sqs", "CreateQueue").times(1));
    let name = testenv::unique_name("fault-drop");
    let err = sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            aws_sdk_sqs::error::SdkError::DispatchFailure(_)
                | aws_sdk_sqs::error::SdkError::ResponseError(_)
        ),
        "the client sees a broken connection: {err:?}"
    );
    let url = sqs.get_queue_url().queue_name(&name).send().await.unwrap();
    assert!(
        url.queue_url().unwrap().ends_with(&name),
        "the write happened"
    );
}

#[tokio::test]
async fn a_new_table_is_creating_and_untagged_for_a_while() {
    // Generous windows: a loaded machine must not turn "inside" into "after".
    let (creating, untagged) = (Duration::from_secs(4), Duration::from_secs(8));
    let p = proxy();
    let ddb = aws_sdk_dynamodb::Client::new(&no_retries(&p).await);
    p.add_rule(Rule::table_creating(creating));
    p.add_rule(Rule::tags_empty(untagged));
    let name = testenv::unique_name("fault-table");
    let started = Instant::now();
    create_table(&ddb, &name).await;

    let table = ddb.describe_table().table_name(&name).send().await.unwrap();
    let table = table.table().unwrap();
    assert_eq!(table.table_status(), Some(&TableStatus::Creating));
    let arn = table.table_arn().unwrap().to_string();
    let tags = ddb.list_tags_of_resource().resource_arn(&arn).send().await;
    assert!(tags.unwrap().tags().is_empty(), "tags not there yet");

    // The proxy starts the windows when CreateTable reaches it, a little after `started`.
    let margin = Duration::from_millis(500);
    tokio::time::sleep((started + creating + margin).saturating_duration_since(Instant::now()))
        .await;
    let table = ddb.describe_table().table_name(&name).send().await.unwrap();
    assert_eq!(
        table.table().unwrap().table_status(),
        Some(&TableStatus::Active)
    );
    let tags = ddb.list_tags_of_resource().resource_arn(&arn).send().await;
    assert!(tags.unwrap().tags().is_empty(), "tags lag behind the state");

    tokio::time::sleep((started + untagged + margin).saturating_duration_since(Instant::now()))
        .await;
    let tags = ddb.list_tags_of_resource().resource_arn(&arn).send().await;
    assert_eq!(tags.unwrap().tags().len(), 1);
}

#[tokio::test]
async fn email_subscriptions_stay_pending() {
    let p = proxy();
    let sns = aws_sdk_sns::Client::new(&no_retries(&p).await);
    p.add_rule(Rule::email_pending());
    let topic = sns
        .create_topic()
        .name(testenv::unique_name("fault-mail"))
        .send()
        .await
        .unwrap();
    let topic = topic.topic_arn().unwrap();
    let sub = sns
        .subscribe()
        .topic_arn(topic)
        .protocol("email")
        .endpoint("oncall@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(sub.subscription_arn(), Some("pending confirmation"));
    let listed = sns
        .list_subscriptions_by_topic()
        .topic_arn(topic)
        .send()
        .await
        .unwrap();
    let subs = listed.subscriptions();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].subscription_arn(), Some("PendingConfirmation"));
    assert_eq!(subs[0].endpoint(), Some("oncall@example.com"));
}

#[tokio::test]
async fn a_new_role_is_unusable_by_scheduler_for_a_while() {
    let p = proxy();
    let cfg = no_retries(&p).await;
    let iam = aws_sdk_iam::Client::new(&cfg);
    let scheduler = aws_sdk_scheduler::Client::new(&cfg);
    p.add_rule(Rule::role_propagation(Duration::from_secs(3)));
    let role = iam
        .create_role()
        .role_name(testenv::unique_name("fault-role"))
        .assume_role_policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"scheduler.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#,
        )
        .send()
        .await
        .unwrap();
    let role_arn = role.role().unwrap().arn().to_string();
    let create = || {
        scheduler
            .create_schedule()
            .name(testenv::unique_name("fault-sched"))
            .schedule_expression("rate(1 hour)")
            .flexible_time_window(
                aws_sdk_scheduler::types::FlexibleTimeWindow::builder()
                    .mode(aws_sdk_scheduler::types::FlexibleTimeWindowMode::Off)
                    .build()
                    .unwrap(),
            )
            .target(
                aws_sdk_scheduler::types::Target::builder()
                    .arn("arn:aws:sqs:us-east-1:123456789012:fault-target")
                    .role_arn(&role_arn)
                    .build()
                    .unwrap(),
            )
            .send()
    };
    let err = create().await.unwrap_err();
    assert_eq!(err.code(), Some("ValidationException"), "{err:?}");
    tokio::time::sleep(Duration::from_millis(3100)).await;
    create().await.unwrap();
    assert_eq!(p.faulted("scheduler", "CreateSchedule"), 1);
}

#[tokio::test]
async fn rate_limit_throttles_and_counts_per_service() {
    let p = proxy();
    let cfg = no_retries(&p).await;
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);
    let sqs = aws_sdk_sqs::Client::new(&cfg);
    p.add_rule(Rule::rate_limit("dynamodb", 0.05, 2));
    let mut throttled = 0;
    for _ in 0..5 {
        if let Err(e) = ddb.list_tables().send().await {
            assert_eq!(e.code(), Some("ThrottlingException"));
            throttled += 1;
        }
    }
    assert_eq!(throttled, 3, "a burst of two, then throttled");
    sqs.list_queues().send().await.unwrap();
    assert_eq!(p.calls("dynamodb", "ListTables"), 5);
    assert_eq!(p.faulted("dynamodb", "*"), 3);
    assert_eq!(
        p.calls("sqs", "ListQueues"),
        1,
        "other services are not limited"
    );
}

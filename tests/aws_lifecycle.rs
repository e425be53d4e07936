//! The AWS side of a pipeline against moto: every setting of the reference attribute by
//! attribute, non-default values, drift repair, zero writes at steady state, name conflicts,
//! and deletion.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;
use tracking_operator::api::{Outputs, Period, TrackingPipeline, TrackingPipelineSpec};
use tracking_operator::aws::{self, AwsClients, Desired, Part, PartReport, Settings};
use tracking_worker::contract;

struct Env {
    clients: AwsClients,
    desired: Desired,
    outputs: Outputs,
}

fn pipeline(spec: TrackingPipelineSpec) -> TrackingPipeline {
    let mut p = TrackingPipeline::new(&testenv::unique_name("tp"), spec);
    p.metadata.namespace = Some(testenv::unique_name("ns"));
    p.metadata.uid = Some(testenv::unique_name("uid"));
    p
}

async fn env(spec: TrackingPipelineSpec, settings: &Settings) -> Env {
    let config = testenv::moto().sdk_config().await;
    Env {
        clients: AwsClients::new(&config),
        desired: aws::desired(&pipeline(spec), settings).expect("desired"),
        outputs: Outputs::default(),
    }
}

impl Env {
    /// Every part in order; returns the reports by part.
    async fn ensure_all(&mut self) -> BTreeMap<Part, PartReport> {
        let mut reports = BTreeMap::new();
        for part in Part::ALL {
            let report = aws::ensure(&self.clients, &self.desired, part, &mut self.outputs)
                .await
                .unwrap_or_else(|e| panic!("ensure {part:?}: {e}"));
            reports.insert(part, report);
        }
        reports
    }

    fn out(&self, v: &Option<String>, what: &str) -> String {
        v.clone()
            .unwrap_or_else(|| panic!("{what} missing from outputs: {:?}", self.outputs))
    }
}

fn default_spec() -> TrackingPipelineSpec {
    let mut spec = TrackingPipelineSpec::default();
    spec.alerts.email = Some("ops@example.com".into());
    spec
}

async fn queue_attributes(c: &AwsClients, url: &str) -> HashMap<String, String> {
    c.sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .expect("GetQueueAttributes")
        .attributes
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.as_str().to_string(), v))
        .collect()
}

async fn queue_tags(c: &AwsClients, url: &str) -> HashMap<String, String> {
    c.sqs
        .list_queue_tags()
        .queue_url(url)
        .send()
        .await
        .expect("ListQueueTags")
        .tags
        .unwrap_or_default()
}

fn assert_tags(tags: &HashMap<String, String>, d: &Desired, what: &str) {
    for (k, v) in &d.tags {
        assert_eq!(tags.get(k), Some(v), "{what}: tag {k}");
    }
}

async fn key_tags(c: &AwsClients, key: &str) -> HashMap<String, String> {
    c.kms
        .list_resource_tags()
        .key_id(key)
        .send()
        .await
        .expect("ListResourceTags")
        .tags()
        .iter()
        .map(|t| (t.tag_key().to_string(), t.tag_value().to_string()))
        .collect()
}

fn redrive(attrs: &HashMap<String, String>) -> (String, i64) {
    let v: Value = serde_json::from_str(&attrs["RedrivePolicy"]).expect("RedrivePolicy JSON");
    let count = match &v["maxReceiveCount"] {
        Value::Number(n) => n.as_i64().expect("number"),
        Value::String(s) => s.parse().expect("number"),
        other => panic!("maxReceiveCount {other}"),
    };
    (
        v["deadLetterTargetArn"].as_str().expect("arn").to_string(),
        count,
    )
}

#[tokio::test]
async fn default_pipeline_has_every_setting_of_the_reference() {
    let mut e = env(default_spec(), &Settings::default()).await;
    let reports = e.ensure_all().await;
    let (c, d) = (&e.clients, &e.desired);
    for (part, r) in &reports {
        assert!(r.is_ready(), "{part:?} not ready: {r:?}");
        assert!(
            r.repaired.is_empty(),
            "{part:?} repaired on creation: {r:?}"
        );
    }
    assert_eq!(
        reports[&Part::Queues].created.len(),
        2,
        "{:?}",
        reports[&Part::Queues]
    );
    assert_eq!(reports[&Part::Keys].created.len(), 2);

    // Keys: customer managed, rotation on, found by alias, tagged, usable by CloudWatch.
    let queue_key = e.out(&e.outputs.queue_key_arn, "queueKeyArn");
    let table_key = e.out(&e.outputs.table_key_arn, "tableKeyArn");
    assert_ne!(queue_key, table_key);
    for (alias, arn) in [
        (&d.names.queue_key_alias, &queue_key),
        (&d.names.table_key_alias, &table_key),
    ] {
        let meta = c
            .kms
            .describe_key()
            .key_id(alias)
            .send()
            .await
            .expect("alias resolves");
        let meta = meta.key_metadata.expect("metadata");
        assert_eq!(meta.arn(), Some(arn.as_str()), "{alias}");
        assert_eq!(meta.key_manager().map(|m| m.as_str()), Some("CUSTOMER"));
        assert!(meta.enabled());
        let rotation = c
            .kms
            .get_key_rotation_status()
            .key_id(arn)
            .send()
            .await
            .expect("rotation");
        assert!(rotation.key_rotation_enabled(), "{alias} rotation");
        assert_tags(&key_tags(c, arn).await, d, alias);
    }
    let policy = c
        .kms
        .get_key_policy()
        .key_id(&queue_key)
        .policy_name("default")
        .send()
        .await
        .expect("policy");
    assert!(
        policy
            .policy()
            .unwrap_or_default()
            .contains("cloudwatch.amazonaws.com")
    );

    // Dead-letter queue then main queue.
    let dlq_url = e.out(&e.outputs.dead_letter_queue_url, "deadLetterQueueUrl");
    let dlq = queue_attributes(c, &dlq_url).await;
    assert_eq!(dlq["VisibilityTimeout"], "300");
    assert_eq!(dlq["MessageRetentionPeriod"], (14 * 86_400).to_string());
    assert_eq!(dlq["KmsMasterKeyId"], queue_key);
    assert_eq!(dlq["KmsDataKeyReusePeriodSeconds"], "300");
    assert_eq!(
        Some(&dlq["QueueArn"]),
        e.outputs.dead_letter_queue_arn.as_ref()
    );
    assert!(!dlq.contains_key("FifoQueue") || dlq["FifoQueue"] == "false");
    assert_tags(&queue_tags(c, &dlq_url).await, d, "dlq");
    let queue_url = e.out(&e.outputs.queue_url, "queueUrl");
    let q = queue_attributes(c, &queue_url).await;
    assert_eq!(q["VisibilityTimeout"], "150");
    assert_eq!(q["MessageRetentionPeriod"], (7 * 86_400).to_string());
    assert_eq!(q["KmsMasterKeyId"], queue_key);
    assert_eq!(q["KmsDataKeyReusePeriodSeconds"], "300");
    assert_eq!(redrive(&q), (dlq["QueueArn"].clone(), 3));
    assert_tags(&queue_tags(c, &queue_url).await, d, "queue");

    // Audit table.
    let table_name = e.out(&e.outputs.table_name, "tableName");
    let t = c
        .dynamodb
        .describe_table()
        .table_name(&table_name)
        .send()
        .await
        .expect("table");
    let t = t.table.expect("table description");
    let keys: Vec<(String, String)> = t
        .key_schema()
        .iter()
        .map(|k| {
            (
                k.attribute_name().to_string(),
                k.key_type().as_str().to_string(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        vec![
            ("tracking_id".into(), "HASH".into()),
            ("timestamp".into(), "RANGE".into())
        ]
    );
    assert!(
        t.attribute_definitions()
            .iter()
            .all(|a| a.attribute_type().as_str() == "S")
    );
    assert_eq!(
        t.billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .map(|m| m.as_str()),
        Some("PAY_PER_REQUEST")
    );
    let sse = t.sse_description().expect("SSE");
    assert_eq!(sse.sse_type().map(|s| s.as_str()), Some("KMS"));
    assert_eq!(sse.kms_master_key_arn(), Some(table_key.as_str()));
    let gsi = t
        .global_secondary_indexes()
        .iter()
        .find(|i| i.index_name() == Some("StatusIndex"))
        .expect("StatusIndex");
    let gsi_keys: Vec<&str> = gsi
        .key_schema()
        .iter()
        .map(|k| k.attribute_name())
        .collect();
    assert_eq!(gsi_keys, vec!["status", "timestamp"]);
    assert_eq!(t.deletion_protection_enabled(), Some(false));
    let pitr = c
        .dynamodb
        .describe_continuous_backups()
        .table_name(&table_name)
        .send()
        .await
        .expect("backups");
    let pitr = pitr
        .continuous_backups_description()
        .and_then(|b| b.point_in_time_recovery_description());
    assert_eq!(
        pitr.and_then(|p| p.point_in_time_recovery_status())
            .map(|s| s.as_str()),
        Some("ENABLED")
    );
    let ttl = c
        .dynamodb
        .describe_time_to_live()
        .table_name(&table_name)
        .send()
        .await
        .expect("ttl");
    let ttl = ttl.time_to_live_description().expect("ttl description");
    assert_eq!(ttl.attribute_name(), Some("ttl"));
    assert_eq!(
        ttl.time_to_live_status().map(|s| s.as_str()),
        Some("ENABLED")
    );
    let tags = c
        .dynamodb
        .list_tags_of_resource()
        .resource_arn(e.out(&e.outputs.table_arn, "tableArn"))
        .send()
        .await
        .expect("tags");
    let tags: HashMap<String, String> = tags
        .tags()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect();
    assert_tags(&tags, d, "table");

    // Topic encrypted with our key, e-mail subscription.
    let topic = e.out(&e.outputs.alert_topic_arn, "alertTopicArn");
    let attrs = c
        .sns
        .get_topic_attributes()
        .topic_arn(&topic)
        .send()
        .await
        .expect("topic");
    let attrs = attrs.attributes().expect("attributes");
    assert_eq!(attrs["DisplayName"], "Logistics Tracking Alerts");
    assert_eq!(attrs["KmsMasterKeyId"], queue_key);
    let subs = c
        .sns
        .list_subscriptions_by_topic()
        .topic_arn(&topic)
        .send()
        .await
        .expect("subs");
    let email: Vec<_> = subs
        .subscriptions()
        .iter()
        .filter(|s| s.protocol() == Some("email"))
        .collect();
    assert_eq!(email.len(), 1);
    assert_eq!(email[0].endpoint(), Some("ops@example.com"));
    // moto confirms e-mail subscriptions at once; real SNS keeps them pending (see sns.rs).
    assert!(e.outputs.subscription_arn.is_some());

    // The five alarms.
    let alarms = c
        .cloudwatch
        .describe_alarms()
        .set_alarm_names(Some(
            d.names.alarms().iter().map(|s| s.to_string()).collect(),
        ))
        .send()
        .await
        .expect("alarms");
    let alarms: HashMap<&str, _> = alarms
        .metric_alarms()
        .iter()
        .map(|a| (a.alarm_name().unwrap_or_default(), a))
        .collect();
    assert_eq!(alarms.len(), 5);
    let depth = alarms[d.names.alarm_queue_depth.as_str()];
    assert_eq!(
        depth.metric_name(),
        Some("ApproximateNumberOfMessagesVisible")
    );
    assert_eq!(depth.namespace(), Some("AWS/SQS"));
    assert_eq!(depth.threshold(), Some(1000.0));
    assert_eq!(
        (depth.evaluation_periods(), depth.datapoints_to_alarm()),
        (Some(3), Some(2))
    );
    assert_eq!(
        depth.comparison_operator().map(|o| o.as_str()),
        Some("GreaterThanThreshold")
    );
    assert_eq!(depth.treat_missing_data(), Some("notBreaching"));
    assert_eq!(depth.dimensions()[0].value(), Some(d.names.queue.as_str()));
    let age = alarms[d.names.alarm_oldest_message.as_str()];
    assert_eq!(
        (age.metric_name(), age.threshold(), age.evaluation_periods()),
        (Some("ApproximateAgeOfOldestMessage"), Some(300.0), Some(3))
    );
    for (name, metric) in [
        (
            &d.names.alarm_worker_errors,
            contract::cloudwatch::METRIC_ERRORS,
        ),
        (
            &d.names.alarm_worker_throttles,
            contract::cloudwatch::METRIC_THROTTLES,
        ),
    ] {
        let a = alarms[name.as_str()];
        assert_eq!(a.namespace(), Some(contract::cloudwatch::DEFAULT_NAMESPACE));
        assert_eq!(a.metric_name(), Some(metric));
        assert_eq!(
            (a.threshold(), a.evaluation_periods()),
            (Some(5.0), Some(3))
        );
        assert_eq!(
            a.dimensions()[0].name(),
            Some(contract::cloudwatch::DIMENSION_PIPELINE)
        );
        assert_eq!(a.dimensions()[0].value(), Some(d.owner.key().as_str()));
    }
    let dl = alarms[d.names.alarm_dead_letters.as_str()];
    assert_eq!(
        dl.dimensions()[0].value(),
        Some(d.names.dead_letter_queue.as_str())
    );
    assert_eq!(
        (dl.threshold(), dl.evaluation_periods()),
        (Some(1.0), Some(1))
    );
    assert_eq!(
        dl.comparison_operator().map(|o| o.as_str()),
        Some("GreaterThanOrEqualToThreshold")
    );
    for a in alarms.values() {
        assert_eq!(
            a.alarm_actions(),
            std::slice::from_ref(&topic),
            "{:?}",
            a.alarm_name()
        );
    }

    // Schedule and its role.
    let s = c
        .scheduler
        .get_schedule()
        .name(&d.names.schedule)
        .send()
        .await
        .expect("schedule");
    assert_eq!(s.schedule_expression(), Some("cron(0 1 * * ? *)"));
    assert_eq!(s.schedule_expression_timezone(), Some("UTC"));
    assert_eq!(s.state().map(|s| s.as_str()), Some("ENABLED"));
    let target = s.target().expect("target");
    assert_eq!(Some(target.arn()), e.outputs.queue_arn.as_deref());
    assert_eq!(target.input(), Some(contract::MAINTENANCE_MESSAGE_BODY));
    assert_eq!(
        Some(target.role_arn()),
        e.outputs.schedule_role_arn.as_deref()
    );
    assert_eq!(s.arn(), e.outputs.schedule_arn.as_deref());
    let role_policy = c
        .iam
        .get_role_policy()
        .role_name(&d.names.scheduler_role)
        .policy_name("tracking-pipeline")
        .send()
        .await
        .expect("role policy");
    let doc = percent_encoding::percent_decode_str(&role_policy.policy_document)
        .decode_utf8()
        .expect("utf8")
        .to_string();
    let doc: Value = serde_json::from_str(&role_policy.policy_document)
        .or_else(|_| serde_json::from_str(&doc))
        .expect("policy JSON");
    assert_eq!(doc["Statement"][0]["Action"], "sqs:SendMessage");
    assert_eq!(
        doc["Statement"][0]["Resource"].as_str(),
        e.outputs.queue_arn.as_deref()
    );

    // Worker identity: the policy is published; no role without an OIDC provider.
    let policy: Value = serde_json::from_str(&e.out(&e.outputs.worker_policy, "workerPolicy"))
        .expect("worker policy JSON");
    assert!(policy.to_string().contains("sqs:ChangeMessageVisibility"));
    assert_eq!(e.outputs.worker_role_arn, None);

    // Steady state: a second pass makes no write and reports nothing.
    let before = c.calls.snapshot();
    let writes_before = c.calls.writes();
    assert!(
        writes_before >= 20,
        "creation is counted: {:?}",
        c.calls.write_operations()
    );
    let reports = e.ensure_all().await;
    for (part, r) in &reports {
        assert!(
            r.created.is_empty() && r.repaired.is_empty() && r.is_ready(),
            "{part:?}: {r:?}"
        );
    }
    let after = e.clients.calls.snapshot();
    let calls: u64 = after.values().sum::<u64>() - before.values().sum::<u64>();
    assert_eq!(
        e.clients.calls.writes(),
        writes_before,
        "writes at steady state: {:?}",
        e.clients.calls.write_operations()
    );
    println!(
        "create: {} AWS calls ({writes_before} writes); steady-state resync: {calls} calls, 0 writes",
        before.values().sum::<u64>()
    );
}

#[tokio::test]
async fn non_default_values_are_honoured() {
    let mut spec = TrackingPipelineSpec {
        environment: "staging".into(),
        tags: BTreeMap::from([("Team".to_string(), "parcels".to_string())]),
        ..Default::default()
    };
    spec.queue.visibility_timeout_seconds = 600;
    spec.queue.retention_period = Period::days(2);
    spec.queue.max_receive_count = 5;
    spec.queue.dead_letter_retention_period = Period::days(4);
    spec.queue.dead_letter_visibility_timeout_seconds = 60;
    spec.encryption.key_rotation = false;
    spec.encryption.data_key_reuse_period = Period::minutes(15);
    spec.table.point_in_time_recovery = false;
    spec.table.deletion_protection = true;
    spec.alerts.queue_depth_threshold = 50;
    spec.alerts.worker_errors_threshold = 2;
    spec.schedule.maintenance = "rate(6 hours)".into();
    spec.schedule.timezone = "Europe/Berlin".into();
    let oidc =
        "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE";
    let mut e = env(
        spec,
        &Settings {
            oidc_provider_arn: Some(oidc.into()),
            ..Settings::default()
        },
    )
    .await;
    e.ensure_all().await;
    let (c, d) = (&e.clients, &e.desired);

    let queue_key = e.out(&e.outputs.queue_key_arn, "queueKeyArn");
    let rotation = c
        .kms
        .get_key_rotation_status()
        .key_id(&queue_key)
        .send()
        .await
        .expect("rotation");
    assert!(!rotation.key_rotation_enabled());
    let q = queue_attributes(c, &e.out(&e.outputs.queue_url, "queueUrl")).await;
    assert_eq!(q["VisibilityTimeout"], "600");
    assert_eq!(q["MessageRetentionPeriod"], (2 * 86_400).to_string());
    assert_eq!(q["KmsDataKeyReusePeriodSeconds"], "900");
    assert_eq!(redrive(&q).1, 5);
    let dlq_url = e.out(&e.outputs.dead_letter_queue_url, "deadLetterQueueUrl");
    let dlq = queue_attributes(c, &dlq_url).await;
    assert_eq!(dlq["VisibilityTimeout"], "60");
    assert_eq!(dlq["MessageRetentionPeriod"], (4 * 86_400).to_string());
    let tags = queue_tags(c, &dlq_url).await;
    assert_eq!(tags.get("Environment").map(String::as_str), Some("staging"));
    assert_eq!(tags.get("Team").map(String::as_str), Some("parcels"));
    assert_eq!(
        tags.get("tracking-operator.io/pipeline-name"),
        Some(&d.owner.name)
    );

    let table_name = e.out(&e.outputs.table_name, "tableName");
    let t = c
        .dynamodb
        .describe_table()
        .table_name(&table_name)
        .send()
        .await
        .expect("table")
        .table
        .expect("table");
    assert_eq!(t.deletion_protection_enabled(), Some(true));
    let pitr = c
        .dynamodb
        .describe_continuous_backups()
        .table_name(&table_name)
        .send()
        .await
        .expect("backups");
    let status = pitr
        .continuous_backups_description()
        .and_then(|b| b.point_in_time_recovery_description())
        .and_then(|p| p.point_in_time_recovery_status())
        .map(|s| s.as_str().to_string());
    assert_eq!(status.as_deref(), Some("DISABLED"));

    let alarms = c
        .cloudwatch
        .describe_alarms()
        .alarm_names(&d.names.alarm_queue_depth)
        .alarm_names(&d.names.alarm_worker_errors)
        .send()
        .await
        .expect("alarms");
    let thresholds: BTreeMap<String, f64> = alarms
        .metric_alarms()
        .iter()
        .map(|a| {
            (
                a.alarm_name().unwrap_or_default().to_string(),
                a.threshold().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(thresholds[&d.names.alarm_queue_depth], 50.0);
    assert_eq!(thresholds[&d.names.alarm_worker_errors], 2.0);

    let s = c
        .scheduler
        .get_schedule()
        .name(&d.names.schedule)
        .send()
        .await
        .expect("schedule");
    assert_eq!(s.schedule_expression(), Some("rate(6 hours)"));
    assert_eq!(s.schedule_expression_timezone(), Some("Europe/Berlin"));

    // With an OIDC provider the operator creates the worker role with IRSA trust.
    let role_arn = e.out(&e.outputs.worker_role_arn, "workerRoleArn");
    assert!(
        role_arn.ends_with(&format!("role/{}", d.names.worker_role)),
        "{role_arn}"
    );
    let role = c
        .iam
        .get_role()
        .role_name(&d.names.worker_role)
        .send()
        .await
        .expect("role")
        .role
        .expect("role");
    let trust = role.assume_role_policy_document().unwrap_or_default();
    let trust = percent_encoding::percent_decode_str(trust)
        .decode_utf8()
        .expect("utf8")
        .to_string();
    assert!(
        trust.contains(&format!(
            "system:serviceaccount:{}:{}-worker",
            d.owner.namespace, d.owner.name
        )),
        "{trust}"
    );

    // Deletion honours deletion protection: the table stays, the rest goes.
    let report = aws::delete_all(&e.clients, &e.desired, &e.outputs)
        .await
        .expect("delete_all");
    assert!(
        report
            .retained
            .iter()
            .any(|r| r.contains("deletion protection")),
        "{report:?}"
    );
    assert!(
        c.dynamodb
            .describe_table()
            .table_name(&table_name)
            .send()
            .await
            .is_ok()
    );
    assert!(
        c.iam
            .get_role()
            .role_name(&d.names.worker_role)
            .send()
            .await
            .is_err(),
        "worker role deleted"
    );
}

#[tokio::test]
async fn out_of_band_changes_are_repaired_and_reported() {
    let mut e = env(default_spec(), &Settings::default()).await;
    e.ensure_all().await;
    let (c, d) = (&e.clients, &e.desired);
    let queue_key = e.out(&e.outputs.queue_key_arn, "queueKeyArn");
    let queue_url = e.out(&e.outputs.queue_url, "queueUrl");
    let topic = e.out(&e.outputs.alert_topic_arn, "alertTopicArn");

    c.kms
        .disable_key_rotation()
        .key_id(&queue_key)
        .send()
        .await
        .expect("disable rotation");
    c.sqs
        .set_queue_attributes()
        .queue_url(&queue_url)
        .attributes(QueueAttributeName::VisibilityTimeout, "30")
        .send()
        .await
        .expect("set visibility");
    c.sqs
        .untag_queue()
        .queue_url(&queue_url)
        .tag_keys("Project")
        .send()
        .await
        .expect("untag");
    let alarms = c
        .cloudwatch
        .describe_alarms()
        .alarm_names(&d.names.alarm_queue_depth)
        .send()
        .await
        .expect("alarm");
    let depth = alarms.metric_alarms()[0].clone();
    c.cloudwatch
        .put_metric_alarm()
        .alarm_name(&d.names.alarm_queue_depth)
        .namespace(depth.namespace().unwrap_or_default())
        .metric_name(depth.metric_name().unwrap_or_default())
        .set_dimensions(Some(depth.dimensions().to_vec()))
        .statistic(aws_sdk_cloudwatch::types::Statistic::Maximum)
        .period(60)
        .evaluation_periods(3)
        .datapoints_to_alarm(2)
        .threshold(999_999.0)
        .comparison_operator(aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanThreshold)
        .treat_missing_data("notBreaching")
        .alarm_actions(&topic)
        .alarm_description(depth.alarm_description().unwrap_or_default())
        .send()
        .await
        .expect("change alarm");

    let d = e.desired.clone();
    let reports = e.ensure_all().await;
    let repaired: Vec<String> = reports.values().flat_map(|r| r.repaired.clone()).collect();
    let has = |needle: &str| repaired.iter().any(|r| r.contains(needle));
    assert!(
        has(&format!(
            "KMS key {}: KeyRotationEnabled",
            d.names.queue_key_alias
        )),
        "{repaired:?}"
    );
    assert!(
        has(&format!("SQS queue {}: VisibilityTimeout", d.names.queue)),
        "{repaired:?}"
    );
    assert!(
        has(&format!("SQS queue {}: tag Project", d.names.queue)),
        "{repaired:?}"
    );
    assert!(
        has(&format!(
            "CloudWatch alarm {}: Threshold",
            d.names.alarm_queue_depth
        )),
        "{repaired:?}"
    );
    assert_eq!(repaired.len(), 4, "nothing else was touched: {repaired:?}");
    assert!(reports.values().all(|r| r.created.is_empty()));

    let c = &e.clients;
    assert!(
        c.kms
            .get_key_rotation_status()
            .key_id(&queue_key)
            .send()
            .await
            .expect("rotation")
            .key_rotation_enabled()
    );
    let q = queue_attributes(c, &queue_url).await;
    assert_eq!(q["VisibilityTimeout"], "150");
    assert_eq!(
        queue_tags(c, &queue_url)
            .await
            .get("Project")
            .map(String::as_str),
        Some("LogisticsTracking")
    );
    let alarms = c
        .cloudwatch
        .describe_alarms()
        .alarm_names(&e.desired.names.alarm_queue_depth)
        .send()
        .await
        .expect("alarm");
    assert_eq!(alarms.metric_alarms()[0].threshold(), Some(1000.0));

    let writes = c.calls.writes();
    e.ensure_all().await;
    assert_eq!(
        e.clients.calls.writes(),
        writes,
        "repaired state is steady: {:?}",
        e.clients.calls.write_operations()
    );
}

#[tokio::test]
async fn a_name_taken_by_another_owner_is_a_conflict_and_never_touched() {
    let mut e = env(default_spec(), &Settings::default()).await;
    let c = &e.clients;
    let dlq_name = e.desired.names.dead_letter_queue.clone();
    let foreign = c
        .sqs
        .create_queue()
        .queue_name(&dlq_name)
        .attributes(QueueAttributeName::VisibilityTimeout, "42")
        .tags("tracking-operator.io/managed-by", "tracking-operator")
        .tags("tracking-operator.io/pipeline-namespace", "someone-else")
        .tags("tracking-operator.io/pipeline-name", "theirs")
        .send()
        .await
        .expect("pre-create");
    let foreign_url = foreign.queue_url.expect("url");

    aws::ensure(&e.clients, &e.desired, Part::Keys, &mut e.outputs)
        .await
        .expect("keys");
    let err = aws::ensure(&e.clients, &e.desired, Part::Queues, &mut e.outputs)
        .await
        .expect_err("conflict");
    assert!(err.is_conflict(), "{err}");
    assert!(!err.is_retryable());
    let message = err.to_string();
    assert!(
        message.contains(&format!("SQS queue {dlq_name}")),
        "{message}"
    );
    assert!(message.contains("someone-else/theirs"), "{message}");
    let c = &e.clients;
    assert_eq!(
        queue_attributes(c, &foreign_url).await["VisibilityTimeout"],
        "42",
        "untouched"
    );
    assert_eq!(e.outputs.dead_letter_queue_url, None);

    // Deleting this pipeline leaves the other owner's queue alone.
    let report = aws::delete_all(c, &e.desired, &e.outputs)
        .await
        .expect("delete_all");
    assert!(
        report.retained.iter().any(|r| r.contains(&dlq_name)),
        "{report:?}"
    );
    assert!(
        c.sqs
            .get_queue_url()
            .queue_name(&dlq_name)
            .send()
            .await
            .is_ok()
    );
    c.sqs
        .delete_queue()
        .queue_url(&foreign_url)
        .send()
        .await
        .expect("cleanup");
}

#[tokio::test]
async fn delete_all_leaves_only_keys_pending_deletion_and_is_safe_to_repeat() {
    let mut e = env(default_spec(), &Settings::default()).await;
    // Nothing created yet: deleting works and deletes nothing.
    let report = aws::delete_all(&e.clients, &e.desired, &e.outputs)
        .await
        .expect("delete nothing");
    assert!(
        report.deleted.is_empty() && report.retained.is_empty(),
        "{report:?}"
    );

    e.ensure_all().await;
    let report = aws::delete_all(&e.clients, &e.desired, &e.outputs)
        .await
        .expect("delete_all");
    assert!(report.retained.is_empty(), "{report:?}");
    // 2 queues, table, topic, 5 alarms, schedule, its role, 2 keys.
    assert_eq!(report.deleted.len(), 13, "{report:?}");
    let (c, d) = (&e.clients, &e.desired);
    assert!(
        c.sqs
            .get_queue_url()
            .queue_name(&d.names.queue)
            .send()
            .await
            .is_err()
    );
    assert!(
        c.sqs
            .get_queue_url()
            .queue_name(&d.names.dead_letter_queue)
            .send()
            .await
            .is_err()
    );
    assert!(
        c.dynamodb
            .describe_table()
            .table_name(&d.names.table)
            .send()
            .await
            .is_err()
    );
    let topic = e.out(&e.outputs.alert_topic_arn, "alertTopicArn");
    assert!(
        c.sns
            .get_topic_attributes()
            .topic_arn(&topic)
            .send()
            .await
            .is_err()
    );
    let alarms = c
        .cloudwatch
        .describe_alarms()
        .set_alarm_names(Some(
            d.names.alarms().iter().map(|s| s.to_string()).collect(),
        ))
        .send()
        .await
        .expect("alarms");
    assert!(alarms.metric_alarms().is_empty());
    assert!(
        c.scheduler
            .get_schedule()
            .name(&d.names.schedule)
            .send()
            .await
            .is_err()
    );
    assert!(
        c.iam
            .get_role()
            .role_name(&d.names.scheduler_role)
            .send()
            .await
            .is_err()
    );
    for (alias, arn) in [
        (&d.names.queue_key_alias, &e.outputs.queue_key_arn),
        (&d.names.table_key_alias, &e.outputs.table_key_arn),
    ] {
        assert!(
            c.kms.describe_key().key_id(alias).send().await.is_err(),
            "alias {alias} deleted"
        );
        let meta = c
            .kms
            .describe_key()
            .key_id(arn.clone().expect("arn"))
            .send()
            .await
            .expect("key")
            .key_metadata
            .expect("meta");
        assert_eq!(
            meta.key_state().map(|s| s.as_str()),
            Some("PendingDeletion"),
            "{alias}"
        );
    }

    let again = aws::delete_all(&e.clients, &e.desired, &e.outputs)
        .await
        .expect("repeat");
    assert!(
        again.deleted.is_empty() && again.retained.is_empty(),
        "{again:?}"
    );
}

#[tokio::test]
async fn an_outage_is_retryable_and_the_next_pass_recovers() {
    let proxy = testenv::FlakyProxy::start(&testenv::moto().endpoint());
    let config = testenv::sdk_config_for(&proxy.endpoint()).await;
    let clients = AwsClients::new(&config);
    let desired = aws::desired(&pipeline(default_spec()), &Settings::default()).expect("desired");
    let mut outputs = Outputs::default();
    aws::ensure(&clients, &desired, Part::Keys, &mut outputs)
        .await
        .expect("keys");

    proxy.set_down(true);
    let err = aws::ensure(&clients, &desired, Part::Queues, &mut outputs)
        .await
        .expect_err("AWS is unreachable");
    assert!(err.is_retryable(), "{err:?}");
    assert!(!err.is_conflict());
    assert!(
        clients
            .calls
            .snapshot()
            .keys()
            .any(|k| k.outcome == "network_error")
    );

    proxy.set_down(false);
    for part in Part::ALL {
        let report = aws::ensure(&clients, &desired, part, &mut outputs)
            .await
            .unwrap_or_else(|e| panic!("{part:?} after the outage: {e}"));
        assert!(report.is_ready(), "{part:?}: {report:?}");
    }
    assert!(outputs.schedule_arn.is_some());
}

#[tokio::test]
async fn a_spec_change_converges_in_place() {
    let p = pipeline(default_spec());
    let config = testenv::moto().sdk_config().await;
    let mut e = Env {
        clients: AwsClients::new(&config),
        desired: aws::desired(&p, &Settings::default()).expect("desired"),
        outputs: Outputs::default(),
    };
    e.ensure_all().await;
    let first = e.outputs.clone();

    let mut changed = p.clone();
    changed.spec.queue.visibility_timeout_seconds = 900;
    changed.spec.alerts.oldest_message_age_seconds = 600;
    changed.spec.schedule.maintenance = "cron(30 2 * * ? *)".into();
    changed.spec.tags.insert("CostCenter".into(), "42".into());
    e.desired = aws::desired(&changed, &Settings::default()).expect("desired");
    let reports = e.ensure_all().await;
    let created: Vec<String> = reports.values().flat_map(|r| r.created.clone()).collect();
    assert!(created.is_empty(), "nothing recreated: {created:?}");
    let repaired: Vec<String> = reports.values().flat_map(|r| r.repaired.clone()).collect();
    let has = |needle: &str| repaired.iter().any(|r| r.contains(needle));
    assert!(
        has("VisibilityTimeout")
            && has("Threshold")
            && has("ScheduleExpression")
            && has("tag CostCenter"),
        "{repaired:?}"
    );
    for (a, b, what) in [
        (&first.queue_url, &e.outputs.queue_url, "queue"),
        (&first.queue_key_arn, &e.outputs.queue_key_arn, "key"),
        (&first.table_arn, &e.outputs.table_arn, "table"),
        (&first.schedule_arn, &e.outputs.schedule_arn, "schedule"),
    ] {
        assert_eq!(a, b, "{what} kept its identity");
    }
    let q = queue_attributes(&e.clients, &e.out(&e.outputs.queue_url, "queueUrl")).await;
    assert_eq!(q["VisibilityTimeout"], "900");
    let s = e
        .clients
        .scheduler
        .get_schedule()
        .name(&e.desired.names.schedule)
        .send()
        .await
        .expect("schedule");
    assert_eq!(s.schedule_expression(), Some("cron(30 2 * * ? *)"));
}

/// Runs the parts in order and returns the first error.
async fn first_error(e: &mut Env) -> Option<(Part, aws::Error)> {
    for part in Part::ALL {
        if let Err(err) = aws::ensure(&e.clients, &e.desired, part, &mut e.outputs).await {
            return Some((part, err));
        }
    }
    None
}

#[tokio::test]
async fn every_kind_of_resource_refuses_a_foreign_namesake() {
    // A KMS alias on a key nobody tagged.
    let mut e = env(default_spec(), &Settings::default()).await;
    let key = e
        .clients
        .kms
        .create_key()
        .send()
        .await
        .expect("key")
        .key_metadata
        .expect("meta");
    let alias = e.desired.names.queue_key_alias.clone();
    e.clients
        .kms
        .create_alias()
        .alias_name(&alias)
        .target_key_id(key.key_id())
        .send()
        .await
        .expect("alias");
    let (part, err) = first_error(&mut e).await.expect("conflict");
    assert_eq!(part, Part::Keys);
    assert!(
        err.is_conflict() && err.to_string().contains(&format!("KMS key {alias}")),
        "{err}"
    );

    // A table created by hand.
    let mut e = env(default_spec(), &Settings::default()).await;
    let table = e.desired.names.table.clone();
    e.clients
        .dynamodb
        .create_table()
        .table_name(&table)
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()
                .expect("attr"),
        )
        .key_schema(
            aws_sdk_dynamodb::types::KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                .build()
                .expect("key"),
        )
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .send()
        .await
        .expect("table");
    let (part, err) = first_error(&mut e).await.expect("conflict");
    assert_eq!(part, Part::Table);
    assert!(
        err.is_conflict() && err.to_string().contains(&format!("DynamoDB table {table}")),
        "{err}"
    );

    // A topic of another pipeline.
    let mut e = env(default_spec(), &Settings::default()).await;
    let topic = e.desired.names.topic.clone();
    let other = aws_sdk_sns::types::Tag::builder()
        .key("tracking-operator.io/managed-by")
        .value("someone-else")
        .build()
        .expect("tag");
    e.clients
        .sns
        .create_topic()
        .name(&topic)
        .tags(other)
        .send()
        .await
        .expect("topic");
    let (part, err) = first_error(&mut e).await.expect("conflict");
    assert_eq!(part, Part::Alerts);
    assert!(
        err.is_conflict() && err.to_string().contains(&format!("SNS topic {topic}")),
        "{err}"
    );

    // A schedule someone else wrote (schedules have no tags: the description tells).
    let mut e = env(default_spec(), &Settings::default()).await;
    let schedule = e.desired.names.schedule.clone();
    e.clients
        .scheduler
        .create_schedule()
        .name(&schedule)
        .description("nightly report")
        .schedule_expression("rate(1 day)")
        .flexible_time_window(
            aws_sdk_scheduler::types::FlexibleTimeWindow::builder()
                .mode(aws_sdk_scheduler::types::FlexibleTimeWindowMode::Off)
                .build()
                .expect("window"),
        )
        .target(
            aws_sdk_scheduler::types::Target::builder()
                .arn("arn:aws:sqs:us-east-1:123456789012:elsewhere")
                .role_arn("arn:aws:iam::123456789012:role/elsewhere")
                .build()
                .expect("target"),
        )
        .send()
        .await
        .expect("schedule");
    let (part, err) = first_error(&mut e).await.expect("conflict");
    assert_eq!(part, Part::Schedule);
    assert!(
        err.is_conflict()
            && err
                .to_string()
                .contains(&format!("EventBridge schedule {schedule}")),
        "{err}"
    );
    let s = e
        .clients
        .scheduler
        .get_schedule()
        .name(&schedule)
        .send()
        .await
        .expect("schedule");
    assert_eq!(s.description(), Some("nightly report"), "untouched");
    let report = aws::delete_all(&e.clients, &e.desired, &e.outputs)
        .await
        .expect("delete_all");
    assert!(
        report.retained.iter().any(|r| r.contains(&schedule)),
        "{report:?}"
    );
    assert!(
        e.clients
            .scheduler
            .get_schedule()
            .name(&schedule)
            .send()
            .await
            .is_ok(),
        "a foreign schedule survives Delete"
    );
}

#[tokio::test]
async fn a_deleted_alias_points_back_to_the_same_key() {
    let mut e = env(default_spec(), &Settings::default()).await;
    aws::ensure(&e.clients, &e.desired, Part::Keys, &mut e.outputs)
        .await
        .expect("keys");
    let arn = e.out(&e.outputs.table_key_arn, "tableKeyArn");
    let alias = e.desired.names.table_key_alias.clone();
    e.clients
        .kms
        .delete_alias()
        .alias_name(&alias)
        .send()
        .await
        .expect("delete alias");

    let report = aws::ensure(&e.clients, &e.desired, Part::Keys, &mut e.outputs)
        .await
        .expect("keys again");
    assert!(report.created.is_empty(), "no second key: {report:?}");
    assert_eq!(report.repaired, vec![format!("KMS key {alias}: alias")]);
    assert_eq!(e.outputs.table_key_arn.as_deref(), Some(arn.as_str()));
    let meta = e
        .clients
        .kms
        .describe_key()
        .key_id(&alias)
        .send()
        .await
        .expect("alias");
    assert_eq!(meta.key_metadata.and_then(|m| m.arn), Some(arn));
}

//! End to end: the controller in-process against the real API server and moto. The AWS
//! helper's tests cover each resource in detail; these prove the whole pipeline.

mod controller_support;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use controller_support::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use tracking_operator::api::TrackingPipeline;
use tracking_worker::contract::{cloudwatch, env};

const RESYNC: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn default_pipeline_is_the_reference_stack() {
    let kube = testenv::kube();
    let ns = kube.namespace("e2e-default").await;
    let _operator = moto_operator(&ns, RESYNC).await;
    let api = pipelines(&ns).await;
    create(&api, "parcels", json!({})).await;
    let p = wait_ready(&api, "parcels").await;
    let status = p.status.clone().unwrap();
    let o = &status.outputs;
    let d = desired_of(&p);

    // Status: every part True, kstatus quiet, identifiers published.
    for part in [
        "KeysReady",
        "QueuesReady",
        "TableReady",
        "AlertsReady",
        "ScheduleReady",
    ] {
        assert!(is(&p, part, "True"), "{part}: {:?}", message(&p, part));
    }
    assert!(
        worker_applied(&p),
        "WorkerReady: {:?}",
        message(&p, "WorkerReady")
    );
    assert!(reason(&p, "Reconciling").is_none() && reason(&p, "Stalled").is_none());
    assert!(
        p.finalizers()
            .iter()
            .any(|f| f == "tracking-operator.io/cleanup")
    );
    for (field, value) in [
        ("queueUrl", &o.queue_url),
        ("queueArn", &o.queue_arn),
        ("deadLetterQueueUrl", &o.dead_letter_queue_url),
        ("deadLetterQueueArn", &o.dead_letter_queue_arn),
        ("tableName", &o.table_name),
        ("tableArn", &o.table_arn),
        ("queueKeyArn", &o.queue_key_arn),
        ("tableKeyArn", &o.table_key_arn),
        ("alertTopicArn", &o.alert_topic_arn),
        ("scheduleArn", &o.schedule_arn),
        ("scheduleRoleArn", &o.schedule_role_arn),
        ("workerPolicy", &o.worker_policy),
        ("outputsConfigMap", &o.outputs_config_map),
    ] {
        assert!(value.is_some(), "status.outputs.{field} missing");
    }
    let out = |v: &Option<String>| v.clone().unwrap();

    let sdk = testenv::moto().sdk_config().await;
    // KMS: two customer managed keys, rotation on, tagged.
    let kms = aws_sdk_kms::Client::new(&sdk);
    for key in [out(&o.queue_key_arn), out(&o.table_key_arn)] {
        let rotation = kms
            .get_key_rotation_status()
            .key_id(&key)
            .send()
            .await
            .unwrap();
        assert!(rotation.key_rotation_enabled(), "{key} rotation");
        let meta = kms
            .describe_key()
            .key_id(&key)
            .send()
            .await
            .unwrap()
            .key_metadata
            .unwrap();
        assert_eq!(
            meta.key_manager(),
            Some(&aws_sdk_kms::types::KeyManagerType::Customer)
        );
        let tags = kms
            .list_resource_tags()
            .key_id(&key)
            .send()
            .await
            .unwrap()
            .tags
            .unwrap_or_default();
        let tag = |k: &str| {
            tags.iter()
                .find(|t| t.tag_key() == k)
                .map(|t| t.tag_value().to_string())
        };
        assert_eq!(tag("Environment").as_deref(), Some("Production"));
        assert_eq!(tag("Project").as_deref(), Some("LogisticsTracking"));
        assert_eq!(tag("tracking-operator.io/pipeline-uid"), p.uid());
    }

    // SQS: main queue and DLQ as in the reference.
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let q = queue_attributes(&sqs, &out(&o.queue_url)).await;
    assert_eq!(q[&QueueAttributeName::VisibilityTimeout], "150");
    assert_eq!(q[&QueueAttributeName::MessageRetentionPeriod], "604800");
    assert_eq!(q[&QueueAttributeName::KmsDataKeyReusePeriodSeconds], "300");
    assert!(
        q[&QueueAttributeName::KmsMasterKeyId]
            .contains(out(&o.queue_key_arn).rsplit('/').next().unwrap())
    );
    let redrive: serde_json::Value =
        serde_json::from_str(&q[&QueueAttributeName::RedrivePolicy]).unwrap();
    assert_eq!(
        redrive["deadLetterTargetArn"],
        out(&o.dead_letter_queue_arn)
    );
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        "3"
    );
    assert!(
        !q.contains_key(&QueueAttributeName::FifoQueue)
            || q[&QueueAttributeName::FifoQueue] == "false"
    );
    let dlq = queue_attributes(&sqs, &out(&o.dead_letter_queue_url)).await;
    assert_eq!(dlq[&QueueAttributeName::VisibilityTimeout], "300");
    assert_eq!(dlq[&QueueAttributeName::MessageRetentionPeriod], "1209600");
    assert_eq!(
        dlq[&QueueAttributeName::KmsDataKeyReusePeriodSeconds],
        "300"
    );

    // DynamoDB: keys, on-demand, SSE with our key, StatusIndex, PITR, TTL.
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let table = ddb
        .describe_table()
        .table_name(out(&o.table_name))
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    let keys: Vec<(String, String)> = table
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
        [
            ("tracking_id".into(), "HASH".into()),
            ("timestamp".into(), "RANGE".into())
        ]
    );
    assert_eq!(
        table
            .billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .map(|b| b.as_str()),
        Some("PAY_PER_REQUEST")
    );
    let sse = table.sse_description().unwrap();
    assert_eq!(sse.kms_master_key_arn(), o.table_key_arn.as_deref());
    let gsi = table.global_secondary_indexes();
    assert_eq!(gsi.len(), 1);
    assert_eq!(gsi[0].index_name(), Some("StatusIndex"));
    let pitr = ddb
        .describe_continuous_backups()
        .table_name(out(&o.table_name))
        .send()
        .await
        .unwrap();
    let pitr = pitr
        .continuous_backups_description
        .unwrap()
        .point_in_time_recovery_description
        .unwrap();
    assert_eq!(
        pitr.point_in_time_recovery_status().map(|s| s.as_str()),
        Some("ENABLED")
    );
    let ttl = ddb
        .describe_time_to_live()
        .table_name(out(&o.table_name))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ttl.time_to_live_description.unwrap().attribute_name(),
        Some("ttl")
    );

    // SNS topic; five alarms notifying it, the worker alarms on the contract's metrics.
    let sns = aws_sdk_sns::Client::new(&sdk);
    let topic = sns
        .get_topic_attributes()
        .topic_arn(out(&o.alert_topic_arn))
        .send()
        .await
        .unwrap();
    assert_eq!(
        topic.attributes.unwrap()["DisplayName"],
        "Logistics Tracking Alerts"
    );
    let cw = aws_sdk_cloudwatch::Client::new(&sdk);
    let names = [
        &d.names.alarm_queue_depth,
        &d.names.alarm_oldest_message,
        &d.names.alarm_worker_errors,
        &d.names.alarm_worker_throttles,
        &d.names.alarm_dead_letters,
    ];
    let alarms = cw
        .describe_alarms()
        .set_alarm_names(Some(names.iter().map(|n| n.to_string()).collect()))
        .send()
        .await
        .unwrap()
        .metric_alarms
        .unwrap_or_default();
    assert_eq!(alarms.len(), 5);
    let alarm = |name: &str| {
        alarms
            .iter()
            .find(|a| a.alarm_name() == Some(name))
            .unwrap()
    };
    for a in &alarms {
        assert_eq!(
            a.alarm_actions(),
            [out(&o.alert_topic_arn)],
            "{:?}",
            a.alarm_name()
        );
    }
    let depth = alarm(&d.names.alarm_queue_depth);
    assert_eq!(
        depth.metric_name(),
        Some("ApproximateNumberOfMessagesVisible")
    );
    assert_eq!(
        (
            depth.threshold(),
            depth.evaluation_periods(),
            depth.datapoints_to_alarm()
        ),
        (Some(1000.0), Some(3), Some(2))
    );
    assert_eq!(depth.treat_missing_data(), Some("notBreaching"));
    assert_eq!(
        alarm(&d.names.alarm_oldest_message).threshold(),
        Some(300.0)
    );
    let errors = alarm(&d.names.alarm_worker_errors);
    assert_eq!(errors.namespace(), Some(cloudwatch::DEFAULT_NAMESPACE));
    assert_eq!(errors.metric_name(), Some(cloudwatch::METRIC_ERRORS));
    assert_eq!(
        errors.dimensions()[0].name(),
        Some(cloudwatch::DIMENSION_PIPELINE)
    );
    assert_eq!(
        errors.dimensions()[0].value(),
        Some(format!("{ns}/parcels").as_str())
    );
    assert_eq!(
        alarm(&d.names.alarm_worker_throttles).metric_name(),
        Some(cloudwatch::METRIC_THROTTLES)
    );
    let dl = alarm(&d.names.alarm_dead_letters);
    assert_eq!(
        (dl.threshold(), dl.evaluation_periods()),
        (Some(1.0), Some(1))
    );

    // Scheduler: daily 01:00 UTC, to the queue, with its own role.
    let scheduler = aws_sdk_scheduler::Client::new(&sdk);
    let schedule = scheduler
        .get_schedule()
        .name(&d.names.schedule)
        .send()
        .await
        .unwrap();
    assert_eq!(schedule.schedule_expression(), Some("cron(0 1 * * ? *)"));
    assert_eq!(schedule.schedule_expression_timezone(), Some("UTC"));
    let target = schedule.target().unwrap();
    assert_eq!(target.arn(), out(&o.queue_arn));
    assert_eq!(target.role_arn(), out(&o.schedule_role_arn));

    // Worker policy: least privilege on exactly our resources.
    let policy = out(&o.worker_policy);
    for must in [
        out(&o.queue_arn),
        out(&o.dead_letter_queue_arn),
        out(&o.table_arn),
        out(&o.queue_key_arn),
    ] {
        assert!(policy.contains(&must), "worker policy lacks {must}");
    }
    assert!(policy.contains("kms:Decrypt"));

    // Cluster children: owned, applied, configured from the worker's contract.
    let client = kube.client().await;
    let owned =
        |owners: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
            owners.is_some_and(|o| {
                o.iter()
                    .any(|r| Some(&r.uid) == p.uid().as_ref() && r.controller == Some(true))
            })
        };
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .get("parcels-worker")
        .await
        .unwrap();
    assert!(owned(sa.metadata.owner_references.as_ref()));
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get(&out(&o.outputs_config_map))
        .await
        .unwrap();
    assert!(owned(cm.metadata.owner_references.as_ref()));
    assert_eq!(cm.data.as_ref().unwrap()["queueUrl"], out(&o.queue_url));
    let deployment = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("parcels-worker")
        .await
        .unwrap();
    assert!(owned(deployment.metadata.owner_references.as_ref()));
    let managers: Vec<_> = deployment
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.contains(&"tracking-operator".to_string()),
        "{managers:?}"
    );
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("parcels-worker"));
    let container_env: HashMap<String, String> = pod.containers[0]
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.value.unwrap_or_default()))
        .collect();
    assert_eq!(container_env[env::QUEUE_URL], out(&o.queue_url));
    assert_eq!(container_env[env::TABLE_NAME], out(&o.table_name));
    assert_eq!(container_env[env::PIPELINE], format!("{ns}/parcels"));

    // Events: resources created, then Ready.
    let reasons: Vec<String> = event_reasons(&client, &p)
        .await
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    assert!(reasons.iter().any(|r| r == "Created"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "Ready"), "{reasons:?}");
}

#[tokio::test]
async fn non_default_values_are_honoured_and_spec_changes_converge_in_place() {
    let kube = testenv::kube();
    let ns = kube.namespace("e2e-values").await;
    let _operator = moto_operator(&ns, RESYNC).await;
    let api = pipelines(&ns).await;
    create(
        &api,
        "custom",
        json!({
            "environment": "staging",
            "tags": {"Team": "parcels"},
            "queue": {"visibilityTimeoutSeconds": 600, "retentionPeriod": "2d", "maxReceiveCount": 5},
            "encryption": {"dataKeyReusePeriod": "10m"},
            "alerts": {"queueDepthThreshold": 50, "email": "ops@example.com"},
            "schedule": {"maintenance": "cron(30 2 * * ? *)", "timezone": "Europe/Berlin"},
            "worker": {"replicas": 2, "image": "example.com/custom:2", "roleArn": "arn:aws:iam::123456789012:role/custom-worker"}
        }),
    )
    .await;
    let p = wait_ready(&api, "custom").await;
    let o = p.status.clone().unwrap().outputs;
    let d = desired_of(&p);
    let sdk = testenv::moto().sdk_config().await;
    // moto confirms e-mail subscriptions at once (real SNS waits for a click: the AWS side's
    // tests cover PendingConfirmation), so the subscription is ready and published.
    let subscription = o
        .subscription_arn
        .clone()
        .expect("status.outputs.subscriptionArn");
    let sns = aws_sdk_sns::Client::new(&sdk);
    let attrs = sns
        .get_subscription_attributes()
        .subscription_arn(&subscription)
        .send()
        .await
        .unwrap();
    assert_eq!(attrs.attributes.unwrap()["Endpoint"], "ops@example.com");
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue_url = o.queue_url.clone().unwrap();
    let q = queue_attributes(&sqs, &queue_url).await;
    assert_eq!(q[&QueueAttributeName::VisibilityTimeout], "600");
    assert_eq!(q[&QueueAttributeName::MessageRetentionPeriod], "172800");
    assert_eq!(q[&QueueAttributeName::KmsDataKeyReusePeriodSeconds], "600");
    let tags = sqs
        .list_queue_tags()
        .queue_url(&queue_url)
        .send()
        .await
        .unwrap()
        .tags
        .unwrap_or_default();
    assert_eq!(tags.get("Environment").map(String::as_str), Some("staging"));
    assert_eq!(tags.get("Team").map(String::as_str), Some("parcels"));
    let cw = aws_sdk_cloudwatch::Client::new(&sdk);
    let depth = |cw: aws_sdk_cloudwatch::Client, name: String| async move {
        cw.describe_alarms()
            .alarm_names(name)
            .send()
            .await
            .unwrap()
            .metric_alarms
            .unwrap_or_default()[0]
            .threshold()
    };
    assert_eq!(
        depth(cw.clone(), d.names.alarm_queue_depth.clone()).await,
        Some(50.0)
    );
    let scheduler = aws_sdk_scheduler::Client::new(&sdk);
    let schedule = scheduler
        .get_schedule()
        .name(&d.names.schedule)
        .send()
        .await
        .unwrap();
    assert_eq!(schedule.schedule_expression(), Some("cron(30 2 * * ? *)"));
    assert_eq!(
        schedule.schedule_expression_timezone(),
        Some("Europe/Berlin")
    );
    let client = kube.client().await;
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .get("custom-worker")
        .await
        .unwrap();
    assert_eq!(
        sa.annotations()
            .get("eks.amazonaws.com/role-arn")
            .map(String::as_str),
        Some("arn:aws:iam::123456789012:role/custom-worker")
    );
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let deployment = deployments.get("custom-worker").await.unwrap();
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(
        spec.template.spec.unwrap().containers[0].image.as_deref(),
        Some("example.com/custom:2")
    );

    // A spec change converges without recreating what can be updated in place.
    let patch = json!({"spec": {
        "queue": {"visibilityTimeoutSeconds": 900},
        "alerts": {"queueDepthThreshold": 75},
        "encryption": {"keyRotation": false},
        "table": {"pointInTimeRecovery": false},
        "worker": {"replicas": 3}
    }});
    api.patch("custom", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    let changed = wait_ready(&api, "custom").await;
    assert!(changed.metadata.generation > p.metadata.generation);
    let o2 = changed.status.unwrap().outputs;
    assert_eq!(o2.queue_url, o.queue_url, "queue recreated");
    assert_eq!(o2.queue_key_arn, o.queue_key_arn, "key recreated");
    assert_eq!(o2.table_arn, o.table_arn, "table recreated");
    assert_eq!(
        queue_attributes(&sqs, &queue_url).await[&QueueAttributeName::VisibilityTimeout],
        "900"
    );
    assert_eq!(
        depth(cw, d.names.alarm_queue_depth.clone()).await,
        Some(75.0)
    );
    let kms = aws_sdk_kms::Client::new(&sdk);
    let rotation = kms
        .get_key_rotation_status()
        .key_id(o2.queue_key_arn.unwrap())
        .send()
        .await
        .unwrap();
    assert!(!rotation.key_rotation_enabled());
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let pitr = ddb
        .describe_continuous_backups()
        .table_name(o2.table_name.unwrap())
        .send()
        .await
        .unwrap();
    let pitr = pitr
        .continuous_backups_description
        .unwrap()
        .point_in_time_recovery_description
        .unwrap();
    assert_eq!(
        pitr.point_in_time_recovery_status().map(|s| s.as_str()),
        Some("DISABLED")
    );
    assert_eq!(
        deployments
            .get("custom-worker")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(3)
    );
}

#[tokio::test]
async fn resync_repairs_out_of_band_changes_and_writes_nothing_when_nothing_differs() {
    let kube = testenv::kube();
    let ns = kube.namespace("e2e-drift").await;
    let operator = moto_operator(&ns, Duration::from_secs(3)).await;
    let api = pipelines(&ns).await;
    create(&api, "drifty", json!({})).await;
    let p = wait_ready(&api, "drifty").await;
    let o = p.status.clone().unwrap().outputs;
    let d = desired_of(&p);

    // Steady state: a few resyncs with nothing changed make no AWS write.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before = operator.calls.writes();
    let reads_before = operator.calls.total() - before;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        operator.calls.writes(),
        before,
        "writes in steady state: {:?}",
        operator.calls.write_operations()
    );
    assert!(
        operator.calls.total() - operator.calls.writes() > reads_before,
        "no resync happened"
    );

    let sdk = testenv::moto().sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let kms = aws_sdk_kms::Client::new(&sdk);
    let cw = aws_sdk_cloudwatch::Client::new(&sdk);
    let queue_url = o.queue_url.clone().unwrap();
    let key = o.queue_key_arn.clone().unwrap();
    // Out-of-band changes: a queue attribute, key rotation, an alarm threshold, a tag.
    sqs.set_queue_attributes()
        .queue_url(&queue_url)
        .attributes(QueueAttributeName::VisibilityTimeout, "42")
        .send()
        .await
        .unwrap();
    kms.disable_key_rotation()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    let depth = cw
        .describe_alarms()
        .alarm_names(&d.names.alarm_queue_depth)
        .send()
        .await
        .unwrap()
        .metric_alarms
        .unwrap()
        .remove(0);
    cw.put_metric_alarm()
        .alarm_name(&d.names.alarm_queue_depth)
        .namespace(depth.namespace().unwrap())
        .metric_name(depth.metric_name().unwrap())
        .set_dimensions(Some(depth.dimensions().to_vec()))
        .statistic(depth.statistic().unwrap().clone())
        .period(depth.period().unwrap())
        .evaluation_periods(depth.evaluation_periods().unwrap())
        .comparison_operator(depth.comparison_operator().unwrap().clone())
        .threshold(99_999.0)
        .send()
        .await
        .unwrap();
    sqs.untag_queue()
        .queue_url(&queue_url)
        .tag_keys("Project")
        .send()
        .await
        .unwrap();

    let repaired = eventually(|| {
        let (sqs, kms, cw, url, key, alarm) = (
            sqs.clone(),
            kms.clone(),
            cw.clone(),
            queue_url.clone(),
            key.clone(),
            d.names.alarm_queue_depth.clone(),
        );
        async move {
            let q = queue_attributes(&sqs, &url).await;
            let tags = sqs
                .list_queue_tags()
                .queue_url(&url)
                .send()
                .await
                .unwrap()
                .tags
                .unwrap_or_default();
            let rotation = kms
                .get_key_rotation_status()
                .key_id(&key)
                .send()
                .await
                .unwrap()
                .key_rotation_enabled();
            let threshold = cw
                .describe_alarms()
                .alarm_names(alarm)
                .send()
                .await
                .unwrap()
                .metric_alarms
                .unwrap()[0]
                .threshold();
            q[&QueueAttributeName::VisibilityTimeout] == "150"
                && tags.get("Project").map(String::as_str) == Some("LogisticsTracking")
                && rotation
                && threshold == Some(1000.0)
        }
    })
    .await;
    assert!(repaired, "drift was not repaired");
    let client = kube.client().await;
    let notes: Vec<String> = event_reasons(&client, &p)
        .await
        .into_iter()
        .filter(|(r, _)| r == "DriftRepaired")
        .map(|(_, n)| n)
        .collect();
    assert!(
        notes.len() >= 3,
        "one Event per repaired attribute: {notes:?}"
    );
    assert!(is(&api.get("drifty").await.unwrap(), "Ready", "True"));
}

#[tokio::test]
async fn delete_policy_removes_everything_but_keys_pending_deletion() {
    let kube = testenv::kube();
    let ns = kube.namespace("e2e-delete").await;
    let _operator = moto_operator(&ns, RESYNC).await;
    let api = pipelines(&ns).await;
    create(
        &api,
        "doomed",
        json!({"deletionPolicy": "Delete", "encryption": {"keyDeletionWindowDays": 10}}),
    )
    .await;
    let p = wait_ready(&api, "doomed").await;
    let o = p.status.clone().unwrap().outputs;
    let d = desired_of(&p);
    api.delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&api, "doomed").await;

    let sdk = testenv::moto().sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    for url in [o.queue_url.unwrap(), o.dead_letter_queue_url.unwrap()] {
        assert!(
            sqs.get_queue_attributes()
                .queue_url(&url)
                .send()
                .await
                .is_err(),
            "{url} still exists"
        );
    }
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    assert!(
        ddb.describe_table()
            .table_name(o.table_name.unwrap())
            .send()
            .await
            .is_err()
    );
    let sns = aws_sdk_sns::Client::new(&sdk);
    assert!(
        sns.get_topic_attributes()
            .topic_arn(o.alert_topic_arn.unwrap())
            .send()
            .await
            .is_err()
    );
    let cw = aws_sdk_cloudwatch::Client::new(&sdk);
    let alarms = cw
        .describe_alarms()
        .alarm_names(&d.names.alarm_queue_depth)
        .send()
        .await
        .unwrap();
    assert!(alarms.metric_alarms.unwrap_or_default().is_empty());
    let scheduler = aws_sdk_scheduler::Client::new(&sdk);
    assert!(
        scheduler
            .get_schedule()
            .name(&d.names.schedule)
            .send()
            .await
            .is_err()
    );
    let kms = aws_sdk_kms::Client::new(&sdk);
    for key in [o.queue_key_arn.unwrap(), o.table_key_arn.unwrap()] {
        let meta = kms
            .describe_key()
            .key_id(&key)
            .send()
            .await
            .unwrap()
            .key_metadata
            .unwrap();
        assert_eq!(
            meta.key_state().map(|s| s.as_str()),
            Some("PendingDeletion"),
            "{key}"
        );
        // Scheduled with the spec's window (10 days), not deleted at once.
        let when = meta.deletion_date().expect("deletion date").secs();
        let in_days = (when
            - std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64) as f64
            / 86_400.0;
        assert!(
            (9.5..=10.5).contains(&in_days),
            "{key} deleted in {in_days} days"
        );
    }
}

#[tokio::test]
async fn retain_policy_leaves_every_aws_resource() {
    let kube = testenv::kube();
    let ns = kube.namespace("e2e-retain").await;
    let _operator = moto_operator(&ns, RESYNC).await;
    let api = pipelines(&ns).await;
    create(&api, "kept", json!({})).await;
    let p = wait_ready(&api, "kept").await;
    let o = p.status.clone().unwrap().outputs;
    let d = desired_of(&p);
    api.delete("kept", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "kept").await;

    let sdk = testenv::moto().sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    for url in [o.queue_url.unwrap(), o.dead_letter_queue_url.unwrap()] {
        sqs.get_queue_attributes()
            .queue_url(&url)
            .send()
            .await
            .expect("queue retained");
    }
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    ddb.describe_table()
        .table_name(o.table_name.unwrap())
        .send()
        .await
        .expect("table retained");
    let sns = aws_sdk_sns::Client::new(&sdk);
    sns.get_topic_attributes()
        .topic_arn(o.alert_topic_arn.unwrap())
        .send()
        .await
        .expect("topic retained");
    let scheduler = aws_sdk_scheduler::Client::new(&sdk);
    scheduler
        .get_schedule()
        .name(&d.names.schedule)
        .send()
        .await
        .expect("schedule retained");
    let kms = aws_sdk_kms::Client::new(&sdk);
    for key in [o.queue_key_arn.unwrap(), o.table_key_arn.unwrap()] {
        let meta = kms
            .describe_key()
            .key_id(&key)
            .send()
            .await
            .unwrap()
            .key_metadata
            .unwrap();
        assert_eq!(meta.key_state().map(|s| s.as_str()), Some("Enabled"));
    }
    let client = kube.client().await;
    let retained: Vec<_> = event_reasons(&client, &p)
        .await
        .into_iter()
        .filter(|(r, _)| r == "Retained")
        .collect();
    assert_eq!(retained.len(), 1, "a Retained Event");
}

#[tokio::test]
async fn a_queue_with_our_name_but_another_owner_stalls_the_pipeline() {
    let kube = testenv::kube();
    let ns = kube.namespace("e2e-conflict").await;
    let api = pipelines(&ns).await;
    // Learn the name the pipeline will use, and take it first.
    let mut probe = TrackingPipeline::new("squatted", Default::default());
    probe.metadata.namespace = Some(ns.clone());
    probe.metadata.uid = Some("not-yet-known".into());
    let names = desired_of(&probe).names;
    let sdk = testenv::moto().sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    sqs.create_queue()
        .queue_name(&names.queue)
        .tags("owner", "someone-else")
        .send()
        .await
        .expect("squatter queue");

    let _operator = moto_operator(&ns, RESYNC).await;
    create(&api, "squatted", json!({})).await;
    let p = wait_for(&api, "squatted", "Stalled=True", |p| {
        is(p, "Stalled", "True")
    })
    .await;
    let stalled = message(&p, "Stalled").unwrap();
    assert!(stalled.contains(&names.queue), "{stalled}");
    assert_eq!(reason(&p, "QueuesReady").as_deref(), Some("Conflict"));
    assert!(is(&p, "Ready", "False"));
    assert!(reason(&p, "Reconciling").is_none());
    // Never taken over: the squatter's queue keeps its tags and gets none of ours.
    let url = sqs
        .get_queue_url()
        .queue_name(&names.queue)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let tags = sqs
        .list_queue_tags()
        .queue_url(&url)
        .send()
        .await
        .unwrap()
        .tags
        .unwrap_or_default();
    assert_eq!(tags.get("owner").map(String::as_str), Some("someone-else"));
    assert!(!tags.contains_key("tracking-operator.io/pipeline-uid"));
}

#[tokio::test]
async fn a_configmap_with_our_name_but_no_owner_stalls_the_pipeline() {
    let kube = testenv::kube();
    let ns = kube.namespace("e2e-child-conflict").await;
    let client = kube.client().await;
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let theirs: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "taken-outputs"},
        "data": {"owner": "someone-else"}
    }))
    .unwrap();
    config_maps
        .create(&Default::default(), &theirs)
        .await
        .unwrap();

    let _operator = moto_operator(&ns, RESYNC).await;
    let api = pipelines(&ns).await;
    create(&api, "taken", json!({})).await;
    let p = wait_for(&api, "taken", "Stalled=True", |p| is(p, "Stalled", "True")).await;
    let stalled = message(&p, "Stalled").unwrap();
    assert!(
        stalled.contains("ConfigMap") && stalled.contains("taken-outputs"),
        "{stalled}"
    );
    assert_eq!(reason(&p, "WorkerReady").as_deref(), Some("Conflict"));
    let after = config_maps.get("taken-outputs").await.unwrap();
    assert!(after.metadata.owner_references.is_none(), "taken over");
    assert_eq!(
        after.data.unwrap().get("owner").map(String::as_str),
        Some("someone-else")
    );
}

#[tokio::test]
async fn with_the_clusters_oidc_provider_the_worker_gets_an_irsa_role() {
    let kube = testenv::kube();
    let ns = kube.namespace("e2e-irsa").await;
    let provider =
        "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE";
    let _operator = Operator::start_with(&testenv::moto().endpoint(), &ns, RESYNC, |config| {
        config.aws_settings.oidc_provider_arn = Some(provider.to_string());
    })
    .await;
    let api = pipelines(&ns).await;
    create(&api, "irsa", json!({})).await;
    let p = wait_ready(&api, "irsa").await;
    let o = p.status.clone().unwrap().outputs;
    let role_arn = o
        .worker_role_arn
        .clone()
        .expect("status.outputs.workerRoleArn");

    // The ServiceAccount carries the role, and the role trusts exactly that ServiceAccount.
    let client = kube.client().await;
    let sa = Api::<ServiceAccount>::namespaced(client, &ns)
        .get("irsa-worker")
        .await
        .unwrap();
    assert_eq!(
        sa.annotations().get("eks.amazonaws.com/role-arn"),
        Some(&role_arn)
    );
    let iam = aws_sdk_iam::Client::new(&testenv::moto().sdk_config().await);
    let role_name = role_arn.rsplit('/').next().unwrap();
    let role = iam
        .get_role()
        .role_name(role_name)
        .send()
        .await
        .unwrap()
        .role
        .unwrap();
    let trust = urlencoding_decode(role.assume_role_policy_document().unwrap_or_default());
    assert!(
        trust.contains(&format!("system:serviceaccount:{ns}:irsa-worker")),
        "{trust}"
    );
    assert!(trust.contains("sts:AssumeRoleWithWebIdentity"), "{trust}");
}

/// IAM returns policy documents URL-encoded.
fn urlencoding_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn an_edited_worker_deployment_is_put_back_by_the_owner_watch() {
    let kube = testenv::kube();
    let ns = kube.namespace("e2e-child-drift").await;
    // A long resync: only the `.owns()` watch can bring the change back in time.
    let _operator = moto_operator(&ns, RESYNC).await;
    let api = pipelines(&ns).await;
    create(&api, "edited", json!({"worker": {"replicas": 1}})).await;
    wait_ready(&api, "edited").await;
    let deployments = Api::<Deployment>::namespaced(kube.client().await, &ns);
    let edit = json!({"spec": {"replicas": 5}});
    deployments
        .patch("edited-worker", &PatchParams::apply("someone-else").force(), &Patch::Apply(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "edited-worker"}, "spec": edit["spec"]
        })))
        .await
        .unwrap();
    let restored = eventually(|| {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get("edited-worker").await.unwrap();
            d.spec.and_then(|s| s.replicas) == Some(1)
        }
    })
    .await;
    assert!(restored, "the operator did not restore spec.replicas");

    // The ConfigMap child is watched by its metadata only; a deletion still brings it back.
    let config_maps = Api::<ConfigMap>::namespaced(kube.client().await, &ns);
    config_maps
        .delete("edited-outputs", &DeleteParams::default())
        .await
        .unwrap();
    let recreated = eventually(|| {
        let config_maps = config_maps.clone();
        async move {
            config_maps
                .get_opt("edited-outputs")
                .await
                .unwrap()
                .is_some()
        }
    })
    .await;
    assert!(
        recreated,
        "the operator did not recreate the outputs ConfigMap"
    );
}

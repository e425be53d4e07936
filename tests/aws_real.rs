//! The AWS side of a pipeline under behaviour real AWS has and moto lacks, reproduced by the
//! fault layer (`testenv::faults`): refused calls during deletion, a table kept with its key,
//! DynamoDB's timing, e-mail subscriptions added by hand.

use std::collections::BTreeMap;
use std::time::Duration;

use testenv::faults::{FaultProxy, Rule};
use tracking_operator::api::{Outputs, TrackingPipeline, TrackingPipelineSpec};
use tracking_operator::aws::{self, AwsClients, Desired, Part, PartReport, Readiness, Settings};

struct Env {
    proxy: FaultProxy,
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

async fn env(spec: TrackingPipelineSpec) -> Env {
    env_with(spec, &Settings::default()).await
}

async fn env_with(spec: TrackingPipelineSpec, settings: &Settings) -> Env {
    let proxy = FaultProxy::start(&testenv::moto().endpoint());
    let config = proxy.sdk_config().await;
    Env {
        clients: AwsClients::new(&config),
        desired: aws::desired(&pipeline(spec), settings).expect("desired"),
        outputs: Outputs::default(),
        proxy,
    }
}

impl Env {
    async fn ensure(&mut self, part: Part) -> PartReport {
        aws::ensure(&self.clients, &self.desired, part, &mut self.outputs)
            .await
            .unwrap_or_else(|e| panic!("ensure {part:?}: {e}"))
    }

    async fn ensure_all(&mut self) -> BTreeMap<Part, PartReport> {
        let mut reports = BTreeMap::new();
        for part in Part::ALL {
            reports.insert(part, self.ensure(part).await);
        }
        reports
    }

    async fn key_state(&self, arn: &Option<String>) -> String {
        let meta = self
            .clients
            .kms
            .describe_key()
            .key_id(arn.clone().expect("key arn"))
            .send()
            .await
            .expect("DescribeKey")
            .key_metadata
            .expect("metadata");
        meta.key_state().expect("state").as_str().to_string()
    }
}

fn reason(report: &PartReport) -> Option<&str> {
    match &report.readiness {
        Readiness::Ready => None,
        Readiness::NotReady { reason, .. } => Some(reason),
    }
}

#[tokio::test]
async fn a_table_kept_by_deletion_protection_keeps_its_key() {
    let mut spec = TrackingPipelineSpec::default();
    spec.table.deletion_protection = true;
    let mut e = env(spec).await;
    e.ensure_all().await;
    let report = aws::delete_all(&e.clients, &e.desired, &e.outputs)
        .await
        .expect("delete_all");
    assert!(report.failed.is_empty(), "{report:?}");
    e.clients
        .dynamodb
        .describe_table()
        .table_name(&e.desired.names.table)
        .send()
        .await
        .expect("the protected table is kept");
    assert_eq!(
        e.key_state(&e.outputs.table_key_arn).await,
        "Enabled",
        "the kept table stays readable: its key is not scheduled for deletion"
    );
    assert_eq!(
        e.key_state(&e.outputs.queue_key_arn).await,
        "PendingDeletion"
    );
    let why = report
        .retained
        .iter()
        .find(|r| r.contains(&e.desired.names.table_key_alias))
        .unwrap_or_else(|| panic!("the key is reported as retained: {report:?}"));
    assert!(why.contains("is kept"), "{why}");
}

#[tokio::test]
async fn deletion_continues_past_a_refused_call_and_reports_its_code() {
    let mut e = env(TrackingPipelineSpec::default()).await;
    e.ensure_all().await;
    e.proxy
        .add_rule(Rule::error("sns", "DeleteTopic", "AuthorizationError"));
    let report = aws::delete_all(&e.clients, &e.desired, &e.outputs)
        .await
        .expect("delete_all reports, it does not stop");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].part, "Alerts");
    assert_eq!(report.failed[0].code.as_deref(), Some("AuthorizationError"));
    assert!(
        report
            .failure_summary()
            .contains("Alerts: AuthorizationError")
    );
    // The parts after the refused one went anyway.
    assert!(
        e.clients
            .dynamodb
            .describe_table()
            .table_name(&e.desired.names.table)
            .send()
            .await
            .is_err(),
        "the table is deleted"
    );
    assert!(
        e.clients
            .sqs
            .get_queue_url()
            .queue_name(&e.desired.names.queue)
            .send()
            .await
            .is_err(),
        "the queue is deleted"
    );
    // The topic still exists and is encrypted with the queue key: that key stays for now.
    assert_eq!(e.key_state(&e.outputs.queue_key_arn).await, "Enabled");
    assert_eq!(
        e.key_state(&e.outputs.table_key_arn).await,
        "PendingDeletion"
    );

    e.proxy.clear_rules();
    let again = aws::delete_all(&e.clients, &e.desired, &e.outputs)
        .await
        .expect("second pass");
    assert!(again.failed.is_empty(), "{again:?}");
    assert_eq!(
        e.key_state(&e.outputs.queue_key_arn).await,
        "PendingDeletion"
    );
}

#[tokio::test]
async fn a_new_table_creating_with_tags_not_yet_visible_is_not_a_conflict() {
    let mut e = env(TrackingPipelineSpec::default()).await;
    e.proxy
        .add_rule(Rule::table_creating(Duration::from_millis(1500)));
    e.proxy.add_rule(Rule::tags_empty(Duration::from_secs(4)));
    e.ensure(Part::Keys).await;
    let first = e.ensure(Part::Table).await;
    assert_eq!(reason(&first), Some("TableNotActive"), "{first:?}");
    let creating = e.ensure(Part::Table).await;
    assert_eq!(reason(&creating), Some("TableNotActive"), "{creating:?}");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    // ACTIVE now, but AWS shows no tags yet: the table we recorded is ours, not a stranger's.
    let untagged = e.ensure(Part::Table).await;
    assert_eq!(reason(&untagged), Some("TableTagsPending"), "{untagged:?}");
    assert_eq!(
        e.proxy.calls("dynamodb", "TagResource"),
        0,
        "nothing is re-tagged while the tags are on their way"
    );
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let ready = e.ensure(Part::Table).await;
    assert!(ready.is_ready(), "{ready:?}");
}

#[tokio::test]
async fn continuous_backups_unavailable_right_after_active_is_not_ready_not_a_failure() {
    let mut e = env(TrackingPipelineSpec::default()).await;
    e.proxy.add_rule(
        Rule::error(
            "dynamodb",
            "UpdateContinuousBackups",
            "ContinuousBackupsUnavailableException",
        )
        .times(1),
    );
    e.ensure(Part::Keys).await;
    let first = e.ensure(Part::Table).await;
    assert_eq!(
        reason(&first),
        Some("ContinuousBackupsUnavailable"),
        "{first:?}"
    );
    let second = e.ensure(Part::Table).await;
    assert!(second.is_ready(), "{second:?}");
}

#[tokio::test]
async fn one_update_table_per_pass() {
    let mut e = env(TrackingPipelineSpec::default()).await;
    e.ensure(Part::Keys).await;
    e.ensure(Part::Table).await;
    // Two changes at once: deletion protection (UpdateTable) and the index (UpdateTable).
    e.desired.table.deletion_protection = true;
    e.desired.table.status_index = false;
    e.proxy.reset_counts();
    let pass = e.ensure(Part::Table).await;
    assert_eq!(
        e.proxy.calls("dynamodb", "UpdateTable"),
        1,
        "a second UpdateTable on an UPDATING table fails on AWS"
    );
    assert_eq!(reason(&pass), Some("TableUpdating"), "{pass:?}");
    e.ensure(Part::Table).await;
    assert_eq!(
        e.proxy.calls("dynamodb", "UpdateTable"),
        2,
        "the index next"
    );
    let table = e
        .clients
        .dynamodb
        .describe_table()
        .table_name(&e.desired.names.table)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    assert!(table.global_secondary_indexes().is_empty());
    assert_eq!(table.deletion_protection_enabled(), Some(true));
    // Leave nothing protected behind in the shared moto.
    e.clients
        .dynamodb
        .update_table()
        .table_name(&e.desired.names.table)
        .deletion_protection_enabled(false)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn only_the_subscription_the_operator_made_is_removed() {
    let mut spec = TrackingPipelineSpec::default();
    spec.alerts.email = Some("first@example.com".into());
    let mut e = env(spec).await;
    e.ensure_all().await;
    let topic = e.outputs.alert_topic_arn.clone().expect("topic");
    e.clients
        .sns
        .subscribe()
        .topic_arn(&topic)
        .protocol("email")
        .endpoint("by-hand@example.com")
        .send()
        .await
        .expect("a person subscribes another address");
    e.desired.alerts.email = Some("second@example.com".into());
    e.ensure(Part::Alerts).await;
    let listed = e
        .clients
        .sns
        .list_subscriptions_by_topic()
        .topic_arn(&topic)
        .send()
        .await
        .unwrap();
    let mut endpoints: Vec<&str> = listed
        .subscriptions()
        .iter()
        .filter_map(|s| s.endpoint())
        .collect();
    endpoints.sort_unstable();
    assert_eq!(
        endpoints,
        ["by-hand@example.com", "second@example.com"],
        "the old address the operator subscribed goes, the hand-added one stays"
    );
}

#[tokio::test]
async fn a_key_left_without_alias_by_a_dead_pass_is_adopted_not_duplicated() {
    let mut e = env(TrackingPipelineSpec::default()).await;
    // What a pass that died between CreateKey and CreateAlias leaves behind.
    let tags: Vec<_> = e
        .desired
        .tags
        .iter()
        .map(|(k, v)| {
            aws_sdk_kms::types::Tag::builder()
                .tag_key(k)
                .tag_value(v)
                .build()
                .unwrap()
        })
        .collect();
    let orphan = e
        .clients
        .kms
        .create_key()
        .description(format!(
            "SQS and SNS encryption for TrackingPipeline {}",
            e.desired.owner.key()
        ))
        .set_tags(Some(tags))
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    e.proxy.reset_counts();
    e.ensure(Part::Keys).await;
    assert_eq!(
        e.outputs.queue_key_arn.as_deref(),
        orphan.arn(),
        "the orphan became the queue key"
    );
    assert_eq!(
        e.proxy.calls("kms", "CreateKey"),
        1,
        "only the table key was created"
    );
}

#[tokio::test]
async fn a_new_key_whose_alias_cannot_be_created_is_scheduled_for_deletion() {
    let mut e = env(TrackingPipelineSpec::default()).await;
    e.proxy
        .add_rule(Rule::error("kms", "CreateAlias", "AccessDeniedException").times(1));
    let err = aws::ensure(&e.clients, &e.desired, Part::Keys, &mut e.outputs)
        .await
        .expect_err("CreateAlias refused");
    assert_eq!(err.aws_code(), Some("AccessDeniedException"));
    assert_eq!(
        e.proxy.calls("kms", "ScheduleKeyDeletion"),
        1,
        "no orphan left"
    );
    assert!(e.outputs.queue_key_arn.is_none());
    e.ensure(Part::Keys).await;
    assert_eq!(e.key_state(&e.outputs.queue_key_arn).await, "Enabled");
}

#[tokio::test]
async fn every_role_the_operator_creates_carries_the_permissions_boundary() {
    let iam = aws_sdk_iam::Client::new(&testenv::moto().sdk_config().await);
    let boundary = iam
        .create_policy()
        .policy_name(testenv::unique_name("boundary"))
        .policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sqs:*","Resource":"*"}]}"#,
        )
        .send()
        .await
        .unwrap()
        .policy
        .unwrap()
        .arn
        .unwrap();
    let settings = Settings {
        permissions_boundary: Some(boundary.clone()),
        ..Settings::default()
    };
    let mut e = env_with(TrackingPipelineSpec::default(), &settings).await;
    e.ensure_all().await;
    let role = iam
        .get_role()
        .role_name(&e.desired.names.scheduler_role)
        .send()
        .await
        .unwrap()
        .role
        .unwrap();
    assert_eq!(
        role.permissions_boundary()
            .and_then(|b| b.permissions_boundary_arn()),
        Some(boundary.as_str())
    );
}

#[tokio::test]
async fn another_clusters_resources_are_a_conflict_and_its_roles_have_other_names() {
    let blue = Settings {
        cluster: Some("blue".into()),
        ..Settings::default()
    };
    let mut e = env_with(TrackingPipelineSpec::default(), &blue).await;
    e.ensure_all().await;
    let green = Settings {
        cluster: Some("green".into()),
        ..Settings::default()
    };
    // The same namespace/name on another cluster sharing the account.
    let mut p = pipeline(TrackingPipelineSpec::default());
    p.metadata.namespace = Some(e.desired.owner.namespace.clone());
    p.metadata.name = Some(e.desired.owner.name.clone());
    let other = aws::desired(&p, &green).unwrap();
    assert_ne!(other.names.scheduler_role, e.desired.names.scheduler_role);
    let mut outputs = Outputs::default();
    let err = aws::ensure(&e.clients, &other, Part::Keys, &mut outputs)
        .await
        .expect_err("blue's key is not green's");
    assert!(err.is_conflict(), "{err}");
    assert!(err.to_string().contains("another cluster"), "{err}");
}

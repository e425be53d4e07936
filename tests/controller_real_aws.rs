//! The controller in-process against the real API server, with its AWS calls going through
//! the fault layer so it meets what real AWS does and moto does not: a refused call during
//! deletion, a refused alert topic, an e-mail nobody confirms, a table whose tags lag behind,
//! a table quota reached on create.

mod controller_support;

use std::time::{Duration, Instant};

use controller_support::*;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams};
use serde_json::json;
use testenv::faults::{FaultProxy, Rule};

const RESYNC: Duration = Duration::from_secs(3600);

fn proxy() -> FaultProxy {
    FaultProxy::start(&testenv::moto().endpoint())
}

#[tokio::test]
async fn a_refused_delete_is_reported_per_part_and_the_rest_goes() {
    let kube = testenv::kube();
    let ns = kube.namespace("real-delete").await;
    let aws = proxy();
    let _operator = Operator::start(&aws.endpoint(), &ns, RESYNC).await;
    let api = pipelines(&ns).await;
    create(&api, "stuck", json!({"deletionPolicy": "Delete"})).await;
    let p = wait_ready(&api, "stuck").await;
    let outputs = p.status.clone().unwrap().outputs;

    aws.add_rule(Rule::error("sns", "DeleteTopic", "AuthorizationError"));
    api.delete("stuck", &DeleteParams::default()).await.unwrap();
    let p = wait_for(&api, "stuck", "Deleting=False", |p| {
        is(p, "Deleting", "False")
    })
    .await;
    let why = message(&p, "Deleting").unwrap();
    assert!(why.contains("Alerts: AuthorizationError"), "{why}");
    let deployments: Api<Deployment> = Api::namespaced(kube.client().await, &ns);
    let worker = deployments
        .get(&tracking_operator::k8s::deployment_name(&p))
        .await
        .expect("the worker Deployment is still there while the pipeline is");
    assert_eq!(
        worker.spec.and_then(|s| s.replicas),
        Some(0),
        "the worker is stopped before its queue and table go"
    );
    let sdk = testenv::moto().sdk_config().await;
    assert!(
        aws_sdk_dynamodb::Client::new(&sdk)
            .describe_table()
            .table_name(outputs.table_name.clone().unwrap())
            .send()
            .await
            .is_err(),
        "the table went although the topic could not"
    );
    let client = kube.client().await;
    let warned = eventually(|| {
        let (client, p) = (client.clone(), p.clone());
        async move {
            event_reasons(&client, &p)
                .await
                .iter()
                .any(|(r, note)| r == "DeleteFailed" && note.contains("AuthorizationError"))
        }
    })
    .await;
    assert!(warned, "a Warning Event names the refused part");

    aws.clear_rules();
    wait_gone(&api, "stuck").await;
}

#[tokio::test]
async fn a_refused_alert_topic_stalls_alerts_but_not_the_worker() {
    let kube = testenv::kube();
    let ns = kube.namespace("real-parts").await;
    let aws = proxy();
    aws.add_rule(Rule::error("sns", "CreateTopic", "AuthorizationError"));
    let _operator = Operator::start(&aws.endpoint(), &ns, RESYNC).await;
    let api = pipelines(&ns).await;
    create(&api, "partial", json!({})).await;
    let p = wait_for(&api, "partial", "WorkerReady with Alerts refused", |p| {
        worker_applied(p) && is(p, "AlertsReady", "False")
    })
    .await;
    assert!(
        message(&p, "AlertsReady")
            .unwrap()
            .contains("AuthorizationError")
    );
    assert!(
        is(&p, "ScheduleReady", "True"),
        "the schedule converged too"
    );
    assert!(
        is(&p, "Stalled", "True"),
        "AuthorizationError is terminal: {:?}",
        p.status
    );
    assert!(is(&p, "Ready", "False"));
}

#[tokio::test]
async fn an_unconfirmed_email_leaves_the_pipeline_ready_and_is_polled_less_and_less() {
    let kube = testenv::kube();
    let ns = kube.namespace("real-mail").await;
    let aws = proxy();
    aws.add_rule(Rule::email_pending());
    let _operator = Operator::start(&aws.endpoint(), &ns, RESYNC).await;
    let api = pipelines(&ns).await;
    create(
        &api,
        "mail",
        json!({"alerts": {"email": "oncall@example.com"}}),
    )
    .await;
    create(
        &api,
        "strict",
        json!({"alerts": {"email": "oncall@example.com", "waitForConfirmation": true}}),
    )
    .await;

    let p = wait_ready(&api, "mail").await;
    assert!(is(&p, "AlertsReady", "False"));
    assert_eq!(
        reason(&p, "AlertsReady").as_deref(),
        Some("PendingConfirmation")
    );
    let strict = wait_for(&api, "strict", "Ready=False PendingConfirmation", |p| {
        reason(p, "Ready").as_deref() == Some("PendingConfirmation")
    })
    .await;
    assert!(is(&strict, "Ready", "False"), "the spec asked to wait");

    // Looked at again, but less and less often (2 s doubling here; 30 s before the fix).
    let before = aws.calls("sns", "ListSubscriptionsByTopic");
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let polls = aws.calls("sns", "ListSubscriptionsByTopic") - before;
    // Two pipelines; each at most at +2, +6 (and +14 falls outside) after its last pass.
    assert!(
        polls <= 6,
        "{polls} polls in {:?}: no backoff",
        window.elapsed()
    );
    assert!(polls >= 1, "still polled");
}

#[tokio::test]
async fn a_new_table_whose_tags_lag_becomes_ready_without_a_conflict() {
    let kube = testenv::kube();
    let ns = kube.namespace("real-table").await;
    let aws = proxy();
    aws.add_rule(Rule::table_creating(Duration::from_secs(2)));
    aws.add_rule(Rule::tags_empty(Duration::from_secs(5)));
    aws.add_rule(
        Rule::error(
            "dynamodb",
            "UpdateContinuousBackups",
            "ContinuousBackupsUnavailableException",
        )
        .times(1),
    );
    let _operator = Operator::start(&aws.endpoint(), &ns, RESYNC).await;
    let api = pipelines(&ns).await;
    create(&api, "slow", json!({})).await;
    let p = wait_ready(&api, "slow").await;
    let client = kube.client().await;
    let events = event_reasons(&client, &p).await;
    assert!(
        !events.iter().any(|(r, _)| r == "Conflict"),
        "tags not visible yet are not someone else's table: {events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|(_, note)| note.contains("ContinuousBackupsUnavailableException")),
        "backups not available yet is not a failure: {events:?}"
    );
}

/// AWS allows only so many tables being created at once; past that `CreateTable` answers
/// `LimitExceededException`. Eight answers outlast the SDK's four attempts twice, so the
/// pass itself fails and waits: the condition says so, a Normal Event says so, no Warning.
#[tokio::test]
async fn a_table_quota_on_create_is_waited_on_not_warned_about() {
    let kube = testenv::kube();
    let ns = kube.namespace("real-quota").await;
    let aws = proxy();
    aws.add_rule(Rule::error("dynamodb", "CreateTable", "LimitExceededException").times(8));
    let _operator = Operator::start(&aws.endpoint(), &ns, RESYNC).await;
    let api = pipelines(&ns).await;
    create(&api, "queued", json!({})).await;
    let p = wait_ready(&api, "queued").await;
    let client = kube.client().await;
    let events = event_reasons(&client, &p).await;
    assert!(
        events
            .iter()
            .any(|(r, note)| r == "WaitingOnAws" && note.contains("LimitExceededException")),
        "the wait is announced: {events:?}"
    );
    assert!(
        !events.iter().any(|(r, _)| r == "AwsError"),
        "a quota is not an error: {events:?}"
    );
}

#[tokio::test]
async fn tag_values_aws_refuses_are_refused_by_the_api_server() {
    let kube = testenv::kube();
    let ns = kube.namespace("real-tags").await;
    let api = pipelines(&ns).await;
    let spec = json!({"tags": {"team": "logistics<ops>"}});
    let spec: tracking_operator::api::TrackingPipelineSpec = serde_json::from_value(spec).unwrap();
    let err = api
        .create(
            &Default::default(),
            &tracking_operator::api::TrackingPipeline::new("bad-tags", spec),
        )
        .await
        .expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("spec.tags"), "{text}");
    let env = json!({"environment": "prod;drop"});
    let env: tracking_operator::api::TrackingPipelineSpec = serde_json::from_value(env).unwrap();
    let err = api
        .create(
            &Default::default(),
            &tracking_operator::api::TrackingPipeline::new("bad-env", env),
        )
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("spec.environment"), "{err}");
    // Letters of any script, spaces and AWS's punctuation pass.
    let ok = json!({"tags": {"team": "Logistik Süd: +/=.@_-"}});
    let ok: tracking_operator::api::TrackingPipelineSpec = serde_json::from_value(ok).unwrap();
    api.create(
        &Default::default(),
        &tracking_operator::api::TrackingPipeline::new("good-tags", ok),
    )
    .await
    .expect("accepted");
}

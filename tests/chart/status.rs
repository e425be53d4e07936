//! A status a person reads at a glance: the operator fills `status.queue` from the queue
//! attributes it reads anyway, the API server's Table view (what `kubectl get tp` and
//! `-o wide` print) has the columns, and the per-pipeline gauges follow.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::controller_support::{create, moto_operator, pipelines, wait_for, wait_ready};

/// The Table the API server prints for `kubectl get tp NAME -n NS` (`-o wide` shows the
/// columns with priority > 0 as well).
async fn table(namespace: &str, name: &str) -> Result<Value> {
    let client = testenv::kube().client().await;
    let mut req = kube::core::Request::new(format!(
        "/apis/tracking-operator.io/v1alpha1/namespaces/{namespace}/trackingpipelines"
    ))
    .get(name, &Default::default())?;
    req.headers_mut().insert(
        "accept",
        "application/json;as=Table;v=v1;g=meta.k8s.io".parse()?,
    );
    Ok(serde_json::from_str(&client.request_text(req).await?)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_tp_shows_readiness_queue_and_dlq_depth_filled_by_the_operator() -> Result<()> {
    let kube = testenv::kube();
    let ns = kube.namespace("status-cols").await;
    // A short resync, so the depths are read again soon after the messages arrive.
    let operator = moto_operator(&ns, Duration::from_secs(3)).await;
    let api = pipelines(&ns).await;
    create(&api, "cols", json!({})).await;
    let p = wait_ready(&api, "cols").await;
    let outputs = p.status.clone().context("status")?.outputs;
    let queue_url = outputs.queue_url.context("queue URL")?;
    let dlq_url = outputs.dead_letter_queue_url.context("DLQ URL")?;
    ensure!(
        p.status.as_ref().and_then(|s| s.queue.as_ref()).is_some(),
        "status.queue written with the first Ready"
    );

    // No worker Pod runs in testenv, so what is sent stays queued.
    let sqs = aws_sdk_sqs::Client::new(&testenv::moto().sdk_config().await);
    for (url, n) in [(&queue_url, 3), (&dlq_url, 2)] {
        for i in 0..n {
            sqs.send_message()
                .queue_url(url)
                .message_body(format!("{{\"n\":{i}}}"))
                .send()
                .await?;
        }
    }
    let p = wait_for(
        &api,
        "cols",
        "status.queue with 3 queued and 2 dead-lettered",
        |p| {
            p.status
                .as_ref()
                .and_then(|s| s.queue.as_ref())
                .is_some_and(|q| q.visible == Some(3) && q.dead_letter == Some(2))
        },
    )
    .await;

    let t = table(&ns, &p.name_any()).await?;
    let columns: Vec<(String, i64)> = t["columnDefinitions"]
        .as_array()
        .context("columnDefinitions")?
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_owned(),
                c["priority"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    for wanted in [
        "Name",
        "Ready",
        "Reason",
        "Queue",
        "DLQ",
        "Age",
        "In-Flight",
        "Replicas",
    ] {
        ensure!(names.contains(&wanted), "no {wanted} column in {names:?}");
    }
    for (name, priority) in &columns {
        let wide_only = matches!(name.as_str(), "In-Flight" | "Replicas");
        ensure!(
            (*priority > 0) == wide_only,
            "{name} has priority {priority}: only In-Flight and Replicas are -o wide extras"
        );
    }
    let cells = t["rows"][0]["cells"].as_array().context("cells")?;
    let cell = |column: &str| {
        names
            .iter()
            .position(|n| *n == column)
            .and_then(|i| cells.get(i))
            .cloned()
            .unwrap_or(Value::Null)
    };
    ensure!(cell("Name") == "cols");
    ensure!(cell("Ready") == "True", "Ready cell: {}", cell("Ready"));
    ensure!(cell("Queue") == 3, "Queue cell: {}", cell("Queue"));
    ensure!(cell("DLQ") == 2, "DLQ cell: {}", cell("DLQ"));
    ensure!(
        cell("In-Flight") == 0,
        "In-Flight cell: {}",
        cell("In-Flight")
    );

    // The leader's per-pipeline gauges read the same status from its cache.
    let text = operator.metrics.encode()?;
    for line in [
        format!(
            r#"tracking_operator_pipeline_dead_letter_messages{{namespace="{ns}",pipeline="cols"}} 2"#
        ),
        format!(
            r#"tracking_operator_pipeline_queue_messages{{namespace="{ns}",pipeline="cols",state="visible"}} 3"#
        ),
        format!(
            r#"tracking_operator_pipeline_condition{{namespace="{ns}",pipeline="cols",condition="Ready",status="True"}} 1"#
        ),
        r#"tracking_operator_pipelines{condition="Ready",status="True"} 1"#.to_owned(),
    ] {
        ensure!(text.contains(&line), "missing {line} in\n{text}");
    }
    Ok(())
}

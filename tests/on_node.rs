//! The user's path on a real node: `helm install` → operator Pod → worker Pods.
//!
//! Everything here runs as a user runs it: the images are assembled from this build's binaries
//! (hack/mkimage.py) and imported into the node's containerd; the chart installs the operator,
//! which reconciles `examples/pipeline.yaml` against moto with only its ServiceAccount; the
//! worker Deployment it creates consumes the queue. Needs root and `make tools` (the node).

#[path = "support/argocd.rs"]
mod argocd;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tracking_operator::api::TrackingPipeline;

const RELEASE: &str = "tracking-operator";
const OPERATOR_IMAGE: &str = "localhost/tracking-operator";
const WORKER_IMAGE: &str = "localhost/tracking-worker";
const TAG: &str = "test";
const CREDENTIALS: &str = "aws-credentials";
const WAIT: Duration = Duration::from_secs(180);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// This build's binaries: the operator's from Cargo, the worker's beside it (same profile).
fn binary(name: &str) -> Result<PathBuf> {
    let operator = PathBuf::from(env!("CARGO_BIN_EXE_tracking-operator"));
    let path = operator.with_file_name(name);
    ensure!(
        path.is_file(),
        "{} is missing: build it with `cargo build --workspace --bins` (cargo test --workspace does)",
        path.display()
    );
    Ok(path)
}

fn import_images() -> Result<()> {
    let node = &testenv::cluster().node;
    for (image, reference) in [
        ("tracking-operator", format!("{OPERATOR_IMAGE}:{TAG}")),
        ("tracking-worker", format!("{WORKER_IMAGE}:{TAG}")),
    ] {
        testenv::node::import_image(
            &node.containerd_socket(),
            image,
            &binary(image)?,
            &reference,
        )?;
    }
    Ok(())
}

fn helm(args: &[&str], kubeconfig: &std::path::Path) -> Result<String> {
    let out = Command::new(root().join("hack/install-helm.sh"))
        .output()
        .context("hack/install-helm.sh")?;
    ensure!(out.status.success(), "hack/install-helm.sh failed");
    let bin = String::from_utf8(out.stdout)?.trim().to_string();
    let tmp = std::env::temp_dir().join("on-node-helm");
    let out = Command::new(bin)
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env("HELM_CACHE_HOME", tmp.join("cache"))
        .env("HELM_CONFIG_HOME", tmp.join("config"))
        .env("HELM_DATA_HOME", tmp.join("data"))
        .output()
        .context("running helm")?;
    if !out.status.success() {
        bail!(
            "helm {args:?}: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match probe().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what} (last error: {last})");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn condition(tp: &TrackingPipeline, kind: &str) -> Option<String> {
    tp.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.clone())
}

async fn ready_pipeline(api: &Api<TrackingPipeline>, name: &str) -> Result<TrackingPipeline> {
    eventually(&format!("pipeline {name} Ready"), WAIT, || async {
        let tp = api.get(name).await?;
        Ok((condition(&tp, "Ready").as_deref() == Some("True")).then_some(tp))
    })
    .await
}

async fn available(api: &Api<Deployment>, name: &str, replicas: i32) -> Result<Deployment> {
    eventually(
        &format!("Deployment {name} with {replicas} available replicas"),
        WAIT,
        || async {
            let d = api.get(name).await?;
            let status = d.status.clone().unwrap_or_default();
            let generation = d.metadata.generation.unwrap_or_default();
            let done = status.observed_generation == Some(generation)
                && status.updated_replicas == Some(replicas)
                && status.available_replicas == Some(replicas)
                && status.replicas == Some(replicas);
            Ok(done.then_some(d))
        },
    )
    .await
}

/// Audit items whose tracking id starts with `prefix`.
async fn items(db: &aws_sdk_dynamodb::Client, table: &str, prefix: &str) -> Result<usize> {
    let mut count = 0usize;
    let mut start = None;
    loop {
        let page = db
            .scan()
            .table_name(table)
            .filter_expression("begins_with(tracking_id, :p)")
            .expression_attribute_values(
                ":p",
                aws_sdk_dynamodb::types::AttributeValue::S(prefix.to_string()),
            )
            .set_exclusive_start_key(start)
            .send()
            .await?;
        count += page.items().len();
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            return Ok(count);
        }
    }
}

/// Sends updates `from..to` for tracking ids `prefix-N`, ten per request.
async fn send(
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
    prefix: &str,
    from: usize,
    to: usize,
) -> Result<()> {
    use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
    for chunk in (from..to).collect::<Vec<_>>().chunks(10) {
        let entries = chunk
            .iter()
            .map(|i| {
                let body = json!({
                    "tracking_id": format!("{prefix}-{i}"),
                    "status": "IN_TRANSIT",
                    "location": "Rotterdam, NL",
                    "carrier": "DHL",
                    "timestamp": "2026-11-21T09:30:00Z",
                    "event_id": format!("evt-{i}"),
                });
                SendMessageBatchRequestEntry::builder()
                    .id(format!("m{i}"))
                    .message_body(body.to_string())
                    .build()
                    .map_err(anyhow::Error::from)
            })
            .collect::<Result<Vec<_>>>()?;
        let out = sqs
            .send_message_batch()
            .queue_url(queue)
            .set_entries(Some(entries))
            .send()
            .await?;
        ensure!(
            out.failed().is_empty(),
            "SendMessageBatch failed: {:?}",
            out.failed()
        );
    }
    Ok(())
}

/// Follows a Pod's log until its container exits; returns every line.
async fn follow_log(pods: Api<Pod>, name: String) -> Vec<String> {
    let params = LogParams {
        follow: true,
        ..LogParams::default()
    };
    let Ok(stream) = pods.log_stream(&name, &params).await else {
        return Vec::new();
    };
    stream.lines().try_collect().await.unwrap_or_default()
}

fn worker_pods(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter().map(|p| p.name_any()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_runs_operator_and_workers_as_pods() -> Result<()> {
    let cluster = testenv::cluster();
    let started = Instant::now();
    import_images()?;
    let client: Client = cluster.kube.client().await;
    let kubeconfig = cluster.kube.kubeconfig_path().to_path_buf();
    let endpoint = cluster.moto.endpoint();

    // The chart, as a user installs it, with the local images and moto's address on the bridge.
    let extra_env = json!([
        {"name": "AWS_ACCESS_KEY_ID", "value": "testing"},
        {"name": "AWS_SECRET_ACCESS_KEY", "value": "testing"}
    ])
    .to_string();
    helm(
        &[
            "install",
            RELEASE,
            &root()
                .join("charts/tracking-operator")
                .display()
                .to_string(),
            "--namespace",
            "tracking-operator",
            "--create-namespace",
            "--set",
            &format!("image.repository={OPERATOR_IMAGE},image.tag={TAG},image.pullPolicy=Never"),
            "--set",
            &format!(
                "operator.workerImage.repository={WORKER_IMAGE},operator.workerImage.tag={TAG}"
            ),
            "--set",
            &format!(
                "operator.region={},operator.awsEndpointUrl={endpoint}",
                testenv::REGION
            ),
            "--set",
            &format!("operator.workerCredentialsSecret={CREDENTIALS},operator.resyncInterval=1m"),
            "--set",
            "leaderElection.enabled=true",
            "--set-json",
            &format!("operator.extraEnv={extra_env}"),
        ],
        &kubeconfig,
    )?;
    let op_ns = "tracking-operator";
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), op_ns);
    available(&deployments, RELEASE, 1).await?;
    let op_pods: Api<Pod> = Api::namespaced(client.clone(), op_ns);
    let operator_pod = op_pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=tracking-operator"))
        .await?
        .items
        .into_iter()
        .next()
        .context("operator Pod")?;
    let sc = operator_pod
        .spec
        .as_ref()
        .and_then(|s| s.containers[0].security_context.clone());
    ensure!(
        sc.as_ref().and_then(|s| s.read_only_root_filesystem) == Some(true),
        "the operator runs with the chart's security context"
    );
    println!("operator Pod Ready after {:.1?}", started.elapsed());

    // A pipeline as in the README, reconciled by the operator Pod.
    let ns = cluster.kube.namespace("logistics").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": CREDENTIALS},
        "stringData": {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    }))?;
    secrets.create(&PostParams::default(), &secret).await?;
    let example: TrackingPipeline = serde_yaml::from_str(&std::fs::read_to_string(
        root().join("examples/pipeline.yaml"),
    )?)?;
    let pipelines: Api<TrackingPipeline> = Api::namespaced(client.clone(), &ns);
    let applied = Instant::now();
    pipelines
        .patch(
            "parcels",
            &PatchParams::apply("on-node-test"),
            &Patch::Apply(&example),
        )
        .await?;
    let tp = ready_pipeline(&pipelines, "parcels").await?;
    println!("pipeline Ready {:.1?} after apply", applied.elapsed());
    let outputs = tp.status.clone().context("status")?.outputs;
    let queue = outputs.queue_url.clone().context("queue URL")?;
    let table = outputs.table_name.clone().context("table name")?;

    // The worker Deployment's Pods consume the queue into the table.
    let workers: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let worker_deploy = "parcels-worker";
    available(&workers, worker_deploy, 2).await?;
    println!(
        "worker Pods available {:.1?} after apply",
        applied.elapsed()
    );
    let sdk = testenv::sdk_config_for(&endpoint).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let db = aws_sdk_dynamodb::Client::new(&sdk);
    send(&sqs, &queue, "TRK-A", 0, 200).await?;
    eventually("200 audit items", WAIT, || async {
        Ok((items(&db, &table, "TRK-A-").await? == 200).then_some(()))
    })
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let selector = "app.kubernetes.io/name=tracking-worker";
    let before = pods
        .list(&ListParams::default().labels(selector))
        .await?
        .items;
    let log = pods
        .logs(&before[0].name_any(), &LogParams::default())
        .await
        .context("kubectl logs of a worker Pod")?;
    ensure!(
        log.contains(&queue) || log.contains("worker"),
        "worker log: {log}"
    );

    // A rolling update while messages flow: nothing lost, nothing written twice, and the old
    // Pods drain and exit on SIGTERM (their last line is the worker's totals).
    let old = worker_pods(&before);
    let followers: Vec<_> = old
        .iter()
        .map(|name| tokio::spawn(follow_log(pods.clone(), name.clone())))
        .collect();
    let flow = {
        let (sqs, queue) = (sqs.clone(), queue.clone());
        tokio::spawn(async move {
            for round in 0..30 {
                send(&sqs, &queue, "TRK-B", round * 10, round * 10 + 10).await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(())
        })
    };
    pipelines
        .patch(
            "parcels",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"worker": {"batchSize": 5}}})),
        )
        .await?;
    flow.await??;
    available(&workers, worker_deploy, 2).await?;
    eventually("old worker Pods gone", WAIT, || async {
        let now = worker_pods(
            &pods
                .list(&ListParams::default().labels(selector))
                .await?
                .items,
        );
        Ok(now.is_disjoint(&old).then_some(()))
    })
    .await?;
    eventually("300 more audit items", WAIT, || async {
        Ok((items(&db, &table, "TRK-B-").await? == 300).then_some(()))
    })
    .await?;
    ensure!(
        items(&db, &table, "TRK-A-").await? == 200,
        "no item written twice or lost"
    );
    for follower in followers {
        let lines = follower.await?;
        // The worker logs "worker stopped" with its totals only after a complete drain; a
        // Pod killed at the end of its grace period never gets there.
        let drained = lines.iter().any(|l| {
            l.contains("worker stopped")
                || serde_json::from_str::<Value>(l).is_ok_and(|v| v.get("received").is_some())
        });
        let tail: Vec<&String> = lines.iter().rev().take(3).collect();
        ensure!(
            drained,
            "an old worker Pod did not drain and exit cleanly; its last lines: {tail:?}"
        );
    }

    // The operator Pod is deleted mid-reconcile: its replacement takes the Lease and finishes,
    // and no AWS resource exists twice.
    let mut second = example.clone();
    second.metadata.name = Some("parcels-2".into());
    second.spec.worker.replicas = 1;
    pipelines
        .patch(
            "parcels-2",
            &PatchParams::apply("on-node-test"),
            &Patch::Apply(&second),
        )
        .await?;
    op_pods
        .delete(&operator_pod.name_any(), &DeleteParams::default())
        .await?;
    let tp2 = ready_pipeline(&pipelines, "parcels-2").await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), op_ns);
    // The old Pod releases the Lease on SIGTERM; the replacement takes it.
    let old_pod = operator_pod.name_any();
    let holder = eventually(
        "the replacement operator Pod to hold the Lease",
        WAIT,
        || async {
            let holders: Vec<String> = leases
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .filter_map(|l| l.spec.as_ref()?.holder_identity.clone())
                .collect();
            Ok(holders.into_iter().find(|h| !h.is_empty() && *h != old_pod))
        },
    )
    .await?;
    println!("Lease held by {holder}");
    let uid = tp2.uid().context("uid")?;
    let kms = aws_sdk_kms::Client::new(&sdk);
    let mut keys = 0;
    for key in kms.list_keys().limit(1000).send().await?.keys() {
        let id = key.key_id().unwrap_or_default();
        let tags = kms.list_resource_tags().key_id(id).send().await?;
        if tags
            .tags()
            .iter()
            .any(|t| t.tag_key() == "tracking-operator.io/pipeline-uid" && t.tag_value() == uid)
        {
            keys += 1;
        }
    }
    ensure!(keys == 2, "pipeline parcels-2 owns {keys} KMS keys, not 2");
    let queues = sqs.list_queues().send().await?;
    let mine: Vec<_> = queues
        .queue_urls()
        .iter()
        .filter(|u| u.contains(&format!("_{ns}_parcels-2-")))
        .collect();
    ensure!(mine.len() == 2, "queue and DLQ exactly once: {mine:?}");

    // What Argo CD would show for the live object.
    let live = serde_json::to_value(pipelines.get("parcels").await?)?;
    let health = argocd::health(&live)?;
    ensure!(health.status == "Healthy", "Argo CD health: {health:?}");
    println!("whole path in {:.1?}", started.elapsed());
    Ok(())
}

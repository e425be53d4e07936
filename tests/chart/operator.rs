//! The operator binary, started with exactly the command line and environment the chart puts
//! in its Deployment and authenticated as the chart's ServiceAccount (so with exactly the
//! chart's RBAC), reconciles examples/pipeline.yaml to Ready against moto.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DynamicObject, PostParams};

use crate::install::install;
use crate::rbac::{example_pipeline, service_account_kubeconfig, tp_resource};

const READY_WITHIN: Duration = Duration::from_secs(180);

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn condition<'a>(obj: &'a DynamicObject, type_: &str) -> Option<&'a serde_json::Value> {
    obj.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, response))
}

fn log_tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[tokio::test]
async fn operator_with_the_charts_identity_and_flags_reconciles_the_example_to_ready() -> Result<()>
{
    let kube = testenv::kube();
    let moto = testenv::moto();
    let admin = kube.client().await;
    let ns = kube.namespace("chart-op").await;
    let apps = kube.namespace("chart-op-apps").await;
    let release = testenv::unique_name("op");
    let fullname = format!("{release}-tracking-operator");
    let port = free_port()?;
    let metrics_port = free_port()?;
    install(
        &release,
        &ns,
        &[
            "crds.enabled=false",
            "replicas=2",
            "operator.region=us-east-1",
            &format!("operator.awsEndpointUrl={}", moto.endpoint()),
            &format!("ports.http={port}"),
            &format!("ports.metrics={metrics_port}"),
            "operator.logFormat=text",
        ],
        &[],
    )?;

    // The container's command line and literal environment, as the chart rendered them.
    let deployment = Api::<Deployment>::namespaced(admin.clone(), &ns)
        .get(&fullname)
        .await?;
    let container = deployment
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers.into_iter().next())
        .context("operator container")?;
    let args = container.args.unwrap_or_default();
    let pod_name = format!("{fullname}-7d9f8-abcde");
    let log = kube.dir().join(format!("operator-{release}.log"));
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tracking-operator"));
    cmd.args(&args);
    // Only what the Pod would have: no settings leaking in from the test's environment.
    for var in [
        "AWS_REGION",
        "AWS_ENDPOINT_URL",
        "TRACKING_WORKER_IMAGE",
        "WATCH_NAMESPACE",
        "METRICS_ADDR",
        "LEADER_ELECT",
        "LEASE_NAMESPACE",
        "LEASE_NAME",
        "OIDC_PROVIDER_ARN",
        "AWS_PROFILE",
    ] {
        cmd.env_remove(var);
    }
    for var in container.env.unwrap_or_default() {
        if let Some(value) = var.value {
            cmd.env(var.name, value);
        }
    }
    cmd.env("POD_NAME", &pod_name)
        .env("POD_NAMESPACE", &ns)
        .env(
            "KUBECONFIG",
            service_account_kubeconfig(&ns, &fullname).await?,
        )
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(log.with_extension("stderr"))?)
        .kill_on_drop(true);
    let mut operator = cmd.spawn().context("starting the operator binary")?;

    let started = Instant::now();
    loop {
        if let Some(status) = operator.try_wait()? {
            bail!(
                "operator exited ({status}):\n{}\n{}",
                log_tail(&log),
                log_tail(&log.with_extension("stderr"))
            );
        }
        if http_get(port, "/readyz")
            .await
            .is_some_and(|(code, _)| code == 200)
        {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "/readyz not OK after 60s:\n{}",
            log_tail(&log)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, _) = http_get(port, "/healthz").await.context("/healthz")?;
    ensure!(code == 200);

    let pipelines: Api<DynamicObject> = Api::namespaced_with(admin.clone(), &apps, &tp_resource());
    pipelines
        .create(&PostParams::default(), &example_pipeline(&apps, "parcels")?)
        .await
        .context("apply examples/pipeline.yaml")?;
    let applied = Instant::now();
    let ready = loop {
        if let Some(status) = operator.try_wait()? {
            bail!("operator exited ({status}):\n{}", log_tail(&log));
        }
        let p = pipelines.get("parcels").await?;
        if condition(&p, "Ready").is_some_and(|c| c["status"] == "True") {
            break p;
        }
        ensure!(
            applied.elapsed() < READY_WITHIN,
            "not Ready after {READY_WITHIN:?}: {:#}\noperator log:\n{}",
            p.data["status"],
            log_tail(&log)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!(
        "examples/pipeline.yaml Ready {:.1}s after apply (chart identity, moto)",
        applied.elapsed().as_secs_f64()
    );
    ensure!(ready.data["status"]["outputs"]["queueUrl"].is_string());
    ensure!(condition(&ready, "Stalled").is_none() && condition(&ready, "Reconciling").is_none());

    // The children were written with the chart's RBAC, and this replica holds the chart's Lease.
    let worker = Api::<Deployment>::namespaced(admin.clone(), &apps)
        .list(&Default::default())
        .await?;
    ensure!(!worker.items.is_empty(), "no worker Deployment in {apps}");
    let lease = Api::<Lease>::namespaced(admin.clone(), &ns)
        .get(&format!("{fullname}-leader"))
        .await?;
    ensure!(lease.spec.and_then(|s| s.holder_identity).as_deref() == Some(pod_name.as_str()));
    let (code, metrics) = http_get(metrics_port, "/metrics")
        .await
        .context("/metrics")?;
    ensure!(
        code == 200 && metrics.contains("controller_runtime_reconcile_total"),
        "metrics:\n{metrics}"
    );

    operator.kill().await?;
    Ok(())
}

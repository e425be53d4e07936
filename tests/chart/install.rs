//! A real `helm install`, `upgrade` and `uninstall` against the test control plane.

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::Role;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::support::{self, CRD_NAME, helm};

/// Installs `charts/tracking-operator` as `release` into `namespace`, with `--set` values.
pub fn install(release: &str, namespace: &str, sets: &[&str], extra: &[&str]) -> Result<String> {
    let kubeconfig = testenv::kube()
        .kubeconfig_path()
        .to_string_lossy()
        .into_owned();
    let chart = support::chart().to_string_lossy().into_owned();
    let mut args = vec![
        "upgrade",
        "--install",
        release,
        &chart,
        "-n",
        namespace,
        "--kubeconfig",
        &kubeconfig,
    ];
    args.extend_from_slice(extra);
    for s in sets {
        args.extend(["--set", s]);
    }
    helm(&args)
}

pub fn uninstall(release: &str, namespace: &str) -> Result<String> {
    let kubeconfig = testenv::kube()
        .kubeconfig_path()
        .to_string_lossy()
        .into_owned();
    helm(&[
        "uninstall",
        release,
        "-n",
        namespace,
        "--kubeconfig",
        &kubeconfig,
    ])
}

fn args_of(d: &Deployment) -> Vec<String> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .and_then(|c| c.args.clone())
        .unwrap_or_default()
}

/// The one test that lets Helm own the CRD: testenv installed it from crds/, so the release
/// adopts it (`--take-ownership`), upgrades it, and must leave it behind on uninstall.
#[tokio::test]
async fn install_upgrade_uninstall_and_the_crd_is_kept() -> Result<()> {
    let kube = testenv::kube();
    let client = kube.client().await;
    let ns = kube.namespace("chart-install").await;
    let release = testenv::unique_name("op");
    let fullname = format!("{release}-tracking-operator");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let roles: Api<Role> = Api::namespaced(client.clone(), &ns);
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());

    install(
        &release,
        &ns,
        &["operator.resyncInterval=5m"],
        &["--take-ownership"],
    )?;
    let d = deployments
        .get(&fullname)
        .await
        .context("Deployment after install")?;
    ensure!(d.spec.as_ref().and_then(|s| s.replicas) == Some(1));
    let args = args_of(&d);
    ensure!(args.iter().any(|a| a == "--resync-interval=5m"), "{args:?}");
    // The Lease at every replica count: a rolling update runs two Pods (issue 9).
    ensure!(args.iter().any(|a| a == "--leader-elect"), "{args:?}");
    ensure!(
        roles
            .get_opt(&format!("{fullname}-leader-election"))
            .await?
            .is_some()
    );
    let crd = crds.get(CRD_NAME).await?;
    let labels = crd.metadata.labels.unwrap_or_default();
    ensure!(
        labels.get("app.kubernetes.io/instance") == Some(&release),
        "CRD not adopted by the release: {labels:?}"
    );

    // Drift on the CRD (here: a label removed by hand) is repaired by the next upgrade: the CRD
    // lives in templates/, so Helm upgrades it, unlike files in a chart's crds/ directory.
    crds.patch(
        CRD_NAME,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app.kubernetes.io/part-of": null}}})),
    )
    .await
    .context("remove a label from the CRD")?;
    let drifted = crds
        .get(CRD_NAME)
        .await?
        .metadata
        .labels
        .unwrap_or_default();
    ensure!(!drifted.contains_key("app.kubernetes.io/part-of"));

    install(
        &release,
        &ns,
        &[
            "operator.resyncInterval=10m",
            "replicas=2",
            "podDisruptionBudget.enabled=true",
        ],
        &[],
    )?;
    let d = deployments
        .get(&fullname)
        .await
        .context("Deployment after upgrade")?;
    ensure!(
        d.spec.as_ref().and_then(|s| s.replicas) == Some(2),
        "upgrade did not change replicas"
    );
    let args = args_of(&d);
    ensure!(
        args.iter().any(|a| a == "--resync-interval=10m"),
        "{args:?}"
    );
    ensure!(
        args.iter().any(|a| a == "--leader-elect"),
        "two replicas elect a leader: {args:?}"
    );
    ensure!(
        roles
            .get_opt(&format!("{fullname}-leader-election"))
            .await?
            .is_some()
    );
    let crd = crds.get(CRD_NAME).await?;
    ensure!(
        crd.metadata
            .labels
            .unwrap_or_default()
            .get("app.kubernetes.io/part-of")
            .map(String::as_str)
            == Some("tracking-operator"),
        "helm upgrade did not update the CRD"
    );
    let history = helm(&[
        "history",
        &release,
        "-n",
        &ns,
        "--kubeconfig",
        &kube.kubeconfig_path().to_string_lossy(),
    ])?;
    ensure!(
        history.lines().count() == 3,
        "two revisions expected:\n{history}"
    );

    uninstall(&release, &ns)?;
    ensure!(
        deployments.get_opt(&fullname).await?.is_none(),
        "Deployment left after uninstall"
    );
    let crd = crds.get_opt(CRD_NAME).await?;
    ensure!(
        crd.is_some_and(|c| c.metadata.deletion_timestamp.is_none()),
        "CRD removed by uninstall"
    );
    Ok(())
}

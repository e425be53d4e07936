//! What the chart renders, without installing it.

use anyhow::{Context, Result, ensure};
use kube::api::{Api, DynamicObject, Patch, PatchParams, ValidationDirective};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use serde_json::Value;

use crate::support::{self, CRD_NAME, container_args, find, kinds, template};

/// Values that switch every optional part on.
const EVERYTHING: &[&str] = &[
    "replicas=2",
    "podDisruptionBudget.enabled=true",
    "metrics.serviceMonitor.enabled=true",
    "operator.region=eu-west-1",
    "operator.awsEndpointUrl=http://127.0.0.1:5000",
    "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::123456789012:role/tracking-operator",
    "nodeSelector.kubernetes\\.io/os=linux",
    "tolerations[0].key=dedicated,tolerations[0].operator=Exists,tolerations[0].effect=NoSchedule",
];

#[test]
fn lint_strict_passes_with_default_and_all_optional_values() -> Result<()> {
    let chart = support::chart();
    let chart = chart.to_str().context("chart path")?;
    support::helm(&["lint", "--strict", chart])?;
    let mut args = vec!["lint", "--strict", chart];
    for s in EVERYTHING {
        args.extend(["--set", s]);
    }
    support::helm(&args)?;
    Ok(())
}

#[test]
fn values_schema_refuses_bad_values_naming_the_field() -> Result<()> {
    let cases = [
        ("operator.resyncInterval=soon", "resyncInterval"),
        ("replica=2", "replica"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("ports.http=0", "http"),
        ("operator.watchNamespace=Not_A_Namespace", "watchNamespace"),
        ("crds.keep=maybe", "keep"),
    ];
    for (set, field) in cases {
        let err = template("t", "default", &[set])
            .err()
            .with_context(|| format!("{set} was accepted"))?;
        ensure!(
            err.to_string().contains(field),
            "error for {set} does not name {field}: {err}"
        );
    }
    Ok(())
}

#[test]
fn templates_use_nothing_argocd_cannot_render() -> Result<()> {
    // Argo CD renders with `helm template`: no cluster lookups, no values that change per render.
    for entry in std::fs::read_dir(support::chart().join("templates"))? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)?;
        for forbidden in [
            "lookup",
            "randAlpha",
            "randNumeric",
            "randAscii",
            "randBytes",
            "randInt",
            "genCA",
            "genPrivateKey",
            "genSelfSignedCert",
            "genSignedCert",
            "now ",
        ] {
            for (i, line) in text.lines().enumerate() {
                let in_action = line
                    .split("{{")
                    .skip(1)
                    .any(|a| a.split("}}").next().is_some_and(|a| a.contains(forbidden)));
                ensure!(!in_action, "{}:{}: uses {forbidden}", path.display(), i + 1);
            }
        }
    }
    Ok(())
}

#[test]
fn default_render_has_the_expected_objects_and_settings() -> Result<()> {
    let docs = template("ops", "tracking", &[])?;
    let mut got = kinds(&docs);
    got.sort();
    ensure!(
        got == [
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ],
        "unexpected objects: {got:?}"
    );
    let deploy = find(&docs, "Deployment", "tracking-operator").context("no Deployment")?;
    let args = container_args(deploy);
    ensure!(args[0] == "run", "{args:?}");
    // The Lease at every replica count: a rolling update runs two Pods (issue 9).
    ensure!(
        args.iter().any(|a| a == "--leader-elect"),
        "one replica still holds the Lease: {args:?}"
    );
    ensure!(
        !args.iter().any(|a| a.starts_with("--namespace")),
        "watches all namespaces: {args:?}"
    );
    let pod = &deploy["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    ensure!(pod["securityContext"]["runAsNonRoot"] == true);
    ensure!(pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault");
    ensure!(c["securityContext"]["allowPrivilegeEscalation"] == false);
    ensure!(c["securityContext"]["capabilities"]["drop"][0] == "ALL");
    ensure!(
        c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            && c["livenessProbe"]["httpGet"]["port"] == "http"
    );
    ensure!(
        c["readinessProbe"]["httpGet"]["path"] == "/readyz"
            && c["readinessProbe"]["httpGet"]["port"] == "http"
    );
    let ports: Vec<&str> = c["ports"]
        .as_array()
        .context("ports")?
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    ensure!(
        ports == ["http", "metrics"],
        "probes and metrics on their own ports: {ports:?}"
    );
    ensure!(
        c["resources"]["limits"]["memory"].is_string()
            && c["resources"]["requests"]["cpu"].is_string()
    );

    // No rule anywhere grants Secrets, wildcards or escalation verbs.
    for role in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
    {
        for rule in role["rules"].as_array().context("rules")? {
            let text = rule.to_string();
            ensure!(
                !text.contains("secrets") && !text.contains("\"*\""),
                "too broad: {text}"
            );
            ensure!(
                !text.contains("escalate")
                    && !text.contains("bind")
                    && !text.contains("impersonate"),
                "{text}"
            );
        }
    }
    Ok(())
}

#[test]
fn optional_values_render_leader_election_pdb_servicemonitor_and_namespace_scope() -> Result<()> {
    let mut sets = EVERYTHING.to_vec();
    sets.push("operator.watchNamespace=logistics");
    let docs = template("ops", "tracking", &sets)?;
    let deploy = find(&docs, "Deployment", "tracking-operator").context("no Deployment")?;
    let args = container_args(deploy);
    for want in [
        "--leader-elect",
        "--namespace=logistics",
        "--region=eu-west-1",
        "--aws-endpoint-url=http://127.0.0.1:5000",
    ] {
        ensure!(args.iter().any(|a| a == want), "missing {want}: {args:?}");
    }
    ensure!(deploy["spec"]["replicas"] == 2);
    ensure!(deploy["spec"]["template"]["spec"]["nodeSelector"]["kubernetes.io/os"] == "linux");
    ensure!(deploy["spec"]["template"]["spec"]["tolerations"][0]["key"] == "dedicated");
    let sa = find(&docs, "ServiceAccount", "tracking-operator").context("no ServiceAccount")?;
    ensure!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
            == "arn:aws:iam::123456789012:role/tracking-operator"
    );
    ensure!(find(&docs, "PodDisruptionBudget", "tracking-operator").is_some());
    ensure!(find(&docs, "ServiceMonitor", "tracking-operator").is_some());
    let lease_role = find(&docs, "Role", "leader-election").context("no leader-election Role")?;
    ensure!(lease_role["metadata"]["namespace"] == "tracking");
    // Namespace scope: pipelines are reconciled through a Role in the watched namespace.
    let role = find(&docs, "Role", "ops-tracking-operator").context("no namespaced Role")?;
    ensure!(role["metadata"]["namespace"] == "logistics");
    let cluster_wide_pipelines = docs.iter().filter(|d| d["kind"] == "ClusterRole").any(|d| {
        d["rules"].as_array().is_some_and(|rules| {
            rules.iter().any(|r| {
                r["resources"]
                    .as_array()
                    .is_some_and(|res| res.iter().any(|x| x == "trackingpipelines"))
            })
        })
    });
    ensure!(
        !cluster_wide_pipelines,
        "a namespace-scoped install must not grant pipelines cluster-wide"
    );
    Ok(())
}

/// Strips what the chart adds to a CRD (its labels and the keep policy).
fn without_chart_metadata(mut crd: Value) -> Value {
    if let Some(meta) = crd["metadata"].as_object_mut() {
        meta.remove("labels");
        if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            ann.remove("helm.sh/resource-policy");
            if ann.is_empty() {
                meta.remove("annotations");
            }
        }
    }
    crd
}

#[test]
fn rendered_crd_is_identical_to_the_generated_one_in_crds_dir() -> Result<()> {
    let generated = support::crds_dir_docs()?;
    ensure!(!generated.is_empty(), "crds/ is empty");

    let docs = template("ops", "tracking", &[])?;
    let rendered: Vec<Value> = docs
        .into_iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .collect();
    ensure!(
        rendered.len() == generated.len(),
        "chart renders {} CRDs, crds/ has {}: run hack/chart-crds.sh",
        rendered.len(),
        generated.len()
    );
    for crd in &rendered {
        ensure!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep",
            "crds.keep is on by default"
        );
        ensure!(crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm");
    }
    for (chart_crd, file_crd) in rendered.into_iter().zip(&generated) {
        ensure!(
            &without_chart_metadata(chart_crd) == file_crd,
            "templates/crds.yaml differs from crds/: run hack/chart-crds.sh"
        );
    }

    let not_kept = template("ops", "tracking", &["crds.keep=false"])?;
    let crd = find(&not_kept, "CustomResourceDefinition", CRD_NAME).context("no CRD")?;
    ensure!(crd["metadata"]["annotations"]["helm.sh/resource-policy"].is_null());
    let disabled = template("ops", "tracking", &["crds.enabled=false"])?;
    ensure!(find(&disabled, "CustomResourceDefinition", CRD_NAME).is_none());
    Ok(())
}

/// Every rendered object is accepted by the real API server: a server-side dry-run apply with
/// strict field validation (unknown or misspelt fields are errors, as are schema violations).
#[tokio::test]
async fn rendered_manifests_pass_server_side_dry_run_with_strict_validation() -> Result<()> {
    let kube = testenv::kube();
    let client = kube.client().await;
    let release_ns = kube.namespace("chart-dry").await;
    let watched_ns = kube.namespace("chart-watched").await;
    let watch_set = format!("operator.watchNamespace={watched_ns}");
    let variants: Vec<Vec<&str>> = vec![
        vec![],
        EVERYTHING
            .iter()
            .copied()
            .filter(|s| !s.starts_with("metrics.serviceMonitor"))
            .chain([watch_set.as_str()])
            .collect(),
    ];
    for sets in variants {
        let docs = template("dry", &release_ns, &sets)?;
        for doc in docs {
            let obj: DynamicObject = serde_json::from_value(doc.clone())?;
            let types = obj.types.clone().context("apiVersion/kind")?;
            let gvk = GroupVersionKind::try_from(&types)?;
            let (ar, caps) = discovery::pinned_kind(&client, &gvk).await?;
            let api: Api<DynamicObject> = match caps.scope {
                Scope::Namespaced => Api::namespaced_with(
                    client.clone(),
                    obj.metadata.namespace.as_deref().unwrap_or(&release_ns),
                    &ar,
                ),
                Scope::Cluster => Api::all_with(client.clone(), &ar),
            };
            let mut pp = PatchParams::apply("chart-test").force();
            pp.dry_run = true;
            pp.field_validation = Some(ValidationDirective::Strict);
            let name = obj.metadata.name.clone().context("name")?;
            api.patch(&name, &pp, &Patch::Apply(&obj))
                .await
                .with_context(|| format!("{} {name} ({sets:?}) refused", gvk.kind))?;
        }
    }
    Ok(())
}

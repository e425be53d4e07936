//! The chart's RBAC, exercised with the chart's own ServiceAccount token on the real API server:
//! everything the operator does is allowed, and nothing more (no Secrets, no other namespaces'
//! Leases, no deleting pipelines).

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

use crate::install::install;
use crate::support::root;

/// A kubeconfig for the same API server that authenticates as the chart's ServiceAccount.
pub async fn service_account_kubeconfig(namespace: &str, sa: &str) -> Result<std::path::PathBuf> {
    let kube = testenv::kube();
    let sas: Api<ServiceAccount> = Api::namespaced(kube.client().await, namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = sas
        .create_token_request(sa, &PostParams::default(), &request)
        .await
        .context("TokenRequest")?
        .status
        .context("TokenRequest has no status")?
        .token;
    let admin = std::fs::read_to_string(kube.kubeconfig_path())?;
    ensure!(
        admin.contains(kube.admin_token()),
        "admin kubeconfig does not carry the admin token"
    );
    let path = kube.dir().join(format!("kubeconfig-{namespace}-{sa}"));
    std::fs::write(&path, admin.replace(kube.admin_token(), &token))?;
    Ok(path)
}

/// verb, API group, resource[/subresource], namespace (None: cluster-wide), object name.
type Access<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, Option<&'a str>);

pub fn tp_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("tracking-operator.io", "v1alpha1", "TrackingPipeline"),
        "trackingpipelines",
    )
}

/// Asks the API server whether the current user may do `verb` on `resource`.
async fn can(
    client: &kube::Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Result<bool> {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_owned())),
        None => (resource, None),
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource,
                namespace: namespace.map(str::to_owned),
                name: name.map(str::to_owned),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

fn forbidden<T: std::fmt::Debug>(result: kube::Result<T>) -> Result<()> {
    match result {
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(()),
        other => bail!("expected 403 Forbidden, got {other:?}"),
    }
}

/// A pipeline as a user would apply it: examples/pipeline.yaml.
pub fn example_pipeline(namespace: &str, name: &str) -> Result<DynamicObject> {
    let text = std::fs::read_to_string(root().join("examples/pipeline.yaml"))?;
    let mut obj: DynamicObject = serde_yaml::from_str(&text)?;
    obj.metadata.namespace = Some(namespace.into());
    obj.metadata.name = Some(name.into());
    Ok(obj)
}

#[tokio::test]
async fn service_account_can_do_what_the_operator_needs_and_cannot_read_secrets() -> Result<()> {
    let kube = testenv::kube();
    let admin = kube.client().await;
    let ns = kube.namespace("chart-rbac").await;
    let apps = kube.namespace("chart-rbac-apps").await;
    let release = testenv::unique_name("rb");
    let sa_name = format!("{release}-tracking-operator");
    let lease_name = format!("{sa_name}-leader");
    // The CRD belongs to another test's release; two replicas turn leader election on.
    install(&release, &ns, &["crds.enabled=false", "replicas=2"], &[])?;
    let sa = testenv::client_from(&service_account_kubeconfig(&ns, &sa_name).await?).await?;

    let tp = "tracking-operator.io";
    let allowed: &[Access] = &[
        ("list", tp, "trackingpipelines", None, None),
        ("watch", tp, "trackingpipelines", None, None),
        ("patch", tp, "trackingpipelines", Some(&apps), None),
        ("patch", tp, "trackingpipelines/status", Some(&apps), None),
        (
            "update",
            tp,
            "trackingpipelines/finalizers",
            Some(&apps),
            None,
        ),
        ("create", "", "serviceaccounts", Some(&apps), None),
        ("patch", "", "configmaps", Some(&apps), None),
        ("watch", "apps", "deployments", None, None),
        ("create", "apps", "deployments", Some(&apps), None),
        ("patch", "apps", "deployments/scale", Some(&apps), None),
        ("create", "events.k8s.io", "events", Some(&apps), None),
        (
            "get",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None,
            Some("trackingpipelines.tracking-operator.io"),
        ),
        ("create", "coordination.k8s.io", "leases", Some(&ns), None),
        (
            "get",
            "coordination.k8s.io",
            "leases",
            Some(&ns),
            Some(&lease_name),
        ),
        (
            "update",
            "coordination.k8s.io",
            "leases",
            Some(&ns),
            Some(&lease_name),
        ),
    ];
    for &(verb, group, resource, namespace, name) in allowed {
        ensure!(
            can(&sa, verb, group, resource, namespace, name).await?,
            "cannot {verb} {group}/{resource} in {namespace:?}"
        );
    }
    let denied: &[Access] = &[
        ("get", "", "secrets", Some(&apps), None),
        ("list", "", "secrets", None, None),
        ("delete", tp, "trackingpipelines", Some(&apps), None),
        ("create", "", "pods", Some(&apps), None),
        ("list", "", "namespaces", None, None),
        (
            "create",
            "rbac.authorization.k8s.io",
            "rolebindings",
            Some(&apps),
            None,
        ),
        (
            "get",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None,
            Some("clusterroles.rbac.authorization.k8s.io"),
        ),
        (
            "update",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None,
            Some("trackingpipelines.tracking-operator.io"),
        ),
        ("create", "coordination.k8s.io", "leases", Some(&apps), None),
        (
            "update",
            "coordination.k8s.io",
            "leases",
            Some(&ns),
            Some("kube-controller-manager"),
        ),
        ("create", "", "events", Some(&apps), None),
    ];
    for &(verb, group, resource, namespace, name) in denied {
        ensure!(
            !can(&sa, verb, group, resource, namespace, name).await?,
            "CAN {verb} {group}/{resource} in {namespace:?}"
        );
    }

    // Real calls, as the operator makes them.
    let ar = tp_resource();
    let pipeline_name = testenv::unique_name("rbac");
    Api::<DynamicObject>::namespaced_with(admin.clone(), &apps, &ar)
        .create(
            &PostParams::default(),
            &example_pipeline(&apps, &pipeline_name)?,
        )
        .await
        .context("admin creates the example pipeline")?;
    let sa_tps_all: Api<DynamicObject> = Api::all_with(sa.clone(), &ar);
    let listed = sa_tps_all
        .list(&ListParams::default())
        .await
        .context("list pipelines cluster-wide")?;
    ensure!(
        listed
            .items
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some(&pipeline_name))
    );
    let sa_tps: Api<DynamicObject> = Api::namespaced_with(sa.clone(), &apps, &ar);
    sa_tps
        .patch_status(
            &pipeline_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": 1, "conditions": [{
                "type": "Ready", "status": "Unknown", "reason": "Reconciling",
                "message": "checked by the chart's RBAC test", "lastTransitionTime": "2026-01-01T00:00:00Z"
            }]}})),
        )
        .await
        .context("patch pipeline status")?;
    forbidden(sa_tps.delete(&pipeline_name, &Default::default()).await)?;

    let pp = PatchParams::apply("tracking-operator").force();
    let cm: ConfigMap = serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "outputs"}, "data": {"queueUrl": "http://example"}}))?;
    Api::<ConfigMap>::namespaced(sa.clone(), &apps)
        .patch("outputs", &pp, &Patch::Apply(&cm))
        .await
        .context("apply ConfigMap")?;
    let worker_sa: ServiceAccount = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "worker"}}),
    )?;
    Api::<ServiceAccount>::namespaced(sa.clone(), &apps)
        .patch("worker", &pp, &Patch::Apply(&worker_sa))
        .await
        .context("apply ServiceAccount")?;
    let deployment: Deployment = serde_json::from_value(
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "worker"},
        "spec": {"selector": {"matchLabels": {"app": "w"}}, "template": {"metadata": {"labels": {"app": "w"}},
            "spec": {"containers": [{"name": "worker", "image": "example/worker:1"}]}}}}),
    )?;
    Api::<Deployment>::namespaced(sa.clone(), &apps)
        .patch("worker", &pp, &Patch::Apply(&deployment))
        .await
        .context("apply Deployment")?;
    let event: Event = serde_json::from_value(
        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "rbac-check"}, "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "tracking-operator.io/operator",
        "reportingInstance": "test", "action": "Reconcile", "reason": "Checked", "type": "Normal",
        "regarding": {"apiVersion": "tracking-operator.io/v1alpha1", "kind": "TrackingPipeline", "namespace": apps, "name": pipeline_name}}),
    )?;
    Api::<Event>::namespaced(sa.clone(), &apps)
        .create(&PostParams::default(), &event)
        .await
        .context("create Event")?;
    let lease: Lease = serde_json::from_value(
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": lease_name}, "spec": {"holderIdentity": "test"}}),
    )?;
    let leases = Api::<Lease>::namespaced(sa.clone(), &ns);
    leases
        .create(&PostParams::default(), &lease)
        .await
        .context("create Lease")?;
    let mut held = leases.get(&lease_name).await.context("get Lease")?;
    if let Some(spec) = held.spec.as_mut() {
        spec.holder_identity = Some("test-2".into());
    }
    leases
        .replace(&lease_name, &PostParams::default(), &held)
        .await
        .context("renew Lease")?;
    forbidden(
        Api::<Lease>::namespaced(sa.clone(), &apps)
            .create(&PostParams::default(), &lease)
            .await,
    )?;

    forbidden(
        Api::<Secret>::namespaced(sa.clone(), &apps)
            .list(&ListParams::default())
            .await,
    )?;
    forbidden(
        Api::<Secret>::all(sa.clone())
            .list(&ListParams::default())
            .await,
    )?;
    Ok(())
}

#[tokio::test]
async fn watch_namespace_confines_the_operator_to_that_namespace() -> Result<()> {
    let kube = testenv::kube();
    let ns = kube.namespace("chart-scoped").await;
    let watched = kube.namespace("chart-scoped-apps").await;
    let other = kube.namespace("chart-scoped-other").await;
    let release = testenv::unique_name("ns");
    install(
        &release,
        &ns,
        &[
            "crds.enabled=false",
            &format!("operator.watchNamespace={watched}"),
        ],
        &[],
    )?;
    let sa = testenv::client_from(
        &service_account_kubeconfig(&ns, &format!("{release}-tracking-operator")).await?,
    )
    .await?;

    let ar = tp_resource();
    Api::<DynamicObject>::namespaced_with(sa.clone(), &watched, &ar)
        .list(&ListParams::default())
        .await
        .context("list pipelines in the watched namespace")?;
    ensure!(can(&sa, "create", "apps", "deployments", Some(&watched), None).await?);
    forbidden(
        Api::<DynamicObject>::all_with(sa.clone(), &ar)
            .list(&ListParams::default())
            .await,
    )?;
    forbidden(
        Api::<DynamicObject>::namespaced_with(sa.clone(), &other, &ar)
            .list(&ListParams::default())
            .await,
    )?;
    ensure!(!can(&sa, "create", "apps", "deployments", Some(&other), None).await?);
    Ok(())
}

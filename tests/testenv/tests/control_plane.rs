//! The harness gives a working API server: a CRD can be created, and objects of it created,
//! watched and deleted through kube::Client.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher::{self, Event};

#[tokio::test]
async fn crd_object_can_be_created_watched_and_deleted() {
    let kube = testenv::kube();
    let client = kube.client().await;
    let ns = kube.namespace("smoke").await;

    let group = format!("{}.testenv.io", testenv::unique_name("g"));
    let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {
            "group": group,
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer", "minimum": 1}}}
                }}}
            }]
        }
    }))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("widget.yaml"),
        serde_yaml::to_string(&crd).unwrap(),
    )
    .unwrap();
    kube.install_crds(dir.path()).await;

    let gvk = GroupVersionKind::gvk(&group, "v1", "Widget");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "widgets");
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ar);

    let mut events = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
    // The watcher's initial list completes before we create, so the Apply below is a real event.
    loop {
        match events.next().await {
            Some(Ok(Event::InitDone)) => break,
            Some(Ok(_)) => continue,
            other => panic!("watch failed before InitDone: {other:?}"),
        }
    }

    let obj: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": format!("{group}/v1"), "kind": "Widget",
        "metadata": {"name": "w1"}, "spec": {"size": 3}
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();

    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = events.next().await {
            if let Ok(Event::Apply(o)) = ev {
                return o;
            }
        }
        panic!("watch ended");
    })
    .await
    .expect("a watch event for the new object");
    assert_eq!(seen.metadata.name.as_deref(), Some("w1"));
    assert_eq!(seen.data["spec"]["size"], 3);

    // The schema is enforced by the real server.
    let bad: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": format!("{group}/v1"), "kind": "Widget",
        "metadata": {"name": "w2"}, "spec": {"size": 0}
    }))
    .unwrap();
    let err = api.create(&PostParams::default(), &bad).await.unwrap_err();
    assert!(err.to_string().contains("spec.size"), "{err}");

    api.delete("w1", &DeleteParams::default()).await.unwrap();
    let deleted = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = events.next().await {
            if let Ok(Event::Delete(o)) = ev {
                return o;
            }
        }
        panic!("watch ended");
    })
    .await
    .expect("a delete event");
    assert_eq!(deleted.metadata.name.as_deref(), Some("w1"));
    assert!(api.get_opt("w1").await.unwrap().is_none());
}

#[tokio::test]
async fn kubeconfig_on_disk_works_and_rbac_is_enforced() {
    let kube = testenv::kube();
    let text = std::fs::read_to_string(kube.kubeconfig_path()).unwrap();
    assert!(text.contains(kube.server()));
    // An unauthenticated request is refused: the server really authenticates.
    let mut cfg = kube::Config::new(kube.server().parse().unwrap());
    cfg.accept_invalid_certs = true;
    let anon = kube::Client::try_from(cfg).unwrap();
    let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(anon);
    let err = ns.list(&Default::default()).await.unwrap_err();
    assert!(
        err.to_string().contains("forbidden") || err.to_string().contains("Unauthorized"),
        "{err}"
    );
}

//! The pipeline's children in the cluster: the worker's ServiceAccount, the outputs
//! ConfigMap and the worker Deployment. Builders are pure (pipeline + outputs → object);
//! [`apply`] is the only I/O.

mod availability;
mod config_map;
mod deployment;
mod service_account;

pub use availability::{WORKER_STARTING, WORKER_UNAVAILABLE, worker_readiness};
pub use config_map::{config_map_name, outputs_config_map};
pub use deployment::{
    AUTOSCALING_ANNOTATION, WorkerInputs, deployment_change, deployment_name, drain_budget_seconds,
    worker_deployment,
};
pub use service_account::{ROLE_ARN_ANNOTATION, worker_service_account};

use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::api::TrackingPipeline;
use crate::error::{Error, Result};

/// The one field manager for everything the operator applies. Always applied with `force`:
/// the operator is the sole authority on these fields, so when someone else (kubectl edit,
/// another tool) took one over, reclaiming it is drift repair, not a conflict to report.
pub const FIELD_MANAGER: &str = "tracking-operator";

/// Label naming the pipeline a child belongs to (hashed when the name is too long for a label).
pub const PIPELINE_LABEL: &str = "tracking-operator.io/pipeline";

/// Labels on every child. Deliberately not the pipeline's own labels or annotations: those
/// carry other tools' tracking ids (Argo CD), which must not spread to children.
pub fn child_labels(pipeline: &TrackingPipeline) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "tracking-worker".into()),
        ("app.kubernetes.io/component".into(), "worker".into()),
        (
            "app.kubernetes.io/managed-by".into(),
            "tracking-operator".into(),
        ),
        (PIPELINE_LABEL.into(), bounded(&pipeline.name_any(), "", 63)),
    ])
}

/// `<name><suffix>`, shortened with a hash of the full name when longer than `max`, so
/// distinct pipelines never share a child name.
pub fn bounded(name: &str, suffix: &str, max: usize) -> String {
    let full = format!("{name}{suffix}");
    if full.len() <= max {
        return full;
    }
    let hash = hex::encode(&Sha256::digest(full.as_bytes())[..4]);
    let keep = max.saturating_sub(suffix.len() + hash.len() + 1);
    let stem: String = name.chars().take(keep).collect();
    format!("{}-{hash}{suffix}", stem.trim_end_matches(['-', '.']))
}

/// Metadata of a child: name, namespace, labels, and the pipeline as controlling owner (so
/// garbage collection removes it and `.owns()` maps its changes back to the pipeline).
pub fn child_meta(pipeline: &TrackingPipeline, name: String) -> Result<ObjectMeta> {
    let owner: OwnerReference = pipeline
        .controller_owner_ref(&())
        .ok_or_else(|| Error::InvalidSpec("the pipeline has no name or uid yet".into()))?;
    Ok(ObjectMeta {
        name: Some(name),
        namespace: pipeline.namespace(),
        labels: Some(child_labels(pipeline)),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    })
}

/// Whether `existing` is controlled by the owner `ours` names (same uid).
pub fn controlled_by(existing: &ObjectMeta, ours: &ObjectMeta) -> bool {
    let our_uid = ours
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.as_str());
    existing
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && Some(r.uid.as_str()) == our_uid)
}

/// Server-side apply under [`FIELD_MANAGER`], forced (see there why). An object with the
/// child's name that the pipeline does not control is never taken over.
pub async fn apply<K>(client: &Client, object: &K) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let namespace = object
        .namespace()
        .ok_or_else(|| Error::InvalidSpec("child object without namespace".into()))?;
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    if let Some(existing) = api.get_metadata_opt(&object.name_any()).await? {
        if !controlled_by(existing.meta(), object.meta()) {
            return Err(Error::ChildConflict {
                resource: format!("{} {namespace}/{}", K::kind(&()), object.name_any()),
            });
        }
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Ok(api
        .patch(&object.name_any(), &params, &Patch::Apply(object))
        .await?)
}

#[cfg(test)]
pub(crate) mod fixtures {
    use crate::api::{TrackingPipeline, TrackingPipelineSpec};

    pub fn pipeline() -> TrackingPipeline {
        let mut p = TrackingPipeline::new("parcels", TrackingPipelineSpec::default());
        p.metadata.namespace = Some("logistics".into());
        p.metadata.uid = Some("0000-1111".into());
        p.metadata.labels =
            Some([("argocd.argoproj.io/instance".to_string(), "x".to_string())].into());
        p.metadata.annotations = Some(
            [(
                "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                "{}".to_string(),
            )]
            .into(),
        );
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_names_are_short_distinct_and_stable() {
        assert_eq!(bounded("parcels", "-worker", 63), "parcels-worker");
        let long_a = "a".repeat(100);
        let long_b = format!("{}b", "a".repeat(99));
        let a = bounded(&long_a, "-worker", 63);
        let b = bounded(&long_b, "-worker", 63);
        assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
        assert_ne!(a, b);
        assert!(a.ends_with("-worker"));
        assert_eq!(a, bounded(&long_a, "-worker", 63));
    }

    #[test]
    fn only_our_own_children_are_controlled_by_us() {
        let p = fixtures::pipeline();
        let ours = child_meta(&p, "x".into()).unwrap();
        assert!(controlled_by(&ours, &ours));
        assert!(!controlled_by(&ObjectMeta::default(), &ours));
        let mut other = ours.clone();
        if let Some(refs) = other.owner_references.as_mut() {
            refs[0].uid = "someone-else".into();
        }
        assert!(!controlled_by(&other, &ours));
    }

    #[test]
    fn children_do_not_inherit_the_pipelines_labels_or_annotations() {
        let p = fixtures::pipeline();
        let meta = child_meta(&p, "x".into()).unwrap();
        let labels = meta.labels.unwrap();
        assert!(!labels.contains_key("argocd.argoproj.io/instance"));
        assert_eq!(labels[PIPELINE_LABEL], "parcels");
        assert!(meta.annotations.is_none());
        let owner = &meta.owner_references.unwrap()[0];
        assert_eq!(owner.kind, "TrackingPipeline");
        assert_eq!(owner.controller, Some(true));
    }
}

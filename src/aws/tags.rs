//! Tags on every AWS resource: the user's, `Environment`, and ownership tags that tell
//! whether a resource with our name is ours. A resource without our ownership tags, or with
//! another pipeline's, is a conflict: we never take it over.

use std::collections::BTreeMap;

use super::error::Error;

pub const MANAGED_BY: &str = "tracking-operator.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "tracking-operator";
pub const PIPELINE_NAMESPACE: &str = "tracking-operator.io/pipeline-namespace";
pub const PIPELINE_NAME: &str = "tracking-operator.io/pipeline-name";
pub const PIPELINE_UID: &str = "tracking-operator.io/pipeline-uid";
/// The operator's cluster identity (`--cluster-id`): names come from namespace/name only, so
/// two clusters in one account (blue/green, stage/prod) would otherwise adopt each other's.
pub const CLUSTER: &str = "tracking-operator.io/cluster";
pub const ENVIRONMENT: &str = "Environment";

/// The pipeline that owns a resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The cluster identity of the operator, when configured.
    pub cluster: Option<String>,
}

impl Owner {
    /// `namespace/name`: the CloudWatch dimension value and the human-readable identity.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Text for resources that have a description but no tags (Scheduler schedules).
    pub fn marker(&self) -> String {
        format!(
            "Managed by tracking-operator for TrackingPipeline {} (uid {})",
            self.key(),
            self.uid
        )
    }
}

/// The complete tag set for every resource of a pipeline; ownership tags win over user tags.
pub fn desired_tags(
    user: &BTreeMap<String, String>,
    environment: &str,
    owner: &Owner,
) -> BTreeMap<String, String> {
    let mut tags = user.clone();
    tags.insert(ENVIRONMENT.into(), environment.into());
    tags.insert(MANAGED_BY.into(), MANAGED_BY_VALUE.into());
    tags.insert(PIPELINE_NAMESPACE.into(), owner.namespace.clone());
    tags.insert(PIPELINE_NAME.into(), owner.name.clone());
    tags.insert(PIPELINE_UID.into(), owner.uid.clone());
    match &owner.cluster {
        Some(cluster) => tags.insert(CLUSTER.into(), cluster.clone()),
        None => tags.remove(CLUSTER),
    };
    tags
}

/// Refuses a resource that another owner tagged, or that carries no ownership tags at all.
///
/// The uid is deliberately not compared: a pipeline deleted with `Retain` and created again
/// under the same namespace/name adopts what its predecessor left, which is what Retain is for.
pub fn check_owner(
    resource: &str,
    actual: &BTreeMap<String, String>,
    owner: &Owner,
) -> Result<(), Error> {
    let get = |k: &str| actual.get(k).map(String::as_str);
    let conflict = |reason: String| {
        Err(Error::AwsConflict {
            resource: resource.to_string(),
            reason,
        })
    };
    match get(MANAGED_BY) {
        Some(MANAGED_BY_VALUE) => {}
        Some(other) => return conflict(format!("tag {MANAGED_BY}={other}")),
        None => {
            return conflict(format!(
                "it has no {MANAGED_BY} tag (created outside the operator)"
            ));
        }
    }
    // A resource without the cluster tag predates it and is adopted (the tag is added).
    if let (Some(theirs), Some(ours)) = (get(CLUSTER), owner.cluster.as_deref())
        && theirs != ours
    {
        return conflict(format!(
            "it belongs to another cluster ({CLUSTER}={theirs})"
        ));
    }
    let (ns, name) = (get(PIPELINE_NAMESPACE), get(PIPELINE_NAME));
    if ns != Some(owner.namespace.as_str()) || name != Some(owner.name.as_str()) {
        return conflict(format!(
            "it belongs to TrackingPipeline {}/{}",
            ns.unwrap_or("?"),
            name.unwrap_or("?")
        ));
    }
    Ok(())
}

/// Tags to (re)write: missing or different values. Tags we do not manage are left alone.
pub fn missing_tags(
    desired: &BTreeMap<String, String>,
    actual: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    desired
        .iter()
        .filter(|(k, v)| actual.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Names of drifted tags for the report, e.g. `tag Environment`.
pub fn describe(missing: &BTreeMap<String, String>) -> Vec<String> {
    missing.keys().map(|k| format!("tag {k}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner {
            namespace: "logistics".into(),
            name: "parcels".into(),
            uid: "u-1".into(),
            cluster: None,
        }
    }

    #[test]
    fn another_clusters_resource_is_a_conflict() {
        let blue = Owner {
            cluster: Some("blue".into()),
            ..owner()
        };
        let green = Owner {
            cluster: Some("green".into()),
            ..owner()
        };
        let tags = desired_tags(&BTreeMap::new(), "p", &blue);
        assert_eq!(tags[CLUSTER], "blue");
        let err = check_owner("q", &tags, &green).unwrap_err();
        assert!(err.to_string().contains("another cluster"), "{err}");
        let untagged = desired_tags(&BTreeMap::new(), "p", &owner());
        assert!(check_owner("q", &untagged, &green).is_ok(), "adopted");
    }

    #[test]
    fn ownership_tags_cannot_be_overridden_by_users() {
        let user = BTreeMap::from([
            ("Project".to_string(), "LogisticsTracking".to_string()),
            (MANAGED_BY.to_string(), "me".to_string()),
        ]);
        let tags = desired_tags(&user, "production", &owner());
        assert_eq!(tags[MANAGED_BY], MANAGED_BY_VALUE);
        assert_eq!(tags["Project"], "LogisticsTracking");
        assert_eq!(tags[ENVIRONMENT], "production");
        assert_eq!(tags[PIPELINE_UID], "u-1");
    }

    #[test]
    fn owner_check() {
        let ours = desired_tags(&BTreeMap::new(), "p", &owner());
        assert!(check_owner("q", &ours, &owner()).is_ok());
        let err = check_owner("SQS queue q", &BTreeMap::new(), &owner()).unwrap_err();
        assert!(err.is_conflict() && err.to_string().contains("SQS queue q"));
        let mut other = ours.clone();
        other.insert(PIPELINE_NAME.into(), "letters".into());
        let err = check_owner("q", &other, &owner()).unwrap_err();
        assert!(err.to_string().contains("logistics/letters"), "{err}");
        let mut readopted = ours;
        readopted.insert(PIPELINE_UID.into(), "u-0".into());
        assert!(check_owner("q", &readopted, &owner()).is_ok());
    }

    #[test]
    fn missing_tags_lists_only_differences() {
        let desired = BTreeMap::from([
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ]);
        let actual = BTreeMap::from([
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "x".to_string()),
            ("c".to_string(), "3".to_string()),
        ]);
        assert_eq!(
            missing_tags(&desired, &actual),
            BTreeMap::from([("b".to_string(), "2".to_string())])
        );
    }
}

//! The worker's ServiceAccount, annotated for IRSA when the spec names a role.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceAccount;

use super::child_meta;
use crate::api::TrackingPipeline;
use crate::error::Result;

/// The annotation EKS reads to give a ServiceAccount's Pods an IAM role.
pub const ROLE_ARN_ANNOTATION: &str = "eks.amazonaws.com/role-arn";

/// `role_arn`: `spec.worker.roleArn`, or the role the operator created.
pub fn worker_service_account(
    pipeline: &TrackingPipeline,
    name: &str,
    role_arn: Option<&str>,
) -> Result<ServiceAccount> {
    let mut metadata = child_meta(pipeline, name.to_string())?;
    metadata.annotations =
        role_arn.map(|arn| BTreeMap::from([(ROLE_ARN_ANNOTATION.to_string(), arn.to_string())]));
    Ok(ServiceAccount {
        metadata,
        // The worker talks to AWS, never to the Kubernetes API.
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::fixtures::pipeline;

    #[test]
    fn annotated_with_the_role_only_when_there_is_one() {
        let arn = "arn:aws:iam::123456789012:role/w";
        let sa = worker_service_account(&pipeline(), "parcels-worker", Some(arn)).unwrap();
        assert_eq!(sa.metadata.annotations.unwrap()[ROLE_ARN_ANNOTATION], arn);
        let sa = worker_service_account(&pipeline(), "parcels-worker", None).unwrap();
        assert!(sa.metadata.annotations.is_none());
        assert_eq!(sa.automount_service_account_token, Some(false));
    }
}

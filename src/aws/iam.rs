//! IAM roles the pipeline owns: the schedule's role, and the worker's role when the operator
//! knows the cluster's OIDC provider. Each has a trust policy and one inline policy, both
//! compared as documents (IAM returns them URL-encoded), and the ownership tags.

use std::collections::BTreeMap;

use aws_sdk_iam::types::Tag;
use serde_json::Value;

use super::adopt::observe_missing;
use super::arn::oidc_issuer;
use super::desired::Desired;
use super::error::{Error, api, unexpected};
use super::policy::{WorkerResources, same_policy, worker_policy, worker_trust};
use super::tags::{check_owner, describe, missing_tags};
use super::verified::{settle, settled};
use super::{AwsClients, DeleteReport, Outputs, PartReport, Result, found, need};

const SVC: &str = "IAM";
/// Name of the one inline policy on every role we own.
pub const INLINE_POLICY: &str = "tracking-pipeline";

pub struct RoleDesired<'a> {
    pub name: &'a str,
    pub description: String,
    pub trust: Value,
    pub policy: Value,
}

fn iam_tags(tags: &BTreeMap<String, String>) -> Result<Vec<Tag>> {
    tags.iter()
        .map(|(k, v)| {
            Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| unexpected(SVC, e.to_string()))
        })
        .collect()
}

async fn role_tags(c: &AwsClients, name: &str) -> Result<BTreeMap<String, String>> {
    let out = c
        .iam
        .list_role_tags()
        .role_name(name)
        .send()
        .await
        .map_err(api(SVC, "ListRoleTags"))?;
    Ok(out
        .tags()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect())
}

/// Ensures the role; returns its ARN and whether it was created now (IAM is eventually
/// consistent, so a new role may not be assumable for a few seconds). `None`: observing a
/// role that does not exist.
pub(super) async fn ensure_role(
    c: &AwsClients,
    d: &Desired,
    r: &RoleDesired<'_>,
    report: &mut PartReport,
) -> Result<Option<(String, bool)>> {
    let resource = format!("IAM role {}", r.name);
    let existing = found(
        c.iam
            .get_role()
            .role_name(r.name)
            .send()
            .await
            .map_err(api(SVC, "GetRole")),
    )?
    .and_then(|o| o.role);
    if existing.is_none() && d.observe {
        observe_missing(report, &resource);
        return Ok(None);
    }
    let Some(role) = existing else {
        let created = c
            .iam
            .create_role()
            .role_name(r.name)
            .description(&r.description)
            .assume_role_policy_document(r.trust.to_string())
            .set_permissions_boundary(d.permissions_boundary.clone())
            .set_tags(Some(iam_tags(&d.tags)?))
            .send()
            .await
            .map_err(api(SVC, "CreateRole"))?;
        let arn = created
            .role
            .map(|role| role.arn)
            .ok_or_else(|| unexpected(SVC, "CreateRole returned no role"))?;
        put_policy(c, r).await?;
        report.created(resource);
        return Ok(Some((arn, true)));
    };

    // GetRole includes the tags; ask separately only when it did not.
    let mut tags: BTreeMap<String, String> = role
        .tags()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect();
    if tags.is_empty() {
        tags = role_tags(c, r.name).await?;
    }
    check_owner(&resource, &tags, &d.owner)?;
    let mut repaired = Vec::new();
    let boundary = role
        .permissions_boundary()
        .and_then(|b| b.permissions_boundary_arn());
    if let Some(wanted) = &d.permissions_boundary
        && boundary != Some(wanted.as_str())
        && !d.observe
    {
        c.iam
            .put_role_permissions_boundary()
            .role_name(r.name)
            .permissions_boundary(wanted)
            .send()
            .await
            .map_err(api(SVC, "PutRolePermissionsBoundary"))?;
        repaired.push("PermissionsBoundary".to_string());
    }
    let trust_differs = !role
        .assume_role_policy_document()
        .is_some_and(|p| same_policy(p, &r.trust));
    if trust_differs && d.observe {
        repaired.push("AssumeRolePolicyDocument".to_string());
    } else if trust_differs {
        c.iam
            .update_assume_role_policy()
            .role_name(r.name)
            .policy_document(r.trust.to_string())
            .send()
            .await
            .map_err(api(SVC, "UpdateAssumeRolePolicy"))?;
        repaired.push("AssumeRolePolicyDocument".to_string());
    }
    // The inline policy changes only by hand (or with the spec): compared again when the
    // window ends. The role id tells a recreated role apart.
    let policy_id = format!("{}/policy", role.role_id());
    let wanted = r.policy.to_string();
    if !settled(c, d, &policy_id, &wanted) {
        let policy = found(
            c.iam
                .get_role_policy()
                .role_name(r.name)
                .policy_name(INLINE_POLICY)
                .send()
                .await
                .map_err(api(SVC, "GetRolePolicy")),
        )?;
        if !policy.is_some_and(|p| same_policy(&p.policy_document, &r.policy)) {
            if !d.observe {
                put_policy(c, r).await?;
            }
            repaired.push(format!("inline policy {INLINE_POLICY}"));
        }
        settle(c, d, &policy_id, &wanted);
    }
    let missing = missing_tags(&d.tags, &tags);
    if !missing.is_empty() && !d.observe {
        c.iam
            .tag_role()
            .role_name(r.name)
            .set_tags(Some(iam_tags(&missing)?))
            .send()
            .await
            .map_err(api(SVC, "TagRole"))?;
    }
    repaired.extend(describe(&missing));
    report.repaired(&resource, &repaired);
    Ok(Some((role.arn, false)))
}

async fn put_policy(c: &AwsClients, r: &RoleDesired<'_>) -> Result<()> {
    c.iam
        .put_role_policy()
        .role_name(r.name)
        .policy_name(INLINE_POLICY)
        .policy_document(r.policy.to_string())
        .send()
        .await
        .map_err(api(SVC, "PutRolePolicy"))?;
    Ok(())
}

/// Deletes a role we own: its inline and attached policies first, as IAM requires.
pub(super) async fn delete_role(
    c: &AwsClients,
    d: &Desired,
    name: &str,
    report: &mut DeleteReport,
) -> Result<()> {
    let resource = format!("IAM role {name}");
    let Some(tags) = found(role_tags(c, name).await)? else {
        return Ok(());
    };
    if let Err(e) = check_owner(&resource, &tags, &d.owner) {
        report.retained.push(e.to_string());
        return Ok(());
    }
    let inline = found(
        c.iam
            .list_role_policies()
            .role_name(name)
            .send()
            .await
            .map_err(api(SVC, "ListRolePolicies")),
    )?;
    for policy in inline.map(|o| o.policy_names).unwrap_or_default() {
        found(
            c.iam
                .delete_role_policy()
                .role_name(name)
                .policy_name(policy)
                .send()
                .await
                .map_err(api(SVC, "DeleteRolePolicy")),
        )?;
    }
    let attached = found(
        c.iam
            .list_attached_role_policies()
            .role_name(name)
            .send()
            .await
            .map_err(api(SVC, "ListAttachedRolePolicies")),
    )?;
    for policy in attached
        .map(|o| o.attached_policies.unwrap_or_default())
        .unwrap_or_default()
    {
        if let Some(arn) = policy.policy_arn {
            found(
                c.iam
                    .detach_role_policy()
                    .role_name(name)
                    .policy_arn(arn)
                    .send()
                    .await
                    .map_err(api(SVC, "DetachRolePolicy")),
            )?;
        }
    }
    if found(
        c.iam
            .delete_role()
            .role_name(name)
            .send()
            .await
            .map_err(api(SVC, "DeleteRole")),
    )?
    .is_some()
    {
        report.deleted.push(resource);
    }
    Ok(())
}

/// The worker's policy (always, into the outputs) and, with an OIDC provider, its role.
pub(super) async fn ensure_worker(
    c: &AwsClients,
    d: &Desired,
    out: &mut Outputs,
    report: &mut PartReport,
) -> Result<()> {
    const PART: &str = "WorkerIdentity";
    let policy = worker_policy(&WorkerResources {
        queue_arn: need(&out.queue_arn, PART, "the queue ARN")?,
        dead_letter_queue_arn: need(
            &out.dead_letter_queue_arn,
            PART,
            "the dead-letter queue ARN",
        )?,
        table_arn: need(&out.table_arn, PART, "the table ARN")?,
        queue_key_arn: need(&out.queue_key_arn, PART, "the SQS key ARN")?,
        table_key_arn: need(&out.table_key_arn, PART, "the DynamoDB key ARN")?,
        metrics_namespace: &d.alerts.metrics_namespace,
    });
    out.worker_policy = Some(policy.to_string());
    if let Some(arn) = &d.worker.role_arn {
        out.worker_role_arn = Some(arn.clone());
        return Ok(());
    }
    let Some(provider) = &d.worker.oidc_provider_arn else {
        out.worker_role_arn = None;
        return Ok(());
    };
    let issuer = oidc_issuer(provider).ok_or_else(|| {
        Error::InvalidSpec(format!(
            "the OIDC provider ARN {provider:?} has no oidc-provider/<issuer> part"
        ))
    })?;
    let role = RoleDesired {
        name: &d.names.worker_role,
        description: format!("tracking-worker of TrackingPipeline {}", d.owner.key()),
        trust: worker_trust(
            provider,
            issuer,
            &d.owner.namespace,
            &d.worker.service_account,
        ),
        policy,
    };
    let Some((arn, _)) = ensure_role(c, d, &role, report).await? else {
        return Ok(());
    };
    out.worker_role_arn = Some(arn);
    Ok(())
}

pub(super) async fn delete_worker(
    c: &AwsClients,
    d: &Desired,
    report: &mut DeleteReport,
) -> Result<()> {
    // Also when the operator lost its OIDC setting since: the role carries our tags.
    delete_role(c, d, &d.names.worker_role, report).await
}

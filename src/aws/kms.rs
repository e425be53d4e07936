//! The two customer managed keys: one for both queues (and the alert topic), one for the
//! table. Found by alias; rotation, key policy, enabled state and tags are kept as desired.
//! Deletion schedules the key for deletion after the spec's window and removes the alias.

use std::collections::BTreeMap;

use aws_sdk_kms::types::{KeyMetadata, KeyState, Tag};
use serde_json::Value;

use super::adopt::{check_owner_or_adopt, observe_missing, refuse_missing, retained_on_delete};
use super::arn::Account;
use super::desired::Desired;
use super::error::{api, unexpected};
use super::policy::{key_policy, same_policy};
use super::tags::{check_owner, describe, missing_tags};
use super::verified::{settle, settled, tags_of};
use super::{AwsClients, DeleteReport, Outputs, PartReport, Result, found};

const SVC: &str = "KMS";
/// Services that use the SQS key on the account's behalf: CloudWatch publishes alarms to the
/// topic encrypted with it.
const QUEUE_KEY_SERVICES: &[&str] = &["cloudwatch.amazonaws.com"];

struct KeyDesired<'a> {
    alias: &'a str,
    description: String,
    policy: Value,
}

fn desired_keys<'a>(d: &'a Desired, account: &Account) -> [KeyDesired<'a>; 2] {
    [
        KeyDesired {
            alias: &d.names.queue_key_alias,
            description: format!(
                "SQS and SNS encryption for TrackingPipeline {}",
                d.owner.key()
            ),
            policy: key_policy(account, QUEUE_KEY_SERVICES),
        },
        KeyDesired {
            alias: &d.names.table_key_alias,
            description: format!("DynamoDB encryption for TrackingPipeline {}", d.owner.key()),
            policy: key_policy(account, &[]),
        },
    ]
}

pub(super) async fn ensure(
    c: &AwsClients,
    d: &Desired,
    out: &mut Outputs,
    report: &mut PartReport,
) -> Result<()> {
    let account = c.account().await?.clone();
    let [queue_key, table_key] = desired_keys(d, &account);
    ensure_key(c, d, &queue_key, &mut out.queue_key_arn, report).await?;
    ensure_key(c, d, &table_key, &mut out.table_key_arn, report).await
}

async fn describe_key(c: &AwsClients, key_id: &str) -> Result<Option<KeyMetadata>> {
    let out = found(
        c.kms
            .describe_key()
            .key_id(key_id)
            .send()
            .await
            .map_err(api(SVC, "DescribeKey")),
    )?;
    Ok(out.and_then(|o| o.key_metadata))
}

/// A key's tags (a key carries at most 50, one page).
async fn key_tags(c: &AwsClients, key_id: &str) -> Result<BTreeMap<String, String>> {
    let out = c
        .kms
        .list_resource_tags()
        .key_id(key_id)
        .send()
        .await
        .map_err(api(SVC, "ListResourceTags"))?;
    Ok(out
        .tags()
        .iter()
        .map(|t| (t.tag_key().to_string(), t.tag_value().to_string()))
        .collect())
}

async fn ensure_key(
    c: &AwsClients,
    d: &Desired,
    k: &KeyDesired<'_>,
    // The key's ARN in the outputs: read to find a key whose alias is gone, written once
    // the new key has its alias (a key whose alias cannot be created is scheduled for
    // deletion at once, so it cannot become an orphan).
    slot: &mut Option<String>,
    report: &mut PartReport,
) -> Result<()> {
    let resource = format!("KMS key {}", k.alias);
    let mut meta = describe_key(c, k.alias).await?;
    let alias_missing = meta.is_none();
    if meta.is_none() {
        // The alias may have been removed out of band while the key we recorded still exists.
        if let Some(arn) = slot.as_deref() {
            meta = describe_key(c, arn)
                .await?
                .filter(|m| m.key_state() != Some(&KeyState::PendingDeletion));
        }
    }
    let adopted = d.adoption.contains(k.alias);
    if meta.is_none() && !adopted {
        // A key created by a pass that died before its alias existed (or before the status
        // was written): take it rather than creating a second one.
        // The alias is created below, as for a key whose alias was removed.
        meta = find_orphan(c, d, k).await?;
    }
    if meta.is_none() {
        refuse_missing(d, k.alias, &resource)?;
        if d.observe {
            observe_missing(report, &resource);
            return Ok(());
        }
    }
    let Some(meta) = meta else {
        let created = c
            .kms
            .create_key()
            .description(&k.description)
            .policy(k.policy.to_string())
            .set_tags(Some(kms_tags(&d.tags)?))
            .send()
            .await
            .map_err(api(SVC, "CreateKey"))?;
        let meta = created
            .key_metadata
            .ok_or_else(|| unexpected(SVC, "CreateKey returned no key metadata"))?;
        let aliased = c
            .kms
            .create_alias()
            .alias_name(k.alias)
            .target_key_id(meta.key_id())
            .send()
            .await
            .map_err(api(SVC, "CreateAlias"));
        if let Err(err) = aliased {
            // A key nobody can find by its alias would be an orphan billed every month: take
            // it back (the shortest window) and let the next pass create a fresh one.
            let _ = c
                .kms
                .schedule_key_deletion()
                .key_id(meta.key_id())
                .pending_window_in_days(7)
                .send()
                .await;
            return Err(err);
        }
        *slot = Some(arn_of(&meta)?);
        if d.keys.rotation {
            c.kms
                .enable_key_rotation()
                .key_id(meta.key_id())
                .send()
                .await
                .map_err(api(SVC, "EnableKeyRotation"))?;
        }
        report.created(resource);
        return Ok(());
    };

    let key_id = meta.key_id().to_string();
    let actual_tags = tags_of(c, d, &key_id, || key_tags(c, &key_id)).await?;
    check_owner_or_adopt(d, k.alias, &resource, &actual_tags)?;
    *slot = Some(arn_of(&meta)?);

    let mut repaired = Vec::new();
    // Adopted by ARN: the user's key has whatever aliases it has; none is ours to make.
    let alias_missing = alias_missing && k.alias.starts_with("alias/");
    if alias_missing && d.observe {
        repaired.push("alias".to_string());
    } else if alias_missing {
        c.kms
            .create_alias()
            .alias_name(k.alias)
            .target_key_id(&key_id)
            .send()
            .await
            .map_err(api(SVC, "CreateAlias"))?;
        repaired.push("alias".to_string());
    }
    match meta.key_state() {
        Some(KeyState::PendingDeletion | KeyState::Disabled) if d.observe => {
            repaired.push("Enabled".into());
        }
        Some(KeyState::PendingDeletion) if adopted => {
            // Someone scheduled the user's key for deletion: that is theirs to undo.
            return Err(crate::error::Error::AdoptionRefused {
                resource,
                attribute: "KeyState".into(),
                message: "the key is pending deletion; cancel its deletion first".into(),
            });
        }
        Some(KeyState::PendingDeletion) => {
            // Our own key scheduled for deletion by an earlier Delete: take it back.
            c.kms
                .cancel_key_deletion()
                .key_id(&key_id)
                .send()
                .await
                .map_err(api(SVC, "CancelKeyDeletion"))?;
            enable_key(c, &key_id).await?;
            repaired.push("pending deletion cancelled".into());
        }
        Some(KeyState::Disabled) => {
            enable_key(c, &key_id).await?;
            repaired.push("Enabled".into());
        }
        _ => {}
    }

    // Rotation and policy change only by hand: compared again when the window ends.
    let settings_id = format!("{key_id}/settings");
    let settings = (d.keys.rotation, k.policy.to_string());
    if !settled(c, d, &settings_id, &settings) {
        let rotation = c
            .kms
            .get_key_rotation_status()
            .key_id(&key_id)
            .send()
            .await
            .map_err(api(SVC, "GetKeyRotationStatus"))?
            .key_rotation_enabled();
        if rotation != d.keys.rotation && d.observe {
            repaired.push("KeyRotationEnabled".into());
        } else if rotation != d.keys.rotation {
            if d.keys.rotation {
                c.kms
                    .enable_key_rotation()
                    .key_id(&key_id)
                    .send()
                    .await
                    .map_err(api(SVC, "EnableKeyRotation"))?;
            } else {
                c.kms
                    .disable_key_rotation()
                    .key_id(&key_id)
                    .send()
                    .await
                    .map_err(api(SVC, "DisableKeyRotation"))?;
            }
            repaired.push("KeyRotationEnabled".into());
        }

        let policy = c
            .kms
            .get_key_policy()
            .key_id(&key_id)
            .policy_name("default")
            .send()
            .await
            .map_err(api(SVC, "GetKeyPolicy"))?;
        if !policy.policy().is_some_and(|p| same_policy(p, &k.policy)) {
            if !d.observe {
                c.kms
                    .put_key_policy()
                    .key_id(&key_id)
                    .policy_name("default")
                    .policy(k.policy.to_string())
                    .send()
                    .await
                    .map_err(api(SVC, "PutKeyPolicy"))?;
            }
            repaired.push("KeyPolicy".into());
        }
        settle(c, d, &settings_id, &settings);
    }

    let missing = missing_tags(&d.tags, &actual_tags);
    if !missing.is_empty() && !d.observe {
        c.kms
            .tag_resource()
            .key_id(&key_id)
            .set_tags(Some(kms_tags(&missing)?))
            .send()
            .await
            .map_err(api(SVC, "TagResource"))?;
    }
    repaired.extend(describe(&missing));
    report.repaired(&resource, &repaired);
    Ok(())
}

/// An enabled key without an alias, tagged with this pipeline's uid and carrying this key's
/// description. Only keys no alias points at are read, so the cost stays with the (few)
/// unaliased keys of the account, and only when a key is about to be created.
async fn find_orphan(
    c: &AwsClients,
    d: &Desired,
    k: &KeyDesired<'_>,
) -> Result<Option<KeyMetadata>> {
    let mut aliased = std::collections::HashSet::new();
    let mut marker = None;
    loop {
        let page = c
            .kms
            .list_aliases()
            .set_marker(marker)
            .send()
            .await
            .map_err(api(SVC, "ListAliases"))?;
        aliased.extend(
            page.aliases()
                .iter()
                .filter_map(|a| a.target_key_id().map(str::to_string)),
        );
        marker = page.next_marker().map(str::to_string);
        if !page.truncated() || marker.is_none() {
            break;
        }
    }
    let mut marker = None;
    loop {
        let page = c
            .kms
            .list_keys()
            .set_marker(marker)
            .send()
            .await
            .map_err(api(SVC, "ListKeys"))?;
        for key in page.keys() {
            let Some(id) = key.key_id() else { continue };
            if aliased.contains(id) {
                continue;
            }
            let Some(tags) = found(
                c.kms
                    .list_resource_tags()
                    .key_id(id)
                    .send()
                    .await
                    .map_err(api(SVC, "ListResourceTags")),
            )?
            else {
                continue;
            };
            let ours = tags
                .tags()
                .iter()
                .any(|t| t.tag_key() == super::tags::PIPELINE_UID && t.tag_value() == d.owner.uid);
            if !ours {
                continue;
            }
            if let Some(meta) = describe_key(c, id).await?
                && meta.description() == Some(k.description.as_str())
                && meta.key_state() == Some(&KeyState::Enabled)
            {
                return Ok(Some(meta));
            }
        }
        marker = page.next_marker().map(str::to_string);
        if !page.truncated() || marker.is_none() {
            return Ok(None);
        }
    }
}

async fn enable_key(c: &AwsClients, key_id: &str) -> Result<()> {
    c.kms
        .enable_key()
        .key_id(key_id)
        .send()
        .await
        .map_err(api(SVC, "EnableKey"))?;
    Ok(())
}

fn arn_of(meta: &KeyMetadata) -> Result<String> {
    meta.arn()
        .map(str::to_string)
        .ok_or_else(|| unexpected(SVC, format!("key {} has no ARN", meta.key_id())))
}

fn kms_tags(tags: &BTreeMap<String, String>) -> Result<Vec<Tag>> {
    tags.iter()
        .map(|(k, v)| {
            Tag::builder()
                .tag_key(k)
                .tag_value(v)
                .build()
                .map_err(|e| unexpected(SVC, e.to_string()))
        })
        .collect()
}

/// Keys that must outlive this deletion, with why.
#[derive(Clone, Debug, Default)]
pub(super) struct Keep {
    pub queue_key: Option<String>,
    pub table_key: Option<String>,
}

pub(super) async fn delete(
    c: &AwsClients,
    d: &Desired,
    out: &Outputs,
    keep: &Keep,
    report: &mut DeleteReport,
) -> Result<()> {
    let keys = [
        (
            &d.names.queue_key_alias,
            out.queue_key_arn.as_deref(),
            &keep.queue_key,
        ),
        (
            &d.names.table_key_alias,
            out.table_key_arn.as_deref(),
            &keep.table_key,
        ),
    ];
    for (alias, known_arn, kept_because) in keys {
        let resource = format!("KMS key {alias}");
        if let Some(why) = retained_on_delete(d, alias, &resource) {
            report.retained.push(why);
            continue;
        }
        if let Some(why) = kept_because {
            report
                .retained
                .push(format!("{resource}: kept because {why}"));
            continue;
        }
        let by_alias = describe_key(c, alias).await?;
        let meta = match (&by_alias, known_arn) {
            (Some(m), _) => Some(m.clone()),
            (None, Some(arn)) => describe_key(c, arn).await?,
            (None, None) => None,
        };
        let Some(meta) = meta else { continue };
        let key_id = meta.key_id().to_string();
        let tags = key_tags(c, &key_id).await?;
        if let Err(e) = check_owner(&resource, &tags, &d.owner) {
            report.retained.push(e.to_string());
            continue;
        }
        if by_alias.is_some() && alias.starts_with("alias/") {
            found(
                c.kms
                    .delete_alias()
                    .alias_name(alias)
                    .send()
                    .await
                    .map_err(api(SVC, "DeleteAlias")),
            )?;
        }
        if meta.key_state() != Some(&KeyState::PendingDeletion) {
            c.kms
                .schedule_key_deletion()
                .key_id(&key_id)
                .pending_window_in_days(d.keys.deletion_window_days)
                .send()
                .await
                .map_err(api(SVC, "ScheduleKeyDeletion"))?;
            report.deleted.push(format!(
                "{resource} (scheduled for deletion in {} days)",
                d.keys.deletion_window_days
            ));
        }
    }
    Ok(())
}

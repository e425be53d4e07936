//! The audit table: pk `tracking_id`, sk `timestamp` (both S), on-demand, SSE with the
//! DynamoDB key, GSI `StatusIndex` (`status`, `timestamp`), TTL on `ttl`, point-in-time
//! recovery and deletion protection as the spec says. Key schema cannot change in place;
//! everything else is repaired when it drifts.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction,
    DeleteGlobalSecondaryIndexAction, GlobalSecondaryIndex, GlobalSecondaryIndexUpdate,
    KeySchemaElement, KeyType, PointInTimeRecoverySpecification, PointInTimeRecoveryStatus,
    Projection, ProjectionType, ScalarAttributeType, SseSpecification, SseStatus, SseType,
    TableDescription, TableStatus, Tag, TimeToLiveSpecification, TimeToLiveStatus,
};

use super::adopt::{
    check_owner_or_adopt, key_schema_problems, observe_missing, refuse_missing, retained_on_delete,
};
use super::desired::{Desired, Table};
use super::error::{api, unexpected};
use super::tags::{describe, missing_tags};
use super::verified::{settle, settled, tags_of};
use super::{AwsClients, DeleteReport, Outputs, PartReport, Result, found, need};

const SVC: &str = "DynamoDB";
pub const PARTITION_KEY: &str = "tracking_id";
pub const SORT_KEY: &str = "timestamp";
pub const STATUS_INDEX: &str = "StatusIndex";
pub const STATUS_ATTRIBUTE: &str = "status";
pub const TTL_ATTRIBUTE: &str = "ttl";
const BACKUPS_UNAVAILABLE: &str = "ContinuousBackupsUnavailableException";

/// What must change on an existing table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableDrift {
    pub billing_mode: bool,
    pub deletion_protection: bool,
    pub encryption: bool,
    pub create_status_index: bool,
    pub delete_status_index: bool,
}

impl TableDrift {
    /// The attributes changed by the first UpdateTable of a pass (the index waits).
    pub fn attributes_except_index(&self) -> Vec<String> {
        TableDrift {
            create_status_index: false,
            delete_status_index: false,
            ..self.clone()
        }
        .attributes()
    }

    pub fn attributes(&self) -> Vec<String> {
        [
            (self.billing_mode, "BillingMode"),
            (self.deletion_protection, "DeletionProtectionEnabled"),
            (self.encryption, "SSESpecification"),
            (
                self.create_status_index || self.delete_status_index,
                "GlobalSecondaryIndex StatusIndex",
            ),
        ]
        .iter()
        .filter(|(changed, _)| *changed)
        .map(|(_, name)| name.to_string())
        .collect()
    }
}

pub fn table_drift(desired: &Table, key_arn: &str, actual: &TableDescription) -> TableDrift {
    let on_demand = actual
        .billing_mode_summary()
        .and_then(|b| b.billing_mode())
        .is_some_and(|m| *m == BillingMode::PayPerRequest);
    let sse = actual.sse_description();
    let encrypted = sse.is_some_and(|s| {
        matches!(
            s.status(),
            Some(SseStatus::Enabled | SseStatus::Enabling | SseStatus::Updating)
        ) && s.sse_type() == Some(&SseType::Kms)
            && s.kms_master_key_arn() == Some(key_arn)
    });
    let has_index = actual
        .global_secondary_indexes()
        .iter()
        .any(|i| i.index_name() == Some(STATUS_INDEX));
    TableDrift {
        billing_mode: !on_demand,
        deletion_protection: actual.deletion_protection_enabled().unwrap_or(false)
            != desired.deletion_protection,
        encryption: !encrypted,
        create_status_index: desired.status_index && !has_index,
        delete_status_index: !desired.status_index && has_index,
    }
}

fn build<T, E: std::fmt::Display>(r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(|e| unexpected(SVC, e.to_string()))
}

fn attribute(name: &str) -> Result<AttributeDefinition> {
    build(
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build(),
    )
}

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement> {
    build(
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build(),
    )
}

fn status_index() -> Result<GlobalSecondaryIndex> {
    build(
        GlobalSecondaryIndex::builder()
            .index_name(STATUS_INDEX)
            .key_schema(key(STATUS_ATTRIBUTE, KeyType::Hash)?)
            .key_schema(key(SORT_KEY, KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            )
            .build(),
    )
}

fn sse(key_arn: &str) -> SseSpecification {
    SseSpecification::builder()
        .enabled(true)
        .sse_type(SseType::Kms)
        .kms_master_key_id(key_arn)
        .build()
}

fn dynamo_tags(tags: &BTreeMap<String, String>) -> Result<Vec<Tag>> {
    tags.iter()
        .map(|(k, v)| build(Tag::builder().key(k).value(v).build()))
        .collect()
}

async fn describe_table(c: &AwsClients, name: &str) -> Result<Option<TableDescription>> {
    let out = found(
        c.dynamodb
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(api(SVC, "DescribeTable")),
    )?;
    Ok(out.and_then(|o| o.table))
}

async fn table_tags(c: &AwsClients, arn: &str) -> Result<BTreeMap<String, String>> {
    let mut tags = BTreeMap::new();
    let mut token = None;
    loop {
        let page = c
            .dynamodb
            .list_tags_of_resource()
            .resource_arn(arn)
            .set_next_token(token)
            .send()
            .await
            .map_err(api(SVC, "ListTagsOfResource"))?;
        tags.extend(
            page.tags()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string())),
        );
        token = page.next_token;
        if token.is_none() {
            return Ok(tags);
        }
    }
}

pub(super) async fn ensure(
    c: &AwsClients,
    d: &Desired,
    out: &mut Outputs,
    report: &mut PartReport,
) -> Result<()> {
    let key_arn = need(&out.table_key_arn, "Table", "the DynamoDB key ARN")?.to_string();
    let name = &d.names.table;
    let resource = format!("DynamoDB table {name}");
    let mut repaired = Vec::new();
    let (table, fresh) = match describe_table(c, name).await? {
        None if d.observe || d.adoption.contains(name) => {
            refuse_missing(d, name, &resource)?;
            observe_missing(report, &resource);
            return Ok(());
        }
        None => {
            let mut create = c
                .dynamodb
                .create_table()
                .table_name(name)
                .attribute_definitions(attribute(PARTITION_KEY)?)
                .attribute_definitions(attribute(SORT_KEY)?)
                .key_schema(key(PARTITION_KEY, KeyType::Hash)?)
                .key_schema(key(SORT_KEY, KeyType::Range)?)
                .billing_mode(BillingMode::PayPerRequest)
                .sse_specification(sse(&key_arn))
                .deletion_protection_enabled(d.table.deletion_protection)
                .set_tags(Some(dynamo_tags(&d.tags)?));
            if d.table.status_index {
                create = create
                    .attribute_definitions(attribute(STATUS_ATTRIBUTE)?)
                    .global_secondary_indexes(status_index()?);
            }
            let created = create.send().await.map_err(api(SVC, "CreateTable"))?;
            report.created(&resource);
            let table = created
                .table_description
                .ok_or_else(|| unexpected(SVC, "CreateTable returned no table description"))?;
            (table, true)
        }
        Some(table) => {
            if d.adoption.contains(name)
                && let Some(problem) = key_schema_problems(&table).into_iter().next()
            {
                // A key schema is fixed at creation: only a new table (and a copy of every
                // item) could change it, which adoption never does.
                let (attribute, message) = problem.split_once(": ").unwrap_or(("KeySchema", ""));
                return Err(crate::error::Error::AdoptionRefused {
                    resource,
                    attribute: attribute.to_string(),
                    message: message.to_string(),
                });
            }
            (table, false)
        }
    };
    let arn = table
        .table_arn()
        .ok_or_else(|| unexpected(SVC, format!("{resource} has no ARN")))?
        .to_string();
    let created_at = table.creation_date_time().map(|t| t.secs());
    // The state first: a table that is not ACTIVE takes no writes, and its tags may not be
    // visible yet.
    if !fresh && table.table_status() != Some(&TableStatus::Active) {
        let status = table
            .table_status()
            .map(|s| s.as_str())
            .unwrap_or("unknown");
        report.not_ready("TableNotActive", format!("{resource} is {status}"));
        return Ok(());
    }
    if fresh {
        out.table_name = Some(name.clone());
        out.table_arn = Some(arn.clone());
    } else {
        let id = format!("{arn}@{}", created_at.unwrap_or_default());
        let tags = tags_of(c, d, &id, || table_tags(c, &arn)).await?;
        // CreateTable's tags become visible some time after the table (eventual
        // consistency): on a table we recorded, no tags means "not yet", not someone else's.
        if tags.is_empty() && out.table_arn.as_deref() == Some(arn.as_str()) {
            report.not_ready(
                "TableTagsPending",
                format!("{resource}: AWS does not show the tags of the new table yet"),
            );
            return Ok(());
        }
        check_owner_or_adopt(d, name, &resource, &tags)?;
        out.table_name = Some(name.clone());
        out.table_arn = Some(arn.clone());
        let missing = missing_tags(&d.tags, &tags);
        if !missing.is_empty() && !d.observe {
            c.dynamodb
                .tag_resource()
                .resource_arn(&arn)
                .set_tags(Some(dynamo_tags(&missing)?))
                .send()
                .await
                .map_err(api(SVC, "TagResource"))?;
        }
        repaired.extend(describe(&missing));
    }
    // PITR, TTL and table updates need an ACTIVE table.
    if table.table_status() != Some(&TableStatus::Active) {
        report.repaired(&resource, &repaired);
        let status = table
            .table_status()
            .map(|s| s.as_str())
            .unwrap_or("unknown");
        report.not_ready("TableNotActive", format!("{resource} is {status}"));
        return Ok(());
    }
    if !fresh {
        repaired.extend(repair_table(c, d, name, &key_arn, &table, report).await?);
    }
    // PITR and TTL change only by hand: compared again when the window ends.
    let settings_id = format!("{arn}@{}/pitr-ttl", created_at.unwrap_or_default());
    let pitr = d.table.point_in_time_recovery;
    if !settled(c, d, &settings_id, &pitr) {
        let settings = ensure_pitr_and_ttl(c, d, name, report).await?;
        if !fresh {
            repaired.extend(settings);
        }
        // Backups not available yet on a new table: look again next pass.
        if report.is_ready() {
            settle(c, d, &settings_id, &pitr);
        }
    }
    report.repaired(&resource, &repaired);
    Ok(())
}

async fn repair_table(
    c: &AwsClients,
    d: &Desired,
    name: &str,
    key_arn: &str,
    table: &TableDescription,
    report: &mut PartReport,
) -> Result<Vec<String>> {
    let drift = table_drift(&d.table, key_arn, table);
    if drift == TableDrift::default() {
        return Ok(Vec::new());
    }
    if d.observe {
        return Ok(drift.attributes());
    }
    if drift.billing_mode || drift.deletion_protection || drift.encryption {
        let mut update = c.dynamodb.update_table().table_name(name);
        if drift.billing_mode {
            update = update.billing_mode(BillingMode::PayPerRequest);
        }
        if drift.deletion_protection {
            update = update.deletion_protection_enabled(d.table.deletion_protection);
        }
        if drift.encryption {
            // moto 5.2 ignores SSESpecification on UpdateTable; real DynamoDB applies it.
            update = update.sse_specification(sse(key_arn));
        }
        update.send().await.map_err(api(SVC, "UpdateTable"))?;
        // The table is UPDATING now and refuses another UpdateTable: the index change, if
        // any, is the next pass's.
        if drift.create_status_index || drift.delete_status_index {
            report.not_ready(
                "TableUpdating",
                format!(
                    "DynamoDB table {name}: the index change follows once the table is ACTIVE again"
                ),
            );
        }
        return Ok(drift.attributes_except_index());
    }
    // DynamoDB allows one index change per UpdateTable, after the others have applied.
    let index_update = if drift.create_status_index {
        Some(
            GlobalSecondaryIndexUpdate::builder()
                .create(build(
                    CreateGlobalSecondaryIndexAction::builder()
                        .index_name(STATUS_INDEX)
                        .key_schema(key(STATUS_ATTRIBUTE, KeyType::Hash)?)
                        .key_schema(key(SORT_KEY, KeyType::Range)?)
                        .projection(
                            Projection::builder()
                                .projection_type(ProjectionType::All)
                                .build(),
                        )
                        .build(),
                )?)
                .build(),
        )
    } else if drift.delete_status_index {
        Some(
            GlobalSecondaryIndexUpdate::builder()
                .delete(build(
                    DeleteGlobalSecondaryIndexAction::builder()
                        .index_name(STATUS_INDEX)
                        .build(),
                )?)
                .build(),
        )
    } else {
        None
    };
    if let Some(index_update) = index_update {
        let mut update = c.dynamodb.update_table().table_name(name);
        if drift.create_status_index {
            // Only the attributes the new index uses; DynamoDB refuses definitions no key
            // or index uses (so a delete sends none).
            update = update
                .attribute_definitions(attribute(SORT_KEY)?)
                .attribute_definitions(attribute(STATUS_ATTRIBUTE)?);
        }
        update
            .global_secondary_index_updates(index_update)
            .send()
            .await
            .map_err(api(SVC, "UpdateTable"))?;
    }
    Ok(drift.attributes())
}

async fn ensure_pitr_and_ttl(
    c: &AwsClients,
    d: &Desired,
    name: &str,
    report: &mut PartReport,
) -> Result<Vec<String>> {
    let mut changed = Vec::new();
    let backups = c
        .dynamodb
        .describe_continuous_backups()
        .table_name(name)
        .send()
        .await
        .map_err(api(SVC, "DescribeContinuousBackups"))?;
    let pitr = backups
        .continuous_backups_description()
        .and_then(|b| b.point_in_time_recovery_description())
        .and_then(|p| p.point_in_time_recovery_status())
        .is_some_and(|s| *s == PointInTimeRecoveryStatus::Enabled);
    if pitr != d.table.point_in_time_recovery && d.observe {
        changed.push("PointInTimeRecovery".to_string());
    } else if pitr != d.table.point_in_time_recovery {
        let updated = c
            .dynamodb
            .update_continuous_backups()
            .table_name(name)
            .point_in_time_recovery_specification(build(
                PointInTimeRecoverySpecification::builder()
                    .point_in_time_recovery_enabled(d.table.point_in_time_recovery)
                    .build(),
            )?)
            .send()
            .await
            .map_err(api(SVC, "UpdateContinuousBackups"));
        match updated {
            Ok(_) => changed.push("PointInTimeRecovery".to_string()),
            // Backups are not ready on a table that has just turned ACTIVE: later, not a
            // failure.
            Err(e) if e.aws_code() == Some(BACKUPS_UNAVAILABLE) => report.not_ready(
                "ContinuousBackupsUnavailable",
                format!("DynamoDB table {name}: point-in-time recovery cannot be set yet"),
            ),
            Err(e) => return Err(e),
        }
    }

    let ttl = c
        .dynamodb
        .describe_time_to_live()
        .table_name(name)
        .send()
        .await
        .map_err(api(SVC, "DescribeTimeToLive"))?;
    let ttl_ok = ttl.time_to_live_description().is_some_and(|t| {
        matches!(
            t.time_to_live_status(),
            Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
        ) && t.attribute_name() == Some(TTL_ATTRIBUTE)
    });
    if !ttl_ok && d.observe {
        changed.push("TimeToLive".to_string());
    } else if !ttl_ok {
        c.dynamodb
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(build(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(TTL_ATTRIBUTE)
                    .build(),
            )?)
            .send()
            .await
            .map_err(api(SVC, "UpdateTimeToLive"))?;
        changed.push("TimeToLive".to_string());
    }
    Ok(changed)
}

/// Whether the table is gone or stays (its key must stay with it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Deleted {
    Gone,
    Kept,
}

pub(super) async fn delete(
    c: &AwsClients,
    d: &Desired,
    report: &mut DeleteReport,
) -> Result<Deleted> {
    let name = &d.names.table;
    let resource = format!("DynamoDB table {name}");
    if let Some(why) = retained_on_delete(d, name, &resource) {
        report.retained.push(why);
        return Ok(Deleted::Kept);
    }
    let Some(table) = describe_table(c, name).await? else {
        return Ok(Deleted::Gone);
    };
    let Some(arn) = table.table_arn() else {
        return Err(unexpected(SVC, format!("{resource} has no ARN")));
    };
    let Some(tags) = found(table_tags(c, arn).await)? else {
        return Ok(Deleted::Gone);
    };
    if let Err(e) = check_owner_or_adopt(d, name, &resource, &tags) {
        // Someone else's table is not encrypted with our key: ours can go.
        report.retained.push(e.to_string());
        return Ok(Deleted::Gone);
    }
    if table.deletion_protection_enabled() == Some(true) {
        report.retained.push(format!(
            "{resource}: deletion protection is enabled (spec.table.deletionProtection)"
        ));
        return Ok(Deleted::Kept);
    }
    let deleted = c
        .dynamodb
        .delete_table()
        .table_name(name)
        .send()
        .await
        .map_err(api(SVC, "DeleteTable"));
    match deleted {
        Ok(_) => report.deleted.push(resource),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e),
    }
    Ok(Deleted::Gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::{
        BillingModeSummary, GlobalSecondaryIndexDescription, SseDescription,
    };

    fn desired() -> Table {
        Table {
            point_in_time_recovery: true,
            status_index: true,
            deletion_protection: false,
        }
    }

    fn actual() -> TableDescription {
        TableDescription::builder()
            .billing_mode_summary(
                BillingModeSummary::builder()
                    .billing_mode(BillingMode::PayPerRequest)
                    .build(),
            )
            .sse_description(
                SseDescription::builder()
                    .status(SseStatus::Enabled)
                    .sse_type(SseType::Kms)
                    .kms_master_key_arn("arn:k")
                    .build(),
            )
            .global_secondary_indexes(
                GlobalSecondaryIndexDescription::builder()
                    .index_name(STATUS_INDEX)
                    .build(),
            )
            .deletion_protection_enabled(false)
            .build()
    }

    #[test]
    fn no_drift_on_the_desired_table() {
        assert_eq!(
            table_drift(&desired(), "arn:k", &actual()),
            TableDrift::default()
        );
    }

    #[test]
    fn drift_is_detected_per_attribute() {
        let drift = table_drift(
            &Table {
                deletion_protection: true,
                ..desired()
            },
            "arn:other",
            &actual(),
        );
        assert_eq!(
            drift.attributes(),
            vec![
                "DeletionProtectionEnabled".to_string(),
                "SSESpecification".to_string()
            ]
        );
        let no_index = TableDescription::builder().build();
        let drift = table_drift(&desired(), "arn:k", &no_index);
        assert!(drift.create_status_index && drift.billing_mode && drift.encryption);
    }
}

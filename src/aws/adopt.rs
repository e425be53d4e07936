//! Adoption and observe-only on the AWS side, as pure functions the resource modules call.
//!
//! Adoption is not a second loop: `spec.adopt` only replaces the names in [`Names`] ("find
//! by the name the user gave" instead of "find by our name"), and the ownership check lets
//! an adopted resource in when it carries no ownership tags yet (it gets them on the first
//! pass). An adopted resource that does not exist, or that could only be brought to the
//! spec by re-creating it, is refused: the operator never re-creates what it adopted.
//! Observe-only (`Desired::observe`) makes every module skip its writes and report what
//! it would have done; the controller turns that into the `InSync` condition.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_dynamodb::types::{KeyType, ScalarAttributeType, TableDescription};

use super::desired::Desired;
use super::error::Error;
use super::naming::Names;
use super::tags::{MANAGED_BY, check_owner};
use super::{Outputs, PartReport, Result};
use crate::api::{AdoptSpec, DeletionPolicy, Origin, ResourceStatus, Resources};

/// The resources named in `spec.adopt`, by the name the operator now uses for them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Adoption {
    names: BTreeSet<String>,
    /// `spec.adopt.deletionPolicy: Delete`: adopted resources go like created ones.
    pub delete: bool,
}

impl Adoption {
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The queue name of an SQS URL (`https://sqs.<region>.amazonaws.com/<account>/<name>`) or
/// a name as given.
pub fn queue_name(url_or_name: &str) -> String {
    url_or_name
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(url_or_name)
        .to_string()
}

/// The topic name of an SNS topic ARN (`arn:aws:sns:<region>:<account>:<name>`).
pub fn topic_name(arn: &str) -> String {
    arn.rsplit(':').next().unwrap_or(arn).to_string()
}

/// Replaces the operator's names with the adopted ones and records which they are.
pub fn adopt_names(names: &mut Names, spec: &AdoptSpec) -> Adoption {
    let mut adopted = BTreeSet::new();
    let mut take = |slot: &mut String, value: Option<String>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            *slot = v.clone();
            adopted.insert(v);
        }
    };
    take(&mut names.queue, spec.queue.as_deref().map(queue_name));
    take(
        &mut names.dead_letter_queue,
        spec.dead_letter_queue.as_deref().map(queue_name),
    );
    take(&mut names.table, spec.table.clone());
    take(&mut names.queue_key_alias, spec.queue_key.clone());
    take(&mut names.table_key_alias, spec.table_key.clone());
    take(&mut names.topic, spec.topic.as_deref().map(topic_name));
    take(&mut names.schedule, spec.schedule.clone());
    if let Some(a) = &spec.alarms {
        take(&mut names.alarm_queue_depth, a.queue_depth.clone());
        take(&mut names.alarm_oldest_message, a.oldest_message.clone());
        take(&mut names.alarm_worker_errors, a.worker_errors.clone());
        take(
            &mut names.alarm_worker_throttles,
            a.worker_throttles.clone(),
        );
        take(&mut names.alarm_dead_letters, a.dead_letters.clone());
    }
    Adoption {
        names: adopted,
        delete: spec.deletion_policy == DeletionPolicy::Delete,
    }
}

/// The ownership check with adoption: an adopted resource that no operator has tagged yet
/// is ours to take; one tagged by another pipeline or cluster is a conflict like any other.
pub fn check_owner_or_adopt(
    d: &Desired,
    name: &str,
    resource: &str,
    tags: &BTreeMap<String, String>,
) -> Result<()> {
    if d.adoption.contains(name) && !tags.contains_key(MANAGED_BY) {
        return Ok(());
    }
    check_owner(resource, tags, &d.owner)
}

/// An adopted resource that is not there: creating one under the user's name would pass a
/// new, empty resource off as the one they meant.
pub fn refuse_missing(d: &Desired, name: &str, resource: &str) -> Result<()> {
    if d.adoption.contains(name) {
        return Err(Error::AdoptionRefused {
            resource: resource.to_string(),
            attribute: "existence".into(),
            message: "it does not exist (spec.adopt names it); nothing was created".into(),
        });
    }
    Ok(())
}

/// Why a resource stays when the pipeline is deleted with `Delete`, if it does.
pub fn retained_on_delete(d: &Desired, name: &str, resource: &str) -> Option<String> {
    (d.adoption.contains(name) && !d.adoption.delete)
        .then(|| format!("{resource}: adopted, retained (spec.adopt.deletionPolicy is Retain)"))
}

/// Observe-only: what would be created is reported as missing, and the part is not ready
/// (its identifiers are unknown, so the parts after it cannot be compared).
pub fn observe_missing(report: &mut PartReport, resource: &str) {
    report.created(resource);
    report.not_ready(
        "Missing",
        format!("{resource} does not exist (managementPolicy Observe: not created)"),
    );
}

/// The key schema the worker writes with: pk `tracking_id` (S), sk `timestamp` (S). A table
/// with any other cannot be changed in place; the differences, named.
pub fn key_schema_problems(table: &TableDescription) -> Vec<String> {
    use super::dynamodb::{PARTITION_KEY, SORT_KEY};
    let key_of = |kind: KeyType| {
        table
            .key_schema()
            .iter()
            .find(|k| *k.key_type() == kind)
            .map(|k| k.attribute_name().to_string())
    };
    let type_of = |name: &str| {
        table
            .attribute_definitions()
            .iter()
            .find(|a| a.attribute_name() == name)
            .map(|a| a.attribute_type().clone())
    };
    let mut problems = Vec::new();
    for (kind, label, wanted) in [
        (KeyType::Hash, "partition key", PARTITION_KEY),
        (KeyType::Range, "sort key", SORT_KEY),
    ] {
        match key_of(kind) {
            Some(actual) if actual == wanted => {
                if type_of(wanted).is_some_and(|t| t != ScalarAttributeType::S) {
                    problems.push(format!("KeySchema: {label} {wanted} is not of type S"));
                }
            }
            Some(actual) => problems.push(format!(
                "KeySchema: {label} is {actual}, the worker needs {wanted} (S)"
            )),
            None => problems.push(format!(
                "KeySchema: no {label}, the worker needs {wanted} (S)"
            )),
        }
    }
    problems
}

/// `status.resources`: every resource whose identifier is known, created or adopted.
pub fn resources(d: &Desired, out: &Outputs) -> Resources {
    let mut all = Resources::new();
    let mut add = |key: &str, name: &str, id: &Option<String>| {
        if let Some(id) = id {
            let origin = if d.adoption.contains(name) {
                Origin::Adopted
            } else {
                Origin::Created
            };
            all.insert(
                key.to_string(),
                ResourceStatus {
                    origin,
                    id: id.clone(),
                },
            );
        }
    };
    let n = &d.names;
    add("queue", &n.queue, &out.queue_arn);
    add(
        "deadLetterQueue",
        &n.dead_letter_queue,
        &out.dead_letter_queue_arn,
    );
    add("table", &n.table, &out.table_arn);
    add("queueKey", &n.queue_key_alias, &out.queue_key_arn);
    add("tableKey", &n.table_key_alias, &out.table_key_arn);
    add("topic", &n.topic, &out.alert_topic_arn);
    add("schedule", &n.schedule, &out.schedule_arn);
    // Alarms have no output; they exist once the topic they notify does.
    if out.alert_topic_arn.is_some() {
        for (which, name) in [
            ("queueDepth", &n.alarm_queue_depth),
            ("oldestMessage", &n.alarm_oldest_message),
            ("workerErrors", &n.alarm_worker_errors),
            ("workerThrottles", &n.alarm_worker_throttles),
            ("deadLetters", &n.alarm_dead_letters),
        ] {
            add(&format!("alarm/{which}"), name, &Some(name.clone()));
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AdoptAlarms, TrackingPipelineSpec};
    use crate::aws::Settings;
    use aws_sdk_dynamodb::types::{AttributeDefinition, KeySchemaElement};

    fn desired_with(adopt: AdoptSpec) -> Desired {
        let spec = TrackingPipelineSpec {
            adopt: Some(adopt),
            ..Default::default()
        };
        let mut p = crate::api::TrackingPipeline::new("parcels", spec);
        p.metadata.namespace = Some("logistics".into());
        p.metadata.uid = Some("uid-1".into());
        crate::aws::desired(&p, &Settings::default()).unwrap()
    }

    #[test]
    fn names_come_from_urls_arns_and_aliases() {
        assert_eq!(
            queue_name("https://sqs.eu-west-1.amazonaws.com/123456789012/TapStack-Queue"),
            "TapStack-Queue"
        );
        assert_eq!(queue_name("plain"), "plain");
        assert_eq!(
            topic_name("arn:aws:sns:eu-west-1:123456789012:TapStack-Alerts"),
            "TapStack-Alerts"
        );
        let d = desired_with(AdoptSpec {
            queue: Some("https://sqs.eu-west-1.amazonaws.com/123456789012/q".into()),
            queue_key: Some("alias/logistics-sqs-key".into()),
            alarms: Some(AdoptAlarms {
                dead_letters: Some("dlq-alarm".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(d.names.queue, "q");
        assert_eq!(d.names.queue_key_alias, "alias/logistics-sqs-key");
        assert_eq!(d.names.alarm_dead_letters, "dlq-alarm");
        assert!(d.adoption.contains("q") && d.adoption.contains("dlq-alarm"));
        assert!(!d.adoption.contains(&d.names.table), "not adopted: created");
        assert!(!d.adoption.delete);
    }

    #[test]
    fn untagged_adopted_resources_are_taken_and_others_owners_refused() {
        let d = desired_with(AdoptSpec {
            table: Some("audit".into()),
            ..Default::default()
        });
        assert!(check_owner_or_adopt(&d, "audit", "t", &BTreeMap::new()).is_ok());
        // Not adopted: an untagged resource with our name is still a conflict.
        assert!(check_owner_or_adopt(&d, "other", "t", &BTreeMap::new()).is_err());
        let mut theirs = d.tags.clone();
        theirs.insert(super::super::tags::PIPELINE_NAME.into(), "letters".into());
        let err = check_owner_or_adopt(&d, "audit", "t", &theirs).unwrap_err();
        assert!(err.is_conflict(), "{err}");
        assert!(check_owner_or_adopt(&d, "audit", "t", &d.tags).is_ok());
    }

    #[test]
    fn adopted_resources_are_retained_unless_the_user_says_delete() {
        let d = desired_with(AdoptSpec {
            table: Some("audit".into()),
            ..Default::default()
        });
        assert!(retained_on_delete(&d, "audit", "t").is_some());
        assert!(retained_on_delete(&d, &d.names.queue, "q").is_none());
        let d = desired_with(AdoptSpec {
            table: Some("audit".into()),
            deletion_policy: DeletionPolicy::Delete,
            ..Default::default()
        });
        assert!(retained_on_delete(&d, "audit", "t").is_none());
        let err = refuse_missing(&d, "audit", "DynamoDB table audit").unwrap_err();
        assert!(err.to_string().contains("existence"), "{err}");
    }

    fn table(pk: &str, sk: Option<&str>) -> TableDescription {
        let mut t = TableDescription::builder().key_schema(
            KeySchemaElement::builder()
                .attribute_name(pk)
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        );
        t = t.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(pk)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        );
        if let Some(sk) = sk {
            t = t
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(sk)
                        .key_type(KeyType::Range)
                        .build()
                        .unwrap(),
                )
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(sk)
                        .attribute_type(ScalarAttributeType::N)
                        .build()
                        .unwrap(),
                );
        }
        t.build()
    }

    #[test]
    fn key_schema_differences_are_named() {
        assert_eq!(
            key_schema_problems(&table("tracking_id", None)),
            vec!["KeySchema: no sort key, the worker needs timestamp (S)"]
        );
        assert_eq!(
            key_schema_problems(&table("id", Some("timestamp"))),
            vec![
                "KeySchema: partition key is id, the worker needs tracking_id (S)",
                "KeySchema: sort key timestamp is not of type S"
            ]
        );
    }

    #[test]
    fn status_resources_say_created_or_adopted() {
        let d = desired_with(AdoptSpec {
            table: Some("audit".into()),
            ..Default::default()
        });
        let out = Outputs {
            table_arn: Some("arn:table".into()),
            queue_arn: Some("arn:queue".into()),
            ..Default::default()
        };
        let r = resources(&d, &out);
        assert_eq!(r["table"].origin, Origin::Adopted);
        assert_eq!(r["queue"].origin, Origin::Created);
        assert_eq!(r.len(), 2);
    }
}

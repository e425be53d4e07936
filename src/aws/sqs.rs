//! The dead-letter queue, then the main queue: standard queues, SSE-KMS with the SQS key,
//! every attribute compared and `SetQueueAttributes` sent only with what differs.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::{Value, json};

use super::adopt::{check_owner_or_adopt, observe_missing, refuse_missing, retained_on_delete};
use super::desired::{Desired, Queues};
use super::error::{api, unexpected};
use super::tags::{describe, missing_tags};
use super::verified::{settle, settled, tags_of};
use super::{AwsClients, DeleteReport, Outputs, PartReport, Result, found, need};
use crate::api::QueueStatus;

const SVC: &str = "SQS";

/// Attributes of the dead-letter queue.
pub fn dead_letter_attributes(q: &Queues, key_arn: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "VisibilityTimeout".into(),
            q.dead_letter_visibility_timeout_seconds.to_string(),
        ),
        (
            "MessageRetentionPeriod".into(),
            q.dead_letter_retention_seconds.to_string(),
        ),
        ("KmsMasterKeyId".into(), key_arn.into()),
        (
            "KmsDataKeyReusePeriodSeconds".into(),
            q.data_key_reuse_seconds.to_string(),
        ),
    ])
}

/// Attributes of the main queue, redriving to the dead-letter queue.
pub fn queue_attributes(
    q: &Queues,
    key_arn: &str,
    dead_letter_arn: &str,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "VisibilityTimeout".into(),
            q.visibility_timeout_seconds.to_string(),
        ),
        (
            "MessageRetentionPeriod".into(),
            q.retention_seconds.to_string(),
        ),
        ("KmsMasterKeyId".into(), key_arn.into()),
        (
            "KmsDataKeyReusePeriodSeconds".into(),
            q.data_key_reuse_seconds.to_string(),
        ),
        (
            "RedrivePolicy".into(),
            redrive_policy(dead_letter_arn, q.max_receive_count),
        ),
    ])
}

fn redrive_policy(dead_letter_arn: &str, max_receive_count: i32) -> String {
    json!({"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": max_receive_count})
        .to_string()
}

/// The attributes whose actual value differs from the desired one, with the desired value.
pub fn diff_attributes(
    desired: &BTreeMap<String, String>,
    actual: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    desired
        .iter()
        .filter(|(k, v)| match actual.get(*k) {
            None => true,
            Some(a) if k.as_str() == "RedrivePolicy" => {
                normalise_redrive(a) != normalise_redrive(v)
            }
            Some(a) => a != *v,
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// AWS returns `maxReceiveCount` as a number, some emulators as a string.
fn normalise_redrive(text: &str) -> Option<(String, i64)> {
    let v: Value = serde_json::from_str(text).ok()?;
    let arn = v.get("deadLetterTargetArn")?.as_str()?.to_string();
    let count = match v.get("maxReceiveCount")? {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    Some((arn, count))
}

pub(super) async fn ensure(
    c: &AwsClients,
    d: &Desired,
    out: &mut Outputs,
    report: &mut PartReport,
) -> Result<()> {
    let key = need(&out.queue_key_arn, "Queues", "the SQS key ARN")?.to_string();
    let dlq_attrs = dead_letter_attributes(&d.queues, &key);
    let known = out.dead_letter_queue_url.clone();
    let Some((url, arn, dlq_actual)) = ensure_queue(
        c,
        d,
        &d.names.dead_letter_queue,
        known.as_deref(),
        &dlq_attrs,
        report,
    )
    .await?
    else {
        return Ok(());
    };
    out.dead_letter_queue_url = Some(url);
    out.dead_letter_queue_arn = Some(arn.clone());
    // An adopted queue whose redrive points elsewhere (or nowhere) is wired to this DLQ by
    // the RedrivePolicy comparison below, like any other drift.
    let attrs = queue_attributes(&d.queues, &key, &arn);
    let known = out.queue_url.clone();
    let Some((url, arn, actual)) =
        ensure_queue(c, d, &d.names.queue, known.as_deref(), &attrs, report).await?
    else {
        return Ok(());
    };
    out.queue_url = Some(url);
    out.queue_arn = Some(arn);
    // The depths come with the attributes read for the drift check: no extra call.
    report.queue = Some(QueueStatus::from_attributes(&actual, &dlq_actual));
    Ok(())
}

async fn queue_url(c: &AwsClients, name: &str) -> Result<Option<String>> {
    let out = found(
        c.sqs
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .map_err(api(SVC, "GetQueueUrl")),
    )?;
    Ok(out.and_then(|o| o.queue_url))
}

async fn queue_tags(c: &AwsClients, url: &str) -> Result<BTreeMap<String, String>> {
    let tags = c
        .sqs
        .list_queue_tags()
        .queue_url(url)
        .send()
        .await
        .map_err(api(SVC, "ListQueueTags"))?;
    Ok(tags.tags.unwrap_or_default().into_iter().collect())
}

async fn attributes(c: &AwsClients, url: &str) -> Result<BTreeMap<String, String>> {
    let out = c
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map_err(api(SVC, "GetQueueAttributes"))?;
    Ok(out
        .attributes
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.as_str().to_string(), v))
        .collect())
}

fn to_sdk(attrs: &BTreeMap<String, String>) -> HashMap<QueueAttributeName, String> {
    attrs
        .iter()
        .map(|(k, v)| (QueueAttributeName::from(k.as_str()), v.clone()))
        .collect()
}

/// Returns the queue's URL, ARN and attributes as read; `None` when observing a queue
/// that does not exist.
async fn ensure_queue(
    c: &AwsClients,
    d: &Desired,
    name: &str,
    // The URL the last pass found (status.outputs): a queue's URL follows from its name, so
    // once resolved it is not asked for again until the window ends.
    known: Option<&str>,
    desired: &BTreeMap<String, String>,
    report: &mut PartReport,
) -> Result<Option<(String, String, BTreeMap<String, String>)>> {
    let resource = format!("SQS queue {name}");
    let mut read = None;
    if let Some(url) = known.filter(|u| settled(c, d, &format!("{u}/url"), &name)) {
        // Gone since: resolve the name again below (and create it if it is missing).
        if let Some(actual) = found(attributes(c, url).await)? {
            read = Some((url.to_string(), Some(actual)));
        }
    }
    if read.is_none() {
        read = queue_url(c, name).await?.map(|url| (url, None));
    }
    let (url, actual) = match read {
        None => {
            refuse_missing(d, name, &resource)?;
            if d.observe {
                observe_missing(report, &resource);
                return Ok(None);
            }
            let created = c
                .sqs
                .create_queue()
                .queue_name(name)
                .set_attributes(Some(to_sdk(desired)))
                .set_tags(Some(d.tags.clone().into_iter().collect()))
                .send()
                .await
                .map_err(api(SVC, "CreateQueue"))?;
            let url = created
                .queue_url
                .ok_or_else(|| unexpected(SVC, "CreateQueue returned no URL"))?;
            report.created(&resource);
            let actual = attributes(c, &url).await?;
            (url, actual)
        }
        Some((url, actual)) => {
            let actual = match actual {
                Some(actual) => actual,
                None => attributes(c, &url).await?,
            };
            settle(c, d, &format!("{url}/url"), &name);
            let id = format!("{url}@{}", actual.get("CreatedTimestamp").map_or("", |t| t));
            let tags = tags_of(c, d, &id, || queue_tags(c, &url)).await?;
            check_owner_or_adopt(d, name, &resource, &tags)?;
            if d.adoption.contains(name) && actual.get("FifoQueue").is_some_and(|v| v == "true") {
                // A FIFO queue cannot become standard in place.
                return Err(crate::error::Error::AdoptionRefused {
                    resource,
                    attribute: "FifoQueue".into(),
                    message: "a FIFO queue cannot be changed into a standard queue in place".into(),
                });
            }
            let diff = diff_attributes(desired, &actual);
            let mut repaired: Vec<String> = diff.keys().cloned().collect();
            if !diff.is_empty() && !d.observe {
                c.sqs
                    .set_queue_attributes()
                    .queue_url(&url)
                    .set_attributes(Some(to_sdk(&diff)))
                    .send()
                    .await
                    .map_err(api(SVC, "SetQueueAttributes"))?;
            }
            let missing = missing_tags(&d.tags, &tags);
            if !missing.is_empty() && !d.observe {
                c.sqs
                    .tag_queue()
                    .queue_url(&url)
                    .set_tags(Some(missing.clone().into_iter().collect()))
                    .send()
                    .await
                    .map_err(api(SVC, "TagQueue"))?;
            }
            repaired.extend(describe(&missing));
            report.repaired(&resource, &repaired);
            (url, actual)
        }
    };
    let arn = actual
        .get("QueueArn")
        .cloned()
        .ok_or_else(|| unexpected(SVC, format!("{resource} has no QueueArn attribute")))?;
    Ok(Some((url, arn, actual)))
}

pub(super) async fn delete(c: &AwsClients, d: &Desired, report: &mut DeleteReport) -> Result<()> {
    for name in [&d.names.queue, &d.names.dead_letter_queue] {
        let resource = format!("SQS queue {name}");
        let Some(url) = queue_url(c, name).await? else {
            continue;
        };
        let Some(tags) = found(queue_tags(c, &url).await)? else {
            continue;
        };
        if let Some(why) = retained_on_delete(d, name, &resource) {
            report.retained.push(why);
            continue;
        }
        if let Err(e) = check_owner_or_adopt(d, name, &resource, &tags) {
            report.retained.push(e.to_string());
            continue;
        }
        if found(
            c.sqs
                .delete_queue()
                .queue_url(&url)
                .send()
                .await
                .map_err(api(SVC, "DeleteQueue")),
        )?
        .is_some()
        {
            report.deleted.push(resource);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues() -> Queues {
        Queues {
            visibility_timeout_seconds: 150,
            retention_seconds: 604_800,
            max_receive_count: 3,
            dead_letter_visibility_timeout_seconds: 300,
            dead_letter_retention_seconds: 1_209_600,
            data_key_reuse_seconds: 300,
        }
    }

    #[test]
    fn reference_attributes() {
        let dlq = dead_letter_attributes(&queues(), "arn:k");
        assert_eq!(dlq["VisibilityTimeout"], "300");
        assert_eq!(dlq["MessageRetentionPeriod"], "1209600");
        assert_eq!(dlq["KmsMasterKeyId"], "arn:k");
        assert_eq!(dlq["KmsDataKeyReusePeriodSeconds"], "300");
        let q = queue_attributes(&queues(), "arn:k", "arn:dlq");
        assert_eq!(q["VisibilityTimeout"], "150");
        assert_eq!(q["MessageRetentionPeriod"], "604800");
        assert_eq!(
            normalise_redrive(&q["RedrivePolicy"]),
            Some(("arn:dlq".into(), 3))
        );
    }

    #[test]
    fn diff_lists_only_changed_attributes() {
        let desired = queue_attributes(&queues(), "arn:k", "arn:dlq");
        let mut actual = desired.clone();
        actual.insert("QueueArn".into(), "arn:q".into());
        actual.insert(
            "RedrivePolicy".into(),
            r#"{"maxReceiveCount":"3","deadLetterTargetArn":"arn:dlq"}"#.into(),
        );
        assert!(diff_attributes(&desired, &actual).is_empty());
        actual.insert("VisibilityTimeout".into(), "30".into());
        actual.insert(
            "RedrivePolicy".into(),
            r#"{"maxReceiveCount":5,"deadLetterTargetArn":"arn:dlq"}"#.into(),
        );
        actual.remove("KmsMasterKeyId");
        let diff = diff_attributes(&desired, &actual);
        assert_eq!(
            diff.keys().collect::<Vec<_>>(),
            vec!["KmsMasterKeyId", "RedrivePolicy", "VisibilityTimeout"]
        );
        assert_eq!(diff["VisibilityTimeout"], "150");
    }
}

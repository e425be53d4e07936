//! The alert topic "Logistics Tracking Alerts", encrypted with our SQS key (CloudWatch
//! cannot publish to a topic encrypted with the AWS-managed SNS key), and its e-mail
//! subscription. A subscription awaiting confirmation is reported, never called ready.

use std::collections::BTreeMap;

use aws_sdk_sns::types::{Subscription, Tag};

use super::adopt::{check_owner_or_adopt, observe_missing, refuse_missing, retained_on_delete};
use super::desired::Desired;
use super::error::{api, unexpected};
use super::tags::{describe, missing_tags};
use super::verified::tags_of;
use super::{AwsClients, DeleteReport, Outputs, PartReport, Result, found, need};

const SVC: &str = "SNS";
/// What `ListSubscriptionsByTopic` shows instead of an ARN until the address confirms.
const PENDING: &str = "PendingConfirmation";

pub fn topic_attributes(d: &Desired, key_arn: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("DisplayName".into(), d.alerts.display_name.clone()),
        ("KmsMasterKeyId".into(), key_arn.into()),
    ])
}

/// How a subscription looks from outside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscriptionState {
    Confirmed(String),
    Pending,
}

fn sns_tags(tags: &BTreeMap<String, String>) -> Result<Vec<Tag>> {
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

async fn topic_tags(c: &AwsClients, arn: &str) -> Result<BTreeMap<String, String>> {
    let out = c
        .sns
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .map_err(api(SVC, "ListTagsForResource"))?;
    Ok(out
        .tags()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect())
}

async fn topic_attributes_of(
    c: &AwsClients,
    arn: &str,
) -> Result<Option<BTreeMap<String, String>>> {
    let out = found(
        c.sns
            .get_topic_attributes()
            .topic_arn(arn)
            .send()
            .await
            .map_err(api(SVC, "GetTopicAttributes")),
    )?;
    Ok(out.map(|o| o.attributes.unwrap_or_default().into_iter().collect()))
}

pub(super) async fn ensure(
    c: &AwsClients,
    d: &Desired,
    out: &mut Outputs,
    report: &mut PartReport,
) -> Result<()> {
    let key_arn = need(&out.queue_key_arn, "Alerts", "the SQS key ARN")?.to_string();
    let account = c.account().await?;
    let arn = account.sns_topic(&d.names.topic);
    let resource = format!("SNS topic {}", d.names.topic);
    let desired = topic_attributes(d, &key_arn);
    match topic_attributes_of(c, &arn).await? {
        None if d.observe || d.adoption.contains(&d.names.topic) => {
            refuse_missing(d, &d.names.topic, &resource)?;
            observe_missing(report, &resource);
            return Ok(());
        }
        None => {
            let created = c
                .sns
                .create_topic()
                .name(&d.names.topic)
                .set_attributes(Some(desired.clone().into_iter().collect()))
                .set_tags(Some(sns_tags(&d.tags)?))
                .send()
                .await
                .map_err(api(SVC, "CreateTopic"))?;
            let created_arn = created
                .topic_arn
                .ok_or_else(|| unexpected(SVC, "CreateTopic returned no ARN"))?;
            out.alert_topic_arn = Some(created_arn);
            report.created(&resource);
        }
        Some(actual) => {
            out.alert_topic_arn = Some(arn.clone());
            let tags = tags_of(c, d, &arn, || topic_tags(c, &arn)).await?;
            check_owner_or_adopt(d, &d.names.topic, &resource, &tags)?;
            let mut repaired = Vec::new();
            for (name, value) in &desired {
                if actual.get(name) != Some(value) && d.observe {
                    repaired.push(name.clone());
                } else if actual.get(name) != Some(value) {
                    // SNS sets one attribute per call.
                    c.sns
                        .set_topic_attributes()
                        .topic_arn(&arn)
                        .attribute_name(name)
                        .attribute_value(value)
                        .send()
                        .await
                        .map_err(api(SVC, "SetTopicAttributes"))?;
                    repaired.push(name.clone());
                }
            }
            let missing = missing_tags(&d.tags, &tags);
            if !missing.is_empty() && !d.observe {
                c.sns
                    .tag_resource()
                    .resource_arn(&arn)
                    .set_tags(Some(sns_tags(&missing)?))
                    .send()
                    .await
                    .map_err(api(SVC, "TagResource"))?;
            }
            repaired.extend(describe(&missing));
            report.repaired(&resource, &repaired);
        }
    }
    let topic_arn = need(&out.alert_topic_arn, "Alerts", "the topic ARN")?.to_string();
    out.subscription_arn = ensure_subscription(c, d, &topic_arn, out, report).await?;
    Ok(())
}

async fn subscriptions(c: &AwsClients, topic_arn: &str) -> Result<Vec<Subscription>> {
    let mut all = Vec::new();
    let mut token = None;
    loop {
        let page = c
            .sns
            .list_subscriptions_by_topic()
            .topic_arn(topic_arn)
            .set_next_token(token)
            .send()
            .await
            .map_err(api(SVC, "ListSubscriptionsByTopic"))?;
        all.extend(page.subscriptions().iter().cloned());
        token = page.next_token;
        if token.is_none() {
            return Ok(all);
        }
    }
}

/// The state of a subscription we just created. Real SNS answers `pending confirmation` for
/// an e-mail; an ARN means the address needs no confirmation (or an emulator confirmed it),
/// which only the attributes tell. Refused permission to read them reads as pending: the
/// list shows the state on the next pass anyway.
async fn state_after_subscribe(
    c: &AwsClients,
    subscription_arn: &str,
) -> Result<SubscriptionState> {
    if let Some(state) = subscription_state(subscription_arn, None) {
        return Ok(state);
    }
    let attrs = c
        .sns
        .get_subscription_attributes()
        .subscription_arn(subscription_arn)
        .send()
        .await
        .map_err(api(SVC, "GetSubscriptionAttributes"));
    let attrs = match attrs {
        Ok(a) => a,
        Err(e) if e.is_retryable() => return Err(e),
        Err(_) => return Ok(SubscriptionState::Pending),
    };
    Ok(subscription_state(
        subscription_arn,
        Some(attrs.attributes().cloned().unwrap_or_default()),
    )
    .unwrap_or(SubscriptionState::Pending))
}

/// The state of a listed subscription: `ListSubscriptionsByTopic` shows the placeholder
/// `PendingConfirmation` until the address confirms, and the ARN after.
pub fn listed_state(listed_arn: &str) -> SubscriptionState {
    subscription_state(listed_arn, None)
        .unwrap_or_else(|| SubscriptionState::Confirmed(listed_arn.to_string()))
}

/// The state from what SNS showed: the listed ARN, then (when that is a real ARN) the
/// subscription's attributes. `None` means "ask for the attributes".
pub fn subscription_state(
    listed_arn: &str,
    attributes: Option<std::collections::HashMap<String, String>>,
) -> Option<SubscriptionState> {
    if listed_arn == PENDING || !listed_arn.starts_with("arn:") {
        return Some(SubscriptionState::Pending);
    }
    let attributes = attributes?;
    let pending = attributes
        .get(PENDING)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    Some(if pending {
        SubscriptionState::Pending
    } else {
        SubscriptionState::Confirmed(listed_arn.to_string())
    })
}

/// Subscriptions to remove: only the one the operator made (`ours`, recorded in the status)
/// once the spec names another address, and only once confirmed (a pending one cannot be
/// removed; AWS drops it after three days). Addresses subscribed by hand are never touched.
pub fn stale_subscriptions<'a>(
    existing: &'a [Subscription],
    ours: Option<&str>,
    wanted: Option<&str>,
) -> Vec<&'a Subscription> {
    let Some(ours) = ours.filter(|o| Some(*o) != wanted) else {
        return Vec::new();
    };
    existing
        .iter()
        .filter(|s| s.protocol() == Some("email") && s.endpoint() == Some(ours))
        .filter(|s| {
            s.subscription_arn()
                .is_some_and(|a| matches!(listed_state(a), SubscriptionState::Confirmed(_)))
        })
        .collect()
}

/// Returns the confirmed subscription's ARN.
async fn ensure_subscription(
    c: &AwsClients,
    d: &Desired,
    topic_arn: &str,
    out: &mut Outputs,
    report: &mut PartReport,
) -> Result<Option<String>> {
    let existing = subscriptions(c, topic_arn).await?;
    let email = d.alerts.email.as_deref();
    let mut removed = Vec::new();
    for s in stale_subscriptions(&existing, out.alert_email.as_deref(), email) {
        if d.observe {
            removed.push(format!(
                "subscription {} to remove",
                s.endpoint().unwrap_or("?")
            ));
        } else if let Some(sub_arn) = s.subscription_arn() {
            found(
                c.sns
                    .unsubscribe()
                    .subscription_arn(sub_arn)
                    .send()
                    .await
                    .map_err(api(SVC, "Unsubscribe")),
            )?;
            removed.push(format!(
                "subscription {} removed",
                s.endpoint().unwrap_or("?")
            ));
        }
    }
    report.repaired(&format!("SNS topic {}", d.names.topic), &removed);
    let Some(email) = email else {
        out.alert_email = None;
        return Ok(None);
    };
    let current = existing
        .iter()
        .find(|s| s.protocol() == Some("email") && s.endpoint() == Some(email));
    let state = match current.and_then(Subscription::subscription_arn) {
        Some(listed) => listed_state(listed),
        None if d.observe => {
            observe_missing(report, &format!("SNS e-mail subscription {email}"));
            return Ok(None);
        }
        None => {
            let created = c
                .sns
                .subscribe()
                .topic_arn(topic_arn)
                .protocol("email")
                .endpoint(email)
                .send()
                .await
                .map_err(api(SVC, "Subscribe"))?;
            report.created(format!("SNS e-mail subscription {email}"));
            let arn = created
                .subscription_arn
                .unwrap_or_else(|| PENDING.to_string());
            state_after_subscribe(c, &arn).await?
        }
    };
    out.alert_email = Some(email.to_string());
    match state {
        SubscriptionState::Confirmed(arn) => Ok(Some(arn)),
        SubscriptionState::Pending => {
            report.not_ready(
                "PendingConfirmation",
                format!("the e-mail subscription of {email} to the alert topic awaits confirmation: open the link AWS sent"),
            );
            Ok(None)
        }
    }
}

pub(super) async fn delete(c: &AwsClients, d: &Desired, report: &mut DeleteReport) -> Result<()> {
    let arn = c.account().await?.sns_topic(&d.names.topic);
    let resource = format!("SNS topic {}", d.names.topic);
    if let Some(why) = retained_on_delete(d, &d.names.topic, &resource) {
        report.retained.push(why);
        return Ok(());
    }
    if topic_attributes_of(c, &arn).await?.is_none() {
        return Ok(());
    }
    let Some(tags) = found(topic_tags(c, &arn).await)? else {
        return Ok(());
    };
    if let Err(e) = check_owner_or_adopt(d, &d.names.topic, &resource, &tags) {
        report.retained.push(e.to_string());
        return Ok(());
    }
    // Deleting a topic deletes its subscriptions too.
    found(
        c.sns
            .delete_topic()
            .topic_arn(&arn)
            .send()
            .await
            .map_err(api(SVC, "DeleteTopic")),
    )?;
    report.deleted.push(resource);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn sub(endpoint: &str, arn: &str) -> Subscription {
        Subscription::builder()
            .protocol("email")
            .endpoint(endpoint)
            .subscription_arn(arn)
            .build()
    }

    #[test]
    fn only_the_address_we_subscribed_is_ever_removed() {
        let existing = [
            sub("old@example.com", "arn:aws:sns:us-east-1:1:t:1"),
            sub("by-hand@example.com", "arn:aws:sns:us-east-1:1:t:2"),
            sub("new@example.com", "PendingConfirmation"),
        ];
        let stale =
            stale_subscriptions(&existing, Some("old@example.com"), Some("new@example.com"));
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].endpoint(), Some("old@example.com"));
        assert!(stale_subscriptions(&existing, None, Some("new@example.com")).is_empty());
        assert!(
            stale_subscriptions(&existing, Some("new@example.com"), None).is_empty(),
            "a pending subscription cannot be removed"
        );
    }

    #[test]
    fn pending_confirmation_is_never_confirmed() {
        // Real SNS: the list shows the placeholder instead of an ARN.
        assert_eq!(
            subscription_state("PendingConfirmation", None),
            Some(SubscriptionState::Pending)
        );
        let arn = "arn:aws:sns:us-east-1:1:t:abc";
        assert_eq!(
            subscription_state(arn, None),
            None,
            "an ARN needs the attributes"
        );
        let pending = HashMap::from([(PENDING.to_string(), "true".to_string())]);
        assert_eq!(
            subscription_state(arn, Some(pending)),
            Some(SubscriptionState::Pending)
        );
        let confirmed = HashMap::from([(PENDING.to_string(), "false".to_string())]);
        assert_eq!(
            subscription_state(arn, Some(confirmed)),
            Some(SubscriptionState::Confirmed(arn.to_string()))
        );
    }
}

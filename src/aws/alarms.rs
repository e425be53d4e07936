//! The five alarms of the original stack, all notifying the alert topic. The worker alarms
//! watch the metrics the worker publishes, named in the shared contract.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, MetricAlarm, Statistic, Tag};
use tracking_worker::contract::cloudwatch as contract;

use super::adopt::{check_owner_or_adopt, refuse_missing, retained_on_delete};
use super::desired::Desired;
use super::error::{api, unexpected};
use super::tags::{describe, missing_tags};
use super::verified::tags_of;
use super::{AwsClients, DeleteReport, Outputs, PartReport, Result, found, need};

const SVC: &str = "CloudWatch";
const SQS_NAMESPACE: &str = "AWS/SQS";
/// One-minute periods: SQS publishes every minute, the worker aggregates per minute.
const PERIOD: i32 = 60;
/// No data means no messages or no errors, never an incident.
const NOT_BREACHING: &str = "notBreaching";

#[derive(Clone, Debug, PartialEq)]
pub struct AlarmSpec {
    pub name: String,
    pub description: String,
    pub namespace: String,
    pub metric_name: String,
    pub dimensions: BTreeMap<String, String>,
    pub statistic: Statistic,
    pub period: i32,
    pub evaluation_periods: i32,
    pub datapoints_to_alarm: i32,
    pub threshold: f64,
    pub comparison: ComparisonOperator,
    pub treat_missing_data: String,
    pub alarm_actions: Vec<String>,
}

/// The five alarms, from the desired state and the topic they notify.
pub fn desired_alarms(d: &Desired, topic_arn: &str) -> Vec<AlarmSpec> {
    let a = &d.alerts;
    let n = &d.names;
    let queue = BTreeMap::from([("QueueName".to_string(), n.queue.clone())]);
    let dlq = BTreeMap::from([("QueueName".to_string(), n.dead_letter_queue.clone())]);
    let pipeline = BTreeMap::from([(contract::DIMENSION_PIPELINE.to_string(), d.owner.key())]);
    let alarm = |name: &str,
                 description: String,
                 namespace: &str,
                 metric: &str,
                 dimensions: &BTreeMap<String, String>,
                 statistic: Statistic,
                 (evaluation_periods, datapoints_to_alarm): (i32, i32),
                 threshold: f64,
                 comparison: ComparisonOperator| AlarmSpec {
        name: name.to_string(),
        description,
        namespace: namespace.to_string(),
        metric_name: metric.to_string(),
        dimensions: dimensions.clone(),
        statistic,
        period: PERIOD,
        evaluation_periods,
        datapoints_to_alarm,
        threshold,
        comparison,
        treat_missing_data: NOT_BREACHING.to_string(),
        alarm_actions: vec![topic_arn.to_string()],
    };
    let key = d.owner.key();
    vec![
        alarm(
            &n.alarm_queue_depth,
            format!(
                "{key}: more than {} messages waiting in the queue",
                a.queue_depth_threshold
            ),
            SQS_NAMESPACE,
            "ApproximateNumberOfMessagesVisible",
            &queue,
            Statistic::Maximum,
            (3, 2),
            a.queue_depth_threshold,
            ComparisonOperator::GreaterThanThreshold,
        ),
        alarm(
            &n.alarm_oldest_message,
            format!(
                "{key}: oldest queued message older than {} s",
                a.oldest_message_age_seconds
            ),
            SQS_NAMESPACE,
            "ApproximateAgeOfOldestMessage",
            &queue,
            Statistic::Maximum,
            (3, 3),
            a.oldest_message_age_seconds,
            ComparisonOperator::GreaterThanThreshold,
        ),
        alarm(
            &n.alarm_worker_errors,
            format!(
                "{key}: worker processing errors above {} per minute",
                a.worker_errors_threshold
            ),
            &a.metrics_namespace,
            contract::METRIC_ERRORS,
            &pipeline,
            Statistic::Sum,
            (3, 3),
            a.worker_errors_threshold,
            ComparisonOperator::GreaterThanThreshold,
        ),
        alarm(
            &n.alarm_worker_throttles,
            format!(
                "{key}: worker throttled calls above {} per minute",
                a.worker_throttles_threshold
            ),
            &a.metrics_namespace,
            contract::METRIC_THROTTLES,
            &pipeline,
            Statistic::Sum,
            (3, 3),
            a.worker_throttles_threshold,
            ComparisonOperator::GreaterThanThreshold,
        ),
        alarm(
            &n.alarm_dead_letters,
            format!("{key}: messages in the dead-letter queue"),
            SQS_NAMESPACE,
            "ApproximateNumberOfMessagesVisible",
            &dlq,
            Statistic::Maximum,
            (1, 1),
            1.0,
            ComparisonOperator::GreaterThanOrEqualToThreshold,
        ),
    ]
}

/// Names of the settings where `actual` differs from `desired`.
pub fn alarm_drift(desired: &AlarmSpec, actual: &MetricAlarm) -> Vec<String> {
    let dims: BTreeMap<String, String> = actual
        .dimensions()
        .iter()
        .map(|d| {
            (
                d.name().unwrap_or_default().to_string(),
                d.value().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let actions: BTreeSet<&str> = actual.alarm_actions().iter().map(String::as_str).collect();
    let wanted: BTreeSet<&str> = desired.alarm_actions.iter().map(String::as_str).collect();
    [
        (
            "AlarmDescription",
            actual.alarm_description() != Some(desired.description.as_str()),
        ),
        (
            "Namespace",
            actual.namespace() != Some(desired.namespace.as_str()),
        ),
        (
            "MetricName",
            actual.metric_name() != Some(desired.metric_name.as_str()),
        ),
        ("Dimensions", dims != desired.dimensions),
        ("Statistic", actual.statistic() != Some(&desired.statistic)),
        ("Period", actual.period() != Some(desired.period)),
        (
            "EvaluationPeriods",
            actual.evaluation_periods() != Some(desired.evaluation_periods),
        ),
        (
            "DatapointsToAlarm",
            actual.datapoints_to_alarm() != Some(desired.datapoints_to_alarm),
        ),
        ("Threshold", actual.threshold() != Some(desired.threshold)),
        (
            "ComparisonOperator",
            actual.comparison_operator() != Some(&desired.comparison),
        ),
        (
            "TreatMissingData",
            actual.treat_missing_data() != Some(desired.treat_missing_data.as_str()),
        ),
        ("AlarmActions", actions != wanted),
        ("ActionsEnabled", actual.actions_enabled() == Some(false)),
    ]
    .into_iter()
    .filter(|(_, differs)| *differs)
    .map(|(name, _)| name.to_string())
    .collect()
}

fn cw_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

async fn put_alarm(c: &AwsClients, a: &AlarmSpec, tags: Option<Vec<Tag>>) -> Result<()> {
    let dimensions = a
        .dimensions
        .iter()
        .map(|(k, v)| Dimension::builder().name(k).value(v).build())
        .collect();
    c.cloudwatch
        .put_metric_alarm()
        .alarm_name(&a.name)
        .alarm_description(&a.description)
        .namespace(&a.namespace)
        .metric_name(&a.metric_name)
        .set_dimensions(Some(dimensions))
        .statistic(a.statistic.clone())
        .period(a.period)
        .evaluation_periods(a.evaluation_periods)
        .datapoints_to_alarm(a.datapoints_to_alarm)
        .threshold(a.threshold)
        .comparison_operator(a.comparison.clone())
        .treat_missing_data(&a.treat_missing_data)
        .set_alarm_actions(Some(a.alarm_actions.clone()))
        .actions_enabled(true)
        .set_tags(tags)
        .send()
        .await
        .map_err(api(SVC, "PutMetricAlarm"))?;
    Ok(())
}

async fn existing_alarms(c: &AwsClients, d: &Desired) -> Result<BTreeMap<String, MetricAlarm>> {
    let out = c
        .cloudwatch
        .describe_alarms()
        .set_alarm_names(Some(
            d.names.alarms().iter().map(|s| s.to_string()).collect(),
        ))
        .send()
        .await
        .map_err(api(SVC, "DescribeAlarms"))?;
    Ok(out
        .metric_alarms()
        .iter()
        .filter_map(|a| a.alarm_name().map(|n| (n.to_string(), a.clone())))
        .collect())
}

async fn alarm_tags(c: &AwsClients, arn: &str) -> Result<BTreeMap<String, String>> {
    let out = c
        .cloudwatch
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .map_err(api(SVC, "ListTagsForResource"))?;
    Ok(out
        .tags()
        .iter()
        .map(|t| {
            let text = |v: Option<&str>| v.unwrap_or_default().to_string();
            (text(t.key()), text(t.value()))
        })
        .collect())
}

pub(super) async fn ensure(
    c: &AwsClients,
    d: &Desired,
    out: &mut Outputs,
    report: &mut PartReport,
) -> Result<()> {
    let topic_arn = need(&out.alert_topic_arn, "Alerts", "the alert topic ARN")?;
    let existing = existing_alarms(c, d).await?;
    for alarm in desired_alarms(d, topic_arn) {
        let resource = format!("CloudWatch alarm {}", alarm.name);
        let Some(actual) = existing.get(&alarm.name) else {
            refuse_missing(d, &alarm.name, &resource)?;
            if d.observe {
                // The alarm's absence is a difference, but nothing else depends on it.
                report.created(resource);
                continue;
            }
            put_alarm(c, &alarm, Some(cw_tags(&d.tags))).await?;
            report.created(resource);
            continue;
        };
        let arn = actual
            .alarm_arn()
            .ok_or_else(|| unexpected(SVC, format!("{resource} has no ARN")))?;
        let tags = tags_of(c, d, arn, || alarm_tags(c, arn)).await?;
        check_owner_or_adopt(d, &alarm.name, &resource, &tags)?;
        let mut repaired = alarm_drift(&alarm, actual);
        if !repaired.is_empty() && !d.observe {
            // Tags passed to PutMetricAlarm are ignored for an existing alarm.
            put_alarm(c, &alarm, None).await?;
        }
        let missing = missing_tags(&d.tags, &tags);
        if !missing.is_empty() && !d.observe {
            c.cloudwatch
                .tag_resource()
                .resource_arn(arn)
                .set_tags(Some(cw_tags(&missing)))
                .send()
                .await
                .map_err(api(SVC, "TagResource"))?;
        }
        repaired.extend(describe(&missing));
        report.repaired(&resource, &repaired);
    }
    Ok(())
}

pub(super) async fn delete(c: &AwsClients, d: &Desired, report: &mut DeleteReport) -> Result<()> {
    let existing = existing_alarms(c, d).await?;
    let mut ours = Vec::new();
    for (name, alarm) in &existing {
        let resource = format!("CloudWatch alarm {name}");
        let Some(arn) = alarm.alarm_arn() else {
            continue;
        };
        let Some(tags) = found(alarm_tags(c, arn).await)? else {
            continue;
        };
        if let Some(why) = retained_on_delete(d, name, &resource) {
            report.retained.push(why);
            continue;
        }
        match check_owner_or_adopt(d, name, &resource, &tags) {
            Ok(()) => ours.push(name.clone()),
            Err(e) => report.retained.push(e.to_string()),
        }
    }
    if ours.is_empty() {
        return Ok(());
    }
    // DeleteAlarms ignores names that no longer exist.
    c.cloudwatch
        .delete_alarms()
        .set_alarm_names(Some(ours.clone()))
        .send()
        .await
        .map_err(api(SVC, "DeleteAlarms"))?;
    report
        .deleted
        .extend(ours.into_iter().map(|n| format!("CloudWatch alarm {n}")));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TrackingPipelineSpec;
    use crate::aws::desired::{Settings, desired};

    fn spec_desired() -> Desired {
        let mut p = crate::api::TrackingPipeline::new("parcels", TrackingPipelineSpec::default());
        p.metadata.namespace = Some("logistics".into());
        p.metadata.uid = Some("u".into());
        desired(&p, &Settings::default()).unwrap()
    }

    fn as_actual(a: &AlarmSpec) -> MetricAlarm {
        MetricAlarm::builder()
            .alarm_name(&a.name)
            .alarm_description(&a.description)
            .namespace(&a.namespace)
            .metric_name(&a.metric_name)
            .set_dimensions(Some(
                a.dimensions
                    .iter()
                    .map(|(k, v)| Dimension::builder().name(k).value(v).build())
                    .collect(),
            ))
            .statistic(a.statistic.clone())
            .period(a.period)
            .evaluation_periods(a.evaluation_periods)
            .datapoints_to_alarm(a.datapoints_to_alarm)
            .threshold(a.threshold)
            .comparison_operator(a.comparison.clone())
            .treat_missing_data(&a.treat_missing_data)
            .set_alarm_actions(Some(a.alarm_actions.clone()))
            .actions_enabled(true)
            .build()
    }

    #[test]
    fn the_five_reference_alarms() {
        let d = spec_desired();
        let alarms = desired_alarms(&d, "arn:topic");
        assert_eq!(alarms.len(), 5);
        let depth = &alarms[0];
        assert_eq!(depth.metric_name, "ApproximateNumberOfMessagesVisible");
        assert_eq!(
            (
                depth.threshold,
                depth.evaluation_periods,
                depth.datapoints_to_alarm
            ),
            (1000.0, 3, 2)
        );
        assert_eq!(depth.treat_missing_data, "notBreaching");
        assert_eq!(alarms[1].threshold, 300.0);
        assert_eq!(alarms[2].namespace, contract::DEFAULT_NAMESPACE);
        assert_eq!(alarms[2].metric_name, contract::METRIC_ERRORS);
        assert_eq!(
            alarms[2].dimensions[contract::DIMENSION_PIPELINE],
            "logistics/parcels"
        );
        assert_eq!(alarms[3].metric_name, contract::METRIC_THROTTLES);
        let dlq = &alarms[4];
        assert_eq!(dlq.dimensions["QueueName"], d.names.dead_letter_queue);
        assert_eq!((dlq.threshold, dlq.evaluation_periods), (1.0, 1));
        assert_eq!(
            dlq.comparison,
            ComparisonOperator::GreaterThanOrEqualToThreshold
        );
        assert!(
            alarms
                .iter()
                .all(|a| a.alarm_actions == vec!["arn:topic".to_string()])
        );
    }

    #[test]
    fn drift_names_the_changed_settings() {
        let d = spec_desired();
        let alarm = desired_alarms(&d, "arn:topic").remove(0);
        assert!(alarm_drift(&alarm, &as_actual(&alarm)).is_empty());
        let mut changed = alarm.clone();
        changed.threshold = 5.0;
        changed.alarm_actions = vec![];
        assert_eq!(
            alarm_drift(&alarm, &as_actual(&changed)),
            vec!["Threshold", "AlarmActions"]
        );
    }
}

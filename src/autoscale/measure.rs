//! Measuring a queue: one `GetQueueAttributes` per pipeline per interval, and the age of the
//! oldest message from CloudWatch only where it can change a decision.
//!
//! Why the age is read sparingly: SQS publishes `ApproximateAgeOfOldestMessage` to CloudWatch
//! once a minute, so reading it more often returns the same datapoint, and each
//! `GetMetricStatistics` is billed ($0.01 per 1,000). It is read only for pipelines that set
//! `maxOldestMessageAgeSeconds`, only while there is a backlog, and at most once per
//! [`AGE_REFRESH`]: at most 1,440 requests a day per pipeline (≈ $0.43 a month), and none
//! for an idle or age-less pipeline. The attributes SQS itself returns cost one request
//! each and are fresh, so the backlog drives scaling and the age only adds to it.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use aws_sdk_sqs::types::QueueAttributeName;
use aws_smithy_types::DateTime;

use super::policy::Observation;
use crate::aws::AwsClients;
use crate::aws::error::api;
use crate::error::Result;

/// How long a CloudWatch age reading is reused: the metric's own period.
pub const AGE_REFRESH: Duration = Duration::from_secs(60);

/// `ApproximateNumberOfMessages` and `ApproximateNumberOfMessagesNotVisible` of the queue.
pub async fn queue_backlog(aws: &AwsClients, queue_url: &str) -> Result<Observation> {
    let out = aws
        .sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(api("SQS", "GetQueueAttributes"))?;
    let attributes: BTreeMap<String, String> = out
        .attributes
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.as_str().to_string(), v))
        .collect();
    Ok(observation(&attributes))
}

/// The attributes as numbers; a missing or unparsable one counts as 0 (SQS always sends
/// both when asked, and 0 is the value that never adds Pods by mistake).
pub fn observation(attributes: &BTreeMap<String, String>) -> Observation {
    let number = |name: &str| {
        attributes
            .get(name)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    };
    Observation {
        visible: number("ApproximateNumberOfMessages"),
        in_flight: number("ApproximateNumberOfMessagesNotVisible"),
        oldest_age_seconds: None,
    }
}

/// The queue's name: the last path segment of its URL (what CloudWatch's `QueueName`
/// dimension holds).
pub fn queue_name(queue_url: &str) -> Option<&str> {
    queue_url
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
}

/// The latest one-minute maximum of `AWS/SQS ApproximateAgeOfOldestMessage` in the last five
/// minutes, or `None` when CloudWatch has no datapoint (a new or idle queue).
pub async fn oldest_message_age(aws: &AwsClients, queue_url: &str) -> Result<Option<i64>> {
    let Some(name) = queue_name(queue_url) else {
        return Ok(None);
    };
    let now = std::time::SystemTime::now();
    let out = aws
        .cloudwatch
        .get_metric_statistics()
        .namespace("AWS/SQS")
        .metric_name("ApproximateAgeOfOldestMessage")
        .dimensions(Dimension::builder().name("QueueName").value(name).build())
        .start_time(DateTime::from(now - Duration::from_secs(300)))
        .end_time(DateTime::from(now))
        .period(60)
        .statistics(Statistic::Maximum)
        .send()
        .await
        .map_err(api("CloudWatch", "GetMetricStatistics"))?;
    let latest = out
        .datapoints
        .unwrap_or_default()
        .into_iter()
        .filter_map(|d| Some((d.timestamp?, d.maximum?)))
        .max_by_key(|(at, _)| at.secs());
    Ok(latest.map(|(_, age)| age.round() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_become_an_observation() {
        let attrs = BTreeMap::from([
            ("ApproximateNumberOfMessages".to_string(), "120".to_string()),
            (
                "ApproximateNumberOfMessagesNotVisible".to_string(),
                "30".to_string(),
            ),
        ]);
        let o = observation(&attrs);
        assert_eq!((o.visible, o.in_flight, o.backlog()), (120, 30, 150));
        let broken = BTreeMap::from([("ApproximateNumberOfMessages".to_string(), "x".to_string())]);
        assert_eq!(observation(&broken).backlog(), 0);
    }

    #[test]
    fn queue_names_from_urls() {
        assert_eq!(
            queue_name("https://sqs.eu-west-1.amazonaws.com/123456789012/tp-logistics-parcels"),
            Some("tp-logistics-parcels")
        );
        assert_eq!(queue_name("http://localhost:5000/123/q/"), Some("q"));
        assert_eq!(queue_name(""), None);
    }
}

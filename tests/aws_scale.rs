//! The operator inside AWS's API quotas: with the fault layer throttling CloudWatch as AWS
//! does at its default quotas, a bulk apply paced by the client-side rate limits is never
//! throttled, and the other services are not slowed by CloudWatch's bucket.

mod controller_support;

use std::time::Duration;

use controller_support::*;
use serde_json::json;
use testenv::faults::{FaultProxy, Rule};
use tracking_operator::aws::Limits;

const RESYNC: Duration = Duration::from_secs(3600);
const PIPELINES: usize = 4;

#[tokio::test]
async fn a_bulk_apply_paced_by_the_rate_limits_is_never_throttled() {
    let kube = testenv::kube();
    let ns = kube.namespace("scale-paced").await;
    let aws = FaultProxy::start(&testenv::moto().endpoint());
    // AWS's default for PutMetricAlarm and DeleteAlarms: 3 per second.
    aws.add_rule(Rule::rate_limit("cloudwatch", 3.0, 3));
    let limits = Limits::none()
        .with_overrides(["cloudwatch=2/2"])
        .expect("limits");
    let operator = Operator::start_limited(&aws.endpoint(), &ns, RESYNC, limits).await;
    let api = pipelines(&ns).await;
    for i in 0..PIPELINES {
        create(&api, &format!("bulk-{i}"), json!({})).await;
    }
    for i in 0..PIPELINES {
        wait_ready(&api, &format!("bulk-{i}")).await;
    }
    let alarms = aws.calls("cloudwatch", "PutMetricAlarm");
    assert!(
        alarms >= 5 * PIPELINES as u64,
        "every pipeline's alarms were created: {alarms}"
    );
    assert_eq!(
        aws.faulted("cloudwatch", "*"),
        0,
        "CloudWatch calls throttled; operator calls: {:?}",
        operator.calls.snapshot()
    );
}

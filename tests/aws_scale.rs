//! The operator inside AWS's API quotas: with the fault layer throttling CloudWatch as AWS
//! does at its default quotas, a bulk apply paced by the client-side rate limits is never
//! throttled; a steady resync reads tags and hand-changed settings only when their window
//! ends, and still notices a queue deleted meanwhile.

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
        .with_overrides(["cloudwatch=1.5/1"])
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

fn tag_reads(calls: &tracking_operator::aws::CallCounter) -> u64 {
    calls
        .snapshot()
        .iter()
        .filter(|(k, _)| {
            matches!(
                k.operation.as_str(),
                "ListQueueTags" | "ListResourceTags" | "ListTagsOfResource" | "ListTagsForResource"
            )
        })
        .map(|(_, n)| n)
        .sum()
}

fn reads_of(calls: &tracking_operator::aws::CallCounter, operation: &str) -> u64 {
    calls
        .snapshot()
        .iter()
        .filter(|(k, _)| k.operation == operation)
        .map(|(_, n)| n)
        .sum()
}

/// Removes the queue's `Environment` tag out of band.
async fn untag_environment(sqs: &aws_sdk_sqs::Client, queue: &str) {
    sqs.untag_queue()
        .queue_url(queue)
        .tag_keys("Environment")
        .send()
        .await
        .expect("untag");
}

/// Waits until the queue's `Environment` tag, removed out of band, is back.
async fn tag_put_back(sqs: &aws_sdk_sqs::Client, queue: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let tags = sqs
            .list_queue_tags()
            .queue_url(queue)
            .send()
            .await
            .expect("tags")
            .tags
            .unwrap_or_default();
        if tags.contains_key("Environment") {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the removed tag was never put back"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until `n` more resync passes have run (each reads both queues' attributes).
async fn passes(calls: &tracking_operator::aws::CallCounter, n: u64) {
    let start = reads_of(calls, "GetQueueAttributes");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while reads_of(calls, "GetQueueAttributes") < start + 2 * n {
        assert!(tokio::time::Instant::now() < deadline, "no resync ran");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Tags proven complete and settings that change only by hand (a key's rotation and policy,
/// PITR and TTL, a role's inline policy) are not read again on every resync, only once the
/// window ends; a tag removed and a rotation disabled out of band are put back then.
#[tokio::test]
async fn steady_resyncs_read_tags_and_settings_again_only_after_the_window() {
    const WINDOW: Duration = Duration::from_secs(20);
    let kube = testenv::kube();
    let ns = kube.namespace("scale-tags").await;
    let endpoint = testenv::moto().endpoint();
    let operator =
        Operator::start_with_clients(&endpoint, &ns, Duration::from_secs(2), |sdk, calls| {
            tracking_operator::aws::AwsClients::with_counter(sdk, calls).recheck_tags_every(WINDOW)
        })
        .await;
    let api = pipelines(&ns).await;
    create(&api, "tags", json!({})).await;
    let p = wait_ready(&api, "tags").await;
    let outputs = p.status.unwrap().outputs;
    let queue = outputs.queue_url.unwrap();
    let key = outputs.queue_key_arn.unwrap();
    let kms = aws_sdk_kms::Client::new(&testenv::sdk_config_for(&endpoint).await);
    // The pass after the creating one reads the tags and remembers them.
    passes(&operator.calls, 2).await;
    let (tags0, queue_reads0, rotation0) = (
        tag_reads(&operator.calls),
        reads_of(&operator.calls, "GetQueueAttributes"),
        reads_of(&operator.calls, "GetKeyRotationStatus"),
    );
    kms.disable_key_rotation()
        .key_id(&key)
        .send()
        .await
        .expect("disable rotation");
    let sqs = aws_sdk_sqs::Client::new(&testenv::sdk_config_for(&endpoint).await);
    untag_environment(&sqs, &queue).await;
    passes(&operator.calls, 2).await;
    assert!(
        reads_of(&operator.calls, "GetQueueAttributes") > queue_reads0,
        "no resync ran"
    );
    assert_eq!(
        tag_reads(&operator.calls),
        tags0,
        "tags were read again inside the window"
    );
    assert_eq!(
        reads_of(&operator.calls, "GetKeyRotationStatus"),
        rotation0,
        "key settings were read again inside the window"
    );
    // After the window, the tags are read and the removed one is back.
    tag_put_back(&sqs, &queue, WINDOW + Duration::from_secs(20)).await;
    assert!(tag_reads(&operator.calls) > tags0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !kms
        .get_key_rotation_status()
        .key_id(&key)
        .send()
        .await
        .expect("rotation status")
        .key_rotation_enabled()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the key's rotation was never enabled again"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A queue URL is not resolved again inside the window, but a queue deleted meanwhile is
/// noticed (its attributes are gone) and created again on the next pass.
#[tokio::test]
async fn a_queue_deleted_inside_the_window_is_created_again() {
    let kube = testenv::kube();
    let ns = kube.namespace("scale-gone").await;
    let endpoint = testenv::moto().endpoint();
    let operator =
        Operator::start_with_clients(&endpoint, &ns, Duration::from_secs(2), |sdk, calls| {
            tracking_operator::aws::AwsClients::with_counter(sdk, calls)
                .recheck_tags_every(Duration::from_secs(600))
        })
        .await;
    let api = pipelines(&ns).await;
    create(&api, "gone", json!({})).await;
    let p = wait_ready(&api, "gone").await;
    let queue = p.status.unwrap().outputs.queue_url.unwrap();
    passes(&operator.calls, 2).await;
    let urls = reads_of(&operator.calls, "GetQueueUrl");
    passes(&operator.calls, 2).await;
    assert_eq!(
        reads_of(&operator.calls, "GetQueueUrl"),
        urls,
        "queue URLs resolved again inside the window"
    );
    let sqs = aws_sdk_sqs::Client::new(&testenv::sdk_config_for(&endpoint).await);
    sqs.delete_queue()
        .queue_url(&queue)
        .send()
        .await
        .expect("delete queue");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let back = sqs
            .get_queue_attributes()
            .queue_url(&queue)
            .send()
            .await
            .is_ok();
        if back {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the deleted queue was never created again"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// After a restart (here: a second operator process), a pipeline whose status says its AWS
/// parts were in place is trusted on the first pass: no tag and no hand-changed setting is
/// read, so 1,000 pipelines do not re-read everything at once. The re-reads come later,
/// spread over one window, and repair what changed meanwhile.
#[tokio::test]
async fn a_restarted_operator_trusts_a_converged_status_then_rereads_within_the_window() {
    const WINDOW: Duration = Duration::from_secs(10);
    let kube = testenv::kube();
    let ns = kube.namespace("scale-restart").await;
    let endpoint = testenv::moto().endpoint();
    let first = Operator::start(&endpoint, &ns, RESYNC).await;
    let api = pipelines(&ns).await;
    create(&api, "restart", json!({})).await;
    let p = wait_ready(&api, "restart").await;
    first.kill();
    let queue = p.status.unwrap().outputs.queue_url.unwrap();
    let sqs = aws_sdk_sqs::Client::new(&testenv::sdk_config_for(&endpoint).await);
    untag_environment(&sqs, &queue).await;

    let restarted = tokio::time::Instant::now();
    let second =
        Operator::start_with_clients(&endpoint, &ns, Duration::from_secs(2), |sdk, calls| {
            tracking_operator::aws::AwsClients::with_counter(sdk, calls).recheck_tags_every(WINDOW)
        })
        .await;
    passes(&second.calls, 1).await;
    assert_eq!(
        (
            tag_reads(&second.calls),
            reads_of(&second.calls, "GetKeyRotationStatus")
        ),
        (0, 0),
        "the first pass after the restart read what the status proves: {:?}",
        second.calls.snapshot()
    );
    // Within one window every tag is read again, and the removed one is back.
    // Each resource's moment in the window comes from its id, so the key's settings may be
    // due after the queue's tags: wait for the same bound, not for the tag.
    tag_put_back(&sqs, &queue, WINDOW + Duration::from_secs(20)).await;
    let deadline = restarted + WINDOW + Duration::from_secs(20);
    while reads_of(&second.calls, "GetKeyRotationStatus") == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the keys' settings were never read again after the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

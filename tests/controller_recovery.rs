//! Recovery: AWS unreachable mid-reconcile, the operator killed mid-reconcile, and leader
//! election between two replicas.

mod controller_support;

use std::time::Duration;

use controller_support::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tracking_operator::controller::leader::LeaseLock;
use tracking_operator::controller::status_writer::StatusWriter;
use tracking_operator::error::Error;

#[tokio::test]
async fn aws_unreachable_gives_ready_false_with_a_reason_and_recovers() {
    let kube = testenv::kube();
    let ns = kube.namespace("e2e-outage").await;
    let proxy = testenv::FlakyProxy::start(&testenv::moto().endpoint());
    // A short resync: whichever part is running when AWS goes away, the next pass fails.
    let _operator = Operator::start(&proxy.endpoint(), &ns, Duration::from_secs(2)).await;
    let api = pipelines(&ns).await;
    create(&api, "flaky", json!({})).await;
    wait_for(&api, "flaky", "KeysReady=True", |p| {
        is(p, "KeysReady", "True")
    })
    .await;
    proxy.set_down(true);

    let down = wait_for(&api, "flaky", "Ready=False (AWS unreachable)", |p| {
        is(p, "Ready", "False") && reason(p, "Ready").as_deref() == Some("AwsUnreachable")
    })
    .await;
    let why = message(&down, "Ready").unwrap_or_default();
    assert!(!why.is_empty(), "the Ready message says what failed");
    assert!(
        is(&down, "Reconciling", "True"),
        "a transient failure is Reconciling, not Stalled"
    );
    assert!(reason(&down, "Stalled").is_none());

    proxy.set_down(false);
    let up = wait_ready(&api, "flaky").await;
    assert!(reason(&up, "Reconciling").is_none());
    let client = kube.client().await;
    let reasons: Vec<String> = event_reasons(&client, &up)
        .await
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    assert!(
        reasons.iter().any(|r| r == "AwsUnreachable"),
        "a Warning Event: {reasons:?}"
    );
}

#[tokio::test]
async fn an_operator_killed_mid_reconcile_and_restarted_creates_no_duplicates() {
    let kube = testenv::kube();
    let ns = kube.namespace("e2e-restart").await;
    let proxy = testenv::FlakyProxy::start(&testenv::moto().endpoint());
    let first = Operator::start(&proxy.endpoint(), &ns, Duration::from_secs(3600)).await;
    let api = pipelines(&ns).await;
    create(&api, "phoenix", json!({})).await;
    // Stop the first operator as soon as it has created the keys, in the middle of its pass.
    let mut seen = None;
    for _ in 0..6000 {
        let p = api.get("phoenix").await.unwrap();
        if p.status
            .as_ref()
            .is_some_and(|s| s.outputs.queue_key_arn.is_some())
        {
            proxy.set_down(true);
            first.kill();
            seen = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = seen.expect("the first operator created keys");
    let killed_ready = is(&before, "Ready", "True");

    let _second = moto_operator(&ns, Duration::from_secs(3600)).await;
    let p = wait_ready(&api, "phoenix").await;
    let outputs = p.status.clone().unwrap().outputs;
    assert_eq!(
        outputs.queue_key_arn,
        before.status.unwrap().outputs.queue_key_arn
    );

    // Keys have no unique name in AWS, so they are where duplicates would show.
    let sdk = testenv::moto().sdk_config().await;
    let kms = aws_sdk_kms::Client::new(&sdk);
    let uid = p.uid().unwrap();
    let mut ours = 0;
    let mut marker = None;
    loop {
        let page = kms
            .list_keys()
            .set_marker(marker.clone())
            .send()
            .await
            .unwrap();
        for key in page.keys() {
            let Some(id) = key.key_id() else { continue };
            let tags = kms.list_resource_tags().key_id(id).send().await.unwrap();
            if tags
                .tags()
                .iter()
                .any(|t| t.tag_key() == "tracking-operator.io/pipeline-uid" && t.tag_value() == uid)
            {
                ours += 1;
            }
        }
        marker = page.next_marker().map(str::to_string);
        if !page.truncated() || marker.is_none() {
            break;
        }
    }
    assert_eq!(
        ours, 2,
        "exactly the two keys (killed while Ready: {killed_ready})"
    );
}

#[tokio::test]
async fn only_one_replica_holds_the_lease_until_it_stops_renewing() {
    let kube = testenv::kube();
    let ns = kube.namespace("lease").await;
    let client = kube.client().await;
    let term = Duration::from_secs(2);
    let a = LeaseLock::new(client.clone(), &ns, "tracking-operator", "replica-a", term);
    let b = LeaseLock::new(client.clone(), &ns, "tracking-operator", "replica-b", term);
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(
        !b.try_acquire_or_renew().await.unwrap(),
        "b must not take a held lease"
    );
    assert!(a.try_acquire_or_renew().await.unwrap(), "the holder renews");
    // a stops renewing (crashed); after the term b takes over and a cannot come back.
    tokio::time::sleep(term + Duration::from_secs(1)).await;
    assert!(b.try_acquire_or_renew().await.unwrap());
    assert!(!a.try_acquire_or_renew().await.unwrap());
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, response)
}

#[tokio::test]
async fn health_readiness_and_controller_runtime_metrics() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use tracking_operator::aws::CallCounter;
    use tracking_operator::http::{Endpoints, Health, serve};
    use tracking_operator::metrics::Metrics;

    let port = testenv::process::free_port();
    let health = Arc::new(Health::default());
    let metrics = Arc::new(Metrics::new(CallCounter::new()));
    metrics.reconciled(None);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    tokio::spawn(serve(addr, Endpoints::All, health.clone(), metrics));
    let get = move |path: &'static str| tokio::task::spawn_blocking(move || http_get(port, path));
    let mut up = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "HTTP server did not start");
    assert_eq!(get("/healthz").await.unwrap().0, 200);
    assert_eq!(
        get("/readyz").await.unwrap().0,
        503,
        "not ready before the CRD is seen"
    );
    health.crd_present.store(true, Ordering::Relaxed);
    health.running.store(true, Ordering::Relaxed);
    assert_eq!(get("/readyz").await.unwrap().0, 200);
    let (code, body) = get("/metrics").await.unwrap();
    assert_eq!(code, 200);
    assert!(
        body.contains(r#"controller_runtime_reconcile_total{controller="trackingpipeline",result="success"} 1"#),
        "{body}"
    );
}

#[tokio::test]
async fn probes_and_metrics_on_separate_listeners() {
    use std::sync::Arc;
    use tracking_operator::aws::CallCounter;
    use tracking_operator::http::{Endpoints, Health, serve};
    use tracking_operator::metrics::Metrics;

    let health = Arc::new(Health::default());
    let metrics = Arc::new(Metrics::new(CallCounter::new()));
    let probe_port = testenv::process::free_port();
    let metrics_port = testenv::process::free_port();
    for (port, endpoints) in [
        (probe_port, Endpoints::Probes),
        (metrics_port, Endpoints::Metrics),
    ] {
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        tokio::spawn(serve(addr, endpoints, health.clone(), metrics.clone()));
    }
    for port in [probe_port, metrics_port] {
        let mut up = false;
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(up, "HTTP server on {port} did not start");
    }
    let get =
        |port: u16, path: &'static str| tokio::task::spawn_blocking(move || http_get(port, path));
    assert_eq!(get(probe_port, "/healthz").await.unwrap().0, 200);
    assert_eq!(get(probe_port, "/metrics").await.unwrap().0, 404);
    assert_eq!(get(metrics_port, "/metrics").await.unwrap().0, 200);
    assert_eq!(get(metrics_port, "/healthz").await.unwrap().0, 404);
    assert_eq!(get(metrics_port, "/readyz").await.unwrap().0, 404);
}

#[tokio::test]
async fn a_hung_reconcile_fails_healthz_until_it_returns() {
    use testenv::faults::{FaultProxy, Rule};
    use tracking_operator::controller::liveness::Liveness;
    use tracking_operator::http::{Endpoints, Health, serve};

    let kube = testenv::kube();
    let ns = kube.namespace("e2e-wedged").await;
    let aws = FaultProxy::start(&testenv::moto().endpoint());
    // AWS holds one answer for 15 s (within the SDK's 30 s attempt timeout): a reconcile
    // that makes no progress for longer than the limit.
    aws.add_rule(Rule::delay("kms", "CreateKey", Duration::from_secs(15)).times(1));
    let health = Health {
        liveness: Liveness::new(Duration::from_secs(6)),
        ..Health::default()
    };
    let operator = Operator::start_with_health(
        &aws.endpoint(),
        &ns,
        Duration::from_secs(3600),
        |_| {},
        health,
    )
    .await;
    let port = testenv::process::free_port();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    tokio::spawn(serve(
        addr,
        Endpoints::Probes,
        operator.health.clone(),
        operator.metrics.clone(),
    ));
    let get = move || tokio::task::spawn_blocking(move || http_get(port, "/healthz"));
    let api = pipelines(&ns).await;
    create(&api, "wedged", json!({})).await;

    let mut wedged = None;
    for _ in 0..100 {
        // Err while the listener is not up yet.
        if let Ok((503, body)) = get().await {
            wedged = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let body = wedged.expect("/healthz never failed while the reconcile hung");
    assert!(body.contains("a reconcile has been running"), "{body}");

    wait_ready(&api, "wedged").await;
    // Later passes are short but not instant on a loaded machine: poll.
    let alive = eventually(|| async { matches!(get().await, Ok((200, _))) }).await;
    assert!(alive, "alive again once the reconcile returned");
}

fn condition(type_: &str, status: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: "Test".into(),
        message: String::new(),
        observed_generation: Some(1),
        last_transition_time: Time(Timestamp::now()),
    }
}

/// A pass that starts from a copy older than the API server's (the watch cache had not yet
/// delivered our own last write) must not put that copy's conditions back over the newer
/// ones; another writer's key moving the version on is no reason to give up.
#[tokio::test]
async fn a_status_write_from_an_out_of_date_copy_is_refused_and_changes_nothing() {
    let kube = testenv::kube();
    let ns = kube.namespace("stale-status").await;
    let api = pipelines(&ns).await;
    let created = create(&api, "stale", json!({})).await;

    let mut pass = StatusWriter::new(api.clone(), &created);
    pass.current.conditions = vec![condition("Ready", "True")];
    pass.flush().await.expect("a write from the current copy");

    // The autoscaler writes its own key in between: the pass's next write still lands.
    let backlog = json!({ "status": { "worker": { "backlog": 5 } } });
    api.patch_status("stale", &PatchParams::default(), &Patch::Merge(backlog))
        .await
        .expect("autoscaler-like write");
    pass.current.conditions.push(condition("KeysReady", "True"));
    pass.flush()
        .await
        .expect("a conflict in another writer's key is retried");

    // A pass that read the pipeline before any of this.
    let mut late = StatusWriter::new(api.clone(), &created);
    late.current.conditions = vec![condition("Ready", "Unknown")];
    let refused = late.flush().await;
    assert!(matches!(refused, Err(Error::StaleStatus(_))), "{refused:?}");

    let now = api.get_status("stale").await.expect("get");
    assert!(is(&now, "Ready", "True"), "{:?}", now.status);
    assert!(is(&now, "KeysReady", "True"), "{:?}", now.status);
    let worker = now.status.and_then(|s| s.worker);
    assert_eq!(worker.and_then(|w| w.backlog), Some(5));
}

//! Two operator processes (the real binary, as two Pods of a rolling update would run) share
//! one Lease, each sending its AWS calls through its own fault proxy, which counts them: only
//! the holder ever calls AWS, and SIGTERM makes the holder stop and release the Lease so the
//! other takes over at once rather than after the Lease runs out.

mod controller_support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use controller_support::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde_json::json;
use testenv::faults::FaultProxy;

const LEASE: &str = "tracking-operator";

/// The operator process, killed if the test fails half-way.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_operator(ns: &str, identity: &str, endpoint: &str) -> Process {
    let log = std::env::temp_dir().join(format!("{ns}-{identity}.log"));
    let log = std::fs::File::create(&log).expect("operator log");
    Command::new(env!("CARGO_BIN_EXE_tracking-operator"))
        .args(["run", "--log-format", "text"])
        .args([
            "--namespace",
            ns,
            "--lease-namespace",
            ns,
            "--lease-name",
            LEASE,
        ])
        .args(["--identity", identity, "--metrics-addr", "127.0.0.1:0"])
        .args(["--aws-endpoint-url", endpoint, "--region", testenv::REGION])
        .args(["--worker-image", "example.com/tracking-worker:test"])
        .env("KUBECONFIG", testenv::kube().kubeconfig_path())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("LEADER_ELECT")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(Process)
        .expect("start the operator binary")
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt(LEASE)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

async fn wait_holder(leases: &Api<Lease>, want: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if holder(leases).await.as_deref() == Some(want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{want} did not hold the Lease within {within:?} (holder: {:?})",
            holder(leases).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn total(p: &FaultProxy) -> u64 {
    p.call_counts().values().sum()
}

#[tokio::test]
async fn sigterm_hands_the_lease_over_and_two_processes_never_both_call_aws() {
    let kube = testenv::kube();
    let ns = kube.namespace("lease-term").await;
    let leases: Api<Lease> = Api::namespaced(kube.client().await, &ns);
    let (aws_a, aws_b) = (
        FaultProxy::start(&testenv::moto().endpoint()),
        FaultProxy::start(&testenv::moto().endpoint()),
    );
    let mut a = spawn_operator(&ns, "replica-a", &aws_a.endpoint());
    wait_holder(&leases, "replica-a", Duration::from_secs(60)).await;
    let b = spawn_operator(&ns, "replica-b", &aws_b.endpoint());

    let api = pipelines(&ns).await;
    create(&api, "first", json!({})).await;
    wait_ready(&api, "first").await;
    assert!(total(&aws_a) > 0, "the holder works");
    assert_eq!(total(&aws_b), 0, "the standby never calls AWS");

    let status = Command::new("kill")
        .args(["-TERM", &a.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exited = Instant::now();
    let code = loop {
        if let Some(code) = a.0.try_wait().expect("wait") {
            break code;
        }
        assert!(
            exited.elapsed() < Duration::from_secs(20),
            "SIGTERM did not stop the operator"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(code.success(), "a clean stop: {code:?}");
    let a_calls = total(&aws_a);
    // Released: the standby's next election round (every 5 s) wins, without waiting 15 s
    // for the Lease to run out.
    let took = wait_holder(&leases, "replica-b", Duration::from_secs(60)).await;
    assert!(
        took < Duration::from_secs(10),
        "took {took:?}: the Lease was not released"
    );

    create(&api, "second", json!({})).await;
    wait_ready(&api, "second").await;
    assert!(total(&aws_b) > 0, "the new holder works");
    assert_eq!(total(&aws_a), a_calls, "the stopped one never calls again");
    drop(b);
}

//! The node leaves the host as it found it: `testenv up --node` (what `make env-up` runs),
//! a Pod run to completion of its start, then `testenv down`, compared with a snapshot of the
//! host taken before (sysctls, paths, links, iptables and nftables, mounts, processes).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use testenv::node::host::HostState;

#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    state: HostState,
    links: Vec<String>,
    iptables: Vec<String>,
    mounts: Vec<String>,
    processes: Vec<String>,
}

fn lines(cmd: &str, args: &[&str]) -> Vec<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .expect("run host command");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn snapshot() -> Snapshot {
    let mut iptables = Vec::new();
    for cmd in ["iptables-save", "ip6tables-save"] {
        // Comments and packet counters change by themselves; the rules and chains are the state.
        iptables.extend(
            lines(cmd, &[])
                .into_iter()
                .filter(|l| !l.starts_with('#'))
                .map(|l| match l.split_once(" [") {
                    Some((chain, _)) if l.starts_with(':') => chain.to_string(),
                    _ => l,
                }),
        );
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|m| m.contains("testenv") || m.contains("kubelet") || m.contains("containerd"))
        .collect();
    let processes = lines("ps", &["-eo", "comm="])
        .into_iter()
        .filter(|c| {
            [
                "kubelet",
                "kube-proxy",
                "kube-scheduler",
                "containerd",
                "containerd-shim",
                "pause",
            ]
            .iter()
            .any(|n| c.trim() == *n || c.trim().starts_with("containerd-shim"))
        })
        .collect();
    let mut links: Vec<String> = lines("ip", &["-o", "link", "show"])
        .into_iter()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
        .collect();
    links.sort();
    Snapshot {
        state: HostState::read(),
        links,
        iptables,
        mounts,
        processes,
    }
}

fn testenv(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_testenv"))
        .args(args)
        .output()
        .expect("run testenv");
    assert!(
        out.status.success(),
        "testenv {args:?}: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_node_runs_pods_and_teardown_leaves_nothing_behind() {
    // A node left by a killed test binary is cleaned up first, so "before" is the host's own.
    testenv::node::recover_stale().expect("no live node environment on this host");
    let before = snapshot();
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("env");
    let state_str = state.display().to_string();
    testenv(&["up", "--node", "--dir", &state_str]);

    let result = std::panic::catch_unwind(|| run_a_pod(&state));
    testenv(&["down", "--dir", &state_str]);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    let after = snapshot();
    assert_eq!(before, after, "the host differs after teardown");
    assert!(!state.exists(), "the state folder is removed");
}

fn run_a_pod(state: &Path) {
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap()
            .trim(),
        "0",
        "IP forwarding stays off while the node runs"
    );
    let kubeconfig = state.join("kubeconfig");
    testenv::block_on(async move {
        let client = testenv::client_from(&kubeconfig).await.expect("client");
        let pods: Api<Pod> = Api::namespaced(client, "default");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "sandbox"},
            "spec": {
                "containers": [{
                    "name": "pause", "image": testenv::node::PAUSE_IMAGE,
                    "imagePullPolicy": "Never"
                }],
                "terminationGracePeriodSeconds": 1
            }
        }))
        .expect("pod json");
        // The default ServiceAccount appears a moment after the namespace controller starts.
        for _ in 0..50 {
            if pods.create(&PostParams::default(), &pod).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for _ in 0..150 {
            let p = pods.get("sandbox").await.expect("get pod");
            let phase = p.status.and_then(|s| s.phase).unwrap_or_default();
            if phase == "Running" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("the Pod did not reach Running in 30 s");
    });
}

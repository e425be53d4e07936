//! Test environment: a real kube-apiserver + etcd and a real AWS API (moto's server mode),
//! started on loopback ports, shared by all tests of one test binary.
//!
//! ```no_run
//! # async fn t() {
//! let kube = testenv::kube();                 // etcd + kube-apiserver, CRDs from crds/ installed
//! let client = kube.client().await;
//! let ns = kube.namespace("demo").await;
//! let aws = testenv::moto().sdk_config().await;
//! # }
//! ```

mod certs;
mod control_plane;
pub mod faults;
mod moto;
pub mod network;
pub mod node;
pub mod process;
mod proxy;
pub mod tools;

use std::sync::OnceLock;

pub use control_plane::{ControlPlane, block_on, client_from, install_crds};
pub use moto::{Moto, REGION, sdk_config_for};
pub use node::Cluster;
pub use proxy::FlakyProxy;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    MissingTool(String),
    #[error("{name} exited early ({status}); last lines of its log:\n{log}")]
    Exited {
        name: String,
        status: String,
        log: String,
    },
    #[error("{name} did not become ready in time; last lines of its log:\n{log}")]
    Timeout { name: String, log: String },
    #[error("I/O: {0}")]
    Io(String),
    #[error("Kubernetes API: {0}")]
    Kube(String),
}

static KUBE: OnceLock<ControlPlane> = OnceLock::new();
static MOTO: OnceLock<Moto> = OnceLock::new();
static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// A control plane with a real node (kubelet + containerd), and moto on the pod bridge, for
/// test binaries where Pods must run. Opt-in: a binary that calls this must not also call
/// [`kube`] or [`moto`]; use `cluster().kube` and `cluster().moto`. Needs root and
/// `make tools` (which builds the node's binaries and installs containerd).
pub fn cluster() -> &'static Cluster {
    // No CRDs here: on a node the chart installs them, as it does for a user.
    CLUSTER.get_or_init(|| {
        Cluster::start(&state_dir("kube"), false).unwrap_or_else(|e| panic!("testenv: {e}"))
    })
}

/// The control plane shared by this test binary: started on first use with the CRDs from
/// `crds/` installed, stopped when the binary exits (even after failed tests).
pub fn kube() -> &'static ControlPlane {
    KUBE.get_or_init(|| {
        let dir = state_dir("kube");
        let cp = ControlPlane::start(&dir, false).unwrap_or_else(|e| panic!("testenv: {e}"));
        let crds = tools::repo_root().join("crds");
        if crds.is_dir() {
            let kubeconfig = cp.kubeconfig_path().to_path_buf();
            block_on(async move {
                let client = client_from(&kubeconfig).await?;
                install_crds(&client, &crds).await
            })
            .unwrap_or_else(|e| panic!("testenv: install CRDs: {e}"));
        }
        cp
    })
}

/// The moto server shared by this test binary.
pub fn moto() -> &'static Moto {
    MOTO.get_or_init(|| {
        let dir = state_dir("moto");
        Moto::start(&dir, false).unwrap_or_else(|e| panic!("testenv: {e}"))
    })
}

fn state_dir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("testenv-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("testenv: create {}: {e}", dir.display()));
    process::remove_at_exit(&dir);
    dir
}

/// `prefix-xxxxxx` with six random lowercase letters and digits: valid for Kubernetes and AWS.
pub fn unique_name(prefix: &str) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let suffix: String = (0..6)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect();
    format!("{prefix}-{suffix}")
}

pub(crate) fn random_token() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..32)
        .map(|_| format!("{:x}", rng.random_range(0..16u8)))
        .collect()
}

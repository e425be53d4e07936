//! A real node: containerd + runc + CNI bridge, kube-scheduler, kubelet and kube-proxy, next to
//! a control plane that binds on the bridge address, and moto where Pods reach it.
//!
//! Start order matters: host state saved → bridge → etcd/API server/kcm (on the bridge) → moto
//! → containerd (+ the pause image) → scheduler → kubelet → kube-proxy. Teardown runs in the
//! reverse order and restores the host ([`host::HostState`]); it is one function used both by
//! the test binary's exit hook and by `testenv down`, driven by files in the state folder.

pub mod host;
mod images;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node as KubeNode;
use kube::Api;

use crate::control_plane::kubeconfig_yaml;
use crate::network::{self, BRIDGE, HOST_IP, POD_CIDR};
use crate::process::{self, Managed, wait_until};
use crate::{ControlPlane, Error, Moto, tools};

pub use images::{PAUSE_REF as PAUSE_IMAGE, image_tar, import_image};

pub const NODE_NAME: &str = "node-1";
/// Users of the node's components and their groups, as the Node authorizer and the bootstrap
/// RBAC bindings name them.
pub const COMPONENT_USERS: [(&str, &str); 3] = [
    ("system:node:node-1", "system:nodes"),
    ("system:kube-scheduler", "system:authenticated"),
    ("system:kube-proxy", "system:authenticated"),
];
const KUBE_PROXY_HEALTH: u16 = 10256;

/// A component's token, derived from the admin token so the control plane and the node agree
/// without passing more state around.
pub fn component_token(admin: &str, user: &str) -> String {
    let tag: String = user.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    format!("{}{tag}", &admin[..16])
}

/// Control plane, moto and node, started together. Dropping it is not needed: the exit hook
/// (or `testenv down`) tears it down.
pub struct Cluster {
    pub kube: ControlPlane,
    pub moto: Moto,
    pub node: Node,
}

pub struct Node {
    dir: PathBuf,
    procs: Vec<Managed>,
}

impl Cluster {
    /// Everything in `dir`. Fails with a clear message when another node holds the bridge.
    pub fn start(dir: &Path, detached: bool) -> Result<Self, Error> {
        let assets = tools::node_assets()?;
        recover_stale()?;
        let node_dir = dir.join("node");
        std::fs::create_dir_all(node_dir.join("logs")).map_err(io)?;
        host::HostState::read().save(&node_dir.join("host.json"))?;
        std::fs::write(node_dir.join("owner"), std::process::id().to_string()).map_err(io)?;
        network::create_bridge()?;
        if !detached {
            register_teardown(dir);
        }
        let kube = ControlPlane::start_with(dir, detached, true)?;
        let moto = Moto::start_on(&HOST_IP.to_string(), &dir.join("logs"), detached)?;
        let node = Node::start(dir, &assets, &kube, detached)?;
        Ok(Self { kube, moto, node })
    }

    /// The pids of every process, for `make env-up` (stopped by `testenv down`).
    pub fn into_pids(self) -> Vec<u32> {
        let mut pids = self.node.into_pids();
        pids.extend(self.kube.into_pids());
        pids.push(self.moto.into_pid());
        pids
    }
}

impl Node {
    fn start(
        dir: &Path,
        assets: &Path,
        kube: &ControlPlane,
        detached: bool,
    ) -> Result<Self, Error> {
        let nd = dir.join("node");
        let logs = nd.join("logs");
        let ca = std::fs::read_to_string(dir.join("ca.crt")).map_err(io)?;
        let kubeconfig = |user: &str, file: &str| -> Result<PathBuf, Error> {
            let path = nd.join(file);
            let token = component_token(kube.admin_token(), user);
            std::fs::write(&path, kubeconfig_yaml(kube.server(), &ca, &token)).map_err(io)?;
            Ok(path)
        };
        let mut procs = Vec::new();

        // containerd: its own root, state, sockets and runc root, never the system's.
        let ctrd = nd.join("containerd");
        for sub in ["root", "state", "opt", "runc"] {
            std::fs::create_dir_all(ctrd.join(sub)).map_err(io)?;
        }
        std::fs::create_dir_all(nd.join("cni/net.d")).map_err(io)?;
        std::fs::write(ctrd.join("config.toml"), containerd_config(&nd)).map_err(io)?;
        std::fs::write(nd.join("cni/net.d/10-pods.conflist"), cni_config(&nd)).map_err(io)?;
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(ctrd.join("config.toml"));
        let mut containerd =
            process::start("containerd", cmd, &logs.join("containerd.log"), detached)?;
        let sock = socket(&nd);
        wait_until(&mut containerd, Duration::from_secs(30), || {
            sock.exists()
                && Command::new("ctr")
                    .arg("-a")
                    .arg(&sock)
                    .args(["version"])
                    .output()
                    .is_ok_and(|o| o.status.success())
        })?;
        procs.push(containerd);
        let pause = images::image_tar(
            "pause",
            &assets.join("pause"),
            &nd.join("pause.tar"),
            images::PAUSE_REF,
        )?;
        images::import_into(&sock, &pause)?;

        let mut cmd = Command::new(assets.join("kube-scheduler"));
        cmd.arg(format!(
            "--kubeconfig={}",
            kubeconfig("system:kube-scheduler", "scheduler.kubeconfig")?.display()
        ))
        .args(["--leader-elect=false", "--secure-port=0", "--v=1"]);
        procs.push(process::start(
            "kube-scheduler",
            cmd,
            &logs.join("kube-scheduler.log"),
            detached,
        )?);

        std::fs::write(nd.join("kubelet.yaml"), kubelet_config(dir, &nd)).map_err(io)?;
        let mut cmd = Command::new(assets.join("kubelet"));
        cmd.arg(format!("--config={}", nd.join("kubelet.yaml").display()))
            .arg(format!(
                "--kubeconfig={}",
                kubeconfig("system:node:node-1", "kubelet.kubeconfig")?.display()
            ))
            .arg(format!("--root-dir={}", nd.join("kubelet/root").display()))
            .arg(format!("--cert-dir={}", nd.join("kubelet/pki").display()))
            .arg(format!("--hostname-override={NODE_NAME}"))
            .arg(format!("--node-ip={HOST_IP}"))
            .arg("--v=1");
        let mut kubelet = process::start("kubelet", cmd, &logs.join("kubelet.log"), detached)?;
        let kc = kube.kubeconfig_path().to_path_buf();
        wait_until(&mut kubelet, Duration::from_secs(60), || {
            crate::block_on(node_ready(kc.clone())).unwrap_or(false)
        })?;
        procs.push(kubelet);

        let mut cmd = Command::new(assets.join("kube-proxy"));
        cmd.arg(format!(
            "--kubeconfig={}",
            kubeconfig("system:kube-proxy", "proxy.kubeconfig")?.display()
        ))
        .arg(format!("--hostname-override={NODE_NAME}"))
        .arg("--proxy-mode=iptables")
        .arg(format!("--cluster-cidr={POD_CIDR}"))
        .arg("--metrics-bind-address=127.0.0.1:10249")
        .arg(format!(
            "--healthz-bind-address=127.0.0.1:{KUBE_PROXY_HEALTH}"
        ))
        // Zeroes leave the host's conntrack sysctls alone; no localhost NodePorts keeps
        // route_localnet off.
        .args([
            "--conntrack-max-per-core=0",
            "--conntrack-tcp-timeout-established=0",
            "--conntrack-tcp-timeout-close-wait=0",
            "--iptables-localhost-nodeports=false",
            "--v=1",
        ]);
        let mut proxy = process::start("kube-proxy", cmd, &logs.join("kube-proxy.log"), detached)?;
        // A Pod that starts before the first sync cannot reach the `kubernetes` Service.
        wait_until(&mut proxy, Duration::from_secs(30), || {
            process::http_ok(KUBE_PROXY_HEALTH, "/healthz")
        })?;
        procs.push(proxy);

        let pids: String = procs
            .iter()
            .map(|p| format!("{} {}\n", p.pid(), p.name))
            .collect();
        std::fs::write(nd.join("pids"), pids).map_err(io)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            procs,
        })
    }

    /// containerd's socket, for `ctr -a` (images, containers).
    pub fn containerd_socket(&self) -> PathBuf {
        socket(&self.dir.join("node"))
    }

    /// Imports an OCI-layout tarball (see `hack/mkimage.py`) into the node's image store.
    pub fn import(&self, tar: &Path) -> Result<(), Error> {
        images::import_into(&self.containerd_socket(), tar)
    }

    /// The pod logs folder (`kubectl logs` reads through the kubelet; this is for failures).
    pub fn pod_logs(&self) -> PathBuf {
        self.dir.join("node/pod-logs")
    }

    pub fn into_pids(self) -> Vec<u32> {
        let pids = self.procs.iter().map(Managed::pid).collect();
        for p in self.procs {
            std::mem::forget(p);
        }
        pids
    }
}

fn socket(node_dir: &Path) -> PathBuf {
    node_dir.join("containerd/containerd.sock")
}

fn io(e: std::io::Error) -> Error {
    Error::Io(e.to_string())
}

async fn node_ready(kubeconfig: PathBuf) -> Result<bool, Error> {
    let client = crate::client_from(&kubeconfig).await?;
    let nodes: Api<KubeNode> = Api::all(client);
    let Ok(node) = nodes.get(NODE_NAME).await else {
        return Ok(false);
    };
    let ready = node
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let tainted = node
        .spec
        .and_then(|s| s.taints)
        .unwrap_or_default()
        .iter()
        .any(|t| t.effect == "NoSchedule");
    Ok(ready && !tainted)
}

/// Stops the node and restores the host; safe to run twice and on a half-started node.
/// The control plane and moto are stopped by the caller (their pids are elsewhere).
pub fn teardown(dir: &Path) {
    let nd = dir.join("node");
    let procs: Vec<(u32, String)> = std::fs::read_to_string(nd.join("pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (pid, name) = l.split_once(' ')?;
            Some((pid.parse().ok()?, name.to_string()))
        })
        .collect();
    let pid_of = |name: &str| procs.iter().find(|(_, n)| n == name).map(|(p, _)| *p);
    // The kubelet first, so it restarts nothing; then every container, while containerd runs.
    if let Some(pid) = pid_of("kubelet") {
        process::terminate(pid);
    }
    let sock = socket(&nd);
    if sock.exists() {
        images::remove_all_containers(&sock);
    }
    if let Some(pid) = pid_of("kube-proxy") {
        process::terminate(pid);
    }
    if let Ok(assets) = tools::node_assets() {
        let _ = Command::new(assets.join("kube-proxy"))
            .args(["--cleanup", "--proxy-mode=iptables"])
            .output();
    }
    for name in ["kube-scheduler", "containerd"] {
        if let Some(pid) = pid_of(name) {
            process::terminate(pid);
        }
    }
    host::unmount_under(&nd);
    network::delete_bridge();
    host::remove_pod_cgroups();
    if let Some(state) = host::HostState::load(&nd.join("host.json")) {
        state.restore();
    }
    let _ = std::fs::remove_file(nd.join("pids"));
}

/// A node whose owner died without tearing down (SIGKILL) still holds the bridge: clean it up.
/// A live owner means another environment runs; say so instead of breaking it.
pub fn recover_stale() -> Result<(), Error> {
    if !network::bridge_exists() {
        return Ok(());
    }
    for dir in state_dirs() {
        let owner = std::fs::read_to_string(dir.join("node/owner")).unwrap_or_default();
        match owner.trim().parse::<u32>() {
            Ok(pid) if process::alive(pid) => {
                return Err(Error::Io(format!(
                    "the pod bridge {BRIDGE} is in use by process {pid} (state in {}); stop it \
                     (make env-down) before starting another node",
                    dir.display()
                )));
            }
            _ => teardown(&dir),
        }
    }
    if network::bridge_exists() {
        return Err(Error::Io(format!(
            "the pod bridge {BRIDGE} exists but no test environment owns it; remove it with \
             `ip link del {BRIDGE}` if nothing else uses it"
        )));
    }
    Ok(())
}

/// State folders that may hold a node: the tests' (`$TMPDIR/testenv-kube-*`) and
/// `make env-up`'s (`.local`, recorded in the tmp marker below).
fn state_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(std::env::temp_dir())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.join("node/host.json").is_file())
                .collect()
        })
        .unwrap_or_default();
    if let Ok(text) = std::fs::read_to_string(std::env::temp_dir().join("testenv-node-local")) {
        let p = PathBuf::from(text.trim());
        if p.join("node/host.json").is_file() {
            dirs.push(p);
        }
    }
    dirs
}

/// Records where a detached node's state lives, so a later start can find it if it was left.
pub fn record_detached(dir: &Path) {
    let _ = std::fs::write(
        std::env::temp_dir().join("testenv-node-local"),
        dir.display().to_string(),
    );
}

fn register_teardown(dir: &Path) {
    use std::sync::Mutex;
    static DIR: Mutex<Option<PathBuf>> = Mutex::new(None);
    extern "C" fn at_exit() {
        let dir = DIR.lock().ok().and_then(|d| d.clone());
        if let Some(dir) = dir {
            teardown(&dir);
        }
    }
    *DIR.lock().unwrap_or_else(|e| e.into_inner()) = Some(dir.to_path_buf());
    // Registered after the process layer's hook, so it runs first (atexit is LIFO): the node
    // must stop before the API server and etcd do.
    process::ensure_exit_hook();
    // SAFETY: registering a plain extern "C" fn.
    unsafe {
        libc::atexit(at_exit);
    }
}

fn containerd_config(nd: &Path) -> String {
    let d = nd.join("containerd");
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Network namespaces under the state folder, not /var/run/netns.
  netns_mounts_under_state_dir = true
  # Root here lacks CAP_SYS_RESOURCE; CRI's -998 for sandboxes would fail every runc create.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{runc}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
    max_conf_num = 1
"#,
        root = d.join("root").display(),
        state = d.join("state").display(),
        sock = d.join("containerd.sock").display(),
        opt = d.join("opt").display(),
        runc = d.join("runc").display(),
        cni = nd.join("cni/net.d").display(),
        pause = images::PAUSE_REF,
    )
}

/// The bridge plugin reuses our bridge and its address (`isGateway: false`: with true it turns
/// IP forwarding on); no masquerade, so Pod traffic cannot leave the machine.
fn cni_config(nd: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "pods",
        "plugins": [
            {
                "type": "bridge", "bridge": BRIDGE, "isGateway": false, "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": nd.join("cni/ipam").display().to_string(),
                    "ranges": [[{"subnet": POD_CIDR, "gateway": HOST_IP.to_string()}]],
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            },
            {"type": "loopback"}
        ]
    })
    .to_string()
}

fn kubelet_config(dir: &Path, nd: &Path) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://{sock}
address: {HOST_IP}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: false}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: AlwaysAllow}}
makeIPTablesUtilChains: false
podLogsDir: {logs}
volumePluginDir: {flex}
failSwapOn: false
evictionHard: {{memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}}
# The imported images cannot be pulled again: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
"#,
        sock = socket(nd).display(),
        ca = dir.join("ca.crt").display(),
        logs = nd.join("pod-logs").display(),
        flex = nd.join("flexvolume").display(),
    )
}

/// Waits until `check` holds or `timeout` passes (for callers without a process to watch).
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

//! What a node changes on the host, saved before it starts and put back after it stops.
//!
//! The kubelet rewrites a few sysctls at every start and creates fixed paths (it hardcodes
//! some of them); kube-proxy leaves iptables chains behind even after `--cleanup`; the pod
//! sandboxes leave mounts and cgroups. [`HostState`] is written to the state folder before the
//! node starts, so `testenv down` (another process) can restore it too.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::network::output;

/// Sysctls the kubelet or kube-proxy may set; forwarding must stay off throughout.
const SYSCTLS: &[&str] = &[
    "vm/overcommit_memory",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
];

/// Paths the kubelet, containerd or the CNI plugins create outside the state folder.
const HOST_PATHS: &[&str] = &[
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/cni",
    "/run/mount",
    "/run/containerd",
    "/usr/libexec/kubernetes",
    "/var/run/netns",
];

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    pub sysctls: BTreeMap<String, String>,
    /// Which of [`HOST_PATHS`] existed.
    pub paths: BTreeMap<String, bool>,
    /// `family name` of every nftables table.
    pub nft_tables: Vec<String>,
}

impl HostState {
    pub fn read() -> Self {
        let sysctls = SYSCTLS
            .iter()
            .filter_map(|k| {
                std::fs::read_to_string(Path::new("/proc/sys").join(k))
                    .ok()
                    .map(|v| (k.to_string(), v.trim().to_string()))
            })
            .collect();
        let paths = HOST_PATHS
            .iter()
            .map(|p| (p.to_string(), Path::new(p).exists()))
            .collect();
        Self {
            sysctls,
            paths,
            nft_tables: nft_tables(),
        }
    }

    pub fn save(&self, file: &Path) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Io(e.to_string()))?;
        std::fs::write(file, text).map_err(|e| Error::Io(format!("{}: {e}", file.display())))
    }

    pub fn load(file: &Path) -> Option<Self> {
        serde_json::from_str(&std::fs::read_to_string(file).ok()?).ok()
    }

    /// Puts back what differs from `self`: sysctls, paths that did not exist, iptables chains
    /// named KUBE-*, and nftables tables that did not exist.
    pub fn restore(&self) {
        for (key, value) in &self.sysctls {
            let path = Path::new("/proc/sys").join(key);
            if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() != value) {
                let _ = std::fs::write(&path, value);
            }
        }
        remove_kube_chains();
        for table in nft_tables() {
            if !self.nft_tables.contains(&table) {
                let mut args = vec!["delete", "table"];
                args.extend(table.split_whitespace());
                let _ = crate::network::run("nft", &args);
            }
        }
        for (path, existed) in &self.paths {
            if !existed && Path::new(path).exists() {
                unmount_under(Path::new(path));
                let _ = std::fs::remove_dir_all(path);
            }
        }
    }
}

fn nft_tables() -> Vec<String> {
    let mut tables: Vec<String> = output("nft", &["list", "tables"])
        .lines()
        .filter_map(|l| l.strip_prefix("table "))
        .map(str::to_string)
        .collect();
    tables.sort();
    tables
}

/// Deletes every rule that jumps to a KUBE-* chain, then the chains, in every table, for
/// IPv4 and IPv6 (`kube-proxy --cleanup` leaves KUBE-FIREWALL and friends).
fn remove_kube_chains() {
    for cmd in ["iptables", "ip6tables"] {
        for table in ["filter", "nat", "mangle"] {
            let rules = output(cmd, &["-t", table, "-S"]);
            for rule in rules.lines().filter(|r| r.starts_with("-A ")) {
                let words: Vec<&str> = rule.split_whitespace().collect();
                let jumps_kube = words
                    .windows(2)
                    .any(|w| w[0] == "-j" && w[1].starts_with("KUBE-"));
                if jumps_kube && !words[1].starts_with("KUBE-") {
                    let mut args = vec!["-t", table, "-D"];
                    args.extend(&words[1..]);
                    let _ = crate::network::run(cmd, &args);
                }
            }
            for chain in rules
                .lines()
                .filter_map(|r| r.strip_prefix("-N "))
                .filter(|c| c.starts_with("KUBE-"))
            {
                let _ = crate::network::run(cmd, &["-t", table, "-F", chain]);
            }
            for chain in rules
                .lines()
                .filter_map(|r| r.strip_prefix("-N "))
                .filter(|c| c.starts_with("KUBE-"))
            {
                let _ = crate::network::run(cmd, &["-t", table, "-X", chain]);
            }
        }
    }
}

/// Unmounts everything mounted at or below `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    for p in points {
        let _ = crate::network::run("umount", &["-l", &p]);
    }
}

/// Removes the cgroups the kubelet made for Pods (`kubepods` in every v1 hierarchy),
/// leaf first; they are empty once the containers are gone.
pub fn remove_pod_cgroups() {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.flatten() {
        let root = h.path().join("kubepods");
        if root.is_dir() {
            remove_dirs_leaf_first(&root);
        }
    }
}

fn remove_dirs_leaf_first(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_dirs_leaf_first(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

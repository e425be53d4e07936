//! Where the control-plane and moto binaries live. `make tools` (hack/tools.sh) builds them
//! into the cache; `KUBEBUILDER_ASSETS` and `MOTO_SERVER` override, as envtest users expect.

use std::path::{Path, PathBuf};

use crate::Error;

const VERSIONS: &str = include_str!("../../../hack/versions.env");

/// A pinned version from `hack/versions.env`, the one place versions are written down.
pub fn version(key: &str) -> &'static str {
    VERSIONS
        .lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
        .unwrap_or_else(|| panic!("hack/versions.env has no {key}"))
}

pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TRACKING_OPERATOR_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("tracking-operator")
}

/// The folder with `etcd`, `kube-apiserver` and optionally `kube-controller-manager`.
pub fn kube_assets() -> Result<PathBuf, Error> {
    let dir = match std::env::var_os("KUBEBUILDER_ASSETS") {
        Some(dir) => PathBuf::from(dir),
        None => cache_dir().join(format!(
            "kube-{}-etcd-{}",
            version("KUBERNETES_VERSION"),
            version("ETCD_VERSION")
        )),
    };
    for bin in ["etcd", "kube-apiserver"] {
        if !dir.join(bin).is_file() {
            return Err(Error::MissingTool(format!(
                "{bin} not found in {}. Run `make tools` (builds etcd and kube-apiserver from the Go module \
                 proxy; needs Go) or set KUBEBUILDER_ASSETS to a folder holding etcd and kube-apiserver \
                 (e.g. from `setup-envtest use -p path`).",
                dir.display()
            )));
        }
    }
    Ok(dir)
}

/// The folder with the node's binaries: kubelet, kube-scheduler, kube-proxy and pause.
pub fn node_assets() -> Result<PathBuf, Error> {
    let dir = cache_dir().join(format!("node-{}", version("KUBERNETES_VERSION")));
    for bin in ["kubelet", "kube-scheduler", "kube-proxy", "pause"] {
        if !dir.join(bin).is_file() {
            return Err(Error::MissingTool(format!(
                "{bin} not found in {}. Run `make tools` (builds the node's binaries from the Go \
                 module proxy and installs containerd, runc and the CNI plugins from Debian).",
                dir.display()
            )));
        }
    }
    for (bin, package) in [
        ("containerd", "containerd"),
        ("runc", "runc"),
        ("ctr", "containerd"),
    ] {
        if !std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(bin).is_file()))
        {
            return Err(Error::MissingTool(format!(
                "{bin} is not installed: `apt-get install {package}` (or run `make tools`)"
            )));
        }
    }
    Ok(dir)
}

pub fn moto_server() -> Result<PathBuf, Error> {
    let path = match std::env::var_os("MOTO_SERVER") {
        Some(p) => PathBuf::from(p),
        None => cache_dir()
            .join(format!("moto-{}", version("MOTO_VERSION")))
            .join("bin/moto_server"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingTool(format!(
            "moto_server not found at {}. Run `make tools` (installs moto[server]=={} from PyPI into a \
             virtualenv) or set MOTO_SERVER to a moto_server executable.",
            path.display(),
            version("MOTO_VERSION")
        )))
    }
}

/// The repository root, for `crds/`.
pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

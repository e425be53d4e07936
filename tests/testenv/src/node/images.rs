//! Images without a registry: `hack/mkimage.py` packs a binary into an OCI-layout tarball and
//! `ctr images import` unpacks it into the node's containerd, in the `k8s.io` namespace the CRI
//! plugin reads.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, tools};

/// Must equal containerd's `sandbox_image`.
pub const PAUSE_REF: &str = "registry.k8s.io/pause:3.10";

/// Builds the OCI tarball of `image` (an entry of hack/mkimage.py) from `binary` at `out`.
pub fn image_tar(
    image: &str,
    binary: &Path,
    out: &Path,
    reference: &str,
) -> Result<PathBuf, Error> {
    let script = tools::repo_root().join("hack/mkimage.py");
    let result = Command::new("python3")
        .arg(&script)
        .arg(image)
        .arg(binary)
        .arg(out)
        .arg("--ref")
        .arg(reference)
        .output()
        .map_err(|e| Error::Io(format!("run {}: {e}", script.display())))?;
    if !result.status.success() {
        return Err(Error::Io(format!(
            "hack/mkimage.py {image} failed: {}",
            String::from_utf8_lossy(&result.stderr).trim()
        )));
    }
    Ok(out.to_path_buf())
}

/// `ctr images import` into the node's containerd.
pub fn import_into(socket: &Path, tar: &Path) -> Result<(), Error> {
    ctr(
        socket,
        &[
            "images",
            "import",
            "--no-unpack=false",
            &tar.display().to_string(),
        ],
    )
    .map(|_| ())
}

/// Builds and imports `image` from `binary` into the node of `socket`, as `reference`.
pub fn import_image(
    socket: &Path,
    image: &str,
    binary: &Path,
    reference: &str,
) -> Result<(), Error> {
    let out =
        std::env::temp_dir().join(format!("testenv-image-{image}-{}.tar", std::process::id()));
    image_tar(image, binary, &out, reference)?;
    let result = import_into(socket, &out);
    let _ = std::fs::remove_file(&out);
    result
}

/// Kills and removes every task and container (teardown, after the kubelet stopped).
pub fn remove_all_containers(socket: &Path) {
    let tasks = ctr(socket, &["tasks", "ls", "-q"]).unwrap_or_default();
    for id in tasks.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let _ = ctr(socket, &["tasks", "kill", "-s", "SIGKILL", id]);
    }
    for id in tasks.lines().map(str::trim).filter(|l| !l.is_empty()) {
        for _ in 0..20 {
            if ctr(socket, &["tasks", "rm", "-f", id]).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    let containers = ctr(socket, &["containers", "ls", "-q"]).unwrap_or_default();
    for id in containers.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let _ = ctr(socket, &["containers", "rm", id]);
    }
}

fn ctr(socket: &Path, args: &[&str]) -> Result<String, Error> {
    let out = Command::new("ctr")
        .arg("-a")
        .arg(socket)
        .args(["-n", "k8s.io"])
        .args(args)
        .output()
        .map_err(|e| Error::Io(format!("ctr: {e} (install containerd: make tools)")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Io(format!(
            "ctr {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

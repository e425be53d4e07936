//! The pod network: a bridge that the harness creates and removes. Every address is on this
//! machine; IP forwarding stays off and nothing is masqueraded, so no Pod traffic can leave it.

use std::net::Ipv4Addr;
use std::process::Command;

use crate::Error;

pub const BRIDGE: &str = "tpbr0";
/// The bridge's own address: API server, kubelet, moto and the Pods' gateway all use it.
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
pub const POD_CIDR: &str = "10.244.0.0/24";
pub const SERVICE_CIDR: &str = "10.96.0.0/24";
/// The `kubernetes` Service: the first address of the service range.
pub const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

pub fn bridge_exists() -> bool {
    std::path::Path::new("/sys/class/net").join(BRIDGE).exists()
}

/// Creates the bridge with the host address, before the API server binds to it.
pub fn create_bridge() -> Result<(), Error> {
    run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
    run(
        "ip",
        &["addr", "add", &format!("{HOST_IP}/24"), "dev", BRIDGE],
    )?;
    run("ip", &["link", "set", BRIDGE, "up"])
}

pub fn delete_bridge() {
    if bridge_exists() {
        let _ = run("ip", &["link", "del", BRIDGE]);
    }
}

/// Runs a host command and turns a failure into an error that quotes its output.
pub(crate) fn run(cmd: &str, args: &[&str]) -> Result<(), Error> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| Error::Io(format!("{cmd}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Io(format!(
            "`{cmd} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A host command's standard output ("" when it cannot run).
pub(crate) fn output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

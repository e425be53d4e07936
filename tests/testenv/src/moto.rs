//! moto in server mode: a real implementation of the AWS APIs, on loopback.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::process::{self, Managed, free_port, wait_until};
use crate::{Error, tools};

pub struct Moto {
    host: String,
    port: u16,
    proc: Managed,
}

impl Moto {
    pub fn start(log_dir: &Path, detached: bool) -> Result<Self, Error> {
        Self::start_on("127.0.0.1", log_dir, detached)
    }

    /// On `host`: the pod bridge's address when Pods must reach it.
    pub fn start_on(host: &str, log_dir: &Path, detached: bool) -> Result<Self, Error> {
        let bin = tools::moto_server()?;
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.arg("-H").arg(host).arg("-p").arg(port.to_string());
        // Moto's server otherwise chooses accounts and regions from the caller; keep it plain.
        cmd.env("MOTO_ALLOW_NONEXISTENT_REGION", "true");
        let mut proc = process::start("moto_server", cmd, &log_dir.join("moto.log"), detached)?;
        let addr: std::net::IpAddr = host
            .parse()
            .map_err(|e| Error::Io(format!("moto host {host}: {e}")))?;
        wait_until(&mut proc, Duration::from_secs(60), || {
            process::http_ok_at(addr, port, "/moto-api/data.json")
        })?;
        Ok(Self {
            host: host.to_string(),
            port,
            proc,
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn into_pid(self) -> u32 {
        let pid = self.proc.pid();
        std::mem::forget(self);
        pid
    }

    /// An SDK configuration pointed at this server with dummy credentials.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config_for(&self.endpoint()).await
    }
}

pub const REGION: &str = "us-east-1";

/// An SDK configuration for any endpoint (moto, a proxy in front of it, or an emulator).
pub async fn sdk_config_for(endpoint: &str) -> aws_config::SdkConfig {
    let creds = aws_credential_types::Credentials::new("testing", "testing", None, None, "testenv");
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .load()
        .await
}

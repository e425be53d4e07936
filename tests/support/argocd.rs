//! Argo CD's health check for TrackingPipeline, run the way Argo CD runs it: `health.lua` under
//! a real Lua 5.1 with the live object as `obj`. Shared by the test binaries that need it.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;
use serde_json::Value;

pub const CHECK_DIR: &str =
    "gitops/argocd/resource_customizations/tracking-operator.io/TrackingPipeline";

#[derive(Deserialize, Debug, PartialEq, Eq)]
pub struct HealthStatus {
    pub status: String,
    #[serde(default)]
    pub message: String,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the repository's health.lua on a live object.
pub fn health(object: &Value) -> Result<HealthStatus> {
    run_health(&lua()?, &root().join(CHECK_DIR).join("health.lua"), object)
}

/// The interpreter: `$LUA`, else whatever `hack/install-lua.sh` installs or finds.
pub fn lua() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("LUA") {
        return Ok(PathBuf::from(path));
    }
    let out = Command::new(root().join("hack/install-lua.sh"))
        .output()
        .context("running hack/install-lua.sh")?;
    ensure!(
        out.status.success(),
        "hack/install-lua.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// Writes a JSON value as a Lua 5.1 table constructor, as Argo CD hands `obj` to the script.
pub fn to_lua(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("nil"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => lua_string(s, out),
        Value::Array(items) => {
            out.push('{');
            for item in items {
                to_lua(item, out);
                out.push(',');
            }
            out.push('}');
        }
        Value::Object(map) => {
            out.push('{');
            for (key, item) in map {
                out.push('[');
                lua_string(key, out);
                out.push_str("]=");
                to_lua(item, out);
                out.push(',');
            }
            out.push('}');
        }
    }
}

fn lua_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\{}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Runs health.lua on one object and returns what it reported.
pub fn run_health(lua: &Path, script: &Path, object: &Value) -> Result<HealthStatus> {
    let mut program = String::from("obj = ");
    to_lua(object, &mut program);
    program.push_str("\nlocal hs = dofile(");
    lua_string(&script.to_string_lossy(), &mut program);
    program.push_str(")\nio.write(tostring(hs.status), \"\\n\", tostring(hs.message or \"\"))\n");

    let out = Command::new(lua)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .map(|mut stdin| stdin.write_all(program.as_bytes()))
                .transpose()?;
            child.wait_with_output()
        })
        .with_context(|| format!("running {}", lua.display()))?;
    if !out.status.success() {
        bail!(
            "health.lua failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout)?;
    let (status, message) = text.split_once('\n').unwrap_or((text.as_str(), ""));
    Ok(HealthStatus {
        status: status.to_owned(),
        message: message.to_owned(),
    })
}

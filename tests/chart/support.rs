//! Running helm and reading its output.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::Value;

pub const CHART: &str = "charts/tracking-operator";
pub const CRD_NAME: &str = "trackingpipelines.tracking-operator.io";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn chart() -> PathBuf {
    root().join(CHART)
}

/// The helm v4 binary: `$HELM`, else the one `hack/install-helm.sh` installs (cached).
pub fn helm_bin() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        if let Some(path) = std::env::var_os("HELM") {
            return PathBuf::from(path);
        }
        let out = Command::new(root().join("hack/install-helm.sh"))
            .output()
            .expect("running hack/install-helm.sh");
        assert!(
            out.status.success(),
            "hack/install-helm.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// Runs helm; Ok(stdout) on success, Err with stderr otherwise.
pub fn helm(args: &[&str]) -> Result<String> {
    let out = Command::new(helm_bin())
        .args(args)
        // Keep helm's caches and repository config out of the user's home.
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("chart-test-helm/cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("chart-test-helm/config"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("chart-test-helm/data"),
        )
        .output()
        .with_context(|| format!("running helm {args:?}"))?;
    if !out.status.success() {
        bail!(
            "helm {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// `helm template` with `--set` values, parsed into one JSON value per document.
pub fn template(release: &str, namespace: &str, sets: &[&str]) -> Result<Vec<Value>> {
    let chart = chart();
    let mut args = vec![
        "template",
        release,
        chart.to_str().context("chart path")?,
        "-n",
        namespace,
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    parse_docs(&helm(&args)?)
}

pub fn parse_docs(text: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = Value::deserialize(doc)?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

pub fn find<'a>(docs: &'a [Value], kind: &str, name_suffix: &str) -> Option<&'a Value> {
    docs.iter().find(|d| {
        d["kind"] == kind
            && d["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with(name_suffix))
    })
}

pub fn kinds(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .map(|d| d["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The operator container's args in a rendered or live Deployment.
pub fn container_args(deployment: &Value) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The CRD files generated from the Rust types, one JSON value per document.
pub fn crds_dir_docs() -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(root().join("crds"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for f in files {
        docs.extend(parse_docs(&std::fs::read_to_string(&f)?)?);
    }
    Ok(docs)
}

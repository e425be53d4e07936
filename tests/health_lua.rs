//! Runs the Argo CD health check (`gitops/argocd/.../health.lua`) under a real Lua 5.1
//! interpreter against every case of its `health_test.yaml`, the way Argo CD's own
//! resource-customization tests do, and checks the argocd-cm snippet embeds the same script.

#[path = "support/argocd.rs"]
mod argocd;

use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use argocd::{CHECK_DIR, HealthStatus, lua, run_health};
use serde::Deserialize;
use serde_json::Value;

const ARGOCD_CM: &str = "gitops/argocd/argocd-cm.yaml";
const CM_KEY: &str = "resource.customizations.health.tracking-operator.io_TrackingPipeline";

#[derive(Deserialize)]
struct HealthTests {
    tests: Vec<HealthTest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthTest {
    health_status: HealthStatus,
    input_path: String,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn health_lua_matches_every_case_of_health_test_yaml() -> Result<()> {
    let dir = root().join(CHECK_DIR);
    let script = dir.join("health.lua");
    let lua = lua()?;
    let cases: HealthTests =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("health_test.yaml"))?)?;

    let mut failures = Vec::new();
    for case in &cases.tests {
        let object: Value = serde_yaml::from_str(
            &std::fs::read_to_string(dir.join(&case.input_path))
                .with_context(|| case.input_path.clone())?,
        )?;
        let got = run_health(&lua, &script, &object)?;
        if got != case.health_status {
            failures.push(format!(
                "{}: expected {:?}, got {:?}",
                case.input_path, case.health_status, got
            ));
        }
    }
    ensure!(
        failures.is_empty(),
        "health.lua disagrees:\n{}",
        failures.join("\n")
    );

    // Every Argo CD outcome the check can give is exercised.
    for status in ["Healthy", "Progressing", "Degraded"] {
        ensure!(
            cases.tests.iter().any(|c| c.health_status.status == status),
            "no case expects {status}"
        );
    }
    Ok(())
}

#[test]
fn every_testdata_file_is_a_case() -> Result<()> {
    let dir = root().join(CHECK_DIR);
    let cases: HealthTests =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("health_test.yaml"))?)?;
    for entry in std::fs::read_dir(dir.join("testdata"))? {
        let name = format!("testdata/{}", entry?.file_name().to_string_lossy());
        ensure!(
            cases.tests.iter().any(|c| c.input_path == name),
            "{name} is not used by health_test.yaml"
        );
    }
    Ok(())
}

#[test]
fn argocd_cm_snippet_embeds_the_same_script() -> Result<()> {
    let cm: Value = serde_yaml::from_str(&std::fs::read_to_string(root().join(ARGOCD_CM))?)?;
    let embedded = cm["data"][CM_KEY]
        .as_str()
        .with_context(|| format!("{ARGOCD_CM} has no data.{CM_KEY}"))?;
    let script = std::fs::read_to_string(root().join(CHECK_DIR).join("health.lua"))?;
    ensure!(
        embedded.trim_end() == script.trim_end(),
        "{ARGOCD_CM} is out of date: copy {CHECK_DIR}/health.lua into it"
    );
    Ok(())
}

/// Argo CD calls a pipeline Degraded for exactly the AWS codes the operator stalls on: one
/// list, so a sync wave never stops on an error the operator is still retrying.
#[test]
fn health_lua_terminal_codes_are_the_operators() -> Result<()> {
    let script = std::fs::read_to_string(root().join(CHECK_DIR).join("health.lua"))?;
    let start = script
        .find("local terminal_aws_codes = {")
        .context("health.lua has no terminal_aws_codes")?;
    let end = start + script[start..].find('}').context("unterminated list")?;
    let mut lua_codes: Vec<&str> = script[start..end].split('"').skip(1).step_by(2).collect();
    let mut operator: Vec<&str> = tracking_operator::aws::error::TERMINAL_CODES.to_vec();
    lua_codes.sort_unstable();
    operator.sort_unstable();
    ensure!(
        lua_codes == operator,
        "health.lua terminal codes {lua_codes:?} differ from the operator's {operator:?}"
    );
    if lua_codes.contains(&"LimitExceededException") {
        bail!("LimitExceededException is retried by the operator");
    }
    Ok(())
}

//! The examples users copy: every pipeline in examples/ is accepted by the real CRD, and the
//! GitOps manifests point at paths that exist in this repository.

use anyhow::{Context, Result, ensure};
use kube::api::{Api, DynamicObject, Patch, PatchParams, ValidationDirective};
use serde_json::Value;

use crate::rbac::tp_resource;
use crate::support::{parse_docs, root};

fn yaml_files(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(yaml_files(&path)?);
        } else if path.extension().is_some_and(|x| x == "yaml") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

#[tokio::test]
async fn example_pipelines_pass_strict_server_side_validation() -> Result<()> {
    let kube = testenv::kube();
    let ns = kube.namespace("chart-examples").await;
    let api: Api<DynamicObject> = Api::namespaced_with(kube.client().await, &ns, &tp_resource());
    let files = yaml_files(&root().join("examples"))?;
    ensure!(files.iter().any(|f| f.ends_with("examples/pipeline.yaml")));
    let mut pp = PatchParams::apply("chart-examples");
    pp.dry_run = true;
    // Strict: a misspelt field is an error, not silently pruned.
    pp.field_validation = Some(ValidationDirective::Strict);
    for file in files {
        for doc in parse_docs(&std::fs::read_to_string(&file)?)? {
            ensure!(
                doc["kind"] == "TrackingPipeline",
                "{}: only pipelines belong in examples/",
                file.display()
            );
            ensure!(
                doc["metadata"]["namespace"].is_null(),
                "{}: leave the namespace to kubectl -n / GitOps",
                file.display()
            );
            let obj: DynamicObject = serde_json::from_value(doc)?;
            let name = obj.metadata.name.clone().context("metadata.name")?;
            api.patch(&name, &pp, &Patch::Apply(&obj))
                .await
                .with_context(|| format!("{} refused", file.display()))?;
        }
    }
    Ok(())
}

#[test]
fn gitops_manifests_point_at_paths_that_exist() -> Result<()> {
    let mut paths = 0;
    let mut skip_dry_run = false;
    for file in yaml_files(&root().join("gitops"))? {
        if file.to_string_lossy().contains("resource_customizations") {
            continue;
        }
        for doc in parse_docs(&std::fs::read_to_string(&file)?)? {
            let spec = &doc["spec"];
            let path = match doc["kind"].as_str() {
                Some("Application") => spec["source"]["path"].as_str(),
                Some("Kustomization") => spec["path"].as_str(),
                Some("HelmRelease") => spec["chart"]["spec"]["chart"].as_str(),
                _ => None,
            };
            if let Some(path) = path {
                let dir = root().join(path.trim_start_matches("./"));
                ensure!(dir.is_dir(), "{}: {path} does not exist", file.display());
                paths += 1;
            }
            let options: Vec<&str> = spec["syncPolicy"]["syncOptions"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            skip_dry_run |= options.contains(&"SkipDryRunOnMissingResource=true");
        }
    }
    ensure!(paths >= 5, "only {paths} GitOps sources checked");
    ensure!(
        skip_dry_run,
        "the pipelines Application needs SkipDryRunOnMissingResource=true"
    );
    Ok(())
}

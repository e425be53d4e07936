//! One pass's status writes, conditional on the version the pass read.
//!
//! A pass starts from the watch cache, which can lag the API server: the pass that follows
//! one of ours may start before the watch has delivered our last write. Written blindly, its
//! status (conditions still Unknown from the middle of the previous pass) would replace the
//! newer one, and `kubectl get tp` would flip from Ready back to Unknown. Every write
//! therefore carries the resourceVersion it was computed from; the API server refuses it
//! with a conflict when the object moved on.

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::api::{Outputs, TrackingPipeline, TrackingPipelineStatus};
use crate::error::{Error, Result};

/// Conflicts from other writers' fields retried before the pass gives up.
const RETRIES: usize = 3;

/// The pipeline's status during one pass: as found, as last written, and as it becomes.
pub struct StatusWriter {
    api: Api<TrackingPipeline>,
    name: String,
    /// The resourceVersion the next write is conditional on.
    version: Option<String>,
    /// The reconciler's part of the status at `version`, as the API server returned it.
    server: TrackingPipelineStatus,
    pub original: TrackingPipelineStatus,
    pub written: TrackingPipelineStatus,
    pub current: TrackingPipelineStatus,
}

impl StatusWriter {
    pub fn new(api: Api<TrackingPipeline>, pipeline: &TrackingPipeline) -> Self {
        let original = pipeline.status.clone().unwrap_or_default();
        Self {
            api,
            name: pipeline.name_any(),
            version: pipeline.resource_version(),
            server: ours(&original),
            written: original.clone(),
            current: original.clone(),
            original,
        }
    }

    /// Writes the status when it changed since the last write; a steady state writes nothing.
    ///
    /// A conflict caused only by another writer's keys (`status.worker` from the
    /// autoscaler, `status.redrive`, labels) is retried on the new version. A conflict in
    /// the reconciler's own keys means this pass started from an out-of-date copy:
    /// [`Error::StaleStatus`], and nothing is written.
    pub async fn flush(&mut self) -> Result<()> {
        if self.current == self.written {
            return Ok(());
        }
        for _ in 0..RETRIES {
            let mut patch = status_patch(&self.current);
            patch["metadata"] = json!({ "resourceVersion": self.version });
            match self
                .api
                .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(updated) => {
                    self.version = updated.resource_version();
                    self.server = ours(&updated.status.unwrap_or_default());
                    self.written = self.current.clone();
                    return Ok(());
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    let fresh = self.api.get_status(&self.name).await?;
                    self.version = fresh.resource_version();
                    if ours(&fresh.status.unwrap_or_default()) != self.server {
                        return Err(Error::StaleStatus(self.name.clone()));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::StaleStatus(self.name.clone()))
    }
}

/// The keys the reconciler writes; the others belong to the autoscaler and the redrive loop.
fn ours(status: &TrackingPipelineStatus) -> TrackingPipelineStatus {
    TrackingPipelineStatus {
        worker: None,
        redrive: None,
        ..status.clone()
    }
}

/// A JSON merge patch keeps every key it is not told about, so an output that is no longer
/// known (e.g. the worker role after the OIDC setting was removed) is sent as null.
fn status_patch(status: &TrackingPipelineStatus) -> serde_json::Value {
    let mut patch = json!({ "status": status });
    // `status.worker` belongs to the autoscaler (src/autoscale) and `status.redrive` to the
    // redrive loop (src/redrive.rs); a copy read at the start of this pass would overwrite
    // their newer ones.
    if let Some(status) = patch["status"].as_object_mut() {
        status.remove("worker");
        status.remove("redrive");
    }
    if let Some(outputs) = patch["status"]["outputs"].as_object_mut() {
        let schema = schemars::schema_for!(Outputs);
        let known = schema.get("properties").and_then(|p| p.as_object());
        for key in known.into_iter().flat_map(|p| p.keys()) {
            outputs
                .entry(key.clone())
                .or_insert(serde_json::Value::Null);
        }
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_no_longer_known_are_cleared_by_the_patch() {
        let mut status = TrackingPipelineStatus::default();
        status.outputs.queue_url = Some("http://q".into());
        let patch = status_patch(&status);
        let outputs = &patch["status"]["outputs"];
        assert_eq!(outputs["queueUrl"], "http://q");
        assert!(outputs["workerRoleArn"].is_null());
        assert!(outputs.as_object().unwrap().contains_key("workerRoleArn"));
        assert_eq!(outputs.as_object().unwrap().len(), 16);
    }
}

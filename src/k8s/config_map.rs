//! The outputs ConfigMap: the pipeline's identifiers for producers (queue URL) and tools.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;

use super::{bounded, child_meta};
use crate::api::{Outputs, TrackingPipeline};
use crate::error::Result;

pub fn config_map_name(pipeline: &TrackingPipeline) -> String {
    bounded(&pipeline.name_any(), "-outputs", 253)
}

/// One key per known output, named as in `status.outputs` (camelCase).
pub fn outputs_config_map(pipeline: &TrackingPipeline, outputs: &Outputs) -> Result<ConfigMap> {
    let mut data = BTreeMap::new();
    if let serde_json::Value::Object(fields) = serde_json::to_value(outputs)? {
        for (key, value) in fields {
            if let serde_json::Value::String(value) = value {
                data.insert(key, value);
            }
        }
    }
    // The ConfigMap would otherwise list itself.
    data.remove("outputsConfigMap");
    Ok(ConfigMap {
        metadata: child_meta(pipeline, config_map_name(pipeline))?,
        data: Some(data),
        ..ConfigMap::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::fixtures::pipeline;

    #[test]
    fn holds_the_known_outputs() {
        let outputs = Outputs {
            queue_url: Some("http://q".into()),
            table_name: Some("t".into()),
            outputs_config_map: Some("parcels-outputs".into()),
            ..Outputs::default()
        };
        let cm = outputs_config_map(&pipeline(), &outputs).unwrap();
        assert_eq!(cm.metadata.name.as_deref(), Some("parcels-outputs"));
        let data = cm.data.unwrap();
        assert_eq!(data.len(), 2);
        assert_eq!(data["queueUrl"], "http://q");
        assert_eq!(data["tableName"], "t");
    }
}

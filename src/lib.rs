//! tracking-operator: reconciles `TrackingPipeline` resources into AWS and the cluster.
#![forbid(unsafe_code)]

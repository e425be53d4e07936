//! tracking-operator: reconciles `TrackingPipeline` resources into AWS and the cluster.
#![forbid(unsafe_code)]

pub mod api;
pub mod autoscale;
pub mod aws;
pub mod cli;
pub mod controller;
pub mod error;
pub mod http;
pub mod k8s;
pub mod metrics;
pub mod redrive;

pub use error::{Error, Result};

//! tracking-operator: reconciles `TrackingPipeline` resources into AWS and the cluster.
#![forbid(unsafe_code)]

pub mod api;
pub mod aws;
pub mod cli;
pub mod error;

pub use error::{Error, Result};

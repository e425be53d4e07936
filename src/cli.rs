//! Command line: every flag is `long` and readable from the environment, so the Helm chart
//! can configure the operator either way.

use clap::{Parser, Subcommand};

/// Reconciles TrackingPipeline resources into AWS and the cluster.
#[derive(Parser, Debug)]
#[command(name = "tracking-operator", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the TrackingPipeline CustomResourceDefinition as YAML.
    Crd,
}

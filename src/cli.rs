//! Command line: every flag is `long` and also read from the environment, so the Helm chart
//! can configure the operator either way.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::api::Period;

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
    /// Run the controller.
    Run(Box<RunArgs>),
}

/// Settings of the controller process.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// AWS region (otherwise the SDK's usual sources: profile, IMDS).
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,

    /// Send every AWS call to this endpoint (moto, LocalStack); also given to the workers.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,

    /// Worker image for pipelines that do not set spec.worker.image.
    #[arg(long, env = "TRACKING_WORKER_IMAGE", default_value = concat!("ghcr.io/tracking-operator/tracking-worker:", env!("CARGO_PKG_VERSION")))]
    pub worker_image: String,

    /// How often every pipeline is compared with AWS and drift repaired (`30s`, `5m`, `1h`).
    #[arg(long, env = "TRACKING_RESYNC_INTERVAL", default_value = "5m", value_parser = parse_interval)]
    pub resync_interval: Duration,

    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,

    /// Address of the /metrics endpoint; also of /healthz and /readyz unless --health-addr
    /// is given.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// Serve /healthz and /readyz on this address instead, so probes and metrics can be
    /// exposed separately (the Helm chart does).
    #[arg(long, env = "HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,

    /// Reconcile only while holding a coordination.k8s.io Lease. On by default at every
    /// replica count: a rolling update runs the old and the new Pod together, and both must
    /// not write AWS. `--leader-elect=false` is for development only.
    #[arg(long, env = "LEADER_ELECT", default_value_t = true, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub leader_elect: bool,

    /// Namespace of the leader-election Lease.
    #[arg(long, env = "LEASE_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// Name of the leader-election Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "tracking-operator")]
    pub lease_name: String,

    /// This replica's identity in the Lease and in Events (the Pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// ARN of the cluster's IAM OIDC provider: when set, the operator creates each worker's
    /// IAM role (IRSA) unless the pipeline names one in spec.worker.roleArn.
    #[arg(long, env = "OIDC_PROVIDER_ARN")]
    pub oidc_provider_arn: Option<String>,

    /// This cluster's identity, tagged on every AWS resource and part of the IAM role names,
    /// so two clusters sharing an AWS account (blue/green, stage/prod) never adopt or delete
    /// each other's resources. Default: the uid of the `kube-system` namespace.
    #[arg(long, env = "CLUSTER_ID")]
    pub cluster_id: Option<String>,

    /// ARN of an IAM policy the operator attaches as permissions boundary to every role it
    /// creates (the Scheduler role, IRSA worker roles). The operator's IAM policy allows
    /// creating roles only with this boundary, so its credentials cannot mint an admin role.
    #[arg(long, env = "PERMISSIONS_BOUNDARY")]
    pub permissions_boundary: Option<String>,

    /// How often the autoscaler measures each autoscaled pipeline's queue and sets its
    /// worker replicas (`spec.worker.autoscaling`); independent of --resync-interval.
    #[arg(long, env = "TRACKING_AUTOSCALE_INTERVAL", default_value = "15s", value_parser = parse_interval)]
    pub autoscale_interval: Duration,

    /// A reconcile running longer than this, or a pipeline watch failing without pause for
    /// this long, makes /healthz fail so that the kubelet restarts the operator.
    #[arg(long, env = "TRACKING_STUCK_AFTER", default_value = "15m", value_parser = parse_interval)]
    pub stuck_after: Duration,

    /// How long a worker Deployment may have no available replica (Pods starting, an image
    /// being pulled) before the pipeline's WorkerReady and Ready turn False.
    #[arg(long, env = "TRACKING_WORKER_START_GRACE", default_value = "90s", value_parser = parse_interval)]
    pub worker_start_grace: Duration,

    /// Secret (in each pipeline's namespace) whose keys become the workers' environment, e.g.
    /// AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY on a cluster without IRSA or Pod Identity.
    /// Optional: a missing Secret does not stop the worker from starting.
    #[arg(long, env = "TRACKING_WORKER_CREDENTIALS_SECRET")]
    pub worker_credentials_secret: Option<String>,

    /// Client-side AWS rate limits over the defaults (sized under AWS's default quotas), as
    /// `SERVICE[:OPERATION]=RATE[/BURST]` per second, comma-separated or repeated, e.g.
    /// `cloudwatch=5,cloudwatch:PutMetricAlarm=1`; a rate of 0 removes that limit.
    #[arg(
        long = "aws-rate-limit",
        env = "AWS_RATE_LIMITS",
        value_delimiter = ','
    )]
    pub aws_rate_limits: Vec<String>,

    /// After a start, pipelines that were already Ready get their first pass at this many
    /// per second, so a restart or leader change does not read every pipeline's AWS
    /// resources at once (1,000 pipelines: 250 s at the default). 0: all at once.
    #[arg(long, env = "TRACKING_STARTUP_RATE", default_value_t = 4.0)]
    pub startup_rate: f64,

    /// Where `spec.redrive` keeps its move ledgers, so a redrive interrupted by a restart
    /// resumes without sending a message twice (the chart mounts an emptyDir here).
    #[arg(long, env = "TRACKING_STATE_DIR", default_value_os_t = std::env::temp_dir().join("tracking-operator"))]
    pub state_dir: std::path::PathBuf,

    /// A resource's ownership tags, once read complete, are read again only every this many
    /// resync intervals (and always before a delete): most of a steady resync's reads were
    /// tag reads finding the same tags. 0 or 1: read them on every pass.
    #[arg(long, env = "TRACKING_TAG_RECHECK_EVERY", default_value_t = 12)]
    pub tag_recheck_every: u32,

    /// Pipelines reconciled at the same time.
    #[arg(long, env = "RECONCILE_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,

    /// Log format: `json` (default) or `text`.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    pub log_format: String,
}

/// `30s`, `5m`, `1h`, `1d`: the same syntax as the spec's periods.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    match Period::from(text).seconds() {
        Some(0) | None => Err(format!(
            "{text:?} is not a positive interval like 30s, 5m or 1h"
        )),
        Some(seconds) => Ok(Duration::from_secs(seconds)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_has_a_default_or_is_optional() {
        let cli = Cli::try_parse_from(["tracking-operator", "run"]).expect("parses");
        let Command::Run(args) = cli.command else {
            panic!("run")
        };
        assert_eq!(args.resync_interval, Duration::from_secs(300));
        assert!(
            args.leader_elect,
            "the Lease is used at every replica count"
        );
        let off = Cli::try_parse_from(["tracking-operator", "run", "--leader-elect=false"])
            .expect("parses");
        let Command::Run(off) = off.command else {
            panic!("run")
        };
        assert!(!off.leader_elect);
        assert_eq!(args.autoscale_interval, Duration::from_secs(15));
        let bare = Cli::try_parse_from(["tracking-operator", "run", "--leader-elect"]);
        assert!(bare.is_ok(), "the chart's bare flag still parses");
        assert_eq!(args.metrics_addr.port(), 8080);
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_interval("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("5 minutes").is_err());
    }
}

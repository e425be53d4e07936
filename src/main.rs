#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use aws_config::BehaviorVersion;
use clap::Parser;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client, CustomResourceExt};
use tracing::{error, info, warn};
use tracking_operator::api::TrackingPipeline;
use tracking_operator::aws::{AwsClients, CallCounter, Limits, Settings};
use tracking_operator::cli::{Cli, Command, RunArgs};
use tracking_operator::controller::liveness::Liveness;
use tracking_operator::controller::{self, Config, Context, leader::LeaseLock};
use tracking_operator::http::{self, Health};
use tracking_operator::metrics::Metrics;
use tracking_operator::{autoscale, redrive};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match tracking_operator::api::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("tracking-operator: cannot render the CRD: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            init_logging(&args.log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(err) => {
                    eprintln!("tracking-operator: cannot start the runtime: {err}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    error!(error = %err, "operator stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,kube_runtime=warn,aws_smithy_runtime=warn,aws_config=warn",
        )
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "text" {
        builder.init();
    } else {
        // Span fields (namespace, name, reconcile_id) ride along on every line.
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    }
}

async fn run(args: RunArgs) -> tracking_operator::Result<()> {
    let client = Client::try_default().await?;
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &args.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(endpoint) = &args.aws_endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    let sdk = loader.load().await;
    // Without a region every AWS call fails later with an obscure error; EKS Pod Identity,
    // unlike IRSA, does not set AWS_REGION in the Pod.
    if sdk.region().is_none() {
        return Err(tracking_operator::Error::InvalidSpec(
            "no AWS region: set --region (AWS_REGION), or operator.region in the Helm chart".into(),
        ));
    }
    let limits = Limits::default()
        .with_overrides(args.aws_rate_limits.iter().map(String::as_str))
        .map_err(|e| tracking_operator::Error::InvalidSpec(format!("--aws-rate-limit {e}")))?;
    info!(limits = ?limits.rates(), "AWS client-side rate limits (calls per second)");
    // Just under N intervals, so the Nth resync (spread ±20%) reads the tags again.
    let tag_window = match args.tag_recheck_every {
        0 | 1 => Duration::ZERO,
        n => args.resync_interval.mul_f64(f64::from(n) - 0.5),
    };
    let aws =
        AwsClients::with_limits(&sdk, CallCounter::new(), &limits).recheck_tags_every(tag_window);
    let metrics = Arc::new(Metrics::new(aws.calls.clone()));
    let health = Arc::new(Health {
        liveness: Liveness::new(args.stuck_after),
        ..Health::default()
    });

    let server = match args.health_addr {
        None => {
            info!(addr = %args.metrics_addr, "serving /healthz /readyz /metrics");
            tokio::spawn(http::serve(
                args.metrics_addr,
                http::Endpoints::All,
                health.clone(),
                metrics.clone(),
            ))
        }
        Some(health_addr) => {
            info!(addr = %health_addr, "serving /healthz /readyz");
            info!(addr = %args.metrics_addr, "serving /metrics");
            let probes = http::serve(
                health_addr,
                http::Endpoints::Probes,
                health.clone(),
                metrics.clone(),
            );
            let scrape = http::serve(
                args.metrics_addr,
                http::Endpoints::Metrics,
                health.clone(),
                metrics.clone(),
            );
            // Either listener failing stops the process, as the single one does.
            tokio::spawn(async move { tokio::try_join!(probes, scrape).map(|_| ()) })
        }
    };

    wait_for_crd(&client, &health).await;

    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("tracking-operator-{}", std::process::id()));
    let mut config = Config::new(args.worker_image.clone());
    config.resync_interval = args.resync_interval;
    config.region = args.region.clone();
    config.endpoint_url = args.aws_endpoint_url.clone();
    let cluster = match args.cluster_id.clone().filter(|c| !c.is_empty()) {
        Some(id) => id,
        None => cluster_uid(&client).await?,
    };
    info!(cluster = %cluster, "cluster identity");
    config.worker_credentials_secret = args.worker_credentials_secret.clone();
    config.aws_settings = Settings {
        oidc_provider_arn: args.oidc_provider_arn.clone(),
        cluster: Some(cluster),
        permissions_boundary: args.permissions_boundary.clone(),
    };
    config.namespace = args.namespace.clone();
    config.concurrency = args.concurrency;
    config.worker_start_grace = args.worker_start_grace;
    config.startup_rate = args.startup_rate;
    config.identity = identity.clone();
    let ctx = Arc::new(Context::new(client.clone(), &sdk, config, metrics, aws));
    // Built here, polled only below: with leader election, only once the Lease is ours.
    let autoscaler = {
        let scale = autoscale::run(ctx.clone(), args.autoscale_interval);
        let redrive = redrive::run(ctx.clone(), args.state_dir.clone(), redrive::LEASE_SECONDS);
        async move {
            tokio::join!(scale, redrive);
        }
    };

    // SIGTERM is how Kubernetes stops a Pod (and as PID 1 nothing else handles it):
    // stop taking work, let the reconciles in flight finish, then release the Lease so the
    // next replica takes over at once instead of after the Lease runs out.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        termination().await;
        info!("termination signal: stopping");
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    if !args.leader_elect {
        // Only for development: two processes would both write AWS.
        warn!("leader election is off: never run two of these against the same cluster");
        return tokio::select! {
            () = controller::run(ctx, health, stopped(stop_rx)) => Ok(()),
            () = autoscaler => Ok(()),
            res = server => { warn!(?res, "HTTP server stopped"); Ok(()) }
        };
    }
    let lock = LeaseLock::new(
        client,
        &args.lease_namespace,
        &args.lease_name,
        &identity,
        Duration::from_secs(15),
    );
    // A standby replica is healthy and ready: it is waiting for its turn.
    health
        .running
        .store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::select! {
        () = lock.acquire() => {}
        () = stopped(stop_rx.clone()) => return Ok(()),
    }
    let result = tokio::select! {
        () = controller::run(ctx, health, stopped(stop_rx)) => Ok(()),
        () = autoscaler => Ok(()),
        err = lock.keep() => Err(err),
        res = server => { warn!(?res, "HTTP server stopped"); Ok(()) }
    };
    if result.is_ok() {
        lock.release().await;
    }
    result
}

/// The default cluster identity: the uid of `kube-system`, which exists in every cluster and
/// lives as long as the cluster does.
async fn cluster_uid(client: &Client) -> tracking_operator::Result<String> {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let kube_system = namespaces.get("kube-system").await?;
    kube_system.metadata.uid.ok_or_else(|| {
        tracking_operator::Error::InvalidSpec(
            "namespace kube-system has no uid: set --cluster-id (operator.clusterId)".into(),
        )
    })
}

/// SIGTERM (Kubernetes) or Ctrl-C (a terminal).
async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                return;
            }
            Err(err) => warn!(%err, "cannot listen for SIGTERM"),
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// `/readyz` stays false until the CRD answers: without it the controller cannot watch.
async fn wait_for_crd(client: &Client, health: &Health) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = TrackingPipeline::crd_name();
    loop {
        match crds.get_opt(name).await {
            Ok(Some(_)) => {
                health
                    .crd_present
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                return;
            }
            Ok(None) => warn!(crd = name, "CRD not installed yet"),
            Err(err) => warn!(%err, crd = name, "cannot read the CRD"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

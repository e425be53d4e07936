//! `tracking-worker`: configured from the environment (see `tracking_worker::contract::env`),
//! runs until SIGTERM/SIGINT, drains, prints its totals as one JSON line on stdout.

use tracking_worker::config::{self, Config};

/// Worker-only knob: runtime threads. One is the default: the worker spends its time waiting
/// on SQS and DynamoDB, one core handles thousands of messages a second, and a single-threaded
/// runtime avoids cross-thread wake-ups (less CPU per message); scale out with replicas.
const THREADS_ENV: &str = "TRACKING_WORKER_THREADS";

fn main() -> std::process::ExitCode {
    let threads: usize = match std::env::var(THREADS_ENV) {
        Err(_) => 1,
        Ok(raw) => match raw.trim().parse() {
            Ok(n) if n >= 1 => n,
            _ => {
                eprintln!(
                    "tracking-worker: environment variable {THREADS_ENV} is invalid: must be a whole number >= 1 (got {raw:?})"
                );
                return std::process::ExitCode::from(2);
            }
        },
    };
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    match runtime {
        Ok(rt) => rt.block_on(run()),
        Err(e) => {
            eprintln!("tracking-worker: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "invalid configuration");
            eprintln!("tracking-worker: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let sdk = config::sdk_config(&config.settings).await;
    match tracking_worker::run(config, &sdk, shutdown_signal()).await {
        Ok(report) => {
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "worker failed");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the worker");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

//! `/healthz` (the process is up and its controller makes progress), `/readyz` (the CRD is installed and the controller runs or
//! waits for its Lease), `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::controller::liveness::Liveness;
use crate::metrics::Metrics;

/// What `/readyz` reports.
#[derive(Debug, Default)]
pub struct Health {
    /// The TrackingPipeline CRD answered.
    pub crd_present: AtomicBool,
    /// The controller loop runs (or this replica is a standby waiting for the Lease).
    pub running: AtomicBool,
    /// Whether the controller still makes progress, for `/healthz`.
    pub liveness: Liveness,
}

impl Health {
    pub fn is_ready(&self) -> bool {
        self.crd_present.load(Ordering::Relaxed) && self.running.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

/// Which endpoints a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoints {
    /// `/healthz`, `/readyz` and `/metrics` on one port.
    All,
    /// `/healthz` and `/readyz` only.
    Probes,
    /// `/metrics` only.
    Metrics,
}

pub fn router(endpoints: Endpoints, health: Arc<Health>, metrics: Arc<Metrics>) -> Router {
    let mut router = Router::new();
    if endpoints != Endpoints::Metrics {
        router = router
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz));
    }
    if endpoints != Endpoints::Probes {
        router = router.route("/metrics", get(metrics_text));
    }
    router.with_state(AppState { health, metrics })
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    match state.health.liveness.wedged(std::time::Instant::now()) {
        None => (StatusCode::OK, "ok".to_string()),
        Some(why) => {
            tracing::error!(%why, "controller wedged: failing /healthz so that the Pod is restarted");
            (StatusCode::SERVICE_UNAVAILABLE, why)
        }
    }
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.health.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    match state.metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Serves until the process ends.
pub async fn serve(
    addr: SocketAddr,
    endpoints: Endpoints,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router(endpoints, health, metrics)).await
}

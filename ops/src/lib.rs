//! The HTTP side of `--metrics-listen`, the same in both binaries:
//! `/metrics` (the binary's registry in the Prometheus/OpenMetrics text
//! format), `/healthz` (the process answers) and `/readyz` (it should be
//! sent work). What the metrics are and when the process is ready is each
//! binary's own, behind [`Exposition`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

/// The content type of the OpenMetrics text format, which Prometheus reads
/// (the `prometheus-client` crate writes it).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What a binary exposes on its metrics port.
pub trait Exposition: Send + Sync + 'static {
    /// The `/metrics` body, with what is measured at scrape time brought up
    /// to date first.
    fn render(&self) -> Pin<Box<dyn Future<Output = String> + Send + '_>>;

    /// Whether the process should be sent work now (`/readyz`).
    fn ready(&self) -> bool;
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` in the
/// background until the task is aborted or the runtime ends.
pub fn spawn(
    listener: TcpListener,
    exposition: Arc<dyn Exposition>,
) -> tokio::task::JoinHandle<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(exposition);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics server stopped");
        }
    })
}

async fn metrics(State(exposition): State<Arc<dyn Exposition>>) -> impl IntoResponse {
    let body = exposition.render().await;
    ([(header::CONTENT_TYPE, OPENMETRICS)], body)
}

async fn readyz(State(exposition): State<Arc<dyn Exposition>>) -> impl IntoResponse {
    if exposition.ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

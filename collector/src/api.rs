//! The API listener (default :8080): SQL query endpoint, Prometheus metrics and health probes.
//! The query endpoint itself lives in [`crate::query`]; this module composes the router.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::pipeline::IngestHandle;
use crate::query::{self, QueryEngine};

#[derive(Clone)]
struct ApiState {
    ingest: IngestHandle,
    metrics: Metrics,
}

pub fn router(engine: Arc<QueryEngine>, ingest: IngestHandle, metrics: Metrics) -> Router {
    let state = ApiState {
        ingest,
        metrics: metrics.clone(),
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
        .merge(query::router(engine, metrics))
}

/// The process is up and serving HTTP.
async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// Accepting data: the WAL is writable and storage is not behind.
async fn readyz(State(s): State<ApiState>) -> impl IntoResponse {
    if s.ingest.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics_text(State(s): State<ApiState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

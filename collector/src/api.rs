//! The API listener (default :8080): SQL query endpoint, Prometheus metrics and health probes.
//! The query endpoint itself lives in [`crate::query`]; this module composes the router.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router, middleware};

use crate::auth::{self, Auth, Principal};
use crate::metrics::Metrics;
use crate::pipeline::IngestHandle;
use crate::query::{self, QueryEngine};

#[derive(Clone)]
struct ApiState {
    ingest: IngestHandle,
    metrics: Metrics,
    auth: Auth,
}

/// Every route of the API listener, behind one authentication layer that picks the scope
/// from the path (see [`auth::require`]).
pub fn router(
    engine: Arc<QueryEngine>,
    ingest: IngestHandle,
    metrics: Metrics,
    auth: Auth,
) -> Router {
    let state = ApiState {
        ingest,
        metrics: metrics.clone(),
        auth: auth.clone(),
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/admin/reload", post(reload))
        .with_state(state)
        .merge(query::router(engine, metrics))
        .layer(middleware::from_fn_with_state(auth, auth::require))
}

/// `POST /api/v1/admin/reload`: re-reads the API key file, like SIGHUP. 200 with the number
/// of valid keys; 422 when the file has problems (the keys in use stay valid).
async fn reload(
    State(s): State<ApiState>,
    Extension(caller): Extension<Arc<Principal>>,
) -> Response {
    match s.auth.reload() {
        Ok(keys) => {
            tracing::info!(by = %caller.id, keys, "API keys reloaded through the admin API");
            Json(serde_json::json!({ "keys": keys })).into_response()
        }
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({ "error": e })),
        )
            .into_response(),
    }
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

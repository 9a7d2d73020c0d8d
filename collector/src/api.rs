//! The API listener (default :8080): SQL query endpoint, alert triage, detector snapshots, the
//! built-in console, Prometheus metrics and health probes. This module composes the router and
//! holds the one mapping from [`ApiError`] to HTTP responses for the endpoints in `api/`.

mod console;
mod detector;
mod triage;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router, middleware};
use vigil_core::Redactor;

use crate::audit::{self, AuditDetail, AuditLog};
use crate::auth::{self, Auth, Principal};
use crate::detection::{DetectorHandle, DetectorUnavailable};
use crate::metrics::Metrics;
use crate::pipeline::IngestHandle;
use crate::query::{self, QueryEngine, QueryError};
use crate::reload::Reloadable;
use crate::storage::Appender;

pub use console::is_console_path;

/// What the API serves from.
pub struct ApiParts {
    pub engine: Arc<QueryEngine>,
    pub ingest: IngestHandle,
    pub detector: DetectorHandle,
    /// Where triage actions are written (the `alert_actions` table).
    pub appender: Appender,
    /// Triage comments pass it before storage, like everything else.
    pub redactor: Redactor,
    pub metrics: Metrics,
    /// Checks every request (the scope comes from the path; see [`auth::require`]).
    pub auth: Auth,
    /// What `POST /api/v1/admin/reload` re-reads.
    pub reload: Reloadable,
}

#[derive(Clone)]
struct ApiState {
    ingest: IngestHandle,
    metrics: Metrics,
    reload: Reloadable,
}

/// State of the triage and detector endpoints.
#[derive(Clone)]
struct AppState {
    engine: Arc<QueryEngine>,
    detector: DetectorHandle,
    appender: Appender,
    redactor: Redactor,
}

/// Every route of the API listener, behind one authentication layer that picks the scope
/// from the path, so a route added under `/api/` is protected by default.
pub fn router(parts: ApiParts) -> Router {
    let state = ApiState {
        ingest: parts.ingest,
        metrics: parts.metrics.clone(),
        reload: parts.reload,
    };
    let (app_appender, app_redactor) = (parts.appender.clone(), parts.redactor.clone());
    let app = AppState {
        engine: parts.engine.clone(),
        detector: parts.detector,
        appender: parts.appender,
        redactor: parts.redactor,
    };
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/admin/reload", post(reload))
        .with_state(state)
        .merge(query::router(parts.engine, parts.metrics))
        .merge(triage::routes().with_state(app.clone()))
        .merge(detector::routes().with_state(app))
        .merge(console::routes());
    // The audit trail records who did what; with auth off everyone is `anonymous` on a
    // loopback-only Vigil, and there is no one to hold to account.
    let router = if parts.auth.enabled() {
        router.layer(middleware::from_fn_with_state(
            AuditLog::new(app_appender, app_redactor),
            audit::record,
        ))
    } else {
        router
    };
    // Outermost: authentication runs first, so the audit layer sees the caller.
    router.layer(middleware::from_fn_with_state(parts.auth, auth::require))
}

/// `POST /api/v1/admin/reload`: re-reads what SIGHUP re-reads (see [`crate::reload`]). 200
/// with the number of valid API keys and the storage key now encrypting; 422 when a file has
/// problems (what is in use stays, and the other files are still reloaded).
async fn reload(
    State(s): State<ApiState>,
    Extension(caller): Extension<Arc<Principal>>,
) -> Response {
    let unprocessable = |error: String| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({ "error": error })),
        )
            .into_response()
    };
    if s.reload.is_empty() {
        return unprocessable(
            "nothing to reload: no auth, TLS or storage encryption is configured".to_owned(),
        );
    }
    let reloaded = s.reload.reload();
    let errors = reloaded.errors();
    if !errors.is_empty() {
        return unprocessable(errors.join("; "));
    }
    tracing::info!(by = %caller.id, ?reloaded, "reloaded through the admin API");
    let mut body = serde_json::Map::new();
    let mut detail = Vec::new();
    if let Some(Ok(keys)) = reloaded.keys {
        body.insert("keys".into(), keys.into());
        detail.push(format!("{keys} keys valid"));
    }
    if let Some(Ok(())) = reloaded.tls {
        body.insert("tls".into(), "reloaded".into());
        detail.push("TLS files reloaded".to_owned());
    }
    if let Some(Ok(id)) = reloaded.storage_key {
        detail.push(format!("storage key {id} encrypts"));
        body.insert("storage_key".into(), id.into());
    }
    let mut response = Json(body).into_response();
    response.extensions_mut().insert(AuditDetail {
        action: Some("reload"),
        detail: Some(detail.join("; ")),
        rows: None,
    });
    response
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

/// Why a triage or detector request failed. Every message but `Internal`'s is for the client.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts the resource's state (resolving a resolved alert).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<DetectorUnavailable> for ApiError {
    fn from(e: DetectorUnavailable) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Timeout(_) | QueryError::ResourcesExhausted(_) => {
                ApiError::Unavailable(e.to_string())
            }
            // The SQL is ours: an invalid or refused query is a bug, not the client's doing.
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::InvalidInput(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "api request failed");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
    }
}

/// RFC 3339 in UTC with nanoseconds, as the query API writes timestamps.
fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

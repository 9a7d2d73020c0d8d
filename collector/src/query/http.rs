//! `POST /api/v1/query`: runs one SQL statement and answers in the requested format, with the
//! single mapping from `QueryError` to HTTP status and `{"error": ...}` body.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;

use super::{OutputFormat, QueryEngine, QueryError};
use crate::audit::AuditDetail;
use crate::auth::Principal;
use crate::metrics::Metrics;

#[derive(Clone)]
struct ApiState {
    engine: Arc<QueryEngine>,
    metrics: Metrics,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct QueryRequest {
    pub(super) sql: String,
    #[serde(default)]
    pub(super) format: OutputFormat,
}

/// axum router serving `POST /api/v1/query` with body `{"sql": "...", "format": "json"}`.
///
/// Status codes: 200 answer; 400 malformed body, invalid SQL or a refused (not read-only)
/// statement; 413 body over axum's default 2 MiB limit; 422 result larger than the row cap;
/// 503 query over its memory limit; 504 query over its time limit (not 408, which clients and
/// proxies retry automatically); 500 internal error (detail logged, not returned).
///
/// `GET /api/v1/alerts/{fingerprint}`: every state change of one alert (the rows of the
/// `alerts` table), oldest first, in the query API's JSON shape. Webhook payloads link here.
pub fn router(engine: Arc<QueryEngine>, metrics: Metrics) -> Router {
    Router::new()
        .route("/api/v1/query", post(query))
        .route("/api/v1/alerts/{fingerprint}", get(alert))
        .with_state(ApiState { engine, metrics })
}

async fn alert(
    State(api): State<ApiState>,
    Extension(caller): Extension<Arc<Principal>>,
    Path(fingerprint): Path<String>,
) -> Response {
    if !vigil_detector::is_fingerprint(&fingerprint) {
        return error_response(&QueryError::Invalid(
            "an alert fingerprint is 16 lower-case hex digits".into(),
        ));
    }
    let request = QueryRequest {
        sql: format!(
            "SELECT * FROM alerts WHERE fingerprint = '{fingerprint}' ORDER BY last_seen, status"
        ),
        format: OutputFormat::default(),
    };
    let mut response = match run(&api.engine, &caller, request).await {
        Ok((content_type, body, _)) => {
            ([(header::CONTENT_TYPE, content_type)], Body::from(body)).into_response()
        }
        Err(error) => error_response(&error),
    };
    response.extensions_mut().insert(AuditDetail {
        action: Some("alert"),
        detail: Some(fingerprint),
        rows: None,
    });
    response
}

async fn query(
    State(api): State<ApiState>,
    Extension(caller): Extension<Arc<Principal>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let body = match body {
        Ok(body) => body,
        // Too large (413) or unreadable: answered in the API's error shape, not counted as a query.
        Err(rejection) => {
            let message = format!("cannot read the request body: {}", rejection.body_text());
            return (
                rejection.status(),
                axum::Json(serde_json::json!({ "error": message })),
            )
                .into_response();
        }
    };
    let mut sql = None;
    let outcome = match parse_request(&body) {
        Err(e) => Err(e),
        Ok(request) => {
            sql = Some(request.sql.clone());
            run(&api.engine, &caller, request).await
        }
    };
    let label = match &outcome {
        Ok(_) => "ok",
        Err(e) => e.outcome(),
    };
    let elapsed = started.elapsed();
    api.metrics.queries.with_label_values(&[label]).inc();
    api.metrics
        .query_duration
        .with_label_values(&[label])
        .observe(elapsed.as_secs_f64());
    let mut rows = None;
    let mut response = match outcome {
        Ok((content_type, body, n)) => {
            tracing::info!(
                by = %caller.id,
                outcome = label,
                elapsed_ms = elapsed.as_millis() as u64,
                bytes = body.len(),
                "query answered"
            );
            rows = Some(n);
            ([(header::CONTENT_TYPE, content_type)], Body::from(body)).into_response()
        }
        Err(error) => error_response(&error),
    };
    response.extensions_mut().insert(AuditDetail {
        action: Some("query"),
        detail: sql,
        rows,
    });
    response
}

/// Reads a `POST /api/v1/query` body.
pub(super) fn parse_request(body: &[u8]) -> Result<QueryRequest, QueryError> {
    serde_json::from_slice(body)
        .map_err(|e| QueryError::Invalid(format!("malformed request body: {e}")))
}

/// Runs a query as `caller`: a key limited to services sees only their rows.
async fn run(
    engine: &QueryEngine,
    caller: &Principal,
    request: QueryRequest,
) -> Result<(&'static str, Vec<u8>, u64), QueryError> {
    tracing::debug!(sql = %request.sql, format = ?request.format, "query received");
    let answer = engine
        .answer(&request.sql, &caller.visibility(), request.format)
        .await?;
    Ok((answer.content_type, answer.body, answer.rows))
}

fn status(error: &QueryError) -> StatusCode {
    match error {
        QueryError::Invalid(_) | QueryError::Refused(_) => StatusCode::BAD_REQUEST,
        QueryError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        QueryError::TooLarge { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        QueryError::ResourcesExhausted(_) => StatusCode::SERVICE_UNAVAILABLE,
        QueryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_response(error: &QueryError) -> Response {
    let status = status(error);
    let message = match error {
        QueryError::Internal(detail) => {
            tracing::error!(error = %detail, "query failed");
            "internal error".to_string()
        }
        other => {
            // The message may quote the SQL's literals: keep it out of info-level logs.
            tracing::info!(
                outcome = other.outcome(),
                status = status.as_u16(),
                "query rejected"
            );
            tracing::debug!(error = %other, "query rejection detail");
            other.to_string()
        }
    };
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

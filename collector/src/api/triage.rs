//! Alert triage: the list of alerts with their current state, and the analyst's actions on one
//! alert (acknowledge, resolve), each recorded in the `alert_actions` table.
//!
//! - `GET /api/v1/alerts?status=&severity=&rule=&service=&since=&limit=`: one row per alert (its
//!   latest state change) with its latest acknowledgement, in the query API's JSON shape.
//! - `POST /api/v1/alerts/{fingerprint}/acknowledge`, body `{"comment": "..."}` (optional).
//! - `POST /api/v1/alerts/{fingerprint}/resolve`, same body: resolves the alert in the detector,
//!   so the `alerts` table gets its resolved row and the sinks their resolved notification.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, StringBuilder, TimestampNanosecondBuilder,
};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use vigil_core::schema::alert_actions_schema;
use vigil_core::time::now_ns;
use vigil_core::{Batch, Signal};
use vigil_detector::{Alert, ManualResolution, Severity, Status};

use super::{ApiError, AppState, rfc3339};
use crate::auth::Principal;
use crate::query::OutputFormat;

/// Longest comment kept with an action, in characters.
const MAX_COMMENT_CHARS: usize = 2000;
/// Longest rule id or service name accepted as a filter.
const MAX_FILTER_CHARS: usize = 256;
const DEFAULT_LIMIT: usize = 500;
const MAX_LIMIT: usize = 5000;
const DEFAULT_SINCE: Duration = Duration::from_secs(24 * 3600);

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/alerts", get(list))
        .route(
            "/api/v1/alerts/{fingerprint}/acknowledge",
            post(acknowledge),
        )
        .route("/api/v1/alerts/{fingerprint}/resolve", post(resolve))
}

/// What an analyst did to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Action {
    Acknowledge,
    Resolve,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Acknowledge => "acknowledge",
            Action::Resolve => "resolve",
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionRequest {
    #[serde(default)]
    comment: Option<String>,
}

/// The answer to an action: what was recorded.
#[derive(Debug, Serialize)]
struct ActionRecord {
    fingerprint: String,
    action: Action,
    principal: String,
    time: String,
    comment: Option<String>,
    /// The alert's state after the action.
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    resolved_time: Option<String>,
}

async fn acknowledge(
    State(app): State<AppState>,
    Path(fingerprint): Path<String>,
    Extension(caller): Extension<Arc<Principal>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ActionRecord>, ApiError> {
    let (fingerprint, request, alert) = target(&app, &caller, fingerprint, body).await?;
    let principal = caller.id.clone();
    if alert.status == Status::Resolved {
        return Err(ApiError::Conflict(format!(
            "alert {fingerprint} is resolved; there is nothing to acknowledge"
        )));
    }
    let time = now_ns();
    record(
        &app,
        Action::Acknowledge,
        &alert,
        &principal,
        &request,
        time,
    )
    .await?;
    tracing::info!(fingerprint = %fingerprint, principal = %principal, "alert acknowledged");
    Ok(Json(ActionRecord {
        fingerprint,
        action: Action::Acknowledge,
        principal,
        time: rfc3339(time),
        comment: request.comment,
        status: alert.status,
        resolved_time: None,
    }))
}

async fn resolve(
    State(app): State<AppState>,
    Path(fingerprint): Path<String>,
    Extension(caller): Extension<Arc<Principal>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ActionRecord>, ApiError> {
    let (fingerprint, request, stored) = target(&app, &caller, fingerprint, body).await?;
    let principal = caller.id.clone();
    // The detector resolves its own firing alert; one it does not hold (fired before a
    // restart) is resolved from its stored state, so it cannot stay firing in the table.
    let stale = (stored.status == Status::Firing).then(|| stored.clone());
    let by = ManualResolution {
        principal: principal.clone(),
    };
    let resolved = app
        .detector
        .resolve(fingerprint.clone(), by, stale)
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("alert {fingerprint} is already resolved")))?;
    let time = resolved.resolved_ns.unwrap_or_else(now_ns);
    record(&app, Action::Resolve, &resolved, &principal, &request, time)
        .await
        .map_err(|e| match e {
            ApiError::Unavailable(why) => ApiError::Unavailable(format!(
                "the alert was resolved, but the action could not be recorded: {why}"
            )),
            other => other,
        })?;
    Ok(Json(ActionRecord {
        fingerprint,
        action: Action::Resolve,
        principal,
        time: rfc3339(time),
        comment: request.comment,
        status: resolved.status,
        resolved_time: resolved.resolved_ns.map(rfc3339),
    }))
}

/// What an action is about: the checked fingerprint, the request body and the alert's latest
/// state as the caller may see it (404 otherwise).
async fn target(
    app: &AppState,
    caller: &Principal,
    fingerprint: String,
    body: Result<Bytes, BytesRejection>,
) -> Result<(String, ActionRequest, Alert), ApiError> {
    let fingerprint = check_fingerprint(fingerprint)?;
    let request = action_request(body)?;
    let alert = latest_alert(app, caller, &fingerprint)
        .await?
        .ok_or_else(|| not_found(&fingerprint))?;
    Ok((fingerprint, request, alert))
}

fn not_found(fingerprint: &str) -> ApiError {
    ApiError::NotFound(format!("no alert with fingerprint {fingerprint}"))
}

/// Fingerprints are 16 lower-case hex digits; checking that also keeps SQL literals safe.
fn check_fingerprint(fingerprint: String) -> Result<String, ApiError> {
    if vigil_detector::is_fingerprint(&fingerprint) {
        Ok(fingerprint)
    } else {
        Err(ApiError::InvalidInput(
            "an alert fingerprint is 16 lower-case hex digits".into(),
        ))
    }
}

/// The optional JSON body of an action; an empty body is no comment.
fn action_request(body: Result<Bytes, BytesRejection>) -> Result<ActionRequest, ApiError> {
    let body = body.map_err(|r| {
        ApiError::InvalidInput(format!("cannot read the request body: {}", r.body_text()))
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ActionRequest::default());
    }
    let mut request: ActionRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidInput(format!("malformed request body: {e}")))?;
    request.comment = request
        .comment
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    if let Some(comment) = &request.comment
        && comment.chars().count() > MAX_COMMENT_CHARS
    {
        return Err(ApiError::InvalidInput(format!(
            "comment is longer than {MAX_COMMENT_CHARS} characters"
        )));
    }
    Ok(request)
}

/// Appends one `alert_actions` row (through the redactor: the comment is free text) and waits
/// until it is durable.
async fn record(
    app: &AppState,
    action: Action,
    alert: &Alert,
    principal: &str,
    request: &ActionRequest,
    time_ns: i64,
) -> Result<(), ApiError> {
    let rows = action_row(
        action,
        alert,
        principal,
        request.comment.as_deref(),
        time_ns,
    )
    .map_err(|e| ApiError::Internal(format!("cannot build the alert_actions row: {e}")))?;
    let batch = Batch::new(Signal::AlertActions, rows)
        .map_err(|e| ApiError::Internal(e.to_string()))
        .and_then(|b| {
            app.redactor
                .apply(b)
                .map_err(|e| ApiError::Internal(format!("cannot redact the action: {e}")))
        })?;
    app.appender
        .append_waiting(batch)
        .await
        .map_err(|e| ApiError::Unavailable(format!("cannot record the action: {e}")))
}

fn action_row(
    action: Action,
    alert: &Alert,
    principal: &str,
    comment: Option<&str>,
    time_ns: i64,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut time = TimestampNanosecondBuilder::with_capacity(1).with_timezone("UTC");
    time.append_value(time_ns);
    let text = |v: Option<&str>| {
        let mut b = StringBuilder::new();
        b.append_option(v);
        Arc::new(b.finish()) as ArrayRef
    };
    RecordBatch::try_new(
        alert_actions_schema(),
        vec![
            Arc::new(time.finish()),
            text(Some(&alert.fingerprint)),
            text(Some(action.as_str())),
            text(Some(principal)),
            text(comment),
            text(Some(&alert.rule_id)),
            text(Some(&alert.service)),
            text(Some(alert.severity.as_str())),
        ],
    )
}

/// The latest state change of alert `fingerprint` in the `alerts` table (the resolution of an
/// episode comes after its firing row; a later episode starts later).
/// A caller limited to services only finds their alerts.
async fn latest_alert(
    app: &AppState,
    caller: &Principal,
    fingerprint: &str,
) -> Result<Option<Alert>, ApiError> {
    let sql = format!(
        "SELECT time, last_seen, resolved_time, status, rule_id, rule_title, severity, service, \
         fingerprint, summary, details, count FROM alerts WHERE fingerprint = '{fingerprint}' \
         ORDER BY time DESC, resolved_time DESC NULLS LAST LIMIT 1"
    );
    let result = app.engine.execute_as(&sql, &caller.visibility()).await?;
    let Some(batch) = result.batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    alert_from_row(batch, 0)
        .map(Some)
        .ok_or_else(|| ApiError::Internal(format!("unreadable alerts row of {fingerprint}")))
}

/// An `alerts` row back as the detector's `Alert`.
fn alert_from_row(batch: &RecordBatch, row: usize) -> Option<Alert> {
    let text = |name: &str| -> Option<String> {
        let column = cast(batch.column_by_name(name)?, &DataType::Utf8).ok()?;
        let strings = column.as_string_opt::<i32>()?;
        (row < strings.len() && strings.is_valid(row)).then(|| strings.value(row).to_owned())
    };
    let int = |name: &str| -> Option<i64> {
        let column = cast(batch.column_by_name(name)?, &DataType::Int64).ok()?;
        let ints = column.as_primitive_opt::<arrow::datatypes::Int64Type>()?;
        (row < ints.len() && ints.is_valid(row)).then(|| ints.value(row))
    };
    let parse =
        |name: &str| -> Option<serde_json::Value> { text(name).map(serde_json::Value::from) };
    let severity: Severity = serde_json::from_value(parse("severity")?).ok()?;
    let status: Status = serde_json::from_value(parse("status")?).ok()?;
    Some(Alert {
        fingerprint: text("fingerprint")?,
        rule_id: text("rule_id")?,
        rule_title: text("rule_title")?,
        severity,
        service: text("service")?,
        status,
        summary: text("summary")?,
        details: serde_json::from_str(&text("details")?).unwrap_or(serde_json::Value::Null),
        started_ns: int("time")?,
        last_seen_ns: int("last_seen")?,
        resolved_ns: int("resolved_time"),
        count: u64::try_from(int("count")?).unwrap_or_default(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    /// `firing`, `resolved`, `acknowledged` (firing, acknowledged) or `unacknowledged`.
    status: Option<String>,
    /// One or more severities, comma-separated.
    severity: Option<String>,
    rule: Option<String>,
    service: Option<String>,
    /// Alerts firing now or active within this long: `15m`, `6h`, `7d`.
    since: Option<String>,
    limit: Option<usize>,
}

async fn list(
    State(app): State<AppState>,
    Extension(caller): Extension<Arc<Principal>>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params
        .map_err(|r| ApiError::InvalidInput(format!("invalid parameters: {}", r.body_text())))?;
    let sql = list_sql(&params)?;
    let answer = app
        .engine
        .answer(&sql, &caller.visibility(), OutputFormat::Json)
        .await?;
    Ok((
        [(header::CONTENT_TYPE, answer.content_type)],
        Body::from(answer.body),
    )
        .into_response())
}

/// The list query for `params`, every value checked against its closed set or quoted as a
/// SQL string literal.
fn list_sql(params: &ListParams) -> Result<String, ApiError> {
    let mut filters = Vec::new();
    match params.status.as_deref().map(str::trim) {
        None | Some("" | "all") => {}
        Some("firing") => filters.push("l.status = 'firing'".to_owned()),
        Some("resolved") => filters.push("l.status = 'resolved'".to_owned()),
        Some("acknowledged") => {
            filters.push("l.status = 'firing' AND a.principal IS NOT NULL".to_owned());
        }
        Some("unacknowledged") => {
            filters.push("l.status = 'firing' AND a.principal IS NULL".to_owned());
        }
        Some(other) => {
            return Err(ApiError::InvalidInput(format!(
                "status must be firing, resolved, acknowledged or unacknowledged, not {other:?}"
            )));
        }
    }
    if let Some(list) = params.severity.as_deref().filter(|s| !s.trim().is_empty()) {
        let mut names = Vec::new();
        for name in list.split(',').map(str::trim) {
            let severity = Severity::ALL
                .into_iter()
                .find(|s| s.as_str() == name)
                .ok_or_else(|| {
                    ApiError::InvalidInput(format!(
                        "severity must be info, low, medium, high or critical, not {name:?}"
                    ))
                })?;
            names.push(format!("'{}'", severity.as_str()));
        }
        filters.push(format!("l.severity IN ({})", names.join(", ")));
    }
    for (column, value) in [("rule_id", &params.rule), ("service", &params.service)] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            filters.push(format!("l.{column} = {}", string_literal(column, value)?));
        }
    }
    let since = match params.since.as_deref() {
        None | Some("") => DEFAULT_SINCE,
        Some(text) => parse_since(text)?,
    };
    filters.push(format!(
        "(l.status = 'firing' OR coalesce(l.resolved_time, l.last_seen) >= now() - INTERVAL '{} seconds')",
        since.as_secs()
    ));
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::InvalidInput(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    Ok(format!(
        "WITH latest AS (\
            SELECT *, row_number() OVER (PARTITION BY fingerprint \
                ORDER BY time DESC, resolved_time DESC NULLS LAST) AS rn FROM alerts), \
         acks AS (\
            SELECT fingerprint, principal, time, comment, row_number() OVER (\
                PARTITION BY fingerprint ORDER BY time DESC) AS rn \
            FROM alert_actions WHERE action = 'acknowledge') \
         SELECT l.fingerprint, l.status, l.severity, l.rule_id, l.rule_title, l.service, \
            l.summary, l.time AS started, l.last_seen, l.resolved_time, l.count, \
            a.principal AS acknowledged_by, a.time AS acknowledged_time, \
            a.comment AS acknowledge_comment \
         FROM latest l LEFT JOIN acks a \
            ON a.fingerprint = l.fingerprint AND a.rn = 1 AND a.time >= l.time \
         WHERE l.rn = 1 AND {} \
         ORDER BY l.status = 'firing' DESC, \
            CASE l.severity WHEN 'critical' THEN 5 WHEN 'high' THEN 4 WHEN 'medium' THEN 3 \
                WHEN 'low' THEN 2 ELSE 1 END DESC, \
            coalesce(l.resolved_time, l.last_seen) DESC, l.fingerprint \
         LIMIT {limit}",
        filters.join(" AND ")
    ))
}

/// `value` as a SQL string literal: quotes doubled, control characters refused.
fn string_literal(name: &str, value: &str) -> Result<String, ApiError> {
    if value.chars().count() > MAX_FILTER_CHARS || value.chars().any(char::is_control) {
        return Err(ApiError::InvalidInput(format!(
            "{name} must be at most {MAX_FILTER_CHARS} characters without control characters"
        )));
    }
    Ok(format!("'{}'", value.replace('\'', "''")))
}

/// `90s`, `15m`, `6h`, `7d`: a whole number and a unit, at most a year.
fn parse_since(text: &str) -> Result<Duration, ApiError> {
    let invalid = || {
        ApiError::InvalidInput(format!(
            "since must be a duration like 15m, 6h or 7d (at most 366d), not {text:?}"
        ))
    };
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| invalid())?;
    let seconds = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(invalid()),
    };
    if seconds == 0 || seconds > 366 * 86_400 {
        return Err(invalid());
    }
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ListParams` as axum's `Query` reads them from `a=b&c=d` (values not percent-encoded).
    fn params(query: &str) -> ListParams {
        let map: serde_json::Map<String, serde_json::Value> = query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                let value = match k {
                    "limit" => serde_json::Value::from(v.parse::<u64>().unwrap()),
                    _ => serde_json::Value::from(v),
                };
                (k.to_owned(), value)
            })
            .collect();
        serde_json::from_value(serde_json::Value::Object(map)).unwrap()
    }

    #[test]
    fn since_takes_whole_numbers_with_a_unit() {
        assert_eq!(parse_since("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_since("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_since("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_since("7d").unwrap(), Duration::from_secs(7 * 86_400));
        for bad in ["", "h", "15", "1.5h", "0m", "-1h", "400d", "1w", "1h30m"] {
            assert!(parse_since(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn filters_are_checked_or_quoted() {
        let sql = list_sql(&params(
            "status=unacknowledged&severity=high,critical&rule=r'1&service=cart&since=1h",
        ))
        .unwrap();
        assert!(sql.contains("l.severity IN ('high', 'critical')"), "{sql}");
        assert!(sql.contains("l.rule_id = 'r''1'"), "{sql}");
        assert!(sql.contains("l.service = 'cart'"), "{sql}");
        assert!(sql.contains("INTERVAL '3600 seconds'"), "{sql}");
        assert!(sql.contains("a.principal IS NULL"), "{sql}");
        assert!(sql.ends_with("LIMIT 500"), "{sql}");

        for bad in [
            "status=open",
            "severity=urgent",
            "severity=high,",
            "since=forever",
            "limit=0",
            "limit=100000",
        ] {
            assert!(
                matches!(list_sql(&params(bad)), Err(ApiError::InvalidInput(_))),
                "{bad}"
            );
        }
        let control = ListParams {
            service: Some("a\u{0}b".into()),
            ..params("")
        };
        assert!(matches!(list_sql(&control), Err(ApiError::InvalidInput(_))));
    }

    #[test]
    fn fingerprints_are_sixteen_lower_case_hex_digits() {
        assert!(check_fingerprint("0123456789abcdef".into()).is_ok());
        for bad in [
            "0123456789ABCDEF",
            "0123456789abcde",
            "0123456789abcdef0",
            "' OR 1=1 --------",
        ] {
            assert!(check_fingerprint(bad.into()).is_err(), "{bad}");
        }
    }

    #[test]
    fn action_bodies_may_be_empty_and_comments_are_bounded() {
        let ok = |b: &'static str| action_request(Ok(Bytes::from_static(b.as_bytes())));
        assert_eq!(ok("").unwrap().comment, None);
        assert_eq!(ok("  \n").unwrap().comment, None);
        assert_eq!(ok("{}").unwrap().comment, None);
        assert_eq!(ok(r#"{"comment":"  "}"#).unwrap().comment, None);
        assert_eq!(
            ok(r#"{"comment":" on it "}"#).unwrap().comment.as_deref(),
            Some("on it")
        );
        assert!(ok(r#"{"comment":1}"#).is_err());
        assert!(ok(r#"{"note":"x"}"#).is_err());
        assert!(ok("not json").is_err());
        let long = format!(r#"{{"comment":"{}"}}"#, "x".repeat(MAX_COMMENT_CHARS + 1));
        assert!(action_request(Ok(Bytes::from(long))).is_err());
    }
}

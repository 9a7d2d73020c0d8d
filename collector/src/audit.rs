//! The audit trail: every API request an authenticated caller makes (queries, triage, admin
//! actions, reads of alerts and detector state) becomes a row of the `audit` table: who, when,
//! what, the status answered and, for queries, the SQL and how many rows. Only admins can
//! query the table (see [`crate::query::Visibility`]).
//!
//! One middleware on the API router writes the rows, after the answer is sent, so the trail
//! never slows a request; handlers add what only they know as an [`AuditDetail`].

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    ArrayRef, StringBuilder, TimestampNanosecondBuilder, UInt16Builder, UInt64Builder,
};
use arrow::record_batch::RecordBatch;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use vigil_core::time::now_ns;
use vigil_core::{Batch, Redactor, Signal};

use crate::auth::Principal;
use crate::storage::Appender;

/// What a handler knows about a request that the path does not say.
#[derive(Debug, Clone, Default)]
pub struct AuditDetail {
    /// `query`, `acknowledge`, `reload`, ...; without one, the path's first part after
    /// `/api/v1/`.
    pub action: Option<&'static str>,
    /// The SQL of a query, the comment of a triage action.
    pub detail: Option<String>,
    /// Rows answered.
    pub rows: Option<u64>,
}

/// Where audit rows go.
#[derive(Clone)]
pub struct AuditLog {
    appender: Appender,
    redactor: Redactor,
}

struct Entry {
    time_ns: i64,
    principal: String,
    action: String,
    method: String,
    path: String,
    status: u16,
    detail: Option<String>,
    rows: Option<u64>,
    elapsed_ms: u64,
}

impl AuditLog {
    pub fn new(appender: Appender, redactor: Redactor) -> Self {
        Self { appender, redactor }
    }

    async fn write(&self, entry: Entry) -> anyhow::Result<()> {
        let batch = Batch::new(Signal::Audit, entry_batch(&entry)?)?;
        // SQL may quote an address or an email: it is redacted like any stored text.
        let batch = self.redactor.apply(batch)?;
        Ok(self.appender.append_waiting(batch).await?)
    }
}

/// Middleware (inside authentication, which puts the caller in the request): records every
/// request that has a caller. Public paths (probes, the console's files) have none.
pub async fn record(State(log): State<AuditLog>, request: Request, next: Next) -> Response {
    let Some(principal) = request.extensions().get::<Arc<Principal>>().cloned() else {
        return next.run(request).await;
    };
    let (time_ns, started) = (now_ns(), Instant::now());
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let detail = response
        .extensions()
        .get::<AuditDetail>()
        .cloned()
        .unwrap_or_default();
    let entry = Entry {
        time_ns,
        principal: principal.id.clone(),
        action: detail
            .action
            .map_or_else(|| action_of(&path), str::to_owned),
        method,
        path,
        status: response.status().as_u16(),
        detail: detail.detail,
        rows: detail.rows,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    tokio::spawn(async move {
        if let Err(e) = log.write(entry).await {
            tracing::error!(error = %e, "cannot write the audit trail");
        }
    });
    response
}

/// The action a path names: its last part when that is a word (`…/acknowledge`,
/// `…/detector/graph`), else its first part after `/api/v1/` (`/api/v1/alerts/<fingerprint>`
/// → `alerts`).
fn action_of(path: &str) -> String {
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return "api".to_owned();
    };
    let is_word = |s: &&str| {
        s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            && s.bytes().any(|b| !b.is_ascii_hexdigit())
    };
    rest.rsplit('/')
        .next()
        .filter(is_word)
        .or_else(|| rest.split('/').next().filter(|s| !s.is_empty()))
        .unwrap_or("api")
        .to_owned()
}

fn entry_batch(e: &Entry) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut time = TimestampNanosecondBuilder::with_capacity(1).with_timezone("UTC");
    time.append_value(e.time_ns);
    let text = |v: Option<&str>| -> ArrayRef {
        let mut b = StringBuilder::new();
        b.append_option(v);
        Arc::new(b.finish())
    };
    let mut status = UInt16Builder::with_capacity(1);
    status.append_value(e.status);
    let mut rows = UInt64Builder::with_capacity(1);
    rows.append_option(e.rows);
    let mut elapsed = UInt64Builder::with_capacity(1);
    elapsed.append_value(e.elapsed_ms);
    RecordBatch::try_new(
        Signal::Audit.schema(),
        vec![
            Arc::new(time.finish()),
            text(Some(&e.principal)),
            text(Some(&e.action)),
            text(Some(&e.method)),
            text(Some(&e.path)),
            Arc::new(status.finish()),
            text(e.detail.as_deref()),
            Arc::new(rows.finish()),
            Arc::new(elapsed.finish()),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_come_from_the_path_and_rows_match_the_schema() {
        assert_eq!(action_of("/api/v1/alerts/0123456789abcdef"), "alerts");
        assert_eq!(
            action_of("/api/v1/alerts/0123456789abcdef/acknowledge"),
            "acknowledge"
        );
        assert_eq!(action_of("/api/v1/detector/graph"), "graph");
        assert_eq!(action_of("/api/v1/query"), "query");
        assert_eq!(action_of("/metrics"), "api");
        let batch = entry_batch(&Entry {
            time_ns: 1,
            principal: "soc".into(),
            action: "query".into(),
            method: "POST".into(),
            path: "/api/v1/query".into(),
            status: 200,
            detail: Some("SELECT 1".into()),
            rows: Some(1),
            elapsed_ms: 3,
        })
        .unwrap();
        assert!(Batch::new(Signal::Audit, batch).is_ok());
    }
}

//! The query API's input handling for the fuzz targets in `fuzz/`: the same request parsing the
//! `POST /api/v1/query` handler runs, and an engine with no data to check the statement against
//! (parse, read-only check, plan, plan check), as the handler does before running it.

use std::sync::Arc;
use std::time::Duration;

use super::{OutputFormat, QueryEngine, QueryError};
use crate::config::QueryConfig;
use crate::storage::catalog::Catalog;

/// Parses a request body into its SQL text and answer format.
pub fn parse_request(body: &[u8]) -> Result<(String, OutputFormat), QueryError> {
    super::http::parse_request(body).map(|r| (r.sql, r.format))
}

/// An engine over an empty catalog with one query thread.
pub fn engine() -> Result<QueryEngine, QueryError> {
    QueryEngine::new(
        Arc::new(Catalog::new()),
        QueryConfig {
            timeout: Duration::from_secs(10),
            memory_limit_bytes: 64 << 20,
            max_result_rows: 1000,
            threads: 1,
            trace_filter_cache_bytes: 1 << 20,
        },
    )
}

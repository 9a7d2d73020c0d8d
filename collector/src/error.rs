//! Error kinds shared by every edge. Each edge (gRPC, OTLP/HTTP, query API) maps an
//! [`ErrorKind`] to its wire status in exactly one function.

use std::time::Duration;

/// How a failure is classified for clients: decides status codes and retry advice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The client sent something wrong; retrying the same request will not help.
    InvalidInput,
    /// Vigil is over capacity; retry after the given delay.
    Overloaded { retry_after: Duration },
    /// The caller is over its own rate limit; retry after the given delay.
    RateLimited { retry_after: Duration },
    /// Vigil cannot serve right now (shutting down, storage failing); retry later.
    Unavailable { retry_after: Duration },
    /// A bug or an unexpected failure; details are logged, not returned.
    Internal,
}

/// An ingest failure as clients see it. `message` is safe to return (no payload values).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct IngestError {
    pub kind: ErrorKind,
    pub message: String,
}

impl IngestError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::InvalidInput,
            message: message.into(),
        }
    }
    pub fn overloaded(message: impl Into<String>, retry_after: Duration) -> Self {
        Self {
            kind: ErrorKind::Overloaded { retry_after },
            message: message.into(),
        }
    }
    pub fn rate_limited(message: impl Into<String>, retry_after: Duration) -> Self {
        Self {
            kind: ErrorKind::RateLimited { retry_after },
            message: message.into(),
        }
    }
    pub fn unavailable(message: impl Into<String>, retry_after: Duration) -> Self {
        Self {
            kind: ErrorKind::Unavailable { retry_after },
            message: message.into(),
        }
    }
    pub fn internal() -> Self {
        Self {
            kind: ErrorKind::Internal,
            message: "internal error".into(),
        }
    }
}

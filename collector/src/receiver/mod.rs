//! OTLP receivers: OTLP/HTTP (`http_router`, port 4318) and OTLP/gRPC (`grpc_routes`, port 4317).
//! Both only translate their transport to and from [`IngestHandle`]; this module holds what they share.

mod decompress;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod grpc;
mod http;
#[cfg(test)]
mod server_tests;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use vigil_core::decode::{
    DecodeError, Decoded, ProtobufError, decode_logs, decode_logs_protobuf, decode_traces,
    decode_traces_protobuf,
};
use vigil_core::time::now_ns;

use crate::auth::{Auth, AuthError, Credentials, Scope};
use crate::error::{ErrorKind, IngestError};
use crate::metrics::{Metrics, RejectReason};
use crate::pipeline::{Admission, ExportOutcome, IngestHandle, Transport};

pub use self::grpc::grpc_routes;
pub use self::http::http_router;

/// The `signal` label of requests to the metrics endpoints, which Vigil refuses.
const METRICS_LABEL: &str = "metrics";

/// Message returned to clients that export metrics (both transports).
const METRICS_REFUSED: &str = "vigil does not accept metrics; send logs and traces";

/// Bodies up to this size are decompressed and decoded on the async runtime; larger ones
/// (or any compressed body) go to `spawn_blocking` so one big request cannot stall others.
const INLINE_DECODE_MAX_BYTES: usize = 64 * 1024;

/// Why a receiver refused an export request as a whole. Each transport maps this to its wire
/// status in exactly one function (`http::error_response`, `grpc::to_status`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReceiveError {
    /// OTLP/HTTP `Content-Type` is neither `application/x-protobuf` nor `application/json`.
    #[error("unsupported content type {0}; use application/x-protobuf or application/json")]
    UnsupportedMediaType(String),
    /// OTLP/HTTP `Content-Encoding` is not `gzip`, `zstd` or `identity`.
    #[error("unsupported content encoding {0}; use gzip, zstd or identity")]
    UnsupportedEncoding(String),
    /// The body (compressed or decompressed) is larger than `ingest.max_body_bytes`.
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The body is not a valid compressed stream or not a valid OTLP message. The text
    /// describes the failure without echoing payload bytes.
    #[error("{0}")]
    Undecodable(String),
    /// The client went away or the connection failed while the body was being read.
    #[error("cannot read request body")]
    BodyRead,
    /// An export to a metrics endpoint.
    #[error("{METRICS_REFUSED}")]
    MetricsRefused,
    /// OTLP/HTTP request to a path that is not an OTLP endpoint.
    #[error("no such endpoint; OTLP/HTTP endpoints are /v1/logs and /v1/traces")]
    NotFound,
    /// The ingest pipeline refused the request (overload, shutdown, storage failure, bug).
    #[error("{0}")]
    Ingest(IngestError),
    /// No valid key with the `ingest` scope. Counted by [`crate::auth::Auth`] itself.
    #[error("{0}")]
    Auth(AuthError),
}

impl ReceiveError {
    /// The `reason` label under which the receiver counts this refusal in
    /// `vigil_rejected_requests_total`, or `None` when it does not count it: the pipeline counts
    /// its own refusals (overload, unavailability), and `RejectReason` has no label for unknown
    /// paths, the metrics endpoints or clients that hang up mid-body.
    fn reject_reason(&self) -> Option<RejectReason> {
        match self {
            ReceiveError::UnsupportedMediaType(_) | ReceiveError::UnsupportedEncoding(_) => {
                Some(RejectReason::UnsupportedMediaType)
            }
            ReceiveError::PayloadTooLarge { .. } => Some(RejectReason::PayloadTooLarge),
            ReceiveError::Undecodable(_) => Some(RejectReason::Undecodable),
            ReceiveError::Ingest(_)
            | ReceiveError::Auth(_)
            | ReceiveError::MetricsRefused
            | ReceiveError::NotFound
            | ReceiveError::BodyRead => None,
        }
    }

    /// The label logged with a refusal.
    fn log_reason(&self) -> &'static str {
        match self {
            ReceiveError::Ingest(e) => match e.kind {
                ErrorKind::InvalidInput => "invalid_input",
                ErrorKind::Overloaded { .. } => "overloaded",
                ErrorKind::RateLimited { .. } => "rate_limited",
                ErrorKind::Unavailable { .. } => "unavailable",
                ErrorKind::Internal => "internal",
            },
            ReceiveError::Auth(e) => e.reason(),
            ReceiveError::MetricsRefused => "unsupported_signal",
            ReceiveError::NotFound => "not_found",
            ReceiveError::BodyRead => "body_read",
            other => other.reject_reason().map_or("other", RejectReason::as_str),
        }
    }
}

/// Counts and logs a refused request. Logs kinds and labels only, never payload values.
fn record_rejection(metrics: &Metrics, signal: &str, transport: Transport, err: &ReceiveError) {
    if let Some(reason) = err.reject_reason() {
        metrics
            .rejected_requests
            .with_label_values(&[signal, reason.as_str()])
            .inc();
    }
    tracing::debug!(
        signal,
        transport = transport.as_str(),
        reason = err.log_reason(),
        error = %err,
        "otlp export refused"
    );
}

/// What differs between the logs and the traces export of both transports.
pub(crate) trait Signal: Send + Sync + 'static {
    /// The request as OTLP/JSON bodies are parsed into.
    type Request: Default + DeserializeOwned + Send + 'static;
    type Response: prost::Message + Default + PartialEq + Serialize + Send + 'static;
    /// Value of the `signal` metrics label.
    const LABEL: &'static str;
    /// Protobuf message name, for error messages.
    const REQUEST_NAME: &'static str;
    /// Fully qualified gRPC service name.
    const GRPC_SERVICE: &'static str;

    /// The table the records go to.
    const SIGNAL: vigil_core::Signal;

    /// A protobuf body, straight to Arrow.
    fn decode_protobuf(body: &[u8], received_at_ns: i64) -> Result<Decoded, ProtobufError>;

    /// A request parsed from JSON, to Arrow.
    fn decode(request: &Self::Request, received_at_ns: i64) -> Result<Decoded, DecodeError>;

    fn response(outcome: ExportOutcome) -> Self::Response;
}

/// `/v1/logs`, `LogsService`.
pub(crate) struct Logs;

/// `/v1/traces`, `TraceService`.
pub(crate) struct Traces;

impl Signal for Logs {
    type Request = ExportLogsServiceRequest;
    type Response = ExportLogsServiceResponse;
    const LABEL: &'static str = "logs";
    const REQUEST_NAME: &'static str = "ExportLogsServiceRequest";
    const GRPC_SERVICE: &'static str =
        opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::SERVICE_NAME;

    const SIGNAL: vigil_core::Signal = vigil_core::Signal::Logs;

    fn decode_protobuf(body: &[u8], received_at_ns: i64) -> Result<Decoded, ProtobufError> {
        decode_logs_protobuf(body, received_at_ns)
    }

    fn decode(request: &Self::Request, received_at_ns: i64) -> Result<Decoded, DecodeError> {
        decode_logs(request, received_at_ns)
    }

    fn response(outcome: ExportOutcome) -> Self::Response {
        ExportLogsServiceResponse {
            partial_success: partial_success(outcome).map(|(rejected, error_message)| {
                ExportLogsPartialSuccess {
                    rejected_log_records: rejected,
                    error_message,
                }
            }),
        }
    }
}

impl Signal for Traces {
    type Request = ExportTraceServiceRequest;
    type Response = ExportTraceServiceResponse;
    const LABEL: &'static str = "spans";
    const REQUEST_NAME: &'static str = "ExportTraceServiceRequest";
    const GRPC_SERVICE: &'static str =
        opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::SERVICE_NAME;

    const SIGNAL: vigil_core::Signal = vigil_core::Signal::Spans;

    fn decode_protobuf(body: &[u8], received_at_ns: i64) -> Result<Decoded, ProtobufError> {
        decode_traces_protobuf(body, received_at_ns)
    }

    fn decode(request: &Self::Request, received_at_ns: i64) -> Result<Decoded, DecodeError> {
        decode_traces(request, received_at_ns)
    }

    fn response(outcome: ExportOutcome) -> Self::Response {
        ExportTraceServiceResponse {
            partial_success: partial_success(outcome).map(|(rejected, error_message)| {
                ExportTracePartialSuccess {
                    rejected_spans: rejected,
                    error_message,
                }
            }),
        }
    }
}

/// `partial_success` content per the OTLP spec: unset on full success, set when records were
/// rejected (with a message), or when the pipeline has a warning for a fully accepted request.
fn partial_success(outcome: ExportOutcome) -> Option<(i64, String)> {
    let message = outcome.error_message.filter(|m| !m.is_empty());
    if outcome.rejected == 0 && message.is_none() {
        return None;
    }
    let message = message.unwrap_or_else(|| format!("{} records rejected", outcome.rejected));
    Some((i64::try_from(outcome.rejected).unwrap_or(i64::MAX), message))
}

/// An export request decoded into Arrow, with the time it was decoded (the `observed_time` of
/// records that have none).
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) decoded: Decoded,
    pub(crate) received_at_ns: i64,
}

/// Decodes a binary protobuf export request into Arrow.
fn decode_protobuf<S: Signal>(body: &[u8]) -> Result<Received, ReceiveError> {
    let received_at_ns = now_ns();
    let decoded = S::decode_protobuf(body, received_at_ns).map_err(|e| match e {
        // prost's errors name the message, field and wire problem; they never contain payload
        // bytes.
        ProtobufError::Undecodable(e) => {
            ReceiveError::Undecodable(format!("cannot decode protobuf {}: {e}", S::REQUEST_NAME))
        }
        ProtobufError::Decode(e) => conversion_failed::<S>(&e),
    })?;
    Ok(Received {
        decoded,
        received_at_ns,
    })
}

/// Vigil could not build a batch from a request it parsed: its own failure, not the client's.
fn conversion_failed<S: Signal>(e: &DecodeError) -> ReceiveError {
    tracing::error!(error = %e, signal = S::LABEL, "cannot convert export to arrow");
    ReceiveError::Ingest(IngestError::internal())
}

/// Decodes an OTLP/JSON export request (lowerCamelCase keys, hex ids, integer enums, 64-bit
/// integers as numbers or strings; unknown fields ignored) into Arrow. An empty body is an
/// empty request.
fn decode_json<S: Signal>(body: &[u8]) -> Result<Received, ReceiveError> {
    let request = parse_json::<S>(body)?;
    let received_at_ns = now_ns();
    let decoded = S::decode(&request, received_at_ns).map_err(|e| conversion_failed::<S>(&e))?;
    Ok(Received {
        decoded,
        received_at_ns,
    })
}

/// Parses an OTLP/JSON export request.
fn parse_json<S: Signal>(body: &[u8]) -> Result<S::Request, ReceiveError> {
    if body.is_empty() {
        return Ok(S::Request::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        // serde_json's messages can quote values from the payload ("invalid type: string
        // \"...\""), so only the category and position are returned.
        let category = match e.classify() {
            serde_json::error::Category::Io => "read",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "schema",
            serde_json::error::Category::Eof => "truncated input",
        };
        ReceiveError::Undecodable(format!(
            "cannot decode OTLP/JSON {}: {category} error at line {} column {}",
            S::REQUEST_NAME,
            e.line(),
            e.column()
        ))
    })
}

/// Runs CPU-heavy request work (decompression, decoding) off the async runtime unless the input
/// is small enough to finish in a fraction of a millisecond.
async fn run_cpu_bound<T, F>(inline: bool, work: F) -> Result<T, ReceiveError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ReceiveError> + Send + 'static,
{
    if inline {
        return work();
    }
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) => {
            tracing::error!(error = %e, "otlp decode task failed");
            Err(ReceiveError::Ingest(IngestError::internal()))
        }
    }
}

/// Hands a decoded request to the pipeline and builds the OTLP response. Requests without any
/// record are acknowledged without touching the pipeline.
async fn export<S: Signal>(
    ingest: &IngestHandle,
    admission: Admission,
    received: Received,
    transport: Transport,
) -> Result<S::Response, ReceiveError> {
    let Received {
        decoded,
        received_at_ns,
    } = received;
    if decoded.batch.num_rows() == 0 && decoded.rejected == 0 {
        return Ok(S::Response::default());
    }
    let outcome = ingest
        .export(admission, decoded, received_at_ns, transport)
        .await
        .map_err(ReceiveError::Ingest)?;
    Ok(S::response(outcome))
}

/// Authenticates an export from its `authorization` header (HTTP) or metadata (gRPC) and
/// takes an ingest slot bound to the caller's services.
async fn admit_caller(
    auth: &Auth,
    ingest: &IngestHandle,
    signal: vigil_core::Signal,
    credentials: Credentials<'_>,
) -> Result<Admission, ReceiveError> {
    let principal = auth
        .authorize(credentials, Scope::Ingest)
        .await
        .map_err(ReceiveError::Auth)?;
    ingest
        .admit(signal, &principal.id, auth.binding(&principal))
        .map_err(ReceiveError::Ingest)
}

/// Records the decompressed size of an accepted body.
fn record_received_bytes(metrics: &Metrics, signal: &str, transport: Transport, body: &Bytes) {
    metrics
        .received_bytes
        .with_label_values(&[signal, transport.as_str()])
        .inc_by(u64::try_from(body.len()).unwrap_or(u64::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_success_leaves_partial_success_unset() {
        assert_eq!(partial_success(ExportOutcome::default()), None);
        let empty_message = ExportOutcome {
            rejected: 0,
            error_message: Some(String::new()),
        };
        assert_eq!(partial_success(empty_message), None);
    }

    #[test]
    fn rejected_records_are_reported_with_a_message() {
        let outcome = ExportOutcome {
            rejected: 2,
            error_message: Some("bad trace id".into()),
        };
        assert_eq!(partial_success(outcome), Some((2, "bad trace id".into())));
        let outcome = ExportOutcome {
            rejected: 3,
            error_message: None,
        };
        assert_eq!(
            partial_success(outcome),
            Some((3, "3 records rejected".into()))
        );
    }

    #[test]
    fn warnings_on_full_success_are_passed_on() {
        let outcome = ExportOutcome {
            rejected: 0,
            error_message: Some("clock skew".into()),
        };
        assert_eq!(partial_success(outcome), Some((0, "clock skew".into())));
    }

    #[test]
    fn json_accepts_hex_ids_string_int64_and_unknown_fields() {
        let body = br#"{
          "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}]},
            "someFutureField": {"nested": [1, 2, 3]},
            "scopeSpans": [{
              "scope": {"name": "test", "unknownScopeField": true},
              "spans": [{
                "traceId": "5B8EFFF798038103D269B633813FC60C",
                "spanId": "eee19b7ec3c1b174",
                "name": "GET /cart",
                "kind": 2,
                "startTimeUnixNano": "1544712660000000000",
                "endTimeUnixNano": 1544712661000000000,
                "attributes": [
                  {"key": "http.status_code", "value": {"intValue": "42"}},
                  {"key": "retries", "value": {"intValue": 7}}
                ],
                "status": {"code": 2, "message": "boom"},
                "brandNewSpanField": "ignored"
              }]
            }]
          }]
        }"#;
        let request = parse_json::<Traces>(body).unwrap();
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(
            span.trace_id,
            [
                0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f,
                0xc6, 0x0c
            ]
        );
        assert_eq!(
            span.span_id,
            [0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74]
        );
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
        assert_eq!(span.kind, 2);
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        assert_eq!(
            span.attributes[0].value.as_ref().unwrap().value,
            Some(Value::IntValue(42))
        );
        assert_eq!(
            span.attributes[1].value.as_ref().unwrap().value,
            Some(Value::IntValue(7))
        );
        assert_eq!(span.status.as_ref().unwrap().code, 2);
    }

    #[test]
    fn json_logs_with_string_timestamps_parse() {
        let body = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{
            "timeUnixNano":"1544712660300000000",
            "observedTimeUnixNano":"1544712660300000001",
            "severityNumber":10,
            "severityText":"Information",
            "traceId":"5b8efff798038103d269b633813fc60c",
            "spanId":"eee19b7ec3c1b174",
            "body":{"stringValue":"login failed"},
            "attributes":[{"key":"user.id","value":{"intValue":"42"}}],
            "unknownLogField":{"a":1}
        }]}]}]}"#;
        let request = parse_json::<Logs>(body).unwrap();
        let record = &request.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(record.time_unix_nano, 1_544_712_660_300_000_000);
        assert_eq!(record.observed_time_unix_nano, 1_544_712_660_300_000_001);
        assert_eq!(record.severity_number, 10);
        assert_eq!(record.trace_id.len(), 16);
        let received = decode_json::<Logs>(body).unwrap();
        assert_eq!(received.decoded.batch.num_rows(), 1);
    }

    #[test]
    fn json_errors_do_not_echo_payload_values() {
        let secret = "4111-1111-1111-1111";
        let body = format!(
            r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"timeUnixNano":"{secret}"}}]}}]}}]}}"#
        );
        let err = decode_json::<Logs>(body.as_bytes()).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("ExportLogsServiceRequest"), "{message}");
        assert!(message.contains("line 1"), "{message}");
        assert!(!message.contains(secret), "{message}");

        let err = decode_json::<Logs>(br#"{"resourceLogs": [ 4111111111111111 "#).unwrap_err();
        assert!(!err.to_string().contains("4111111111111111"), "{err}");
    }

    #[test]
    fn empty_bodies_are_empty_requests() {
        let empty = |r: Received| r.decoded.batch.num_rows() == 0 && r.decoded.rejected == 0;
        assert!(empty(decode_json::<Logs>(b"").unwrap()));
        assert!(empty(decode_protobuf::<Logs>(b"").unwrap()));
        assert!(empty(decode_protobuf::<Traces>(b"").unwrap()));
        assert!(empty(decode_json::<Traces>(b"{}").unwrap()));
        let no_records =
            decode_json::<Traces>(br#"{"resourceSpans":[{"scopeSpans":[{"spans":[]}]}]}"#).unwrap();
        assert!(empty(no_records));
    }

    #[test]
    fn garbage_protobuf_is_undecodable() {
        let err = decode_protobuf::<Logs>(b"\xff\xff\xff\xff\xff\xff").unwrap_err();
        assert!(matches!(err, ReceiveError::Undecodable(_)), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("cannot decode protobuf ExportLogsServiceRequest"),
            "{err}"
        );
    }

    #[test]
    fn only_receiver_refusals_are_counted_here() {
        use std::time::Duration;
        let cases = [
            (
                ReceiveError::PayloadTooLarge { limit: 1 },
                Some("payload_too_large"),
            ),
            (
                ReceiveError::UnsupportedMediaType("text/plain".into()),
                Some("unsupported_media_type"),
            ),
            (
                ReceiveError::UnsupportedEncoding("br".into()),
                Some("unsupported_media_type"),
            ),
            (ReceiveError::Undecodable("x".into()), Some("undecodable")),
            // The pipeline counts its own refusals; counting them here too would double them.
            (ReceiveError::Ingest(IngestError::invalid("x")), None),
            (
                ReceiveError::Ingest(IngestError::overloaded("x", Duration::from_secs(1))),
                None,
            ),
            (
                ReceiveError::Ingest(IngestError::unavailable("x", Duration::from_secs(1))),
                None,
            ),
            (ReceiveError::Ingest(IngestError::internal()), None),
            (ReceiveError::MetricsRefused, None),
        ];
        for (err, reason) in cases {
            assert_eq!(
                err.reject_reason().map(RejectReason::as_str),
                reason,
                "{err:?}"
            );
        }
    }
}

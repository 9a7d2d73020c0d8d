//! OTLP/HTTP receiver (`POST /v1/logs`, `/v1/traces`): protobuf or JSON bodies, gzip/zstd
//! encodings, size limits, and responses in the request's content type as the OTLP spec requires.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::header::{
    ACCEPT_ENCODING, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prost::Message;
use serde::Serialize;
use tonic::Code;

use super::decompress::{Encoding, decompress};
use super::{
    INLINE_DECODE_MAX_BYTES, Logs, METRICS_LABEL, ReceiveError, Signal, Traces, admit_caller,
    decode_json, decode_protobuf, export, record_received_bytes, record_rejection, run_cpu_bound,
};
use crate::auth::{Auth, Credentials};
use crate::config::IngestConfig;
use crate::error::{ErrorKind, IngestError};
use crate::metrics::Metrics;
use crate::pipeline::{IngestHandle, Transport};
use crate::tls::TlsConnectInfo;

/// `Accept-Post` (W3C LDP, IANA-registered): the media types a 415 answer says are accepted.
const ACCEPT_POST: HeaderName = HeaderName::from_static("accept-post");

/// The OTLP/HTTP routes. Unknown paths get 404, other methods on the OTLP paths 405.
pub fn http_router(
    ingest: IngestHandle,
    config: &IngestConfig,
    metrics: Metrics,
    auth: Auth,
) -> Router {
    let state = Arc::new(HttpState {
        ingest,
        metrics,
        auth,
        max_body_bytes: config.max_body_bytes,
    });
    Router::new()
        .route("/v1/logs", post(export_handler::<Logs>))
        .route("/v1/traces", post(export_handler::<Traces>))
        .route("/v1/metrics", post(metrics_handler))
        .fallback(not_found_handler)
        .with_state(state)
}

struct HttpState {
    ingest: IngestHandle,
    metrics: Metrics,
    auth: Auth,
    /// Limit for the body as received and again after decompression.
    max_body_bytes: usize,
}

/// How a body is serialized, from `Content-Type`. The response uses the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

impl Format {
    const PROTOBUF: &'static str = "application/x-protobuf";
    const JSON: &'static str = "application/json";

    /// `application/x-protobuf` or `application/json`, case-insensitive, parameters such as
    /// `charset=utf-8` ignored.
    fn from_headers(headers: &HeaderMap) -> Result<Self, ReceiveError> {
        let Some(value) = headers.get(CONTENT_TYPE) else {
            return Err(ReceiveError::UnsupportedMediaType("(none)".into()));
        };
        let essence = value
            .to_str()
            .ok()
            .and_then(|v| v.split(';').next())
            .map(str::trim)
            .unwrap_or_default();
        if essence.eq_ignore_ascii_case(Self::PROTOBUF) {
            Ok(Format::Protobuf)
        } else if essence.eq_ignore_ascii_case(Self::JSON) {
            Ok(Format::Json)
        } else {
            let shown: String = String::from_utf8_lossy(value.as_bytes())
                .chars()
                .take(64)
                .collect();
            Err(ReceiveError::UnsupportedMediaType(format!("{shown:?}")))
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => Self::PROTOBUF,
            Format::Json => Self::JSON,
        }
    }
}

async fn export_handler<S: Signal>(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    connection: Option<Extension<ConnectInfo<TlsConnectInfo>>>,
    body: Body,
) -> Response {
    let format = match Format::from_headers(&headers) {
        Ok(format) => format,
        // The spec gives no format for this case; JSON is the readable one.
        Err(err) => return closing(state.refuse(S::LABEL, Format::Json, &err)),
    };
    let connection = connection.as_ref().map(|Extension(ConnectInfo(c))| c);
    let credentials = Credentials::new(&headers, connection);
    let mut body_read = false;
    match receive::<S>(&state, format, &headers, credentials, body, &mut body_read).await {
        Ok(response) => success_response(format, &response),
        Err(err) if body_read => state.refuse(S::LABEL, format, &err),
        Err(err) => closing(state.refuse(S::LABEL, format, &err)),
    }
}

/// Marks an answer given without reading the request body (all of it): the unread rest is
/// still on the connection, so it cannot carry another request and is closed after the answer.
/// `Connection: close` says so; without it a keep-alive client (every OTLP exporter) sends its
/// next request into the closed connection and gets a broken pipe or an empty reply instead of
/// the 429/503 it would have backed off and retried on, which is what overload looks like.
fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

async fn receive<S: Signal>(
    state: &HttpState,
    format: Format,
    headers: &HeaderMap,
    credentials: Credentials<'_>,
    body: Body,
    body_read: &mut bool,
) -> Result<S::Response, ReceiveError> {
    // Authenticate and admit before reading: an unknown caller or an overloaded Vigil is
    // refused without buffering the body.
    let admission = admit_caller(&state.auth, &state.ingest, S::SIGNAL, credentials).await?;
    let encoding = Encoding::from_headers(headers)?;
    let limit = state.max_body_bytes;
    if declared_length(headers).is_some_and(|len| len > limit) {
        return Err(ReceiveError::PayloadTooLarge { limit });
    }
    let raw = read_body(body, limit).await?;
    *body_read = true;
    let inline = encoding == Encoding::Identity && raw.len() <= INLINE_DECODE_MAX_BYTES;
    let metrics = state.metrics.clone();
    let budget = state.ingest.byte_budget(S::SIGNAL, &admission);
    let request = run_cpu_bound(inline, move || {
        let body = decompress(encoding, raw, limit)?;
        record_received_bytes(&metrics, S::LABEL, Transport::Http, &body);
        budget.charge(body.len()).map_err(ReceiveError::Ingest)?;
        match format {
            Format::Protobuf => decode_protobuf::<S>(&body),
            Format::Json => decode_json::<S>(&body),
        }
    })
    .await?;
    export::<S>(&state.ingest, admission, request, Transport::Http).await
}

/// `Content-Length`, when present and well-formed: lets an oversized upload be refused before
/// any of it is read.
fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Collects the (possibly compressed) body, failing once more than `limit` bytes arrived.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, ReceiveError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ReceiveError::PayloadTooLarge { limit })
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot read otlp/http request body");
            Err(ReceiveError::BodyRead)
        }
    }
}

/// `/v1/metrics`: Vigil stores logs and traces only. The body is not read.
async fn metrics_handler(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    let format = Format::from_headers(&headers).unwrap_or(Format::Json);
    closing(state.refuse(METRICS_LABEL, format, &ReceiveError::MetricsRefused))
}

/// Unknown paths: the body is not read either.
async fn not_found_handler(headers: HeaderMap) -> Response {
    let format = Format::from_headers(&headers).unwrap_or(Format::Json);
    closing(error_response(format, &ReceiveError::NotFound))
}

impl HttpState {
    fn refuse(&self, signal: &str, format: Format, err: &ReceiveError) -> Response {
        record_rejection(&self.metrics, signal, Transport::Http, err);
        error_response(format, err)
    }
}

/// 200 with the `Export*ServiceResponse` in the request's format. A response without
/// `partial_success` is `{}` in JSON.
fn success_response<M>(format: Format, response: &M) -> Response
where
    M: Message + Serialize + Default + PartialEq,
{
    let body = match format {
        Format::Protobuf => response.encode_to_vec(),
        Format::Json if *response == M::default() => b"{}".to_vec(),
        Format::Json => match serde_json::to_vec(response) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode otlp/json response");
                return error_response(format, &ReceiveError::Ingest(IngestError::internal()));
            }
        },
    };
    (
        StatusCode::OK,
        [(CONTENT_TYPE, format.content_type())],
        body,
    )
        .into_response()
}

/// The one place where a refusal becomes an OTLP/HTTP answer: status code, `google.rpc.Status`
/// body in the request's format, and `Retry-After` for the retryable cases (429, 503).
///
/// `/v1/metrics` answers 404 (with code UNIMPLEMENTED): OTLP exporters retry 429/502/503/504
/// and the Python SDK every 5xx, so 501 would make some clients retry; no SDK retries a 404,
/// and it is what the OpenTelemetry Collector answers for a signal it has no pipeline for.
fn error_response(format: Format, err: &ReceiveError) -> Response {
    let (status, code, retry_after) = match err {
        ReceiveError::UnsupportedMediaType(_) | ReceiveError::UnsupportedEncoding(_) => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::InvalidArgument,
            None,
        ),
        ReceiveError::PayloadTooLarge { .. } => {
            (StatusCode::PAYLOAD_TOO_LARGE, Code::ResourceExhausted, None)
        }
        ReceiveError::Undecodable(_) | ReceiveError::BodyRead => {
            (StatusCode::BAD_REQUEST, Code::InvalidArgument, None)
        }
        ReceiveError::MetricsRefused => (StatusCode::NOT_FOUND, Code::Unimplemented, None),
        ReceiveError::Auth(e) if e.is_forbidden() => {
            (StatusCode::FORBIDDEN, Code::PermissionDenied, None)
        }
        ReceiveError::Auth(_) => (StatusCode::UNAUTHORIZED, Code::Unauthenticated, None),
        ReceiveError::NotFound => (StatusCode::NOT_FOUND, Code::NotFound, None),
        ReceiveError::Ingest(e) => match e.kind {
            ErrorKind::InvalidInput => (StatusCode::BAD_REQUEST, Code::InvalidArgument, None),
            ErrorKind::Overloaded { retry_after } | ErrorKind::RateLimited { retry_after } => (
                StatusCode::TOO_MANY_REQUESTS,
                Code::ResourceExhausted,
                Some(retry_after),
            ),
            ErrorKind::Unavailable { retry_after } => (
                StatusCode::SERVICE_UNAVAILABLE,
                Code::Unavailable,
                Some(retry_after),
            ),
            ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, None),
        },
    };
    let message = match err {
        // Internal details are logged where they happen, never returned.
        ReceiveError::Ingest(IngestError {
            kind: ErrorKind::Internal,
            ..
        }) => "internal error".to_owned(),
        other => other.to_string(),
    };
    let body = status_body(format, code, &message);
    let mut response = (status, [(CONTENT_TYPE, format.content_type())], body).into_response();
    let headers = response.headers_mut();
    if let Some(delay) = retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(delay)));
    }
    match err {
        ReceiveError::UnsupportedMediaType(_) => {
            headers.insert(
                ACCEPT_POST,
                HeaderValue::from_static("application/x-protobuf, application/json"),
            );
        }
        ReceiveError::UnsupportedEncoding(_) => {
            headers.insert(
                ACCEPT_ENCODING,
                HeaderValue::from_static(Encoding::ACCEPTED),
            );
        }
        ReceiveError::Auth(e) if !e.is_forbidden() => {
            headers.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"vigil\""),
            );
        }
        _ => {}
    }
    response
}

/// `Retry-After` takes whole seconds; round up so clients never come back early.
fn retry_after_secs(delay: Duration) -> u64 {
    let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    secs.max(1)
}

/// `google.rpc.Status` as OTLP/JSON renders it.
#[derive(Serialize)]
struct JsonStatus<'a> {
    code: i32,
    message: &'a str,
    details: [(); 0],
}

/// A `google.rpc.Status { code, message, details: [] }` in `format`.
fn status_body(format: Format, code: Code, message: &str) -> Vec<u8> {
    match format {
        Format::Protobuf => tonic_types::pb::Status {
            code: code as i32,
            message: message.to_owned(),
            details: Vec::new(),
        }
        .encode_to_vec(),
        Format::Json => serde_json::to_vec(&JsonStatus {
            code: code as i32,
            message,
            details: [],
        })
        .unwrap_or_else(|_| br#"{"code":13,"message":"internal error","details":[]}"#.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_content_type(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
        h
    }

    async fn body_bytes(response: Response) -> Vec<u8> {
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    #[test]
    fn content_type_negotiation() {
        let ok = [
            ("application/x-protobuf", Format::Protobuf),
            ("Application/X-Protobuf", Format::Protobuf),
            (
                "application/x-protobuf; proto=opentelemetry",
                Format::Protobuf,
            ),
            ("application/json", Format::Json),
            ("application/json; charset=utf-8", Format::Json),
            ("  application/JSON ;charset=UTF-8", Format::Json),
        ];
        for (value, format) in ok {
            assert_eq!(
                Format::from_headers(&with_content_type(value)).unwrap(),
                format,
                "{value}"
            );
        }
        for bad in [
            "text/plain",
            "application/protobuf",
            "application/jsonx",
            "application/grpc",
            "",
        ] {
            let err = Format::from_headers(&with_content_type(bad)).unwrap_err();
            assert!(
                matches!(err, ReceiveError::UnsupportedMediaType(_)),
                "{bad}: {err:?}"
            );
        }
        let err = Format::from_headers(&HeaderMap::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported content type (none); use application/x-protobuf or application/json"
        );
    }

    #[tokio::test]
    async fn errors_are_google_rpc_status_in_protobuf() {
        let err =
            ReceiveError::Undecodable("cannot decode protobuf ExportLogsServiceRequest: x".into());
        let response = error_response(Format::Protobuf, &err);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/x-protobuf");
        let status =
            tonic_types::pb::Status::decode(body_bytes(response).await.as_slice()).unwrap();
        assert_eq!(status.code, 3);
        assert_eq!(
            status.message,
            "cannot decode protobuf ExportLogsServiceRequest: x"
        );
        assert!(status.details.is_empty());
    }

    #[tokio::test]
    async fn errors_are_google_rpc_status_in_json() {
        let response = error_response(Format::Json, &ReceiveError::PayloadTooLarge { limit: 10 });
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let json: serde_json::Value = serde_json::from_slice(&body_bytes(response).await).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"code": 8, "message": "request body exceeds the limit of 10 bytes", "details": []})
        );
    }

    #[tokio::test]
    async fn overload_and_unavailability_carry_retry_after() {
        let overloaded =
            IngestError::overloaded("ingest queue is full", Duration::from_millis(1500));
        let response = error_response(Format::Json, &ReceiveError::Ingest(overloaded));
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[RETRY_AFTER], "2");

        let unavailable = IngestError::unavailable("shutting down", Duration::from_secs(5));
        let response = error_response(Format::Protobuf, &ReceiveError::Ingest(unavailable));
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "5");
        let status =
            tonic_types::pb::Status::decode(body_bytes(response).await.as_slice()).unwrap();
        assert_eq!(
            (status.code, status.message.as_str()),
            (14, "shutting down")
        );

        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[tokio::test]
    async fn internal_errors_hide_details() {
        let err = ReceiveError::Ingest(IngestError {
            kind: ErrorKind::Internal,
            message: "wal segment 17 fsync failed: EIO".into(),
        });
        let response = error_response(Format::Json, &err);
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.headers().get(RETRY_AFTER).is_none());
        let json: serde_json::Value = serde_json::from_slice(&body_bytes(response).await).unwrap();
        assert_eq!(json["message"], "internal error");
        assert_eq!(json["code"], 13);
    }

    #[tokio::test]
    async fn unsupported_media_answers_say_what_is_accepted() {
        let response = error_response(
            Format::Json,
            &ReceiveError::UnsupportedMediaType("\"text/plain\"".into()),
        );
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(
            response.headers()[ACCEPT_POST],
            "application/x-protobuf, application/json"
        );

        let response = error_response(
            Format::Protobuf,
            &ReceiveError::UnsupportedEncoding("\"br\"".into()),
        );
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(response.headers()[ACCEPT_ENCODING], "gzip, zstd, identity");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/x-protobuf");
        let status =
            tonic_types::pb::Status::decode(body_bytes(response).await.as_slice()).unwrap();
        assert_eq!(
            status.message,
            "unsupported content encoding \"br\"; use gzip, zstd or identity"
        );
    }

    #[tokio::test]
    async fn metrics_refusal_is_a_non_retryable_unimplemented() {
        let response = error_response(Format::Json, &ReceiveError::MetricsRefused);
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let json: serde_json::Value = serde_json::from_slice(&body_bytes(response).await).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "code": 12,
                "message": "vigil does not accept metrics; send logs and traces",
                "details": []
            })
        );
    }

    #[tokio::test]
    async fn success_bodies_follow_the_request_format() {
        use opentelemetry_proto::tonic::collector::trace::v1::{
            ExportTracePartialSuccess, ExportTraceServiceResponse,
        };
        let full = ExportTraceServiceResponse::default();
        let response = success_response(Format::Json, &full);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(body_bytes(response).await, b"{}");

        let partial = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 1,
                error_message: "span 0: trace_id must be 16 bytes".into(),
            }),
        };
        let json: serde_json::Value =
            serde_json::from_slice(&body_bytes(success_response(Format::Json, &partial)).await)
                .unwrap();
        assert_eq!(json["partialSuccess"]["rejectedSpans"], 1);
        assert_eq!(
            json["partialSuccess"]["errorMessage"],
            "span 0: trace_id must be 16 bytes"
        );

        let response = success_response(Format::Protobuf, &partial);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/x-protobuf");
        let decoded =
            ExportTraceServiceResponse::decode(body_bytes(response).await.as_slice()).unwrap();
        assert_eq!(decoded, partial);
    }
}

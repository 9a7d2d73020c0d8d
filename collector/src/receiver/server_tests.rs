//! Receiver tests against real servers on ephemeral ports: real storage behind the pipeline,
//! `reqwest` for OTLP/HTTP and tonic's generated OTLP clients for OTLP/gRPC.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tonic::Code;
use tonic::codec::CompressionEncoding;
use tonic_types::StatusExt;
use vigil_core::{Redactor, Signal as Table};

use super::decompress::tests::{gzip, gzip_bomb};
use super::*;
use crate::config::{IngestConfig, RetentionConfig, StorageConfig};
use crate::storage::Storage;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// A running receiver pair over real storage in a temporary directory.
struct Harness {
    http: String,
    grpc: String,
    metrics: Metrics,
    storage: Storage,
    client: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Self {
        Self::with_config(IngestConfig {
            max_body_bytes: 1024 * 1024,
            ..IngestConfig::default()
        })
        .await
    }

    async fn with_config(ingest_config: IngestConfig) -> Self {
        Self::with_storage(ingest_config, StorageConfig::default()).await
    }

    /// `storage_config` with its data directory replaced by a temporary one.
    async fn with_storage(ingest_config: IngestConfig, storage_config: StorageConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new().unwrap();
        let storage_config = StorageConfig {
            data_dir: dir.path().to_owned(),
            ..storage_config
        };
        let m = metrics.clone();
        let storage = tokio::task::spawn_blocking(move || {
            Storage::open(&storage_config, &RetentionConfig::default(), 16, None, m)
        })
        .await
        .unwrap()
        .unwrap();
        let ingest = IngestHandle::new(
            storage.appender(),
            crate::detection::DetectorHandle::disabled(metrics.clone()),
            Redactor::new(
                &vigil_core::redact::RedactionConfig::default(),
                vigil_core::HashKey::new(&[7; 32]).unwrap(),
            )
            .unwrap(),
            metrics.clone(),
            &ingest_config,
        );

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr: SocketAddr = listener.local_addr().unwrap();
        let auth = crate::auth::Auth::new(&Default::default(), metrics.clone()).unwrap();
        let app = http_router(
            ingest.clone(),
            &ingest_config,
            metrics.clone(),
            auth.clone(),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_addr: SocketAddr = listener.local_addr().unwrap();
        let routes = grpc_routes(ingest, &ingest_config, metrics.clone(), auth);
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_routes(routes)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
        });

        Self {
            http: format!("http://{http_addr}"),
            grpc: format!("http://{grpc_addr}"),
            metrics,
            storage,
            client: reqwest::Client::new(),
            dir,
        }
    }

    fn rows(&self, table: Table) -> u64 {
        self.storage.catalog().snapshot(table).rows()
    }

    fn rejected(&self, signal: &str, reason: &str) -> u64 {
        self.metrics
            .rejected_requests
            .with_label_values(&[signal, reason])
            .get()
    }

    async fn post(
        &self,
        path: &str,
        content_type: Option<&str>,
        encoding: Option<&str>,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut request = self.client.post(format!("{}{path}", self.http)).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        if let Some(enc) = encoding {
            request = request.header("content-encoding", enc);
        }
        request.send().await.unwrap()
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("checkout".into())),
            }),
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn logs(n: usize) -> ExportLogsServiceRequest {
    let log_records = (0..n)
        .map(|i| LogRecord {
            time_unix_nano: now_ns(),
            severity_number: 9,
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(format!("user login {i}"))),
            }),
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs {
                log_records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn span(trace_id: Vec<u8>) -> Span {
    let start = now_ns();
    Span {
        trace_id,
        span_id: vec![7; 8],
        name: "GET /cart".into(),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_000_000,
        ..Default::default()
    }
}

fn traces(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A `google.rpc.Status` answer body in protobuf.
async fn rpc_status(response: reqwest::Response) -> tonic_types::pb::Status {
    tonic_types::pb::Status::decode(response.bytes().await.unwrap()).unwrap()
}

fn content_type(response: &reqwest::Response) -> &str {
    response
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
}

// ---------------------------------------------------------------- OTLP/HTTP

#[tokio::test]
async fn http_protobuf_logs_are_stored_and_acknowledged_in_protobuf() {
    let h = Harness::start().await;
    let body = logs(3).encode_to_vec();
    let len = body.len() as u64;
    let response = h.post("/v1/logs", Some(PROTOBUF), None, body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(content_type(&response), PROTOBUF);
    let ack = ExportLogsServiceResponse::decode(response.bytes().await.unwrap()).unwrap();
    assert_eq!(ack.partial_success, None);
    assert_eq!(h.rows(Table::Logs), 3);
    assert_eq!(
        h.metrics
            .received_bytes
            .with_label_values(&["logs", "http"])
            .get(),
        len
    );
}

#[tokio::test]
async fn http_json_with_hex_ids_string_ints_and_unknown_fields_is_stored() {
    let h = Harness::start().await;
    let body = format!(
        r#"{{"resourceSpans":[{{
            "resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"checkout"}}}}]}},
            "scopeSpans":[{{"scope":{{"name":"manual"}},"spans":[{{
                "traceId":"5b8efff798038103d269b633813fc60c",
                "spanId":"eee19b7ec3c1b174",
                "name":"GET /cart","kind":2,
                "startTimeUnixNano":"{start}","endTimeUnixNano":"{end}",
                "attributes":[{{"key":"http.status_code","value":{{"intValue":"200"}}}}],
                "aFieldFromTheFuture":{{"x":[1,2]}}
            }}]}}],
            "anotherUnknownField":true
        }}]}}"#,
        start = now_ns(),
        end = now_ns() + 5
    );
    let response = h
        .post(
            "/v1/traces",
            Some("application/json; charset=utf-8"),
            None,
            body.into_bytes(),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(content_type(&response), JSON);
    assert_eq!(response.text().await.unwrap(), "{}");
    assert_eq!(h.rows(Table::Spans), 1);
}

#[tokio::test]
async fn http_empty_requests_succeed() {
    let h = Harness::start().await;
    for (path, ct) in [
        ("/v1/logs", PROTOBUF),
        ("/v1/logs", JSON),
        ("/v1/traces", PROTOBUF),
        ("/v1/traces", JSON),
    ] {
        let response = h.post(path, Some(ct), None, Vec::new()).await;
        assert_eq!(response.status(), 200, "{path} {ct}");
        assert_eq!(content_type(&response), ct);
    }
    let response = h
        .post(
            "/v1/logs",
            Some(JSON),
            None,
            br#"{"resourceLogs":[]}"#.to_vec(),
        )
        .await;
    assert_eq!(response.status(), 200);
    let response = h
        .post("/v1/logs", Some(PROTOBUF), Some("gzip"), gzip(&[]))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(h.rows(Table::Logs), 0);
}

#[tokio::test]
async fn http_gzip_and_zstd_bodies_are_accepted() {
    let h = Harness::start().await;
    let body = logs(2).encode_to_vec();
    let response = h
        .post("/v1/logs", Some(PROTOBUF), Some("gzip"), gzip(&body))
        .await;
    assert_eq!(response.status(), 200);
    let zstd_body = zstd::encode_all(body.as_slice(), 3).unwrap();
    let response = h
        .post("/v1/logs", Some(PROTOBUF), Some("zstd"), zstd_body)
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(h.rows(Table::Logs), 4);
    // Counted after decompression.
    assert_eq!(
        h.metrics
            .received_bytes
            .with_label_values(&["logs", "http"])
            .get(),
        2 * body.len() as u64
    );
}

#[tokio::test]
async fn http_garbage_is_400_invalid_argument_without_echoing_it() {
    let h = Harness::start().await;
    let response = h
        .post(
            "/v1/logs",
            Some(PROTOBUF),
            None,
            b"\x0a\xff\xff\xff\xffsecret-token".to_vec(),
        )
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(content_type(&response), PROTOBUF);
    let status = rpc_status(response).await;
    assert_eq!(status.code, 3);
    assert!(
        status
            .message
            .starts_with("cannot decode protobuf ExportLogsServiceRequest"),
        "{}",
        status.message
    );
    assert!(!status.message.contains("secret"), "{}", status.message);

    let response = h
        .post(
            "/v1/traces",
            Some(JSON),
            None,
            br#"{"resourceSpans": [{"secret-token""#.to_vec(),
        )
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(content_type(&response), JSON);
    let json: serde_json::Value = response.json().await.unwrap();
    assert_eq!(json["code"], 3);
    assert!(
        !json["message"].as_str().unwrap().contains("secret"),
        "{json}"
    );

    let response = h
        .post(
            "/v1/logs",
            Some(PROTOBUF),
            Some("gzip"),
            b"not gzip at all".to_vec(),
        )
        .await;
    assert_eq!(response.status(), 400);

    assert_eq!(h.rejected("logs", "undecodable"), 2);
    assert_eq!(h.rejected("spans", "undecodable"), 1);
    assert_eq!(h.rows(Table::Logs), 0);
}

#[tokio::test]
async fn http_unsupported_media_is_415() {
    let h = Harness::start().await;
    let body = logs(1).encode_to_vec();
    for ct in [Some("text/plain"), Some("application/grpc"), None] {
        let response = h.post("/v1/logs", ct, None, body.clone()).await;
        assert_eq!(response.status(), 415, "{ct:?}");
        // The request's type is unusable, so the answer is JSON.
        assert_eq!(content_type(&response), JSON);
        assert!(response.headers().contains_key("accept-post"));
        let json: serde_json::Value = response.json().await.unwrap();
        assert!(
            json["message"]
                .as_str()
                .unwrap()
                .contains("application/x-protobuf"),
            "{json}"
        );
    }

    let response = h.post("/v1/logs", Some(PROTOBUF), Some("br"), body).await;
    assert_eq!(response.status(), 415);
    assert_eq!(content_type(&response), PROTOBUF);
    assert_eq!(
        response.headers()["accept-encoding"],
        "gzip, zstd, identity"
    );
    let status = rpc_status(response).await;
    assert_eq!(
        status.message,
        "unsupported content encoding \"br\"; use gzip, zstd or identity"
    );
    assert_eq!(h.rejected("logs", "unsupported_media_type"), 4);
}

#[tokio::test]
async fn http_bodies_over_the_limit_are_413() {
    let h = Harness::with_config(IngestConfig {
        max_body_bytes: 64 * 1024,
        ..IngestConfig::default()
    })
    .await;
    let body = logs(5000).encode_to_vec();
    assert!(body.len() > 64 * 1024);
    let response = h.post("/v1/logs", Some(PROTOBUF), None, body.clone()).await;
    assert_eq!(response.status(), 413);
    assert_eq!(
        rpc_status(response).await.message,
        "request body exceeds the limit of 65536 bytes"
    );

    // Small once compressed, too large once decompressed.
    let compressed = gzip(&body);
    assert!(compressed.len() < 64 * 1024);
    let response = h
        .post("/v1/logs", Some(PROTOBUF), Some("gzip"), compressed)
        .await;
    assert_eq!(response.status(), 413);
    assert_eq!(h.rejected("logs", "payload_too_large"), 2);
    assert_eq!(h.rows(Table::Logs), 0);
}

/// Regression guard: a gzip bomb (200 MB of zeros in a few hundred KB) must be refused at the
/// limit instead of being inflated.
#[tokio::test]
async fn http_gzip_bomb_is_413_and_fast() {
    let h = Harness::start().await; // 1 MiB limit
    let bomb = tokio::task::spawn_blocking(|| gzip_bomb(200 * 1024 * 1024))
        .await
        .unwrap();
    assert!(bomb.len() < 1024 * 1024, "bomb is {} bytes", bomb.len());
    let started = Instant::now();
    let response = h
        .post("/v1/traces", Some(PROTOBUF), Some("gzip"), bomb)
        .await;
    assert_eq!(response.status(), 413);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(h.rejected("spans", "payload_too_large"), 1);
}

#[tokio::test]
async fn http_partial_success_reports_rejected_spans() {
    let h = Harness::start().await;
    let request = traces(vec![span(vec![1; 16]), span(vec![1, 2, 3])]);

    let response = h
        .post("/v1/traces", Some(PROTOBUF), None, request.encode_to_vec())
        .await;
    assert_eq!(response.status(), 200);
    let ack = ExportTraceServiceResponse::decode(response.bytes().await.unwrap()).unwrap();
    let partial = ack.partial_success.expect("partial_success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial.error_message.contains("trace_id"),
        "{}",
        partial.error_message
    );

    let json = serde_json::to_vec(&request).unwrap();
    let response = h.post("/v1/traces", Some(JSON), None, json).await;
    assert_eq!(response.status(), 200);
    assert_eq!(content_type(&response), JSON);
    let ack: serde_json::Value = response.json().await.unwrap();
    assert_eq!(ack["partialSuccess"]["rejectedSpans"], 1, "{ack}");
    assert_eq!(h.rows(Table::Spans), 2);
}

#[tokio::test]
async fn http_overload_is_429_with_retry_after() {
    let config = IngestConfig {
        max_body_bytes: 1024 * 1024,
        max_in_flight_requests: 0,
        retry_after: Duration::from_secs(3),
        ..IngestConfig::default()
    };
    let h = Harness::with_config(config).await;
    let response = h
        .post(
            "/v1/logs",
            Some(JSON),
            None,
            serde_json::to_vec(&logs(1)).unwrap(),
        )
        .await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3");
    let json: serde_json::Value = response.json().await.unwrap();
    assert_eq!(json["code"], 8);
    // Counted once, by the pipeline.
    assert_eq!(h.rejected("logs", "overloaded"), 1);
}

/// Storage that would refuse the records refuses the request on arrival, before reading or
/// decoding it: the requests that keep coming while Vigil is behind must not take the CPU it
/// needs to catch up. Garbage sent then gets the storage answer, not the 400 decoding it would
/// give.
#[tokio::test]
async fn requests_storage_would_refuse_are_refused_before_decoding() {
    let h = Harness::with_storage(
        IngestConfig {
            max_body_bytes: 1024 * 1024,
            ..IngestConfig::default()
        },
        StorageConfig {
            // Every append closes its segment, and one segment waiting for compaction stops
            // appends.
            segment_max_bytes: 1,
            max_pending_segments: 1,
            ..StorageConfig::default()
        },
    )
    .await;
    // Compaction fails (in life, a full disk) and holds the segment back.
    let parquet_root = h.dir.path().join("parquet");
    std::fs::remove_dir_all(&parquet_root).unwrap();
    std::fs::write(&parquet_root, b"not a directory").unwrap();
    let body = logs(3).encode_to_vec();
    let response = h.post("/v1/logs", Some(PROTOBUF), None, body).await;
    assert_eq!(response.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.storage.appender().accepting().is_ok() {
        assert!(Instant::now() < deadline, "compaction never held back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let garbage = b"\xff\xff\xff not protobuf".to_vec();
    let response = h.post("/v1/logs", Some(PROTOBUF), None, garbage).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(response.headers()["connection"], "close");
    let status = rpc_status(response).await;
    assert!(status.message.contains("compaction"), "{status:?}");
    assert_eq!(h.rejected("logs", "unavailable"), 1);
    assert_eq!(h.rejected("logs", "undecodable"), 0);

    let mut client = LogsServiceClient::connect(h.grpc.clone()).await.unwrap();
    let err = client.export(logs(1)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(h.rejected("logs", "unavailable"), 2);
    assert_eq!(h.rows(Table::Logs), 3);
}

/// One HTTP/1.1 exchange on a raw connection: the answer's head (lowercased), and whether the
/// server then closed the connection.
async fn raw_exchange(addr: &str, request: &[u8]) -> (String, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&got).to_lowercase();
    let head = text.split("\r\n\r\n").next().unwrap_or_default().to_owned();
    (head, closed)
}

fn post_logs_request(body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST /v1/logs HTTP/1.1\r\nhost: vigil\r\ncontent-type: {JSON}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// Refused before its body is read, a request leaves the body on the connection, which the
/// server then closes: the answer must say `Connection: close`, or a keep-alive client sends
/// its next export into a closed connection and sees a broken pipe instead of the 429.
/// Answers given after reading the body keep the connection.
#[tokio::test]
async fn http_refusal_before_reading_the_body_says_connection_close() {
    let h = Harness::with_config(IngestConfig {
        max_body_bytes: 4 * 1024 * 1024,
        max_in_flight_requests: 0,
        ..IngestConfig::default()
    })
    .await;
    let addr = h.http.trim_start_matches("http://").to_owned();
    let body = serde_json::to_vec(&logs(2000)).unwrap();
    assert!(body.len() > 64 * 1024, "{}", body.len());
    let (head, closed) = raw_exchange(&addr, &post_logs_request(&body)).await;
    assert!(head.starts_with("http/1.1 429"), "{head}");
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert!(head.contains("\r\nretry-after: 1"), "{head}");
    assert!(closed, "the connection stays open after the answer");

    let metrics = b"POST /v1/metrics HTTP/1.1\r\nhost: vigil\r\ncontent-length: 2\r\n\r\n{}";
    let (head, _) = raw_exchange(&addr, metrics).await;
    assert!(head.starts_with("http/1.1 404"), "{head}");
    assert!(head.contains("\r\nconnection: close"), "{head}");

    // Read, then refused (undecodable): the connection can carry the next request.
    let h = Harness::start().await;
    let addr = h.http.trim_start_matches("http://").to_owned();
    let (head, closed) = raw_exchange(&addr, &post_logs_request(b"{not json")).await;
    assert!(head.starts_with("http/1.1 400"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    assert!(!closed, "a connection whose request was read whole is kept");
}

#[tokio::test]
async fn http_metrics_and_unknown_paths_are_404() {
    let h = Harness::start().await;
    let body = ExportMetricsServiceRequest::default().encode_to_vec();
    let response = h.post("/v1/metrics", Some(PROTOBUF), None, body).await;
    assert_eq!(response.status(), 404);
    assert_eq!(content_type(&response), PROTOBUF);
    let status = rpc_status(response).await;
    assert_eq!(
        (status.code, status.message.as_str()),
        (12, "vigil does not accept metrics; send logs and traces")
    );

    let response = h
        .post("/v1/metrics", Some(JSON), None, b"{}".to_vec())
        .await;
    assert_eq!(response.status(), 404);
    let json: serde_json::Value = response.json().await.unwrap();
    assert_eq!(json["code"], 12);

    let response = h
        .post("/v1/profiles", Some(PROTOBUF), None, Vec::new())
        .await;
    assert_eq!(response.status(), 404);
    assert_eq!(rpc_status(response).await.code, 5);

    let response = h
        .client
        .get(format!("{}/v1/logs", h.http))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
}

// ---------------------------------------------------------------- OTLP/gRPC

#[tokio::test]
async fn grpc_logs_and_traces_are_stored() {
    let h = Harness::start().await;
    let mut logs_client = LogsServiceClient::connect(h.grpc.clone()).await.unwrap();
    let ack = logs_client.export(logs(2)).await.unwrap().into_inner();
    assert_eq!(ack.partial_success, None);

    let mut trace_client = TraceServiceClient::connect(h.grpc.clone()).await.unwrap();
    let ack = trace_client
        .export(traces(vec![span(vec![9; 16])]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.partial_success, None);

    assert_eq!(h.rows(Table::Logs), 2);
    assert_eq!(h.rows(Table::Spans), 1);
    let expected = logs(2).encoded_len() as u64;
    let got = h
        .metrics
        .received_bytes
        .with_label_values(&["logs", "grpc"])
        .get();
    // Timestamps differ in length by at most a byte per record between the two `logs(2)` calls.
    assert!(got.abs_diff(expected) <= 2, "{got} vs {expected}");

    let ack = logs_client
        .export(ExportLogsServiceRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.partial_success, None);
}

#[tokio::test]
async fn grpc_accepts_gzip_and_zstd_requests() {
    let h = Harness::start().await;
    for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let mut client = TraceServiceClient::connect(h.grpc.clone())
            .await
            .unwrap()
            .send_compressed(encoding);
        client
            .export(traces(vec![span(vec![4; 16])]))
            .await
            .unwrap();
    }
    assert_eq!(h.rows(Table::Spans), 2);
}

#[tokio::test]
async fn grpc_partial_success_reports_rejected_spans() {
    let h = Harness::start().await;
    let mut client = TraceServiceClient::connect(h.grpc.clone()).await.unwrap();
    let request = traces(vec![
        span(vec![1; 16]),
        span(vec![1, 2, 3]),
        span(vec![2; 16]),
    ]);
    let ack = client.export(request).await.unwrap().into_inner();
    let partial = ack.partial_success.expect("partial_success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(!partial.error_message.is_empty());
    assert_eq!(h.rows(Table::Spans), 2);
}

#[tokio::test]
async fn grpc_metrics_are_unimplemented() {
    let h = Harness::start().await;
    let mut client = MetricsServiceClient::connect(h.grpc.clone())
        .await
        .unwrap()
        .send_compressed(CompressionEncoding::Gzip);
    let status = client
        .export(ExportMetricsServiceRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert_eq!(
        status.message(),
        "vigil does not accept metrics; send logs and traces"
    );
}

#[tokio::test]
async fn grpc_oversized_requests_are_resource_exhausted_not_out_of_range() {
    let h = Harness::with_config(IngestConfig {
        max_body_bytes: 64 * 1024,
        ..IngestConfig::default()
    })
    .await;
    let big = logs(5000);
    assert!(big.encoded_len() > 64 * 1024);

    let mut client = LogsServiceClient::connect(h.grpc.clone()).await.unwrap();
    let status = client.export(big.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.message(),
        "request body exceeds the limit of 65536 bytes"
    );
    assert!(status.get_details_retry_info().is_none());

    // Compresses below the limit, decompresses above it.
    let mut client = client.send_compressed(CompressionEncoding::Gzip);
    let status = client.export(big).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    assert_eq!(h.rejected("logs", "payload_too_large"), 2);
    assert_eq!(h.rows(Table::Logs), 0);
}

/// A message whose field 1 (`resource_logs`) holds bytes that are not a `ResourceLogs`.
#[derive(Clone, PartialEq, prost::Message)]
struct Garbage {
    #[prost(bytes = "vec", tag = "1")]
    field: Vec<u8>,
}

#[tokio::test]
async fn grpc_undecodable_requests_are_invalid_argument() {
    let h = Harness::start().await;
    let channel = tonic::transport::Endpoint::from_shared(h.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    );
    let codec = tonic_prost::ProstCodec::<Garbage, ExportLogsServiceResponse>::default();
    let request = tonic::Request::new(Garbage {
        field: b"\xff\xff\xff\xff\xff\xffsecret".to_vec(),
    });
    let status = grpc.unary(request, path, codec).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("cannot decode protobuf ExportLogsServiceRequest"),
        "{status:?}"
    );
    assert!(!status.message().contains("secret"));
    assert_eq!(h.rejected("logs", "undecodable"), 1);
}

#[tokio::test]
async fn grpc_overload_is_unavailable_with_retry_info() {
    let config = IngestConfig {
        max_body_bytes: 1024 * 1024,
        max_in_flight_requests: 0,
        retry_after: Duration::from_secs(2),
        ..IngestConfig::default()
    };
    let h = Harness::with_config(config).await;
    let mut client = LogsServiceClient::connect(h.grpc.clone()).await.unwrap();
    let status = client.export(logs(1)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let retry = status.get_details_retry_info().expect("RetryInfo");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(2)));
}

//! End-to-end checks of the load generator against tiny in-process OTLP receivers (the generated
//! tonic servers and an axum HTTP handler) that count what they accept.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::CompressionEncoding;

use super::*;
use crate::corpus::{count_log_records, count_spans};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Accept everything.
    Accept,
    /// Throttle every 5th request and reject one record of every 7th; the first request (the
    /// warm-up) is always accepted in full.
    Mixed,
    /// Throttle everything.
    ThrottleAll,
}

enum Decision {
    Accept { rejected: u64 },
    Throttle,
}

/// Counts what a stub receiver saw and accepted.
#[derive(Clone)]
struct Stub {
    behaviour: Behaviour,
    requests: Arc<AtomicU64>,
    accepted_records: Arc<AtomicU64>,
    throttled: Arc<AtomicU64>,
    partial: Arc<AtomicU64>,
    compressed: Arc<AtomicU64>,
}

impl Stub {
    fn new(behaviour: Behaviour) -> Self {
        Self {
            behaviour,
            requests: Arc::default(),
            accepted_records: Arc::default(),
            throttled: Arc::default(),
            partial: Arc::default(),
            compressed: Arc::default(),
        }
    }

    fn decide(&self, records: usize, compressed: bool) -> Decision {
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        if compressed {
            self.compressed.fetch_add(1, Ordering::SeqCst);
        }
        let throttle = match self.behaviour {
            Behaviour::Accept => false,
            Behaviour::Mixed => n > 0 && n % 5 == 4,
            Behaviour::ThrottleAll => true,
        };
        if throttle {
            self.throttled.fetch_add(1, Ordering::SeqCst);
            return Decision::Throttle;
        }
        let rejected = u64::from(self.behaviour == Behaviour::Mixed && n > 0 && n % 7 == 3);
        self.partial.fetch_add(rejected, Ordering::SeqCst);
        self.accepted_records
            .fetch_add(records as u64 - rejected, Ordering::SeqCst);
        Decision::Accept { rejected }
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }
}

fn gzip_in_metadata(metadata: &tonic::metadata::MetadataMap) -> bool {
    metadata
        .get("grpc-encoding")
        .is_some_and(|v| v.as_encoded_bytes() == b"gzip")
}

#[tonic::async_trait]
impl LogsService for Stub {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let compressed = gzip_in_metadata(request.metadata());
        match self.decide(count_log_records(request.get_ref()), compressed) {
            Decision::Throttle => Err(tonic::Status::resource_exhausted("stub is full")),
            Decision::Accept { rejected } => Ok(tonic::Response::new(ExportLogsServiceResponse {
                partial_success: (rejected > 0).then(|| ExportLogsPartialSuccess {
                    rejected_log_records: rejected as i64,
                    error_message: "stub rejects one".into(),
                }),
            })),
        }
    }
}

#[tonic::async_trait]
impl TraceService for Stub {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let compressed = gzip_in_metadata(request.metadata());
        match self.decide(count_spans(request.get_ref()), compressed) {
            Decision::Throttle => Err(tonic::Status::unavailable("stub is busy")),
            Decision::Accept { rejected } => Ok(tonic::Response::new(ExportTraceServiceResponse {
                partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
                    rejected_spans: rejected as i64,
                    error_message: "stub rejects one".into(),
                }),
            })),
        }
    }
}

async fn grpc_stub(stub: Stub) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(
            LogsServiceServer::new(stub.clone()).accept_compressed(CompressionEncoding::Gzip),
        )
        .add_service(TraceServiceServer::new(stub).accept_compressed(CompressionEncoding::Gzip))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    addr
}

fn http_body(headers: &HeaderMap, body: &Bytes) -> (Vec<u8>, bool) {
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes() == b"gzip");
    if gzip {
        use std::io::Read as _;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .unwrap();
        (out, true)
    } else {
        (body.to_vec(), false)
    }
}

fn protobuf(message: &impl Message) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        message.encode_to_vec(),
    )
        .into_response()
}

async fn http_logs(State(stub): State<Stub>, headers: HeaderMap, body: Bytes) -> Response {
    assert_eq!(headers[header::CONTENT_TYPE], "application/x-protobuf");
    let (bytes, gzip) = http_body(&headers, &body);
    let request = ExportLogsServiceRequest::decode(bytes.as_slice()).unwrap();
    match stub.decide(count_log_records(&request), gzip) {
        Decision::Throttle => StatusCode::TOO_MANY_REQUESTS.into_response(),
        Decision::Accept { rejected } => protobuf(&ExportLogsServiceResponse {
            partial_success: (rejected > 0).then(|| ExportLogsPartialSuccess {
                rejected_log_records: rejected as i64,
                error_message: "stub rejects one".into(),
            }),
        }),
    }
}

async fn http_traces(State(stub): State<Stub>, headers: HeaderMap, body: Bytes) -> Response {
    let (bytes, gzip) = http_body(&headers, &body);
    let request = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
    match stub.decide(count_spans(&request), gzip) {
        Decision::Throttle => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Decision::Accept { rejected } => protobuf(&ExportTraceServiceResponse {
            partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: rejected as i64,
                error_message: "stub rejects one".into(),
            }),
        }),
    }
}

async fn http_stub(stub: Stub) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/v1/logs", axum::routing::post(http_logs))
        .route("/v1/traces", axum::routing::post(http_traces))
        .with_state(stub);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn stub_endpoint(transport: Transport, stub: Stub) -> String {
    let addr = match transport {
        Transport::Grpc => grpc_stub(stub).await,
        Transport::Http => http_stub(stub).await,
    };
    format!("http://{addr}")
}

fn small_options(signal: Signal, transport: Transport, endpoint: String) -> Options {
    Options {
        signal,
        transport,
        endpoint: Some(endpoint),
        concurrency: 4,
        stop: Stop::Requests(200),
        records_per_request: 16,
        services: 4,
        distinct_requests: 8,
        connections: 2,
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_sent_is_counted_by_the_receiver() {
    for transport in [Transport::Grpc, Transport::Http] {
        for signal in [Signal::Logs, Signal::Traces] {
            for gzip in [false, true] {
                let stub = Stub::new(Behaviour::Accept);
                let endpoint = stub_endpoint(transport, stub.clone()).await;
                let options = Options {
                    gzip,
                    ..small_options(signal, transport, endpoint)
                };
                let report = run(&options).await.unwrap();
                let case = format!("{signal} over {transport}, gzip {gzip}");
                assert_eq!(
                    report.requests,
                    RequestCounts {
                        total: 200,
                        ok: 200,
                        ..RequestCounts::default()
                    },
                    "{case}"
                );
                assert_eq!(report.records_sent, 200 * 16, "{case}");
                assert_eq!(report.records_acked, 200 * 16, "{case}");
                assert_eq!(report.warmup_records_acked, 16, "{case}");
                // Everything the receiver counted: the measured requests plus the warm-up.
                assert_eq!(Stub::get(&stub.requests), 201, "{case}");
                assert_eq!(
                    Stub::get(&stub.accepted_records),
                    report.records_acked + report.warmup_records_acked,
                    "{case}"
                );
                assert_eq!(
                    Stub::get(&stub.compressed),
                    if gzip { 201 } else { 0 },
                    "{case}"
                );
                let latency = report.ack_latency_ms.as_ref().unwrap();
                assert!(
                    latency.p50 > 0.0 && latency.p50 <= latency.p99 && latency.p99 <= latency.max
                );
                assert!(report.records_per_second > 0.0);
                assert!(report.any_acked());
                if transport == Transport::Grpc && signal == Signal::Logs && !gzip {
                    println!("{report}");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttles_and_partial_successes_are_told_apart() {
    for transport in [Transport::Grpc, Transport::Http] {
        for signal in [Signal::Logs, Signal::Traces] {
            let stub = Stub::new(Behaviour::Mixed);
            let endpoint = stub_endpoint(transport, stub.clone()).await;
            let report = run(&small_options(signal, transport, endpoint))
                .await
                .unwrap();
            let case = format!("{signal} over {transport}");
            // Receiver requests 1..=200 are the measured ones: every 5th (n % 5 == 4) is
            // throttled, and of the rest those with n % 7 == 3 lose one record.
            let throttled = (1..=200u64).filter(|n| n % 5 == 4).count() as u64;
            let partial = (1..=200u64).filter(|n| n % 5 != 4 && n % 7 == 3).count() as u64;
            assert_eq!(report.requests.total, 200, "{case}");
            assert_eq!(report.requests.throttled, throttled, "{case}");
            assert_eq!(report.requests.partial, partial, "{case}");
            assert_eq!(report.requests.ok, 200 - throttled - partial, "{case}");
            assert_eq!(report.requests.error, 0, "{case}: {:?}", report.first_error);
            assert_eq!(report.records_rejected, partial, "{case}");
            assert_eq!(
                report.records_acked,
                (200 - throttled) * 16 - partial,
                "{case}"
            );
            assert_eq!(
                Stub::get(&stub.accepted_records),
                report.records_acked + report.warmup_records_acked,
                "{case}"
            );
            if transport == Transport::Http && signal == Signal::Traces {
                println!("{}", report.to_json());
            }
        }
    }
}

#[tokio::test]
async fn a_server_that_accepts_nothing_yields_a_failed_report() {
    let stub = Stub::new(Behaviour::ThrottleAll);
    let endpoint = stub_endpoint(Transport::Http, stub.clone()).await;
    let report = run(&small_options(Signal::Logs, Transport::Http, endpoint))
        .await
        .unwrap();
    assert_eq!(report.requests.throttled, 200);
    assert!(!report.any_acked());
    assert!(report.ack_latency_ms.is_none());
}

#[tokio::test]
async fn no_server_listening_fails_fast_with_a_clear_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let grpc = run(&small_options(
        Signal::Logs,
        Transport::Grpc,
        endpoint.clone(),
    ))
    .await;
    let message = grpc.unwrap_err().to_string();
    assert!(
        message.contains("connect to") && message.contains("is the server running"),
        "{message}"
    );
    let http = run(&small_options(Signal::Traces, Transport::Http, endpoint)).await;
    let message = http.unwrap_err().to_string();
    assert!(
        message.contains("warm-up request") && message.contains("is the server running"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_run_stops_by_itself_and_accounts_the_server_process() {
    let stub = Stub::new(Behaviour::Accept);
    let endpoint = stub_endpoint(Transport::Grpc, stub.clone()).await;
    let options = Options {
        stop: Stop::After(Duration::from_millis(300)),
        // The stub runs inside this test process, so this process is "the server".
        server_pid: Some(std::process::id()),
        ..small_options(Signal::Traces, Transport::Grpc, endpoint)
    };
    let report = tokio::time::timeout(Duration::from_secs(20), run(&options))
        .await
        .unwrap()
        .unwrap();
    assert!(report.requests.total > 0);
    assert!(report.duration_seconds >= 0.3);
    assert_eq!(Stub::get(&stub.requests), report.requests.total + 1);
    let server = report.server.as_ref().unwrap();
    assert_eq!(server.pid, std::process::id());
    assert!(server.cpu_seconds.is_some());
    assert!(server.peak_rss_mib.unwrap() > 0.0);
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["signal"], "traces");
    assert_eq!(json["transport"], "grpc");
    assert_eq!(json["server"]["pid"], u64::from(std::process::id()));
}

#[tokio::test]
async fn bad_options_are_all_reported_at_once() {
    let options = Options {
        concurrency: 0,
        records_per_request: 0,
        stop: Stop::Requests(0),
        endpoint: Some("127.0.0.1:4317".into()),
        time_spread: Duration::ZERO,
        ..Options::default()
    };
    let message = run(&options).await.unwrap_err().to_string();
    for needle in [
        "concurrency",
        "records-per-request",
        "requests",
        "endpoint",
        "time spread",
    ] {
        assert!(message.contains(needle), "{message}");
    }
}

#[test]
fn durations_parse_with_units() {
    assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert!(parse_duration("soon").is_err());
    assert!(parse_duration("5 parsecs").is_err());
}

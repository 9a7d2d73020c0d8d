//! The real OpenTelemetry Rust SDK and OTLP exporters, over gRPC and HTTP/protobuf, and what
//! an analyst then sees in SQL.

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{
    Compression, LogExporter, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::harness::Vigil;

fn resource(service: &str) -> Resource {
    Resource::builder()
        .with_service_name(service.to_owned())
        .with_attributes([KeyValue::new("deployment.environment", "e2e")])
        .build()
}

/// Emits `n` logs through an SDK provider and flushes; runs on a blocking thread because the
/// SDK's processors block.
async fn emit_logs(provider: SdkLoggerProvider, n: usize) {
    tokio::task::spawn_blocking(move || {
        let logger = provider.logger("e2e-sdk");
        for i in 0..n {
            let mut rec = logger.create_log_record();
            rec.set_severity_number(if i % 10 == 0 {
                Severity::Error
            } else {
                Severity::Info
            });
            rec.set_severity_text(if i % 10 == 0 { "ERROR" } else { "INFO" });
            rec.set_body(AnyValue::from(format!("login attempt {i}")));
            rec.add_attribute(
                "http.response.status_code",
                if i % 4 == 0 { 401_i64 } else { 200 },
            );
            rec.add_attribute("user.id", format!("u-{}", i % 7));
            rec.add_attribute("retry", i % 2 == 0);
            logger.emit(rec);
        }
        provider
            .shutdown()
            .expect("log provider flushes on shutdown");
    })
    .await
    .unwrap();
}

async fn check_logs(vigil: &Vigil, service: &str, n: i64) {
    let sql = format!(
        "SELECT count(*), \
                sum(CASE WHEN attributes['http.response.status_code'] = '401' THEN 1 ELSE 0 END), \
                sum(CASE WHEN severity_text = 'ERROR' THEN 1 ELSE 0 END), \
                count(DISTINCT attributes['user.id']), \
                min(resource['deployment.environment']), \
                min(scope_name), \
                sum(CASE WHEN attributes['retry'] = 'true' THEN 1 ELSE 0 END) \
         FROM logs WHERE service = '{service}'"
    );
    let rows = vigil.rows(&sql).await;
    let r = &rows[0];
    assert_eq!(r[0].as_i64(), Some(n), "{rows:?}");
    assert_eq!(
        r[1].as_i64(),
        Some((0..n).filter(|i| i % 4 == 0).count() as i64)
    );
    assert_eq!(
        r[2].as_i64(),
        Some((0..n).filter(|i| i % 10 == 0).count() as i64)
    );
    assert_eq!(r[3].as_i64(), Some(7));
    assert_eq!(r[4].as_str(), Some("e2e"));
    assert_eq!(r[5].as_str(), Some("e2e-sdk"));
    assert_eq!(
        r[6].as_i64(),
        Some((0..n).filter(|i| i % 2 == 0).count() as i64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_sdk_logs_over_grpc_and_http_are_queryable() {
    let vigil = Vigil::start("");
    let grpc = LogExporter::builder()
        .with_tonic()
        .with_endpoint(vigil.grpc_endpoint())
        .with_compression(Compression::Gzip)
        .build()
        .unwrap();
    emit_logs(
        SdkLoggerProvider::builder()
            .with_resource(resource("auth-grpc"))
            .with_batch_exporter(grpc)
            .build(),
        300,
    )
    .await;

    let http = LogExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/logs", vigil.http_endpoint()))
        .with_compression(Compression::Zstd)
        .build()
        .unwrap();
    emit_logs(
        SdkLoggerProvider::builder()
            .with_resource(resource("auth-http"))
            .with_batch_exporter(http)
            .build(),
        200,
    )
    .await;

    check_logs(&vigil, "auth-grpc", 300).await;
    check_logs(&vigil, "auth-http", 200).await;
    assert_eq!(
        vigil
            .metric(
                "vigil_received_records_total",
                &[("signal", "logs"), ("transport", "grpc")]
            )
            .await,
        300.0
    );
    assert_eq!(
        vigil
            .metric(
                "vigil_received_records_total",
                &[("signal", "logs"), ("transport", "http")]
            )
            .await,
        200.0
    );
}

/// A SERVER span with a CLIENT child and an event, as an instrumented handler would produce.
fn make_trace(provider: &SdkTracerProvider) -> (String, String) {
    let tracer = provider.tracer("e2e-tracer");
    let mut server = tracer
        .span_builder("POST /login")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.response.status_code", 401),
            KeyValue::new("http.route", "/login"),
        ])
        .start(&tracer);
    server.add_event("auth.failed", vec![KeyValue::new("reason", "bad password")]);
    server.set_status(Status::error("unauthorised"));
    let trace_id = server.span_context().trace_id().to_string();
    let server_id = server.span_context().span_id().to_string();
    let cx = Context::current_with_span(server);
    let mut client = tracer
        .span_builder("SELECT users")
        .with_kind(SpanKind::Client)
        .with_attributes([KeyValue::new("peer.service", "users-db")])
        .start_with_context(&tracer, &cx);
    client.end();
    cx.span().end();
    (trace_id, server_id)
}

async fn send_trace(provider: SdkTracerProvider) -> (String, String) {
    tokio::task::spawn_blocking(move || {
        let ids = make_trace(&provider);
        provider
            .shutdown()
            .expect("tracer provider flushes on shutdown");
        ids
    })
    .await
    .unwrap()
}

async fn check_trace(vigil: &Vigil, service: &str, trace_id: &str, server_id: &str) {
    let rows = vigil
        .rows(&format!(
            "SELECT name, kind, status_code, status_message, span_id, parent_span_id, \
                    attributes['http.response.status_code'], events, duration_ns >= 0, service \
             FROM spans WHERE trace_id = '{trace_id}' ORDER BY kind DESC"
        ))
        .await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (server, client) = (&rows[0], &rows[1]);
    assert_eq!(server[0], "POST /login");
    assert_eq!(server[1], "SERVER");
    assert_eq!(server[2], "ERROR");
    assert_eq!(server[3], "unauthorised");
    assert_eq!(server[4].as_str(), Some(server_id));
    assert!(server[5].is_null(), "root span has no parent: {server:?}");
    assert_eq!(server[6], "401");
    let events: serde_json::Value = serde_json::from_str(server[7].as_str().unwrap()).unwrap();
    assert_eq!(events[0]["name"], "auth.failed");
    assert_eq!(events[0]["attributes"]["reason"], "bad password");
    assert_eq!(server[8], true);
    assert_eq!(server[9].as_str(), Some(service));
    assert_eq!(client[1], "CLIENT");
    assert_eq!(
        client[5].as_str(),
        Some(server_id),
        "child points at its parent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_sdk_traces_over_grpc_and_http_are_queryable() {
    let vigil = Vigil::start("");
    let grpc = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(vigil.grpc_endpoint())
        .build()
        .unwrap();
    let (t1, s1) = send_trace(
        SdkTracerProvider::builder()
            .with_resource(resource("login-grpc"))
            .with_batch_exporter(grpc)
            .build(),
    )
    .await;
    let http = SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", vigil.http_endpoint()))
        .build()
        .unwrap();
    let (t2, s2) = send_trace(
        SdkTracerProvider::builder()
            .with_resource(resource("login-http"))
            .with_batch_exporter(http)
            .build(),
    )
    .await;
    check_trace(&vigil, "login-grpc", &t1, &s1).await;
    check_trace(&vigil, "login-http", &t2, &s2).await;
    // Each trace is stored once, whichever transport carried it.
    assert_eq!(
        vigil
            .scalar_i64("SELECT count(DISTINCT trace_id) FROM spans")
            .await,
        2
    );
}

//! Hand-built OTLP requests and raw OTLP/HTTP calls, for tests that need exact control over
//! what is sent (ids, timestamps, malformed input) beyond what an SDK would produce.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

pub fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

pub fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

/// `n` log records of `service`, each tagged `test.req = req` and `test.seq = i`.
pub fn logs_request(service: &str, req: &str, n: usize, time_ns: u64) -> ExportLogsServiceRequest {
    let records = (0..n)
        .map(|i| LogRecord {
            time_unix_nano: time_ns + i as u64,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: Some(AnyValue {
                value: Some(s(&format!("request {req} record {i}"))),
            }),
            attributes: vec![
                kv("test.req", s(req)),
                kv("test.seq", any_value::Value::IntValue(i as i64)),
            ],
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s(service))],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "vigil-e2e".into(),
                    ..Default::default()
                }),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// POSTs a protobuf export to `{endpoint}/v1/logs`; returns the HTTP status (or None if the
/// connection failed, e.g. the server was killed).
pub async fn post_logs(
    client: &reqwest::Client,
    endpoint: &str,
    req: &ExportLogsServiceRequest,
) -> Option<u16> {
    client
        .post(format!("{endpoint}/v1/logs"))
        .header("content-type", "application/x-protobuf")
        .body(req.encode_to_vec())
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

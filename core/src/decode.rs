//! OTLP export requests to Arrow batches, done once at ingest: every OTLP field lands in a
//! column of the `logs` or `spans` schema, and records that cannot are refused one by one.
//!
//! Logs are read from the protobuf wire format in place ([`decode_logs_protobuf`]): keys,
//! values and bodies are copied once, from the request body into the Arrow builders. A request
//! that is already a prost struct (OTLP/JSON, tests) takes the same path through its protobuf
//! encoding, so there is one decoder for both. Spans still go through prost's structs.
//!
//! Decoding never fails on what a client sent: a malformed record is counted in
//! [`Decoded::rejected`] (OTLP partial success) and the rest of the request is kept. A
//! [`DecodeError`] means Vigil itself failed to build the batch.
//!
//! Resource and scope columns repeat on every record, so a small request with a large resource
//! can ask for a huge batch: records are refused once the batch holds [`MAX_BATCH_BYTES`]. The
//! check runs before each record, so one record may overshoot it; Arrow's 2 GiB string offsets
//! stay in range as long as receivers cap requests well below 200 MiB (tonic's default is 4 MiB).

mod columns;
mod logs;
mod spans;
#[cfg(test)]
pub(crate) mod test_support;
mod value;
mod wire;

use arrow::array::ArrayRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::batch::{Batch, SchemaMismatch, Signal};

pub use value::any_value_to_string;

/// Most bytes of column data one decoded batch may hold (see the module doc).
pub const MAX_BATCH_BYTES: usize = 512 << 20;

/// Outcome of decoding one export request.
#[derive(Debug)]
pub struct Decoded {
    /// May have 0 rows (empty request, or all rejected).
    pub batch: Batch,
    /// Records refused individually (OTLP partial success).
    pub rejected: u64,
    /// `Some(..)` iff `rejected > 0`: says why, with counts per reason, never payload values.
    pub error_message: Option<String>,
}

/// Vigil failed to build a batch; never caused by what the client sent.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot build {signal} batch")]
    Arrow {
        signal: Signal,
        #[source]
        source: ArrowError,
    },
    #[error("decoded {signal} batch does not match its schema")]
    Schema {
        signal: Signal,
        #[source]
        source: SchemaMismatch,
    },
    #[error("cannot read a {signal} request back from its own protobuf encoding")]
    Reencoded {
        signal: Signal,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Why a protobuf export body gave no batch.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    /// Not a valid encoding of the request message. prost's message names the message, field
    /// and wire problem; it never contains payload bytes.
    #[error(transparent)]
    Undecodable(prost::DecodeError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// A wire-format decoder's failure: the body is left to prost, or the batch could not be built.
#[derive(Debug)]
enum WireDecodeError {
    Wire(wire::WireError),
    Build(DecodeError),
}

impl From<wire::WireError> for WireDecodeError {
    fn from(e: wire::WireError) -> Self {
        WireDecodeError::Wire(e)
    }
}

/// Decodes a logs export request into a `logs` batch. Records with a zero `observed_time`
/// get `received_at_ns`.
pub fn decode_logs(
    request: &ExportLogsServiceRequest,
    received_at_ns: i64,
) -> Result<Decoded, DecodeError> {
    logs::decode(request, received_at_ns, MAX_BATCH_BYTES)
}

/// Decodes a protobuf `ExportLogsServiceRequest` body (OTLP/HTTP or gRPC) into a `logs`
/// batch, reading the records in place rather than through prost's structs. Bodies this fast
/// path does not take (non-canonical encodings, or invalid ones, whose error prost reports) go
/// through prost; the batch is the same either way.
pub fn decode_logs_protobuf(body: &[u8], received_at_ns: i64) -> Result<Decoded, ProtobufError> {
    match logs::decode_protobuf(body, received_at_ns, MAX_BATCH_BYTES) {
        Ok(decoded) => Ok(decoded),
        Err(WireDecodeError::Build(e)) => Err(e.into()),
        Err(WireDecodeError::Wire(_)) => {
            let request =
                ExportLogsServiceRequest::decode(body).map_err(ProtobufError::Undecodable)?;
            Ok(decode_logs(&request, received_at_ns)?)
        }
    }
}

/// Decodes a protobuf `ExportTraceServiceRequest` body into a `spans` batch.
pub fn decode_traces_protobuf(body: &[u8], received_at_ns: i64) -> Result<Decoded, ProtobufError> {
    let request = ExportTraceServiceRequest::decode(body).map_err(ProtobufError::Undecodable)?;
    Ok(decode_traces(&request, received_at_ns)?)
}

/// Decodes a trace export request into a `spans` batch. `received_at_ns` is unused (spans
/// carry their own times) and taken for symmetry with [`decode_logs`].
pub fn decode_traces(
    request: &ExportTraceServiceRequest,
    _received_at_ns: i64,
) -> Result<Decoded, DecodeError> {
    spans::decode(request, MAX_BATCH_BYTES)
}

/// Why a record was refused. A record is counted under the first reason that applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    TraceIdLength,
    TraceIdZero,
    SpanIdLength,
    SpanIdZero,
    ParentSpanIdLength,
    MissingStartTime,
    TimestampOutOfRange,
    BatchTooLarge,
}

impl Reason {
    /// In the order the error message lists them.
    const ALL: [Reason; 8] = [
        Reason::TraceIdLength,
        Reason::TraceIdZero,
        Reason::SpanIdLength,
        Reason::SpanIdZero,
        Reason::ParentSpanIdLength,
        Reason::MissingStartTime,
        Reason::TimestampOutOfRange,
        Reason::BatchTooLarge,
    ];

    fn describe(self) -> &'static str {
        match self {
            Reason::TraceIdLength => "with an invalid trace_id length",
            Reason::TraceIdZero => "with an all-zero trace_id",
            Reason::SpanIdLength => "with an invalid span_id length",
            Reason::SpanIdZero => "with an all-zero span_id",
            Reason::ParentSpanIdLength => "with an invalid parent_span_id length",
            Reason::MissingStartTime => "with no start time",
            Reason::TimestampOutOfRange => "with a timestamp out of range",
            Reason::BatchTooLarge => "over the decoded batch size limit",
        }
    }
}

/// Count of refused records per reason.
#[derive(Debug, Default)]
struct Rejections {
    counts: [u64; Reason::ALL.len()],
}

impl Rejections {
    fn add(&mut self, reason: Reason) {
        if let Some(count) = self.counts.get_mut(reason as usize) {
            *count += 1;
        }
    }

    fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `rejected 3 of 512 log records: 2 with an invalid trace_id length, 1 with ...`, or
    /// `None` when nothing was rejected. Built from counts and fixed words only.
    fn message(&self, records: u64, signal: Signal) -> Option<String> {
        let rejected = self.total();
        if rejected == 0 {
            return None;
        }
        let noun = match (signal, records) {
            (Signal::Logs, 1) => "log record",
            (Signal::Logs, _) => "log records",
            (Signal::Spans, 1) => "span",
            (Signal::Spans, _) => "spans",
            (Signal::Alerts, 1) => "alert",
            (Signal::Alerts, _) => "alerts",
            (Signal::DeadLetters, 1) => "dead letter",
            (Signal::DeadLetters, _) => "dead letters",
            (Signal::Redactions, 1) => "redaction record",
            (Signal::Redactions, _) => "redaction records",
            (Signal::AlertActions, 1) => "alert action",
            (Signal::AlertActions, _) => "alert actions",
            (Signal::Audit, 1) => "audit record",
            (Signal::Audit, _) => "audit records",
        };
        let reasons: Vec<String> = Reason::ALL
            .iter()
            .zip(self.counts)
            .filter(|(_, count)| *count > 0)
            .map(|(reason, count)| format!("{count} {}", reason.describe()))
            .collect();
        Some(format!(
            "rejected {rejected} of {records} {noun}: {}",
            reasons.join(", ")
        ))
    }
}

/// Wraps finished columns into the decoded batch of `signal`.
fn finish(
    signal: Signal,
    columns: Vec<ArrayRef>,
    records: u64,
    rejections: &Rejections,
) -> Result<Decoded, DecodeError> {
    let records_batch = RecordBatch::try_new(signal.schema(), columns)
        .map_err(|source| DecodeError::Arrow { signal, source })?;
    let batch = Batch::new(signal, records_batch)
        .map_err(|source| DecodeError::Schema { signal, source })?;
    Ok(Decoded {
        batch,
        rejected: rejections.total(),
        error_message: rejections.message(records, signal),
    })
}

#[cfg(test)]
mod tests {
    use super::test_support::{kv, map_col, map_entries as map_row, str_col};
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::TimestampNanosecondType;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
    };
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
    use proptest::prelude::*;

    const RECEIVED: i64 = 1_700_000_000_000_000_000;

    fn get<'a>(entries: &'a [(String, Option<String>)], key: &str) -> Option<&'a str> {
        entries.iter().find(|(k, _)| k == key)?.1.as_deref()
    }
    fn ts(d: &Decoded, name: &str, row: usize) -> i64 {
        let col = d.batch.records().column_by_name(name).unwrap();
        col.as_primitive::<TimestampNanosecondType>().value(row)
    }

    #[test]
    fn rejection_message_counts_reasons_in_a_fixed_order() {
        // `Rejections` indexes its counts by discriminant and lists them in `ALL` order.
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i);
        }
        let mut r = Rejections::default();
        assert_eq!(r.message(512, Signal::Logs), None);
        r.add(Reason::TimestampOutOfRange);
        r.add(Reason::TraceIdLength);
        r.add(Reason::TraceIdLength);
        assert_eq!(r.total(), 3);
        assert_eq!(
            r.message(512, Signal::Logs).as_deref(),
            Some(
                "rejected 3 of 512 log records: 2 with an invalid trace_id length, \
                 1 with a timestamp out of range"
            )
        );
        let mut r = Rejections::default();
        r.add(Reason::BatchTooLarge);
        assert_eq!(
            r.message(1, Signal::Spans).as_deref(),
            Some("rejected 1 of 1 span: 1 over the decoded batch size limit")
        );
    }

    #[test]
    fn rejection_message_never_echoes_payload_values() {
        let secret = "alice@example.com";
        let pii = || KeyValue {
            key: secret.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(secret.into())),
            }),
            key_strindex: 0,
        };
        let logs = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![pii()],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: secret.into(),
                        ..Default::default()
                    }),
                    log_records: vec![
                        LogRecord {
                            trace_id: secret.as_bytes().to_vec(),
                            severity_text: secret.into(),
                            body: pii().value,
                            attributes: vec![pii()],
                            ..Default::default()
                        },
                        LogRecord::default(),
                    ],
                    schema_url: secret.into(),
                }],
                schema_url: secret.into(),
            }],
        };
        let d = decode_logs(&logs, RECEIVED).unwrap();
        assert_eq!((d.batch.num_rows(), d.rejected), (1, 1));
        let message = d.error_message.unwrap();
        assert!(!message.contains("alice"), "{message}");
        assert!(!message.contains(&hex::encode(secret)), "{message}");

        let traces = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: None,
                scope_spans: vec![ScopeSpans {
                    scope: None,
                    spans: vec![Span {
                        trace_id: secret.as_bytes().to_vec(),
                        name: secret.into(),
                        attributes: vec![pii()],
                        status: Some(Status {
                            message: secret.into(),
                            code: 2,
                        }),
                        ..Default::default()
                    }],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let d = decode_traces(&traces, RECEIVED).unwrap();
        let message = d.error_message.unwrap();
        assert_eq!(
            message,
            "rejected 1 of 1 span: 1 with an invalid trace_id length"
        );
    }

    /// OTLP/JSON as the spec writes it: lowerCamelCase, hex ids (any case), integer enums,
    /// 64-bit integers as strings or numbers, missing fields, and unknown fields to ignore.
    const LOGS_JSON: &str = r#"{
      "unknownTopLevel": {"ignored": [1, 2]},
      "resourceLogs": [{
        "resource": {
          "attributes": [
            {"key": "service.name", "value": {"stringValue": "my.service"}},
            {"key": "host.cpus", "value": {"intValue": 8}},
            {"key": "future", "value": {"someFutureValue": 1}}
          ],
          "droppedAttributesCount": 1,
          "someFutureResourceField": "x"
        },
        "schemaUrl": "https://opentelemetry.io/schemas/1.24.0",
        "scopeLogs": [{
          "scope": {
            "name": "my.library",
            "version": "1.0.0",
            "attributes": [{"key": "my.scope.attribute", "value": {"stringValue": "some scope attribute"}}],
            "unknownScopeField": true
          },
          "logRecords": [
            {
              "timeUnixNano": "1544712660300000000",
              "observedTimeUnixNano": 1544712660300000001,
              "severityNumber": 10,
              "severityText": "Information",
              "traceId": "5B8EFFF798038103D269B633813FC60C",
              "spanId": "eee19b7ec3c1b174",
              "flags": 1,
              "eventName": "user.login",
              "body": {"stringValue": "Example log record"},
              "attributes": [
                {"key": "string.attribute", "value": {"stringValue": "some string"}},
                {"key": "boolean.attribute", "value": {"boolValue": true}},
                {"key": "int.attribute", "value": {"intValue": "10"}},
                {"key": "double.attribute", "value": {"doubleValue": 637.704}},
                {"key": "bytes.attribute", "value": {"bytesValue": "3q2+7w=="}},
                {"key": "empty.attribute", "value": {}},
                {"key": "array.attribute", "value": {"arrayValue": {"values": [{"stringValue": "many"}, {"intValue": "2"}]}}},
                {"key": "map.attribute", "value": {"kvlistValue": {"values": [{"key": "some.map.key", "value": {"stringValue": "some value"}}]}}}
              ],
              "droppedAttributesCount": 2,
              "someFutureRecordField": {"nested": true}
            },
            {
              "observedTimeUnixNano": "1544712660300000001",
              "body": {"kvlistValue": {"values": [{"key": "a", "value": {"intValue": "1"}}]}}
            },
            {"traceId": "5B8EFFF798038103"}
          ]
        }]
      }]
    }"#;

    #[test]
    fn decodes_otlp_json_logs() {
        let request: ExportLogsServiceRequest = serde_json::from_str(LOGS_JSON).unwrap();
        let d = decode_logs(&request, RECEIVED).unwrap();
        assert_eq!((d.batch.num_rows(), d.rejected), (2, 1));
        assert_eq!(
            d.error_message.as_deref(),
            Some("rejected 1 of 3 log records: 1 with an invalid trace_id length")
        );
        assert_eq!(ts(&d, "time", 0), 1_544_712_660_300_000_000);
        assert_eq!(ts(&d, "observed_time", 0), 1_544_712_660_300_000_001);
        assert_eq!(ts(&d, "time", 1), 1_544_712_660_300_000_001);
        assert_eq!(str_col(&d, "service").value(1), "my.service");
        assert_eq!(str_col(&d, "severity_text").value(0), "Information");
        assert_eq!(
            str_col(&d, "trace_id").value(0),
            "5b8efff798038103d269b633813fc60c"
        );
        assert_eq!(str_col(&d, "span_id").value(0), "eee19b7ec3c1b174");
        assert!(str_col(&d, "trace_id").is_null(1));
        assert_eq!(str_col(&d, "event_name").value(0), "user.login");
        assert_eq!(str_col(&d, "body").value(0), "Example log record");
        assert_eq!(str_col(&d, "body").value(1), r#"{"a":1}"#);
        let attrs = map_row(map_col(&d, "attributes"), 0);
        assert_eq!(attrs.len(), 8);
        assert_eq!(get(&attrs, "boolean.attribute"), Some("true"));
        assert_eq!(get(&attrs, "int.attribute"), Some("10"));
        assert_eq!(get(&attrs, "double.attribute"), Some("637.704"));
        assert_eq!(get(&attrs, "bytes.attribute"), Some("3q2+7w=="));
        assert_eq!(get(&attrs, "empty.attribute"), None);
        assert_eq!(get(&attrs, "array.attribute"), Some(r#"["many",2]"#));
        assert_eq!(
            get(&attrs, "map.attribute"),
            Some(r#"{"some.map.key":"some value"}"#)
        );
        let resource = map_row(map_col(&d, "resource"), 0);
        assert_eq!(get(&resource, "host.cpus"), Some("8"));
        assert_eq!(get(&resource, "future"), None);
        assert_eq!(
            str_col(&d, "resource_schema_url").value(0),
            "https://opentelemetry.io/schemas/1.24.0"
        );
        assert_eq!(str_col(&d, "scope_name").value(0), "my.library");
        assert_eq!(str_col(&d, "scope_version").value(0), "1.0.0");
        assert!(str_col(&d, "scope_schema_url").is_null(0));
    }

    const TRACES_JSON: &str = r#"{
      "resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]},
        "scopeSpans": [{
          "scope": {"name": "my.library", "version": "1.0.0"},
          "spans": [
            {
              "traceId": "5B8EFFF798038103D269B633813FC60C",
              "spanId": "EEE19B7EC3C1B174",
              "parentSpanId": "EEE19B7EC3C1B173",
              "traceState": "rojo=00f067aa0ba902b7",
              "flags": 257,
              "name": "I'm a server span",
              "startTimeUnixNano": "1544712660000000000",
              "endTimeUnixNano": 1544712661000000000,
              "kind": 2,
              "attributes": [{"key": "my.span.attr", "value": {"stringValue": "some value"}}],
              "events": [{
                "timeUnixNano": "1544712660500000000",
                "name": "exception",
                "attributes": [{"key": "exception.escaped", "value": {"boolValue": false}}],
                "unknownEventField": 1
              }],
              "links": [{
                "traceId": "5B8EFFF798038103D269B633813FC60D",
                "spanId": "EEE19B7EC3C1B175",
                "flags": 1
              }],
              "status": {"code": 2, "message": "boom", "unknownStatusField": "x"},
              "droppedEventsCount": 3,
              "someFutureSpanField": [true]
            },
            {
              "traceId": "5B8EFFF798038103D269B633813FC60C",
              "spanId": "EEE19B7EC3C1B176",
              "startTimeUnixNano": "1544712660000000000",
              "kind": 7
            },
            {"traceId": "00000000000000000000000000000000", "spanId": "EEE19B7EC3C1B176", "startTimeUnixNano": "1"}
          ]
        }]
      }]
    }"#;

    #[test]
    fn decodes_otlp_json_traces() {
        let request: ExportTraceServiceRequest = serde_json::from_str(TRACES_JSON).unwrap();
        let d = decode_traces(&request, RECEIVED).unwrap();
        assert_eq!((d.batch.num_rows(), d.rejected), (2, 1));
        assert_eq!(
            d.error_message.as_deref(),
            Some("rejected 1 of 3 spans: 1 with an all-zero trace_id")
        );
        assert_eq!(ts(&d, "time", 0), 1_544_712_660_000_000_000);
        assert_eq!(ts(&d, "end_time", 0), 1_544_712_661_000_000_000);
        assert_eq!(str_col(&d, "parent_span_id").value(0), "eee19b7ec3c1b173");
        assert!(str_col(&d, "parent_span_id").is_null(1));
        assert_eq!(str_col(&d, "trace_state").value(0), "rojo=00f067aa0ba902b7");
        assert_eq!(str_col(&d, "kind").value(0), "SERVER");
        assert_eq!(str_col(&d, "kind").value(1), "UNSPECIFIED");
        assert_eq!(str_col(&d, "status_code").value(0), "ERROR");
        assert_eq!(str_col(&d, "status_message").value(0), "boom");
        assert_eq!(str_col(&d, "status_code").value(1), "UNSET");
        assert_eq!(
            str_col(&d, "events").value(0),
            r#"[{"time":"2018-12-13T14:51:00.500000000Z","time_unix_nano":1544712660500000000,"name":"exception","attributes":{"exception.escaped":"false"},"dropped_attributes_count":0}]"#
        );
        assert_eq!(
            str_col(&d, "links").value(0),
            r#"[{"trace_id":"5b8efff798038103d269b633813fc60d","span_id":"eee19b7ec3c1b175","trace_state":null,"flags":1,"attributes":{},"dropped_attributes_count":0}]"#
        );
    }

    /// What opentelemetry-proto 0.33's serde accepts, for the OTLP/HTTP JSON receiver. The
    /// `false` rows are valid OTLP/JSON (proto3 JSON mapping) that it refuses, failing the
    /// whole request; if one flips, the crate was fixed and the receiver notes can shrink.
    #[test]
    fn opentelemetry_proto_json_acceptance() {
        let record =
            |r: &str| format!(r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{r}]}}]}}]}}"#);
        let cases = [
            // Accepted.
            (true, record(r#"{"foo":{"a":[1]},"severityText":"x"}"#)),
            (true, record(r#"{"timeUnixNano":1544712660300000000}"#)),
            (true, record(r#"{"body":{"intValue":42}}"#)),
            (true, record(r#"{"body":{"doubleValue":3}}"#)),
            (true, record(r#"{"body":{}}"#)),
            (true, record(r#"{"body":null}"#)),
            (true, record(r#"{"attributes":[{"key":"k"}]}"#)),
            (
                true,
                record(r#"{"traceId":"0x5B8EFFF798038103D269B633813FC60C"}"#),
            ),
            // Valid per the proto3 JSON mapping, refused.
            (false, record(r#"{"body":{"arrayValue":{}}}"#)),
            (false, record(r#"{"body":{"kvlistValue":{}}}"#)),
            (false, record(r#"{"body":{"doubleValue":"NaN"}}"#)),
            (false, record(r#"{"body":{"doubleValue":"Infinity"}}"#)),
            (false, record(r#"{"body":{"doubleValue":"1.5"}}"#)),
            (false, record(r#"{"droppedAttributesCount":"3"}"#)),
            (false, record(r#"{"flags":"1"}"#)),
            (false, record(r#"{"timeUnixNano":null}"#)),
            (false, record(r#"{"traceId":null}"#)),
            (false, record(r#"{"attributes":null}"#)),
            (
                false,
                record(r#"{"attributes":[{"value":{"stringValue":"x"}}]}"#),
            ),
            (false, record(r#"{"body":{"bytesValue":"AQI"}}"#)),
            (false, record(r#"{"body":{"bytesValue":"-_8="}}"#)),
            // Invalid OTLP/JSON, refused (a bad id fails the request, not just its record).
            (
                false,
                record(r#"{"severityNumber":"SEVERITY_NUMBER_INFO"}"#),
            ),
            (false, record(r#"{"traceId":"abc"}"#)),
            (false, record(r#"{"traceId":"W47/95gDgQPSabYzgT/GDA=="}"#)),
        ];
        for (accepted, json) in cases {
            let result = serde_json::from_str::<ExportLogsServiceRequest>(&json);
            assert_eq!(result.is_ok(), accepted, "{json}: {result:?}");
        }
        // Original (snake_case) field names are not OTLP/JSON and are dropped as unknown.
        let request: ExportLogsServiceRequest =
            serde_json::from_str(&record(r#"{"time_unix_nano":"5"}"#)).unwrap();
        assert_eq!(
            request.resource_logs[0].scope_logs[0].log_records[0].time_unix_nano,
            0
        );
        // Enum names in spans are refused too; integers out of the enum's range are kept.
        let span =
            |s: &str| format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{s}]}}]}}]}}"#);
        assert!(
            serde_json::from_str::<ExportTraceServiceRequest>(&span(
                r#"{"kind":"SPAN_KIND_SERVER"}"#
            ))
            .is_err()
        );
        assert!(serde_json::from_str::<ExportTraceServiceRequest>(&span(r#"{"kind":9}"#)).is_ok());
    }

    // Property tests: any request decodes without panicking, and every record is either a row
    // or counted as rejected.

    fn any_value() -> impl Strategy<Value = AnyValue> {
        let leaf = prop_oneof![
            Just(None),
            ".{0,6}".prop_map(|s| Some(Value::StringValue(s))),
            any::<bool>().prop_map(|b| Some(Value::BoolValue(b))),
            any::<i64>().prop_map(|i| Some(Value::IntValue(i))),
            any::<f64>().prop_map(|d| Some(Value::DoubleValue(d))),
            prop::collection::vec(any::<u8>(), 0..6).prop_map(|b| Some(Value::BytesValue(b))),
            any::<i32>().prop_map(|i| Some(Value::StringValueStrindex(i))),
        ]
        .prop_map(|value| AnyValue { value });
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(|values| AnyValue {
                    value: Some(Value::ArrayValue(ArrayValue { values }))
                }),
                prop::collection::vec((key(), prop::option::of(inner)), 0..4).prop_map(|kvs| {
                    AnyValue {
                        value: Some(Value::KvlistValue(KeyValueList {
                            values: to_key_values(kvs),
                        })),
                    }
                }),
            ]
        })
    }
    /// Few distinct keys, so duplicates are common.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof!["[ab]{0,2}", Just("service.name".to_owned()), "\\PC{0,4}"]
    }
    fn to_key_values(kvs: Vec<(String, Option<AnyValue>)>) -> Vec<KeyValue> {
        kvs.into_iter()
            .map(|(key, value)| KeyValue {
                key,
                value,
                key_strindex: 0,
            })
            .collect()
    }
    fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
        prop::collection::vec((key(), prop::option::of(any_value())), 0..5).prop_map(to_key_values)
    }
    /// Mostly ids of the `valid_len`, so that many records get through, else anything.
    fn id(valid_len: usize) -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            6 => prop::collection::vec(any::<u8>(), valid_len),
            1 => Just(vec![]),
            1 => Just(vec![0; valid_len]),
            1 => prop::collection::vec(any::<u8>(), 0..20),
        ]
    }
    fn timestamp() -> impl Strategy<Value = u64> {
        prop_oneof![
            6 => 1..=i64::MAX as u64,
            1 => Just(0),
            1 => Just(i64::MAX as u64),
            1 => Just(i64::MAX as u64 + 1),
            1 => Just(u64::MAX),
            1 => any::<u64>(),
        ]
    }
    fn resource() -> impl Strategy<Value = Option<Resource>> {
        prop::option::of(
            (attributes(), any::<u32>()).prop_map(|(attributes, dropped)| Resource {
                attributes,
                dropped_attributes_count: dropped,
                entity_refs: vec![],
            }),
        )
    }
    fn scope() -> impl Strategy<Value = Option<InstrumentationScope>> {
        prop::option::of((".{0,3}", ".{0,3}", attributes(), any::<u32>()).prop_map(
            |(name, version, attributes, dropped)| InstrumentationScope {
                name,
                version,
                attributes,
                dropped_attributes_count: dropped,
            },
        ))
    }

    fn log_record() -> impl Strategy<Value = LogRecord> {
        (
            (
                timestamp(),
                timestamp(),
                any::<i32>(),
                ".{0,3}",
                prop::option::of(any_value()),
            ),
            (
                attributes(),
                any::<u32>(),
                any::<u32>(),
                id(16),
                id(8),
                ".{0,3}",
            ),
        )
            .prop_map(
                |(
                    (time, observed, severity_number, severity_text, body),
                    (attributes, dropped, flags, trace_id, span_id, event_name),
                )| LogRecord {
                    time_unix_nano: time,
                    observed_time_unix_nano: observed,
                    severity_number,
                    severity_text,
                    body,
                    attributes,
                    dropped_attributes_count: dropped,
                    flags,
                    trace_id,
                    span_id,
                    event_name,
                },
            )
    }

    fn logs_request() -> impl Strategy<Value = ExportLogsServiceRequest> {
        let scope_logs = (scope(), prop::collection::vec(log_record(), 0..5), ".{0,2}").prop_map(
            |(scope, log_records, schema_url)| ScopeLogs {
                scope,
                log_records,
                schema_url,
            },
        );
        let resource_logs = (
            resource(),
            prop::collection::vec(scope_logs, 0..3),
            ".{0,2}",
        )
            .prop_map(|(resource, scope_logs, schema_url)| ResourceLogs {
                resource,
                scope_logs,
                schema_url,
            });
        prop::collection::vec(resource_logs, 0..3)
            .prop_map(|resource_logs| ExportLogsServiceRequest { resource_logs })
    }

    fn span() -> impl Strategy<Value = Span> {
        let event = (timestamp(), ".{0,3}", attributes(), any::<u32>()).prop_map(
            |(time_unix_nano, name, attributes, dropped_attributes_count)| Event {
                time_unix_nano,
                name,
                attributes,
                dropped_attributes_count,
            },
        );
        let link = (
            id(16),
            id(8),
            ".{0,3}",
            attributes(),
            any::<u32>(),
            any::<u32>(),
        )
            .prop_map(
                |(trace_id, span_id, trace_state, attributes, dropped_attributes_count, flags)| {
                    Link {
                        trace_id,
                        span_id,
                        trace_state,
                        attributes,
                        dropped_attributes_count,
                        flags,
                    }
                },
            );
        let status = prop::option::of(
            (".{0,3}", -1..4i32).prop_map(|(message, code)| Status { message, code }),
        );
        (
            (
                id(16),
                id(8),
                id(8),
                ".{0,3}",
                any::<u32>(),
                ".{0,3}",
                -1..7i32,
            ),
            (
                timestamp(),
                timestamp(),
                attributes(),
                prop::collection::vec(event, 0..3),
            ),
            (
                prop::collection::vec(link, 0..3),
                status,
                any::<(u32, u32, u32)>(),
            ),
        )
            .prop_map(
                |(
                    (trace_id, span_id, parent_span_id, trace_state, flags, name, kind),
                    (start, end, attributes, events),
                    (
                        links,
                        status,
                        (dropped_attributes_count, dropped_events_count, dropped_links_count),
                    ),
                )| Span {
                    trace_id,
                    span_id,
                    trace_state,
                    parent_span_id,
                    flags,
                    name,
                    kind,
                    start_time_unix_nano: start,
                    end_time_unix_nano: end,
                    attributes,
                    dropped_attributes_count,
                    events,
                    dropped_events_count,
                    links,
                    dropped_links_count,
                    status,
                },
            )
    }

    fn traces_request() -> impl Strategy<Value = ExportTraceServiceRequest> {
        let scope_spans = (scope(), prop::collection::vec(span(), 0..5), ".{0,2}").prop_map(
            |(scope, spans, schema_url)| ScopeSpans {
                scope,
                spans,
                schema_url,
            },
        );
        let resource_spans = (
            resource(),
            prop::collection::vec(scope_spans, 0..3),
            ".{0,2}",
        )
            .prop_map(|(resource, scope_spans, schema_url)| ResourceSpans {
                resource,
                scope_spans,
                schema_url,
            });
        prop::collection::vec(resource_spans, 0..3)
            .prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
    }

    /// Invariants every decoded batch keeps, whatever came in.
    fn check_decoded(d: &Decoded, total: usize) -> Result<(), TestCaseError> {
        prop_assert_eq!(d.batch.num_rows() as u64 + d.rejected, total as u64);
        prop_assert_eq!(d.error_message.is_some(), d.rejected > 0);
        for name in ["attributes", "resource", "scope_attributes"] {
            let map = map_col(d, name);
            for row in 0..map.len() {
                let entries = map_row(map, row);
                let mut keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
                keys.sort_unstable();
                keys.dedup();
                prop_assert_eq!(keys.len(), entries.len(), "duplicate keys in {}", name);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_logs_request_decodes(request in logs_request(), received in any::<i64>()) {
            let total: usize = request.resource_logs.iter()
                .flat_map(|r| &r.scope_logs).map(|s| s.log_records.len()).sum();
            let d = decode_logs(&request, received).unwrap();
            check_decoded(&d, total)?;
        }

        #[test]
        fn any_traces_request_decodes(request in traces_request()) {
            let total: usize = request.resource_spans.iter()
                .flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
            let d = decode_traces(&request, RECEIVED).unwrap();
            check_decoded(&d, total)?;
            for column in ["events", "links"] {
                let col = str_col(&d, column);
                for row in 0..col.len() {
                    let parsed: Result<serde_json::Value, _> = serde_json::from_str(col.value(row));
                    prop_assert!(parsed.is_ok(), "{} is not JSON: {}", column, col.value(row));
                }
            }
        }

        #[test]
        fn canonical_protobuf_bodies_are_read_in_place(request in logs_request()) {
            let body = request.encode_to_vec();
            prop_assert!(logs::decode_protobuf(&body, RECEIVED, MAX_BATCH_BYTES).is_ok());
        }

        /// Whatever a protobuf body holds, reading it in place gives what prost's structs give,
        /// and it is refused exactly when prost refuses it.
        #[test]
        fn protobuf_bodies_decode_as_through_prost(
            request in logs_request(),
            edits in proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..4), 0..4),
        ) {
            let mut body = request.encode_to_vec();
            for (at, byte, edit) in edits {
                let at = usize::from(at) % (body.len() + 1);
                match edit {
                    0 => body.insert(at, byte),
                    1 if at < body.len() => body[at] = byte,
                    2 => body.truncate(at),
                    _ if at < body.len() => { body.remove(at); }
                    _ => {}
                }
            }
            check_as_through_prost(&body)?;
        }

        #[test]
        fn any_value_string_form_of_containers_is_json(value in any_value()) {
            if let Some(Value::ArrayValue(_) | Value::KvlistValue(_)) = &value.value {
                let text = any_value_to_string(&value).unwrap();
                prop_assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok(), "{}", text);
            }
        }
    }

    /// `body` decodes in place to the batch prost's structs give, or is refused as prost
    /// refuses it.
    fn check_as_through_prost(body: &[u8]) -> Result<(), TestCaseError> {
        let in_place = decode_logs_protobuf(body, RECEIVED);
        match ExportLogsServiceRequest::decode(body) {
            Ok(request) => {
                let expected = decode_logs(&request, RECEIVED).unwrap();
                let got = in_place.unwrap();
                prop_assert_eq!(got.batch.records(), expected.batch.records());
                prop_assert_eq!(got.rejected, expected.rejected);
                prop_assert_eq!(got.error_message, expected.error_message);
            }
            Err(_) => prop_assert!(
                matches!(in_place, Err(ProtobufError::Undecodable(_))),
                "{:?}",
                in_place
            ),
        }
        Ok(())
    }

    /// A length-delimited field.
    fn field(number: u8, contents: &[u8]) -> Vec<u8> {
        assert!(
            number < 16 && contents.len() < 128,
            "one-byte tag and length"
        );
        let mut out = vec![number << 3 | 2, u8::try_from(contents.len()).unwrap()];
        out.extend_from_slice(contents);
        out
    }

    #[test]
    fn valid_protobuf_the_fast_path_leaves_to_prost_decodes_the_same() {
        let attribute = |k: &str, v: &str| kv(k, Value::StringValue(v.into())).encode_to_vec();
        let resource = |k: &str, v: &str| field(1, &attribute(k, v));
        let record = LogRecord {
            time_unix_nano: 5,
            body: Some(AnyValue {
                value: Some(Value::StringValue("first".into())),
            }),
            ..Default::default()
        }
        .encode_to_vec();
        let scope_logs = field(2, &record);
        // A resource in two parts, which protobuf merges.
        let mut resource_logs = field(1, &resource("service.name", "api"));
        resource_logs.extend(field(2, &scope_logs));
        resource_logs.extend(field(1, &resource("host.name", "h1")));
        let body = field(1, &resource_logs);
        check_as_through_prost(&body).unwrap();
        let d = decode_logs_protobuf(&body, RECEIVED).unwrap();
        assert_eq!(str_col(&d, "service").value(0), "api");
        assert_eq!(map_row(map_col(&d, "resource"), 0).len(), 2);

        // A record whose body comes twice, fields out of order, a repeated scalar (the last
        // wins), an unknown field and a group.
        let mut record = field(
            5,
            &AnyValue {
                value: Some(Value::StringValue("one".into())),
            }
            .encode_to_vec(),
        );
        record.extend([0x11, 1, 0, 0, 0, 0, 0, 0, 0]); // field 2 as fixed64: wrong wire type
        let wrong_type = field(1, &field(1, &field(2, &field(2, &record))));
        check_as_through_prost(&wrong_type).unwrap();
        assert!(matches!(
            decode_logs_protobuf(&wrong_type, RECEIVED),
            Err(ProtobufError::Undecodable(_))
        ));
        let mut record = field(
            5,
            &AnyValue {
                value: Some(Value::StringValue("one".into())),
            }
            .encode_to_vec(),
        );
        record.extend([0x10, 9, 0x10, 13]); // severity_number twice
        record.extend([0xf8, 0x07, 1]); // unknown field 127
        record.extend([0x9b, 0x07, 0x08, 1, 0x9c, 0x07]); // group 115 holding a varint
        record.extend(field(
            5,
            &AnyValue {
                value: Some(Value::IntValue(3)),
            }
            .encode_to_vec(),
        ));
        let odd = field(1, &field(2, &field(2, &record)));
        check_as_through_prost(&odd).unwrap();
        let d = decode_logs_protobuf(&odd, RECEIVED).unwrap();
        assert_eq!(str_col(&d, "body").value(0), "3");
        let severity = d.batch.records().column_by_name("severity_number").unwrap();
        assert_eq!(
            severity
                .as_primitive::<arrow::datatypes::Int32Type>()
                .value(0),
            13
        );
    }

    /// Text that is not UTF-8 makes the request undecodable, as prost has it, wherever the text
    /// is and whether or not its record is stored: text is checked by column after reading
    /// (`wire::Text`), and text that never reaches a column is checked on its own.
    #[test]
    fn text_that_is_not_utf8_is_refused_wherever_it_is() {
        const MARK: &[u8] = b"<bad>";
        // Field 1 is both KeyValue.key and AnyValue.string_value.
        let string = |s: &[u8]| field(1, s);
        let attribute = |k: &[u8], v: &[u8]| {
            let mut kv = string(k);
            kv.extend(field(2, &string(v)));
            kv
        };
        let good_id = field(9, &[1; 16]);
        let record = |fields: &[Vec<u8>]| fields.concat();
        let request = |resource: &[u8], records: &[Vec<u8>]| {
            let mut scope_logs = Vec::new();
            for r in records {
                scope_logs.extend(field(2, r));
            }
            let mut resource_logs = field(1, resource);
            resource_logs.extend(field(2, &scope_logs));
            field(1, &resource_logs)
        };
        let no_resource: &[u8] = &[];
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "a stored record's attribute value",
                request(no_resource, &[record(&[field(6, &attribute(b"k", MARK))])]),
            ),
            (
                "a stored record's attribute key",
                request(no_resource, &[record(&[field(6, &attribute(MARK, b"v"))])]),
            ),
            (
                "a body",
                request(no_resource, &[record(&[field(5, &string(MARK))])]),
            ),
            (
                "severity_text",
                request(no_resource, &[record(&[field(3, MARK)])]),
            ),
            (
                "event_name",
                request(no_resource, &[record(&[field(12, MARK)])]),
            ),
            (
                "a refused record (trace id of 3 bytes)",
                request(
                    no_resource,
                    &[
                        record(&[field(6, &attribute(b"k", b"fine"))]),
                        record(&[field(9, &[1; 3]), field(6, &attribute(b"k", MARK))]),
                    ],
                ),
            ),
            (
                "an attribute a later one with the same key replaces",
                request(
                    no_resource,
                    &[record(&[
                        good_id.clone(),
                        field(6, &attribute(b"k", MARK)),
                        field(6, &attribute(b"k", b"later")),
                    ])],
                ),
            ),
            (
                "a severity_text given twice",
                request(no_resource, &[record(&[field(3, MARK), field(3, b"INFO")])]),
            ),
            (
                "a string value replaced by an int in the same AnyValue",
                request(
                    no_resource,
                    &[record(&[field(5, &[string(MARK), vec![0x18, 7]].concat())])],
                ),
            ),
            (
                "a key given twice in one KeyValue",
                request(
                    no_resource,
                    &[record(&[field(
                        6,
                        &[string(MARK), attribute(b"k", b"v")].concat(),
                    )])],
                ),
            ),
            (
                "the resource of a group without records",
                request(&field(1, &attribute(b"host.name", MARK)), &[]),
            ),
        ];
        for (place, body) in cases {
            let at = body.windows(MARK.len()).position(|w| w == MARK).unwrap();
            // The same request with valid text decodes, in place as through prost.
            check_as_through_prost(&body).unwrap();
            decode_logs_protobuf(&body, RECEIVED).unwrap_or_else(|e| panic!("{place}: {e}"));
            let mut bad = body.clone();
            bad[at] = 0xff;
            assert!(
                ExportLogsServiceRequest::decode(bad.as_slice()).is_err(),
                "{place}"
            );
            check_as_through_prost(&bad).unwrap_or_else(|e| panic!("{place}: {e}"));
        }
    }

    /// A typical SDK log record: 5 attributes, string body, trace context, under a resource
    /// of 6 attributes, in requests of `records` records (the SDKs' default batch is 512).
    fn sdk_like_logs_request(records: u64) -> ExportLogsServiceRequest {
        let s = |k: &str, v: &str| KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(v.into())),
            }),
            key_strindex: 0,
        };
        let i = |k: &str, v: i64| KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(Value::IntValue(v)),
            }),
            key_strindex: 0,
        };
        let log_records = (0..records)
            .map(|n| LogRecord {
                time_unix_nano: 1_700_000_000_000_000_000 + n,
                severity_number: 9,
                severity_text: "INFO".into(),
                body: Some(AnyValue {
                    value: Some(Value::StringValue(format!(
                        "user {n} logged in from 10.0.0.{}",
                        n % 255
                    ))),
                }),
                attributes: vec![
                    s("http.method", "GET"),
                    s("http.route", "/api/v1/login"),
                    i("http.status_code", 200),
                    s("user.id", "u-12345"),
                    i("duration_ms", n as i64),
                ],
                trace_id: vec![7; 16],
                span_id: vec![9; 8],
                flags: 1,
                ..Default::default()
            })
            .collect();
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        s("service.name", "checkout"),
                        s("service.version", "1.4.2"),
                        s("host.name", "ip-10-0-0-1"),
                        s("deployment.environment", "prod"),
                        s("telemetry.sdk.name", "opentelemetry"),
                        s("telemetry.sdk.language", "rust"),
                    ],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "app".into(),
                        version: "1".into(),
                        ..Default::default()
                    }),
                    log_records,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    /// `cargo test --release -p vigil-core -- --ignored --nocapture decode_throughput`
    #[test]
    #[ignore = "timing, run by hand in release mode"]
    fn decode_throughput() {
        for (records, rounds) in [(512u64, 2_000u32), (10_000, 100)] {
            let request = sdk_like_logs_request(records);
            let start = std::time::Instant::now();
            for _ in 0..rounds {
                let d = decode_logs(&request, RECEIVED).unwrap();
                assert_eq!(d.batch.num_rows() as u64, records);
            }
            let elapsed = start.elapsed();
            let total = records * u64::from(rounds);
            let per_sec = total as f64 / elapsed.as_secs_f64();
            println!(
                "decode_logs, {records} per request: {per_sec:.0} records/s ({elapsed:?} for {total})"
            );
        }
        // The same records as spans with one event each.
        let logs = sdk_like_logs_request(512);
        let spans: Vec<Span> = logs.resource_logs[0].scope_logs[0]
            .log_records
            .iter()
            .map(|r| Span {
                trace_id: r.trace_id.clone(),
                span_id: r.span_id.clone(),
                parent_span_id: r.span_id.clone(),
                name: "POST /api/v1/login".into(),
                kind: 2,
                start_time_unix_nano: r.time_unix_nano,
                end_time_unix_nano: r.time_unix_nano + 1_000_000,
                attributes: r.attributes.clone(),
                events: vec![Event {
                    time_unix_nano: r.time_unix_nano + 10,
                    name: "cache.miss".into(),
                    attributes: r.attributes[..2].to_vec(),
                    dropped_attributes_count: 0,
                }],
                ..Default::default()
            })
            .collect();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: logs.resource_logs[0].resource.clone(),
                scope_spans: vec![ScopeSpans {
                    scope: None,
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let rounds = 2_000u32;
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            let d = decode_traces(&request, RECEIVED).unwrap();
            assert_eq!(d.batch.num_rows(), 512);
        }
        let per_sec = f64::from(512 * rounds) / start.elapsed().as_secs_f64();
        println!("decode_traces, 512 per request: {per_sec:.0} spans/s");
    }
}

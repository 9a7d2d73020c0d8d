//! Telemetry built from plain descriptions (`EventSpec`), through the real OTLP decoder: the
//! test events embedded in rules, unit tests and benchmarks all use it.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde::Deserialize;
use vigil_core::decode::{decode_logs, decode_traces};
use vigil_core::{Batch, Signal};

use crate::sigma::{RuleSet, RuleSource};

/// A scalar attribute value as written in YAML/JSON.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl Scalar {
    fn to_any(&self) -> AnyValue {
        let v = match self {
            Scalar::Bool(b) => AnyValueKind::BoolValue(*b),
            Scalar::Int(i) => AnyValueKind::IntValue(*i),
            Scalar::Float(f) => AnyValueKind::DoubleValue(*f),
            Scalar::Str(s) => AnyValueKind::StringValue(s.clone()),
        };
        AnyValue { value: Some(v) }
    }
}

impl From<&str> for Scalar {
    fn from(s: &str) -> Self {
        Scalar::Str(s.to_owned())
    }
}
impl From<i64> for Scalar {
    fn from(i: i64) -> Self {
        Scalar::Int(i)
    }
}

/// One log record or span. Fields a signal does not have are refused when building it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    /// `logs` (default) or `spans`.
    #[serde(default)]
    pub signal: Option<String>,
    pub service: Option<String>,
    /// Offset from the base time, ns.
    #[serde(default)]
    pub offset_ns: i64,
    pub body: Option<String>,
    pub severity_text: Option<String>,
    pub severity_number: Option<i32>,
    pub name: Option<String>,
    /// `SERVER`, `CLIENT`, `PRODUCER`, `CONSUMER`, `INTERNAL`.
    pub kind: Option<String>,
    /// `OK`, `ERROR`, `UNSET`.
    pub status_code: Option<String>,
    pub status_message: Option<String>,
    pub duration_ms: Option<f64>,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub parent_span_id: Option<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub resource: BTreeMap<String, Scalar>,
}

/// An `EventSpec` that cannot become a record.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("unknown signal `{0}` (expected `logs` or `spans`)")]
    Signal(String),
    #[error("`{field}` is not a field of {signal}")]
    Field {
        field: &'static str,
        signal: &'static str,
    },
    #[error("unknown {what} `{value}`")]
    Value { what: &'static str, value: String },
    #[error("`{field}` must be {len} hex digits")]
    Id { field: &'static str, len: usize },
    #[error("cannot decode the event: {0}")]
    Decode(String),
}

impl EventSpec {
    pub fn log(service: &str, body: &str) -> Self {
        Self {
            service: Some(service.into()),
            body: Some(body.into()),
            ..Self::default()
        }
    }

    pub fn span(service: &str, name: &str, kind: &str) -> Self {
        Self {
            signal: Some("spans".into()),
            service: Some(service.into()),
            name: Some(name.into()),
            kind: Some(kind.into()),
            ..Self::default()
        }
    }

    pub fn attr(mut self, key: &str, value: impl Into<Scalar>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }

    pub fn at(mut self, offset_ns: i64) -> Self {
        self.offset_ns = offset_ns;
        self
    }

    pub fn signal(&self) -> Result<Signal, SpecError> {
        match self.signal.as_deref() {
            None | Some("logs") => Ok(Signal::Logs),
            Some("spans") => Ok(Signal::Spans),
            Some(other) => Err(SpecError::Signal(other.into())),
        }
    }

    fn resource(&self) -> Resource {
        let mut attributes = vec![kv(
            "service.name",
            &Scalar::Str(self.service.clone().unwrap_or_default()),
        )];
        if self.service.is_none() {
            attributes.clear();
        }
        attributes.extend(self.resource.iter().map(|(k, v)| kv(k, v)));
        Resource {
            attributes,
            ..Resource::default()
        }
    }

    fn log_record(&self, time_ns: u64) -> Result<LogRecord, SpecError> {
        refuse_fields(
            "logs",
            [
                ("name", self.name.is_some()),
                ("kind", self.kind.is_some()),
                ("status_code", self.status_code.is_some()),
                ("status_message", self.status_message.is_some()),
                ("duration_ms", self.duration_ms.is_some()),
                ("parent_span_id", self.parent_span_id.is_some()),
            ],
        )?;
        Ok(LogRecord {
            time_unix_nano: time_ns,
            observed_time_unix_nano: time_ns,
            severity_number: self.severity_number.unwrap_or(9),
            severity_text: self.severity_text.clone().unwrap_or_default(),
            body: self.body.as_ref().map(|b| Scalar::Str(b.clone()).to_any()),
            attributes: self.attributes.iter().map(|(k, v)| kv(k, v)).collect(),
            trace_id: hex_id(self.trace_id.as_deref(), "trace_id", 16)?.unwrap_or_default(),
            span_id: hex_id(self.span_id.as_deref(), "span_id", 8)?.unwrap_or_default(),
            ..LogRecord::default()
        })
    }

    fn span_record(&self, time_ns: u64, index: usize) -> Result<Span, SpecError> {
        refuse_fields(
            "spans",
            [
                ("body", self.body.is_some()),
                ("severity_text", self.severity_text.is_some()),
                ("severity_number", self.severity_number.is_some()),
            ],
        )?;
        let kind = match self.kind.as_deref().unwrap_or("INTERNAL") {
            "SERVER" => SpanKind::Server,
            "CLIENT" => SpanKind::Client,
            "PRODUCER" => SpanKind::Producer,
            "CONSUMER" => SpanKind::Consumer,
            "INTERNAL" => SpanKind::Internal,
            other => {
                return Err(SpecError::Value {
                    what: "span kind",
                    value: other.into(),
                });
            }
        };
        let code = match self.status_code.as_deref().unwrap_or("UNSET") {
            "OK" => StatusCode::Ok,
            "ERROR" => StatusCode::Error,
            "UNSET" => StatusCode::Unset,
            other => {
                return Err(SpecError::Value {
                    what: "status code",
                    value: other.into(),
                });
            }
        };
        // Distinct, non-zero ids unless given.
        let n = index as u64 + 1;
        let default_trace = [n.to_be_bytes(), 1u64.to_be_bytes()].concat();
        let duration = (self.duration_ms.unwrap_or(1.0) * 1e6).max(0.0) as u64;
        Ok(Span {
            trace_id: hex_id(self.trace_id.as_deref(), "trace_id", 16)?.unwrap_or(default_trace),
            span_id: hex_id(self.span_id.as_deref(), "span_id", 8)?
                .unwrap_or_else(|| n.to_be_bytes().to_vec()),
            parent_span_id: hex_id(self.parent_span_id.as_deref(), "parent_span_id", 8)?
                .unwrap_or_default(),
            name: self.name.clone().unwrap_or_default(),
            kind: kind as i32,
            start_time_unix_nano: time_ns,
            end_time_unix_nano: time_ns + duration,
            attributes: self.attributes.iter().map(|(k, v)| kv(k, v)).collect(),
            status: Some(Status {
                message: self.status_message.clone().unwrap_or_default(),
                code: code as i32,
            }),
            ..Span::default()
        })
    }
}

/// The first of `fields` that is set, as an error: it is not a field of `signal`.
fn refuse_fields<const N: usize>(
    signal: &'static str,
    fields: [(&'static str, bool); N],
) -> Result<(), SpecError> {
    match fields.iter().find(|(_, set)| *set) {
        Some((field, _)) => Err(SpecError::Field { field, signal }),
        None => Ok(()),
    }
}

fn kv(key: &str, value: &Scalar) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(value.to_any()),
        ..KeyValue::default()
    }
}

fn hex_id(
    value: Option<&str>,
    field: &'static str,
    len: usize,
) -> Result<Option<Vec<u8>>, SpecError> {
    value
        .map(|v| {
            hex::decode(v)
                .ok()
                .filter(|b| b.len() == len)
                .ok_or(SpecError::Id {
                    field,
                    len: len * 2,
                })
        })
        .transpose()
}

/// One batch holding `events`, all of one signal, at `base_ns` plus each event's offset.
pub fn batch(events: &[EventSpec], base_ns: i64) -> Result<Batch, SpecError> {
    let signal = match events.first() {
        Some(e) => e.signal()?,
        None => Signal::Logs,
    };
    let time = |e: &EventSpec| u64::try_from(base_ns.saturating_add(e.offset_ns)).unwrap_or(0);
    let decoded = match signal {
        Signal::Spans => {
            let mut resource_spans = Vec::with_capacity(events.len());
            for (i, e) in events.iter().enumerate() {
                if e.signal()? != signal {
                    return Err(SpecError::Signal("mixed".into()));
                }
                resource_spans.push(ResourceSpans {
                    resource: Some(e.resource()),
                    scope_spans: vec![ScopeSpans {
                        spans: vec![e.span_record(time(e), i)?],
                        ..ScopeSpans::default()
                    }],
                    ..ResourceSpans::default()
                });
            }
            let request = ExportTraceServiceRequest { resource_spans };
            decode_traces(&request, base_ns)
        }
        _ => {
            let mut resource_logs = Vec::with_capacity(events.len());
            for e in events {
                if e.signal()? != signal {
                    return Err(SpecError::Signal("mixed".into()));
                }
                resource_logs.push(ResourceLogs {
                    resource: Some(e.resource()),
                    scope_logs: vec![ScopeLogs {
                        log_records: vec![e.log_record(time(e))?],
                        ..ScopeLogs::default()
                    }],
                    ..ResourceLogs::default()
                });
            }
            let request = ExportLogsServiceRequest { resource_logs };
            decode_logs(&request, base_ns)
        }
    };
    let decoded = decoded.map_err(|e| SpecError::Decode(e.to_string()))?;
    match decoded.error_message {
        Some(message) if decoded.rejected > 0 => Err(SpecError::Decode(message)),
        _ => Ok(decoded.batch),
    }
}

/// The shipped rules topped up to `n` with rules of the shapes microservice detections take
/// (substring lists on URLs and bodies, status codes, CIDRs, user agents, query regexes): the
/// detector benchmark's rule set, which the prefilter's differential test also runs.
pub fn topped_up_rules(n: usize) -> Vec<RuleSource> {
    let mut sources = crate::shipped::sources();
    let shipped = RuleSet::load(&sources).map(|r| r.len()).unwrap_or(0);
    for i in 0..n.saturating_sub(shipped) {
        let detection = match i % 4 {
            0 => format!(
                "  s:\n    url.path|contains:\n      - /bench-{i}/a\n      - /bench-{i}/b\n    http.response.status_code: 403\n  condition: s"
            ),
            1 => format!(
                "  s:\n    body|contains|all:\n      - bench-{i}\n      - failed\n  condition: s"
            ),
            2 => format!(
                "  s:\n    user_agent.original|contains: bench-scanner-{i}\n  f:\n    client.address|cidr: 10.0.0.0/8\n  condition: s and not f"
            ),
            _ => format!("  s:\n    url.query|re: 'bench{i}=[0-9]+;'\n  condition: s"),
        };
        sources.push(RuleSource {
            origin: format!("bench-{i}.yml"),
            text: format!(
                "title: bench {i}\nid: bench-{i}\nlogsource:\n  product: opentelemetry\ndetection:\n{detection}\nlevel: low\n"
            ),
        });
    }
    sources
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::BatchView;
    use vigil_core::Redactor;

    #[test]
    fn specs_become_rows_of_the_real_schema() {
        let events = [
            EventSpec::log("checkout", "login failed").attr("http.response.status_code", 401),
            EventSpec::log("cart", "ok").at(5),
        ];
        let redacted = Redactor::disabled()
            .apply(batch(&events, 1_000).expect("batch"))
            .expect("redact");
        let view = BatchView::new(&redacted).expect("view");
        assert_eq!(view.len(), 2);
        assert_eq!(view.service(0), "checkout");
        assert_eq!(view.str(0, "body"), Some("login failed"));
        assert_eq!(view.attribute(0, "http.response.status_code"), Some("401"));
        assert_eq!(view.time_ns(1), 1_005);
    }

    #[test]
    fn span_fields_on_a_log_are_refused() {
        let mut e = EventSpec::log("a", "b");
        e.kind = Some("SERVER".into());
        assert!(matches!(
            batch(&[e], 0),
            Err(SpecError::Field { field: "kind", .. })
        ));
    }

    #[test]
    fn spans_get_kind_status_and_duration() {
        let mut e = EventSpec::span("api", "GET /x", "SERVER");
        e.status_code = Some("ERROR".into());
        e.duration_ms = Some(12.5);
        let redacted = Redactor::disabled()
            .apply(batch(&[e], 1_000).expect("batch"))
            .expect("redact");
        let view = BatchView::new(&redacted).expect("view");
        assert_eq!(view.str(0, "kind"), Some("SERVER"));
        assert_eq!(view.str(0, "status_code"), Some("ERROR"));
        assert_eq!(view.int(0, "duration_ns"), Some(12_500_000));
    }
}

/// Seeded pseudo-random numbers (SplitMix64) for synthetic workloads: a failing test names a
/// reproducible input.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True once in `one_in` draws on average.
    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    pub fn pick<'p>(&mut self, pool: &[&'p str]) -> &'p str {
        pool.get(self.below(pool.len()))
            .copied()
            .unwrap_or_default()
    }

    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Poisson(`mean`) by Knuth's method (fine for means up to a few hundred).
    pub fn poisson(&mut self, mean: f64) -> u64 {
        let limit = (-mean).exp();
        let mut k = 0;
        let mut p = self.unit();
        while p > limit {
            k += 1;
            p *= self.unit();
        }
        k
    }
}

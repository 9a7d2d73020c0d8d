//! OTLP spans to rows of the `spans` table: id and time validation, kind and status names,
//! and span events and links as compact JSON arrays.

use std::fmt::Write;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringBuilder, TimestampNanosecondArray, UInt32Array};
use arrow::error::ArrowError;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};

use super::columns::{
    ContextColumns, FIXED_ROW_BYTES, ResourceContext, ScopeContext, ScopeFields, TextMapBuilder,
    append_attributes, attribute_refs, context_row_bytes, map_builder, map_bytes, non_empty,
    string_bytes, utf8_map,
};
use super::value::{
    append_hex_id, fmt_error, write_json_hex, write_json_str, write_json_string_map,
    write_rfc3339_nanos,
};
use super::{DecodeError, Decoded, Reason, Rejections, finish};
use crate::batch::Signal;

const TRACE_ID_LEN: usize = 16;
const SPAN_ID_LEN: usize = 8;

pub(super) fn decode(
    request: &ExportTraceServiceRequest,
    max_batch_bytes: usize,
) -> Result<Decoded, DecodeError> {
    let arrow = |source| DecodeError::Arrow {
        signal: Signal::Spans,
        source,
    };
    let sizes = Sizes::of(request);
    let mut columns = SpanColumns::with_capacity(&sizes);
    let mut rejections = Rejections::default();
    for resource_spans in &request.resource_spans {
        let resource = resource_spans.resource.as_ref();
        let resource = ResourceContext::new(
            &attribute_refs(resource.map_or(&[][..], |r| &r.attributes)),
            resource.map_or(0, |r| r.dropped_attributes_count),
            &resource_spans.schema_url,
        )
        .map_err(arrow)?;
        for scope_spans in &resource_spans.scope_spans {
            let scope = ScopeContext::new(
                &ScopeFields::of(scope_spans.scope.as_ref()),
                &scope_spans.schema_url,
            )
            .map_err(arrow)?;
            let context_bytes = context_row_bytes(&resource, &scope);
            for span in &scope_spans.spans {
                match check(span) {
                    Err(reason) => rejections.add(reason),
                    Ok(_) if columns.bytes() + context_bytes > max_batch_bytes => {
                        rejections.add(Reason::BatchTooLarge);
                    }
                    Ok(times) => columns
                        .append(span, times, &resource, &scope)
                        .map_err(arrow)?,
                }
            }
        }
    }
    finish(
        Signal::Spans,
        columns.finish().map_err(arrow)?,
        sizes.records,
        &rejections,
    )
}

/// The time columns of a valid span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Times {
    start: i64,
    end: i64,
    duration_ns: i64,
}

/// Validates ids and timestamps; `Err` names why the span is refused.
fn check(span: &Span) -> Result<Times, Reason> {
    if span.trace_id.len() != TRACE_ID_LEN {
        return Err(Reason::TraceIdLength);
    }
    if all_zero(&span.trace_id) {
        return Err(Reason::TraceIdZero);
    }
    if span.span_id.len() != SPAN_ID_LEN {
        return Err(Reason::SpanIdLength);
    }
    if all_zero(&span.span_id) {
        return Err(Reason::SpanIdZero);
    }
    if !matches!(span.parent_span_id.len(), 0 | SPAN_ID_LEN) {
        return Err(Reason::ParentSpanIdLength);
    }
    if span.start_time_unix_nano == 0 {
        return Err(Reason::MissingStartTime);
    }
    let start =
        i64::try_from(span.start_time_unix_nano).map_err(|_| Reason::TimestampOutOfRange)?;
    let end = match span.end_time_unix_nano {
        0 => start,
        ns => i64::try_from(ns).map_err(|_| Reason::TimestampOutOfRange)?,
    };
    Ok(Times {
        start,
        end,
        duration_ns: end.saturating_sub(start),
    })
}

fn all_zero(id: &[u8]) -> bool {
    id.iter().all(|&b| b == 0)
}

fn kind_name(kind: i32) -> &'static str {
    match SpanKind::try_from(kind) {
        Ok(SpanKind::Server) => "SERVER",
        Ok(SpanKind::Client) => "CLIENT",
        Ok(SpanKind::Producer) => "PRODUCER",
        Ok(SpanKind::Consumer) => "CONSUMER",
        Ok(SpanKind::Internal) => "INTERNAL",
        Ok(SpanKind::Unspecified) | Err(_) => "UNSPECIFIED",
    }
}

fn status_code_name(status: Option<&Status>) -> &'static str {
    match status.map(|s| StatusCode::try_from(s.code)) {
        Some(Ok(StatusCode::Ok)) => "OK",
        Some(Ok(StatusCode::Error)) => "ERROR",
        Some(Ok(StatusCode::Unset) | Err(_)) | None => "UNSET",
    }
}

/// `[{"time":"<RFC 3339>","time_unix_nano":N,"name":..,"attributes":{..},"dropped_attributes_count":N}]`
fn write_events<W: Write>(w: &mut W, events: &[Event]) -> std::fmt::Result {
    w.write_str("[")?;
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            w.write_str(",")?;
        }
        w.write_str("{\"time\":\"")?;
        write_rfc3339_nanos(w, event.time_unix_nano)?;
        write!(
            w,
            "\",\"time_unix_nano\":{},\"name\":",
            event.time_unix_nano
        )?;
        write_json_str(w, &event.name)?;
        w.write_str(",\"attributes\":")?;
        write_json_string_map(w, &event.attributes)?;
        write!(
            w,
            ",\"dropped_attributes_count\":{}}}",
            event.dropped_attributes_count
        )?;
    }
    w.write_str("]")
}

/// `[{"trace_id":hex,"span_id":hex,"trace_state":..,"flags":N,"attributes":{..},"dropped_attributes_count":N}]`,
/// ids in hex whatever their length, an empty `trace_state` as null.
fn write_links<W: Write>(w: &mut W, links: &[Link]) -> std::fmt::Result {
    w.write_str("[")?;
    for (i, link) in links.iter().enumerate() {
        if i > 0 {
            w.write_str(",")?;
        }
        w.write_str("{\"trace_id\":")?;
        write_json_hex(w, &link.trace_id)?;
        w.write_str(",\"span_id\":")?;
        write_json_hex(w, &link.span_id)?;
        w.write_str(",\"trace_state\":")?;
        match non_empty(&link.trace_state) {
            Some(state) => write_json_str(w, state)?,
            None => w.write_str("null")?,
        }
        write!(w, ",\"flags\":{},\"attributes\":", link.flags)?;
        write_json_string_map(w, &link.attributes)?;
        write!(
            w,
            ",\"dropped_attributes_count\":{}}}",
            link.dropped_attributes_count
        )?;
    }
    w.write_str("]")
}

/// Row and map entry counts of a request, to size the builders once.
#[derive(Debug, Default)]
struct Sizes {
    records: u64,
    attributes: usize,
    resource_entries: usize,
    scope_entries: usize,
}

impl Sizes {
    fn of(request: &ExportTraceServiceRequest) -> Self {
        let mut sizes = Sizes::default();
        for resource_spans in &request.resource_spans {
            let resource_len = resource_spans
                .resource
                .as_ref()
                .map_or(0, |r| r.attributes.len());
            for scope_spans in &resource_spans.scope_spans {
                let scope_len = scope_spans.scope.as_ref().map_or(0, |s| s.attributes.len());
                let spans = scope_spans.spans.len();
                sizes.records += spans as u64;
                sizes.resource_entries = sizes
                    .resource_entries
                    .saturating_add(spans.saturating_mul(resource_len));
                sizes.scope_entries = sizes
                    .scope_entries
                    .saturating_add(spans.saturating_mul(scope_len));
                sizes.attributes += scope_spans
                    .spans
                    .iter()
                    .map(|s| s.attributes.len())
                    .sum::<usize>();
            }
        }
        sizes
    }

    fn rows(&self) -> usize {
        usize::try_from(self.records).unwrap_or(usize::MAX)
    }
}

/// Builders of the `spans` columns, in schema order.
#[derive(Debug)]
struct SpanColumns {
    time: Vec<i64>,
    end_time: Vec<i64>,
    duration_ns: Vec<i64>,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    parent_span_id: StringBuilder,
    trace_state: StringBuilder,
    flags: Vec<u32>,
    name: StringBuilder,
    kind: StringBuilder,
    status_code: StringBuilder,
    status_message: StringBuilder,
    attributes: TextMapBuilder,
    dropped_attributes_count: Vec<u32>,
    events: StringBuilder,
    dropped_events_count: Vec<u32>,
    links: StringBuilder,
    dropped_links_count: Vec<u32>,
    context: ContextColumns,
}

impl SpanColumns {
    fn with_capacity(sizes: &Sizes) -> Self {
        let rows = sizes.rows();
        Self {
            time: Vec::with_capacity(rows),
            end_time: Vec::with_capacity(rows),
            duration_ns: Vec::with_capacity(rows),
            trace_id: StringBuilder::with_capacity(rows, rows * TRACE_ID_LEN * 2),
            span_id: StringBuilder::with_capacity(rows, rows * SPAN_ID_LEN * 2),
            parent_span_id: StringBuilder::with_capacity(rows, rows * SPAN_ID_LEN * 2),
            trace_state: StringBuilder::with_capacity(rows, 0),
            flags: Vec::with_capacity(rows),
            name: StringBuilder::with_capacity(rows, rows * 24),
            kind: StringBuilder::with_capacity(rows, rows * 8),
            status_code: StringBuilder::with_capacity(rows, rows * 5),
            status_message: StringBuilder::with_capacity(rows, 0),
            attributes: map_builder(rows, sizes.attributes),
            dropped_attributes_count: Vec::with_capacity(rows),
            events: StringBuilder::with_capacity(rows, rows * 2),
            dropped_events_count: Vec::with_capacity(rows),
            links: StringBuilder::with_capacity(rows, rows * 2),
            dropped_links_count: Vec::with_capacity(rows),
            context: ContextColumns::with_capacity(
                rows,
                sizes.resource_entries,
                sizes.scope_entries,
            ),
        }
    }

    fn append(
        &mut self,
        span: &Span,
        times: Times,
        resource: &ResourceContext<'_>,
        scope: &ScopeContext<'_>,
    ) -> Result<(), ArrowError> {
        self.time.push(times.start);
        self.end_time.push(times.end);
        self.duration_ns.push(times.duration_ns);
        append_hex_id(&mut self.trace_id, &span.trace_id)?;
        append_hex_id(&mut self.span_id, &span.span_id)?;
        if span.parent_span_id.is_empty() {
            self.parent_span_id.append_null();
        } else {
            append_hex_id(&mut self.parent_span_id, &span.parent_span_id)?;
        }
        self.trace_state.append_option(non_empty(&span.trace_state));
        self.flags.push(span.flags);
        self.name.append_value(&span.name);
        self.kind.append_value(kind_name(span.kind));
        self.status_code
            .append_value(status_code_name(span.status.as_ref()));
        self.status_message
            .append_option(span.status.as_ref().and_then(|s| non_empty(&s.message)));
        // prost has checked every string of a span, the dropped values too.
        append_attributes(
            &mut self.attributes,
            &attribute_refs(&span.attributes),
            |_| {},
        )?;
        self.dropped_attributes_count
            .push(span.dropped_attributes_count);
        write_events(&mut self.events, &span.events).map_err(fmt_error)?;
        self.events.append_value("");
        self.dropped_events_count.push(span.dropped_events_count);
        write_links(&mut self.links, &span.links).map_err(fmt_error)?;
        self.links.append_value("");
        self.dropped_links_count.push(span.dropped_links_count);
        self.context.append(resource, scope)
    }

    /// Bytes held so far by the variable-length columns.
    fn bytes(&mut self) -> usize {
        self.time.len() * FIXED_ROW_BYTES
            + string_bytes(&self.trace_id)
            + string_bytes(&self.span_id)
            + string_bytes(&self.parent_span_id)
            + string_bytes(&self.trace_state)
            + string_bytes(&self.name)
            + string_bytes(&self.kind)
            + string_bytes(&self.status_code)
            + string_bytes(&self.status_message)
            + map_bytes(&mut self.attributes)
            + string_bytes(&self.events)
            + string_bytes(&self.links)
            + self.context.bytes()
    }

    fn finish(mut self) -> Result<Vec<ArrayRef>, ArrowError> {
        let context = self.context.finish();
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampNanosecondArray::from(self.time).with_timezone("UTC")),
            Arc::new(TimestampNanosecondArray::from(self.end_time).with_timezone("UTC")),
            Arc::new(Int64Array::from(self.duration_ns)),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(UInt32Array::from(self.flags)),
            context.service,
            Arc::new(self.name.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.status_message.finish()),
            Arc::new(utf8_map(self.attributes.finish())?),
            Arc::new(UInt32Array::from(self.dropped_attributes_count)),
            Arc::new(self.events.finish()),
            Arc::new(UInt32Array::from(self.dropped_events_count)),
            Arc::new(self.links.finish()),
            Arc::new(UInt32Array::from(self.dropped_links_count)),
        ];
        columns.extend(context.tail);
        Ok(columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::test_support::{kv, str_col};
    use crate::schema::UNKNOWN_SERVICE;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int64Type, TimestampNanosecondType, UInt32Type};
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

    const TRACE: [u8; 16] = [0xA1; 16];
    const SPAN: [u8; 8] = [0xB2; 8];

    fn span() -> Span {
        Span {
            trace_id: TRACE.to_vec(),
            span_id: SPAN.to_vec(),
            name: "GET /".into(),
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 3_500,
            ..Default::default()
        }
    }
    fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", Value::StringValue("api".into()))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: None,
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }
    fn decode_spans(spans: Vec<Span>) -> Decoded {
        decode(&request(spans), usize::MAX).unwrap()
    }
    fn i64_col(d: &Decoded, name: &str, row: usize) -> i64 {
        let col = d.batch.records().column_by_name(name).unwrap();
        match col.data_type() {
            arrow::datatypes::DataType::Int64 => col.as_primitive::<Int64Type>().value(row),
            _ => col.as_primitive::<TimestampNanosecondType>().value(row),
        }
    }

    #[test]
    fn valid_span_maps_every_field() {
        let mut s = span();
        s.parent_span_id = vec![0x0F; 8];
        s.trace_state = "vendor=1".into();
        s.flags = 0x301;
        s.kind = SpanKind::Server as i32;
        s.status = Some(Status {
            message: "bad".into(),
            code: StatusCode::Error as i32,
        });
        s.attributes = vec![kv("http.status_code", Value::IntValue(500))];
        s.dropped_attributes_count = 1;
        s.dropped_events_count = 2;
        s.dropped_links_count = 3;
        let d = decode_spans(vec![s]);
        assert_eq!((d.batch.num_rows(), d.rejected), (1, 0));
        assert_eq!(i64_col(&d, "time", 0), 1_000);
        assert_eq!(i64_col(&d, "end_time", 0), 3_500);
        assert_eq!(i64_col(&d, "duration_ns", 0), 2_500);
        assert_eq!(str_col(&d, "trace_id").value(0), "a1".repeat(16));
        assert_eq!(str_col(&d, "span_id").value(0), "b2".repeat(8));
        assert_eq!(str_col(&d, "parent_span_id").value(0), "0f".repeat(8));
        assert_eq!(str_col(&d, "trace_state").value(0), "vendor=1");
        assert_eq!(str_col(&d, "service").value(0), "api");
        assert_eq!(str_col(&d, "name").value(0), "GET /");
        assert_eq!(str_col(&d, "kind").value(0), "SERVER");
        assert_eq!(str_col(&d, "status_code").value(0), "ERROR");
        assert_eq!(str_col(&d, "status_message").value(0), "bad");
        assert_eq!(str_col(&d, "events").value(0), "[]");
        assert_eq!(str_col(&d, "links").value(0), "[]");
        let rb = d.batch.records();
        let u32_of = |name: &str| {
            rb.column_by_name(name)
                .unwrap()
                .as_primitive::<UInt32Type>()
                .value(0)
        };
        assert_eq!(u32_of("flags"), 0x301);
        assert_eq!(u32_of("dropped_attributes_count"), 1);
        assert_eq!(u32_of("dropped_events_count"), 2);
        assert_eq!(u32_of("dropped_links_count"), 3);
        let attrs = rb.column_by_name("attributes").unwrap().as_map().value(0);
        assert_eq!(
            attrs.column(0).as_string::<i32>().value(0),
            "http.status_code"
        );
        assert_eq!(attrs.column(1).as_string::<i32>().value(0), "500");
    }

    #[test]
    fn minimal_span_has_nulls_and_defaults() {
        let mut s = span();
        s.name = String::new();
        s.end_time_unix_nano = 0;
        let mut req = request(vec![s]);
        req.resource_spans[0].resource = None;
        let d = decode(&req, usize::MAX).unwrap();
        assert_eq!(i64_col(&d, "end_time", 0), 1_000);
        assert_eq!(i64_col(&d, "duration_ns", 0), 0);
        assert_eq!(str_col(&d, "service").value(0), UNKNOWN_SERVICE);
        assert_eq!(str_col(&d, "name").value(0), "");
        assert_eq!(str_col(&d, "kind").value(0), "UNSPECIFIED");
        assert_eq!(str_col(&d, "status_code").value(0), "UNSET");
        for name in [
            "parent_span_id",
            "trace_state",
            "status_message",
            "scope_name",
            "scope_version",
        ] {
            assert!(str_col(&d, name).is_null(0), "{name}");
        }
    }

    #[test]
    fn end_before_start_keeps_a_negative_duration() {
        let mut s = span();
        s.start_time_unix_nano = 5_000;
        s.end_time_unix_nano = 2_000;
        let d = decode_spans(vec![s]);
        assert_eq!(i64_col(&d, "duration_ns", 0), -3_000);
    }

    #[test]
    fn kinds_and_status_codes_have_names() {
        for (kind, name) in [
            (0, "UNSPECIFIED"),
            (1, "INTERNAL"),
            (2, "SERVER"),
            (3, "CLIENT"),
            (4, "PRODUCER"),
            (5, "CONSUMER"),
            (6, "UNSPECIFIED"),
            (-1, "UNSPECIFIED"),
        ] {
            assert_eq!(kind_name(kind), name);
        }
        let status = |code| {
            Some(Status {
                message: String::new(),
                code,
            })
        };
        assert_eq!(status_code_name(None), "UNSET");
        assert_eq!(status_code_name(status(0).as_ref()), "UNSET");
        assert_eq!(status_code_name(status(1).as_ref()), "OK");
        assert_eq!(status_code_name(status(2).as_ref()), "ERROR");
        assert_eq!(status_code_name(status(9).as_ref()), "UNSET");
    }

    #[test]
    fn invalid_spans_are_rejected_with_reasons() {
        let with = |f: fn(&mut Span)| {
            let mut s = span();
            f(&mut s);
            s
        };
        let spans = vec![
            span(),
            with(|s| s.trace_id = vec![1; 8]),
            with(|s| s.trace_id = vec![0; 16]),
            with(|s| s.trace_id.clear()),
            with(|s| s.span_id = vec![1; 16]),
            with(|s| s.span_id = vec![0; 8]),
            with(|s| s.parent_span_id = vec![1; 4]),
            with(|s| s.start_time_unix_nano = 0),
            with(|s| s.start_time_unix_nano = u64::MAX),
            with(|s| s.end_time_unix_nano = i64::MAX as u64 + 1),
            with(|s| s.end_time_unix_nano = i64::MAX as u64),
        ];
        let d = decode_spans(spans);
        assert_eq!((d.batch.num_rows(), d.rejected), (2, 9));
        assert_eq!(
            d.error_message.as_deref(),
            Some(
                "rejected 9 of 11 spans: 2 with an invalid trace_id length, 1 with an all-zero trace_id, \
                 1 with an invalid span_id length, 1 with an all-zero span_id, \
                 1 with an invalid parent_span_id length, 1 with no start time, \
                 2 with a timestamp out of range"
            )
        );
        assert_eq!(i64_col(&d, "duration_ns", 1), i64::MAX - 1_000);
    }

    #[test]
    fn events_and_links_are_json_arrays() {
        let mut s = span();
        s.events = vec![
            Event {
                time_unix_nano: 1_544_712_660_300_000_000,
                name: "exception \"x\"".into(),
                attributes: vec![
                    kv("exception.type", Value::StringValue("E".into())),
                    kv("n", Value::IntValue(1)),
                ],
                dropped_attributes_count: 2,
            },
            Event::default(),
        ];
        s.links = vec![
            Link {
                trace_id: vec![0xCD; 16],
                span_id: vec![0xEF; 8],
                trace_state: "a=b".into(),
                attributes: vec![kv("k", Value::BoolValue(true))],
                dropped_attributes_count: 1,
                flags: 256,
            },
            // Bad ids in links are kept as they are, the span is not rejected.
            Link {
                trace_id: vec![1, 2, 3],
                span_id: vec![],
                ..Default::default()
            },
        ];
        let d = decode_spans(vec![s]);
        assert_eq!(d.rejected, 0);
        assert_eq!(
            str_col(&d, "events").value(0),
            concat!(
                r#"[{"time":"2018-12-13T14:51:00.300000000Z","time_unix_nano":1544712660300000000,"#,
                r#""name":"exception \"x\"","attributes":{"exception.type":"E","n":"1"},"dropped_attributes_count":2},"#,
                r#"{"time":"1970-01-01T00:00:00.000000000Z","time_unix_nano":0,"name":"","attributes":{},"dropped_attributes_count":0}]"#
            )
        );
        let links = str_col(&d, "links").value(0);
        assert_eq!(
            links,
            concat!(
                r#"[{"trace_id":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","span_id":"efefefefefefefef","trace_state":"a=b","#,
                r#""flags":256,"attributes":{"k":"true"},"dropped_attributes_count":1},"#,
                r#"{"trace_id":"010203","span_id":"","trace_state":null,"flags":0,"attributes":{},"dropped_attributes_count":0}]"#
            )
        );
        let parsed: serde_json::Value = serde_json::from_str(links).unwrap();
        assert_eq!(parsed[0]["attributes"]["k"], "true");
    }

    #[test]
    fn empty_request_gives_an_empty_spans_batch() {
        let d = decode(&ExportTraceServiceRequest::default(), usize::MAX).unwrap();
        assert_eq!(
            (d.batch.num_rows(), d.rejected, d.error_message),
            (0, 0, None)
        );
        assert_eq!(d.batch.signal(), Signal::Spans);
    }
}

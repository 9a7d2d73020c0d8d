//! OTLP log records to rows of the `logs` table, read straight from the protobuf wire format:
//! validation of ids and timestamps, then one append per column, with resource and scope values
//! converted once per group.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, Int32Array, StringBuilder, TimestampNanosecondArray, UInt32Array,
};
use arrow::error::ArrowError;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::EntityRef;
use prost::Message;

use super::columns::{
    ContextColumns, FIXED_ROW_BYTES, ResourceContext, ScopeContext, ScopeFields, TextMapBuilder,
    append_attributes, context_row_bytes, map_builder, map_bytes, non_empty, string_bytes, utf8,
    utf8_map,
};
use super::value::{append_body, append_hex_id};
use super::wire::{
    Fields, KeyValueRef, Text, ValueRef, WireError, WireResult, check_attributes, check_text,
    read_attribute, replace_text, set_once,
};
use super::{DecodeError, Decoded, Reason, Rejections, WireDecodeError, finish};
use crate::batch::Signal;

const TRACE_ID_LEN: usize = 16;
const SPAN_ID_LEN: usize = 8;

/// Decodes a prost-built request through its protobuf encoding, which is canonical, so that
/// one decoder serves protobuf bodies, JSON bodies and tests alike.
pub(super) fn decode(
    request: &ExportLogsServiceRequest,
    received_at_ns: i64,
    max_batch_bytes: usize,
) -> Result<Decoded, DecodeError> {
    decode_protobuf(&request.encode_to_vec(), received_at_ns, max_batch_bytes).map_err(
        |e| match e {
            WireDecodeError::Build(e) => e,
            WireDecodeError::Wire(source) => DecodeError::Reencoded {
                signal: Signal::Logs,
                source: Box::new(source),
            },
        },
    )
}

/// Decodes an `ExportLogsServiceRequest` body in place (see [`super::wire`]).
pub(super) fn decode_protobuf(
    body: &[u8],
    received_at_ns: i64,
    max_batch_bytes: usize,
) -> Result<Decoded, WireDecodeError> {
    let arrow = |source| {
        WireDecodeError::Build(DecodeError::Arrow {
            signal: Signal::Logs,
            source,
        })
    };
    let sizes = Sizes::of(body)?;
    let mut columns = LogColumns::with_capacity(&sizes);
    let mut rejections = Rejections::default();
    // Scratch space for one record's attributes, reused across records.
    let mut attributes = Vec::new();
    let mut request = Fields::new(body);
    while let Some((number, field)) = request.next_field()? {
        if number != 1 {
            continue;
        }
        let resource_logs = field.bytes()?;
        let (resource, schema_url) = read_resource_logs_head(resource_logs)?;
        let resource = ResourceContext::new(
            &resource.attributes,
            resource.dropped_attributes_count,
            schema_url,
        )
        .map_err(arrow)?;
        let mut groups = Fields::new(resource_logs);
        while let Some((number, field)) = groups.next_field()? {
            if number != 2 {
                continue;
            }
            let scope_logs = field.bytes()?;
            let (scope, schema_url) = read_scope_logs_head(scope_logs)?;
            let scope = ScopeContext::new(&scope, schema_url).map_err(arrow)?;
            let context_bytes = context_row_bytes(&resource, &scope);
            let mut records = Fields::new(scope_logs);
            while let Some((number, field)) = records.next_field()? {
                if number != 2 {
                    continue;
                }
                attributes.clear();
                let record = Record::read(field.bytes()?, &mut attributes)?;
                let checked = check(&record, received_at_ns).and_then(|times| {
                    if columns.bytes() + context_bytes > max_batch_bytes {
                        Err(Reason::BatchTooLarge)
                    } else {
                        Ok(times)
                    }
                });
                match checked {
                    Err(reason) => {
                        record.check_text(&attributes)?;
                        rejections.add(reason);
                    }
                    Ok(times) => columns
                        .append(&record, &attributes, times, &resource, &scope)
                        .map_err(arrow)?,
                }
            }
        }
    }
    // Text that is not UTF-8 is a malformed request: prost says where.
    let columns = columns.finish().map_err(|_| WireError::Malformed)?;
    finish(Signal::Logs, columns, sizes.records, &rejections).map_err(WireDecodeError::Build)
}

/// A `Resource` read in place.
#[derive(Debug, Default)]
struct ResourceFields<'a> {
    attributes: Vec<KeyValueRef<'a>>,
    dropped_attributes_count: u32,
}

impl<'a> ResourceFields<'a> {
    fn read(message: &'a [u8]) -> WireResult<Self> {
        let mut resource = Self::default();
        let mut fields = Fields::new(message);
        while let Some((number, field)) = fields.next_field()? {
            match number {
                1 => read_attribute(&mut resource.attributes, field.bytes()?)?,
                2 => resource.dropped_attributes_count = field.uint32()?,
                // Entity references are not stored, but prost would refuse a malformed one.
                3 => {
                    EntityRef::decode(field.bytes()?).map_err(|_| WireError::Malformed)?;
                }
                _ => {}
            }
        }
        check_attributes(&resource.attributes)?;
        Ok(resource)
    }
}

/// The resource and schema URL of a `ResourceLogs`, which apply to all its scope groups
/// wherever they are on the wire.
fn read_resource_logs_head(message: &[u8]) -> WireResult<(ResourceFields<'_>, &str)> {
    let (mut resource, mut schema_url) = (None, "");
    let mut fields = Fields::new(message);
    while let Some((number, field)) = fields.next_field()? {
        match number {
            1 => set_once(&mut resource, ResourceFields::read(field.bytes()?)?)?,
            3 => schema_url = field.string()?,
            _ => {}
        }
    }
    Ok((resource.unwrap_or_default(), schema_url))
}

/// The scope and schema URL of a `ScopeLogs`.
fn read_scope_logs_head(message: &[u8]) -> WireResult<(ScopeFields<'_>, &str)> {
    let (mut scope, mut schema_url) = (None, "");
    let mut fields = Fields::new(message);
    while let Some((number, field)) = fields.next_field()? {
        match number {
            1 => set_once(&mut scope, read_scope(field.bytes()?)?)?,
            3 => schema_url = field.string()?,
            _ => {}
        }
    }
    Ok((scope.unwrap_or_default(), schema_url))
}

/// An `InstrumentationScope` read in place.
fn read_scope(message: &[u8]) -> WireResult<ScopeFields<'_>> {
    let mut scope = ScopeFields::default();
    let mut fields = Fields::new(message);
    while let Some((number, field)) = fields.next_field()? {
        match number {
            1 => scope.name = field.string()?,
            2 => scope.version = field.string()?,
            3 => read_attribute(&mut scope.attributes, field.bytes()?)?,
            4 => scope.dropped_attributes_count = field.uint32()?,
            _ => {}
        }
    }
    check_attributes(&scope.attributes)?;
    Ok(scope)
}

/// A `LogRecord` read in place; its attributes go to a separate, reused vector.
#[derive(Debug, Default)]
struct Record<'a> {
    time_unix_nano: u64,
    observed_time_unix_nano: u64,
    severity_number: i32,
    severity_text: Text<'a>,
    body: Option<ValueRef<'a>>,
    dropped_attributes_count: u32,
    flags: u32,
    trace_id: &'a [u8],
    span_id: &'a [u8],
    event_name: Text<'a>,
}

impl<'a> Record<'a> {
    fn read(message: &'a [u8], attributes: &mut Vec<KeyValueRef<'a>>) -> WireResult<Self> {
        let mut record = Self::default();
        let mut fields = Fields::new(message);
        while let Some((number, field)) = fields.next_field()? {
            match number {
                1 => record.time_unix_nano = field.fixed64()?,
                2 => record.severity_number = field.int32()?,
                3 => replace_text(&mut record.severity_text, field.text()?)?,
                5 => set_once(&mut record.body, ValueRef::read(field.bytes()?)?)?,
                6 => read_attribute(attributes, field.bytes()?)?,
                7 => record.dropped_attributes_count = field.uint32()?,
                8 => record.flags = field.fixed32()?,
                9 => record.trace_id = field.bytes()?,
                10 => record.span_id = field.bytes()?,
                11 => record.observed_time_unix_nano = field.fixed64()?,
                12 => replace_text(&mut record.event_name, field.text()?)?,
                _ => {}
            }
        }
        Ok(record)
    }

    /// Checks the text of a record that is not stored (see [`Text`]).
    fn check_text(&self, attributes: &[KeyValueRef<'_>]) -> WireResult<()> {
        check_text(self.severity_text)?;
        check_text(self.event_name)?;
        if let Some(body) = self.body.as_ref().and_then(ValueRef::as_text) {
            check_text(body)?;
        }
        check_attributes(attributes)
    }
}

/// The two timestamps of a valid record, fallbacks applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Times {
    time: i64,
    observed_time: i64,
}

/// Validates ids and timestamps; `Err` names why the record is refused.
fn check(record: &Record<'_>, received_at_ns: i64) -> Result<Times, Reason> {
    if !matches!(record.trace_id.len(), 0 | TRACE_ID_LEN) {
        return Err(Reason::TraceIdLength);
    }
    if !matches!(record.span_id.len(), 0 | SPAN_ID_LEN) {
        return Err(Reason::SpanIdLength);
    }
    let observed_time = match record.observed_time_unix_nano {
        0 => received_at_ns,
        ns => i64::try_from(ns).map_err(|_| Reason::TimestampOutOfRange)?,
    };
    let time = match record.time_unix_nano {
        0 => observed_time,
        ns => i64::try_from(ns).map_err(|_| Reason::TimestampOutOfRange)?,
    };
    Ok(Times {
        time,
        observed_time,
    })
}

/// Row and byte counts of a request, to size the builders once. Byte counts are of the
/// encoded fields, a close upper bound of what their columns will hold.
#[derive(Debug, Default)]
struct Sizes {
    records: u64,
    attributes: usize,
    resource_entries: usize,
    scope_entries: usize,
    body_bytes: usize,
    with_trace_id: usize,
}

impl Sizes {
    /// Counts by field tags and lengths alone; the contents are read by the decoder.
    fn of(body: &[u8]) -> WireResult<Self> {
        let mut sizes = Sizes::default();
        for_each_field(body, 1, |resource_logs| {
            let mut resource_len = 0;
            for_each_field(resource_logs, 1, |resource| {
                for_each_field(resource, 1, |_| {
                    resource_len += 1;
                    Ok(())
                })
            })?;
            for_each_field(resource_logs, 2, |scope_logs| {
                let mut scope_len = 0;
                for_each_field(scope_logs, 1, |scope| {
                    for_each_field(scope, 3, |_| {
                        scope_len += 1;
                        Ok(())
                    })
                })?;
                for_each_field(scope_logs, 2, |record| {
                    sizes.records += 1;
                    sizes.resource_entries = sizes.resource_entries.saturating_add(resource_len);
                    sizes.scope_entries = sizes.scope_entries.saturating_add(scope_len);
                    let mut fields = Fields::new(record);
                    while let Some((number, field)) = fields.next_field()? {
                        match number {
                            5 => sizes.body_bytes += field.bytes()?.len(),
                            6 => sizes.attributes += 1,
                            9 => sizes.with_trace_id += 1,
                            _ => {}
                        }
                    }
                    Ok(())
                })
            })
        })?;
        Ok(sizes)
    }

    fn rows(&self) -> usize {
        usize::try_from(self.records).unwrap_or(usize::MAX)
    }
}

/// Calls `f` on the contents of each length-delimited field `number` of `message`.
fn for_each_field<'a>(
    message: &'a [u8],
    number: u32,
    mut f: impl FnMut(&'a [u8]) -> WireResult<()>,
) -> WireResult<()> {
    let mut fields = Fields::new(message);
    while let Some((n, field)) = fields.next_field()? {
        if n == number {
            f(field.bytes()?)?;
        }
    }
    Ok(())
}

/// Builders of the `logs` columns, in schema order.
#[derive(Debug)]
struct LogColumns {
    time: Vec<i64>,
    observed_time: Vec<i64>,
    severity_number: Vec<i32>,
    severity_text: BinaryBuilder,
    body: BinaryBuilder,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    flags: Vec<u32>,
    event_name: BinaryBuilder,
    attributes: TextMapBuilder,
    dropped_attributes_count: Vec<u32>,
    context: ContextColumns,
    /// Text read but not stored, to be checked with the columns (see [`Text`]).
    unstored: BinaryBuilder,
}

impl LogColumns {
    fn with_capacity(sizes: &Sizes) -> Self {
        let rows = sizes.rows();
        Self {
            time: Vec::with_capacity(rows),
            observed_time: Vec::with_capacity(rows),
            severity_number: Vec::with_capacity(rows),
            severity_text: BinaryBuilder::with_capacity(rows, rows * 5),
            body: BinaryBuilder::with_capacity(rows, sizes.body_bytes),
            trace_id: StringBuilder::with_capacity(rows, sizes.with_trace_id * TRACE_ID_LEN * 2),
            span_id: StringBuilder::with_capacity(rows, sizes.with_trace_id * SPAN_ID_LEN * 2),
            flags: Vec::with_capacity(rows),
            event_name: BinaryBuilder::with_capacity(rows, 0),
            attributes: map_builder(rows, sizes.attributes),
            dropped_attributes_count: Vec::with_capacity(rows),
            context: ContextColumns::with_capacity(
                rows,
                sizes.resource_entries,
                sizes.scope_entries,
            ),
            unstored: BinaryBuilder::with_capacity(0, 0),
        }
    }

    fn append(
        &mut self,
        record: &Record<'_>,
        attributes: &[KeyValueRef<'_>],
        times: Times,
        resource: &ResourceContext<'_>,
        scope: &ScopeContext<'_>,
    ) -> Result<(), ArrowError> {
        self.time.push(times.time);
        self.observed_time.push(times.observed_time);
        self.severity_number.push(record.severity_number);
        self.severity_text
            .append_option(non_empty(record.severity_text));
        append_body(
            &mut self.body,
            record.body.as_ref().unwrap_or(&ValueRef::Empty),
        )?;
        append_optional_id(&mut self.trace_id, record.trace_id)?;
        append_optional_id(&mut self.span_id, record.span_id)?;
        self.flags.push(record.flags);
        self.event_name.append_option(non_empty(record.event_name));
        append_attributes(&mut self.attributes, attributes, |text| {
            self.unstored.append_value(text);
        })?;
        self.dropped_attributes_count
            .push(record.dropped_attributes_count);
        self.context.append(resource, scope)
    }
    /// Bytes held so far by the variable-length columns.
    fn bytes(&mut self) -> usize {
        self.time.len() * FIXED_ROW_BYTES
            + string_bytes(&self.severity_text)
            + string_bytes(&self.body)
            + string_bytes(&self.trace_id)
            + string_bytes(&self.span_id)
            + string_bytes(&self.event_name)
            + map_bytes(&mut self.attributes)
            + self.context.bytes()
    }

    /// The columns, each text column checked to be UTF-8 (see [`Text`]).
    fn finish(mut self) -> Result<Vec<ArrayRef>, ArrowError> {
        utf8(self.unstored.finish())?;
        let context = self.context.finish();
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampNanosecondArray::from(self.time).with_timezone("UTC")),
            Arc::new(TimestampNanosecondArray::from(self.observed_time).with_timezone("UTC")),
            context.service,
            Arc::new(Int32Array::from(self.severity_number)),
            Arc::new(utf8(self.severity_text.finish())?),
            Arc::new(utf8(self.body.finish())?),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(UInt32Array::from(self.flags)),
            Arc::new(utf8(self.event_name.finish())?),
            Arc::new(utf8_map(self.attributes.finish())?),
            Arc::new(UInt32Array::from(self.dropped_attributes_count)),
        ];
        columns.extend(context.tail);
        Ok(columns)
    }
}

/// Hex of an id, or null when the id is empty.
fn append_optional_id(builder: &mut StringBuilder, id: &[u8]) -> Result<(), ArrowError> {
    if id.is_empty() {
        builder.append_null();
        Ok(())
    } else {
        append_hex_id(builder, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::test_support::{kv, map_col, map_entries as entries, str_col};
    use crate::schema::UNKNOWN_SERVICE;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int32Type, TimestampNanosecondType, UInt32Type};
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, ArrayValue, InstrumentationScope, KeyValue,
    };
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;

    const RECEIVED: i64 = 1_700_000_000_000_000_000;

    fn string(s: &str) -> Value {
        Value::StringValue(s.into())
    }
    fn request(
        resource: Option<Resource>,
        scope: Option<InstrumentationScope>,
        records: Vec<LogRecord>,
    ) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource,
                scope_logs: vec![ScopeLogs {
                    scope,
                    log_records: records,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }
    fn decode_one(record: LogRecord) -> Decoded {
        decode(&request(None, None, vec![record]), RECEIVED, usize::MAX).unwrap()
    }
    fn ts(d: &Decoded, name: &str) -> i64 {
        d.batch
            .records()
            .column_by_name(name)
            .unwrap()
            .as_primitive::<TimestampNanosecondType>()
            .value(0)
    }

    #[test]
    fn full_record_maps_every_field() {
        let resource = Resource {
            attributes: vec![
                kv("service.name", string("checkout")),
                kv("host.name", string("h1")),
            ],
            dropped_attributes_count: 2,
            entity_refs: vec![],
        };
        let scope = InstrumentationScope {
            name: "lib".into(),
            version: "1.2".into(),
            attributes: vec![kv("scope.attr", Value::IntValue(5))],
            dropped_attributes_count: 3,
        };
        let record = LogRecord {
            time_unix_nano: 10,
            observed_time_unix_nano: 20,
            severity_number: 17,
            severity_text: "ERROR".into(),
            body: Some(AnyValue {
                value: Some(string("boom")),
            }),
            attributes: vec![
                kv("user.id", Value::IntValue(42)),
                kv("ok", Value::BoolValue(false)),
            ],
            dropped_attributes_count: 4,
            flags: 1,
            trace_id: vec![0xAB; 16],
            span_id: vec![0x0C; 8],
            event_name: "login".into(),
        };
        let mut req = request(Some(resource), Some(scope), vec![record]);
        req.resource_logs[0].schema_url = "https://r".into();
        req.resource_logs[0].scope_logs[0].schema_url = "https://s".into();
        let d = decode(&req, RECEIVED, usize::MAX).unwrap();
        assert_eq!(
            (d.batch.num_rows(), d.rejected, d.error_message.as_deref()),
            (1, 0, None)
        );
        let rb = d.batch.records();
        assert_eq!(ts(&d, "time"), 10);
        assert_eq!(ts(&d, "observed_time"), 20);
        assert_eq!(str_col(&d, "service").value(0), "checkout");
        assert_eq!(
            rb.column_by_name("severity_number")
                .unwrap()
                .as_primitive::<Int32Type>()
                .value(0),
            17
        );
        assert_eq!(str_col(&d, "severity_text").value(0), "ERROR");
        assert_eq!(str_col(&d, "body").value(0), "boom");
        assert_eq!(str_col(&d, "trace_id").value(0), "ab".repeat(16));
        assert_eq!(str_col(&d, "span_id").value(0), "0c".repeat(8));
        assert_eq!(str_col(&d, "event_name").value(0), "login");
        let u32_of = |name: &str| {
            rb.column_by_name(name)
                .unwrap()
                .as_primitive::<UInt32Type>()
                .value(0)
        };
        assert_eq!(u32_of("flags"), 1);
        assert_eq!(u32_of("dropped_attributes_count"), 4);
        assert_eq!(u32_of("resource_dropped_attributes_count"), 2);
        assert_eq!(u32_of("scope_dropped_attributes_count"), 3);
        assert_eq!(
            entries(map_col(&d, "attributes"), 0),
            vec![
                ("user.id".into(), Some("42".into())),
                ("ok".into(), Some("false".into()))
            ]
        );
        assert_eq!(
            entries(map_col(&d, "resource"), 0),
            vec![
                ("service.name".into(), Some("checkout".into())),
                ("host.name".into(), Some("h1".into()))
            ]
        );
        assert_eq!(
            entries(map_col(&d, "scope_attributes"), 0),
            vec![("scope.attr".into(), Some("5".into()))]
        );
        assert_eq!(str_col(&d, "resource_schema_url").value(0), "https://r");
        assert_eq!(str_col(&d, "scope_name").value(0), "lib");
        assert_eq!(str_col(&d, "scope_version").value(0), "1.2");
        assert_eq!(str_col(&d, "scope_schema_url").value(0), "https://s");
    }

    #[test]
    fn empty_record_gets_fallbacks_and_nulls() {
        let d = decode_one(LogRecord::default());
        assert_eq!(d.batch.num_rows(), 1);
        assert_eq!(ts(&d, "observed_time"), RECEIVED);
        assert_eq!(ts(&d, "time"), RECEIVED);
        assert_eq!(str_col(&d, "service").value(0), UNKNOWN_SERVICE);
        for name in [
            "severity_text",
            "body",
            "trace_id",
            "span_id",
            "event_name",
            "resource_schema_url",
            "scope_name",
            "scope_version",
            "scope_schema_url",
        ] {
            assert!(str_col(&d, name).is_null(0), "{name} should be null");
        }
        for name in ["attributes", "resource", "scope_attributes"] {
            let map = map_col(&d, name);
            assert!(map.is_valid(0));
            assert_eq!(map.value_length(0), 0, "{name} should be empty");
        }
    }

    #[test]
    fn time_falls_back_to_observed_time() {
        let d = decode_one(LogRecord {
            observed_time_unix_nano: 77,
            ..Default::default()
        });
        assert_eq!((ts(&d, "time"), ts(&d, "observed_time")), (77, 77));
        let d = decode_one(LogRecord {
            time_unix_nano: 5,
            ..Default::default()
        });
        assert_eq!((ts(&d, "time"), ts(&d, "observed_time")), (5, RECEIVED));
        let d = decode_one(LogRecord {
            time_unix_nano: i64::MAX as u64,
            ..Default::default()
        });
        assert_eq!(ts(&d, "time"), i64::MAX);
    }

    #[test]
    fn timestamps_beyond_i64_are_rejected() {
        for record in [
            LogRecord {
                time_unix_nano: i64::MAX as u64 + 1,
                ..Default::default()
            },
            LogRecord {
                observed_time_unix_nano: u64::MAX,
                ..Default::default()
            },
        ] {
            let d = decode_one(record);
            assert_eq!((d.batch.num_rows(), d.rejected), (0, 1));
            assert_eq!(
                d.error_message.as_deref(),
                Some("rejected 1 of 1 log record: 1 with a timestamp out of range")
            );
        }
    }

    #[test]
    fn id_lengths_are_checked_and_counted_per_reason() {
        let records = vec![
            LogRecord {
                trace_id: vec![1; 15],
                ..Default::default()
            },
            LogRecord {
                trace_id: vec![1; 17],
                span_id: vec![1; 3],
                ..Default::default()
            },
            LogRecord {
                span_id: vec![1; 16],
                ..Default::default()
            },
            LogRecord {
                trace_id: vec![0; 16],
                span_id: vec![0; 8],
                ..Default::default()
            },
            LogRecord {
                span_id: vec![0xff; 8],
                ..Default::default()
            },
        ];
        let d = decode(&request(None, None, records), RECEIVED, usize::MAX).unwrap();
        assert_eq!((d.batch.num_rows(), d.rejected), (2, 3));
        assert_eq!(
            d.error_message.as_deref(),
            Some(
                "rejected 3 of 5 log records: 2 with an invalid trace_id length, 1 with an invalid span_id length"
            )
        );
        // Logs may carry all-zero ids; they are kept as they came.
        let trace = str_col(&d, "trace_id");
        assert_eq!(trace.value(0), "0".repeat(32));
        assert!(trace.is_null(1));
        assert_eq!(str_col(&d, "span_id").value(1), "ffffffffffffffff");
    }

    #[test]
    fn non_string_bodies_are_json() {
        let body = |value: Option<Value>| {
            let d = decode_one(LogRecord {
                body: Some(AnyValue { value }),
                ..Default::default()
            });
            let col = str_col(&d, "body");
            col.is_valid(0).then(|| col.value(0).to_owned())
        };
        assert_eq!(
            body(Some(string("plain \"text\""))).as_deref(),
            Some("plain \"text\"")
        );
        assert_eq!(body(Some(Value::IntValue(42))).as_deref(), Some("42"));
        assert_eq!(body(Some(Value::BoolValue(true))).as_deref(), Some("true"));
        assert_eq!(body(Some(Value::DoubleValue(0.5))).as_deref(), Some("0.5"));
        assert_eq!(
            body(Some(Value::BytesValue(vec![1, 2, 3]))).as_deref(),
            Some("\"AQID\"")
        );
        assert_eq!(
            body(Some(Value::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(string("a"))
                }]
            })))
            .as_deref(),
            Some("[\"a\"]")
        );
        assert_eq!(body(None), None);
    }

    #[test]
    fn attribute_maps_keep_last_duplicate_and_null_for_empty_values() {
        let d = decode_one(LogRecord {
            attributes: vec![
                kv("k", string("first")),
                KeyValue {
                    key: "none".into(),
                    value: None,
                    key_strindex: 0,
                },
                KeyValue {
                    key: "empty".into(),
                    value: Some(AnyValue { value: None }),
                    key_strindex: 0,
                },
                kv("k", string("second")),
            ],
            ..Default::default()
        });
        assert_eq!(
            entries(map_col(&d, "attributes"), 0),
            vec![
                ("none".into(), None),
                ("empty".into(), None),
                ("k".into(), Some("second".into()))
            ]
        );
    }

    #[test]
    fn resource_and_scope_repeat_on_every_record_of_their_group() {
        let mut req = request(
            Some(Resource {
                attributes: vec![kv("service.name", string("a"))],
                ..Default::default()
            }),
            None,
            vec![LogRecord::default(), LogRecord::default()],
        );
        req.resource_logs.push(ResourceLogs {
            resource: None,
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "s".into(),
                    ..Default::default()
                }),
                log_records: vec![LogRecord::default()],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        });
        let d = decode(&req, RECEIVED, usize::MAX).unwrap();
        let service = str_col(&d, "service");
        assert_eq!(
            (service.value(0), service.value(1), service.value(2)),
            ("a", "a", UNKNOWN_SERVICE)
        );
        assert_eq!(entries(map_col(&d, "resource"), 1).len(), 1);
        assert_eq!(entries(map_col(&d, "resource"), 2).len(), 0);
        assert!(str_col(&d, "scope_name").is_null(1));
        assert_eq!(str_col(&d, "scope_name").value(2), "s");
    }

    #[test]
    fn records_past_the_byte_limit_are_rejected() {
        let big = "x".repeat(1000);
        let records = (0..10)
            .map(|_| LogRecord {
                body: Some(AnyValue {
                    value: Some(string(&big)),
                }),
                ..Default::default()
            })
            .collect();
        let d = decode(&request(None, None, records), RECEIVED, 3500).unwrap();
        // The limit is checked before each record: at most one record's worth over it.
        assert!(
            (2..=4).contains(&d.batch.num_rows()),
            "{}",
            d.batch.num_rows()
        );
        assert_eq!(d.batch.num_rows() as u64 + d.rejected, 10);
        assert!(
            d.error_message
                .unwrap()
                .ends_with("over the decoded batch size limit")
        );
    }

    #[test]
    fn a_large_resource_on_many_records_is_bounded_by_the_byte_limit() {
        // 10k resource attributes on each of 10k records would be 100M map entries.
        let resource = Resource {
            attributes: (0..10_000)
                .map(|i| kv(&format!("key.{i}"), Value::IntValue(i)))
                .collect(),
            ..Default::default()
        };
        let records = vec![LogRecord::default(); 10_000];
        let d = decode(&request(Some(resource), None, records), RECEIVED, 1 << 20).unwrap();
        assert!(d.batch.num_rows() < 20, "{}", d.batch.num_rows());
        assert_eq!(d.batch.num_rows() as u64 + d.rejected, 10_000);
        assert!(
            d.error_message
                .unwrap()
                .contains("over the decoded batch size limit")
        );
    }

    #[test]
    fn empty_requests_give_empty_batches() {
        for req in [
            ExportLogsServiceRequest::default(),
            request(None, None, vec![]),
        ] {
            let d = decode(&req, RECEIVED, usize::MAX).unwrap();
            assert_eq!(
                (d.batch.num_rows(), d.rejected, d.error_message),
                (0, 0, None)
            );
            assert_eq!(d.batch.signal(), Signal::Logs);
        }
    }
}

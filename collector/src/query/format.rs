//! Wire formats of query answers (JSON, CSV, NDJSON, Arrow IPC) and the CLI's plain-text table.
//! Timestamps are RFC 3339 in UTC everywhere text is produced; maps become JSON objects.

use std::io::Write;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, GenericListArray, MapArray, OffsetSizeTrait, RecordBatch, StringArray,
};
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, Field, Float16Type, Float32Type, Float64Type, Int8Type,
    Int16Type, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow::error::ArrowError;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, SecondsFormat};
use serde_json::{Map, Number, Value};

use super::{OutputFormat, QueryError, QueryResult};

pub const CONTENT_TYPE_JSON: &str = "application/json";
pub const CONTENT_TYPE_CSV: &str = "text/csv; charset=utf-8";
pub const CONTENT_TYPE_NDJSON: &str = "application/x-ndjson";
pub const CONTENT_TYPE_ARROW: &str = "application/vnd.apache.arrow.stream";

/// Encodes an answer: returns (content type, body).
pub fn encode(
    result: &QueryResult,
    format: OutputFormat,
) -> Result<(&'static str, Vec<u8>), QueryError> {
    match format {
        OutputFormat::Json => Ok((CONTENT_TYPE_JSON, encode_json(result)?)),
        OutputFormat::Ndjson => Ok((CONTENT_TYPE_NDJSON, encode_ndjson(result)?)),
        OutputFormat::Csv => Ok((CONTENT_TYPE_CSV, encode_csv(result)?)),
        OutputFormat::Arrow => Ok((CONTENT_TYPE_ARROW, encode_arrow(result)?)),
    }
}

/// Plain-text table for the CLI, followed by a `(N rows)` line.
pub fn render_table(result: &QueryResult) -> String {
    let rendered = textual_batches(result).and_then(|(schema, batches)| {
        arrow::util::pretty::pretty_format_batches_with_schema(schema, &batches)
            .map(|t| t.to_string())
            .map_err(encode_error)
    });
    match rendered {
        Ok(table) => {
            let rows = result.row_count();
            let noun = if rows == 1 { "row" } else { "rows" };
            format!("{table}\n({rows} {noun})")
        }
        Err(e) => format!("cannot render the result as a table: {e}"),
    }
}

/// `{"columns":[{"name","type"}],"rows":[[..]],"row_count":N,"elapsed_ms":T}`.
fn encode_json(result: &QueryResult) -> Result<Vec<u8>, QueryError> {
    let mut out = Vec::with_capacity(1024);
    let columns: Vec<Value> = result
        .schema
        .fields()
        .iter()
        .map(|f| {
            let mut column = Map::new();
            column.insert("name".into(), Value::String(f.name().clone()));
            column.insert("type".into(), Value::String(f.data_type().to_string()));
            Value::Object(column)
        })
        .collect();
    out.extend_from_slice(b"{\"columns\":");
    serde_json::to_writer(&mut out, &columns).map_err(encode_error)?;
    out.extend_from_slice(b",\"rows\":[");
    let mut first = true;
    for batch in &result.batches {
        let columns = batch_values(batch)?;
        for row in 0..batch.num_rows() {
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'[');
            for (i, column) in columns.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut out, column.get(row).unwrap_or(&Value::Null))
                    .map_err(encode_error)?;
            }
            out.push(b']');
        }
    }
    out.extend_from_slice(b"],\"row_count\":");
    out.extend_from_slice(result.row_count().to_string().as_bytes());
    out.extend_from_slice(b",\"elapsed_ms\":");
    serde_json::to_writer(&mut out, &elapsed_ms(result)).map_err(encode_error)?;
    out.push(b'}');
    Ok(out)
}

/// Milliseconds with microsecond precision.
fn elapsed_ms(result: &QueryResult) -> Value {
    let ms = (result.elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0;
    Number::from_f64(ms).map_or(Value::Null, Value::Number)
}

/// One JSON object per row; keys are the column names, a repeated name gets a `_2`, `_3`…
/// suffix so no value is lost.
fn encode_ndjson(result: &QueryResult) -> Result<Vec<u8>, QueryError> {
    let keys = unique_names(&result.schema);
    let mut out = Vec::with_capacity(1024);
    for batch in &result.batches {
        let columns = batch_values(batch)?;
        for row in 0..batch.num_rows() {
            out.push(b'{');
            for (i, (key, column)) in keys.iter().zip(&columns).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut out, key).map_err(encode_error)?;
                out.push(b':');
                serde_json::to_writer(&mut out, column.get(row).unwrap_or(&Value::Null))
                    .map_err(encode_error)?;
            }
            out.extend_from_slice(b"}\n");
        }
    }
    Ok(out)
}

fn unique_names(schema: &Schema) -> Vec<String> {
    let mut names: Vec<String> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let mut name = field.name().clone();
        let mut n = 1;
        while names.contains(&name) {
            n += 1;
            name = format!("{}_{n}", field.name());
        }
        names.push(name);
    }
    names
}

/// RFC 4180 CSV with a header row. Timestamps are RFC 3339, maps/lists/structs JSON text,
/// nulls empty fields.
fn encode_csv(result: &QueryResult) -> Result<Vec<u8>, QueryError> {
    let (schema, batches) = textual_batches(result)?;
    let mut writer = arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(Vec::new());
    if batches.is_empty() {
        writer
            .write(&RecordBatch::new_empty(schema))
            .map_err(encode_error)?;
    }
    for batch in &batches {
        writer.write(batch).map_err(encode_error)?;
    }
    Ok(writer.into_inner())
}

/// Arrow IPC stream with the result's exact schema and batches.
fn encode_arrow(result: &QueryResult) -> Result<Vec<u8>, QueryError> {
    let mut out = Vec::new();
    {
        let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut out, &result.schema)
            .map_err(encode_error)?;
        for batch in &result.batches {
            writer.write(batch).map_err(encode_error)?;
        }
        writer.finish().map_err(encode_error)?;
    }
    out.flush().map_err(encode_error)?;
    Ok(out)
}

fn encode_error(e: impl std::fmt::Display) -> QueryError {
    QueryError::Internal(format!("cannot encode the result: {e}"))
}

/// The result with every column a text format cannot show natively (timestamps, dates, maps,
/// lists, structs, binary, …) replaced by a Utf8 column of its JSON rendering.
fn textual_batches(result: &QueryResult) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
    let schema: SchemaRef = Arc::new(Schema::new(
        result
            .schema
            .fields()
            .iter()
            .map(|f| {
                if is_plain(f.data_type()) {
                    f.as_ref().clone()
                } else {
                    Field::new(f.name(), DataType::Utf8, true)
                }
            })
            .collect::<Vec<_>>(),
    ));
    let batches = result
        .batches
        .iter()
        .map(|batch| {
            let columns = batch
                .columns()
                .iter()
                .map(|column| {
                    if is_plain(column.data_type()) {
                        Ok(Arc::clone(column))
                    } else {
                        let text: StringArray = column_values(column.as_ref())?
                            .into_iter()
                            .map(|v| match v {
                                Value::Null => None,
                                Value::String(s) => Some(s),
                                other => Some(other.to_string()),
                            })
                            .collect();
                        Ok(Arc::new(text) as ArrayRef)
                    }
                })
                .collect::<Result<Vec<_>, QueryError>>()?;
            RecordBatch::try_new(Arc::clone(&schema), columns).map_err(encode_error)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((schema, batches))
}

/// Types CSV and the table renderer print well as they are.
fn is_plain(data_type: &DataType) -> bool {
    data_type.is_numeric()
        || matches!(
            data_type,
            DataType::Null
                | DataType::Boolean
                | DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
        )
}

fn batch_values(batch: &RecordBatch) -> Result<Vec<Vec<Value>>, QueryError> {
    batch
        .columns()
        .iter()
        .map(|c| column_values(c.as_ref()))
        .collect()
}

/// Every value of `array` as JSON: numbers (non-finite floats as null), strings, booleans,
/// RFC 3339 UTC timestamps, maps and structs as objects, lists as arrays.
pub(crate) fn column_values(array: &dyn Array) -> Result<Vec<Value>, QueryError> {
    let len = array.len();
    let valid = |i: usize| array.is_valid(i);
    let values: Vec<Value> = match array.data_type() {
        DataType::Null => vec![Value::Null; len],
        DataType::Boolean => {
            let a = array.as_boolean();
            (0..len)
                .map(|i| {
                    if valid(i) {
                        Value::Bool(a.value(i))
                    } else {
                        Value::Null
                    }
                })
                .collect()
        }
        DataType::Int8 => ints(array.as_primitive::<Int8Type>().iter()),
        DataType::Int16 => ints(array.as_primitive::<Int16Type>().iter()),
        DataType::Int32 => ints(array.as_primitive::<Int32Type>().iter()),
        DataType::Int64 => ints(array.as_primitive::<Int64Type>().iter()),
        DataType::UInt8 => ints(array.as_primitive::<UInt8Type>().iter()),
        DataType::UInt16 => ints(array.as_primitive::<UInt16Type>().iter()),
        DataType::UInt32 => ints(array.as_primitive::<UInt32Type>().iter()),
        DataType::UInt64 => ints(array.as_primitive::<UInt64Type>().iter()),
        DataType::Float16 => floats(
            array
                .as_primitive::<Float16Type>()
                .iter()
                .map(|v| v.map(f64::from)),
        ),
        DataType::Float32 => floats(
            array
                .as_primitive::<Float32Type>()
                .iter()
                .map(|v| v.map(f64::from)),
        ),
        DataType::Float64 => floats(array.as_primitive::<Float64Type>().iter()),
        DataType::Utf8 => strings(array.as_string::<i32>().iter()),
        DataType::LargeUtf8 => strings(array.as_string::<i64>().iter()),
        DataType::Utf8View => strings(array.as_string_view().iter()),
        DataType::Timestamp(unit, _) => {
            let nanos_per_unit: i64 = match unit {
                TimeUnit::Second => 1_000_000_000,
                TimeUnit::Millisecond => 1_000_000,
                TimeUnit::Microsecond => 1_000,
                TimeUnit::Nanosecond => 1,
            };
            let raw: Vec<Option<i64>> = match unit {
                TimeUnit::Second => array.as_primitive::<TimestampSecondType>().iter().collect(),
                TimeUnit::Millisecond => array
                    .as_primitive::<TimestampMillisecondType>()
                    .iter()
                    .collect(),
                TimeUnit::Microsecond => array
                    .as_primitive::<TimestampMicrosecondType>()
                    .iter()
                    .collect(),
                TimeUnit::Nanosecond => array
                    .as_primitive::<TimestampNanosecondType>()
                    .iter()
                    .collect(),
            };
            raw.into_iter()
                .map(|v| v.map_or(Value::Null, |v| timestamp_value(v, nanos_per_unit)))
                .collect()
        }
        DataType::Date32 => array
            .as_primitive::<Date32Type>()
            .iter()
            .map(|v| {
                v.and_then(|days| DateTime::from_timestamp(i64::from(days) * 86_400, 0))
                    .map_or(Value::Null, |d| {
                        Value::String(d.format("%Y-%m-%d").to_string())
                    })
            })
            .collect(),
        DataType::Date64 => array
            .as_primitive::<Date64Type>()
            .iter()
            .map(|v| {
                v.and_then(DateTime::from_timestamp_millis)
                    .map_or(Value::Null, |d| {
                        Value::String(d.format("%Y-%m-%d").to_string())
                    })
            })
            .collect(),
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => formatted(array)?
            .into_iter()
            .map(|v| match v {
                Value::String(s) => s
                    .parse::<f64>()
                    .ok()
                    .and_then(Number::from_f64)
                    .map_or(Value::String(s), Value::Number),
                other => other,
            })
            .collect(),
        DataType::List(_) => list_values(array.as_list::<i32>())?,
        DataType::LargeList(_) => list_values(array.as_list::<i64>())?,
        DataType::FixedSizeList(_, size) => {
            let list = array.as_fixed_size_list();
            let children = column_values(list.values().as_ref())?;
            let size = usize::try_from(*size).unwrap_or(0);
            (0..len)
                .map(|i| {
                    if !valid(i) {
                        return Value::Null;
                    }
                    let start = usize::try_from(list.value_offset(i)).unwrap_or(0);
                    Value::Array(
                        children
                            .get(start..start + size)
                            .map(<[Value]>::to_vec)
                            .unwrap_or_default(),
                    )
                })
                .collect()
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let children = s
                .columns()
                .iter()
                .map(|c| column_values(c.as_ref()))
                .collect::<Result<Vec<_>, _>>()?;
            (0..len)
                .map(|i| {
                    if !valid(i) {
                        return Value::Null;
                    }
                    let object: Map<String, Value> = fields
                        .iter()
                        .zip(&children)
                        .map(|(f, c)| (f.name().clone(), c.get(i).cloned().unwrap_or(Value::Null)))
                        .collect();
                    Value::Object(object)
                })
                .collect()
        }
        DataType::Map(..) => map_values(array.as_map())?,
        DataType::Dictionary(_, value_type) => {
            let plain = arrow::compute::cast(array, value_type).map_err(encode_error)?;
            column_values(plain.as_ref())?
        }
        _ => formatted(array)?,
    };
    Ok(values)
}

fn ints<T: Into<Number>>(values: impl Iterator<Item = Option<T>>) -> Vec<Value> {
    values
        .map(|v| v.map_or(Value::Null, |v| Value::Number(v.into())))
        .collect()
}

fn floats(values: impl Iterator<Item = Option<f64>>) -> Vec<Value> {
    values
        .map(|v| {
            v.and_then(Number::from_f64)
                .map_or(Value::Null, Value::Number)
        })
        .collect()
}

fn strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> Vec<Value> {
    values
        .map(|v| v.map_or(Value::Null, |s| Value::String(s.to_owned())))
        .collect()
}

/// RFC 3339 in UTC with a `Z` suffix and as many sub-second digits as needed (0, 3, 6 or 9).
fn timestamp_value(value: i64, nanos_per_unit: i64) -> Value {
    let secs_per_unit = 1_000_000_000 / nanos_per_unit;
    let (secs, rem) = (
        value.div_euclid(secs_per_unit),
        value.rem_euclid(secs_per_unit),
    );
    let nanos = u32::try_from(rem * nanos_per_unit).unwrap_or(0);
    DateTime::from_timestamp(secs, nanos).map_or(Value::Null, |t| {
        Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    })
}

fn list_values<O: OffsetSizeTrait>(list: &GenericListArray<O>) -> Result<Vec<Value>, QueryError> {
    let children = column_values(list.values().as_ref())?;
    let offsets = list.value_offsets();
    Ok((0..list.len())
        .map(|i| {
            if list.is_null(i) {
                return Value::Null;
            }
            let range = offsets
                .get(i)
                .zip(offsets.get(i + 1))
                .map(|(start, end)| start.as_usize()..end.as_usize());
            Value::Array(
                range
                    .and_then(|r| children.get(r))
                    .map(<[Value]>::to_vec)
                    .unwrap_or_default(),
            )
        })
        .collect())
}

fn map_values(map: &MapArray) -> Result<Vec<Value>, QueryError> {
    let keys = column_values(map.keys().as_ref())?;
    let values = column_values(map.values().as_ref())?;
    let offsets = map.value_offsets();
    Ok((0..map.len())
        .map(|i| {
            if map.is_null(i) {
                return Value::Null;
            }
            let (Some(start), Some(end)) = (offsets.get(i), offsets.get(i + 1)) else {
                return Value::Null;
            };
            let (Ok(start), Ok(end)) = (usize::try_from(*start), usize::try_from(*end)) else {
                return Value::Null;
            };
            let object: Map<String, Value> = (start..end)
                .map(|j| {
                    let key = match keys.get(j) {
                        Some(Value::String(s)) => s.clone(),
                        Some(other) => other.to_string(),
                        None => String::new(),
                    };
                    (key, values.get(j).cloned().unwrap_or(Value::Null))
                })
                .collect();
            Value::Object(object)
        })
        .collect())
}

/// Arrow's display form as strings, for the types JSON has no better shape for.
fn formatted(array: &dyn Array) -> Result<Vec<Value>, QueryError> {
    let options = FormatOptions::default();
    let formatter =
        ArrayFormatter::try_new(array, &options).map_err(|e: ArrowError| encode_error(e))?;
    Ok((0..array.len())
        .map(|i| {
            if array.is_null(i) {
                Value::Null
            } else {
                Value::String(formatter.value(i).to_string())
            }
        })
        .collect())
}

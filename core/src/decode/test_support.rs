//! Helpers shared by the decoder's unit tests: build attributes, read decoded columns back.

use arrow::array::{Array, AsArray, MapArray, StringArray};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};

use super::Decoded;

pub(crate) fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

pub(crate) fn str_col<'a>(d: &'a Decoded, name: &str) -> &'a StringArray {
    d.batch
        .records()
        .column_by_name(name)
        .unwrap()
        .as_string::<i32>()
}

pub(crate) fn map_col<'a>(d: &'a Decoded, name: &str) -> &'a MapArray {
    d.batch.records().column_by_name(name).unwrap().as_map()
}

/// Entries of row `row` of a map column, `None` for null values.
pub(crate) fn map_entries(map: &MapArray, row: usize) -> Vec<(String, Option<String>)> {
    let entries = map.value(row);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_string::<i32>();
    (0..keys.len())
        .map(|i| {
            (
                keys.value(i).to_owned(),
                values.is_valid(i).then(|| values.value(i).to_owned()),
            )
        })
        .collect()
}

//! Arrow column builders shared by the logs and spans decoders: `map<string,string>` attribute
//! columns, and the resource and scope columns whose values are computed once per group.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, BinaryArray, BinaryBuilder, GenericByteBuilder, MapArray, MapBuilder,
    MapFieldNames, StringArray, StringBuilder, StructArray, UInt32Array,
};
use arrow::datatypes::{ByteArrayType, DataType};
use arrow::error::ArrowError;

use super::value::{append_string_form, for_each_last, for_each_last_and_dropped};
use super::wire::{KeyValueRef, Text};
use crate::schema::{UNKNOWN_SERVICE, string_map_type};
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};

/// Builder of one `map<string,string>` column (see [`crate::schema::string_map_type`]), its
/// keys and values [`Text`] until [`utf8_map`] checks them.
pub(super) type TextMapBuilder = MapBuilder<BinaryBuilder, BinaryBuilder>;

/// Builder of a `map<string,string>` column of checked strings: the resource and scope maps,
/// whose text is checked once per group rather than on each of its rows.
pub(super) type StringMapBuilder = MapBuilder<StringBuilder, StringBuilder>;

/// Guessed bytes per key or value, to size builders up front.
const BYTES_PER_STRING_GUESS: usize = 16;

/// Most map entries reserved up front: a large resource repeated on many records can ask for
/// far more than the batch size limit lets through, so beyond this builders grow as they fill.
const MAX_RESERVED_ENTRIES: usize = 1 << 20;

/// Bytes a row takes in the fixed-width columns and the offsets of the map columns, roughly.
pub(super) const FIXED_ROW_BYTES: usize = 64;

/// A map builder for `rows` rows holding about `entries` entries in all.
pub(super) fn map_builder<T: ByteArrayType>(
    rows: usize,
    entries: usize,
) -> MapBuilder<GenericByteBuilder<T>, GenericByteBuilder<T>> {
    let entries = entries.min(MAX_RESERVED_ENTRIES);
    let names = MapFieldNames {
        entry: "entries".to_owned(),
        key: "key".to_owned(),
        value: "value".to_owned(),
    };
    // MapBuilder makes the key field non-null and the value field nullable, as the schema wants.
    MapBuilder::with_capacity(
        Some(names),
        GenericByteBuilder::with_capacity(entries, entries * BYTES_PER_STRING_GUESS),
        GenericByteBuilder::with_capacity(entries, entries * BYTES_PER_STRING_GUESS),
        rows,
    )
}

/// A column of [`Text`] as the UTF-8 column it must be: all its bytes checked in one pass,
/// then every value's bounds checked to fall between characters.
pub(super) fn utf8(text: BinaryArray) -> Result<StringArray, ArrowError> {
    StringArray::try_from_binary(text)
}

/// A map column of [`Text`] keys and values as the `map<string,string>` column it must be.
pub(super) fn utf8_map(text: MapArray) -> Result<MapArray, ArrowError> {
    let not_text = || ArrowError::SchemaError("a text map column must hold binary".into());
    let DataType::Map(entries_field, _) = string_map_type() else {
        return Err(not_text());
    };
    let DataType::Struct(fields) = entries_field.data_type().clone() else {
        return Err(not_text());
    };
    let (_, offsets, entries, nulls, ordered) = text.into_parts();
    let (_, columns, entry_nulls) = entries.into_parts();
    let columns = columns
        .iter()
        .map(|c| {
            let text = c.as_binary_opt::<i32>().ok_or_else(not_text)?;
            Ok(Arc::new(utf8(text.clone())?) as ArrayRef)
        })
        .collect::<Result<Vec<_>, ArrowError>>()?;
    let entries = StructArray::try_new(fields, columns, entry_nulls)?;
    MapArray::try_new(entries_field, offsets, entries, nulls, ordered)
}

/// Appends one row holding `attributes` by their string forms, duplicate keys keeping the last.
/// `dropped` gets the text of each value a later one replaces, which is not stored but must
/// still be checked when it was read in place (see [`Text`]).
pub(super) fn append_attributes<'a>(
    builder: &mut TextMapBuilder,
    attributes: &'a [KeyValueRef<'a>],
    mut dropped: impl FnMut(Text<'a>),
) -> Result<(), ArrowError> {
    for_each_last_and_dropped(
        attributes,
        |kv| {
            let (keys, values) = builder.entries();
            keys.append_value(kv.key);
            append_string_form(values, &kv.value)
        },
        |kv| {
            if let Some(text) = kv.value.as_text() {
                dropped(text);
            }
        },
    )?;
    builder.append(true)
}

/// Bytes held by a string or binary builder: its data plus its offsets.
pub(super) fn string_bytes<T: ByteArrayType>(builder: &GenericByteBuilder<T>) -> usize {
    builder.values_slice().len() + std::mem::size_of_val(builder.offsets_slice())
}

/// Bytes held by the keys and values of a map builder.
pub(super) fn map_bytes<T: ByteArrayType>(
    builder: &mut MapBuilder<GenericByteBuilder<T>, GenericByteBuilder<T>>,
) -> usize {
    let (keys, values) = builder.entries();
    string_bytes(keys) + string_bytes(values)
}

/// `None` for an empty string: OTLP cannot tell an empty string from an absent one.
pub(super) fn non_empty<T: AsRef<[u8]> + ?Sized>(s: &T) -> Option<&T> {
    (!s.as_ref().is_empty()).then_some(s)
}

/// An attribute map converted and checked once, then appended to every row of its resource or
/// scope.
#[derive(Debug)]
pub(super) struct PreparedMap {
    keys: StringArray,
    values: StringArray,
}

impl PreparedMap {
    /// The values a later key replaces are dropped unchecked: `attributes` must have been
    /// checked to be UTF-8 ([`super::wire::check_attributes`]) or come from prost.
    pub(super) fn new(attributes: &[KeyValueRef<'_>]) -> Result<Self, ArrowError> {
        let n = attributes.len();
        let mut keys = BinaryBuilder::with_capacity(n, n * BYTES_PER_STRING_GUESS);
        let mut values = BinaryBuilder::with_capacity(n, n * BYTES_PER_STRING_GUESS);
        for_each_last(attributes, |kv| {
            keys.append_value(kv.key);
            append_string_form(&mut values, &kv.value)
        })?;
        Ok(Self {
            keys: utf8(keys.finish())?,
            values: utf8(values.finish())?,
        })
    }

    fn append_to(&self, builder: &mut StringMapBuilder) -> Result<(), ArrowError> {
        let (keys, values) = builder.entries();
        keys.append_array(&self.keys)?;
        values.append_array(&self.values)?;
        builder.append(true)
    }

    /// Bytes one row of this map adds to a column.
    fn bytes(&self) -> usize {
        let data =
            |a: &StringArray| a.value_data().len() + std::mem::size_of_val(a.value_offsets());
        data(&self.keys) + data(&self.values)
    }
}

/// What every record under one resource shares.
#[derive(Debug)]
pub(super) struct ResourceContext<'a> {
    service: &'a str,
    attributes: PreparedMap,
    dropped_attributes_count: u32,
    schema_url: Option<&'a str>,
}

impl<'a> ResourceContext<'a> {
    pub(super) fn new(
        attributes: &[KeyValueRef<'a>],
        dropped_attributes_count: u32,
        schema_url: &'a str,
    ) -> Result<Self, ArrowError> {
        let service = std::str::from_utf8(service_name(attributes))
            .map_err(|e| ArrowError::InvalidArgumentError(format!("service.name: {e}")))?;
        Ok(Self {
            service,
            attributes: PreparedMap::new(attributes)?,
            dropped_attributes_count,
            schema_url: non_empty(schema_url),
        })
    }
}

/// `service.name` when its (last) value is a non-empty string, else [`UNKNOWN_SERVICE`].
fn service_name<'a>(attributes: &[KeyValueRef<'a>]) -> Text<'a> {
    attributes
        .iter()
        .rev()
        .find(|kv| kv.key == b"service.name")
        .and_then(|kv| kv.value.as_text())
        .filter(|name| !name.is_empty())
        .unwrap_or(UNKNOWN_SERVICE.as_bytes())
}

/// What every record under one instrumentation scope shares.
#[derive(Debug)]
pub(super) struct ScopeContext<'a> {
    name: Option<&'a str>,
    version: Option<&'a str>,
    attributes: PreparedMap,
    dropped_attributes_count: u32,
    schema_url: Option<&'a str>,
}

/// An instrumentation scope's fields, borrowed from prost structs or read in place.
#[derive(Debug, Default)]
pub(super) struct ScopeFields<'a> {
    pub(super) name: &'a str,
    pub(super) version: &'a str,
    pub(super) attributes: Vec<KeyValueRef<'a>>,
    pub(super) dropped_attributes_count: u32,
}

impl<'a> ScopeFields<'a> {
    /// A prost-decoded scope, borrowed.
    pub(super) fn of(scope: Option<&'a InstrumentationScope>) -> Self {
        scope.map_or_else(Self::default, |s| Self {
            name: &s.name,
            version: &s.version,
            attributes: attribute_refs(&s.attributes),
            dropped_attributes_count: s.dropped_attributes_count,
        })
    }
}

/// Prost-decoded attributes, borrowed.
pub(super) fn attribute_refs(attributes: &[KeyValue]) -> Vec<KeyValueRef<'_>> {
    attributes.iter().map(KeyValueRef::of).collect()
}

impl<'a> ScopeContext<'a> {
    pub(super) fn new(scope: &ScopeFields<'a>, schema_url: &'a str) -> Result<Self, ArrowError> {
        Ok(Self {
            name: non_empty(scope.name),
            version: non_empty(scope.version),
            attributes: PreparedMap::new(&scope.attributes)?,
            dropped_attributes_count: scope.dropped_attributes_count,
            schema_url: non_empty(schema_url),
        })
    }
}

/// Upper bound of the bytes one row of `resource` and `scope` adds to the context columns.
pub(super) fn context_row_bytes(resource: &ResourceContext<'_>, scope: &ScopeContext<'_>) -> usize {
    let opt = |s: Option<&str>| s.map_or(0, str::len);
    resource.service.len()
        + resource.attributes.bytes()
        + opt(resource.schema_url)
        + opt(scope.name)
        + opt(scope.version)
        + scope.attributes.bytes()
        + opt(scope.schema_url)
        + 64
}

/// The `service` column and the resource and scope columns that end both tables' schemas.
#[derive(Debug)]
pub(super) struct ContextColumns {
    service: StringBuilder,
    resource: StringMapBuilder,
    resource_dropped_attributes_count: Vec<u32>,
    resource_schema_url: StringBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    scope_attributes: StringMapBuilder,
    scope_dropped_attributes_count: Vec<u32>,
    scope_schema_url: StringBuilder,
}

/// Context columns in schema order, `service` apart since it sits earlier in both schemas.
pub(super) struct FinishedContext {
    pub(super) service: ArrayRef,
    pub(super) tail: [ArrayRef; 8],
}

impl ContextColumns {
    /// Builders for `rows` rows with `resource_entries` and `scope_entries` map entries in all.
    pub(super) fn with_capacity(
        rows: usize,
        resource_entries: usize,
        scope_entries: usize,
    ) -> Self {
        Self {
            service: StringBuilder::with_capacity(rows, rows * BYTES_PER_STRING_GUESS),
            resource: map_builder(rows, resource_entries),
            resource_dropped_attributes_count: Vec::with_capacity(rows),
            resource_schema_url: StringBuilder::with_capacity(rows, 0),
            scope_name: StringBuilder::with_capacity(rows, rows * BYTES_PER_STRING_GUESS),
            scope_version: StringBuilder::with_capacity(rows, rows * 8),
            scope_attributes: map_builder(rows, scope_entries),
            scope_dropped_attributes_count: Vec::with_capacity(rows),
            scope_schema_url: StringBuilder::with_capacity(rows, 0),
        }
    }

    pub(super) fn append(
        &mut self,
        resource: &ResourceContext<'_>,
        scope: &ScopeContext<'_>,
    ) -> Result<(), ArrowError> {
        self.service.append_value(resource.service);
        resource.attributes.append_to(&mut self.resource)?;
        self.resource_dropped_attributes_count
            .push(resource.dropped_attributes_count);
        self.resource_schema_url.append_option(resource.schema_url);
        self.scope_name.append_option(scope.name);
        self.scope_version.append_option(scope.version);
        scope.attributes.append_to(&mut self.scope_attributes)?;
        self.scope_dropped_attributes_count
            .push(scope.dropped_attributes_count);
        self.scope_schema_url.append_option(scope.schema_url);
        Ok(())
    }

    /// Bytes held so far by the variable-length columns.
    pub(super) fn bytes(&mut self) -> usize {
        string_bytes(&self.service)
            + map_bytes(&mut self.resource)
            + string_bytes(&self.resource_schema_url)
            + string_bytes(&self.scope_name)
            + string_bytes(&self.scope_version)
            + map_bytes(&mut self.scope_attributes)
            + string_bytes(&self.scope_schema_url)
    }

    pub(super) fn finish(mut self) -> FinishedContext {
        FinishedContext {
            service: Arc::new(self.service.finish()),
            tail: [
                Arc::new(self.resource.finish()),
                Arc::new(UInt32Array::from(self.resource_dropped_attributes_count)),
                Arc::new(self.resource_schema_url.finish()),
                Arc::new(self.scope_name.finish()),
                Arc::new(self.scope_version.finish()),
                Arc::new(self.scope_attributes.finish()),
                Arc::new(UInt32Array::from(self.scope_dropped_attributes_count)),
                Arc::new(self.scope_schema_url.finish()),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::wire::ValueRef;
    use arrow::array::Array;

    fn kv<'a>(key: &'a str, value: Option<ValueRef<'a>>) -> KeyValueRef<'a> {
        KeyValueRef {
            key: key.as_bytes(),
            value: value.unwrap_or(ValueRef::Empty),
        }
    }

    #[test]
    fn map_builders_produce_the_schema_map_type() {
        let mut text = map_builder(2, 2);
        let attributes = [kv("a", Some(ValueRef::Int(1))), kv("b", None)];
        append_attributes(&mut text, &attributes, |_| {}).unwrap();
        append_attributes(&mut text, &[], |_| {}).unwrap();
        let mut strings = map_builder(1, 1);
        PreparedMap::new(&[kv("c", Some(ValueRef::Bool(true)))])
            .unwrap()
            .append_to(&mut strings)
            .unwrap();
        for map in [utf8_map(text.finish()).unwrap(), strings.finish()] {
            assert_eq!(map.data_type(), &string_map_type());
            assert_eq!(map.null_count(), 0);
        }
    }

    #[test]
    fn text_columns_must_be_utf8_value_by_value() {
        let column = |values: &[&[u8]]| BinaryArray::from_iter_values(values.iter().copied());
        let text = utf8(column(&["héllo".as_bytes(), b"", b"ok"])).unwrap();
        assert_eq!(text.value(0), "héllo");
        assert_eq!(text.value(2), "ok");
        assert!(utf8(column(&[b"ok", b"\xff"])).is_err());
        // Two values that are UTF-8 only when joined: each must be UTF-8 on its own.
        let e_acute = "é".as_bytes();
        assert!(utf8(column(&[&e_acute[..1], &e_acute[1..]])).is_err());

        let bad_key = KeyValueRef {
            key: b"\xfe",
            value: ValueRef::Empty,
        };
        let bad_value = kv("k", Some(ValueRef::Str(b"\xc3")));
        for bad in [bad_key, bad_value] {
            let mut b = map_builder(1, 2);
            let mut dropped = BinaryBuilder::new();
            let attributes = [kv("fine", None), bad];
            append_attributes(&mut b, &attributes, |t| dropped.append_value(t)).unwrap();
            assert!(utf8_map(b.finish()).is_err());
            assert_eq!(dropped.finish().len(), 0);
        }
        // A value a later one with the same key replaces is not stored, but kept to be checked.
        let mut b = map_builder(1, 2);
        let mut dropped = BinaryBuilder::new();
        let attributes = [kv("k", Some(ValueRef::Str(b"\xc3"))), kv("k", None)];
        append_attributes(&mut b, &attributes, |t| dropped.append_value(t)).unwrap();
        assert!(utf8_map(b.finish()).is_ok());
        assert!(utf8(dropped.finish()).is_err());
    }

    #[test]
    fn service_name_falls_back_to_unknown_service() {
        let name =
            |attrs: &[KeyValueRef<'_>]| String::from_utf8(service_name(attrs).to_vec()).unwrap();
        assert_eq!(name(&[]), UNKNOWN_SERVICE);
        assert_eq!(
            name(&[kv("service.name", Some(ValueRef::Str(b"")))]),
            UNKNOWN_SERVICE
        );
        assert_eq!(
            name(&[kv("service.name", Some(ValueRef::Int(3)))]),
            UNKNOWN_SERVICE
        );
        assert_eq!(name(&[kv("service.name", None)]), UNKNOWN_SERVICE);
        assert_eq!(
            name(&[kv("service.name", Some(ValueRef::Str(b"api")))]),
            "api"
        );
        // Last one wins, as in the resource map.
        assert_eq!(
            name(&[
                kv("service.name", Some(ValueRef::Str(b"old"))),
                kv("service.name", Some(ValueRef::Str(b"new"))),
            ]),
            "new"
        );
    }
}

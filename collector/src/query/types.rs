//! The tables' types inside the engine and in answers. Inside, top-level strings are views
//! (`Utf8View`): the Parquet reader then hands out views of the pages it decoded, where `Utf8`
//! copies every value into a buffer of its own, and the WAL's batches become views of their
//! own buffers. The query API has always answered strings as `Utf8`, and clients read the
//! `type` of a JSON column or the schema of an Arrow answer, so views are turned back into
//! plain strings at the edge. Only an answer's rows are copied, never a scan's.

use std::sync::Arc;

use arrow::compute::{can_cast_types, cast};
use arrow::datatypes::{DataType, FieldRef, Fields, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::QueryError;

/// A stored schema as the engine queries it: top-level strings as `Utf8View`.
pub(super) fn query_schema(stored: &Schema) -> SchemaRef {
    let fields: Vec<FieldRef> = stored
        .fields()
        .iter()
        .map(|field| match field.data_type() {
            DataType::Utf8 => Arc::new(field.as_ref().clone().with_data_type(DataType::Utf8View)),
            _ => Arc::clone(field),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, stored.metadata().clone()))
}

/// `batch` with each column cast to its type in `schema` (the same fields, in the same
/// order); a column already of that type is shared, not copied. A string column cast to views
/// keeps its buffer.
pub(super) fn cast_batch(
    batch: &RecordBatch,
    schema: &SchemaRef,
) -> Result<RecordBatch, ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                cast(column, field.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    // With no column (`count(*)`), the row count is all a batch holds.
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)
}

/// `schema` with views (also inside lists, structs and maps) as plain strings and binaries.
pub(super) fn public_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<FieldRef> = schema.fields().iter().map(public_field).collect();
    if fields.iter().zip(schema.fields()).all(|(a, b)| a == b) {
        return Arc::clone(schema);
    }
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` in `schema`, the [`public_schema`] of its own.
pub(super) fn with_public_types(
    batch: RecordBatch,
    schema: &SchemaRef,
) -> Result<RecordBatch, QueryError> {
    if batch.schema_ref() == schema {
        return Ok(batch);
    }
    cast_batch(&batch, schema)
        .map_err(|e| QueryError::Internal(format!("cannot convert the answer's types: {e}")))
}

fn public_field(field: &FieldRef) -> FieldRef {
    let public = public_type(field.data_type());
    // A type Arrow cannot cast to stays as it is: an answer is never refused for its types.
    if &public == field.data_type() || !can_cast_types(field.data_type(), &public) {
        return Arc::clone(field);
    }
    Arc::new(field.as_ref().clone().with_data_type(public))
}

fn public_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::List(item) => DataType::List(public_field(item)),
        DataType::LargeList(item) => DataType::LargeList(public_field(item)),
        DataType::FixedSizeList(item, size) => DataType::FixedSizeList(public_field(item), *size),
        DataType::Struct(fields) => {
            DataType::Struct(fields.iter().map(public_field).collect::<Fields>())
        }
        DataType::Map(entries, sorted) => DataType::Map(public_field(entries), *sorted),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{ArrayRef, Int64Array, ListArray, StringViewArray};
    use arrow::datatypes::{Field, Int64Type};

    use super::*;

    #[test]
    fn views_are_answered_as_plain_strings_with_their_values() {
        let names: ArrayRef = Arc::new(StringViewArray::from(vec![
            Some("checkout"),
            None,
            Some("a service name longer than twelve bytes"),
        ]));
        let counts: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
        let batch = RecordBatch::try_from_iter([("service", names), ("n", counts)]).unwrap();
        let schema = public_schema(batch.schema_ref());
        assert_eq!(schema.field(0).data_type(), &DataType::Utf8);
        assert_eq!(schema.field(1).data_type(), &DataType::Int64);
        let public = with_public_types(batch, &schema).unwrap();
        let names = public
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::StringArray>();
        let names: Vec<Option<&str>> = names.unwrap().iter().collect();
        assert_eq!(
            names,
            [
                Some("checkout"),
                None,
                Some("a service name longer than twelve bytes")
            ]
        );
    }

    #[test]
    fn views_inside_lists_become_plain_strings_and_other_types_stay() {
        let item = Arc::new(Field::new("item", DataType::Utf8View, true));
        let list = DataType::List(Arc::clone(&item));
        assert_eq!(
            public_type(&list),
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
        );
        let ints = ListArray::from_iter_primitive::<Int64Type, _, _>([Some(vec![Some(1)])]);
        let batch = RecordBatch::try_from_iter([("l", Arc::new(ints) as ArrayRef)]).unwrap();
        let schema = public_schema(batch.schema_ref());
        assert!(Arc::ptr_eq(&schema, batch.schema_ref()));
    }
}

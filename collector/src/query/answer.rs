//! The types an answer leaves the engine with. Inside, the tables' strings are views
//! (`Utf8View`, see `provider`); the query API has always answered strings as `Utf8`, and
//! clients read the `type` of a JSON column or the schema of an Arrow answer, so views are
//! turned back into plain strings at the edge. Only an answer's rows are copied, never a scan's.

use std::sync::Arc;

use arrow::compute::{can_cast_types, cast};
use arrow::datatypes::{DataType, FieldRef, Fields, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use super::QueryError;

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
        .collect::<Result<Vec<_>, _>>()
        .and_then(|columns| RecordBatch::try_new(Arc::clone(schema), columns))
        .map_err(|e| QueryError::Internal(format!("cannot convert the answer's types: {e}")))?;
    Ok(columns)
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

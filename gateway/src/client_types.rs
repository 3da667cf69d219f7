//! The Arrow types a client receives.
//!
//! DataFusion may produce view types (`Utf8View`, `BinaryView`) and
//! dictionaries; several Flight SQL drivers cannot read view types, and the
//! Flight encoder hydrates dictionaries anyway. Every result schema goes
//! through [`client_schema`] and every batch through [`to_client_batch`], so
//! the schema in FlightInfo and the schema of the DoGet stream are the same
//! value, built by the same function.
//!
//! Each column also carries its SQL type as Flight SQL column metadata
//! (`ARROW:FLIGHT:SQL:TYPE_NAME`, precision, scale; see
//! [`SqlType::column_metadata`]): JDBC's `ResultSetMetaData` answers
//! `getColumnTypeName` from it, and GetTables describes a table's columns
//! with the same schema a query of the table returns.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use arrow::error::ArrowError;

use crate::type_info::SqlType;

/// `schema` with every type a client may not read replaced by its plain
/// twin, and each column's SQL type as its metadata.
pub fn client_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<FieldRef> = schema
        .fields()
        .iter()
        .map(|field| described(&client_field(field)))
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `field` with its SQL type as Flight SQL column metadata; a union (what
/// the JSON functions' `json_get` and `->` return) with none (see
/// [`client_field`]).
fn described(field: &FieldRef) -> FieldRef {
    if matches!(field.data_type(), DataType::Union(..)) {
        return Arc::clone(field);
    }
    let mut metadata = field.metadata().clone();
    metadata.extend(SqlType::of(field.data_type()).column_metadata());
    Arc::new(Field::clone(field).with_metadata(metadata))
}

fn client_field(field: &FieldRef) -> FieldRef {
    if matches!(field.data_type(), DataType::Union(..)) {
        // arrow-flight's encoder sends a union field rebuilt: not nullable
        // (a union's nulls are in its children) and without metadata (59.3,
        // `prepare_field_for_flight`). FlightInfo must say what DoGet
        // sends, or clients such as ADBC refuse the stream.
        return Arc::new(Field::new(field.name(), field.data_type().clone(), false));
    }
    let data_type = client_type(field.data_type());
    if &data_type == field.data_type() {
        Arc::clone(field)
    } else {
        Arc::new(Field::clone(field).with_data_type(data_type))
    }
}

fn client_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::Dictionary(_, value) => client_type(value),
        // arrow-flight's encoder sends a large list as a list (it rewrites
        // the stream's schema), so FlightInfo must say `List` too.
        DataType::ListView(item)
        | DataType::List(item)
        | DataType::LargeListView(item)
        | DataType::LargeList(item) => DataType::List(client_field(item)),
        DataType::FixedSizeList(item, n) => DataType::FixedSizeList(client_field(item), *n),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(client_field).collect()),
        DataType::Map(entries, sorted) => DataType::Map(client_field(entries), *sorted),
        other => other.clone(),
    }
}

/// `batch` converted to `schema` (a [`client_schema`]): columns whose type
/// differs are cast; nullability is taken from `schema`.
pub fn to_client_batch(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
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
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, StringViewArray};
    use arrow::datatypes::{UnionFields, UnionMode};

    #[test]
    fn views_become_plain_types() {
        let schema = Schema::new(vec![
            Field::new("s", DataType::Utf8View, true),
            Field::new(
                "l",
                DataType::List(Arc::new(Field::new("item", DataType::BinaryView, true))),
                false,
            ),
        ]);
        let client = client_schema(&schema);
        assert_eq!(client.field(0).data_type(), &DataType::Utf8);
        assert_eq!(
            client.field(1).data_type(),
            &DataType::List(Arc::new(Field::new("item", DataType::Binary, true)))
        );
        assert!(!client.field(1).is_nullable());
    }

    #[test]
    fn a_union_column_is_described_as_flight_sends_it() {
        let union = DataType::Union(
            UnionFields::try_new(
                vec![0, 1],
                vec![
                    Field::new("int", DataType::Int64, false),
                    Field::new("str", DataType::Utf8, false),
                ],
            )
            .unwrap(),
            UnionMode::Sparse,
        );
        let schema = Schema::new(vec![
            Field::new("u", union, true).with_metadata([("k".into(), "v".into())].into()),
            Field::new("n", DataType::Int64, true),
        ]);
        let client = client_schema(&schema);
        assert!(client.field(0).metadata().is_empty());
        assert!(!client.field(0).is_nullable());
        assert!(
            client
                .field(1)
                .metadata()
                .contains_key("ARROW:FLIGHT:SQL:TYPE_NAME")
        );
    }

    #[test]
    fn batches_are_cast_to_the_client_schema() {
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8View, true)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(StringViewArray::from(vec![Some("a"), None]))],
        )
        .unwrap();
        let client = client_schema(&schema);
        let out = to_client_batch(batch, &client).unwrap();
        assert_eq!(out.schema(), client);
        assert_eq!(out.column(0).as_string::<i32>().value(0), "a");
    }
}

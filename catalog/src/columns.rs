//! The metadata columns every topic table has, and the schemas built from them.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, BinaryBuilder, MapBuilder, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::config::ValueFormat;

/// Kafka partition of the record.
pub const PARTITION: &str = "_partition";
/// Offset of the record within its partition.
pub const OFFSET: &str = "_offset";
/// Record timestamp (CreateTime or LogAppendTime), milliseconds, UTC.
pub const TIMESTAMP: &str = "_timestamp";
/// Record key bytes.
pub const KEY: &str = "_key";
/// Record value bytes (raw tables only).
pub const VALUE: &str = "_value";
/// Record headers, name to value bytes.
pub const HEADERS: &str = "_headers";
/// Why the value did not decode (declared tables only); null when it did.
pub const ERROR: &str = "_error";

/// `MAP<VARCHAR, BINARY>` exactly as [`MapBuilder`] produces it, so the
/// declared schema and the built arrays can never disagree.
pub fn headers_type() -> DataType {
    static TYPE: LazyLock<DataType> = LazyLock::new(|| {
        MapBuilder::new(None, StringBuilder::new(), BinaryBuilder::new())
            .finish()
            .data_type()
            .clone()
    });
    TYPE.clone()
}

fn metadata_fields() -> Vec<Field> {
    vec![
        Field::new(PARTITION, DataType::Int32, false),
        Field::new(OFFSET, DataType::Int64, false),
        Field::new(
            TIMESTAMP,
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
        Field::new(KEY, DataType::Binary, true),
    ]
}

/// The schema of a table: metadata columns, then the value's columns.
///
/// * raw: `_partition, _offset, _timestamp, _key, _value, _headers`
/// * json: `_partition, _offset, _timestamp, _key, _headers, <columns…>, _error`
pub fn table_schema(format: ValueFormat, value_schema: &Schema) -> SchemaRef {
    let mut fields = metadata_fields();
    match format {
        ValueFormat::Raw => {
            fields.push(Field::new(VALUE, DataType::Binary, true));
            fields.push(Field::new(HEADERS, headers_type(), true));
        }
        ValueFormat::Json => {
            fields.push(Field::new(HEADERS, headers_type(), true));
            fields.extend(value_schema.fields().iter().map(|f| f.as_ref().clone()));
            fields.push(Field::new(ERROR, DataType::Utf8, true));
        }
    }
    Arc::new(Schema::new(fields))
}

/// The schema of a topic nobody declared: raw key, value and headers.
pub fn raw_schema() -> SchemaRef {
    table_schema(ValueFormat::Raw, &Schema::empty())
}

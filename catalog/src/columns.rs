//! The metadata columns every topic table has, and the schemas built from them.
//!
//! One schema serves Kafka and the lake: the compactor writes these types to
//! Delta and other engines read them there, so they are the portable ones.
//! Timestamps are microseconds (Delta's `timestamp` type); headers are a list
//! of key/value structs, as Spark's Kafka source has them, because a map with
//! repeated keys (Kafka allows them) is not portable.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

use crate::format::ValueFormat;

/// Kafka partition of the record.
pub const PARTITION: &str = "_partition";
/// Offset of the record within its partition.
pub const OFFSET: &str = "_offset";
/// Record timestamp (CreateTime or LogAppendTime), UTC, stored in microseconds.
pub const TIMESTAMP: &str = "_timestamp";
/// Record key bytes.
pub const KEY: &str = "_key";
/// Record value bytes: every value in a raw table; in a declared table, only
/// values that did not decode (so nothing is lost) and values that decoded
/// to a row of nulls (so none reads like a tombstone, a null value).
pub const VALUE: &str = "_value";
/// Record headers in order: a list of `{key, value}`, repeated keys kept.
pub const HEADERS: &str = "_headers";
/// Why the value did not decode (declared tables only); null when it did.
pub const ERROR: &str = "_error";

/// `ARRAY<STRUCT<key VARCHAR NOT NULL, value BINARY>>`.
pub fn headers_type() -> DataType {
    static TYPE: LazyLock<DataType> =
        LazyLock::new(|| DataType::List(Arc::new(Field::new_list_field(header_struct(), true))));
    TYPE.clone()
}

/// One header: `STRUCT<key VARCHAR NOT NULL, value BINARY>`.
pub fn header_struct() -> DataType {
    DataType::Struct(header_fields())
}

/// The fields of one header.
pub fn header_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Binary, true),
    ])
}

/// `_timestamp`'s type.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn metadata_fields() -> Vec<Field> {
    vec![
        Field::new(PARTITION, DataType::Int32, false),
        Field::new(OFFSET, DataType::Int64, false),
        Field::new(TIMESTAMP, timestamp_type(), true),
        Field::new(KEY, DataType::Binary, true),
    ]
}

/// The schema of a table: metadata columns, then the value's columns.
///
/// * raw: `_partition, _offset, _timestamp, _key, _value, _headers`
/// * decoded (json): `_partition, _offset, _timestamp, _key, _headers, <columns…>, _error, _value`
pub fn table_schema(format: &ValueFormat, value_schema: &Schema) -> SchemaRef {
    let mut fields = metadata_fields();
    if format.decodes() {
        fields.push(Field::new(HEADERS, headers_type(), true));
        fields.extend(value_schema.fields().iter().map(|f| f.as_ref().clone()));
        fields.push(Field::new(ERROR, DataType::Utf8, true));
        fields.push(Field::new(VALUE, DataType::Binary, true));
    } else {
        fields.push(Field::new(VALUE, DataType::Binary, true));
        fields.push(Field::new(HEADERS, headers_type(), true));
    }
    Arc::new(Schema::new(fields))
}

/// The schema of a topic nobody declared: raw key, value and headers.
pub fn raw_schema() -> SchemaRef {
    table_schema(&ValueFormat::Raw, &Schema::empty())
}

//! A decoded key beside the decoded value: the `key` column.
//!
//! With a schema registry, a topic whose `<topic>-key` subject exists has
//! its keys decoded too (Confluent's TopicNameStrategy), into one column
//! named `key` placed before the value's columns: the key's fields as a
//! STRUCT when its schema is a record (or a Protobuf message), the scalar
//! otherwise. `_key` keeps the
//! raw bytes either way. A key that does not decode is a null `key` with the
//! reason in `_error` (prefixed `key:`); the value still decodes.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray, StructArray};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::{DecodedValues, ValueDecoder, ValueFormat, value_decoder};
use crate::error::Result;

/// The name of the decoded key's column.
pub const KEY_COLUMN: &str = "key";

/// A value format with the key decoded as well.
#[derive(Debug)]
pub struct KeyedFormat {
    /// The keys' format (Avro or Protobuf, registry-framed).
    key: ValueFormat,
    /// The columns the key's format decodes into.
    key_schema: SchemaRef,
    /// Whether the key's schema is a record (a STRUCT column) rather than a
    /// scalar wrapped in a one-field record to decode it.
    key_is_record: bool,
    value: ValueFormat,
    value_schema: SchemaRef,
    /// The `key` column, then the value's.
    schema: SchemaRef,
}

impl KeyedFormat {
    /// `value` (whose columns are `value_schema`) with keys of `key`'s
    /// format (decoding into `key_schema`); `None` when the value already
    /// has a column named `key`.
    pub fn new(
        key: ValueFormat,
        key_schema: SchemaRef,
        key_is_record: bool,
        value: ValueFormat,
        value_schema: SchemaRef,
    ) -> Option<Self> {
        if value_schema.field_with_name(KEY_COLUMN).is_ok() {
            return None;
        }
        let key_type = if key_is_record {
            DataType::Struct(key_schema.fields().clone())
        } else {
            key_schema.field(0).data_type().clone()
        };
        let mut fields = vec![Arc::new(Field::new(KEY_COLUMN, key_type, true))];
        fields.extend(value_schema.fields().iter().cloned());
        Some(Self {
            key,
            key_schema,
            key_is_record,
            value,
            value_schema,
            schema: Arc::new(Schema::new(fields)),
        })
    }

    /// The `key` column and the value's columns.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The value's format.
    pub fn value(&self) -> &ValueFormat {
        &self.value
    }

    /// The key's format.
    pub fn key(&self) -> &ValueFormat {
        &self.key
    }
}

/// Decodes keys and values side by side.
#[derive(Debug)]
pub struct KeyedDecoder {
    format: Arc<KeyedFormat>,
    key: Box<dyn ValueDecoder>,
    value: Box<dyn ValueDecoder>,
    /// Whether each row of the batch has a key.
    present: Vec<bool>,
}

impl KeyedDecoder {
    /// A decoder of `format`.
    pub fn new(format: Arc<KeyedFormat>) -> Result<Self> {
        let key = value_decoder(&format.key, &format.key_schema)?.expect("keys decode");
        let value = value_decoder(&format.value, &format.value_schema)?
            .expect("a keyed format's value decodes");
        Ok(Self {
            format,
            key,
            value,
            present: Vec::new(),
        })
    }
}

impl ValueDecoder for KeyedDecoder {
    fn append(&mut self, value: Option<&[u8]>) {
        self.append_record(None, value);
    }

    fn append_record(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) {
        self.present.push(key.is_some());
        self.key.append(key);
        self.value.append(value);
    }

    fn finish(&mut self) -> Result<DecodedValues> {
        let key = self.key.finish()?;
        let value = self.value.finish()?;
        let present = std::mem::take(&mut self.present);
        let key_column: ArrayRef = if self.format.key_is_record {
            let fields = self.format.key_schema.fields().clone();
            // A null key, or one that did not decode, is a null struct.
            let valid: Vec<bool> = present
                .iter()
                .enumerate()
                .map(|(row, present)| *present && key.errors.is_null(row))
                .collect();
            let nulls = Some(NullBuffer::from(valid));
            Arc::new(StructArray::try_new(fields, key.columns, nulls)?)
        } else {
            Arc::clone(&key.columns[0])
        };
        let key_errors = key.errors.as_string::<i32>();
        let value_errors = value.errors.as_string::<i32>();
        let errors: StringArray = (0..value_errors.len())
            .map(|row| {
                let key_error = key_errors.is_valid(row).then(|| key_errors.value(row));
                let value_error = value_errors.is_valid(row).then(|| value_errors.value(row));
                match (key_error, value_error) {
                    (None, None) => None,
                    (Some(k), None) => Some(format!("key: {k}")),
                    (None, Some(v)) => Some(v.to_string()),
                    (Some(k), Some(v)) => Some(format!("key: {k}; value: {v}")),
                }
            })
            .collect();
        let mut columns = Vec::with_capacity(value.columns.len() + 1);
        columns.push(key_column);
        columns.extend(value.columns);
        Ok(DecodedValues {
            columns,
            errors: Arc::new(errors),
            undecoded: value.undecoded,
        })
    }
}

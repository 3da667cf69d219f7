//! Value formats: how a message's value bytes become a table's columns.
//!
//! A format is kept apart from where the bytes come from (a scan, a stream,
//! the compactor): each gets a [`ValueDecoder`] from [`value_decoder`] and
//! feeds it the values of one batch in order. A decoder never drops a value
//! and never fails on bad input: a value that does not decode is a row of
//! nulls with the reason in `_error` and its bytes in `_value`. Only what is
//! not the message's fault (a registry that is down) is an error of the scan.
//!
//! One module per format ([`json`], [`avro`], [`protobuf`]); values framed for a schema
//! registry are split by [`framing`], and writer schemas come from the
//! [`registry`].

use std::fmt::{self, Debug};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BinaryArray, StringArray, new_null_array};
use datafusion::arrow::compute::interleave;
use datafusion::arrow::datatypes::{DataType, Field, Fields, SchemaRef};

use crate::error::Result;

pub mod avro;
pub mod csv;
pub mod framing;
#[cfg(test)]
mod fuzz;
pub mod json;
pub mod json_schema;
pub mod json_timestamps;
pub mod keyed;
pub mod protobuf;
pub mod registry;
pub mod string;

pub use avro::{AvroFormat, AvroFraming};
pub use protobuf::ProtobufFormat;
pub use registry::{RegistryOptions, SchemaRegistry};

/// The one shape of a map column, whatever declared it (a column list, a
/// JSON Schema, a Protobuf map): entries of a non-null `key` and a nullable
/// `value`, unsorted, so maps from every format compare equal in both tiers.
pub fn map_type(key: DataType, value: DataType) -> DataType {
    let entries = Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("key", key, false),
            Field::new("value", value, true),
        ])),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

/// How a topic's value bytes become columns.
#[derive(Debug, Clone)]
pub enum ValueFormat {
    /// One JSON object per message; with the columns as declared when
    /// they differ from the table's (a timestamp's declared unit is what its
    /// numbers count, see [`json_timestamps`]).
    Json(Option<SchemaRef>),
    /// The value is not decoded: `_value BINARY`.
    Raw,
    /// The value is UTF-8 text: one VARCHAR column.
    String,
    /// One CSV record per message, declared `columns`.
    Csv,
    /// Avro, plain or framed for a schema registry.
    Avro(Arc<AvroFormat>),
    /// Protobuf in the Confluent wire format.
    Protobuf(Arc<ProtobufFormat>),
    /// JSON in the Confluent wire format, columns from a JSON Schema.
    JsonSchema(Arc<json_schema::JsonSchemaFormat>),
    /// A decoded value with its key decoded too (the `key` column).
    Keyed(Arc<keyed::KeyedFormat>),
}

impl fmt::Display for ValueFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Json(_) => "json",
            Self::Raw => "raw",
            Self::String => "string",
            Self::Csv => "csv",
            Self::Avro(avro) => match avro.framing() {
                AvroFraming::Plain => "avro",
                AvroFraming::Confluent => "avro-confluent",
            },
            Self::Protobuf(_) => "protobuf-confluent",
            Self::JsonSchema(_) => "json-schema",
            Self::Keyed(keyed) => return write!(f, "{} (key: {})", keyed.value(), keyed.key()),
        })
    }
}

impl ValueFormat {
    /// Whether values are decoded into declared columns (with `_error`, and
    /// `_value` kept only for values that did not decode), rather than kept
    /// whole in `_value`.
    pub fn decodes(&self) -> bool {
        !matches!(self, Self::Raw)
    }

    /// Whether decoding a value may wait on a schema registry (a lookup
    /// blocks its thread, so it must not run on the async runtime's).
    pub fn asks_a_registry(&self) -> bool {
        match self {
            Self::Json(_) | Self::Raw | Self::String | Self::Csv => false,
            Self::Avro(avro) => avro.framing() == AvroFraming::Confluent,
            Self::Protobuf(_) | Self::JsonSchema(_) | Self::Keyed(_) => true,
        }
    }
}

/// The decoded columns of one batch of values.
#[derive(Debug)]
pub struct DecodedValues {
    /// One column per value field, one row per value.
    pub columns: Vec<ArrayRef>,
    /// Why a value did not decode (null where it did, or for a tombstone).
    pub errors: ArrayRef,
    /// The bytes of each value that did not decode, so nothing is lost,
    /// and of each that decoded to nothing (every column null), so that no
    /// value reads like a tombstone (a null value: a row of nulls).
    pub undecoded: ArrayRef,
}

/// The `undecoded` column of a batch of `raw` values decoded into
/// `columns`: the bytes of each value that did not decode (`failed`) or
/// that decoded to a row of nulls.
pub(crate) fn kept_values(
    raw: &BinaryArray,
    columns: &[ArrayRef],
    failed: impl Fn(usize) -> bool,
) -> BinaryArray {
    // A column without nulls rules out empty rows: the common case costs
    // one look per column.
    let may_be_empty = columns.iter().all(|c| c.null_count() > 0);
    (0..raw.len())
        .map(|row| {
            let keep = raw.is_valid(row)
                && (failed(row) || (may_be_empty && columns.iter().all(|c| c.is_null(row))));
            keep.then(|| raw.value(row))
        })
        .collect()
}

impl DecodedValues {
    /// The batch's values as rows: `decoded` has a row for each value at
    /// `rows` (in order), of `fields`' types; every other value is a row of
    /// nulls. `errors` has one entry per value, and a value with an error
    /// keeps its bytes in `undecoded`.
    pub(crate) fn spread(
        raw: &BinaryArray,
        decoded: &[ArrayRef],
        fields: &Fields,
        rows: &[usize],
        errors: Vec<Option<String>>,
    ) -> Result<Self> {
        if rows.len() == raw.len() {
            // Every value decoded (`rows` is then 0..n): the columns are
            // already the rows, in order.
            let columns = decoded.to_vec();
            let undecoded = kept_values(raw, &columns, |row| errors[row].is_some());
            return Ok(Self {
                columns,
                errors: Arc::new(StringArray::from(errors)),
                undecoded: Arc::new(undecoded),
            });
        }
        let mut indices = vec![(1, 0); raw.len()];
        for (position, &row) in rows.iter().enumerate() {
            indices[row] = (0, position);
        }
        let mut columns = Vec::with_capacity(fields.len());
        for (column, field) in decoded.iter().zip(fields) {
            let null = new_null_array(field.data_type(), 1);
            columns.push(interleave(&[column.as_ref(), null.as_ref()], &indices)?);
        }
        let undecoded = kept_values(raw, &columns, |row| errors[row].is_some());
        Ok(Self {
            columns,
            errors: Arc::new(StringArray::from(errors)),
            undecoded: Arc::new(undecoded),
        })
    }
}

/// Turns the values of a batch, appended in order, into columns.
///
/// `append` is on the reader's hot path: it may only buffer or decode
/// incrementally; `finish` produces the batch's columns and resets the
/// decoder for the next batch.
pub trait ValueDecoder: Debug + Send {
    /// Adds one value (`None`: a tombstone, a row of nulls and no error).
    fn append(&mut self, value: Option<&[u8]>);

    /// Adds one record's key and value; formats that decode only the value
    /// ignore the key.
    fn append_record(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) {
        let _ = key;
        self.append(value);
    }

    /// Decodes everything appended since the last call, one row per value.
    fn finish(&mut self) -> Result<DecodedValues>;

    /// Decodes a batch of records' keys and values at once (after anything
    /// appended and not finished yet), one row per value. Formats that can
    /// read the batch's arrays in place override it to skip copying each
    /// value into a buffer of their own.
    fn decode_batch(&mut self, keys: &BinaryArray, values: &BinaryArray) -> Result<DecodedValues> {
        for row in 0..values.len() {
            let key = keys.is_valid(row).then(|| keys.value(row));
            let value = values.is_valid(row).then(|| values.value(row));
            self.append_record(key, value);
        }
        self.finish()
    }
}

/// A decoder of `format` values into `value_schema`'s columns, or `None` for
/// a format that keeps values whole (`raw`).
pub fn value_decoder(
    format: &ValueFormat,
    value_schema: &SchemaRef,
) -> Result<Option<Box<dyn ValueDecoder>>> {
    Ok(match format {
        ValueFormat::Raw => None,
        ValueFormat::Json(declared) => Some(Box::new(json::JsonDecoder::declared(
            value_schema.clone(),
            declared.clone().unwrap_or_else(|| value_schema.clone()),
        )?)),
        ValueFormat::String => Some(Box::new(string::StringDecoder::default())),
        ValueFormat::Csv => Some(Box::new(csv::CsvDecoder::new(value_schema.clone()))),
        ValueFormat::Avro(avro) => Some(Box::new(avro::AvroDecoder::new(Arc::clone(avro)))),
        ValueFormat::Protobuf(protobuf) => Some(Box::new(protobuf::ProtobufDecoder::new(
            Arc::clone(protobuf),
        ))),
        ValueFormat::JsonSchema(format) => Some(Box::new(json_schema::JsonSchemaDecoder::new(
            Arc::clone(format),
        )?)),
        ValueFormat::Keyed(keyed) => Some(Box::new(keyed::KeyedDecoder::new(Arc::clone(keyed))?)),
    })
}

//! Kafka records into Arrow record batches.
//!
//! [`BatchAssembler`] collects records (metadata columns straight into Arrow
//! builders, value bytes kept until the batch is cut) and turns them into one
//! `RecordBatch` of the table's schema. The JSON path decodes a whole batch
//! with arrow-json and only falls back to one record at a time when the batch
//! contains a record that does not fit the declared columns, so the common
//! case costs one vectorised decode and a bad record costs only itself: it
//! becomes a row of nulls with the reason in `_error`, never a crash or a gap.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, Int32Builder, Int64Builder, MapBuilder, StringArray, StringBuilder,
    TimestampMillisecondBuilder, new_null_array,
};
use datafusion::arrow::compute::interleave;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::record_batch::RecordBatch;

use crate::config::ValueFormat;
use crate::error::Result;

/// One Kafka record, borrowed from the client's buffer.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp in milliseconds since the epoch, if the record has one.
    pub timestamp_ms: Option<i64>,
    /// Key bytes; `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// Value bytes; `None` for a tombstone.
    pub value: Option<&'a [u8]>,
}

/// Builds record batches of one table's schema from Kafka records.
#[derive(Debug)]
pub struct BatchAssembler {
    schema: SchemaRef,
    format: ValueFormat,
    value_schema: SchemaRef,
    partition: Int32Builder,
    offset: Int64Builder,
    timestamp: TimestampMillisecondBuilder,
    key: BinaryBuilder,
    headers: MapBuilder<StringBuilder, BinaryBuilder>,
    raw_values: BinaryBuilder,
    json_values: Vec<Option<Vec<u8>>>,
    rows: usize,
    bytes: usize,
}

impl BatchAssembler {
    /// An assembler for a table of `format` whose value columns are `value_schema`.
    pub fn new(format: ValueFormat, value_schema: SchemaRef) -> Self {
        Self {
            schema: crate::columns::table_schema(format, &value_schema),
            format,
            value_schema,
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            timestamp: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            key: BinaryBuilder::new(),
            headers: MapBuilder::new(None, StringBuilder::new(), BinaryBuilder::new()),
            raw_values: BinaryBuilder::new(),
            json_values: Vec::new(),
            rows: 0,
            bytes: 0,
        }
    }

    /// The schema of the batches this assembler produces.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Number of records appended since the last [`Self::finish`].
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Key, value and header bytes appended since the last [`Self::finish`]:
    /// with large values, batches are cut by size before they reach
    /// `batch_size` rows, so memory stays bounded whatever the record size.
    pub fn buffered_bytes(&self) -> usize {
        self.bytes
    }

    /// Whether no record was appended since the last [`Self::finish`].
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one record. `headers` yields each header in order; repeated
    /// names are kept (a map column allows duplicate keys, as Kafka does).
    pub fn append<'h>(
        &mut self,
        record: RecordRef<'_>,
        headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
    ) -> Result<()> {
        self.partition.append_value(record.partition);
        self.offset.append_value(record.offset);
        self.timestamp.append_option(record.timestamp_ms);
        self.key.append_option(record.key);
        let mut bytes = record.key.map_or(0, <[u8]>::len) + record.value.map_or(0, <[u8]>::len);
        for (name, value) in headers {
            bytes += name.len() + value.map_or(0, <[u8]>::len);
            self.headers.keys().append_value(name);
            self.headers.values().append_option(value);
        }
        self.bytes += bytes;
        self.headers.append(true)?;
        match self.format {
            ValueFormat::Raw => self.raw_values.append_option(record.value),
            ValueFormat::Json => self.json_values.push(record.value.map(<[u8]>::to_vec)),
        }
        self.rows += 1;
        Ok(())
    }

    /// Cuts a batch of everything appended so far and resets the builders.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.timestamp.finish()),
            Arc::new(self.key.finish()),
        ];
        let headers: ArrayRef = Arc::new(self.headers.finish());
        match self.format {
            ValueFormat::Raw => {
                columns.push(Arc::new(self.raw_values.finish()));
                columns.push(headers);
            }
            ValueFormat::Json => {
                columns.push(headers);
                let values = std::mem::take(&mut self.json_values);
                let (decoded, errors) = decode_json(&values, &self.value_schema)?;
                columns.extend(decoded);
                columns.push(errors);
            }
        }
        self.rows = 0;
        self.bytes = 0;
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

/// Whether the JSON decoder can produce a column of this type.
pub fn json_supports(data_type: &datafusion::arrow::datatypes::DataType) -> bool {
    let schema = Schema::new(vec![Field::new("c", data_type.clone(), true)]);
    ReaderBuilder::new(Arc::new(schema)).build_decoder().is_ok()
}

/// Decodes JSON values into `schema`'s columns plus an `_error` column.
///
/// A `None` value (tombstone) is a row of nulls with no error. A value that is
/// not a JSON object, or whose fields do not convert to the declared types, is
/// a row of nulls with the reason. Fields not declared are ignored and
/// declared fields that are missing are null.
fn decode_json(
    values: &[Option<Vec<u8>>],
    schema: &SchemaRef,
) -> Result<(Vec<ArrayRef>, ArrayRef)> {
    let mut errors: Vec<Option<String>> = vec![None; values.len()];
    let mut decodable = Vec::with_capacity(values.len());
    for (row, value) in values.iter().enumerate() {
        if let Some(bytes) = value {
            match check_json_object(bytes) {
                Ok(()) => decodable.push(row),
                Err(why) => errors[row] = Some(why),
            }
        }
    }

    let decoded = match decode_rows(values, &decodable, schema) {
        Ok(batch) => batch,
        Err(_) => {
            // Some record does not fit the declared types: find which, alone.
            decodable.retain(|&row| match decode_rows(values, &[row], schema) {
                Ok(_) => true,
                Err(e) => {
                    errors[row] = Some(match e {
                        ArrowError::JsonError(message) => message,
                        other => other.to_string(),
                    });
                    false
                }
            });
            decode_rows(values, &decodable, schema)?
        }
    };

    // Spread the decoded rows back over all rows; the others take nulls.
    let mut indices = vec![(1, 0); values.len()];
    for (position, &row) in decodable.iter().enumerate() {
        indices[row] = (0, position);
    }
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (column, field) in decoded.columns().iter().zip(schema.fields()) {
        let null = new_null_array(field.data_type(), 1);
        columns.push(interleave(&[column.as_ref(), null.as_ref()], &indices)?);
    }
    let errors: ArrayRef = Arc::new(StringArray::from(errors));
    Ok((columns, errors))
}

/// Rejects what arrow-json would reject for the whole batch: bytes that are
/// not exactly one JSON object.
fn check_json_object(bytes: &[u8]) -> std::result::Result<(), String> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => "JSON value is not an object".to_string(),
                Err(e) => format!("invalid JSON: {e}"),
            },
        );
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map(|_| ())
        .map_err(|e| format!("invalid JSON: {e}"))
}

fn decode_rows(
    values: &[Option<Vec<u8>>],
    rows: &[usize],
    schema: &SchemaRef,
) -> std::result::Result<RecordBatch, ArrowError> {
    let mut decoder = ReaderBuilder::new(Arc::clone(schema))
        .with_batch_size(rows.len().max(1))
        .build_decoder()?;
    for &row in rows {
        let bytes = values[row].as_deref().unwrap_or_default();
        // Each value was checked to be exactly one object and the batch size
        // is the row count, so the decoder must take every byte.
        let taken = decoder.decode(bytes)? + decoder.decode(b"\n")?;
        if taken != bytes.len() + 1 {
            return Err(ArrowError::JsonError(format!(
                "decoder stopped after {taken} of {} bytes",
                bytes.len() + 1
            )));
        }
    }
    Ok(decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(schema))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray, MapArray};
    use datafusion::arrow::datatypes::{DataType, Int64Type};

    fn orders_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("customer", DataType::Utf8, true),
        ]))
    }

    fn record(offset: i64, value: Option<&[u8]>) -> RecordRef<'_> {
        RecordRef {
            partition: 2,
            offset,
            timestamp_ms: Some(1_700_000_000_000 + offset),
            key: Some(b"k"),
            value,
        }
    }

    #[test]
    fn json_rows_keep_their_order_and_errors() {
        let mut a = BatchAssembler::new(ValueFormat::Json, orders_schema());
        let values: [Option<&[u8]>; 6] = [
            Some(br#"{"id": 1, "customer": "ada"}"#),
            Some(b"not json"),
            None,
            Some(br#"{"id": "seven", "customer": "bob"}"#),
            Some(br#"{"customer": "\u00e9l\u00e8ve \u2603", "extra": true}"#),
            Some(b"[1, 2]"),
        ];
        for (i, v) in values.iter().enumerate() {
            a.append(record(i as i64 * 2, *v), [("h", Some(&b"v"[..]))])
                .unwrap();
        }
        let batch = a.finish().unwrap();
        assert_eq!(batch.num_rows(), 6);
        let offsets = batch.column(1).as_primitive::<Int64Type>();
        assert_eq!(offsets.values().to_vec(), vec![0, 2, 4, 6, 8, 10]);
        let ids = batch
            .column_by_name("id")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(
            ids.iter().collect::<Vec<_>>(),
            vec![Some(1), None, None, None, None, None]
        );
        let customers = batch.column_by_name("customer").unwrap().as_string::<i32>();
        assert_eq!(customers.value(0), "ada");
        assert_eq!(customers.value(4), "élève ☃");
        assert!(
            customers.is_null(3),
            "a row that failed keeps no partial fields"
        );
        let errors = batch.column_by_name("_error").unwrap().as_string::<i32>();
        assert!(errors.is_null(0) && errors.is_null(2) && errors.is_null(4));
        assert!(
            errors.value(1).contains("invalid JSON"),
            "{}",
            errors.value(1)
        );
        assert!(errors.value(3).contains("seven"), "{}", errors.value(3));
        assert!(
            errors.value(5).contains("not an object"),
            "{}",
            errors.value(5)
        );
        let headers = batch.column_by_name("_headers").unwrap();
        let headers = headers.as_any().downcast_ref::<MapArray>().unwrap();
        assert_eq!(headers.value(5).len(), 1);
    }

    #[test]
    fn raw_rows_keep_bytes_and_repeated_headers() {
        let mut a = BatchAssembler::new(ValueFormat::Raw, Arc::new(Schema::empty()));
        a.append(
            record(5, Some(b"\x00\xff")),
            [("a", Some(&b"1"[..])), ("a", None)],
        )
        .unwrap();
        a.append(record(6, None), []).unwrap();
        let batch = a.finish().unwrap();
        assert_eq!(batch.schema(), crate::columns::raw_schema());
        let values = batch.column_by_name("_value").unwrap().as_binary::<i32>();
        assert_eq!(values.value(0), b"\x00\xff");
        assert!(values.is_null(1));
        let headers = batch.column_by_name("_headers").unwrap();
        let headers = headers.as_any().downcast_ref::<MapArray>().unwrap();
        assert_eq!(headers.value(0).len(), 2);
        assert_eq!(headers.value(1).len(), 0);
        assert!(a.is_empty());
        assert_eq!(a.buffered_bytes(), 0);
    }

    #[test]
    fn buffered_bytes_count_keys_values_and_headers() {
        let mut a = BatchAssembler::new(ValueFormat::Raw, Arc::new(Schema::empty()));
        a.append(
            record(0, Some(&[0u8; 100])),
            [("name", Some(&b"12345"[..]))],
        )
        .unwrap();
        assert_eq!(a.buffered_bytes(), 1 + 100 + 4 + 5);
    }
}

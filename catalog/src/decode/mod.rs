//! Kafka records into Arrow record batches.
//!
//! [`BatchAssembler`] collects records (metadata columns straight into Arrow
//! builders, value bytes kept until the batch is cut) and turns them into one
//! `RecordBatch` of the table's schema. Values go through the table format's
//! [`ValueDecoder`](crate::format::ValueDecoder); a record that does not fit
//! the declared columns becomes a row of nulls with the reason in `_error`,
//! never a crash or a gap.
//!
//! Decoding is a half of its own ([`ValueStage`]), which a scan takes to the
//! thread that reads its stream: the reader thread only copies records out
//! of the Kafka client ([`BatchAssembler::finish_undecoded`]) while the
//! values of the batch before are decoded elsewhere.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BinaryArray, BinaryBuilder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
    StructBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::columns::{ERROR, HEADERS, KEY, OFFSET, PARTITION, TIMESTAMP, VALUE};
use crate::error::Result;
use crate::format::{ValueDecoder, ValueFormat, value_decoder};

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
///
/// Only the projected columns are built: `count(*)` decodes no value and
/// copies no key or header. The value is decoded whole whenever any
/// value column or `_error` is projected, so a row reads the same (all its
/// fields, or nulls and the reason) whichever columns a query selects.
#[derive(Debug)]
pub struct BatchAssembler {
    needs: Needs,
    partition: Int32Builder,
    offset: Int64Builder,
    timestamp: TimestampMicrosecondBuilder,
    key: BinaryBuilder,
    headers: ListBuilder<StructBuilder>,
    raw_values: BinaryBuilder,
    /// Keys and values kept for the [`ValueStage`], when values are decoded.
    pending_keys: BinaryBuilder,
    pending_values: BinaryBuilder,
    /// The decoding half, until a reader takes it ([`Self::take_stage`]).
    stage: Option<ValueStage>,
    rows: usize,
    bytes: usize,
}

/// A batch of records whose values are not decoded yet: what a reader hands
/// to its [`ValueStage`].
#[derive(Debug)]
pub struct Undecoded {
    rows: usize,
    partition: Option<ArrayRef>,
    offset: Option<ArrayRef>,
    timestamp: Option<ArrayRef>,
    key: Option<ArrayRef>,
    headers: Option<ArrayRef>,
    raw_values: Option<ArrayRef>,
    /// The keys and values to decode, when the projection decodes them.
    pending: Option<(BinaryArray, BinaryArray)>,
}

impl Undecoded {
    /// The batch's rows.
    pub fn num_rows(&self) -> usize {
        self.rows
    }
}

/// The decoding half of a [`BatchAssembler`]: decodes a batch's values and
/// puts the batch of the table's schema together.
#[derive(Debug)]
pub struct ValueStage {
    schema: SchemaRef,
    value_schema: SchemaRef,
    values: Option<Box<dyn ValueDecoder>>,
}

/// Which parts of a record the projection uses.
#[derive(Debug, Clone, Copy, Default)]
struct Needs {
    partition: bool,
    offset: bool,
    timestamp: bool,
    key: bool,
    headers: bool,
    raw_value: bool,
    decoded: bool,
}

impl BatchAssembler {
    /// An assembler for a table of `format` whose value columns are
    /// `value_schema`, producing the table's columns at `projection` (all
    /// when `None`).
    pub fn new(format: ValueFormat, value_schema: SchemaRef, projection: Option<&[usize]>) -> Self {
        let table = crate::columns::table_schema(&format, &value_schema);
        let schema = match projection {
            Some(p) => Arc::new(table.project(p).expect("projection within the table")),
            None => table,
        };
        // Columns are known by name, so the layout lives only in
        // `columns::table_schema`.
        let mut needs = Needs::default();
        for field in schema.fields() {
            match field.name().as_str() {
                PARTITION => needs.partition = true,
                OFFSET => needs.offset = true,
                TIMESTAMP => needs.timestamp = true,
                KEY => needs.key = true,
                HEADERS => needs.headers = true,
                VALUE if !format.decodes() => needs.raw_value = true,
                // Declared columns, `_error` and the undecoded `_value`.
                _ if format.decodes() => needs.decoded = true,
                other => unreachable!("raw tables have no column {other}"),
            }
        }
        let values = if needs.decoded {
            value_decoder(&format, &value_schema)
                .expect("declared columns are checked when the table is defined")
        } else {
            None
        };
        Self {
            needs,
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            timestamp: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            key: BinaryBuilder::new(),
            headers: ListBuilder::new(StructBuilder::from_fields(
                crate::columns::header_fields(),
                0,
            )),
            raw_values: BinaryBuilder::new(),
            pending_keys: BinaryBuilder::new(),
            pending_values: BinaryBuilder::new(),
            stage: Some(ValueStage {
                schema,
                value_schema,
                values,
            }),
            rows: 0,
            bytes: 0,
        }
    }

    /// The decoding half, for a reader to run where it reads the batches
    /// ([`Self::finish_undecoded`]); [`Self::finish`] decodes here until
    /// then.
    pub fn take_stage(&mut self) -> Option<ValueStage> {
        self.stage.take()
    }

    /// Whether this assembler still decodes ([`Self::finish`]).
    pub fn has_stage(&self) -> bool {
        self.stage.is_some()
    }

    /// Number of records appended since the last [`Self::finish`].
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Key, value and header bytes held since the last [`Self::finish`]:
    /// with large values, batches are cut by size before they reach
    /// `batch_size` rows, so memory stays bounded whatever the record size.
    pub fn buffered_bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the projection reads `_headers` (so a reader gathers them).
    pub fn needs_headers(&self) -> bool {
        self.needs.headers
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
        let needs = self.needs;
        if needs.partition {
            self.partition.append_value(record.partition);
        }
        if needs.offset {
            self.offset.append_value(record.offset);
        }
        if needs.timestamp {
            self.timestamp
                .append_option(record.timestamp_ms.map(|ms| ms.saturating_mul(1000)));
        }
        if needs.key {
            self.key.append_option(record.key);
            self.bytes += record.key.map_or(0, <[u8]>::len);
        }
        if needs.headers {
            let entries = self.headers.values();
            for (name, value) in headers {
                self.bytes += name.len() + value.map_or(0, <[u8]>::len);
                entries
                    .field_builder::<StringBuilder>(0)
                    .expect("header key builder")
                    .append_value(name);
                entries
                    .field_builder::<BinaryBuilder>(1)
                    .expect("header value builder")
                    .append_option(value);
                entries.append(true);
            }
            self.headers.append(true);
        }
        if needs.raw_value {
            self.raw_values.append_option(record.value);
            self.bytes += record.value.map_or(0, <[u8]>::len);
        }
        if needs.decoded {
            self.pending_keys.append_option(record.key);
            self.pending_values.append_option(record.value);
            self.bytes += record.value.map_or(0, <[u8]>::len);
        }
        self.rows += 1;
        Ok(())
    }

    /// Cuts a batch of everything appended so far, its values not decoded
    /// yet, and resets the builders.
    pub fn finish_undecoded(&mut self) -> Undecoded {
        let needs = self.needs;
        let array = |built: bool, array: ArrayRef| built.then_some(array);
        let batch = Undecoded {
            rows: self.rows,
            partition: array(needs.partition, Arc::new(self.partition.finish())),
            offset: array(needs.offset, Arc::new(self.offset.finish())),
            timestamp: array(needs.timestamp, Arc::new(self.timestamp.finish())),
            key: array(needs.key, Arc::new(self.key.finish())),
            headers: array(needs.headers, Arc::new(self.headers.finish())),
            raw_values: array(needs.raw_value, Arc::new(self.raw_values.finish())),
            pending: needs
                .decoded
                .then(|| (self.pending_keys.finish(), self.pending_values.finish())),
        };
        self.rows = 0;
        self.bytes = 0;
        batch
    }

    /// Cuts a batch of everything appended so far, decoded, and resets the
    /// builders.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let batch = self.finish_undecoded();
        self.stage
            .as_mut()
            .expect("finish decodes only while the assembler holds its stage")
            .decode(batch)
    }
}

impl ValueStage {
    /// The schema of the batches it produces.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// `batch` with its values decoded, as a batch of the table's schema.
    pub fn decode(&mut self, batch: Undecoded) -> Result<RecordBatch> {
        let (decoded, errors, undecoded) = match (&mut self.values, &batch.pending) {
            (Some(values), Some((keys, pending))) => {
                let decoded = values.decode_batch(keys, pending)?;
                (
                    decoded.columns,
                    Some(decoded.errors),
                    Some(decoded.undecoded),
                )
            }
            _ => (Vec::new(), None, None),
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for field in self.schema.fields() {
            let built =
                |column: &Option<ArrayRef>| column.clone().expect("a projected column is built");
            let column: ArrayRef = match field.name().as_str() {
                PARTITION => built(&batch.partition),
                OFFSET => built(&batch.offset),
                TIMESTAMP => built(&batch.timestamp),
                KEY => built(&batch.key),
                HEADERS => built(&batch.headers),
                VALUE => batch
                    .raw_values
                    .clone()
                    .or_else(|| undecoded.clone())
                    .expect("_value was built"),
                ERROR => errors.clone().expect("_error was built"),
                name => {
                    let i = self.value_schema.index_of(name)?;
                    Arc::clone(&decoded[i])
                }
            };
            columns.push(column);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(batch.rows));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &options,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};

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
    fn values_decoded_by_a_stage_elsewhere_read_as_those_decoded_here() {
        let values: [Option<&[u8]>; 4] = [
            Some(br#"{"id": 1, "customer": "ada"}"#),
            Some(b"not json"),
            None,
            Some(br#"{"id": 3, "customer": "bob"}"#),
        ];
        let mut here = BatchAssembler::new(ValueFormat::Json(None), orders_schema(), None);
        let mut reader = BatchAssembler::new(ValueFormat::Json(None), orders_schema(), None);
        let mut stage = reader
            .take_stage()
            .expect("a fresh assembler holds its stage");
        assert!(!reader.has_stage() && here.has_stage());
        for round in 0..2 {
            for (i, v) in values.iter().enumerate() {
                let offset = (round * 10 + i) as i64;
                here.append(record(offset, *v), [("h", Some(&b"v"[..]))])
                    .unwrap();
                reader
                    .append(record(offset, *v), [("h", Some(&b"v"[..]))])
                    .unwrap();
            }
            let undecoded = reader.finish_undecoded();
            assert_eq!(undecoded.num_rows(), 4);
            // Sent to another thread, as a scan's batches are.
            let elsewhere = std::thread::spawn(move || stage.decode(undecoded).map(|b| (b, stage)));
            let (batch, back) = elsewhere.join().unwrap().unwrap();
            stage = back;
            assert_eq!(batch, here.finish().unwrap(), "round {round}");
        }
    }

    #[test]
    fn json_rows_keep_their_order_and_errors() {
        let mut a = BatchAssembler::new(ValueFormat::Json(None), orders_schema(), None);
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
        let headers = batch.column_by_name("_headers").unwrap().as_list::<i32>();
        assert_eq!(headers.value(5).len(), 1);
        // The bytes of the values that did not decode are kept, only those.
        let raw = batch.column_by_name("_value").unwrap().as_binary::<i32>();
        assert_eq!(raw.value(1), b"not json");
        assert_eq!(raw.value(3), br#"{"id": "seven", "customer": "bob"}"#);
        assert!(raw.is_null(0) && raw.is_null(2) && raw.is_null(4));
        let timestamps = batch
            .column(2)
            .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(timestamps.value(1), (1_700_000_000_000 + 2) * 1000);
    }

    #[test]
    fn raw_rows_keep_bytes_and_repeated_headers() {
        let mut a = BatchAssembler::new(ValueFormat::Raw, Arc::new(Schema::empty()), None);
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
        let headers = batch.column_by_name("_headers").unwrap().as_list::<i32>();
        assert_eq!(headers.value(0).len(), 2);
        assert_eq!(headers.value(1).len(), 0);
        let first = headers.value(0);
        let first = first.as_struct();
        assert_eq!(first.column(0).as_string::<i32>().value(1), "a");
        assert!(
            first.column(1).is_null(1),
            "a header with no value keeps its null"
        );
        assert!(a.is_empty());
        assert_eq!(a.buffered_bytes(), 0);
    }

    #[test]
    fn buffered_bytes_count_keys_values_and_headers() {
        let mut a = BatchAssembler::new(ValueFormat::Raw, Arc::new(Schema::empty()), None);
        a.append(
            record(0, Some(&[0u8; 100])),
            [("name", Some(&b"12345"[..]))],
        )
        .unwrap();
        assert_eq!(a.buffered_bytes(), 1 + 100 + 4 + 5);
    }

    #[test]
    fn only_projected_columns_are_built() {
        // count(*): no column at all, yet every row counted and no value kept.
        let mut a = BatchAssembler::new(ValueFormat::Json(None), orders_schema(), Some(&[]));
        a.append(record(0, Some(b"not json")), [("h", Some(&b"v"[..]))])
            .unwrap();
        a.append(record(1, Some(br#"{"id": 2}"#)), []).unwrap();
        assert_eq!(a.buffered_bytes(), 0, "nothing but the row count is held");
        let batch = a.finish().unwrap();
        assert_eq!((batch.num_rows(), batch.num_columns()), (2, 0));

        // A value column without _error still sees whole-record decoding:
        // the row whose other field is bad is null, as in a full scan.
        let table = crate::columns::table_schema(&ValueFormat::Json(None), &orders_schema());
        let (offset, id) = (
            table.index_of(OFFSET).unwrap(),
            table.index_of("id").unwrap(),
        );
        let mut a = BatchAssembler::new(
            ValueFormat::Json(None),
            orders_schema(),
            Some(&[offset, id]),
        );
        a.append(record(0, Some(br#"{"id": 1, "customer": [7]}"#)), [])
            .unwrap();
        a.append(record(1, Some(br#"{"id": 2, "customer": "x"}"#)), [])
            .unwrap();
        let batch = a.finish().unwrap();
        assert_eq!(batch.schema().field(1).name(), "id");
        let ids = batch.column(1).as_primitive::<Int64Type>();
        assert_eq!(ids.iter().collect::<Vec<_>>(), vec![None, Some(2)]);
    }
}

//! JSON values into declared columns, one pass of arrow-json per batch.
//!
//! Values are fed to arrow-json's decoder as they arrive, and a cheap check
//! after each one (it starts with `{`, it added exactly one row and left no
//! partial record) proves the rows line up with the records: so the common
//! case is one tokenizing pass, with no per-record parse beforehand. The
//! first value that fails the check, or a batch whose rows do not convert to
//! the declared types, sends that batch down the careful path: each value
//! checked alone with serde_json and, if the types still do not fit, the
//! misfits found by halving, so a bad record costs only its batch and
//! becomes a row of nulls with the reason in `_error`.
//!
//! Timestamp columns are read as text and converted by the one rule in
//! [`super::json_timestamps`], so a number (milliseconds unless the column
//! declares its precision) never becomes a date in 1970. Reading them as
//! text means arrow-json coerces numbers and booleans to text, so a VARCHAR
//! column takes `5` or `true` as `"5"` or `"true"`, as Trino's JSON decoder
//! does.

use std::sync::Arc;

use datafusion::arrow::array::{Array, BinaryArray, BinaryBuilder};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::json::reader::Decoder;
use datafusion::arrow::record_batch::RecordBatch;

use super::json_timestamps::{convert, read_type};
use super::{DecodedValues, ValueDecoder};
use crate::error::Result;

/// Rows the decoder holds before it hands them over (its buffers are sized
/// for this many and reused from batch to batch).
const DECODER_ROWS: usize = 8192;

/// Collects JSON values and decodes them into `schema`'s columns.
#[derive(Debug)]
pub struct JsonDecoder {
    /// The table's columns, as the decoder hands them over.
    schema: SchemaRef,
    /// The columns as declared: the unit each timestamp's numbers count.
    declared: SchemaRef,
    /// The columns as arrow-json reads them: timestamps as text.
    read: SchemaRef,
    raw: BinaryBuilder,
    decoder: Decoder,
    /// Rows decoded and handed over by the decoder so far.
    done: Vec<RecordBatch>,
    /// The rows (positions among all values) the decoder took, in order.
    rows: Vec<usize>,
    values: usize,
    /// A value failed the check: this batch takes the careful path.
    careful: bool,
}

impl JsonDecoder {
    /// Values decoding into `schema`, whose types are also the declared
    /// ones (a number in a microsecond timestamp counts microseconds).
    pub fn new(schema: SchemaRef) -> Result<Self> {
        Self::declared(Arc::clone(&schema), schema)
    }

    /// Values decoding into `schema`, declared as `declared` (the same
    /// columns; its timestamps' units are what numbers count).
    pub fn declared(schema: SchemaRef, declared: SchemaRef) -> Result<Self> {
        let read = Arc::new(Schema::new(
            declared
                .fields()
                .iter()
                .map(|f| Field::new(f.name(), read_type(f.data_type()), f.is_nullable()))
                .collect::<Vec<_>>(),
        ));
        Ok(Self {
            decoder: new_decoder(&read, DECODER_ROWS)?,
            schema,
            declared,
            read,
            raw: BinaryBuilder::new(),
            done: Vec::new(),
            rows: Vec::new(),
            values: 0,
            careful: false,
        })
    }
}

impl ValueDecoder for JsonDecoder {
    fn append(&mut self, value: Option<&[u8]>) {
        self.raw.append_option(value);
        self.feed(value);
    }

    fn finish(&mut self) -> Result<DecodedValues> {
        let raw = self.raw.finish();
        self.finish_with(&raw)
    }

    /// Decodes straight from the batch's array of values, which is also
    /// what a failed row keeps as `_value`: no copy of the values first.
    fn decode_batch(&mut self, _keys: &BinaryArray, values: &BinaryArray) -> Result<DecodedValues> {
        if self.values > 0 {
            // Values appended one by one come first: keep them in order.
            for row in 0..values.len() {
                self.append(values.is_valid(row).then(|| values.value(row)));
            }
            return self.finish();
        }
        for row in 0..values.len() {
            self.feed(values.is_valid(row).then(|| values.value(row)));
        }
        self.finish_with(values)
    }
}

impl JsonDecoder {
    /// Feeds one value to arrow-json's decoder, checking that it adds
    /// exactly one row; the first that does not sends the batch down the
    /// careful path. The caller keeps the value's bytes.
    fn feed(&mut self, value: Option<&[u8]>) {
        let row = self.values;
        self.values += 1;
        let Some(bytes) = value else {
            return;
        };
        if self.careful {
            return;
        }
        if self.decoder.len() >= DECODER_ROWS {
            match self.decoder.flush() {
                Ok(Some(batch)) => self.done.push(batch),
                Ok(None) => {}
                Err(_) => {
                    self.careful = true;
                    return;
                }
            }
        }
        let before = self.decoder.len();
        let one_object = first_byte(bytes) == Some(b'{')
            && matches!(self.decoder.decode(bytes), Ok(used) if used == bytes.len())
            && !self.decoder.has_partial_record()
            && self.decoder.len() == before + 1;
        if one_object {
            self.rows.push(row);
        } else {
            self.careful = true;
        }
    }

    /// The columns of every value fed since the last batch, whose bytes
    /// are `raw`.
    fn finish_with(&mut self, raw: &BinaryArray) -> Result<DecodedValues> {
        let values = std::mem::take(&mut self.values);
        let rows = std::mem::take(&mut self.rows);
        let mut done = std::mem::take(&mut self.done);
        let fast = if std::mem::take(&mut self.careful) {
            None
        } else {
            match self.decoder.flush() {
                Ok(batch) => {
                    done.extend(batch);
                    let read = concat_batches(&self.read, &done)?;
                    self.columns().convert(read).ok()
                }
                Err(_) => None,
            }
        };
        let (decoded, rows, errors) = match fast {
            Some(decoded) => (decoded, rows, vec![None; values]),
            None => {
                // The decoder may hold a partial record: start afresh.
                self.decoder = new_decoder(&self.read, DECODER_ROWS)?;
                careful_decode(raw, &self.columns())?
            }
        };
        DecodedValues::spread(raw, decoded.columns(), self.schema.fields(), &rows, errors)
    }
}

impl JsonDecoder {
    fn columns(&self) -> Columns<'_> {
        Columns {
            output: &self.schema,
            declared: &self.declared,
            read: &self.read,
        }
    }
}

/// A decoder's three views of its columns.
#[derive(Clone, Copy)]
struct Columns<'a> {
    output: &'a SchemaRef,
    declared: &'a SchemaRef,
    read: &'a SchemaRef,
}

impl Columns<'_> {
    /// Rows as arrow-json read them, as the table's columns: fails if a
    /// timestamp does not convert.
    fn convert(&self, read: RecordBatch) -> std::result::Result<RecordBatch, ArrowError> {
        if self.read == self.output {
            return Ok(read);
        }
        let columns = read
            .columns()
            .iter()
            .zip(self.declared.fields().iter().zip(self.output.fields()))
            .map(|(column, (d, o))| convert(column, d.data_type(), o.data_type()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        RecordBatch::try_new(Arc::clone(self.output), columns)
    }
}

/// Whether the JSON decoder can produce a column of this type.
pub fn supports(data_type: &DataType) -> bool {
    let schema = Schema::new(vec![Field::new("c", data_type.clone(), true)]);
    ReaderBuilder::new(Arc::new(schema)).build_decoder().is_ok()
}

fn new_decoder(read: &SchemaRef, rows: usize) -> Result<Decoder> {
    Ok(ReaderBuilder::new(Arc::clone(read))
        .with_batch_size(rows)
        .with_coerce_primitive(true)
        .build_decoder()?)
}

fn first_byte(bytes: &[u8]) -> Option<u8> {
    bytes.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// The careful path: each value checked alone, then the good ones decoded
/// together, or alone if their types do not fit. Returns the decoded rows,
/// which value each is, and each value's error.
fn careful_decode(
    raw: &BinaryArray,
    schema: &Columns<'_>,
) -> Result<(RecordBatch, Vec<usize>, Vec<Option<String>>)> {
    let mut errors: Vec<Option<String>> = vec![None; raw.len()];
    let mut decodable = Vec::with_capacity(raw.len());
    for (row, error) in errors.iter_mut().enumerate() {
        if raw.is_valid(row) {
            match check_json_object(raw.value(row)) {
                Ok(()) => decodable.push(row),
                Err(why) => *error = Some(why),
            }
        }
    }
    let decoded = match decode_rows(raw, &decodable, schema) {
        Ok(batch) => batch,
        Err(_) => {
            // Some record does not fit the declared types: find which by
            // halving, so k bad records cost about k·log(n) small decodes.
            let mut fitting = Vec::with_capacity(decodable.len());
            find_misfits(raw, &decodable, schema, &mut fitting, &mut errors);
            decodable = fitting;
            decode_rows(raw, &decodable, schema)?
        }
    };
    Ok((decoded, decodable, errors))
}

/// Splits `rows` (which together do not decode) until each misfit is alone:
/// rows that decode go to `fitting`, each misfit gets its error.
fn find_misfits(
    raw: &BinaryArray,
    rows: &[usize],
    schema: &Columns<'_>,
    fitting: &mut Vec<usize>,
    errors: &mut [Option<String>],
) {
    match decode_rows(raw, rows, schema) {
        Ok(_) => fitting.extend_from_slice(rows),
        Err(e) if rows.len() == 1 => {
            errors[rows[0]] = Some(match e {
                ArrowError::JsonError(message) => message,
                other => other.to_string(),
            });
        }
        Err(_) => {
            let (left, right) = rows.split_at(rows.len() / 2);
            find_misfits(raw, left, schema, fitting, errors);
            find_misfits(raw, right, schema, fitting, errors);
        }
    }
}

/// Rejects what arrow-json would reject for the whole batch: bytes that are
/// not exactly one JSON object.
fn check_json_object(bytes: &[u8]) -> std::result::Result<(), String> {
    let parsed = serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map_err(|e| format!("invalid JSON: {e}"));
    if first_byte(bytes) != Some(b'{') {
        return Err(parsed
            .err()
            .unwrap_or_else(|| "JSON value is not an object".to_string()));
    }
    parsed.map(|_| ())
}

fn decode_rows(
    raw: &BinaryArray,
    rows: &[usize],
    schema: &Columns<'_>,
) -> std::result::Result<RecordBatch, ArrowError> {
    let mut decoder = ReaderBuilder::new(Arc::clone(schema.read))
        .with_batch_size(rows.len().max(1))
        .with_coerce_primitive(true)
        .build_decoder()?;
    for &row in rows {
        let bytes = raw.value(row);
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
    let read = decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(schema.read)));
    schema.convert(read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;

    fn ids() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]))
    }

    fn decode(values: &[Option<&[u8]>]) -> (Vec<Option<i64>>, Vec<Option<String>>) {
        let mut json = JsonDecoder::new(ids()).unwrap();
        for value in values {
            json.append(*value);
        }
        let decoded = json.finish().unwrap();
        let ids = decoded.columns[0]
            .as_primitive::<Int64Type>()
            .iter()
            .collect();
        let errors = decoded
            .errors
            .as_string::<i32>()
            .iter()
            .map(|e| e.map(str::to_string))
            .collect();
        (ids, errors)
    }

    #[test]
    fn values_that_could_misalign_rows_are_errors_of_their_own() {
        let cases: [&[Option<&[u8]>]; 4] = [
            // An object split over two values.
            &[
                Some(b"{\"id\":1}{\"id\":"),
                Some(b"2}"),
                Some(b"{\"id\":3}"),
            ],
            // Two objects in one value, none in the next.
            &[
                Some(b"{\"id\":1} {\"id\":2}"),
                Some(b""),
                Some(b"{\"id\":3}"),
            ],
            // Not an object.
            &[Some(b"7"), Some(b"[1]"), Some(b"{\"id\":3}")],
            // Does not fit the declared type.
            &[
                Some(b"{\"id\":\"x\"}"),
                Some(b"{\"id\":[]}"),
                Some(b"{\"id\":3}"),
            ],
        ];
        for values in cases {
            let (ids, errors) = decode(values);
            assert_eq!(ids, vec![None, None, Some(3)], "{values:?}");
            assert!(
                errors[0].is_some() && errors[1].is_some(),
                "{values:?}: {errors:?}"
            );
            assert_eq!(errors[2], None);
        }
    }

    #[test]
    fn a_batch_decoded_in_place_reads_as_values_appended_one_by_one() {
        let batches: [&[Option<&[u8]>]; 4] = [
            // Every value decodes: the columns are taken as they are.
            &[Some(b"{\"id\":1}"), Some(b"{\"id\":2}")],
            // A tombstone and a failure among good rows.
            &[Some(b"{\"id\":1}"), None, Some(b"{\"id\":"), Some(b"{}")],
            // A misfit sends the batch down the careful path.
            &[Some(b"{\"id\":\"x\"}"), Some(b"{\"id\":3}")],
            &[],
        ];
        let columns = |d: &DecodedValues| {
            let ids: Vec<Option<i64>> = d.columns[0].as_primitive::<Int64Type>().iter().collect();
            let errors: Vec<Option<String>> = d
                .errors
                .as_string::<i32>()
                .iter()
                .map(|e| e.map(str::to_string))
                .collect();
            let kept: Vec<Option<Vec<u8>>> = d
                .undecoded
                .as_binary::<i32>()
                .iter()
                .map(|v| v.map(<[u8]>::to_vec))
                .collect();
            (ids, errors, kept)
        };
        let mut appended = JsonDecoder::new(ids()).unwrap();
        let mut in_place = JsonDecoder::new(ids()).unwrap();
        for values in batches {
            for value in values {
                appended.append(*value);
            }
            let expected = columns(&appended.finish().unwrap());
            let array: BinaryArray = values.iter().copied().collect();
            let keys: BinaryArray = values.iter().map(|_| None::<&[u8]>).collect();
            let got = columns(&in_place.decode_batch(&keys, &array).unwrap());
            assert_eq!(got, expected, "{values:?}");
        }
        // Values appended before a batch come first.
        in_place.append(Some(b"{\"id\":7}"));
        let array: BinaryArray = [Some(b"{\"id\":8}".as_slice())].into_iter().collect();
        let (ids, errors, _) = columns(&in_place.decode_batch(&array, &array).unwrap());
        assert_eq!((ids, errors), (vec![Some(7), Some(8)], vec![None, None]));
    }

    #[test]
    fn misfits_are_found_among_many_rows() {
        let mut values: Vec<Vec<u8>> = (0..1000)
            .map(|i| format!("{{\"id\": {i}}}").into_bytes())
            .collect();
        for bad in [3, 500, 999] {
            values[bad] = b"{\"id\": \"not a number\"}".to_vec();
        }
        let refs: Vec<Option<&[u8]>> = values.iter().map(|v| Some(v.as_slice())).collect();
        let (ids, errors) = decode(&refs);
        for (row, (id, error)) in ids.iter().zip(&errors).enumerate() {
            if [3, 500, 999].contains(&row) {
                assert!(id.is_none() && error.is_some(), "row {row}");
            } else {
                assert_eq!(
                    (*id, error.as_deref()),
                    (Some(row as i64), None),
                    "row {row}"
                );
            }
        }
    }

    #[test]
    fn good_values_decode_in_one_pass_across_decoder_batches() {
        let values: Vec<Vec<u8>> = (0..DECODER_ROWS as i64 * 2 + 5)
            .map(|i| format!("{{\"id\": {i}, \"extra\": \"ignored\"}}").into_bytes())
            .collect();
        let mut json = JsonDecoder::new(ids()).unwrap();
        for (i, value) in values.iter().enumerate() {
            // A tombstone every 1000 rows: nulls, no error.
            json.append((i % 1000 != 0).then_some(value.as_slice()));
        }
        assert!(!json.careful);
        let decoded = json.finish().unwrap();
        let ids = decoded.columns[0].as_primitive::<Int64Type>();
        assert_eq!(ids.len(), values.len());
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(id, (i % 1000 != 0).then_some(i as i64));
        }
        assert_eq!(decoded.errors.null_count(), values.len());
        assert_eq!(decoded.undecoded.null_count(), values.len());
        // The next batch starts clean.
        json.append(Some(b"{\"id\": 1}"));
        let next = json.finish().unwrap();
        assert_eq!(next.columns[0].as_primitive::<Int64Type>().value(0), 1);
    }

    #[test]
    fn a_value_that_decodes_to_nothing_keeps_its_bytes_unlike_a_tombstone() {
        let mut json = JsonDecoder::new(ids()).unwrap();
        for value in [
            Some(&b"{}"[..]),
            None,
            Some(b"{\"other\": 1}"),
            Some(b"{\"id\": 7}"),
        ] {
            json.append(value);
        }
        let decoded = json.finish().unwrap();
        let kept = decoded.undecoded.as_binary::<i32>();
        let kept: Vec<Option<&[u8]>> = kept.iter().collect();
        assert_eq!(
            kept,
            vec![Some(&b"{}"[..]), None, Some(b"{\"other\": 1}"), None],
            "a row of nulls keeps its bytes; a tombstone has none; a decoded value needs none"
        );
        assert_eq!(decoded.errors.null_count(), 4, "none is an error");
    }
}

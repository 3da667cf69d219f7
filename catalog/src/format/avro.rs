//! Avro values, plain or framed for a schema registry, through arrow-avro.
//!
//! * `avro`: each value is one Avro datum written with the schema given in
//!   the table's definition.
//! * `avro-confluent`: each value is framed `[0][schema id][datum]`
//!   ([`super::framing`]); the datum is decoded with its own writer schema,
//!   fetched from the registry by id, and resolved to the table's reader
//!   schema (Avro's rules: an added field takes its default, a removed one is
//!   skipped), so every version of a subject reads as one table.
//!
//! arrow-avro decodes a batch in one pass but cannot take back half a row:
//! a value that does not decode leaves its decoder unusable. So a batch is
//! decoded whole from the values kept since the last batch, and if that
//! fails, the values that do not decode are found by halving (as the JSON
//! decoder does), each becoming a row of nulls with the reason in `_error`.
//!
//! Decoded columns then take the table's types ([`table_type`]), which are
//! the ones both tiers store: timestamps in microseconds, enums and UUIDs as
//! strings, times of day as microseconds since midnight.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_avro::codec::Tz;
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, ListArray, MapArray, StringArray,
    StructArray, make_array,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

use super::framing;
use super::registry::{RegistryError, SchemaRegistry, SchemaType};
use super::{DecodedValues, ValueDecoder};
use crate::error::{CatalogError, Result};

/// How an Avro value is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AvroFraming {
    /// A bare datum of the definition's schema.
    Plain,
    /// The Confluent wire format: magic byte, schema id, datum.
    Confluent,
}

/// The id a plain table's one schema has in the decoder's schema store.
const PLAIN_ID: u32 = 0;
/// What a plain datum is prefixed with so arrow-avro reads it with
/// [`PLAIN_ID`]'s schema (it only takes framed values).
const PLAIN_PREFIX: [u8; framing::HEADER_LEN] = [0; framing::HEADER_LEN];

/// An Avro table's format: framing, reader schema and where writer schemas
/// come from.
#[derive(Debug)]
pub struct AvroFormat {
    framing: AvroFraming,
    /// Schemas that are not records are decoded as a record with one field,
    /// `key` (the same bytes): keys are often a bare string or long.
    wrap_scalars: bool,
    reader: AvroSchema,
    registry: Option<Arc<SchemaRegistry>>,
    /// What arrow-avro produces for the reader schema.
    decoded_schema: SchemaRef,
    /// The table's value columns.
    value_schema: SchemaRef,
}

impl AvroFormat {
    /// Plain datums written with `schema` (Avro JSON).
    pub fn plain(schema: &str) -> std::result::Result<Self, String> {
        Self::new(AvroFraming::Plain, schema, None)
    }

    /// Registry-framed keys read as `reader`: a schema that is not a record
    /// reads as a record whose one field, `key`, is it. Also says whether
    /// `reader` is a record.
    pub fn confluent_key(
        reader: &str,
        registry: Arc<SchemaRegistry>,
    ) -> std::result::Result<(Self, bool), String> {
        let is_record = is_record(reader);
        let mut format = Self::new(AvroFraming::Confluent, &wrap_scalar(reader), Some(registry))?;
        format.wrap_scalars = true;
        Ok((format, is_record))
    }

    /// Registry-framed datums read as `reader` (Avro JSON), each resolved
    /// from its own writer schema fetched from `registry`.
    pub fn confluent(
        reader: &str,
        registry: Arc<SchemaRegistry>,
    ) -> std::result::Result<Self, String> {
        Self::new(AvroFraming::Confluent, reader, Some(registry))
    }

    fn new(
        framing: AvroFraming,
        schema: &str,
        registry: Option<Arc<SchemaRegistry>>,
    ) -> std::result::Result<Self, String> {
        let reader = AvroSchema::new(schema.to_string());
        let decoded_schema = builder(store_of(PLAIN_ID, &reader)?, &reader, 1)
            .build_decoder()
            .map_err(|e| format!("invalid Avro schema: {e}"))?
            .schema();
        let mut fields = Vec::with_capacity(decoded_schema.fields().len());
        for field in decoded_schema.fields() {
            if field.name().starts_with('_') {
                return Err(format!(
                    "field '{}': names starting with '_' are reserved for metadata columns",
                    field.name()
                ));
            }
            let data_type =
                table_type(field).map_err(|e| format!("field '{}': {e}", field.name()))?;
            fields.push(Field::new(field.name(), data_type, true));
        }
        if fields.is_empty() {
            return Err("the Avro schema is not a record with fields".into());
        }
        Ok(Self {
            framing,
            wrap_scalars: false,
            reader,
            registry,
            decoded_schema,
            value_schema: Arc::new(Schema::new(fields)),
        })
    }

    /// The table's value columns.
    pub fn value_schema(&self) -> &SchemaRef {
        &self.value_schema
    }

    /// The framing.
    pub fn framing(&self) -> AvroFraming {
        self.framing
    }

    /// The reader schema's JSON.
    pub fn reader_schema(&self) -> &str {
        &self.reader.json_string
    }
}

/// Whether an Avro schema (JSON) is a record.
fn is_record(schema: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(schema)
        .ok()
        .is_some_and(|v| v.get("type").and_then(|t| t.as_str()) == Some("record"))
}

/// A schema that is not a record, as a record with one field `key` of it
/// (a record of one field is encoded exactly as that field).
fn wrap_scalar(schema: &str) -> String {
    if is_record(schema) {
        return schema.to_string();
    }
    format!(
        r#"{{"type": "record", "name": "KappaKey", "fields": [{{"name": "key", "type": {schema}}}]}}"#
    )
}

fn store_of(id: u32, schema: &AvroSchema) -> std::result::Result<SchemaStore, String> {
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    store
        .set(Fingerprint::Id(id), schema.clone())
        .map_err(|e| format!("invalid Avro schema: {e}"))?;
    Ok(store)
}

fn builder(store: SchemaStore, reader: &AvroSchema, rows: usize) -> ReaderBuilder {
    ReaderBuilder::new()
        .with_writer_schema_store(store)
        .with_reader_schema(reader.clone())
        .with_tz(Tz::Utc)
        .with_batch_size(rows.max(1))
}

/// Decodes the Avro values of one batch.
#[derive(Debug)]
pub struct AvroDecoder {
    format: Arc<AvroFormat>,
    raw: BinaryBuilder,
    /// Writer schemas that resolve to the reader schema, by id.
    store: SchemaStore,
    /// Ids that cannot be read, with the reason: for the scan when the
    /// schema is unusable (ids are immutable), for the batch when the
    /// registry does not know the id (it may be registered a moment later).
    rejected: HashMap<u32, String>,
    /// Ids the registry did not know, asked again next batch.
    unknown: Vec<u32>,
}

impl AvroDecoder {
    /// A decoder for `format`.
    pub fn new(format: Arc<AvroFormat>) -> Self {
        let store = match format.framing {
            AvroFraming::Plain => {
                store_of(PLAIN_ID, &format.reader).expect("checked when the format was built")
            }
            AvroFraming::Confluent => SchemaStore::new_with_type(FingerprintAlgorithm::Id),
        };
        Self {
            format,
            raw: BinaryBuilder::new(),
            store,
            rejected: HashMap::new(),
            unknown: Vec::new(),
        }
    }

    /// Makes sure the writer schema `id` is known: `Ok(Err(why))` when the
    /// messages written with it cannot be read, `Err` when the registry
    /// cannot be asked (the scan fails rather than guess).
    fn know_writer(&mut self, id: u32) -> Result<std::result::Result<(), String>> {
        if self.store.lookup(&Fingerprint::Id(id)).is_some() {
            return Ok(Ok(()));
        }
        if let Some(why) = self.rejected.get(&id) {
            return Ok(Err(why.clone()));
        }
        let registry = self
            .format
            .registry
            .as_ref()
            .expect("a Confluent-framed format has a registry");
        if id == 0 || id > i32::MAX as u32 {
            // Registries number schemas from 1 with Java ints.
            return Ok(Err(format!("schema id {id} cannot be a registry's id")));
        }
        let verdict = match registry.schema_by_id_blocking(id) {
            Err(RegistryError::NotFound(message)) => {
                self.unknown.push(id);
                Err(format!(
                    "schema id {id} is not in the schema registry ({message})"
                ))
            }
            Err(unavailable) => return Err(CatalogError::Registry(unavailable.to_string())),
            Ok(found) if found.schema_type != SchemaType::Avro => Err(format!(
                "schema id {id} is a {} schema, and this table reads Avro",
                found.schema_type
            )),
            Ok(found) => {
                let writer = if self.format.wrap_scalars {
                    AvroSchema::new(wrap_scalar(&found.schema))
                } else {
                    AvroSchema::new(found.schema.clone())
                };
                match store_of(id, &writer).and_then(|store| {
                    builder(store, &self.format.reader, 1)
                        .build_decoder()
                        .map(drop)
                        .map_err(|e| e.to_string())
                }) {
                    Ok(()) => {
                        self.store
                            .set(Fingerprint::Id(id), writer)
                            .map_err(|e| CatalogError::Registry(e.to_string()))?;
                        Ok(())
                    }
                    Err(e) => Err(format!(
                        "writer schema id {id} does not resolve to the table's schema: {e}"
                    )),
                }
            }
        };
        if let Err(why) = &verdict {
            self.rejected.insert(id, why.clone());
        }
        Ok(verdict)
    }

    /// Decodes the values at `rows` together; an error if any does not.
    fn decode_rows(
        &self,
        raw: &BinaryArray,
        rows: &[usize],
    ) -> std::result::Result<RecordBatch, ArrowError> {
        let schema = &self.format.decoded_schema;
        if rows.is_empty() {
            return Ok(RecordBatch::new_empty(Arc::clone(schema)));
        }
        let mut decoder =
            builder(self.store.clone(), &self.format.reader, rows.len()).build_decoder()?;
        let mut fed = Feed {
            batch_size: rows.len(),
            flushed: 0,
            batches: Vec::new(),
        };
        for (done, &row) in rows.iter().enumerate() {
            let value = raw.value(row);
            let (header, body) = match self.format.framing {
                AvroFraming::Plain => (&PLAIN_PREFIX[..], value),
                AvroFraming::Confluent => value.split_at(framing::HEADER_LEN.min(value.len())),
            };
            fed.value(&mut decoder, header, body, done)?;
        }
        fed.batches.extend(decoder.flush()?);
        let batch = concat_batches(schema, &fed.batches)?;
        if batch.num_rows() != rows.len() {
            return Err(ArrowError::AvroError(format!(
                "{} values decoded into {} rows",
                rows.len(),
                batch.num_rows()
            )));
        }
        Ok(batch)
    }

    /// Splits `rows` (which together do not decode) until each misfit is
    /// alone: rows that decode go to `fitting`, each misfit gets its error.
    fn find_misfits(
        &self,
        raw: &BinaryArray,
        rows: &[usize],
        fitting: &mut Vec<usize>,
        errors: &mut [Option<String>],
    ) {
        match self.decode_rows(raw, rows) {
            Ok(_) => fitting.extend_from_slice(rows),
            Err(e) if rows.len() == 1 => {
                errors[rows[0]] = Some(match e {
                    ArrowError::AvroError(message) | ArrowError::ParseError(message) => {
                        format!("invalid Avro: {message}")
                    }
                    other => format!("invalid Avro: {other}"),
                });
            }
            Err(_) => {
                let (left, right) = rows.split_at(rows.len() / 2);
                self.find_misfits(raw, left, fitting, errors);
                self.find_misfits(raw, right, fitting, errors);
            }
        }
    }
}

/// Feeds values to an arrow-avro decoder one at a time, checking that each
/// is exactly one datum: its header is read as a header (not as the body of
/// a datum the previous value left unfinished), and its body completes one
/// row with no byte left over. arrow-avro itself streams across value
/// boundaries, so without these checks one value's stray bytes could shift
/// every row after it.
struct Feed {
    batch_size: usize,
    /// Rows in the batches flushed so far.
    flushed: usize,
    batches: Vec<RecordBatch>,
}

impl Feed {
    /// Rows decoded so far (valid whenever the batch is not marked full by
    /// a schema switch, which [`Self::flush_if_full`] clears).
    fn rows(&self, decoder: &Decoder) -> usize {
        self.flushed + self.batch_size - decoder.capacity()
    }

    fn flush_if_full(&mut self, decoder: &mut Decoder) -> std::result::Result<(), ArrowError> {
        if decoder.batch_is_full()
            && let Some(batch) = decoder.flush()?
        {
            self.flushed += batch.num_rows();
            self.batches.push(batch);
        }
        Ok(())
    }

    /// Feeds the `done`-th value, split into its framing header and body.
    fn value(
        &mut self,
        decoder: &mut Decoder,
        header: &[u8],
        body: &[u8],
        done: usize,
    ) -> std::result::Result<(), ArrowError> {
        let bad = |why: &str| ArrowError::AvroError(why.to_string());
        self.flush_if_full(decoder)?;
        if decoder.decode(header)? != header.len() || {
            // A header that switched the writer schema marks the batch full.
            self.flush_if_full(decoder)?;
            self.rows(decoder) != done
        } {
            return Err(bad(
                "the datum before this one did not end where its value did",
            ));
        }
        let used = decoder.decode(body)?;
        let rows = self.rows(decoder);
        if rows == done {
            return Err(bad("truncated datum"));
        }
        if used != body.len() || rows != done + 1 {
            return Err(bad("bytes after the datum"));
        }
        Ok(())
    }
}

impl ValueDecoder for AvroDecoder {
    fn append(&mut self, value: Option<&[u8]>) {
        self.raw.append_option(value);
    }

    fn finish(&mut self) -> Result<DecodedValues> {
        for id in self.unknown.drain(..) {
            self.rejected.remove(&id);
        }
        let raw = self.raw.finish();
        let mut errors: Vec<Option<String>> = vec![None; raw.len()];
        let mut rows = Vec::with_capacity(raw.len());
        for (row, error) in errors.iter_mut().enumerate() {
            if raw.is_null(row) {
                continue;
            }
            let verdict = match self.format.framing {
                AvroFraming::Plain => Ok(()),
                AvroFraming::Confluent => match framing::parse(raw.value(row)) {
                    Ok(frame) => self.know_writer(frame.schema_id)?,
                    Err(why) => Err(why),
                },
            };
            match verdict {
                Ok(()) => rows.push(row),
                Err(why) => *error = Some(why),
            }
        }
        let decoded = match self.decode_rows(&raw, &rows) {
            Ok(batch) => batch,
            Err(_) => {
                let mut fitting = Vec::with_capacity(rows.len());
                self.find_misfits(&raw, &rows, &mut fitting, &mut errors);
                rows = fitting;
                match self.decode_rows(&raw, &rows) {
                    Ok(batch) => batch,
                    // Values that decode alone but not together: each alone.
                    Err(_) => {
                        let mut alone = Vec::with_capacity(rows.len());
                        for &row in &rows {
                            alone.push(self.decode_rows(&raw, &[row])?);
                        }
                        concat_batches(&self.format.decoded_schema, &alone)?
                    }
                }
            }
        };
        let fields = self.format.value_schema.fields();
        let columns = decoded
            .columns()
            .iter()
            .zip(fields)
            .map(|(column, field)| to_table_type(column, field.data_type()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        DecodedValues::spread(&raw, &columns, fields, &rows, errors)
    }
}

/// The type an Avro-decoded column has in the table (and the lake).
///
/// Delta Lake and the clients kappa serves set the terms: timestamps in
/// microseconds, no dictionary or view types, no fixed-size binary, no time
/// of day (microseconds since midnight instead), no unions, decimals of at
/// most 38 digits. Nested fields keep their nullability and lose
/// arrow-avro's field metadata, so both tiers compare equal.
pub fn table_type(field: &Field) -> std::result::Result<DataType, String> {
    Ok(match field.data_type() {
        DataType::Dictionary(_, values) if values.as_ref() == &DataType::Utf8 => DataType::Utf8,
        DataType::FixedSizeBinary(16) if is_uuid(field) => DataType::Utf8,
        DataType::FixedSizeBinary(_) => DataType::Binary,
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::Timestamp(_, tz) => {
            DataType::Timestamp(TimeUnit::Microsecond, tz.as_ref().map(|_| "UTC".into()))
        }
        DataType::Time32(_) | DataType::Time64(_) => DataType::Int64,
        DataType::Null => DataType::Utf8,
        DataType::Decimal256(p, _) => {
            return Err(format!(
                "decimal precision {p} is above 38, the most Delta Lake stores"
            ));
        }
        DataType::Union(..) => {
            return Err("unions other than [\"null\", T] are not supported yet".into());
        }
        DataType::Interval(_) => return Err("the duration type is not supported yet".into()),
        DataType::List(item) => DataType::List(Arc::new(Field::new(
            item.name(),
            table_type(item)?,
            item.is_nullable(),
        ))),
        DataType::Struct(fields) if fields.is_empty() => {
            return Err("a record with no fields (Parquet cannot store it)".into());
        }
        DataType::Struct(fields) => DataType::Struct(table_fields(fields)?),
        DataType::Map(entries, sorted) => {
            let DataType::Struct(kv) = entries.data_type() else {
                return Err("a map whose entries are not a struct".into());
            };
            DataType::Map(
                Arc::new(Field::new(
                    entries.name(),
                    DataType::Struct(table_fields(kv)?),
                    false,
                )),
                *sorted,
            )
        }
        other => other.clone(),
    })
}

fn table_fields(fields: &Fields) -> std::result::Result<Fields, String> {
    fields
        .iter()
        .map(|f| {
            // Avro's `null` type becomes a column of nulls, so nullable.
            let nullable = f.is_nullable() || f.data_type() == &DataType::Null;
            table_type(f)
                .map(|t| Field::new(f.name(), t, nullable))
                .map_err(|e| format!("{}: {e}", f.name()))
        })
        .collect()
}

fn is_uuid(field: &Field) -> bool {
    field.metadata().get("logicalType").map(String::as_str) == Some("uuid")
}

/// Converts a decoded column to the table's type ([`table_type`]).
fn to_table_type(array: &ArrayRef, target: &DataType) -> std::result::Result<ArrayRef, ArrowError> {
    // Nested types are always rebuilt: their structs' nulls are pushed down.
    let nested = matches!(
        target,
        DataType::Struct(_) | DataType::List(_) | DataType::Map(..)
    );
    if array.data_type() == target && !nested {
        return Ok(Arc::clone(array));
    }
    Ok(match (array.data_type(), target) {
        (DataType::FixedSizeBinary(16), DataType::Utf8) => {
            let bytes = array.as_fixed_size_binary();
            let text: StringArray = bytes
                .iter()
                .map(|v| v.map(|b| uuid_text(b.try_into().expect("16 bytes"))))
                .collect();
            Arc::new(text)
        }
        (DataType::Time32(_) | DataType::Time64(_), DataType::Int64) => cast(
            &cast(array, &DataType::Time64(TimeUnit::Microsecond))?,
            &DataType::Int64,
        )?,
        (DataType::Struct(_), DataType::Struct(fields)) => {
            let parts = array.as_struct();
            // A field of a null struct reads as null (`address['city']` of
            // a missing address), whatever bytes arrow-avro left beneath it.
            let columns = parts
                .columns()
                .iter()
                .zip(fields)
                .map(|(c, f)| {
                    let c = match c.data_type() {
                        DataType::Null => Arc::clone(c),
                        _ => with_nulls_of(c, parts.nulls())?,
                    };
                    to_table_type(&c, f.data_type())
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Arc::new(StructArray::try_new(
                fields.clone(),
                columns,
                parts.nulls().cloned(),
            )?)
        }
        (DataType::List(_), DataType::List(item)) => {
            let list = array.as_list::<i32>();
            let values = to_table_type(list.values(), item.data_type())?;
            Arc::new(ListArray::try_new(
                Arc::clone(item),
                list.offsets().clone(),
                values,
                list.nulls().cloned(),
            )?)
        }
        (DataType::Map(..), DataType::Map(entries, sorted)) => {
            let map = array.as_map();
            let DataType::Struct(fields) = entries.data_type() else {
                unreachable!("table_type makes map entries a struct")
            };
            let kv = to_table_type(
                &(Arc::new(map.entries().clone()) as ArrayRef),
                &DataType::Struct(fields.clone()),
            )?;
            Arc::new(MapArray::try_new(
                Arc::clone(entries),
                map.offsets().clone(),
                kv.as_struct().clone(),
                map.nulls().cloned(),
                *sorted,
            )?)
        }
        _ => cast(array, target)?,
    })
}

/// `array` with its rows null wherever `parent` is null as well.
fn with_nulls_of(
    array: &ArrayRef,
    parent: Option<&NullBuffer>,
) -> std::result::Result<ArrayRef, ArrowError> {
    let Some(parent) = parent else {
        return Ok(Arc::clone(array));
    };
    let nulls = NullBuffer::union(Some(parent), array.nulls());
    Ok(make_array(
        array.to_data().into_builder().nulls(nulls).build()?,
    ))
}

fn uuid_text(b: [u8; 16]) -> String {
    let hex = |range: std::ops::Range<usize>| {
        b[range]
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    };
    format!(
        "{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Int64Type;

    const READING: &str = r#"{"type": "record", "name": "Reading", "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": "string"}]}"#;

    fn long(n: i64, out: &mut Vec<u8>) {
        let mut z = ((n << 1) ^ (n >> 63)) as u64;
        loop {
            let byte = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn datum(id: i64, name: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        long(id, &mut out);
        long(name.len() as i64, &mut out);
        out.extend_from_slice(name);
        out
    }

    fn decode(format: AvroFormat, values: &[Option<Vec<u8>>]) -> DecodedValues {
        let mut decoder = AvroDecoder::new(Arc::new(format));
        for value in values {
            decoder.append(value.as_deref());
        }
        decoder.finish().unwrap()
    }

    #[test]
    fn plain_values_decode_and_each_bad_one_is_a_row_of_its_own() {
        let mut trailing = datum(5, b"x");
        trailing.push(0x02);
        let values = vec![
            Some(datum(1, b"a")),
            Some(datum(9, b"truncated")[..4].to_vec()),
            Some(datum(2, "é".as_bytes())),
            None,
            Some(trailing),
            Some(datum(6, &[0xff, 0xfe])), // not UTF-8: found only when the batch is built
            Some(datum(3, b"c")),
        ];
        let decoded = decode(AvroFormat::plain(READING).unwrap(), &values);
        let ids: Vec<Option<i64>> = decoded.columns[0]
            .as_primitive::<Int64Type>()
            .iter()
            .collect();
        assert_eq!(
            ids,
            [Some(1), None, Some(2), None, None, None, Some(3)],
            "{:?}",
            decoded.errors
        );
        let names = decoded.columns[1].as_string::<i32>();
        assert_eq!((names.value(0), names.value(2)), ("a", "é"));
        let errors = decoded.errors.as_string::<i32>();
        for row in [1, 4, 5] {
            assert!(
                errors.value(row).starts_with("invalid Avro"),
                "{row}: {errors:?}"
            );
        }
        assert!(errors.is_null(3), "a tombstone is nulls without an error");
        let undecoded = decoded.undecoded.as_binary::<i32>();
        for (row, value) in values.iter().enumerate() {
            let kept = errors.is_valid(row).then(|| value.as_deref().unwrap());
            assert_eq!(undecoded.is_valid(row).then(|| undecoded.value(row)), kept);
        }
    }

    #[test]
    fn stray_bytes_after_a_datum_are_that_value_s_error_and_shift_nothing() {
        // Alone, a datum followed by a header-shaped tail would decode; fed
        // together, the tail would swallow the next value as its body.
        let mut stray = datum(1, b"a");
        stray.extend_from_slice(&[0, 0, 0, 0, 0]);
        let values = vec![Some(stray), Some(datum(2, b"b")), Some(datum(3, b"c"))];
        let decoded = decode(AvroFormat::plain(READING).unwrap(), &values);
        let ids: Vec<Option<i64>> = decoded.columns[0]
            .as_primitive::<Int64Type>()
            .iter()
            .collect();
        assert_eq!(ids, [None, Some(2), Some(3)]);
        let errors = decoded.errors.as_string::<i32>();
        assert!(
            errors.value(0).contains("bytes after the datum"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_record_with_no_fields_is_refused() {
        let empty = r#"{"type": "record", "name": "T", "fields": [
            {"name": "e", "type": {"type": "record", "name": "E", "fields": []}}]}"#;
        assert!(AvroFormat::plain(empty).unwrap_err().contains("no fields"));
    }

    #[test]
    fn a_misfit_among_thousands_costs_only_itself() {
        let mut values: Vec<Option<Vec<u8>>> = (0..5000).map(|i| Some(datum(i, b"name"))).collect();
        values[1234] = Some(vec![0x80]); // an unterminated varint
        let decoded = decode(AvroFormat::plain(READING).unwrap(), &values);
        let ids = decoded.columns[0].as_primitive::<Int64Type>();
        assert_eq!(ids.null_count(), 1);
        assert!(ids.is_null(1234) && ids.value(4999) == 4999);
        assert_eq!(decoded.errors.len() - decoded.errors.null_count(), 1);
    }

    #[test]
    fn columns_take_the_types_both_tiers_store() {
        let schema = r#"{"type": "record", "name": "T", "fields": [
            {"name": "status", "type": {"type": "enum", "name": "S", "symbols": ["A", "B"]}},
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "local", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
            {"name": "ref", "type": {"type": "string", "logicalType": "uuid"}},
            {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 3}},
            {"name": "day", "type": {"type": "int", "logicalType": "date"}},
            {"name": "clock", "type": {"type": "int", "logicalType": "time-millis"}},
            {"name": "hash", "type": {"type": "fixed", "name": "H", "size": 4}},
            {"name": "tags", "type": {"type": "array", "items": {"type": "enum", "name": "Tag", "symbols": ["X"]}}},
            {"name": "maybe", "type": ["null", "int"], "default": null}]}"#;
        let format = AvroFormat::plain(schema).unwrap();
        let types: Vec<String> = format
            .value_schema()
            .fields()
            .iter()
            .map(|f| f.data_type().to_string())
            .collect();
        assert_eq!(
            types,
            [
                "Utf8",
                "Timestamp(µs, \"UTC\")",
                "Timestamp(µs)",
                "Utf8",
                "Decimal128(9, 3)",
                "Date32",
                "Int64",
                "Binary",
                "List(non-null Utf8)",
                "Int32",
            ]
        );
        assert!(
            format
                .value_schema()
                .fields()
                .iter()
                .all(|f| f.is_nullable())
        );

        // A value of that schema converts to exactly those types.
        let mut value = vec![2]; // enum index 1: "B"
        long(1_700_000_000_123, &mut value);
        long(5, &mut value);
        let uuid = "00000000-0000-0000-0000-000000000001";
        long(uuid.len() as i64, &mut value);
        value.extend_from_slice(uuid.as_bytes());
        value.extend_from_slice(&[4, 0x30, 0x39]); // 12345 as two big-endian bytes: 12.345
        long(3, &mut value);
        long(1_000, &mut value);
        value.extend_from_slice(b"abcd");
        value.extend_from_slice(&[2, 0, 0]); // one enum item, then the end of the array
        value.extend_from_slice(&[2, 14]); // union branch 1: int 7
        let decoded = decode(format, &[Some(value)]);
        assert!(decoded.errors.is_null(0), "{:?}", decoded.errors);
        assert_eq!(decoded.columns[0].as_string::<i32>().value(0), "B");
        let at = decoded.columns[1]
            .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(at.value(0), 1_700_000_000_123_000);
        assert_eq!(decoded.columns[3].as_string::<i32>().value(0), uuid);
        assert_eq!(
            decoded.columns[6].as_primitive::<Int64Type>().value(0),
            1_000_000
        );
        assert_eq!(decoded.columns[7].as_binary::<i32>().value(0), b"abcd");
    }

    #[test]
    fn schemas_that_cannot_be_tables_are_refused_with_the_reason() {
        let reserved =
            r#"{"type": "record", "name": "R", "fields": [{"name": "_offset", "type": "long"}]}"#;
        assert!(
            AvroFormat::plain(reserved)
                .unwrap_err()
                .contains("reserved")
        );
        assert!(AvroFormat::plain(r#""long""#).is_err());
        assert!(AvroFormat::plain("{not json").is_err());
        let union = r#"{"type": "record", "name": "U", "fields": [{"name": "u", "type": ["int", "string"]}]}"#;
        assert!(AvroFormat::plain(union).unwrap_err().contains("field 'u'"));
    }
}

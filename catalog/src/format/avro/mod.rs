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
use datafusion::arrow::array::{Array, BinaryArray, BinaryBuilder};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

use super::framing;
use super::registry::{RegistryError, SchemaError, SchemaRegistry, SchemaType};
use super::{DecodedValues, ValueDecoder};
use crate::error::{CatalogError, Result};
pub use references::self_contained;
pub use types::table_type;
use types::to_table_type;

mod references;
mod types;

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
        let schema = references::expand(schema, &HashMap::new()).map_err(|e| e.to_string())?;
        let reader = AvroSchema::new(schema);
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
                let document = match registry.block_on(self_contained(registry, &found)) {
                    Ok(document) => document,
                    Err(SchemaError::Registry(down)) => {
                        return Err(CatalogError::Registry(down.to_string()));
                    }
                    Err(SchemaError::Invalid(why)) => {
                        let why = format!("writer schema id {id}: {why}");
                        self.rejected.insert(id, why.clone());
                        return Ok(Err(why));
                    }
                };
                let writer = if self.format.wrap_scalars {
                    AvroSchema::new(wrap_scalar(&document))
                } else {
                    AvroSchema::new(document)
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

#[cfg(test)]
mod tests;

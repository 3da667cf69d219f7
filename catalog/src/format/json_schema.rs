//! JSON Schema values: JSON in the Confluent wire format (`[0x00][schema
//! id][JSON text]`, what Confluent's `JSONSerializer`s write), with the
//! table's columns taken from the subject's JSON Schema document.
//!
//! The body is plain JSON, matched to the columns by field name like the
//! `json` format (its decoder does the work), so every writer version that
//! renames nothing reads as one table and no writer schema is needed to
//! decode. The id is still checked: a value whose id the registry does not
//! know, or that is not a JSON Schema, is a row with `_error`, as for Avro
//! and Protobuf; a registry that cannot be asked fails the scan.
//!
//! Columns are the properties in the document's order. Types: `integer` → BIGINT, `number` → DOUBLE, `boolean`, `string` →
//! VARCHAR (`format: date-time` → TIMESTAMP(µs, UTC), `format: date` →
//! DATE), `object` with `properties` → STRUCT, `object` with only
//! `additionalProperties` → MAP<VARCHAR, V>, `array` → ARRAY; `["null", T]`
//! or `oneOf`/`anyOf` of `null` and one schema → T; local `$ref`s
//! (`#/definitions/…`, `#/$defs/…`) are followed, a recursive one refused.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BinaryArray, BinaryBuilder, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use serde_json::Value;

use super::json::{self, JsonDecoder};
use super::registry::{RegistryError, SchemaType};
use super::{DecodedValues, SchemaRegistry, ValueDecoder, framing, kept_values};
use crate::error::{CatalogError, Result};

/// `$ref`s followed deeper than this are taken as recursion.
const MAX_DEPTH: usize = 32;

/// JSON Schema values read into a subject's columns.
#[derive(Debug)]
pub struct JsonSchemaFormat {
    value_schema: SchemaRef,
    registry: Arc<SchemaRegistry>,
}

impl JsonSchemaFormat {
    /// Values framed for `registry`, read into the columns of `document`
    /// (the reader's JSON Schema: an object with `properties`).
    pub fn confluent(
        document: &str,
        registry: Arc<SchemaRegistry>,
    ) -> std::result::Result<Self, String> {
        let root: Value =
            serde_json::from_str(document).map_err(|e| format!("not a JSON Schema: {e}"))?;
        let DataType::Struct(fields) = column_type(&root, &root, 0)? else {
            return Err("a JSON Schema of an object (with `properties`) is a table".into());
        };
        for field in &fields {
            if field.name().starts_with('_') {
                return Err(format!(
                    "property '{}': names starting with '_' are kappa's metadata columns",
                    field.name()
                ));
            }
            if !json::supports(field.data_type()) {
                return Err(format!(
                    "property '{}': type {} is not read from JSON",
                    field.name(),
                    field.data_type()
                ));
            }
        }
        Ok(Self {
            value_schema: Arc::new(Schema::new(fields)),
            registry,
        })
    }

    /// The table's columns.
    pub fn value_schema(&self) -> &SchemaRef {
        &self.value_schema
    }
}

/// The column type of the JSON Schema `schema` (within the document `root`).
fn column_type(
    schema: &Value,
    root: &Value,
    depth: usize,
) -> std::result::Result<DataType, String> {
    if depth > MAX_DEPTH {
        return Err("a recursive schema ($ref to itself) has no column type".into());
    }
    let Some(object) = schema.as_object() else {
        return Err(format!("{schema} is not a schema kappa reads"));
    };
    if let Some(reference) = object.get("$ref").and_then(Value::as_str) {
        let target = reference
            .strip_prefix('#')
            .and_then(|pointer| root.pointer(pointer))
            .ok_or_else(|| {
                format!("$ref '{reference}': only references within the document are read")
            })?;
        return column_type(target, root, depth + 1);
    }
    for union in ["oneOf", "anyOf"] {
        if let Some(branches) = object.get(union).and_then(Value::as_array) {
            let mut kept = branches.iter().filter(|b| !is_null_type(b));
            return match (kept.next(), kept.next()) {
                (Some(only), None) => column_type(only, root, depth + 1),
                _ => Err(format!(
                    "{union} of several schemas has no column type (only one and null)"
                )),
            };
        }
    }
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(Value::Array(kinds)) => {
            let mut kept = kinds
                .iter()
                .filter_map(Value::as_str)
                .filter(|k| *k != "null");
            match (kept.next(), kept.next()) {
                (Some(only), None) => only,
                _ => {
                    return Err(format!(
                        "type {kinds:?} has no column type (only one and null)"
                    ));
                }
            }
        }
        None if object.contains_key("enum") => "string",
        None if object.contains_key("properties") => "object",
        _ => return Err(format!("{schema} has no `type`")),
    };
    Ok(match kind {
        "integer" => DataType::Int64,
        "number" => DataType::Float64,
        "boolean" => DataType::Boolean,
        "string" => match object.get("format").and_then(Value::as_str) {
            Some("date-time") => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Some("date") => DataType::Date32,
            _ => DataType::Utf8,
        },
        "array" => {
            let items = object
                .get("items")
                .ok_or("an array without `items` has no column type")?;
            DataType::List(Arc::new(Field::new(
                "item",
                column_type(items, root, depth + 1)?,
                true,
            )))
        }
        "object" => match object.get("properties").and_then(Value::as_object) {
            Some(properties) => {
                let fields = properties
                    .iter()
                    .map(|(name, property)| {
                        column_type(property, root, depth + 1)
                            .map(|t| Field::new(name, t, true))
                            .map_err(|why| format!("property '{name}': {why}"))
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                if fields.is_empty() {
                    return Err("an object with no properties has no column type".into());
                }
                DataType::Struct(Fields::from(fields))
            }
            None => match object.get("additionalProperties") {
                Some(values @ Value::Object(_)) => {
                    super::map_type(DataType::Utf8, column_type(values, root, depth + 1)?)
                }
                _ => return Err("an object with no `properties` has no column type".into()),
            },
        },
        other => return Err(format!("type '{other}' has no column type")),
    })
}

fn is_null_type(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("null")
}

/// Decodes one batch of JSON Schema values.
#[derive(Debug)]
pub struct JsonSchemaDecoder {
    format: Arc<JsonSchemaFormat>,
    json: JsonDecoder,
    raw: BinaryBuilder,
    /// Why each value of the batch could not be given to the JSON decoder.
    frame_errors: Vec<Option<String>>,
    /// What the registry said of each writer id: `Err` for an id whose
    /// values cannot be read.
    ids: HashMap<u32, std::result::Result<(), String>>,
    /// Ids the registry did not know, asked again next batch.
    unknown: Vec<u32>,
    /// The registry could not be asked: the scan fails.
    unavailable: Option<String>,
}

impl JsonSchemaDecoder {
    /// A decoder of `format`'s values.
    pub fn new(format: Arc<JsonSchemaFormat>) -> Result<Self> {
        Ok(Self {
            json: JsonDecoder::new(Arc::clone(&format.value_schema))?,
            format,
            raw: BinaryBuilder::new(),
            frame_errors: Vec::new(),
            ids: HashMap::new(),
            unknown: Vec::new(),
            unavailable: None,
        })
    }

    /// Whether values written with `id` can be read.
    fn check_writer(&mut self, id: u32) -> std::result::Result<(), String> {
        if let Some(verdict) = self.ids.get(&id) {
            return verdict.clone();
        }
        let verdict = match self.format.registry.schema_by_id_blocking(id) {
            Ok(found) if found.schema_type == SchemaType::Json => Ok(()),
            Ok(found) => Err(format!(
                "schema id {id} is a {} schema, and this table reads JSON Schema",
                found.schema_type
            )),
            Err(RegistryError::NotFound(message)) => {
                self.unknown.push(id);
                Err(format!(
                    "schema id {id} is not in the schema registry ({message})"
                ))
            }
            Err(unavailable) => {
                let why = unavailable.to_string();
                self.unavailable.get_or_insert_with(|| why.clone());
                return Err(why);
            }
        };
        self.ids.insert(id, verdict.clone());
        verdict
    }
}

impl ValueDecoder for JsonSchemaDecoder {
    fn append(&mut self, value: Option<&[u8]>) {
        self.raw.append_option(value);
        let Some(bytes) = value else {
            self.json.append(None);
            self.frame_errors.push(None);
            return;
        };
        let checked = framing::parse(bytes)
            .and_then(|frame| self.check_writer(frame.schema_id).map(|()| frame.body));
        match checked {
            Ok(body) => {
                self.json.append(Some(body));
                self.frame_errors.push(None);
            }
            Err(why) => {
                self.json.append(None);
                self.frame_errors.push(Some(why));
            }
        }
    }

    fn finish(&mut self) -> Result<DecodedValues> {
        let raw: BinaryArray = self.raw.finish();
        let frame_errors = std::mem::take(&mut self.frame_errors);
        let decoded = self.json.finish()?;
        for id in self.unknown.drain(..) {
            self.ids.remove(&id);
        }
        if let Some(why) = self.unavailable.take() {
            return Err(CatalogError::Registry(why));
        }
        let json_errors = decoded.errors.as_string::<i32>();
        let errors: StringArray = frame_errors
            .into_iter()
            .enumerate()
            .map(|(row, frame_error)| {
                frame_error.or_else(|| {
                    json_errors
                        .is_valid(row)
                        .then(|| json_errors.value(row).to_string())
                })
            })
            .collect();
        // The whole value is kept, header included, as it was in Kafka.
        let undecoded = kept_values(&raw, &decoded.columns, |row| errors.is_valid(row));
        Ok(DecodedValues {
            columns: decoded.columns,
            errors: Arc::new(errors),
            undecoded: Arc::new(undecoded),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(document: &str) -> std::result::Result<Fields, String> {
        let root: Value = serde_json::from_str(document).unwrap();
        match column_type(&root, &root, 0)? {
            DataType::Struct(fields) => Ok(fields),
            other => Err(format!("{other}")),
        }
    }

    #[test]
    fn json_schema_types_map_to_columns() {
        let fields = columns(
            r##"{"type": "object", "definitions": {"Address": {"type": "object",
                  "properties": {"city": {"type": "string"}}}},
              "properties": {
                "id": {"type": "integer"}, "amount": {"type": ["null", "number"]},
                "paid": {"type": "boolean"}, "at": {"type": "string", "format": "date-time"},
                "on": {"type": "string", "format": "date"}, "status": {"enum": ["NEW", "PAID"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "attrs": {"type": "object", "additionalProperties": {"type": "integer"}},
                "address": {"oneOf": [{"type": "null"}, {"$ref": "#/definitions/Address"}]}}}"##,
        )
        .unwrap();
        let types: Vec<String> = fields
            .iter()
            .map(|f| format!("{} {}", f.name(), f.data_type()))
            .collect();
        assert_eq!(
            types,
            // Properties in the document's order.
            [
                "id Int64",
                "amount Float64",
                "paid Boolean",
                "at Timestamp(µs, \"UTC\")",
                "on Date32",
                "status Utf8",
                "tags List(Utf8)",
                "attrs Map(\"entries\": non-null Struct(\"key\": non-null Utf8, \"value\": Int64), unsorted)",
                "address Struct(\"city\": Utf8)",
            ]
        );
    }

    #[test]
    fn what_has_no_column_type_is_refused() {
        for (document, why) in [
            (
                r#"{"type": "object", "properties": {"a": {"type": ["string", "integer"]}}}"#,
                "property 'a'",
            ),
            (
                r##"{"type": "object", "properties": {"next": {"$ref": "#"}}}"##,
                "recursive",
            ),
            (
                r#"{"type": "object", "properties": {"a": {"$ref": "other.json"}}}"#,
                "within the document",
            ),
            (
                r#"{"type": "object", "properties": {"a": {"type": "array"}}}"#,
                "without `items`",
            ),
            (r#"{"type": "object"}"#, "no `properties`"),
        ] {
            let err = columns(document).unwrap_err();
            assert!(err.contains(why), "{document}: {err}");
        }
    }
}

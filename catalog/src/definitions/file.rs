//! Table definitions from the TOML configuration file the gateway and the
//! compactor share.
//!
//! ```toml
//! [[tables]]
//! name = "orders"
//! topic = "orders"
//! format = "json"
//! columns = "id BIGINT, customer VARCHAR, amount DOUBLE, placed_at TIMESTAMP"
//! ```
//!
//! The column list is SQL ([`super::columns`]).

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use super::columns::{declared_columns, lake_columns, parse_columns};
use crate::changelog::Changelog;
use crate::error::{CatalogError, Result};
use crate::format::avro;
use crate::format::json_schema::JsonSchemaFormat;
use crate::format::json_timestamps::number_units;
use crate::format::keyed::KeyedFormat;
use crate::format::registry::{RegisteredSchema, RegistryError, SchemaError, SchemaType};
use crate::format::{AvroFormat, ProtobufFormat, SchemaRegistry, ValueFormat};

/// The whole configuration file. Unknown keys are errors, so a typo never
/// silently drops a setting.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// Kafka client settings shared by every table.
    #[serde(default)]
    pub kafka: KafkaSection,
    /// Declared tables; undeclared topics are still tables of raw bytes.
    #[serde(default)]
    pub tables: Vec<TableDefinition>,
}

/// `[kafka]`: librdkafka properties for every connection, typically security
/// (`security.protocol`, `sasl.mechanism`, `sasl.username`, `ssl.ca.location`…).
/// A file is a better home for credentials than a command line.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    /// Property name to value, passed to librdkafka as they are.
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
}

/// A value format's name, as written in a definition (Flink's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum FormatName {
    /// One JSON object per message, declared `columns`.
    #[serde(rename = "json")]
    Json,
    /// Bytes as they are.
    #[serde(rename = "raw")]
    Raw,
    /// UTF-8 text, one VARCHAR column (`value`, or the one `columns` names).
    #[serde(rename = "string")]
    String,
    /// One CSV record per message, declared `columns` in field order.
    #[serde(rename = "csv")]
    Csv,
    /// A bare Avro datum of the definition's `schema`.
    #[serde(rename = "avro")]
    Avro,
    /// Avro in the Confluent wire format, writer schemas from the registry.
    #[serde(rename = "avro-confluent")]
    AvroConfluent,
    /// Protobuf in the Confluent wire format, writer schemas from the registry.
    #[serde(rename = "protobuf-confluent")]
    ProtobufConfluent,
    /// JSON in the Confluent wire format, columns from the subject's JSON
    /// Schema.
    #[serde(rename = "json-schema")]
    JsonSchema,
}

impl std::fmt::Display for FormatName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The name a definition gives it: serde's.
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(name)) => f.write_str(&name),
            _ => write!(f, "{self:?}"),
        }
    }
}

/// One `[[tables]]` entry, as written in the file (or made by `CREATE
/// EXTERNAL TABLE`, and stored on the lake in the same shape).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TableDefinition {
    /// SQL name of the table.
    pub name: String,
    /// Kafka topic; defaults to the table name.
    pub topic: Option<String>,
    /// Value format.
    pub format: FormatName,
    /// Avro schema (JSON): what `avro` values are written with; for
    /// `avro-confluent`, the reader schema every writer schema resolves to
    /// (default: the registry subject's).
    #[serde(default)]
    pub schema: Option<String>,
    /// `avro-confluent`, `protobuf-confluent`: the registry subject the
    /// reader schema comes from (default `<topic>-value`, Confluent's
    /// TopicNameStrategy).
    #[serde(default)]
    pub subject: Option<String>,
    /// `avro-confluent`, `protobuf-confluent`: the subject's version to read
    /// as (default: the latest when the definition is read).
    #[serde(default)]
    pub schema_version: Option<u32>,
    /// `protobuf-confluent`: the message whose fields are the columns, by
    /// name (`shop.Order`, or `Order` when unambiguous; default: the first
    /// message of the subject's file, as Confluent's serializers assume).
    #[serde(default)]
    pub message: Option<String>,
    /// How keys decode into the `key` column: `raw` (the default: keys stay
    /// bytes in `_key`), or a registry format (`avro-confluent`,
    /// `protobuf-confluent`, `json-schema`) whose schema is the latest
    /// version of `key_subject`.
    #[serde(default)]
    pub key_format: Option<FormatName>,
    /// The registry subject of the keys' schema (default `<topic>-key`).
    #[serde(default)]
    pub key_subject: Option<String>,
    /// The key subject's version to read keys as (default: the latest when
    /// the definition is read; a definition made by SQL stores the version
    /// it resolved).
    #[serde(default)]
    pub key_schema_version: Option<u32>,
    /// Column list in SQL, for example `id BIGINT, name VARCHAR`. Names keep
    /// their case as written (JSON field names are matched exactly).
    #[serde(default)]
    pub columns: Option<String>,
    /// How far out of order producer timestamps may be, for example `"30s"`:
    /// a record's timestamp is never more than this earlier than that of any
    /// record before it in its partition. With it, `_timestamp < t` stops
    /// reading each partition at its first record at or after `t + skew`.
    #[serde(default)]
    pub timestamp_skew: Option<String>,
    /// `"upsert"`: the topic is a changelog, each record its key's new
    /// value (a null value deletes the key), and the table reads as each
    /// key's latest value (`latest()`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changelog: Option<String>,
}

/// A validated table definition: the value columns are an Arrow schema.
#[derive(Debug, Clone)]
pub struct DeclaredTable {
    /// SQL name.
    pub name: String,
    /// Kafka topic.
    pub topic: String,
    /// Value format (with, for Avro, its reader schema and registry).
    pub format: ValueFormat,
    /// Columns decoded from the value (metadata columns not included).
    pub value_schema: SchemaRef,
    /// The declared bound on timestamp disorder, if any.
    pub timestamp_skew: Option<std::time::Duration>,
    /// How records change keys, for a changelog table (read as each key's
    /// latest value).
    pub changelog: Option<Changelog>,
    /// What it was declared as (`None`: a topic typed by its registry
    /// subject), shown by `SHOW CREATE TABLE`.
    pub definition: Option<Arc<TableDefinition>>,
}

impl CatalogConfig {
    /// Reads and parses a TOML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CatalogError::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml(&text)
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| CatalogError::Config(e.to_string()))
    }

    /// Checks every definition and turns its column list into a schema.
    pub async fn resolve(&self) -> Result<Vec<DeclaredTable>> {
        self.resolve_with(None).await
    }

    /// [`Self::resolve`], taking `avro-confluent` schemas from `registry`.
    pub async fn resolve_with(
        &self,
        registry: Option<&Arc<SchemaRegistry>>,
    ) -> Result<Vec<DeclaredTable>> {
        let mut out: Vec<DeclaredTable> = Vec::with_capacity(self.tables.len());
        for def in &self.tables {
            if out.iter().any(|t| t.name == def.name) {
                return Err(CatalogError::Config(format!(
                    "table '{}' is declared twice",
                    def.name
                )));
            }
            out.push(def.resolve(registry).await?);
        }
        Ok(out)
    }
}

impl TableDefinition {
    /// A definition of `name` reading `topic` as `format`, every option at
    /// its default.
    pub fn new(name: impl Into<String>, topic: impl Into<String>, format: FormatName) -> Self {
        Self {
            name: name.into(),
            topic: Some(topic.into()),
            format,
            schema: None,
            subject: None,
            schema_version: None,
            message: None,
            key_format: None,
            key_subject: None,
            key_schema_version: None,
            columns: None,
            timestamp_skew: None,
            changelog: None,
        }
    }

    /// The topic it reads: `topic`, else the table's name.
    pub fn topic_name(&self) -> String {
        self.topic.clone().unwrap_or_else(|| self.name.clone())
    }

    /// The registry subject of its values: `subject`, else `<topic>-value`.
    pub fn value_subject_name(&self) -> String {
        self.subject
            .clone()
            .unwrap_or_else(|| value_subject(&self.topic_name()))
    }

    /// The registry subject of its keys: `key_subject`, else `<topic>-key`.
    pub fn key_subject_name(&self) -> String {
        self.key_subject
            .clone()
            .unwrap_or_else(|| key_subject(&self.topic_name()))
    }

    /// The value subject's schema at `schema_version` for a registry format
    /// named `format`: the registry, the subject and its schema.
    async fn value_reader<'r>(
        &self,
        registry: Option<&'r Arc<SchemaRegistry>>,
        format: &str,
    ) -> Result<(&'r Arc<SchemaRegistry>, String, RegisteredSchema)> {
        let bad = |why: String| CatalogError::Config(format!("table '{}': {why}", self.name));
        let registry = registry.ok_or_else(|| {
            bad(format!(
                "format \"{format}\" needs a schema registry (--schema-registry)"
            ))
        })?;
        let subject = self.value_subject_name();
        let reader = registered(registry, &subject, self.schema_version)
            .await?
            .ok_or_else(|| bad(format!("subject '{subject}' is not in the schema registry")))?;
        Ok((registry, subject, reader))
    }

    /// This definition, validated, its columns an Arrow schema and its
    /// registry subject looked up.
    pub async fn resolve(&self, registry: Option<&Arc<SchemaRegistry>>) -> Result<DeclaredTable> {
        let bad = |why: String| CatalogError::Config(format!("table '{}': {why}", self.name));
        let topic = self.topic_name();
        let avro = matches!(self.format, FormatName::Avro | FormatName::AvroConfluent);
        let protobuf = self.format == FormatName::ProtobufConfluent;
        let json_schema = self.format == FormatName::JsonSchema;
        if json_schema && (self.schema.is_some() || self.columns.is_some()) {
            return Err(bad("format \"json-schema\" takes its columns from the registry subject's JSON Schema (`subject`, `schema_version`), not `schema` or `columns`".into()));
        }
        if !avro
            && !protobuf
            && !json_schema
            && (self.schema.is_some() || self.subject.is_some() || self.schema_version.is_some())
        {
            return Err(bad(
                "`schema`, `subject` and `schema_version` are options of the Avro formats".into(),
            ));
        }
        if protobuf && (self.schema.is_some() || self.columns.is_some()) {
            return Err(bad("format \"protobuf-confluent\" takes its columns from the registry subject's schema (`subject`, `schema_version`, `message`), not `schema` or `columns`".into()));
        }
        if !protobuf && self.message.is_some() {
            return Err(bad(
                "`message` is an option of \"protobuf-confluent\"".into()
            ));
        }
        if avro && self.columns.is_some() {
            return Err(bad(
                "Avro tables take their columns from the Avro schema, not `columns`".into(),
            ));
        }
        let (format, value_schema) = match (self.format, &self.columns) {
            (FormatName::Json, Some(columns)) => {
                let declared = declared_columns(&self.name, columns).await?;
                let table = Arc::new(lake_columns(&declared));
                let units = Schema::new(
                    declared
                        .fields()
                        .iter()
                        .map(|f| {
                            f.as_ref()
                                .clone()
                                .with_data_type(number_units(f.data_type()))
                        })
                        .collect::<Vec<_>>(),
                );
                (ValueFormat::Json(Some(Arc::new(units))), table)
            }
            (FormatName::Csv, Some(columns)) => {
                let schema = parse_columns(&self.name, columns).await?;
                if let Some(nested) = schema
                    .fields()
                    .iter()
                    .find(|f| !crate::format::csv::supports(f.data_type()))
                {
                    return Err(bad(format!(
                        "column '{}': CSV fields are flat; type {} is not read from CSV",
                        nested.name(),
                        nested.data_type()
                    )));
                }
                (ValueFormat::Csv, schema)
            }
            (FormatName::Csv, None) => {
                return Err(bad(
                    "format \"csv\" needs `columns`, in the order of the fields".into(),
                ));
            }
            (FormatName::Json, None) => {
                return Err(bad("format \"json\" needs `columns`".into()));
            }
            (FormatName::Raw, None) => (ValueFormat::Raw, Arc::new(Schema::empty())),
            (FormatName::Raw, Some(_)) => {
                return Err(bad("format \"raw\" takes no `columns`".into()));
            }
            (FormatName::String, None) => (
                ValueFormat::String,
                crate::format::string::schema(crate::format::string::DEFAULT_COLUMN),
            ),
            (FormatName::String, Some(columns)) => {
                let schema = parse_columns(&self.name, columns).await?;
                match schema.fields().first() {
                    Some(field)
                        if schema.fields().len() == 1 && field.data_type() == &DataType::Utf8 =>
                    {
                        (
                            ValueFormat::String,
                            crate::format::string::schema(field.name()),
                        )
                    }
                    _ => {
                        return Err(bad(
                            "format \"string\" takes one VARCHAR column (default: `value VARCHAR`)"
                                .into(),
                        ));
                    }
                }
            }
            (FormatName::Avro, _) => {
                if self.subject.is_some() || self.schema_version.is_some() {
                    return Err(bad("format \"avro\" takes its `schema` inline; `subject` and `schema_version` are options of \"avro-confluent\"".into()));
                }
                let schema = self.schema.as_deref().ok_or_else(|| {
                    bad("format \"avro\" needs `schema` (use \"avro-confluent\" for values framed for a schema registry)".into())
                })?;
                avro_format(AvroFormat::plain(schema).map_err(bad)?)
            }
            (FormatName::AvroConfluent, _) => {
                let registry = registry.ok_or_else(|| {
                    bad(
                        "format \"avro-confluent\" needs a schema registry (--schema-registry)"
                            .into(),
                    )
                })?;
                let reader = match &self.schema {
                    Some(schema) => schema.clone(),
                    None => {
                        let subject = self.value_subject_name();
                        subject_schema(registry, &subject, self.schema_version)
                            .await?
                            .ok_or_else(|| {
                                bad(format!("subject '{subject}' is not in the schema registry"))
                            })?
                    }
                };
                avro_format(AvroFormat::confluent(&reader, Arc::clone(registry)).map_err(bad)?)
            }
            (FormatName::ProtobufConfluent, _) => {
                let (registry, subject, reader) =
                    self.value_reader(registry, "protobuf-confluent").await?;
                let format = ProtobufFormat::confluent(
                    &reader,
                    self.message.as_deref(),
                    Arc::clone(registry),
                )
                .await
                .map_err(|e| match e {
                    CatalogError::Config(why) => bad(format!("subject '{subject}': {why}")),
                    other => other,
                })?;
                protobuf_format(format)
            }
            (FormatName::JsonSchema, _) => {
                let (registry, subject, reader) =
                    self.value_reader(registry, "json-schema").await?;
                if reader.schema_type != SchemaType::Json {
                    return Err(bad(format!(
                        "subject '{subject}' holds a {} schema, not a JSON Schema",
                        reader.schema_type
                    )));
                }
                json_schema_format(
                    JsonSchemaFormat::confluent(&reader.schema, Arc::clone(registry))
                        .map_err(|why| bad(format!("subject '{subject}': {why}")))?,
                )
            }
        };
        let (format, value_schema) = self.with_keys(registry, format, value_schema).await?;
        let timestamp_skew = self
            .timestamp_skew
            .as_deref()
            .map(|text| {
                humantime::parse_duration(text).map_err(|e| {
                    CatalogError::Config(format!(
                        "table '{}': timestamp_skew = {text:?}: {e}",
                        self.name
                    ))
                })
            })
            .transpose()?;
        let changelog = self
            .changelog
            .as_deref()
            .map(|text| {
                text.parse::<Changelog>()
                    .map_err(|e| CatalogError::Definition(format!("table '{}': {e}", self.name)))
            })
            .transpose()?;
        Ok(DeclaredTable {
            name: self.name.clone(),
            topic,
            format,
            value_schema,
            timestamp_skew,
            changelog,
            definition: Some(Arc::new(self.clone())),
        })
    }
}

impl TableDefinition {
    /// `format` with keys decoded as `key_format` says (unchanged for raw
    /// keys).
    async fn with_keys(
        &self,
        registry: Option<&Arc<SchemaRegistry>>,
        format: ValueFormat,
        value_schema: SchemaRef,
    ) -> Result<(ValueFormat, SchemaRef)> {
        let bad = |why: String| CatalogError::Config(format!("table '{}': {why}", self.name));
        let key_type = match self.key_format {
            None | Some(FormatName::Raw) => {
                if self.key_subject.is_some() || self.key_schema_version.is_some() {
                    return Err(bad(
                        "`key_subject` and `key_schema_version` go with a registry `key_format`"
                            .into(),
                    ));
                }
                return Ok((format, value_schema));
            }
            Some(FormatName::AvroConfluent) => SchemaType::Avro,
            Some(FormatName::ProtobufConfluent) => SchemaType::Protobuf,
            Some(FormatName::JsonSchema) => SchemaType::Json,
            Some(other) => {
                return Err(bad(format!(
                    "key format \"{other}\": keys decode with a registry format (avro-confluent, protobuf-confluent, json-schema) or stay raw"
                )));
            }
        };
        if !format.decodes() {
            return Err(bad(
                "keys are decoded beside a decoded value: give the value a format other than raw"
                    .into(),
            ));
        }
        let registry = registry.ok_or_else(|| {
            bad("a registry key format needs a schema registry (--schema-registry)".into())
        })?;
        let subject = self.key_subject_name();
        let reader = registered(registry, &subject, self.key_schema_version)
            .await?
            .ok_or_else(|| {
                bad(format!(
                    "key subject '{subject}' is not in the schema registry"
                ))
            })?;
        if reader.schema_type != key_type {
            return Err(bad(format!(
                "key subject '{subject}' holds a {} schema, not {key_type}",
                reader.schema_type
            )));
        }
        let (key, key_schema, key_is_record) =
            typed(registry, &reader, true).await.map_err(|e| match e {
                CatalogError::Config(why) => bad(format!("key subject '{subject}': {why}")),
                other => other,
            })?;
        let keyed = KeyedFormat::new(key, key_schema, key_is_record, format, value_schema)
            .ok_or_else(|| {
                bad("the value has a column named `key`, where the decoded key would go".into())
            })?;
        let schema = Arc::clone(keyed.schema());
        Ok((ValueFormat::Keyed(Arc::new(keyed)), schema))
    }
}

impl DeclaredTable {
    /// The table a topic nobody declared is, given a registry: Avro or
    /// Protobuf with the latest version of its `<topic>-value` subject as the
    /// reader schema (for Protobuf, the file's first message), or `None` when
    /// there is no such subject (the topic is then raw). If a
    /// `<topic>-key` subject exists too, keys decode into the `key` column. A
    /// registry that cannot be asked is an error, never a raw table.
    pub async fn from_registry(
        registry: &Arc<SchemaRegistry>,
        topic: &str,
    ) -> Result<Option<Self>> {
        // A subject kappa cannot read yet (JSON Schema, a type with no
        // column type) leaves the topic raw (or its keys undecoded), as it
        // was before the registry: said in the log, never a failed query.
        let subject = value_subject(topic);
        let Some(reader) = registered(registry, &subject, None).await? else {
            return Ok(None);
        };
        let (mut format, mut value_schema, _) = match typed(registry, &reader, false).await {
            Ok(typed) => typed,
            Err(CatalogError::Config(why)) => {
                tracing::warn!(topic, subject, "read as raw bytes: {why}");
                return Ok(None);
            }
            Err(unavailable) => return Err(unavailable),
        };
        let key_subject = key_subject(topic);
        if let Some(key_reader) = registered(registry, &key_subject, None).await? {
            match typed(registry, &key_reader, true).await {
                Ok((key, key_schema, key_is_record)) => {
                    let keyed = KeyedFormat::new(
                        key,
                        key_schema,
                        key_is_record,
                        format.clone(),
                        value_schema.clone(),
                    );
                    if let Some(keyed) = keyed {
                        value_schema = Arc::clone(keyed.schema());
                        format = ValueFormat::Keyed(Arc::new(keyed));
                    }
                }
                Err(CatalogError::Config(why)) => {
                    tracing::warn!(topic, subject = key_subject, "keys not decoded: {why}")
                }
                Err(unavailable) => return Err(unavailable),
            }
        }
        Ok(Some(Self {
            name: topic.to_string(),
            topic: topic.to_string(),
            format,
            value_schema,
            timestamp_skew: None,
            changelog: None,
            definition: None,
        }))
    }
}

/// Confluent's TopicNameStrategy: the subject of a topic's values.
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// Confluent's TopicNameStrategy: the subject of a topic's keys.
pub fn key_subject(topic: &str) -> String {
    format!("{topic}-key")
}

fn avro_format(avro: AvroFormat) -> (ValueFormat, SchemaRef) {
    let value_schema = Arc::clone(avro.value_schema());
    (ValueFormat::Avro(Arc::new(avro)), value_schema)
}

/// The format a registry subject's schema gives a topic's values (or, with
/// `key`, its keys: an Avro scalar reads as a record of one field, `key`),
/// its columns, and whether those are a record's fields. A schema kappa
/// cannot read is [`CatalogError::Config`].
async fn typed(
    registry: &Arc<SchemaRegistry>,
    reader: &RegisteredSchema,
    key: bool,
) -> Result<(ValueFormat, SchemaRef, bool)> {
    match reader.schema_type {
        SchemaType::Avro if key => {
            let reader = avro_document(registry, reader).await?;
            let (avro, is_record) = AvroFormat::confluent_key(&reader, Arc::clone(registry))
                .map_err(CatalogError::Config)?;
            let (format, schema) = avro_format(avro);
            Ok((format, schema, is_record))
        }
        SchemaType::Avro => {
            let reader = avro_document(registry, reader).await?;
            let avro = AvroFormat::confluent(&reader, Arc::clone(registry))
                .map_err(CatalogError::Config)?;
            let (format, schema) = avro_format(avro);
            Ok((format, schema, true))
        }
        SchemaType::Protobuf => {
            let protobuf = ProtobufFormat::confluent(reader, None, Arc::clone(registry)).await?;
            let (format, schema) = protobuf_format(protobuf);
            Ok((format, schema, true))
        }
        SchemaType::Json => {
            let format = JsonSchemaFormat::confluent(&reader.schema, Arc::clone(registry))
                .map_err(CatalogError::Config)?;
            let (format, schema) = json_schema_format(format);
            Ok((format, schema, true))
        }
    }
}

fn json_schema_format(format: JsonSchemaFormat) -> (ValueFormat, SchemaRef) {
    let value_schema = Arc::clone(format.value_schema());
    (ValueFormat::JsonSchema(Arc::new(format)), value_schema)
}

fn protobuf_format(protobuf: ProtobufFormat) -> (ValueFormat, SchemaRef) {
    let value_schema = Arc::clone(protobuf.value_schema());
    (ValueFormat::Protobuf(Arc::new(protobuf)), value_schema)
}

/// A subject's schema at `version` (the latest if `None`), or `None` if the
/// registry has no such subject or version.
pub(crate) async fn registered(
    registry: &SchemaRegistry,
    subject: &str,
    version: Option<u32>,
) -> Result<Option<RegisteredSchema>> {
    match registry.subject_version(subject, version).await {
        Ok(found) => Ok(Some(found)),
        Err(RegistryError::NotFound(_)) => Ok(None),
        Err(unavailable) => Err(CatalogError::Registry(unavailable.to_string())),
    }
}

/// A subject's Avro schema at `version` (the latest if `None`), or `None` if
/// the registry has no such subject or version.
async fn subject_schema(
    registry: &SchemaRegistry,
    subject: &str,
    version: Option<u32>,
) -> Result<Option<String>> {
    match registered(registry, subject, version).await? {
        Some(found) if found.schema_type == SchemaType::Avro => {
            avro_document(registry, &found).await.map(Some)
        }
        Some(found) => Err(CatalogError::Config(format!(
            "subject '{subject}' holds a {} schema; kappa reads Avro subjects so far",
            found.schema_type
        ))),
        None => Ok(None),
    }
}

/// A registered Avro schema as one document, the named types it takes from
/// other subjects written in.
async fn avro_document(registry: &SchemaRegistry, schema: &RegisteredSchema) -> Result<String> {
    avro::self_contained(registry, schema)
        .await
        .map_err(|e| match e {
            SchemaError::Registry(down) => CatalogError::Registry(down.to_string()),
            SchemaError::Invalid(why) => CatalogError::Config(why),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_type_of(schema: &Schema, name: &str) -> Option<DataType> {
        schema
            .field_with_name(name)
            .ok()
            .map(|f| f.data_type().clone())
    }

    #[tokio::test]
    async fn parses_the_readme_example() {
        let cfg = CatalogConfig::from_toml(
            r#"
            [[tables]]
            name = "orders"
            topic = "orders-v1"
            format = "json"
            columns = "id BIGINT, customer VARCHAR, amount DOUBLE, placed_at TIMESTAMP"
            "#,
        )
        .unwrap();
        let tables = cfg.resolve().await.unwrap();
        assert_eq!(tables[0].topic, "orders-v1");
        let s = &tables[0].value_schema;
        assert_eq!(data_type_of(s, "id"), Some(DataType::Int64));
        assert_eq!(data_type_of(s, "customer"), Some(DataType::Utf8));
        assert_eq!(data_type_of(s, "amount"), Some(DataType::Float64));
        assert_eq!(
            data_type_of(s, "placed_at"),
            Some(DataType::Timestamp(
                datafusion::arrow::datatypes::TimeUnit::Microsecond,
                None
            ))
        );
        assert!(s.fields().iter().all(|f| f.is_nullable()));
    }

    #[test]
    fn kafka_properties_are_read() {
        let cfg = CatalogConfig::from_toml(
            "[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"PLAIN\"\n",
        )
        .unwrap();
        assert_eq!(cfg.kafka.properties["security.protocol"], "SASL_SSL");
        assert_eq!(cfg.kafka.properties.len(), 2);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = CatalogConfig::from_toml("[[tables]]\nname='a'\nformat='json'\ncolums='a INT'\n")
            .unwrap_err();
        assert!(err.to_string().contains("colums"), "{err}");
    }

    #[tokio::test]
    async fn bad_column_types_name_the_table() {
        let cfg =
            CatalogConfig::from_toml("[[tables]]\nname='a'\nformat='json'\ncolumns='x NOTATYPE'\n")
                .unwrap();
        let err = cfg.resolve().await.unwrap_err().to_string();
        assert!(err.contains("table 'a'"), "{err}");
    }

    #[tokio::test]
    async fn column_names_keep_their_case() {
        let cfg = CatalogConfig::from_toml(
            "[[tables]]\nname='a'\nformat='json'\ncolumns='userId BIGINT, \"Event Type\" VARCHAR'\ntimestamp_skew='30s'\n",
        )
        .unwrap();
        let table = &cfg.resolve().await.unwrap()[0];
        let names: Vec<&str> = table
            .value_schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, ["userId", "Event Type"]);
        assert_eq!(
            table.timestamp_skew,
            Some(std::time::Duration::from_secs(30))
        );
    }

    #[tokio::test]
    async fn bad_skews_name_the_table() {
        let cfg =
            CatalogConfig::from_toml("[[tables]]\nname='a'\nformat='raw'\ntimestamp_skew='soon'\n")
                .unwrap();
        let err = cfg.resolve().await.unwrap_err().to_string();
        assert!(
            err.contains("table 'a'") && err.contains("timestamp_skew"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn protobuf_options_are_checked() {
        let cfg = CatalogConfig::from_toml(
            "[[tables]]\nname='p'\nformat='protobuf-confluent'\nmessage='shop.Order'\nschema_version=2\n",
        )
        .unwrap();
        assert_eq!(cfg.tables[0].format, FormatName::ProtobufConfluent);
        let err = cfg.resolve().await.unwrap_err().to_string();
        assert!(err.contains("needs a schema registry"), "{err}");
        let cfg = CatalogConfig::from_toml(
            "[[tables]]\nname='j'\nformat='json'\ncolumns='a INT'\nmessage='M'\n",
        )
        .unwrap();
        let err = cfg.resolve().await.unwrap_err().to_string();
        assert!(err.contains("`message` is an option"), "{err}");
    }

    #[tokio::test]
    async fn reserved_names_are_refused() {
        let cfg = CatalogConfig::from_toml(
            "[[tables]]\nname='a'\nformat='json'\ncolumns='_offset BIGINT'\n",
        )
        .unwrap();
        assert!(cfg.resolve().await.is_err());
    }
}

//! From registered schemas to message descriptors, and from messages to the
//! table's column types.
//!
//! A registered Protobuf schema is one `.proto` file, given either as text
//! or as a base64-encoded serialized `FileDescriptorProto` (what
//! confluent-kafka's Python serializer registers). Its imports are the
//! schema's references, each a version of another subject, fetched
//! recursively; Google's well-known types (`google/protobuf/*.proto`) are
//! bundled, since serializers skip registering them by default. The files
//! are compiled in-process by protox: no `protoc`.
//!
//! The type mapping ([`table_fields`]) is the one both tiers store, so it
//! keeps to what Delta Lake and kappa's clients read: no unsigned types
//! (uint32 widens to BIGINT, uint64 to DECIMAL(20, 0)), timestamps in
//! microseconds, no empty structs, no recursion.

use std::collections::HashMap;

use base64::Engine;
use datafusion::arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use prost_reflect::prost::Message;
use prost_reflect::prost_types;
use prost_reflect::{FileDescriptor, Kind, MessageDescriptor};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

use crate::format::registry::{RegisteredSchema, SchemaError, SchemaRegistry, SchemaType};

/// The name the registered file itself is compiled under (the registry
/// gives schemas no file name; references have the one their importer uses).
const ROOT_FILE: &str = "kappa/registered.proto";

/// Most files one schema may pull in through its references: a bound on a
/// registry that answers with an endless chain.
const MAX_FILES: usize = 256;

/// Compiles `schema` and every file it references (fetched from `registry`)
/// into descriptors; the registered file's descriptor is returned.
pub async fn compile(
    registry: Option<&SchemaRegistry>,
    schema: &RegisteredSchema,
) -> Result<FileDescriptor, SchemaError> {
    if schema.schema_type != SchemaType::Protobuf {
        return Err(SchemaError::Invalid(format!(
            "a {} schema, not a Protobuf one",
            schema.schema_type
        )));
    }
    let mut files = HashMap::new();
    files.insert(ROOT_FILE.to_string(), parse(ROOT_FILE, &schema.schema)?);
    let mut pending: Vec<_> = schema.references.to_vec();
    while let Some(reference) = pending.pop() {
        if files.contains_key(&reference.name) || is_well_known(&reference.name) {
            continue;
        }
        if files.len() >= MAX_FILES {
            return Err(SchemaError::Invalid(format!(
                "references more than {MAX_FILES} files"
            )));
        }
        let Some(registry) = registry else {
            return Err(SchemaError::Invalid(format!(
                "imports {}, and there is no registry to fetch it from",
                reference.name
            )));
        };
        let found = registry.referenced(&reference).await?;
        files.insert(
            reference.name.clone(),
            parse(&reference.name, &found.schema)?,
        );
        pending.extend(found.references);
    }
    let mut resolver = ChainFileResolver::new();
    resolver.add(RegistryFiles(files));
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler
        .open_file(ROOT_FILE)
        .map_err(|e| SchemaError::Invalid(format!("invalid Protobuf schema: {e}")))?;
    compiler
        .descriptor_pool()
        .get_file_by_name(ROOT_FILE)
        .ok_or_else(|| SchemaError::Invalid("the compiled schema lost its file".into()))
}

/// One registered file, named `name`: `.proto` text, or a base64 serialized
/// `FileDescriptorProto`. Text always holds characters base64 has not
/// (spaces aside: `;`, `"`, `=` inside), so trying base64 first is safe.
fn parse(name: &str, text: &str) -> Result<File, SchemaError> {
    let compact: String = text.split_whitespace().collect();
    let descriptor = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .ok()
        .and_then(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).ok());
    match descriptor {
        Some(mut descriptor) => {
            descriptor.name = Some(name.to_string());
            Ok(File::from_file_descriptor_proto(descriptor))
        }
        None => File::from_source(name, text)
            .map_err(|e| SchemaError::Invalid(format!("invalid Protobuf schema {name}: {e}"))),
    }
}

fn is_well_known(name: &str) -> bool {
    name.starts_with("google/protobuf/")
}

/// The registry's files, by the names imports use.
#[derive(Debug)]
struct RegistryFiles(HashMap<String, File>);

impl FileResolver for RegistryFiles {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| protox::Error::file_not_found(name))
    }
}

/// The message a table reads: `name` (full, like `shop.Order`, or short
/// when that is unambiguous, nested ones as `Outer.Inner`), or the file's
/// first message, as Confluent's serializers assume by default.
pub fn pick_message(
    file: &FileDescriptor,
    name: Option<&str>,
) -> Result<MessageDescriptor, String> {
    let Some(name) = name else {
        return file
            .messages()
            .next()
            .ok_or_else(|| "the Protobuf schema defines no message".to_string());
    };
    let mut all = Vec::new();
    let mut stack: Vec<MessageDescriptor> = file.messages().collect();
    while let Some(message) = stack.pop() {
        stack.extend(message.child_messages().filter(|m| !m.is_map_entry()));
        all.push(message);
    }
    let package = file.package_name();
    let matching: Vec<_> = all
        .into_iter()
        .filter(|m| {
            let full = m.full_name();
            let local = full
                .strip_prefix(package)
                .and_then(|rest| rest.strip_prefix('.'))
                .unwrap_or(full);
            full == name || local == name
        })
        .collect();
    match matching.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!("the Protobuf schema has no message '{name}'")),
        _ => Err(format!("message name '{name}' is ambiguous")),
    }
}

/// The table's columns for `message`: one per field, in declaration order,
/// a `oneof` as one STRUCT of its branches; all nullable (a value that does
/// not decode is a row of nulls).
pub fn table_fields(message: &MessageDescriptor) -> Result<Fields, String> {
    let fields = message_fields(message, &mut vec![message.full_name().to_string()])?;
    if let Some(reserved) = fields.iter().find(|f| f.name().starts_with('_')) {
        return Err(format!(
            "field '{}': names starting with '_' are reserved for metadata columns",
            reserved.name()
        ));
    }
    Ok(fields)
}

/// The fields of a message as struct fields. `within` holds the messages
/// being mapped (outermost first), to refuse a message inside itself.
fn message_fields(message: &MessageDescriptor, within: &mut Vec<String>) -> Result<Fields, String> {
    let mut out: Vec<Field> = Vec::new();
    for field in message.fields() {
        let oneof = field.containing_oneof().filter(|o| !o.is_synthetic());
        let Some(oneof) = oneof else {
            let data_type =
                field_type(&field, within).map_err(|e| format!("{}: {e}", field.name()))?;
            out.push(Field::new(field.name(), data_type, true));
            continue;
        };
        if out.iter().any(|f| f.name() == oneof.name()) {
            continue; // its struct is placed at its first branch
        }
        let mut branches = Vec::new();
        for branch in oneof.fields() {
            let data_type = field_type(&branch, within)
                .map_err(|e| format!("{}.{}: {e}", oneof.name(), branch.name()))?;
            branches.push(Field::new(branch.name(), data_type, true));
        }
        out.push(Field::new(
            oneof.name(),
            DataType::Struct(branches.into()),
            true,
        ));
    }
    if out.is_empty() {
        return Err(format!(
            "message {} has no fields (Parquet cannot store an empty struct)",
            message.full_name()
        ));
    }
    Ok(out.into())
}

/// A field's type: its kind's, in a LIST for a repeated field (elements are
/// never null in Protobuf) or a MAP for a map field.
fn field_type(
    field: &prost_reflect::FieldDescriptor,
    within: &mut Vec<String>,
) -> Result<DataType, String> {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return Err("a map whose entries are not a message".into());
        };
        let key = kind_type(&entry.map_entry_key_field().kind(), within)?;
        let value = kind_type(&entry.map_entry_value_field().kind(), within)?;
        return Ok(crate::format::map_type(key, value));
    }
    let data_type = kind_type(&field.kind(), within)?;
    Ok(if field.is_list() {
        DataType::List(Field::new_list_field(data_type, false).into())
    } else {
        data_type
    })
}

/// The well-known message types that read as scalars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WellKnown {
    /// `google.protobuf.Timestamp`: TIMESTAMP WITH TIME ZONE (µs, UTC).
    Timestamp,
    /// `google.protobuf.Duration`: BIGINT microseconds (Delta Lake has no
    /// interval type).
    Duration,
    /// `google.protobuf.*Value`: the wrapped scalar, null when absent.
    Wrapper,
}

/// Which well-known type `message` is, if it reads as a scalar.
pub fn well_known(message: &MessageDescriptor) -> Option<WellKnown> {
    Some(match message.full_name() {
        "google.protobuf.Timestamp" => WellKnown::Timestamp,
        "google.protobuf.Duration" => WellKnown::Duration,
        "google.protobuf.DoubleValue"
        | "google.protobuf.FloatValue"
        | "google.protobuf.Int64Value"
        | "google.protobuf.UInt64Value"
        | "google.protobuf.Int32Value"
        | "google.protobuf.UInt32Value"
        | "google.protobuf.BoolValue"
        | "google.protobuf.StringValue"
        | "google.protobuf.BytesValue" => WellKnown::Wrapper,
        _ => return None,
    })
}

/// The type of a value of `kind` (one element of a repeated field).
pub fn kind_type(kind: &Kind, within: &mut Vec<String>) -> Result<DataType, String> {
    Ok(match kind {
        Kind::Double => DataType::Float64,
        Kind::Float => DataType::Float32,
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => DataType::Int32,
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => DataType::Int64,
        // Delta Lake has no unsigned types: the next signed type that holds
        // every value.
        Kind::Uint32 | Kind::Fixed32 => DataType::Int64,
        Kind::Uint64 | Kind::Fixed64 => DataType::Decimal128(20, 0),
        Kind::Bool => DataType::Boolean,
        Kind::String | Kind::Enum(_) => DataType::Utf8,
        Kind::Bytes => DataType::Binary,
        Kind::Message(message) => match well_known(message) {
            Some(WellKnown::Timestamp) => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
            Some(WellKnown::Duration) => DataType::Int64,
            Some(WellKnown::Wrapper) => {
                let value = message
                    .get_field(1)
                    .ok_or_else(|| format!("{} has no value field", message.full_name()))?;
                kind_type(&value.kind(), within)?
            }
            None => {
                let name = message.full_name();
                if within.iter().any(|m| m == name) {
                    return Err(format!(
                        "message {name} contains itself (through {}): recursive messages \
                         have no fixed column type and are not supported",
                        within.join(" > ")
                    ));
                }
                within.push(name.to_string());
                let fields = message_fields(message, within);
                within.pop();
                DataType::Struct(fields?)
            }
        },
    })
}

//! Protobuf values in the Confluent wire format (`protobuf-confluent`).
//!
//! A value is `[0][schema id: 4 bytes][message-index path][message]`
//! ([`super::framing`], then [`index_path`]). The id names the writer's
//! `.proto` file in the registry; the path picks the message in it (the
//! n-th top-level message, then the m-th message nested in that, …). The
//! message is decoded with the writer's own descriptors and its fields are
//! matched to the table's columns by name, so writer versions that add or
//! remove fields read as one table.
//!
//! The table's columns come from one message of the subject's schema (the
//! first in its file, as Confluent's serializers assume, or one named in the
//! definition); [`schema`] maps its types, [`decode`] fills the columns.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use prost_reflect::{FileDescriptor, MessageDescriptor};

use super::registry::{RegisteredSchema, RegistryError, SchemaRegistry};
use crate::error::{CatalogError, Result};

mod columns;
pub mod decode;
mod flat;
mod plan;
pub mod schema;
#[cfg(test)]
mod tests;

use super::registry::SchemaError;
pub use decode::ProtobufDecoder;

/// Most indexes a message-index path may hold: a bound on what a corrupt
/// value can make the decoder allocate (real paths are a few deep).
const MAX_PATH: usize = 32;

/// A Protobuf table's format: the message its columns come from, and where
/// writer schemas come from.
#[derive(Debug)]
pub struct ProtobufFormat {
    message: MessageDescriptor,
    value_schema: SchemaRef,
    registry: Option<Arc<SchemaRegistry>>,
    /// Writer files by schema id (ids are immutable), or why an id's schema
    /// cannot be read. Shared by every decoder of the table.
    writers: Mutex<HashMap<u32, std::result::Result<FileDescriptor, String>>>,
}

impl ProtobufFormat {
    /// Registry-framed messages read as `message` of `reader` (a subject's
    /// schema; the file's first message when `message` is `None`). Fails
    /// with [`CatalogError::Registry`] when a reference cannot be fetched,
    /// [`CatalogError::Config`] when the schema cannot be a table.
    pub async fn confluent(
        reader: &RegisteredSchema,
        message: Option<&str>,
        registry: Arc<SchemaRegistry>,
    ) -> Result<Self> {
        let file = match schema::compile(Some(&registry), reader).await {
            Ok(file) => file,
            Err(SchemaError::Registry(down)) => {
                return Err(CatalogError::Registry(down.to_string()));
            }
            Err(SchemaError::Invalid(why)) => return Err(CatalogError::Config(why)),
        };
        Self::new(&file, message, Some(registry)).map_err(CatalogError::Config)
    }

    /// `message` of an already compiled file; writer schemas come from
    /// `registry` (with none, only ids given to [`Self::with_writer`] read).
    pub fn new(
        file: &FileDescriptor,
        message: Option<&str>,
        registry: Option<Arc<SchemaRegistry>>,
    ) -> std::result::Result<Self, String> {
        let message = schema::pick_message(file, message)?;
        let fields = schema::table_fields(&message)?;
        Ok(Self {
            message,
            value_schema: Arc::new(Schema::new(fields)),
            registry,
            writers: Mutex::new(HashMap::new()),
        })
    }

    /// Knows `file` as the writer schema `id` without asking the registry.
    pub fn with_writer(self, id: u32, file: FileDescriptor) -> Self {
        self.writers
            .lock()
            .expect("writer cache poisoned")
            .insert(id, Ok(file));
        self
    }

    /// The table's value columns.
    pub fn value_schema(&self) -> &SchemaRef {
        &self.value_schema
    }

    /// The full name of the message the table reads.
    pub fn message_name(&self) -> &str {
        self.message.full_name()
    }

    /// The writer file of schema `id`: `Ok(Err(why))` when values written
    /// with it cannot be read, `Err` when the registry cannot be asked.
    /// Called from reader threads.
    fn writer(&self, id: u32) -> Result<std::result::Result<FileDescriptor, Unknown>> {
        if let Some(known) = self.writers.lock().expect("writer cache poisoned").get(&id) {
            return Ok(known.clone().map_err(Unknown::Never));
        }
        if id == 0 || id > i32::MAX as u32 {
            // Registries number schemas from 1 with Java ints.
            return Ok(Err(Unknown::Never(format!(
                "schema id {id} cannot be a registry's id"
            ))));
        }
        let Some(registry) = &self.registry else {
            return Ok(Err(Unknown::Never(format!(
                "schema id {id} is not known (no schema registry)"
            ))));
        };
        let found = match registry.schema_by_id_blocking(id) {
            Ok(found) => found,
            Err(RegistryError::NotFound(why)) => {
                // Not cached: it may be registered a moment later.
                return Ok(Err(Unknown::ForNow(format!(
                    "schema id {id} is not in the schema registry ({why})"
                ))));
            }
            Err(down) => return Err(CatalogError::Registry(down.to_string())),
        };
        let verdict = match registry.block_on(schema::compile(Some(registry), &found)) {
            Ok(file) => Ok(file),
            Err(SchemaError::Registry(down)) => {
                return Err(CatalogError::Registry(down.to_string()));
            }
            Err(SchemaError::Invalid(why)) => Err(format!("schema id {id}: {why}")),
        };
        self.writers
            .lock()
            .expect("writer cache poisoned")
            .insert(id, verdict.clone());
        Ok(verdict.map_err(Unknown::Never))
    }
}

/// Why a writer schema is not at hand.
#[derive(Debug, Clone)]
enum Unknown {
    /// For good (ids are immutable).
    Never(String),
    /// The registry does not know the id yet: asked again next batch.
    ForNow(String),
}

impl Unknown {
    fn why(self) -> String {
        match self {
            Self::Never(why) | Self::ForNow(why) => why,
        }
    }
}

/// Splits a framed body into its message-index path and the message: a
/// zig-zag varint count, then that many zig-zag varint indexes; a count of
/// 0 (one zero byte, the common case) means `[0]`, the file's first message.
pub fn index_path(body: &[u8]) -> std::result::Result<(Vec<i32>, &[u8]), String> {
    let (count, mut rest) = zigzag(body).ok_or("truncated message-index path")?;
    if count == 0 {
        return Ok((vec![0], rest));
    }
    let count = usize::try_from(count)
        .ok()
        .filter(|&c| c <= MAX_PATH)
        .ok_or_else(|| format!("invalid message-index path: {count} indexes"))?;
    let mut path = Vec::with_capacity(count);
    for _ in 0..count {
        let (index, after) = zigzag(rest).ok_or("truncated message-index path")?;
        if index < 0 {
            return Err(format!("invalid message-index path: index {index}"));
        }
        path.push(index);
        rest = after;
    }
    Ok((path, rest))
}

/// One zig-zag varint that fits an `i32`, and what follows it.
fn zigzag(bytes: &[u8]) -> Option<(i32, &[u8])> {
    let mut value: u64 = 0;
    for (i, &byte) in bytes.iter().enumerate().take(5) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let value = u32::try_from(value).ok()?;
            let decoded = (value >> 1) as i32 ^ -((value & 1) as i32);
            return Some((decoded, &bytes[i + 1..]));
        }
    }
    None
}

/// The message `path` picks in `file`.
pub fn message_at(
    file: &FileDescriptor,
    path: &[i32],
) -> std::result::Result<MessageDescriptor, String> {
    let out_of_range = |depth: usize| {
        format!(
            "message-index path {path:?} points past the messages of the writer schema (at index {depth})"
        )
    };
    let (&first, nested) = path.split_first().ok_or("empty message-index path")?;
    let mut message = file
        .messages()
        .nth(first as usize)
        .ok_or_else(|| out_of_range(0))?;
    for (depth, &index) in nested.iter().enumerate() {
        let child = message.child_messages().nth(index as usize);
        message = child.ok_or_else(|| out_of_range(depth + 1))?;
    }
    Ok(message)
}

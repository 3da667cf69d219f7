//! Where table definitions come from.
//!
//! The gateway and the compactor read definitions through one
//! [`DefinitionStore`], so a table reads the same in both and a new source
//! serves both at once. Today the only source is the TOML file
//! ([`file`], read-only); definitions created by SQL and kept beside the
//! lake tables are the next.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;
use crate::format::SchemaRegistry;

pub mod columns;
pub mod defined;
pub mod file;
pub mod infer;
pub mod lake;
pub mod sql;
pub mod trino;

pub use defined::LakeTables;
pub use file::{CatalogConfig, DeclaredTable, FormatName, TableDefinition, value_subject};
pub use lake::{LakeDefinitions, StoredDefinition};

/// A source of table definitions.
#[async_trait]
pub trait DefinitionStore: Debug + Send + Sync {
    /// Every definition, resolved: column lists parsed, registry subjects
    /// looked up.
    async fn tables(&self) -> Result<Vec<DeclaredTable>>;
}

/// The definitions of a config file (`[[tables]]`), read-only.
#[derive(Debug)]
pub struct FileDefinitions {
    config: CatalogConfig,
    registry: Option<Arc<SchemaRegistry>>,
}

impl FileDefinitions {
    /// The definitions in `config`, resolving `avro-confluent` schemas in
    /// `registry`.
    pub fn new(config: CatalogConfig, registry: Option<Arc<SchemaRegistry>>) -> Self {
        Self { config, registry }
    }
}

#[async_trait]
impl DefinitionStore for FileDefinitions {
    async fn tables(&self) -> Result<Vec<DeclaredTable>> {
        self.config.resolve_with(self.registry.as_ref()).await
    }
}

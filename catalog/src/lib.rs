//! kappa's catalog: what tables exist and how to read them.
//!
//! Every Kafka topic is a table in catalog [`provider::CATALOG`], schema
//! [`provider::SCHEMA`]. A scan fixes each partition's offset range when it is
//! planned ([`offsets`]), reads partitions in parallel ([`scan`]) and decodes
//! records into Arrow ([`decode`], values by their [`format`]). No server code lives here.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use kappa_catalog::{CatalogConfig, KafkaOptions, register_kafka_catalog};
//! use datafusion::prelude::SessionContext;
//!
//! let ctx = SessionContext::new();
//! let tables = CatalogConfig::default().resolve().await?;
//! register_kafka_catalog(&ctx, KafkaOptions::new("127.0.0.1:9092"), tables)?;
//! ctx.sql("SELECT count(*) FROM kafka.default.orders").await?.show().await?;
//! # Ok(()) }
//! ```

pub mod changelog;
pub mod cli;
pub mod columns;
pub mod context;
pub mod decode;
pub mod definitions;
pub mod error;
pub mod format;
pub mod kafka;
pub mod lake;
pub mod offsets;
pub mod options;
pub mod plan;
pub mod provider;
pub mod scan;
pub mod snapshot;
pub mod stream_registry;
pub mod system;
pub mod table;
pub mod tail;
pub mod union;
pub mod work;

use std::sync::Arc;
use std::time::Duration;

use datafusion::prelude::SessionContext;

pub use context::CatalogContext;
pub use definitions::{
    CatalogConfig, DeclaredTable, DefinitionStore, FileDefinitions, LakeDefinitions, LakeTables,
    TableDefinition,
};
pub use error::{CatalogError, Result};
pub use format::ValueFormat;
pub use kafka::{KafkaClient, KafkaOptions};
pub use options::KappaOptions;
pub use provider::{CATALOG, KafkaCatalog, KafkaSchema, SCHEMA};
pub use system::SYSTEM_SCHEMA;

/// How often the topic list is refreshed by default.
pub const DEFAULT_TOPIC_REFRESH: Duration = Duration::from_secs(3);

/// Builds the `kafka` catalog for `options` and `tables`; the topic list is
/// refreshed at most every `topic_refresh`.
pub fn kafka_catalog(
    options: KafkaOptions,
    tables: Vec<DeclaredTable>,
    topic_refresh: Duration,
) -> Result<Arc<KafkaSchema>> {
    kafka_catalog_with_lake(options, tables, topic_refresh, None)
}

/// [`kafka_catalog`] whose tables with a lake tier under `lake` read as the
/// union of the lake and Kafka.
pub fn kafka_catalog_with_lake(
    options: KafkaOptions,
    tables: Vec<DeclaredTable>,
    topic_refresh: Duration,
    lake: Option<lake::Lake>,
) -> Result<Arc<KafkaSchema>> {
    let client = KafkaClient::new(options)?;
    let context = CatalogContext::new(client, tables, topic_refresh).with_lake(lake);
    Ok(Arc::new(KafkaSchema::new(Arc::new(context))))
}

/// Builds the `kafka` catalog and registers it on `ctx`.
pub fn register_kafka_catalog(
    ctx: &SessionContext,
    options: KafkaOptions,
    tables: Vec<DeclaredTable>,
) -> Result<Arc<KafkaSchema>> {
    let schema = kafka_catalog(options, tables, DEFAULT_TOPIC_REFRESH)?;
    ctx.register_catalog(CATALOG, Arc::new(KafkaCatalog::new(Arc::clone(&schema))));
    Ok(schema)
}

//! The `kafka` catalog and its `default` schema: every topic is a table,
//! typed by its declaration or registry subject, over Kafka and its lake
//! tier.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, Session, TableProvider};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::session_state::SessionState;

use crate::changelog::{Changelog, LatestTable};
use crate::context::{CatalogContext, is_user_topic};
use crate::definitions::sql::create_statement;
use crate::error::{CatalogError, Result};
use crate::format::ValueFormat;
use crate::kafka::is_legal_topic_name;
use crate::system::{SYSTEM_SCHEMA, SystemSchema};
use crate::table::KafkaTable;
use crate::union::LakeKafkaTable;

/// Name of the catalog that holds the topics.
pub const CATALOG: &str = "kafka";
/// Name of the schema that holds the topics.
pub const SCHEMA: &str = "default";

/// The `kafka` catalog: `default` (the topics) and `system` (their state).
#[derive(Debug)]
pub struct KafkaCatalog {
    schema: Arc<KafkaSchema>,
    system: Arc<SystemSchema>,
}

impl KafkaCatalog {
    /// A catalog over `schema`.
    pub fn new(schema: Arc<KafkaSchema>) -> Self {
        let system = Arc::new(SystemSchema::new(Arc::clone(schema.context())));
        Self { schema, system }
    }
}

impl CatalogProvider for KafkaCatalog {
    fn schema_names(&self) -> Vec<String> {
        vec![SCHEMA.to_string(), SYSTEM_SCHEMA.to_string()]
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        match name {
            SCHEMA => Some(Arc::clone(&self.schema) as Arc<dyn SchemaProvider>),
            SYSTEM_SCHEMA => Some(Arc::clone(&self.system) as Arc<dyn SchemaProvider>),
            _ => None,
        }
    }
}

/// The `default` schema: declared tables plus every other topic as a raw
/// table (or typed by its registry subject).
#[derive(Debug)]
pub struct KafkaSchema {
    context: Arc<CatalogContext>,
}

impl KafkaSchema {
    /// The tables of `context`.
    pub fn new(context: Arc<CatalogContext>) -> Self {
        Self { context }
    }

    /// What this schema serves tables from.
    pub fn context(&self) -> &Arc<CatalogContext> {
        &self.context
    }

    /// The table an undeclared topic is: typed by its registry subject, or
    /// raw. Fails when the registry cannot be asked.
    async fn undeclared_table(&self, topic: &str) -> Result<KafkaTable> {
        Ok(match self.context.registry_table(topic).await? {
            Some(def) => KafkaTable::new(
                def.topic.clone(),
                def.format.clone(),
                Arc::clone(&def.value_schema),
                Arc::clone(self.context.client()),
            ),
            None => self.raw_table(topic),
        })
    }

    /// A table over Kafka alone, or, with a lake, the union with its lake
    /// tier (found when the table is scanned).
    async fn with_lake_tier(
        &self,
        name: &str,
        table: KafkaTable,
    ) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if let Some(lake) = self.context.lake() {
            return Ok(Some(Arc::new(LakeKafkaTable::new(
                name,
                table,
                lake.clone(),
            ))));
        }
        Ok(Some(Arc::new(table)))
    }

    fn raw_table(&self, topic: &str) -> KafkaTable {
        KafkaTable::new(
            topic,
            ValueFormat::Raw,
            Arc::new(datafusion::arrow::datatypes::Schema::empty()),
            Arc::clone(self.context.client()),
        )
    }
}

#[async_trait]
impl SchemaProvider for KafkaSchema {
    fn table_names(&self) -> Vec<String> {
        self.context.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if let Some(def) = self.context.declared(name).await? {
            let table = KafkaTable::new(
                def.topic.clone(),
                def.format.clone(),
                Arc::clone(&def.value_schema),
                Arc::clone(self.context.client()),
            )
            .with_name(name)
            .with_timestamp_skew(def.timestamp_skew)
            .with_definition(def.definition.as_deref().map(create_statement));
            let table = self.with_lake_tier(name, table).await?;
            return Ok(match (def.changelog, table) {
                // One row per key: its latest value.
                (Some(Changelog::Upsert), Some(table)) => {
                    Some(Arc::new(LatestTable::over(name, table, &def.format))
                        as Arc<dyn TableProvider>)
                }
                (_, table) => table,
            });
        }
        // A name that cannot be a topic is simply not a table (the broker
        // would refuse the lookup as an error, not answer "no such topic").
        if !is_user_topic(name) || !is_legal_topic_name(name) {
            return Ok(None);
        }
        if self.context.cached(name) {
            let table = self.undeclared_table(name).await?;
            return self.with_lake_tier(name, table).await;
        }
        // Not in the cache: maybe created since the last refresh. Ask once.
        let topic = name.to_string();
        if self
            .context
            .client()
            .run_blocking(move |c| c.topic_exists(&topic))
            .await?
        {
            self.context.remember_topic(name);
            let table = self.undeclared_table(name).await?;
            return self.with_lake_tier(name, table).await;
        }
        Ok(None)
    }

    /// Whether a *declared* table has this name. A topic nobody declared
    /// is a table too, but not one that stops `CREATE EXTERNAL TABLE` of its
    /// name (the usual way to type a topic).
    fn table_exist(&self, name: &str) -> bool {
        self.context.is_declared(name)
    }
}

/// Table `name` of the session planning a query, through its catalog (so
/// the caller's grants apply): what `FROM name` would read.
pub(crate) async fn session_table(
    state: &dyn Session,
    name: &str,
) -> DfResult<Arc<dyn TableProvider>> {
    let session = state
        .as_any()
        .downcast_ref::<SessionState>()
        .ok_or_else(|| DataFusionError::Internal("a table function needs a SessionState".into()))?;
    let schema = session
        .catalog_list()
        .catalog(CATALOG)
        .and_then(|catalog| catalog.schema(SCHEMA))
        .ok_or_else(|| DataFusionError::Internal(format!("no catalog {CATALOG}.{SCHEMA}")))?;
    match schema.table(name).await? {
        Some(table) => Ok(table),
        None => Err(CatalogError::TableNotFound(format!("table '{name}' not found")).into()),
    }
}

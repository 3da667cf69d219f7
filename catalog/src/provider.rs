//! The `kafka` catalog and its `default` schema: every topic is a table.
//!
//! Topic discovery is cheap and fresh: the topic list is cached for
//! `refresh_interval`, and a name missing from the cache is looked up on the
//! broker at once, so a topic created a moment ago is a table immediately.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::error::Result as DfResult;

use crate::definitions::sql::create_statement;
use crate::definitions::{DeclaredTable, LakeTables, TableDefinition};
use crate::error::{CatalogError, Result};
use crate::format::SchemaRegistry;
use crate::format::ValueFormat;
use crate::kafka::{KafkaClient, is_legal_topic_name};
use crate::lake::Lake;
use crate::system::{SYSTEM_SCHEMA, SystemSchema};
use crate::table::KafkaTable;
use crate::tail::table::StreamSettings;
use crate::tail::{StartPosition, StreamRegistry, TailTable};
use crate::union::LakeKafkaTable;

/// How long a stream's batch waits for more rows by default.
pub const DEFAULT_STREAM_LINGER: Duration = Duration::from_millis(50);

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
        let system = Arc::new(SystemSchema::new(Arc::clone(&schema)));
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

#[derive(Debug, Default)]
struct TopicCache {
    topics: BTreeSet<String>,
    fetched_at: Option<Instant>,
}

/// The `default` schema: declared tables plus every other topic as a raw table.
#[derive(Debug)]
pub struct KafkaSchema {
    client: Arc<KafkaClient>,
    lake: Option<Lake>,
    declared: HashMap<String, DeclaredTable>,
    refresh_interval: Duration,
    cache: Mutex<TopicCache>,
    streams: Arc<StreamRegistry>,
    stream_linger: Duration,
    registry: Option<Arc<SchemaRegistry>>,
    /// What the registry said of undeclared topics, and when.
    registry_tables: Mutex<HashMap<String, (Instant, Option<DeclaredTable>)>>,
    /// The tables defined by SQL on the lake.
    defined: Option<Arc<LakeTables>>,
}

impl KafkaSchema {
    /// A schema over the cluster behind `client`, with `declared` tables.
    pub fn new(
        client: Arc<KafkaClient>,
        declared: Vec<DeclaredTable>,
        refresh_interval: Duration,
    ) -> Self {
        Self {
            client,
            lake: None,
            declared: declared.into_iter().map(|t| (t.name.clone(), t)).collect(),
            refresh_interval,
            cache: Mutex::new(TopicCache::default()),
            streams: Arc::new(StreamRegistry::default()),
            stream_linger: DEFAULT_STREAM_LINGER,
            registry: None,
            registry_tables: Mutex::new(HashMap::new()),
            defined: None,
        }
    }

    /// Serves the tables `defined` by SQL too, and takes `CREATE EXTERNAL
    /// TABLE` and `DROP TABLE` into it. A config file's table of the same
    /// name wins.
    pub fn with_definitions(mut self, defined: Option<Arc<LakeTables>>) -> Self {
        self.defined = defined;
        self
    }

    /// The declared table `name`: the config file's, else one defined by
    /// SQL.
    async fn declared(&self, name: &str) -> Result<Option<DeclaredTable>> {
        if let Some(table) = self.declared.get(name) {
            return Ok(Some(table.clone()));
        }
        match &self.defined {
            Some(defined) => defined.get(name).await,
            None => Ok(None),
        }
    }

    /// Stores `definition` on the lake (made by `created_by`): the table is
    /// then served here at once, and by every gateway on the lake within its
    /// refresh interval.
    pub async fn create_table(
        &self,
        definition: TableDefinition,
        created_by: &str,
        if_not_exists: bool,
    ) -> Result<()> {
        let defined = self.defined.as_ref().ok_or_else(|| {
            CatalogError::Definition(
                "this gateway has no lake to keep table definitions in (--lake)".into(),
            )
        })?;
        let exists =
            |name: &str| CatalogError::AlreadyExists(format!("table '{name}' already exists"));
        if self.declared.contains_key(&definition.name) {
            return if if_not_exists {
                Ok(())
            } else {
                Err(exists(&definition.name))
            };
        }
        match defined.create(definition, created_by).await {
            Err(CatalogError::AlreadyExists(_)) if if_not_exists => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Deletes the SQL definition of `name`; with `if_exists`, a name with
    /// none is not an error. A config file's table cannot be dropped, and a
    /// topic is never deleted.
    pub async fn drop_table(&self, name: &str, if_exists: bool) -> Result<()> {
        if self.declared.contains_key(name) {
            return Err(CatalogError::Definition(format!(
                "table '{name}' is declared in the config file; remove it there"
            )));
        }
        let dropped = match &self.defined {
            Some(defined) => defined.remove(name).await?,
            None => false,
        };
        if dropped || if_exists {
            return Ok(());
        }
        Err(CatalogError::TableNotFound(if self.cached(name) {
            format!(
                "table '{name}' is a topic, not a table defined by SQL: DROP TABLE never deletes topics"
            )
        } else {
            format!("table '{name}' does not exist")
        }))
    }

    /// Reads an undeclared topic whose `<topic>-value` subject is in
    /// `registry` as an Avro table of the subject's latest version (asked
    /// again after the refresh interval).
    pub fn with_registry(mut self, registry: Option<Arc<SchemaRegistry>>) -> Self {
        self.registry = registry;
        self
    }

    /// The schema registry, if any.
    pub fn registry(&self) -> Option<&Arc<SchemaRegistry>> {
        self.registry.as_ref()
    }

    /// What the registry says an undeclared topic is (`None`: raw), asked
    /// at most once per refresh interval.
    async fn registry_table(&self, topic: &str) -> Result<Option<DeclaredTable>> {
        let Some(registry) = &self.registry else {
            return Ok(None);
        };
        if let Some(table) = self.registry_table_cached(topic) {
            return Ok(table);
        }
        let asked_at = Instant::now();
        let table = DeclaredTable::from_registry(registry, topic).await?;
        let mut tables = self
            .registry_tables
            .lock()
            .expect("registry cache poisoned");
        tables.insert(topic.to_string(), (asked_at, table.clone()));
        Ok(table)
    }

    fn registry_table_cached(&self, topic: &str) -> Option<Option<DeclaredTable>> {
        let tables = self
            .registry_tables
            .lock()
            .expect("registry cache poisoned");
        tables
            .get(topic)
            .filter(|(at, _)| at.elapsed() < self.refresh_interval)
            .map(|(_, table)| table.clone())
    }

    /// [`Self::registry_table`] for a synchronous caller (a table function
    /// is planned synchronously): on the gateway's multi-threaded runtime
    /// the lookup runs in place; elsewhere only the cache can answer.
    fn registry_table_now(&self, topic: &str) -> Result<Option<DeclaredTable>> {
        if self.registry.is_none() {
            return Ok(None);
        }
        if let Some(table) = self.registry_table_cached(topic) {
            return Ok(table);
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime)
                if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread =>
            {
                tokio::task::block_in_place(|| runtime.block_on(self.registry_table(topic)))
            }
            _ => Err(crate::CatalogError::Registry(format!(
                "topic '{topic}': its schema-registry subject is not known yet; query the table once first"
            ))),
        }
    }

    /// The table an undeclared topic is: typed by its registry subject, or
    /// raw. Fails when the registry cannot be asked.
    async fn undeclared_table(&self, topic: &str) -> Result<KafkaTable> {
        Ok(match self.registry_table(topic).await? {
            Some(def) => KafkaTable::new(
                def.topic.clone(),
                def.format.clone(),
                Arc::clone(&def.value_schema),
                Arc::clone(&self.client),
            ),
            None => self.raw_table(topic),
        })
    }

    /// Runs at most `max_streams` streaming queries at once, each sending a
    /// batch once its first row has waited `linger`.
    pub fn with_streams(mut self, max_streams: usize, linger: Duration) -> Self {
        self.streams = Arc::new(StreamRegistry::new(max_streams));
        self.stream_linger = linger;
        self
    }

    /// The running streams.
    pub fn streams(&self) -> &Arc<StreamRegistry> {
        &self.streams
    }

    /// `tail(name, start)`: a stream of a declared table or a topic (typed
    /// by its registry subject, as a query reads it), or `None` for a name
    /// that is neither (existence is checked when it runs).
    pub fn tail_table(&self, name: &str, start: StartPosition) -> Result<Option<TailTable>> {
        let settings = StreamSettings {
            linger: self.stream_linger,
            refresh_interval: self.refresh_interval,
            registry: Arc::clone(&self.streams),
        };
        let registry_table;
        let sql_table = self.defined.as_ref().and_then(|d| d.cached(name));
        let declared = match self.declared.get(name).or(sql_table.as_ref()) {
            Some(def) => Some(def),
            None if is_user_topic(name) && is_legal_topic_name(name) => {
                registry_table = self.registry_table_now(name)?;
                registry_table.as_ref()
            }
            None => return Ok(None),
        };
        let (topic, format, value_schema) = match declared {
            Some(def) => (
                def.topic.clone(),
                def.format.clone(),
                Arc::clone(&def.value_schema),
            ),
            None => (
                name.to_string(),
                ValueFormat::Raw,
                Arc::new(datafusion::arrow::datatypes::Schema::empty()),
            ),
        };
        Ok(Some(TailTable::new(
            name,
            topic,
            format,
            value_schema,
            start,
            Arc::clone(&self.client),
            self.lake.clone(),
            settings,
        )))
    }

    /// Reads tables that have a lake tier (a Delta table the compactor
    /// wrote under `lake`) as the union of the lake and Kafka.
    pub fn with_lake(mut self, lake: Option<Lake>) -> Self {
        self.lake = lake;
        self
    }

    /// A table over Kafka alone, or, with a lake, the union with its lake
    /// tier (found when the table is scanned).
    async fn with_lake_tier(
        &self,
        name: &str,
        table: KafkaTable,
    ) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if let Some(lake) = &self.lake {
            return Ok(Some(Arc::new(LakeKafkaTable::new(
                name,
                table,
                lake.clone(),
            ))));
        }
        Ok(Some(Arc::new(table)))
    }

    /// Refreshes the topic list if it is older than the refresh interval.
    /// Callers that list tables (Flight SQL metadata calls) await this first.
    pub async fn refresh_if_stale(&self) -> Result<()> {
        if self.is_stale() {
            self.refresh().await?;
        }
        if let Some(defined) = &self.defined {
            defined.refresh_if_stale().await?;
        }
        Ok(())
    }

    /// Fetches the topic list from the broker now.
    pub async fn refresh(&self) -> Result<()> {
        // Stamped before the request, so a refresh every interval is never
        // skipped for being a few milliseconds too early.
        let asked_at = Instant::now();
        let topics = self.client.run_blocking(|c| c.topic_names()).await?;
        let mut cache = self.cache.lock().expect("topic cache poisoned");
        cache.topics = topics.into_iter().filter(|t| is_user_topic(t)).collect();
        cache.fetched_at = Some(asked_at);
        Ok(())
    }

    /// The lake, if the gateway has one.
    pub fn lake(&self) -> Option<&Lake> {
        self.lake.as_ref()
    }

    /// The table a topic's lake tier is named after: the declared table
    /// reading it (the first by name), else the topic itself.
    pub fn table_name_for_topic(&self, topic: &str) -> String {
        let mut names: Vec<String> = self
            .declared
            .values()
            .filter(|t| t.topic == topic)
            .map(|t| t.name.clone())
            .collect();
        if let Some(defined) = &self.defined {
            names.extend(defined.reading(topic));
        }
        names.sort();
        names
            .into_iter()
            .next()
            .unwrap_or_else(|| topic.to_string())
    }

    /// The names of the declared tables (in the config file or by SQL).
    pub fn declared_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.declared.keys().cloned().collect();
        if let Some(defined) = &self.defined {
            names.extend(defined.names());
        }
        names
    }

    /// How often the topic list is refreshed.
    pub fn refresh_interval(&self) -> Duration {
        self.refresh_interval
    }

    /// The broker connection.
    pub fn client(&self) -> &Arc<KafkaClient> {
        &self.client
    }

    /// The topics in the cache (refresh first for a current list).
    pub fn topic_names(&self) -> Vec<String> {
        let cache = self.cache.lock().expect("topic cache poisoned");
        cache.topics.iter().cloned().collect()
    }

    fn is_stale(&self) -> bool {
        let cache = self.cache.lock().expect("topic cache poisoned");
        cache
            .fetched_at
            .is_none_or(|at| at.elapsed() >= self.refresh_interval)
    }

    fn cached(&self, topic: &str) -> bool {
        let cache = self.cache.lock().expect("topic cache poisoned");
        cache.topics.contains(topic)
    }

    fn raw_table(&self, topic: &str) -> KafkaTable {
        KafkaTable::new(
            topic,
            ValueFormat::Raw,
            Arc::new(datafusion::arrow::datatypes::Schema::empty()),
            Arc::clone(&self.client),
        )
    }
}

/// Internal topics (`__consumer_offsets` and the like) are not tables.
fn is_user_topic(name: &str) -> bool {
    !name.starts_with("__")
}

#[async_trait]
impl SchemaProvider for KafkaSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: BTreeSet<String> = self.declared_names().into_iter().collect();
        let cache = self.cache.lock().expect("topic cache poisoned");
        names.extend(cache.topics.iter().cloned());
        names.into_iter().collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if let Some(def) = self.declared(name).await? {
            let table = KafkaTable::new(
                def.topic.clone(),
                def.format.clone(),
                Arc::clone(&def.value_schema),
                Arc::clone(&self.client),
            )
            .with_timestamp_skew(def.timestamp_skew)
            .with_definition(def.definition.as_deref().map(create_statement));
            return self.with_lake_tier(name, table).await;
        }
        // A name that cannot be a topic is simply not a table (the broker
        // would refuse the lookup as an error, not answer "no such topic").
        if !is_user_topic(name) || !is_legal_topic_name(name) {
            return Ok(None);
        }
        if self.cached(name) {
            let table = self.undeclared_table(name).await?;
            return self.with_lake_tier(name, table).await;
        }
        // Not in the cache: maybe created since the last refresh. Ask once.
        let topic = name.to_string();
        if self
            .client
            .run_blocking(move |c| c.topic_exists(&topic))
            .await?
        {
            {
                let mut cache = self.cache.lock().expect("topic cache poisoned");
                cache.topics.insert(name.to_string());
            }
            let table = self.undeclared_table(name).await?;
            return self.with_lake_tier(name, table).await;
        }
        Ok(None)
    }

    /// Whether a *declared* table has this name. A topic nobody declared
    /// is a table too, but not one that stops `CREATE EXTERNAL TABLE` of its
    /// name (the usual way to type a topic).
    fn table_exist(&self, name: &str) -> bool {
        self.declared.contains_key(name)
            || self
                .defined
                .as_ref()
                .is_some_and(|d| d.cached(name).is_some())
    }
}

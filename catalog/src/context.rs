//! What the `kafka` catalog's schemas and the `tail` function share.
//!
//! Topic discovery is cheap and fresh: the topic list is cached for
//! `refresh_interval`, and a name missing from the cache is looked up on the
//! broker at once, so a topic created a moment ago is a table immediately.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::definitions::{DeclaredTable, LakeTables, TableDefinition};
use crate::error::{CatalogError, Result};
use datafusion::arrow::datatypes::{Schema, SchemaRef};

use crate::format::{SchemaRegistry, ValueFormat};
use crate::kafka::KafkaClient;
use crate::kafka::is_legal_topic_name;
use crate::lake::Lake;
use crate::stream_registry::StreamRegistry;

/// How long a stream's batch waits for more rows by default.
pub const DEFAULT_STREAM_LINGER: Duration = Duration::from_millis(50);

#[derive(Debug, Default)]
struct TopicCache {
    topics: BTreeSet<String>,
    fetched_at: Option<Instant>,
}

/// What the `kafka` catalog's schemas and the `tail` function share: the
/// cluster, the lake, the declared tables (config file and SQL), the schema
/// registry and the running streams. Each takes this context rather than one
/// another, so none of them imports the others.
#[derive(Debug)]
pub struct CatalogContext {
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

impl CatalogContext {
    /// A context over the cluster behind `client`, with `declared` tables.
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
    pub(crate) async fn declared(&self, name: &str) -> Result<Option<DeclaredTable>> {
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
        // The topic list may not have been fetched yet: ask the broker.
        let topic = name.to_string();
        let is_topic = self.cached(name)
            || self
                .client
                .run_blocking(move |c| c.topic_exists(&topic))
                .await
                .unwrap_or(false);
        Err(CatalogError::TableNotFound(if is_topic {
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
    pub(crate) async fn registry_table(&self, topic: &str) -> Result<Option<DeclaredTable>> {
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
    pub(crate) fn registry_table_now(&self, topic: &str) -> Result<Option<DeclaredTable>> {
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

    /// Whether topic `topic` exists, for a synchronous caller (a table
    /// function is planned synchronously): the topic cache, else, on the
    /// gateway's multi-threaded runtime, the broker. Elsewhere the cache
    /// cannot tell, and the topic is taken to exist (reading it finds out).
    pub(crate) fn topic_exists_now(&self, topic: &str) -> Result<bool> {
        if self.cached(topic) {
            return Ok(true);
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime)
                if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread =>
            {
                let name = topic.to_string();
                let exists = tokio::task::block_in_place(|| {
                    runtime.block_on(self.client.run_blocking(move |c| c.topic_exists(&name)))
                })?;
                if exists {
                    self.remember_topic(topic);
                }
                Ok(exists)
            }
            _ => Ok(true),
        }
    }

    /// What table `name` reads, for a synchronous caller (a table
    /// function): its topic, format and value columns, as a query would read
    /// it (a declared table, or a topic typed by its registry subject, or
    /// raw), or `None` for a name that is neither.
    pub(crate) fn resolve_now(
        &self,
        name: &str,
    ) -> Result<Option<(String, ValueFormat, SchemaRef)>> {
        let declared = match self.declared_now(name) {
            Some(def) => Some(def),
            None if is_user_topic(name) && is_legal_topic_name(name) => {
                if !self.topic_exists_now(name)? {
                    return Ok(None);
                }
                self.registry_table_now(name)?
            }
            None => return Ok(None),
        };
        Ok(Some(match declared {
            Some(def) => (def.topic, def.format, def.value_schema),
            None => (
                name.to_string(),
                ValueFormat::Raw,
                Arc::new(Schema::empty()),
            ),
        }))
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

    /// Reads tables that have a lake tier (a Delta table the compactor
    /// wrote under `lake`) as the union of the lake and Kafka.
    pub fn with_lake(mut self, lake: Option<Lake>) -> Self {
        self.lake = lake;
        self
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

    /// How long a stream's batch waits for more rows.
    pub fn stream_linger(&self) -> Duration {
        self.stream_linger
    }

    /// The declared table `name` as known now, without asking the lake
    /// (for callers that cannot wait).
    pub(crate) fn declared_now(&self, name: &str) -> Option<DeclaredTable> {
        self.declared
            .get(name)
            .cloned()
            .or_else(|| self.defined.as_ref().and_then(|d| d.cached(name)))
    }

    /// Whether a table of this name is declared (config file or SQL).
    pub(crate) fn is_declared(&self, name: &str) -> bool {
        self.declared.contains_key(name)
            || self
                .defined
                .as_ref()
                .is_some_and(|d| d.cached(name).is_some())
    }

    /// Adds `topic`, found on the broker, to the cached topic list.
    pub(crate) fn remember_topic(&self, topic: &str) {
        let mut cache = self.cache.lock().expect("topic cache poisoned");
        cache.topics.insert(topic.to_string());
    }

    /// The cached topic names and the declared table names, sorted.
    pub(crate) fn table_names(&self) -> Vec<String> {
        let mut names: BTreeSet<String> = self.declared_names().into_iter().collect();
        let cache = self.cache.lock().expect("topic cache poisoned");
        names.extend(cache.topics.iter().cloned());
        names.into_iter().collect()
    }

    fn is_stale(&self) -> bool {
        let cache = self.cache.lock().expect("topic cache poisoned");
        cache
            .fetched_at
            .is_none_or(|at| at.elapsed() >= self.refresh_interval)
    }

    pub(crate) fn cached(&self, topic: &str) -> bool {
        let cache = self.cache.lock().expect("topic cache poisoned");
        cache.topics.contains(topic)
    }
}

/// Internal topics (`__consumer_offsets` and the like) are not tables.
pub(crate) fn is_user_topic(name: &str) -> bool {
    !name.starts_with("__")
}

//! The `system` schema: the cluster's state as tables, so it can be queried
//! (and joined) with the same SQL as the data.
//!
//! * `system.partitions`: every partition of every topic with its log start
//!   offset, high watermark and, for tables with a lake tier, the lake's
//!   watermark, read when the query is planned.

use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use datafusion::arrow::array::{Int32Builder, Int64Builder, RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{MemTable, SchemaProvider, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;

use crate::provider::KafkaSchema;

/// Name of the schema.
pub const SYSTEM_SCHEMA: &str = "system";
/// Name of the partitions table.
pub const PARTITIONS: &str = "partitions";

/// Schema of `system.partitions`.
pub fn partitions_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("topic", DataType::Utf8, false),
            Field::new("partition", DataType::Int32, false),
            Field::new("log_start_offset", DataType::Int64, false),
            Field::new("high_watermark", DataType::Int64, false),
            // The next offset the lake tier holds records up to (its Delta
            // watermark); null where the table has no lake tier.
            Field::new("lake_watermark", DataType::Int64, true),
        ]))
    });
    Arc::clone(&SCHEMA)
}

/// The `system` schema over the topics of a [`KafkaSchema`].
#[derive(Debug)]
pub struct SystemSchema {
    topics: Arc<KafkaSchema>,
}

impl SystemSchema {
    /// System tables for the cluster behind `topics`.
    pub fn new(topics: Arc<KafkaSchema>) -> Self {
        Self { topics }
    }

    async fn partitions(&self) -> crate::Result<RecordBatch> {
        self.topics.refresh_if_stale().await?;
        let topics = self.topics.topic_names();
        let rows = self
            .topics
            .client()
            .run_blocking(move |client| {
                let mut rows = Vec::new();
                for topic in topics {
                    match client.snapshot_ranges(&topic) {
                        Ok(ranges) => rows.extend(ranges.into_iter().map(|r| (topic.clone(), r))),
                        // Deleted since it was listed: not a partition any more.
                        Err(crate::CatalogError::TopicNotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(rows)
            })
            .await?;
        let mut topic = StringBuilder::new();
        let mut partition = Int32Builder::new();
        let mut low = Int64Builder::new();
        let mut high = Int64Builder::new();
        let mut lake = Int64Builder::new();
        let mut tiers: std::collections::HashMap<String, Option<deltalake::DeltaTable>> =
            std::collections::HashMap::new();
        for (name, range) in rows {
            let table = self.topics.table_name_for_topic(&name);
            if !tiers.contains_key(&table) {
                let delta = match self.topics.lake() {
                    Some(l) => l.open(&table).await?,
                    None => None,
                };
                tiers.insert(table.clone(), delta);
            }
            let watermark = match tiers.get(&table).and_then(Option::as_ref) {
                Some(delta) => delta
                    .snapshot()
                    .map_err(|e| crate::CatalogError::Lake(e.to_string()))?
                    .transaction_version(
                        delta.log_store().as_ref(),
                        crate::lake::app_id(&table, range.partition),
                    )
                    .await
                    .map_err(|e| crate::CatalogError::Lake(e.to_string()))?,
                None => None,
            };
            topic.append_value(name);
            partition.append_value(range.partition);
            low.append_value(range.start);
            high.append_value(range.end);
            lake.append_option(watermark);
        }
        Ok(RecordBatch::try_new(
            partitions_schema(),
            vec![
                Arc::new(topic.finish()),
                Arc::new(partition.finish()),
                Arc::new(low.finish()),
                Arc::new(high.finish()),
                Arc::new(lake.finish()),
            ],
        )?)
    }
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        vec![PARTITIONS.to_string()]
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if name != PARTITIONS {
            return Ok(None);
        }
        let batch = self.partitions().await?;
        Ok(Some(Arc::new(MemTable::try_new(
            partitions_schema(),
            vec![vec![batch]],
        )?)))
    }

    /// Answered without reading the cluster, so listing tables
    /// (`information_schema`, `SHOW TABLES`) stays cheap.
    async fn table_type(&self, name: &str) -> DfResult<Option<TableType>> {
        Ok((name == PARTITIONS).then_some(TableType::Base))
    }

    fn table_exist(&self, name: &str) -> bool {
        name == PARTITIONS
    }
}

//! `KafkaTable`: a topic as a DataFusion table.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::project_schema;
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::columns::table_schema;
use crate::config::ValueFormat;
use crate::kafka::KafkaClient;
use crate::offsets::group_ranges;
use crate::scan::KafkaScanExec;

/// A table over one Kafka topic. Planning a scan fixes each partition's
/// offset range, so a query reads a consistent snapshot.
#[derive(Debug)]
pub struct KafkaTable {
    topic: String,
    format: ValueFormat,
    value_schema: SchemaRef,
    schema: SchemaRef,
    client: Arc<KafkaClient>,
}

impl KafkaTable {
    /// A table over `topic`, decoding values as `format` into `value_schema`.
    pub fn new(
        topic: impl Into<String>,
        format: ValueFormat,
        value_schema: SchemaRef,
        client: Arc<KafkaClient>,
    ) -> Self {
        Self {
            topic: topic.into(),
            schema: table_schema(format, &value_schema),
            format,
            value_schema,
            client,
        }
    }

    /// The topic this table reads.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

#[async_trait]
impl TableProvider for KafkaTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let topic = self.topic.clone();
        let ranges = self
            .client
            .run_blocking(move |client| client.snapshot_ranges(&topic))
            .await?;
        let groups = group_ranges(&ranges, state.config().target_partitions());
        let schema = project_schema(&self.schema, projection)?;
        Ok(Arc::new(KafkaScanExec::new(
            self.topic.clone(),
            self.format,
            Arc::clone(&self.value_schema),
            projection.cloned(),
            schema,
            groups,
            Arc::clone(&self.client),
        )))
    }
}

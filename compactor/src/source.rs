//! One commit's records as a single stream into deltalake's writer, so a
//! commit's memory is what the Parquet writer buffers (deltalake cuts files
//! at the target size and uploads them in parts), not the commit's records.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::DataFusionError;
use datafusion::datasource::provider_as_source;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::{StreamExt, TryStreamExt, future, stream};
use kappa_catalog::offsets::PartitionRange;
use kappa_catalog::scan::{KafkaScanExec, ScanSpec};
use kappa_catalog::{DeclaredTable, KafkaClient};

use crate::error::Result;
use crate::progress::TierProgress;
use kappa_catalog::lake::layout::with_date;

/// Ranges whose readers run at once: the one being written and the next
/// three. Each range pays its consumer's assignment and first fetch before
/// its first record (about 5 ms on a local broker, more across a network);
/// with four under way a pass over 32 small partitions took 0.24 s instead
/// of 0.36 s with two, while a full backlog reads as fast either way. Each
/// costs up to a consumer's prefetch bound in memory.
const RANGES_IN_FLIGHT: usize = 4;

/// The ranges of one commit, read one after another (so rows are written in
/// `(_partition, _offset)` order) by the gateway's own scan and decoders,
/// with `_date` added.
#[derive(Debug)]
pub(crate) struct CommitSource {
    client: Arc<KafkaClient>,
    table: DeclaredTable,
    /// The table's schema, as the scan yields it.
    table_schema: SchemaRef,
    /// The same plus `_date`, as the lake stores it.
    lake_schema: SchemaRef,
    ranges: Vec<PartitionRange>,
    progress: Arc<TierProgress>,
}

impl CommitSource {
    pub(crate) fn new(
        client: Arc<KafkaClient>,
        table: DeclaredTable,
        table_schema: SchemaRef,
        lake_schema: SchemaRef,
        ranges: Vec<PartitionRange>,
        progress: Arc<TierProgress>,
    ) -> Self {
        Self {
            client,
            table,
            table_schema,
            lake_schema,
            ranges,
            progress,
        }
    }

    /// A plan deltalake's writer can take (`WriteBuilder::with_input_plan`).
    pub(crate) fn into_plan(self) -> Result<LogicalPlan> {
        let schema = Arc::clone(&self.lake_schema);
        let table = StreamingTable::try_new(schema, vec![Arc::new(self)])?;
        Ok(LogicalPlanBuilder::scan("tier", provider_as_source(Arc::new(table)), None)?.build()?)
    }

    fn scan(&self, range: PartitionRange) -> KafkaScanExec {
        let spec = ScanSpec {
            topic: self.table.topic.clone(),
            format: self.table.format.clone(),
            value_schema: Arc::clone(&self.table.value_schema),
            projection: None,
            ranges: vec![range],
            pushed_filters: Vec::new(),
            limit: None,
            last: None,
        };
        KafkaScanExec::new(
            spec,
            Arc::clone(&self.table_schema),
            1,
            Arc::clone(&self.client),
        )
    }
}

impl PartitionStream for CommitSource {
    fn schema(&self) -> &SchemaRef {
        &self.lake_schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let scans: Vec<KafkaScanExec> = self.ranges.iter().map(|r| self.scan(*r)).collect();
        let lake_schema = Arc::clone(&self.lake_schema);
        let progress = Arc::clone(&self.progress);
        let batches = stream::iter(scans)
            .map(move |scan| future::ready(scan.execute(0, Arc::clone(&ctx))))
            // Executing a scan starts its reader: the next range's fetches
            // its first batches while this one streams, instead of the
            // writer waiting out each partition's start. Rows still come
            // range after range.
            .buffered(RANGES_IN_FLIGHT)
            .try_flatten()
            .map(move |batch| {
                let batch = batch?;
                progress.add_records(
                    batch.num_rows() as u64,
                    batch.get_array_memory_size() as u64,
                );
                with_date(&lake_schema, batch).map_err(|e| DataFusionError::External(Box::new(e)))
            });
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.lake_schema),
            batches,
        ))
    }
}

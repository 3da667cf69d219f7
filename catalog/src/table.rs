//! `KafkaTable`: a topic as a DataFusion table.
//!
//! Planning a scan fixes the query's snapshot (each partition's log start and
//! end, once per table instance, so every scan of the table in one query
//! reads the same offsets) and narrows it to the ranges the filters allow
//! (see [`crate::plan`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::project_schema;
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use tokio::sync::OnceCell;

use crate::columns::{OFFSET, PARTITION, TIMESTAMP, table_schema};
use crate::format::ValueFormat;
use crate::kafka::KafkaClient;
use crate::offsets::PartitionRange;
use crate::plan::ranges::candidate_partitions;
use crate::plan::{RangePredicate, TimestampOrder, plan_ranges};
use crate::scan::{KafkaScanExec, ScanSpec};
use crate::snapshot::{self, PartitionSnapshot, TableSnapshot};

/// A table over one Kafka topic.
///
/// DataFusion resolves each table name once per query and calls
/// [`TableProvider::scan`] once per occurrence (self-join, UNION ALL, a CTE
/// used twice): the snapshot is taken by the first scan and reused by the
/// others, so one query sees one state of the topic.
#[derive(Debug)]
pub struct KafkaTable {
    /// The table's name in SQL (the topic's, unless declared): what a
    /// snapshot token names.
    name: String,
    topic: String,
    format: ValueFormat,
    value_schema: SchemaRef,
    schema: SchemaRef,
    timestamp_skew: Option<Duration>,
    client: Arc<KafkaClient>,
    snapshot: OnceCell<Arc<Vec<PartitionRange>>>,
    /// The statement that defines it (`SHOW CREATE TABLE`), if declared.
    definition: Option<String>,
}

impl KafkaTable {
    /// A table over `topic`, decoding values as `format` into `value_schema`.
    pub fn new(
        topic: impl Into<String>,
        format: ValueFormat,
        value_schema: SchemaRef,
        client: Arc<KafkaClient>,
    ) -> Self {
        let topic = topic.into();
        Self {
            name: topic.clone(),
            topic,
            schema: table_schema(&format, &value_schema),
            format,
            value_schema,
            timestamp_skew: None,
            client,
            snapshot: OnceCell::new(),
            definition: None,
        }
    }

    /// Declares that producer timestamps are out of order by at most `skew`
    /// (the `timestamp_skew` table option), so `_timestamp < t` can stop
    /// each partition at its first record at or after `t + skew`.
    pub fn with_timestamp_skew(mut self, skew: Option<Duration>) -> Self {
        self.timestamp_skew = skew;
        self
    }

    /// Names the table `name` in SQL (a declared table over the topic).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Shows `definition` as the statement that makes the table.
    pub fn with_definition(mut self, definition: Option<String>) -> Self {
        self.definition = definition;
        self
    }

    /// The topic this table reads.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The table's name in SQL.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Each partition's `[log start, end)` for this query, read once.
    pub(crate) async fn snapshot(&self) -> crate::Result<Arc<Vec<PartitionRange>>> {
        self.snapshot
            .get_or_try_init(|| async {
                let topic = self.topic.clone();
                let ranges = self
                    .client
                    .run_blocking(move |client| client.snapshot_ranges(&topic))
                    .await?;
                Ok(Arc::new(ranges))
            })
            .await
            .cloned()
    }

    /// How far an upper time bound may narrow a partition. A declared skew
    /// wins (it is the user's statement about this topic's history); else a
    /// LogAppendTime topic is taken as ordered.
    async fn timestamp_order(&self, predicate: &RangePredicate) -> TimestampOrder {
        if !predicate.has_timestamps() {
            return TimestampOrder::Unordered;
        }
        if let Some(skew) = self.timestamp_skew {
            return TimestampOrder::Skewed(i64::try_from(skew.as_millis()).unwrap_or(i64::MAX));
        }
        if self.client.log_append_time(&self.topic).await {
            return TimestampOrder::Ordered;
        }
        TimestampOrder::Unordered
    }

    /// The snapshot of this table the query `state` plans reads, on its
    /// own (no lake tier): the one its session replays, else each
    /// partition's `[log start, end)` now. A replay fails when Kafka no
    /// longer holds its records.
    pub(crate) async fn take_snapshot(&self, state: &dyn Session) -> crate::Result<TableSnapshot> {
        let live = self.snapshot().await?;
        let ranges = match snapshot::pinned(state, &self.name)? {
            None => live.as_ref().clone(),
            Some(pinned) => {
                if let Some(version) = pinned.lake_version {
                    return Err(crate::CatalogError::InvalidSnapshot(format!(
                        "the snapshot token reads table '{}' from its lake tier (Delta version \
                         {version}), and this gateway has no lake (--lake)",
                        self.name
                    )));
                }
                let ranges = snapshot::pinned_ranges(&self.name, &pinned, &live)?;
                snapshot::check_kept(&self.name, &ranges, &live)?;
                ranges
            }
        };
        Ok(TableSnapshot {
            lake_version: None,
            complete: true,
            partitions: ranges
                .iter()
                .map(|r| PartitionSnapshot {
                    partition: r.partition,
                    from: r.start,
                    end: r.end,
                })
                .collect(),
        })
    }

    /// The ranges `filters` allow within `base` (this query's snapshot),
    /// each partition starting no lower than its floor (the lake's
    /// watermark).
    async fn ranges(
        &self,
        base: &[PartitionRange],
        filters: &[Expr],
        floors: &HashMap<i32, i64>,
    ) -> crate::Result<Vec<PartitionRange>> {
        let predicate = RangePredicate::from_filters(filters);
        let snapshot: Vec<PartitionRange> = base
            .iter()
            .map(|full| PartitionRange {
                start: full
                    .start
                    .max(floors.get(&full.partition).copied().unwrap_or(0)),
                ..*full
            })
            .collect();
        let candidates = candidate_partitions(&predicate, &snapshot);
        let order = self.timestamp_order(&predicate).await;
        let mut times = Vec::new();
        predicate.timestamps(order, &mut times);
        // Kafka timestamps are never negative: a bound at or before the epoch
        // needs no lookup (the first record at or after it is the first one).
        times.retain(|&t| t > 0);
        times.sort_unstable();
        times.dedup();
        let answers: HashMap<(i32, i64), i64> = if times.is_empty() || candidates.is_empty() {
            HashMap::new()
        } else {
            let topic = self.topic.clone();
            let partitions: Vec<i32> = candidates.iter().map(|r| r.partition).collect();
            self.client
                .run_blocking(move |client| {
                    let mut answers = HashMap::new();
                    // One request per distinct time, for all partitions at once.
                    for t in times {
                        for (partition, offset) in
                            client.offsets_for_time(&topic, &partitions, t)?
                        {
                            answers.insert((partition, t), offset);
                        }
                    }
                    Ok(answers)
                })
                .await?
        };
        let lookup = |partition: i32, t: i64| {
            if t <= 0 {
                return 0;
            }
            *answers
                .get(&(partition, t))
                .expect("offsets-for-times answered every partition and time")
        };
        Ok(plan_ranges(&predicate, &candidates, &lookup, order))
    }
}

/// Whether `expr` reads any metadata column the scan can bound.
fn mentions_metadata(expr: &Expr) -> bool {
    expr.column_refs()
        .iter()
        .any(|c| matches!(c.name.as_str(), PARTITION | OFFSET | TIMESTAMP))
}

#[async_trait]
impl TableProvider for KafkaTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_table_definition(&self) -> Option<&str> {
        self.definition.as_deref()
    }

    /// `Exact` where offsets alone decide the filter (`_partition`,
    /// `_offset`), so DataFusion neither filters again nor stops a LIMIT from
    /// reaching the scan; `Inexact` where the scan narrows by time but cannot
    /// promise every record in range matches; `Unsupported` otherwise.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|filter| {
                if !mentions_metadata(filter) {
                    TableProviderFilterPushDown::Unsupported
                } else if RangePredicate::from_expr(filter).is_exact() {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let snapshot = self.take_snapshot(state).await?;
        let mut base: Vec<PartitionRange> = snapshot
            .partitions
            .iter()
            .map(|p| PartitionRange::new(p.partition, p.from, p.end))
            .collect();
        let pinned = snapshot::pinned(state, &self.name)?.is_some();
        if let Some(cut) = snapshot::slice::session_cut(state, &self.name, pinned, &base)? {
            base = base.iter().filter_map(|r| cut.narrow_range(r)).collect();
        }
        snapshot::record(state, &self.name, snapshot);
        self.scan_from(state, projection, filters, limit, &base, &HashMap::new())
            .await
    }
}

impl KafkaTable {
    /// The scan of [`TableProvider::scan`] within `base` (the query's
    /// snapshot of each partition), each partition read from no lower than
    /// `floors` (the lake's watermarks, for the lake + Kafka union).
    pub(crate) async fn scan_from(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
        base: &[PartitionRange],
        floors: &HashMap<i32, i64>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let ranges = self.ranges(base, filters, floors).await?;
        let schema = project_schema(&self.schema, projection)?;
        let spec = ScanSpec {
            topic: self.topic.clone(),
            format: self.format.clone(),
            value_schema: Arc::clone(&self.value_schema),
            projection: projection.cloned(),
            ranges,
            pushed_filters: filters.iter().map(ToString::to_string).collect(),
            limit,
            last: None,
        };
        Ok(Arc::new(KafkaScanExec::new(
            spec,
            schema,
            state.config().target_partitions(),
            Arc::clone(&self.client),
        )))
    }
}

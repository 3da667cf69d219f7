//! `TailTable`: what `tail(table, start)` resolves to. Its scan fixes each
//! partition's start when the query runs and plans the lake replay.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, Int32Array, Int64Array};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::functions_aggregate::expr_fn::min;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, col, lit};
use datafusion::physical_expr::expressions::col as physical_col;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::prelude::SessionContext;

use super::StartPosition;
use super::exec::{TailExec, TailSpec};
use crate::columns::{OFFSET, PARTITION, TIMESTAMP, table_schema};
use crate::error::CatalogError;
use crate::format::ValueFormat;
use crate::kafka::KafkaClient;
use crate::lake::{Lake, LakeSnapshot, lake_plan, lake_provider};
use crate::options::KappaOptions;
use crate::plan::{RangePredicate, TimestampOrder};
use crate::stream_registry::StreamRegistry;

/// How a gateway runs streams.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// How long a batch waits for more rows before it is sent.
    pub linger: Duration,
    /// How often a stream looks for new partitions.
    pub refresh_interval: Duration,
    /// The running streams and their cap.
    pub registry: Arc<StreamRegistry>,
}

/// A table's records from a start on, as they are produced.
#[derive(Debug)]
pub struct TailTable {
    name: String,
    topic: String,
    format: ValueFormat,
    value_schema: SchemaRef,
    schema: SchemaRef,
    start: StartPosition,
    client: Arc<KafkaClient>,
    lake: Option<Lake>,
    settings: StreamSettings,
}

impl TailTable {
    /// The table this streams.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A stream of table `name` (topic `topic`) from `start`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: impl Into<String>,
        topic: impl Into<String>,
        format: ValueFormat,
        value_schema: SchemaRef,
        start: StartPosition,
        client: Arc<KafkaClient>,
        lake: Option<Lake>,
        settings: StreamSettings,
    ) -> Self {
        Self {
            name: name.into(),
            topic: topic.into(),
            schema: table_schema(&format, &value_schema),
            format,
            value_schema,
            start,
            client,
            lake,
            settings,
        }
    }

    /// The first offset at or after `t` in each partition of the lake tier
    /// (the lake holds what Kafka may have deleted).
    async fn lake_offsets_for_time(
        &self,
        tier: &LakeSnapshot,
        t: i64,
    ) -> DfResult<HashMap<i32, i64>> {
        let ctx = SessionContext::new();
        let lake_error = |e: &dyn std::fmt::Display| CatalogError::Lake(e.to_string());
        let provider = lake_provider(tier, &ctx.state()).await?;
        let at = lit(ScalarValue::TimestampMicrosecond(
            Some(t.saturating_mul(1000)),
            Some("UTC".into()),
        ));
        let batches = ctx
            .read_table(provider)?
            .filter(col(TIMESTAMP).gt_eq(at))?
            .aggregate(vec![col(PARTITION)], vec![min(col(OFFSET)).alias("first")])?
            .collect()
            .await?;
        let mut out = HashMap::new();
        for batch in batches {
            let partitions = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int32Array>()
                .ok_or_else(|| lake_error(&"_partition is not INT"))?;
            let firsts = batch
                .column(1)
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| lake_error(&"_offset is not BIGINT"))?;
            for row in 0..batch.num_rows() {
                if !partitions.is_null(row) && !firsts.is_null(row) {
                    out.insert(partitions.value(row), firsts.value(row));
                }
            }
        }
        Ok(out)
    }

    /// The lake's rows `replay` names (`(partition, from, watermark)`), in
    /// `_partition`, `_offset` order.
    async fn replay_plan(
        &self,
        tier: &LakeSnapshot,
        state: &dyn Session,
        replay: &[(i32, i64, i64)],
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let wanted = replay
            .iter()
            .map(|&(p, from, to)| {
                col(PARTITION)
                    .eq(lit(p))
                    .and(col(OFFSET).gt_eq(lit(from)))
                    .and(col(OFFSET).lt(lit(to)))
            })
            .reduce(Expr::or)
            .expect("a replay has a partition");
        let plan = lake_plan(
            tier,
            &self.name,
            state,
            &self.schema,
            std::slice::from_ref(&wanted),
            None,
        )
        .await?;
        let schema = DFSchema::try_from(self.schema.as_ref().clone())?;
        let predicate = state.create_physical_expr(wanted, &schema)?;
        let filtered = Arc::new(FilterExec::try_new(predicate, plan)?);
        let order = LexOrdering::new(vec![
            PhysicalSortExpr::new(
                physical_col(PARTITION, &self.schema)?,
                SortOptions::default(),
            ),
            PhysicalSortExpr::new(physical_col(OFFSET, &self.schema)?, SortOptions::default()),
        ])
        .expect("two sort keys");
        Ok(Arc::new(SortExec::new(order, filtered)))
    }
}

#[async_trait]
impl TableProvider for TailTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    /// Every filter is the stream's own: `_partition` and `_offset` filters
    /// choose where each partition starts, and the stream applies all of
    /// them to each batch as it comes (see [`TailSpec::filter`]).
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Exact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let predicate = RangePredicate::from_filters(filters);
        let filter = match filters.iter().cloned().reduce(Expr::and) {
            Some(all) => {
                let schema = DFSchema::try_from(self.schema.as_ref().clone())?;
                Some(state.create_physical_expr(all, &schema)?)
            }
            None => None,
        };
        let topic = self.topic.clone();
        let start = self.start.clone();
        let (snapshot, by_time) = self
            .client
            .run_blocking(move |client| {
                let snapshot = client.snapshot_ranges(&topic)?;
                let by_time = match start {
                    StartPosition::Time(t) => {
                        let partitions: Vec<i32> = snapshot.iter().map(|r| r.partition).collect();
                        client.offsets_for_time(&topic, &partitions, t)?
                    }
                    _ => HashMap::new(),
                };
                Ok((snapshot, by_time))
            })
            .await?;
        let partitions: Vec<i32> = snapshot.iter().map(|r| r.partition).collect();
        let tier = match (&self.lake, &self.start) {
            (
                Some(lake),
                StartPosition::Earliest | StartPosition::Time(_) | StartPosition::Snapshot(_),
            ) => lake.snapshot(&self.name).await?,
            // From the end: nothing to replay (an offset filter below the
            // end does not move a 'latest' start back).
            _ => None,
        };
        let floors = match &tier {
            Some(tier) => tier.watermarks(&partitions).await?,
            None => HashMap::new(),
        };
        let lake_by_time = match (&tier, &self.start) {
            (Some(tier), StartPosition::Time(t)) if !floors.is_empty() => {
                self.lake_offsets_for_time(tier, *t).await?
            }
            _ => HashMap::new(),
        };
        let options = KappaOptions::from_config(state.config_options());

        let mut kafka_starts = Vec::new();
        let mut replay = Vec::new();
        let mut gaps = Vec::new();
        for range in snapshot.iter() {
            let p = range.partition;
            let (allowed, _) = predicate.bounds(p, None, TimestampOrder::Unordered);
            let watermark = floors.get(&p).copied();
            let base = match &self.start {
                StartPosition::Latest => range.end,
                // Where the snapshot ended; a partition added since from
                // its first record.
                StartPosition::Snapshot(snapshot) => match snapshot.partition(p) {
                    Some(ended) if ended.end > range.end => {
                        return Err(CatalogError::InvalidSnapshot(format!(
                            "table '{}' partition {p}: the snapshot token ends at offset {}, \
                             beyond the partition's end {} (was the topic deleted and created \
                             again?)",
                            self.name, ended.end, range.end
                        ))
                        .into());
                    }
                    Some(ended) => ended.end,
                    None if watermark.is_some() => 0,
                    None => range.start,
                },
                StartPosition::Earliest if watermark.is_some() => 0,
                StartPosition::Earliest => range.start,
                StartPosition::Time(_) => {
                    let kafka = by_time.get(&p).copied().unwrap_or(i64::MAX).min(range.end);
                    lake_by_time.get(&p).copied().unwrap_or(kafka)
                }
            };
            let Some(first) = allowed.first_at_or_after(base) else {
                continue;
            };
            let mut from = first;
            if let Some(w) = watermark {
                if first < w {
                    replay.push((p, first, w));
                }
                from = from.max(w);
            }
            if from < range.start {
                if let Some(w) = watermark {
                    gaps.push(format!(
                        "partition {p}: offsets {}..{}",
                        from.max(w),
                        range.start
                    ));
                }
                from = range.start;
            }
            if let Some(from) = allowed.first_at_or_after(from) {
                kafka_starts.push((p, from));
            }
        }
        options.admit_gaps(&self.name, &gaps)?;
        let lake = match (&tier, replay.is_empty()) {
            (Some(tier), false) => Some(self.replay_plan(tier, state, &replay).await?),
            _ => None,
        };
        let spec = TailSpec {
            table: self.name.clone(),
            topic: self.topic.clone(),
            format: self.format.clone(),
            value_schema: Arc::clone(&self.value_schema),
            start: self.start.clone(),
            predicate,
            partitions,
            kafka_starts,
            lake_replay: replay,
            linger: self.settings.linger,
            refresh_interval: self.settings.refresh_interval,
            filter,
            limit,
        };
        let tail: Arc<dyn ExecutionPlan> = Arc::new(TailExec::new(
            spec,
            Arc::clone(&self.schema),
            lake,
            Arc::clone(&self.client),
            Arc::clone(&self.settings.registry),
        ));
        let Some(projection) = projection else {
            return Ok(tail);
        };
        let exprs = projection
            .iter()
            .map(|&i| {
                let name = self.schema.field(i).name();
                Ok((physical_col(name, &self.schema)?, name.clone()))
            })
            .collect::<DfResult<Vec<_>>>()?;
        Ok(Arc::new(ProjectionExec::try_new(exprs, tail)?))
    }
}

//! `LakeKafkaTable`: a table that has a lake tier reads as one table, the
//! union of the lake (each partition's offsets below its watermark) and
//! Kafka (from the watermark on), exact at the seam.
//!
//! Both sides are fixed when the query is planned: the Delta snapshot (its
//! files and its watermarks, from the same log version) is loaded when the
//! table is resolved, once per query, and Kafka's snapshot is the table's.
//! The compactor commits each partition's watermark with the files holding
//! the records below it, so the lake never holds an offset at or above its
//! watermark and Kafka is read only from it: every offset appears once.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::project_schema;
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;
use tokio::sync::OnceCell;

use crate::error::CatalogError;
use crate::lake::{Lake, LakeSnapshot, LakeTierExec, lake_plan};
use crate::offsets::PartitionRange;
use crate::options::KappaOptions;
use crate::plan::{IntervalSet, RangePredicate, TimestampOrder};
use crate::scan::KafkaScanExec;
use crate::table::KafkaTable;

/// Most partitions a `_partition` filter may name for a query to be
/// answered from the lake alone without asking Kafka for its partitions.
const MAX_LAKE_ONLY_PARTITIONS: i64 = 4096;

/// A table read from its Delta table below each partition's watermark and
/// from Kafka above it (or from Kafka alone while the compactor has not
/// created its Delta table).
#[derive(Debug)]
pub struct LakeKafkaTable {
    name: String,
    kafka: KafkaTable,
    lake: Lake,
    /// The lake tier of this query, loaded by its first scan: every scan of
    /// the table in one query reads one Delta version.
    tier: OnceCell<Option<LakeSnapshot>>,
}

impl LakeKafkaTable {
    /// The union of `name`'s tier in `lake` and `kafka`. Nothing is read
    /// until the table is scanned, so resolving and listing tables costs no
    /// lake I/O.
    pub fn new(name: impl Into<String>, kafka: KafkaTable, lake: Lake) -> Self {
        Self {
            name: name.into(),
            kafka,
            lake,
            tier: OnceCell::new(),
        }
    }

    async fn tier(&self) -> Result<Option<&LakeSnapshot>, CatalogError> {
        let tier = self
            .tier
            .get_or_try_init(|| self.lake.snapshot(&self.name))
            .await?;
        Ok(tier.as_ref())
    }

    /// Fails when Kafka deleted records the lake does not hold (its log
    /// start passed the watermark before they were tiered) and the query
    /// asks for any of them: the answer would silently miss them.
    fn check_gaps(
        &self,
        snapshot: &[PartitionRange],
        floors: &HashMap<i32, i64>,
        predicate: &RangePredicate,
        options: &KappaOptions,
    ) -> Result<(), CatalogError> {
        let mut gaps = Vec::new();
        for range in snapshot {
            let Some(&watermark) = floors.get(&range.partition) else {
                continue;
            };
            if range.start <= watermark {
                continue;
            }
            let (wanted, _) = predicate.bounds(range.partition, None, TimestampOrder::Unordered);
            if !wanted
                .intersect(&IntervalSet::range(watermark, range.start))
                .is_empty()
            {
                gaps.push(format!(
                    "partition {}: offsets {watermark}..{}",
                    range.partition, range.start
                ));
            }
        }
        options.admit_gaps(&self.name, &gaps)
    }

    /// The lake's rows for this query, in the table's (projected) schema.
    async fn lake_scan(
        &self,
        tier: &LakeSnapshot,
        floors: &HashMap<i32, i64>,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let target = project_schema(&self.kafka.schema(), projection)?;
        let lake = lake_plan(tier, &self.name, state, &target, filters, limit).await?;
        Ok(Arc::new(LakeTierExec::new(
            self.name.clone(),
            tier.version(),
            floors.iter().map(|(&p, &w)| (p, w)).collect(),
            lake,
        )))
    }
}

/// The partitions `predicate` restricts a query to, when it names few
/// enough of them to list.
fn named_partitions(predicate: &RangePredicate) -> Option<Vec<i32>> {
    let (over, _) = predicate.partitions();
    let named = over.intersect(&IntervalSet::below(i64::from(i32::MAX)));
    let count: i64 = named.intervals().iter().map(|(s, e)| e - s).sum();
    if over != named || count > MAX_LAKE_ONLY_PARTITIONS {
        return None;
    }
    Some(
        named
            .intervals()
            .iter()
            .flat_map(|&(s, e)| s..e)
            .map(|p| i32::try_from(p).expect("below i32::MAX"))
            .collect(),
    )
}

/// Whether `predicate` may select offsets of `partition` below `watermark`
/// (and so needs the lake).
fn wants_below(predicate: &RangePredicate, partition: i32, watermark: i64) -> bool {
    let (over, _) = predicate.bounds(partition, None, TimestampOrder::Unordered);
    !over.intersect(&IntervalSet::below(watermark)).is_empty()
}

/// Whether `predicate` may select offsets of `partition` at or above
/// `watermark` (and so needs Kafka).
fn wants_from(predicate: &RangePredicate, partition: i32, watermark: i64) -> bool {
    let (over, _) = predicate.bounds(partition, None, TimestampOrder::Unordered);
    !over.intersect(&IntervalSet::at_least(watermark)).is_empty()
}

#[async_trait]
impl TableProvider for LakeKafkaTable {
    fn schema(&self) -> SchemaRef {
        self.kafka.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_table_definition(&self) -> Option<&str> {
        self.kafka.get_table_definition()
    }

    /// Every filter reaches both sides (Kafka narrows its ranges, the lake
    /// prunes files), and DataFusion applies it again above the union.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some(tier) = self.tier().await? else {
            return self.kafka.scan(state, projection, filters, limit).await;
        };
        let predicate = RangePredicate::from_filters(filters);
        // Wholly below the watermarks of the partitions it names: the lake
        // alone answers, and Kafka is not contacted (it may be down). Without
        // a `_partition` filter Kafka must say which partitions exist (one
        // may have been added since the last tiering).
        if let Some(partitions) = named_partitions(&predicate) {
            let floors = tier.watermarks(&partitions).await?;
            let below = partitions.iter().all(|p| {
                floors
                    .get(p)
                    .is_some_and(|&w| !wants_from(&predicate, *p, w))
            });
            if below {
                return self
                    .lake_scan(tier, &floors, state, projection, filters, limit)
                    .await;
            }
        }
        let snapshot = self.kafka.snapshot().await?;
        let partitions: Vec<i32> = snapshot.iter().map(|r| r.partition).collect();
        let floors = tier.watermarks(&partitions).await?;
        let options = KappaOptions::from_config(state.config_options());
        self.check_gaps(&snapshot, &floors, &predicate, &options)?;
        let kafka = self
            .kafka
            .scan_from(state, projection, filters, limit, &floors)
            .await?;
        // Wholly at or above the watermarks: no lake file is planned.
        if !floors.iter().any(|(&p, &w)| wants_below(&predicate, p, w)) {
            return Ok(kafka);
        }
        let lake = self
            .lake_scan(tier, &floors, state, projection, filters, limit)
            .await?;
        // Nothing above the watermarks: Kafka has nothing to add.
        if kafka
            .downcast_ref::<KafkaScanExec>()
            .is_some_and(|scan| scan.spec().ranges.is_empty())
        {
            return Ok(lake);
        }
        UnionExec::try_new(vec![lake, kafka])
    }
}

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
use datafusion::common::{DFSchema, project_schema};
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, col, lit};
use datafusion::physical_expr::expressions::col as physical_col;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use tokio::sync::OnceCell;

use crate::changelog::CompactedLatest;
use crate::columns::{OFFSET, PARTITION};
use crate::error::CatalogError;
use crate::lake::travel::LakeScanSpec;
use crate::lake::{self, Lake, LakeSnapshot, LakeTierExec, lake_plan};
use crate::offsets::PartitionRange;
use crate::options::KappaOptions;
use crate::plan::{IntervalSet, RangePredicate, TimestampOrder};
use crate::scan::KafkaScanExec;
use crate::snapshot::{self, PartitionSnapshot, TableSnapshot};
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

    /// The latest rows the compactor keeps for this table, when this query
    /// may read them instead of the history below their watermarks: the
    /// query replays no token, and they were derived from this table's
    /// history (not one deleted since) no further than the history version
    /// this query reads, so they stand for records this query's snapshot
    /// holds, and nothing newer.
    pub(crate) async fn compacted_latest(
        &self,
        state: &dyn Session,
    ) -> Result<Option<CompactedLatest>, CatalogError> {
        if snapshot::pinned(state, &self.name)?.is_some() {
            return Ok(None);
        }
        let Some(latest) = self.lake.latest(&self.name).await? else {
            return Ok(None);
        };
        let Some(history) = self.tier().await? else {
            return Ok(None);
        };
        let history_id = history.table_id()?;
        if latest
            .transaction(&lake::latest_source_id(&history_id))
            .await?
            .is_none()
        {
            tracing::debug!(table = %self.name, "its latest rows are of another history table (or none yet): reading the history");
            return Ok(None);
        }
        let partitions: Vec<i32> = self
            .kafka
            .snapshot()
            .await?
            .iter()
            .map(|r| r.partition)
            .collect();
        let covered = latest
            .watermarks_named(&partitions, |p| lake::latest_app_id(&history_id, p))
            .await?;
        let floors = history.watermarks(&partitions).await?;
        let ahead = covered
            .iter()
            .any(|(p, &w)| floors.get(p).is_none_or(|&floor| w > floor));
        if ahead || covered.is_empty() {
            // Compacted past the history version this query read (a pass
            // landed in between): read the history.
            return Ok(None);
        }
        Ok(Some(CompactedLatest::new(
            self.name.clone(),
            self.schema(),
            latest,
            covered,
        )))
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
        Ok(Arc::new(
            LakeTierExec::new(
                self.name.clone(),
                tier.version(),
                floors.iter().map(|(&p, &w)| (p, w)).collect(),
                lake,
            )
            .reading_all_of(tier.clone())
            .described_by(LakeScanSpec {
                table: self.name.clone(),
                version: tier.version(),
                columns: target,
                filters: filters.to_vec(),
                limit,
            }),
        ))
    }

    /// The snapshot of this table the query `state` plans reads: the one
    /// its session replays, else the lake's latest version and Kafka's
    /// ends now.
    pub(crate) async fn take_snapshot(
        &self,
        state: &dyn Session,
    ) -> Result<TableSnapshot, CatalogError> {
        if let Some(pinned) = snapshot::pinned(state, &self.name)? {
            return Ok(pinned);
        }
        let live = self.kafka.snapshot().await?;
        let Some(tier) = self.tier().await? else {
            return self.kafka.take_snapshot(state).await;
        };
        let partitions: Vec<i32> = live.iter().map(|r| r.partition).collect();
        let floors = tier.watermarks(&partitions).await?;
        Ok(union_snapshot(tier, &live, &floors))
    }

    /// Reads `pinned`, a state of this table a token names, again: the
    /// lake's rows below each partition's end (the lake only ever gains
    /// offsets, and OPTIMIZE rewrites files, not rows, so its latest
    /// version holds every row the token's version held, and those tiered
    /// since are the very records Kafka held then), and Kafka from the
    /// lake's watermark to the end. Records neither tier holds any more
    /// fail the query with `SnapshotLost`.
    async fn replay(
        &self,
        state: &dyn Session,
        pinned: &TableSnapshot,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let live = self.kafka.snapshot().await?;
        let base = snapshot::pinned_ranges(&self.name, pinned, &live)?;
        // A slice of the answer reads its share of both tiers' rows.
        let cut = snapshot::slice::session_cut(state, &self.name, true, &base)?;
        let partitions: Vec<i32> = base.iter().map(|r| r.partition).collect();
        if !pinned.complete {
            self.check_covered(pinned, &live, filters)?;
        }
        let tier = self.tier().await?;
        let floors = match (tier, pinned.lake_version) {
            (None, Some(version)) => {
                return Err(CatalogError::SnapshotLost {
                    table: self.name.clone(),
                    detail: format!(
                        "its lake tier, read at Delta version {version}, was deleted, and Kafka \
                         alone cannot tell which records the lake held"
                    ),
                }
                .into());
            }
            (None, None) => HashMap::new(),
            (Some(tier), Some(version)) if tier.version() < version => {
                return Err(CatalogError::InvalidSnapshot(format!(
                    "table '{}': the snapshot token reads Delta version {version} of its lake \
                     tier, which is at version {} (was it created again since?)",
                    self.name,
                    tier.version()
                ))
                .into());
            }
            (Some(tier), _) => tier.watermarks(&partitions).await?,
        };
        // Kafka from the lake's watermark (or the token's first offset) on.
        let from_kafka: Vec<PartitionRange> = base
            .iter()
            .map(|r| {
                let start = floors
                    .get(&r.partition)
                    .map_or(r.start, |&w| w.max(r.start));
                PartitionRange::new(r.partition, start.min(r.end), r.end)
            })
            .filter_map(|r| match &cut {
                Some(cut) => cut.narrow_range(&r),
                None => Some(r),
            })
            .collect();
        snapshot::check_kept(&self.name, &from_kafka, &live)?;
        snapshot::record(state, &self.name, pinned.clone());
        let kafka_floors: HashMap<i32, i64> =
            from_kafka.iter().map(|r| (r.partition, r.start)).collect();
        let kafka = self
            .kafka
            .scan_from(state, projection, filters, None, &from_kafka, &kafka_floors)
            .await?;
        // The lake's rows of each partition below its end (and, where the
        // token read no lake, from its first offset: the lake may have
        // tiered records Kafka had deleted before the token was taken).
        let bounds: Vec<LakeBound> = base
            .iter()
            .filter_map(|r| {
                let watermark = *floors.get(&r.partition)?;
                let lower = pinned.lake_version.is_none().then_some(r.start);
                let upper = r.end.min(watermark);
                let (lower, upper) = match &cut {
                    Some(cut) => cut.narrow(r.partition, lower, upper)?,
                    None => (lower, upper),
                };
                (lower.unwrap_or(i64::MIN) < upper).then_some(LakeBound {
                    partition: r.partition,
                    lower,
                    upper,
                })
            })
            .collect();
        let Some(tier) = tier.filter(|_| !bounds.is_empty()) else {
            return Ok(kafka);
        };
        let lake = self
            .bounded_lake_scan(tier, &floors, state, projection, filters, &bounds)
            .await?;
        lake_and_kafka(lake, kafka)
    }

    /// Refuses a replay of a token that knows only some partitions (its
    /// query named them and the lake alone answered) for a query that may
    /// read others: their state is not in the token, and reading nothing
    /// from them would be an answer that looks complete.
    fn check_covered(
        &self,
        pinned: &TableSnapshot,
        live: &[PartitionRange],
        filters: &[Expr],
    ) -> Result<(), CatalogError> {
        let (wanted, _) = RangePredicate::from_filters(filters).partitions();
        let outside: Vec<String> = live
            .iter()
            .map(|r| r.partition)
            .filter(|&p| pinned.partition(p).is_none() && wanted.contains(i64::from(p)))
            .map(|p| p.to_string())
            .collect();
        if outside.is_empty() {
            return Ok(());
        }
        let listed: Vec<String> = pinned
            .partitions
            .iter()
            .map(|p| p.partition.to_string())
            .collect();
        Err(CatalogError::InvalidSnapshot(format!(
            "the snapshot token holds only partition(s) {} of table '{}' (the query it came from \
             named them), and this query reads partition(s) {} too: take a token of the whole \
             table with snapshot('{}')",
            listed.join(", "),
            self.name,
            outside.join(", "),
            self.name
        )))
    }

    /// The lake's rows within `bounds`, applied row by row (they decide
    /// what the snapshot holds, unlike the query's filters, which only
    /// prune here), in the table's (projected) schema.
    async fn bounded_lake_scan(
        &self,
        tier: &LakeSnapshot,
        floors: &HashMap<i32, i64>,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        bounds: &[LakeBound],
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = self.kafka.schema();
        let target = project_schema(&schema, projection)?;
        // The bounds read `_partition` and `_offset`, selected or not.
        let mut wide: Vec<usize> = projection
            .cloned()
            .unwrap_or_else(|| (0..schema.fields().len()).collect());
        for column in [PARTITION, OFFSET] {
            let index = schema.index_of(column)?;
            if !wide.contains(&index) {
                wide.push(index);
            }
        }
        let wide = project_schema(&schema, Some(&wide))?;
        let bound = bounds
            .iter()
            .map(LakeBound::expr)
            .reduce(Expr::or)
            .expect("a bounded scan has a bound");
        let mut pruning = filters.to_vec();
        pruning.push(bound.clone());
        let lake = lake_plan(tier, &self.name, state, &wide, &pruning, None).await?;
        let predicate =
            state.create_physical_expr(bound, &DFSchema::try_from(wide.as_ref().clone())?)?;
        let filtered: Arc<dyn ExecutionPlan> = Arc::new(FilterExec::try_new(predicate, lake)?);
        let columns = target
            .fields()
            .iter()
            .map(|f| Ok((physical_col(f.name(), &wide)?, f.name().clone())))
            .collect::<DfResult<Vec<_>>>()?;
        let narrowed = Arc::new(ProjectionExec::try_new(columns, filtered)?);
        Ok(Arc::new(LakeTierExec::new(
            self.name.clone(),
            tier.version(),
            floors.iter().map(|(&p, &w)| (p, w)).collect(),
            narrowed,
        )))
    }
}

/// The lake rows of one partition a replay reads: offsets in
/// `[lower, upper)` (`lower` unbounded when `None`).
#[derive(Debug, Clone, Copy)]
struct LakeBound {
    partition: i32,
    lower: Option<i64>,
    upper: i64,
}

impl LakeBound {
    fn expr(&self) -> Expr {
        let mut bound = col(PARTITION)
            .eq(lit(self.partition))
            .and(col(OFFSET).lt(lit(self.upper)));
        if let Some(lower) = self.lower {
            bound = bound.and(col(OFFSET).gt_eq(lit(lower)));
        }
        bound
    }
}

/// The state a union reads: the lake at `tier`'s version below each
/// partition's watermark, and Kafka from there (or from its log start) to
/// the partition's end.
fn union_snapshot(
    tier: &LakeSnapshot,
    live: &[PartitionRange],
    floors: &HashMap<i32, i64>,
) -> TableSnapshot {
    TableSnapshot {
        lake_version: Some(tier.version()),
        complete: true,
        partitions: live
            .iter()
            .map(|r| PartitionSnapshot {
                partition: r.partition,
                from: floors
                    .get(&r.partition)
                    .map_or(r.start, |&w| w.max(r.start))
                    .min(r.end),
                end: r.end,
            })
            .collect(),
    }
}

/// The union of the two sides, or the lake alone when Kafka has nothing
/// above the watermarks to add.
fn lake_and_kafka(
    lake: Arc<dyn ExecutionPlan>,
    kafka: Arc<dyn ExecutionPlan>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    if kafka
        .downcast_ref::<KafkaScanExec>()
        .is_some_and(|scan| scan.spec().ranges.is_empty())
    {
        return Ok(lake);
    }
    UnionExec::try_new(vec![lake, kafka])
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
        if let Some(pinned) = snapshot::pinned(state, &self.name)? {
            return self.replay(state, &pinned, projection, filters).await;
        }
        // A slice reads a share of a token's state, and there is none.
        snapshot::slice::session_cut(state, &self.name, false, &[])?;
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
                // Only these partitions' state is known (Kafka was not asked).
                let named = TableSnapshot {
                    lake_version: Some(tier.version()),
                    complete: false,
                    partitions: floors
                        .iter()
                        .map(|(&partition, &w)| PartitionSnapshot {
                            partition,
                            from: w,
                            end: w,
                        })
                        .collect(),
                };
                snapshot::record(state, &self.name, named);
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
        snapshot::record(state, &self.name, union_snapshot(tier, &snapshot, &floors));
        let kafka = self
            .kafka
            .scan_from(state, projection, filters, limit, &snapshot, &floors)
            .await?;
        // Wholly at or above the watermarks: no lake file is planned.
        if !floors.iter().any(|(&p, &w)| wants_below(&predicate, p, w)) {
            return Ok(kafka);
        }
        let lake = self
            .lake_scan(tier, &floors, state, projection, filters, limit)
            .await?;
        lake_and_kafka(lake, kafka)
    }
}

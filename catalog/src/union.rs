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
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{cast, col};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use deltalake::DeltaTable;

use crate::error::CatalogError;
use crate::lake::app_id;
use crate::offsets::PartitionRange;
use crate::plan::{IntervalSet, RangePredicate, TimestampOrder};
use crate::table::KafkaTable;

/// A table read from its Delta table below each partition's watermark and
/// from Kafka above it.
#[derive(Debug)]
pub struct LakeKafkaTable {
    name: String,
    kafka: KafkaTable,
    delta: DeltaTable,
}

impl LakeKafkaTable {
    /// The union of `delta` (the table's lake tier, loaded at one version)
    /// and `kafka`.
    pub fn new(name: impl Into<String>, kafka: KafkaTable, delta: DeltaTable) -> Self {
        Self {
            name: name.into(),
            kafka,
            delta,
        }
    }

    /// Each partition's watermark in the loaded Delta snapshot.
    async fn watermarks(&self, partitions: &[i32]) -> Result<HashMap<i32, i64>, CatalogError> {
        let lake = |e: deltalake::DeltaTableError| CatalogError::Lake(e.to_string());
        let state = self.delta.snapshot().map_err(lake)?;
        let log_store = self.delta.log_store();
        let mut out = HashMap::new();
        for &partition in partitions {
            if let Some(watermark) = state
                .transaction_version(log_store.as_ref(), app_id(&self.name, partition))
                .await
                .map_err(lake)?
            {
                out.insert(partition, watermark);
            }
        }
        Ok(out)
    }
}

impl LakeKafkaTable {
    /// Fails when Kafka deleted records the lake does not hold (its log
    /// start passed the watermark before they were tiered) and the query
    /// asks for any of them: the answer would silently miss them.
    fn check_gaps(
        &self,
        snapshot: &[PartitionRange],
        floors: &HashMap<i32, i64>,
        filters: &[Expr],
    ) -> Result<(), CatalogError> {
        let predicate = RangePredicate::from_filters(filters);
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
        if gaps.is_empty() {
            return Ok(());
        }
        Err(CatalogError::HistoryGap {
            table: self.name.clone(),
            detail: gaps.join(", "),
        })
    }
}

#[async_trait]
impl TableProvider for LakeKafkaTable {
    fn schema(&self) -> SchemaRef {
        self.kafka.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
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
        let snapshot = self.kafka.snapshot().await?;
        let partitions: Vec<i32> = snapshot.iter().map(|r| r.partition).collect();
        let floors = self.watermarks(&partitions).await?;
        self.check_gaps(&snapshot, &floors, filters)?;
        let kafka = self
            .kafka
            .scan_from(state, projection, filters, limit, &floors)
            .await?;

        self.delta
            .update_datafusion_session(state)
            .map_err(|e| CatalogError::Lake(e.to_string()))?;
        let provider = self
            .delta
            .table_provider()
            .await
            .map_err(|e| CatalogError::Lake(e.to_string()))?;
        // The lake's columns by name (it also has `_date`, and a definition
        // may have changed since the lake was written).
        let lake_schema = provider.schema();
        let columns = kafka
            .schema()
            .fields()
            .iter()
            .map(|field| {
                lake_schema.index_of(field.name()).map_err(|_| {
                    CatalogError::Lake(format!(
                        "table '{}': column '{}' is not in its lake table; a definition \
                         changed since the lake was written is not supported yet",
                        self.name,
                        field.name()
                    ))
                })
            })
            .collect::<Result<Vec<usize>, _>>()?;
        let lake = provider.scan(state, Some(&columns), filters, limit).await?;
        let lake = conform(lake, &kafka.schema())?;
        UnionExec::try_new(vec![lake, kafka])
    }
}

/// `plan` with the types of `target` (the lake may read a list's item
/// field under another name, or strings as views): a cast where they differ.
fn conform(plan: Arc<dyn ExecutionPlan>, target: &SchemaRef) -> DfResult<Arc<dyn ExecutionPlan>> {
    let source = plan.schema();
    if source.fields().len() == target.fields().len()
        && source
            .fields()
            .iter()
            .zip(target.fields())
            .all(|(a, b)| a.data_type() == b.data_type() && a.name() == b.name())
    {
        return Ok(plan);
    }
    let mut exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = Vec::new();
    for field in target.fields() {
        let column = col(field.name(), &source)?;
        let expr = if source.field_with_name(field.name())?.data_type() == field.data_type() {
            column
        } else {
            cast(column, &source, field.data_type().clone())?
        };
        exprs.push((expr, field.name().clone()));
    }
    Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
}

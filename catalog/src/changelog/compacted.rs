//! The latest rows the compactor keeps for a changelog table: one row per
//! key and partition (that partition's newest record of the key, a
//! tombstone included), for every record of the history below each
//! partition's watermark.
//!
//! `latest()` reads them together with the table's records at or above those
//! watermarks and resolves the two exactly as it resolves the whole log:
//! within a partition the higher offset wins, and every kept row is below
//! every record read beside it. So the answer is the same, and the work is
//! the keys plus the records since the compactor's last pass, not the
//! history. Tombstones stay as rows: across partitions the later timestamp
//! wins, so a partition's tombstone still deletes the key's value from an
//! older record in another partition.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::project_schema;
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, col, lit};
use datafusion::physical_plan::ExecutionPlan;

use crate::columns::{OFFSET, PARTITION};
use crate::lake::{LakeSnapshot, LakeTierExec, lake_plan};

/// A changelog table's latest rows at one Delta version, and the watermarks
/// below which they stand for the history.
#[derive(Debug)]
pub struct CompactedLatest {
    table: String,
    schema: SchemaRef,
    tier: LakeSnapshot,
    /// `partition → watermark`: the rows hold the newest record of each key
    /// among the partition's offsets below it.
    covered: HashMap<i32, i64>,
}

impl CompactedLatest {
    /// The latest rows of `table` in `tier`, in the table's `schema`,
    /// standing for each partition's records below `covered`.
    pub(crate) fn new(
        table: impl Into<String>,
        schema: SchemaRef,
        tier: LakeSnapshot,
        covered: HashMap<i32, i64>,
    ) -> Self {
        Self {
            table: table.into(),
            schema,
            tier,
            covered,
        }
    }

    /// The name `EXPLAIN` shows for them.
    pub fn label(&self) -> String {
        format!("latest({})", self.table)
    }

    /// The table's records the rows do not stand for: each covered
    /// partition's from its watermark on, every other partition's all.
    pub fn uncovered(&self) -> Expr {
        uncovered(&self.covered)
    }
}

/// The records `covered` (`partition → watermark`) does not stand for, as
/// a balanced tree of ORs (a topic of thousands of partitions would make a
/// chain too deep for the planner's recursion).
fn uncovered(covered: &HashMap<i32, i64>) -> Expr {
    let mut partitions: Vec<(i32, i64)> = covered.iter().map(|(&p, &w)| (p, w)).collect();
    partitions.sort_unstable();
    let others = col(PARTITION).in_list(partitions.iter().map(|&(p, _)| lit(p)).collect(), true);
    let mut terms: Vec<Expr> = std::iter::once(others)
        .chain(
            partitions
                .iter()
                .map(|&(p, w)| col(PARTITION).eq(lit(p)).and(col(OFFSET).gt_eq(lit(w)))),
        )
        .collect();
    while terms.len() > 1 {
        let mut pairs = Vec::with_capacity(terms.len().div_ceil(2));
        let mut rest = terms.into_iter();
        while let Some(left) = rest.next() {
            pairs.push(match rest.next() {
                Some(right) => left.or(right),
                None => left,
            });
        }
        terms = pairs;
    }
    terms.pop().expect("one term at least")
}

#[async_trait]
impl TableProvider for CompactedLatest {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

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
        let target = project_schema(&self.schema, projection)?;
        let rows = lake_plan(&self.tier, &self.label(), state, &target, filters, limit).await?;
        Ok(Arc::new(LakeTierExec::new(
            self.label(),
            self.tier.version(),
            self.covered.iter().map(|(&p, &w)| (p, w)).collect(),
            rows,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_records_not_covered_are_each_partitions_from_its_watermark_and_all_of_the_others() {
        let covered = HashMap::from([(2, 40), (0, 10)]);
        assert_eq!(
            uncovered(&covered).to_string(),
            "_partition NOT IN ([Int32(0), Int32(2)]) \
             OR _partition = Int32(0) AND _offset >= Int64(10) \
             OR _partition = Int32(2) AND _offset >= Int64(40)"
        );
    }
}

//! "The last n records": `ORDER BY _offset DESC LIMIT n` reads only the tail
//! of each partition.
//!
//! DataFusion plans it as a TopK (`SortExec` with a fetch) over the scan, and
//! its own sort pushdown does not tell a source the fetch. This rule finds a
//! TopK whose first key is the scan's `_offset`, descending, with nothing
//! between them that drops or reorders rows within a partition (projections
//! of plain columns, coalescing, repartitioning, a filter on `_partition`
//! alone), and has the scan read only the
//! newest `n` records of each partition. The TopK stays: it picks the global
//! `n` among them, which are a superset of the answer because within one
//! partition `_offset` orders records completely. Below a union (a table
//! with a lake tier), the Kafka side reads its tail and the lake side is
//! read as planned.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::error::Result as DfResult;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{ChildrenPropertiesMode, ExecutionPlan, ReplaceChildrenOptions};

use crate::columns::{OFFSET, PARTITION};
use crate::lake::LakeTierExec;
use crate::scan::KafkaScanExec;

/// The physical optimizer rule (register it on the session state).
#[derive(Debug, Default)]
pub struct LastRecordsRule;

impl PhysicalOptimizerRule for LastRecordsRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_down(|node| {
            let Some(sort) = node.downcast_ref::<SortExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(fetch) = sort.fetch() else {
                return Ok(Transformed::no(node));
            };
            let first = sort.expr().first();
            let Some(column) = first.expr.downcast_ref::<Column>() else {
                return Ok(Transformed::no(node));
            };
            if !first.options.descending {
                return Ok(Transformed::no(node));
            }
            match with_last(sort.input(), column.index(), fetch)? {
                Some(input) => {
                    let rewritten = replace_children(&node, input)?;
                    Ok(Transformed::yes(rewritten))
                }
                None => Ok(Transformed::no(node)),
            }
        })
        .data()
    }

    fn name(&self) -> &str {
        "kappa_last_records"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `plan` with `child` as its only child.
fn replace_children(
    plan: &Arc<dyn ExecutionPlan>,
    child: Arc<dyn ExecutionPlan>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    Arc::clone(plan).replace_children(
        vec![child],
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
    )
}

/// Whether every column `filter`'s predicate reads is `_partition`.
fn reads_only_partition(filter: &FilterExec) -> bool {
    let input = filter.input().schema();
    let mut only_partition = true;
    let _ = filter.predicate().apply(|expr| {
        if let Some(column) = expr.downcast_ref::<Column>() {
            only_partition &= input.field(column.index()).name() == PARTITION;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    only_partition
}

/// `plan` with its Kafka scan reading the last `n` records per partition
/// (and its lake tier only the files holding them), if column `index` of
/// `plan` is that scan's `_offset` and every node on the way keeps each
/// partition's rows.
fn with_last(
    plan: &Arc<dyn ExecutionPlan>,
    index: usize,
    n: usize,
) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    // The leaves: a scan whose column `index` is `_offset`.
    let is_offset = || plan.schema().field(index).name() == OFFSET;
    if let Some(scan) = plan.downcast_ref::<KafkaScanExec>() {
        // A scan with a LIMIT of its own has no filter above it either way;
        // the tail is still what ORDER BY wants.
        return Ok(is_offset().then(|| Arc::new(scan.with_last(n)) as Arc<dyn ExecutionPlan>));
    }
    if let Some(lake) = plan.downcast_ref::<LakeTierExec>() {
        if !is_offset() {
            return Ok(None);
        }
        return Ok(lake
            .with_last(n)?
            .map(|lake| Arc::new(lake) as Arc<dyn ExecutionPlan>));
    }
    // A union (the lake and Kafka tiers of one table): its Kafka side reads
    // its tail, its lake side the files holding each partition's newest;
    // the TopK above picks among all of them.
    if plan.downcast_ref::<UnionExec>().is_some() {
        let mut changed = false;
        let mut children = Vec::new();
        for child in plan.children() {
            match with_last(child, index, n)? {
                Some(new_child) => {
                    changed = true;
                    children.push(new_child);
                }
                None => children.push(Arc::clone(child)),
            }
        }
        return if changed {
            Ok(Some(Arc::clone(plan).replace_children(
                children,
                ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
            )?))
        } else {
            Ok(None)
        };
    }
    let child_index = if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let Some(column) = projection.expr()[index].expr.downcast_ref::<Column>() else {
            return Ok(None);
        };
        column.index()
    } else if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        // A filter on `_partition` alone keeps a partition's rows all or
        // none, so the newest n of each partition it keeps are still there.
        if filter.fetch().is_some() || !reads_only_partition(filter) {
            return Ok(None);
        }
        match filter.projection() {
            Some(projection) => projection[index],
            None => index,
        }
    } else if plan.fetch().is_none()
        && (plan.downcast_ref::<CooperativeExec>().is_some()
            || plan.downcast_ref::<CoalescePartitionsExec>().is_some()
            || plan.downcast_ref::<RepartitionExec>().is_some())
    {
        index
    } else {
        return Ok(None);
    };
    let [child] = plan.children()[..] else {
        return Ok(None);
    };
    match with_last(child, child_index, n)? {
        Some(new_child) => Ok(Some(replace_children(plan, new_child)?)),
        None => Ok(None),
    }
}

//! `LakeTierExec`: the lake side of a union, named in `EXPLAIN` with the
//! Delta version and the watermarks that bound it, so a plan shows where the
//! seam is. It passes its input's batches through unchanged.

use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties,
    ReplaceChildrenOptions,
};

/// Watermarks listed in full before `EXPLAIN` summarises them.
const MAX_WATERMARKS_SHOWN: usize = 8;

/// The lake tier of `table` at Delta `version`, holding each partition's
/// offsets below its watermark.
#[derive(Debug)]
pub struct LakeTierExec {
    table: String,
    version: u64,
    /// `(partition, watermark)`, by partition.
    watermarks: Vec<(i32, i64)>,
    input: Arc<dyn ExecutionPlan>,
}

impl LakeTierExec {
    /// `input` (the Delta scan) labelled with where it ends.
    pub fn new(
        table: impl Into<String>,
        version: u64,
        mut watermarks: Vec<(i32, i64)>,
        input: Arc<dyn ExecutionPlan>,
    ) -> Self {
        watermarks.sort_unstable();
        Self {
            table: table.into(),
            version,
            watermarks,
            input,
        }
    }

    /// The Delta version read.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// `(partition, watermark)` of the partitions the lake holds.
    pub fn watermarks(&self) -> &[(i32, i64)] {
        &self.watermarks
    }
}

impl DisplayAs for LakeTierExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "LakeTierExec: table={}, version={}, below=[",
            self.table, self.version
        )?;
        let all = matches!(t, DisplayFormatType::Verbose)
            || self.watermarks.len() <= MAX_WATERMARKS_SHOWN;
        let shown = if all {
            self.watermarks.len()
        } else {
            MAX_WATERMARKS_SHOWN
        };
        for (i, (partition, watermark)) in self.watermarks[..shown].iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "p{partition}:{watermark}")?;
        }
        if shown < self.watermarks.len() {
            write!(f, ", … {} more", self.watermarks.len() - shown)?;
        }
        write!(f, "]")
    }
}

impl ExecutionPlan for LakeTierExec {
    fn name(&self) -> &str {
        "LakeTierExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(format!(
                "LakeTierExec has one child, got {}",
                children.len()
            )));
        }
        Ok(Arc::new(Self {
            table: self.table.clone(),
            version: self.version,
            watermarks: self.watermarks.clone(),
            input: children.remove(0),
        }))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}

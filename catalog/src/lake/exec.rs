//! `LakeTierExec`: the lake side of a union, named in `EXPLAIN` with the
//! Delta version and the watermarks that bound it, so a plan shows where the
//! seam is. It passes its input's batches through unchanged.
//!
//! It can also narrow its scan to the files that hold each partition's
//! newest records ([`LakeTierExec::with_last`]), for `ORDER BY _offset DESC
//! LIMIT n`.

use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;

use crate::lake::LakeSnapshot;
use crate::lake::last::{file_stats, files_holding_last, keep_files};
use crate::lake::travel::LakeScanSpec;
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
    /// The snapshot whose every file `input` reads, when it reads them
    /// whole (no bound on offsets): then it may read fewer.
    files: Option<LakeSnapshot>,
    /// With [`Self::with_last`]: `(n, files kept, files planned)`.
    last: Option<(usize, usize, usize)>,
    /// What `input` reads, when it is a plain Delta scan another gateway
    /// can plan again (see [`crate::lake::travel`]).
    spec: Option<LakeScanSpec>,
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
            files: None,
            last: None,
            spec: None,
        }
    }

    /// The tier as it arrives on another gateway: `input` planned there.
    pub fn arrived(
        table: impl Into<String>,
        version: u64,
        watermarks: Vec<(i32, i64)>,
        last: Option<(usize, usize, usize)>,
        input: Arc<dyn ExecutionPlan>,
    ) -> Self {
        Self {
            last,
            ..Self::new(table, version, watermarks, input)
        }
    }

    /// Says that `input` is the plain Delta scan `spec` describes, so it
    /// can be planned again on another gateway.
    pub fn described_by(mut self, spec: LakeScanSpec) -> Self {
        self.spec = Some(spec);
        self
    }

    /// What the scan under this tier reads, when another gateway can plan
    /// it again.
    pub fn spec(&self) -> Option<&LakeScanSpec> {
        self.spec.as_ref()
    }

    /// The table whose lake tier this is.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// With [`Self::with_last`]: `(n, files kept, files planned)`.
    pub fn last(&self) -> Option<(usize, usize, usize)> {
        self.last
    }

    /// Says that `input` reads every row of `snapshot`'s files (nothing
    /// between them drops rows), so [`Self::with_last`] may leave files out.
    pub fn reading_all_of(mut self, snapshot: LakeSnapshot) -> Self {
        self.files = Some(snapshot);
        self
    }

    /// This tier reading only the files that hold each partition's newest
    /// `n` records (by the files' statistics in the Delta log), a superset
    /// of them; `None` where it cannot tell which (see [`crate::lake::last`]).
    pub fn with_last(&self, n: usize) -> DfResult<Option<Self>> {
        let Some(snapshot) = &self.files else {
            return Ok(None);
        };
        let stats = file_stats(&self.table, snapshot)?;
        let keep = files_holding_last(&stats, n);
        let Some(narrowed) = keep_files(&self.input, &keep)? else {
            return Ok(None);
        };
        Ok(Some(Self {
            table: self.table.clone(),
            version: self.version,
            watermarks: self.watermarks.clone(),
            input: narrowed.plan,
            files: None,
            last: Some((n, narrowed.kept, narrowed.planned)),
            spec: self.spec.clone(),
        }))
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
        write!(f, "]")?;
        if let Some((n, kept, planned)) = self.last {
            write!(f, ", last={n} per partition, files={kept} of {planned}")?;
        }
        Ok(())
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
            files: self.files.clone(),
            last: self.last,
            spec: self.spec.clone(),
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

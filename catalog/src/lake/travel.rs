//! A lake tier read on another gateway.
//!
//! deltalake's Delta scan has no wire form, so a lake tier travels as what
//! it reads: the table, the Delta version, the columns, the filters, the
//! limit, and the data files of each output partition
//! ([`LakeFilesExec`]). The gateway that runs it plans the same Delta scan
//! again from its own lake at that version (so column mapping, partition
//! values and schema evolution are deltalake's, as on the gateway that
//! planned the query) and reads only those files. Every gateway must
//! therefore reach the same lake; one that cannot find a file fails the
//! query rather than read less.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::FileGroup;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, SessionStateBuilder, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::TryStreamExt;

use super::last::{file_scan, logged_rows, with_file_groups};
use super::{Lake, LakeTierExec, lake_plan};
use crate::error::CatalogError;

/// Rows assumed per byte of a file whose statistics give no row count.
const BYTES_PER_ROW_GUESS: u64 = 100;

/// What a plain lake-tier scan reads, enough to plan it again elsewhere
/// ([`super::lake_plan`]'s arguments).
#[derive(Debug, Clone)]
pub struct LakeScanSpec {
    /// The table whose history it reads (`<lake>/tables/<table>/`).
    pub table: String,
    /// The Delta version read.
    pub version: u64,
    /// The columns and types it yields.
    pub columns: SchemaRef,
    /// Filters that prune files and row groups (callers filter again).
    pub filters: Vec<Expr>,
    pub limit: Option<usize>,
}

/// One data file of a lake scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeFile {
    /// Its location in the object store, as deltalake's scan names it.
    pub location: String,
    /// Its rows, from the Delta log's statistics, or a guess from its size.
    pub rows: u64,
}

/// A lake tier's Delta scan as it travels: planned again, at its version,
/// by the gateway that runs it, reading only `files[p]` for output
/// partition `p`.
#[derive(Debug)]
pub struct LakeFilesExec {
    spec: LakeScanSpec,
    files: Vec<Vec<LakeFile>>,
    lake: Option<Lake>,
    properties: Arc<PlanProperties>,
    /// Rows read, per output partition (what a progress report counts).
    metrics: ExecutionPlanMetricsSet,
}

impl LakeFilesExec {
    /// A scan of `spec` reading `files[p]` in output partition `p`, through
    /// `lake` (this gateway's; `None` where it has none, to fail if run).
    pub fn new(spec: LakeScanSpec, files: Vec<Vec<LakeFile>>, lake: Option<Lake>) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&spec.columns)),
            Partitioning::UnknownPartitioning(files.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            spec,
            files,
            lake,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    pub fn spec(&self) -> &LakeScanSpec {
        &self.spec
    }

    /// The files of each output partition.
    pub fn files(&self) -> &[Vec<LakeFile>] {
        &self.files
    }

    /// The rows its files hold (estimated where the log has no count).
    pub fn rows(&self) -> u64 {
        self.files.iter().flatten().map(|f| f.rows).sum()
    }

    /// The same scan as `tasks` scans, each reading a share of the files
    /// (by rows, largest first to the least loaded) in as many output
    /// partitions as this one.
    pub fn split(&self, tasks: usize) -> Vec<Self> {
        let partitions = self.files.len().max(1);
        let mut all: Vec<&LakeFile> = self.files.iter().flatten().collect();
        all.sort_by(|a, b| {
            b.rows
                .cmp(&a.rows)
                .then_with(|| a.location.cmp(&b.location))
        });
        let mut shares: Vec<(u64, Vec<LakeFile>)> = vec![(0, Vec::new()); tasks.max(1)];
        for file in all {
            let least = shares
                .iter_mut()
                .min_by_key(|(rows, _)| *rows)
                .expect("at least one task");
            least.0 += file.rows;
            least.1.push(file.clone());
        }
        shares
            .into_iter()
            .map(|(_, files)| {
                let mut groups = vec![Vec::new(); partitions];
                for (i, file) in files.into_iter().enumerate() {
                    groups[i % partitions].push(file);
                }
                Self::new(self.spec.clone(), groups, self.lake.clone())
            })
            .collect()
    }
}

impl DisplayAs for LakeFilesExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "LakeFilesExec: table={}, version={}, files={}, rows={}",
            self.spec.table,
            self.spec.version,
            self.files.iter().map(Vec::len).sum::<usize>(),
            self.rows()
        )?;
        if let Some(limit) = self.spec.limit {
            write!(f, ", limit={limit}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for LakeFilesExec {
    fn name(&self) -> &str {
        "LakeFilesExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return Err(DataFusionError::Internal(
                "LakeFilesExec has no children".into(),
            ));
        }
        Ok(self)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let files = self.files.get(partition).cloned().unwrap_or_default();
        let schema = Arc::clone(&self.spec.columns);
        let rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        if files.is_empty() {
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::empty(),
            )));
        }
        let spec = self.spec.clone();
        let lake = self.lake.clone();
        let task = Arc::clone(&context);
        // Every error is the stream's, so it leaves as the task's errors do.
        let opened = async move {
            let lake = lake.ok_or_else(|| {
                CatalogError::Lake(format!(
                    "table '{}': this gateway has no lake configured, and a task reading the \
                     lake tier arrived (give every gateway the same --lake)",
                    spec.table
                ))
            })?;
            let tier = lake.snapshot_at(&spec.table, spec.version).await?;
            let state = SessionStateBuilder::new()
                .with_config(context.session_config().clone())
                .with_runtime_env(context.runtime_env())
                .build();
            let plan = lake_plan(
                &tier,
                &spec.table,
                &state,
                &spec.columns,
                &spec.filters,
                spec.limit,
            )
            .await?;
            let plan = reading_only(&plan, &files, &spec)?;
            plan.execute(0, context)
        };
        let stream = futures::stream::once(opened)
            .try_flatten()
            .inspect_ok(move |batch| rows.add(batch.num_rows()));
        let stream = Box::pin(RecordBatchStreamAdapter::new(schema, stream));
        Ok(crate::error::leaving_for(&task, stream))
    }
}

/// `plan` (a Delta scan) reading exactly `files`, all in its first output
/// partition; an error naming a file it does not plan (a lake other than
/// the one the query was planned on).
fn reading_only(
    plan: &Arc<dyn ExecutionPlan>,
    files: &[LakeFile],
    spec: &LakeScanSpec,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let mut missing: Vec<String> = files.iter().map(|f| f.location.clone()).collect();
    let narrowed = Arc::clone(plan).transform_down(|node| {
        let Some(config) = file_scan(&node) else {
            return Ok(Transformed::no(node));
        };
        let mut found: HashMap<&str, _> = config
            .file_groups
            .iter()
            .flat_map(|group| group.iter())
            .map(|file| (file.object_meta.location.as_ref(), file.clone()))
            .collect();
        let first: Vec<_> = files
            .iter()
            .filter_map(|f| found.remove(f.location.as_str()))
            .collect();
        missing.retain(|location| {
            !first
                .iter()
                .any(|f| f.object_meta.location.as_ref() == location)
        });
        let mut groups = vec![FileGroup::new(first)];
        groups.resize_with(config.file_groups.len().max(1), || FileGroup::new(vec![]));
        Ok(Transformed::yes(with_file_groups(config, groups)))
    })?;
    if !missing.is_empty() {
        return Err(CatalogError::Lake(format!(
            "table '{}': Delta version {} on this gateway's lake has no file {} (give every \
             gateway the same --lake)",
            spec.table,
            spec.version,
            missing.join(", ")
        ))
        .into());
    }
    Ok(narrowed.data)
}

/// The data files of `plan` (a Delta scan over exactly one file source),
/// dealt between its output partitions: they are unordered, and the scan
/// may have repartitioned its files' batches round-robin anyway.
fn files_of(plan: &Arc<dyn ExecutionPlan>) -> DfResult<Option<Vec<Vec<LakeFile>>>> {
    let mut sources = Vec::new();
    plan.apply(|node| {
        if let Some(config) = file_scan(node) {
            sources.push(
                config
                    .file_groups
                    .iter()
                    .flat_map(|group| group.iter())
                    .map(|file| LakeFile {
                        location: file.object_meta.location.to_string(),
                        rows: logged_rows(file)
                            .unwrap_or(file.object_meta.size / BYTES_PER_ROW_GUESS),
                    })
                    .collect::<Vec<LakeFile>>(),
            );
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let Ok([files]) = <[_; 1]>::try_from(sources) else {
        return Ok(None);
    };
    let partitions = plan.properties().partitioning.partition_count().max(1);
    let mut groups = vec![Vec::new(); partitions];
    for (i, file) in files.into_iter().enumerate() {
        groups[i % partitions].push(file);
    }
    Ok(Some(groups))
}

/// `plan` with every lake tier that another gateway can plan again reading
/// through a [`LakeFilesExec`] instead of deltalake's scan, so the whole
/// plan can travel. Tiers that cannot (replays bounded row by row, a
/// changelog table's latest rows) stay as they are.
pub fn detach_lake_tiers(
    plan: Arc<dyn ExecutionPlan>,
    lake: Option<&Lake>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(tier) = node.downcast_ref::<LakeTierExec>() else {
            return Ok(Transformed::no(node));
        };
        let Some(spec) = tier.spec() else {
            return Ok(Transformed::no(node));
        };
        let Some(input) = tier.children().first().copied() else {
            return Ok(Transformed::no(node));
        };
        let Some(files) = files_of(input)? else {
            return Ok(Transformed::no(node));
        };
        let files = LakeFilesExec::new(spec.clone(), files, lake.cloned());
        Ok(Transformed::yes(Arc::new(LakeTierExec::arrived(
            tier.table(),
            tier.version(),
            tier.watermarks().to_vec(),
            tier.last(),
            Arc::new(files),
        )) as Arc<dyn ExecutionPlan>))
    })
    .map(|t| t.data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn spec() -> LakeScanSpec {
        LakeScanSpec {
            table: "orders".into(),
            version: 3,
            columns: Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)])),
            filters: vec![],
            limit: None,
        }
    }

    fn file(name: &str, rows: u64) -> LakeFile {
        LakeFile {
            location: format!("lake/tables/orders/{name}.parquet"),
            rows,
        }
    }

    #[test]
    fn a_split_reads_every_file_once_in_as_many_partitions_with_even_rows() {
        let files = vec![
            vec![file("a", 900), file("b", 100), file("c", 500)],
            vec![file("d", 400), file("e", 600)],
        ];
        let scan = LakeFilesExec::new(spec(), files.clone(), None);
        let tasks = scan.split(2);
        assert_eq!(tasks.len(), 2);
        let mut read: Vec<String> = tasks
            .iter()
            .flat_map(|t| t.files().iter().flatten().map(|f| f.location.clone()))
            .collect();
        read.sort();
        let mut all: Vec<String> = files.iter().flatten().map(|f| f.location.clone()).collect();
        all.sort();
        assert_eq!(read, all);
        for task in &tasks {
            assert_eq!(task.files().len(), 2);
            assert_eq!(task.properties().partitioning.partition_count(), 2);
        }
        // 2,500 rows: largest first to the least loaded gives 1,300 and 1,200.
        let mut rows: Vec<u64> = tasks.iter().map(LakeFilesExec::rows).collect();
        rows.sort();
        assert_eq!(rows, vec![1200, 1300]);
    }

    #[test]
    fn more_tasks_than_files_leave_some_tasks_empty() {
        let scan = LakeFilesExec::new(spec(), vec![vec![file("a", 10)]], None);
        let tasks = scan.split(3);
        assert_eq!(tasks.iter().map(LakeFilesExec::rows).sum::<u64>(), 10);
        assert_eq!(tasks.iter().filter(|t| t.rows() == 0).count(), 2);
    }
}

//! Streaming queries: `tail(table [, start])`, a table function whose rows
//! are a table's records as they are produced, read by the same decoders as
//! batch queries.
//!
//! * [`TailFunction`] parses the call and names the table and the start:
//!   `'latest'` (the default: records produced from the moment the query
//!   runs), `'earliest'`, or a timestamp (per partition, from the first
//!   offset whose timestamp is at or after it). `_partition` and `_offset`
//!   filters choose per-partition starts.
//! * [`table::TailTable`] fixes each partition's start when the query runs,
//!   and on a table with a lake tier replays the lake's rows below the
//!   watermarks before following Kafka from them (replay then follow).
//! * [`exec::TailExec`] is the unbounded plan node; [`reader`] the thread
//!   that follows Kafka, flushing a batch when it is full or has waited the
//!   linger, and pausing (so memory stays bounded) while the client is slow.
//! * [`registry`] counts running streams against `--max-streams` and lists
//!   them in `system.streams`.
//!
//! A stream runs row by row: [`check_streaming`] refuses the plan shapes that
//! would need its whole (endless) input first.

pub mod exec;
pub mod reader;
pub mod table;

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Schema, TimeUnit};
use datafusion::catalog::{Session, TableFunctionImpl, TableProvider};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, ScalarValue, plan_err};
use datafusion::datasource::source_as_provider;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{ColumnarValue, Expr, LogicalPlan};

pub use crate::stream_registry::{StreamGuard, StreamRegistry, StreamStats};
pub use table::TailTable;

use crate::context::CatalogContext;
use crate::error::CatalogError;
use crate::error::Result;
use crate::snapshot::{SnapshotToken, TOKEN_PREFIX, TableSnapshot};
use table::StreamSettings;

/// Name of the table function.
pub const TAIL: &str = "tail";

/// Where a stream starts in each partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPosition {
    /// At each partition's end when the query runs: only new records.
    Latest,
    /// At each partition's first record (in the lake, for a tiered table).
    Earliest,
    /// At each partition's first record whose timestamp is at or after this
    /// many milliseconds since the epoch.
    Time(i64),
    /// At each partition's end in a snapshot token (a partition added
    /// since, at its first record): a batch answer under the token and
    /// this stream have no gap and no duplicate.
    Snapshot(Arc<TableSnapshot>),
}

impl fmt::Display for StartPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Latest => write!(f, "latest"),
            Self::Earliest => write!(f, "earliest"),
            Self::Time(ms) => write!(f, "time {ms} ms"),
            Self::Snapshot(_) => write!(f, "snapshot"),
        }
    }
}

/// `tail(name, start)`: a stream of a declared table or a topic (typed by
/// its registry subject, as a query reads it), or `None` for a name that is
/// neither, so a missing table is refused when the query is planned, as one
/// in `FROM` is.
pub fn tail_table(
    context: &CatalogContext,
    name: &str,
    start: StartPosition,
) -> Result<Option<TailTable>> {
    let settings = StreamSettings {
        linger: context.stream_linger(),
        refresh_interval: context.refresh_interval(),
        registry: Arc::clone(context.streams()),
    };
    let Some((topic, format, value_schema)) = context.resolve_now(name)? else {
        return Ok(None);
    };
    Ok(Some(TailTable::new(
        name,
        topic,
        format,
        value_schema,
        start,
        Arc::clone(context.client()),
        context.lake().cloned(),
        settings,
    )))
}

/// The `tail` table function over the tables of a [`CatalogContext`].
#[derive(Debug)]
pub struct TailFunction {
    tables: Arc<CatalogContext>,
}

impl TailFunction {
    /// `tail` over the tables of `tables`.
    pub fn new(tables: Arc<CatalogContext>) -> Self {
        Self { tables }
    }
}

impl TableFunctionImpl for TailFunction {
    fn call_with_args(
        &self,
        args: datafusion::catalog::TableFunctionArgs,
    ) -> DfResult<Arc<dyn TableProvider>> {
        let usage = "tail(table [, start]): table is a name in quotes, start is 'latest' \
                     (the default), 'earliest', a timestamp or a snapshot token";
        let exprs = args.exprs();
        if exprs.is_empty() || exprs.len() > 2 {
            return plan_err!("{usage}");
        }
        let ScalarValue::Utf8(Some(name)) = constant(&exprs[0], args.session())? else {
            return plan_err!("{usage}");
        };
        let start = match exprs.get(1) {
            None => StartPosition::Latest,
            Some(expr) => match constant(expr, args.session())? {
                ScalarValue::Utf8(Some(text)) if text.trim().starts_with(TOKEN_PREFIX) => {
                    snapshot_start(&name, &text)?
                }
                value => start_position(value).ok_or_else(|| {
                    datafusion::error::DataFusionError::Plan(format!("{usage}; got {expr}"))
                })?,
            },
        };
        let Some(table) = tail_table(&self.tables, &name, start)? else {
            return Err(CatalogError::TableNotFound(format!("table '{name}' not found")).into());
        };
        Ok(Arc::new(table))
    }
}

/// The start at the ends of table `name` in the snapshot token `text`.
fn snapshot_start(name: &str, text: &str) -> Result<StartPosition> {
    let token: SnapshotToken = text.parse()?;
    let Some(table) = token.table(name) else {
        return Err(CatalogError::InvalidSnapshot(format!(
            "the snapshot token does not name table '{name}'"
        )));
    };
    if !table.complete {
        return Err(CatalogError::InvalidSnapshot(format!(
            "the snapshot token holds only some partitions of '{name}' (its query named them): \
             take one with snapshot('{name}') to continue from"
        )));
    }
    Ok(StartPosition::Snapshot(Arc::new(table.clone())))
}

/// The value of a constant argument (a literal, a cast, `now() - INTERVAL …`).
pub(crate) fn constant(expr: &Expr, session: &dyn Session) -> DfResult<ScalarValue> {
    let empty = DFSchema::empty();
    let physical = session.create_physical_expr(expr.clone(), &empty)?;
    let batch = RecordBatch::new_empty(Arc::new(Schema::empty()));
    match physical.evaluate(&batch)? {
        ColumnarValue::Scalar(value) => Ok(value),
        ColumnarValue::Array(_) => plan_err!("tail: {expr} is not a constant"),
    }
}

pub(crate) fn start_position(value: ScalarValue) -> Option<StartPosition> {
    match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "latest" => Some(StartPosition::Latest),
            "earliest" => Some(StartPosition::Earliest),
            _ => {
                let parsed = ScalarValue::Utf8(Some(s)).cast_to(&DataType::Timestamp(
                    TimeUnit::Millisecond,
                    Some("UTC".into()),
                ));
                parsed.ok().and_then(start_position)
            }
        },
        ScalarValue::TimestampSecond(Some(v), _) => {
            Some(StartPosition::Time(v.saturating_mul(1000)))
        }
        ScalarValue::TimestampMillisecond(Some(v), _) => Some(StartPosition::Time(v)),
        ScalarValue::TimestampMicrosecond(Some(v), _) => {
            Some(StartPosition::Time(v.div_euclid(1000)))
        }
        ScalarValue::TimestampNanosecond(Some(v), _) => {
            Some(StartPosition::Time(v.div_euclid(1_000_000)))
        }
        _ => None,
    }
}

/// Whether `plan` is a streaming query (it reads a `tail(…)`). Refuses a
/// plan that reads a stream through an operator that needs its whole input
/// (aggregates, sorts, joins, windows, DISTINCT, UNION): over an endless
/// input it would never answer.
pub fn check_streaming(plan: &LogicalPlan) -> crate::Result<bool> {
    if !reads_tail(plan) {
        return Ok(false);
    }
    let mut refused = None;
    plan.apply(|node| {
        Ok(match node {
            LogicalPlan::Projection(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::Limit(_)
            | LogicalPlan::SubqueryAlias(_)
            | LogicalPlan::TableScan(_)
            | LogicalPlan::Explain(_) => TreeNodeRecursion::Continue,
            other => {
                refused = Some(what(other));
                TreeNodeRecursion::Stop
            }
        })
    })
    .map_err(|e| CatalogError::NotStreamable(e.to_string()))?;
    match refused {
        None => Ok(true),
        Some(what) => Err(CatalogError::NotStreamable(format!(
            "a streaming query (tail) cannot use {what}: it would wait for the end of an endless \
             stream. A streaming query filters (WHERE), selects and computes columns row by row, \
             and stops after LIMIT n rows; to aggregate, sort or join, query the table itself \
             (a bounded snapshot), for example with a _timestamp range"
        ))),
    }
}

fn what(node: &LogicalPlan) -> &'static str {
    match node {
        LogicalPlan::Aggregate(_) => "an aggregate (GROUP BY, count, sum, …)",
        LogicalPlan::Sort(_) => "ORDER BY",
        LogicalPlan::Join(_) => "a join",
        LogicalPlan::Window(_) => "a window function",
        LogicalPlan::Distinct(_) => "DISTINCT",
        LogicalPlan::Union(_) => "UNION",
        LogicalPlan::Analyze(_) => "EXPLAIN ANALYZE",
        _ => "this operation",
    }
}

/// Whether `plan` scans a `tail(…)` anywhere.
fn reads_tail(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && source_as_provider(&scan.source)
                .is_ok_and(|p| p.downcast_ref::<TailTable>().is_some())
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

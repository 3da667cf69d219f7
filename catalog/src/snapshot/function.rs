//! `snapshot('orders' [, 'payments', …])`: one row whose `token` is the
//! snapshot of those tables as they are now, to keep and replay later
//! (`kappa.snapshot`).

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use super::SnapshotToken;
use crate::changelog::LatestTable;
use crate::provider::session_table;
use crate::table::KafkaTable;
use crate::union::LakeKafkaTable;

/// Name of the table function.
pub const SNAPSHOT: &str = "snapshot";

const USAGE: &str = "snapshot('table' [, 'table', …]): each table is a name in quotes";

/// The `snapshot` table function.
#[derive(Debug, Default)]
pub struct SnapshotFunction;

impl TableFunctionImpl for SnapshotFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let mut tables = Vec::new();
        for expr in args.exprs() {
            match expr {
                Expr::Literal(ScalarValue::Utf8(Some(name)), _)
                | Expr::Literal(ScalarValue::LargeUtf8(Some(name)), _)
                | Expr::Literal(ScalarValue::Utf8View(Some(name)), _) => tables.push(name.clone()),
                other => return plan_err!("{USAGE}; got {other}"),
            }
        }
        if tables.is_empty() {
            return plan_err!("{USAGE}");
        }
        tables.sort();
        tables.dedup();
        Ok(Arc::new(SnapshotTable { tables }))
    }
}

/// The one-row table `snapshot(…)` returns.
#[derive(Debug)]
pub struct SnapshotTable {
    tables: Vec<String>,
}

impl SnapshotTable {
    fn output_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new(
            "token",
            DataType::Utf8,
            false,
        )]))
    }
}

/// The snapshot of `table` as `state`'s query would read it, through the
/// session's catalog (so the caller's grants apply).
async fn take(state: &dyn Session, table: &str) -> DfResult<super::TableSnapshot> {
    let provider = session_table(state, table).await?;
    let provider = provider.as_ref() as &dyn Any;
    if let Some(latest) = provider.downcast_ref::<LatestTable>() {
        return Box::pin(take(state, latest.name())).await;
    }
    if let Some(union) = provider.downcast_ref::<LakeKafkaTable>() {
        return Ok(union.take_snapshot(state).await?);
    }
    if let Some(kafka) = provider.downcast_ref::<KafkaTable>() {
        return Ok(kafka.take_snapshot(state).await?);
    }
    plan_err!("snapshot(): '{table}' is not a table over a topic")
}

#[async_trait]
impl TableProvider for SnapshotTable {
    fn schema(&self) -> SchemaRef {
        Self::output_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![
            TableProviderFilterPushDown::Unsupported;
            filters.len()
        ])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let mut token = SnapshotToken::new();
        for table in &self.tables {
            let snapshot = take(state, table).await?;
            super::record(state, table, snapshot.clone());
            token.insert(table.clone(), snapshot);
        }
        let schema = Self::output_schema();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(StringArray::from(vec![token.to_string()]))],
        )?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            schema,
            projection.cloned(),
        )?)
    }
}

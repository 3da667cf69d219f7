//! Reading a lake tier with DataFusion: deltalake's provider, with the
//! columns the table's schema names, in the table's types.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::error::Result as DfResult;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{Literal, cast, col};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::prelude::SessionConfig;
use deltalake::DeltaTable;

use super::LakeSnapshot;
use crate::error::CatalogError;

/// Scan settings for the lake: strings and bytes as `Utf8`/`Binary`, the
/// table's own types, rather than the view types deltalake reads by default
/// (which every row would then be cast from), and filters pushed into the
/// Parquet reader.
static PLAIN_TYPES: LazyLock<Arc<SessionState>> = LazyLock::new(|| {
    let mut config = SessionConfig::new();
    let parquet = &mut config.options_mut().execution.parquet;
    parquet.schema_force_view_types = false;
    // deltalake's default without a session: filters applied inside the
    // Parquet reader, so an offset range skips pages, not only row groups.
    parquet.pushdown_filters = true;
    Arc::new(SessionStateBuilder::new().with_config(config).build())
});

/// deltalake's DataFusion provider of `tier`, its object store registered
/// on `state`.
pub async fn lake_provider(
    tier: &LakeSnapshot,
    state: &dyn Session,
) -> DfResult<Arc<dyn TableProvider>> {
    delta_provider(tier.delta(), state).await
}

/// deltalake's DataFusion provider of `delta` at its loaded version, reading
/// the table's own types, its object store registered on `state`.
pub async fn delta_provider(
    delta: &DeltaTable,
    state: &dyn Session,
) -> DfResult<Arc<dyn TableProvider>> {
    let lake_error = |e: &dyn std::fmt::Display| CatalogError::Lake(e.to_string());
    delta
        .update_datafusion_session(state)
        .map_err(|e| lake_error(&e))?;
    delta
        .table_provider()
        .with_session(Arc::clone(&PLAIN_TYPES))
        .await
        .map_err(|e| lake_error(&e).into())
}

/// A scan of `tier` (the lake tier of `table`) yielding `target`'s columns,
/// found by name, in `target`'s types, with `filters` pruning files and
/// row groups (not applied row by row: callers filter again).
pub async fn lake_plan(
    tier: &LakeSnapshot,
    table: &str,
    state: &dyn Session,
    target: &SchemaRef,
    filters: &[Expr],
    limit: Option<usize>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let provider = lake_provider(tier, state).await?;
    // The lake's columns by name (it also has `_date`). A column the
    // definition gained after these records were tiered is not in the lake
    // until the compactor's next commit merges it in: it reads as null, as
    // it does from the older files once merged.
    let lake_schema = provider.schema();
    let columns: Vec<usize> = target
        .fields()
        .iter()
        .filter_map(|field| lake_schema.index_of(field.name()).ok())
        .collect();
    if columns.is_empty() && !target.fields().is_empty() {
        return Err(CatalogError::Lake(format!(
            "table '{table}': none of its columns is in its lake table"
        ))
        .into());
    }
    let plan = provider.scan(state, Some(&columns), filters, limit).await?;
    conform(plan, target)
}

/// `plan` with the columns and types of `target` (the lake may read a
/// list's item field under another name, or strings as views): a cast where
/// types differ, a null where the lake lacks the column.
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
        let expr = match source.field_with_name(field.name()) {
            Err(_) => Arc::new(Literal::new(ScalarValue::try_from(field.data_type())?)) as _,
            Ok(have) if have.data_type() == field.data_type() => col(field.name(), &source)?,
            Ok(_) => cast(
                col(field.name(), &source)?,
                &source,
                field.data_type().clone(),
            )?,
        };
        exprs.push((expr, field.name().clone()));
    }
    Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
}

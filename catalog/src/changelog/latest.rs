//! `latest('users' [, TIMESTAMP '…'])`: one row per key, its newest record.
//!
//! The rule, in both tiers alike:
//! * Keys are the raw `_key` bytes, or, where the table has a key format,
//!   the decoded `key` (one key written under two schema versions is one
//!   key; a key that does not decode is its bytes, see [`super::identity`]).
//!   Records without a key are no key's.
//! * Within a partition the log decides: the record at the higher offset
//!   is newer, whatever its timestamp.
//! * A key seen in several partitions (partitions were added, or a
//!   producer does not partition by key) takes the record with the later
//!   `_timestamp` among each partition's newest, and on equal timestamps
//!   the one in the higher partition.
//! * A tombstone, a record whose value is null, deletes its key: a raw
//!   table shows it as a null `_value`; a declared table as a row whose
//!   value columns, `_value` and `_error` are all null (a value that decodes
//!   to a row of nulls, such as JSON `{}`, keeps its bytes in `_value`, so
//!   it is a row, not a deletion).
//! * With a time, only records with `_timestamp` at or before it count.
//!
//! It is a plan over the table itself (lake and Kafka alike, under one
//! snapshot), built when the query is planned: a filter, a hash
//! repartition on `_key`, then [`NewestPerKeyExec`] applies the rule in one
//! pass, and a filter drops tombstones.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::DFSchema;
use datafusion::common::{ScalarValue, plan_err};
use datafusion::datasource::{TableType, provider_as_source};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    Expr, LogicalPlan, LogicalPlanBuilder, TableProviderFilterPushDown, col, lit,
};
use datafusion::physical_expr::expressions::col as physical_col;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};

use crate::changelog::CompactedLatest;
use crate::changelog::exec::NewestPerKeyExec;
use crate::changelog::identity::{IDENTITY, key_identity};
use crate::columns::{ERROR, HEADERS, KEY, OFFSET, PARTITION, TIMESTAMP, VALUE, table_schema};
use crate::context::CatalogContext;
use crate::error::CatalogError;
use crate::format::ValueFormat;
use crate::format::keyed::KEY_COLUMN;
use crate::provider::session_table;
use crate::tail::{StartPosition, constant, start_position};
use crate::union::LakeKafkaTable;

/// Name of the table function.
pub const LATEST: &str = "latest";

const USAGE: &str = "latest('table' [, as_of]): the table is a name in quotes, as_of a timestamp";

/// The `latest` table function over the tables of a [`CatalogContext`].
#[derive(Debug)]
pub struct LatestFunction {
    tables: Arc<CatalogContext>,
}

impl LatestFunction {
    /// `latest` over the tables of `tables`.
    pub fn new(tables: Arc<CatalogContext>) -> Self {
        Self { tables }
    }
}

impl TableFunctionImpl for LatestFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.is_empty() || exprs.len() > 2 {
            return plan_err!("{USAGE}");
        }
        let ScalarValue::Utf8(Some(name)) = constant(&exprs[0], args.session())? else {
            return plan_err!("{USAGE}");
        };
        let as_of = match exprs.get(1) {
            None => None,
            Some(expr) => match start_position(constant(expr, args.session())?) {
                Some(StartPosition::Time(ms)) => Some(ms.saturating_mul(1000)),
                _ => return plan_err!("{USAGE}; got {expr}"),
            },
        };
        let Some((_, format, value_schema)) = self.tables.resolve_now(&name)? else {
            return Err(CatalogError::TableNotFound(format!("table '{name}' not found")).into());
        };
        Ok(Arc::new(LatestTable {
            schema: table_schema(&format, &value_schema),
            name,
            base: None,
            as_of,
            decoded_key: decodes_keys(&format),
        }))
    }
}

/// One row per key of table `name`: its newest record.
#[derive(Debug)]
pub struct LatestTable {
    name: String,
    schema: SchemaRef,
    /// The table read; `None`: the session's table of that name, found when
    /// the query is planned (so the caller's grants apply).
    base: Option<Arc<dyn TableProvider>>,
    /// Microseconds since the epoch: only records at or before count.
    as_of: Option<i64>,
    /// Whether the table decodes its keys into `key`, which then says
    /// which key a record is of.
    decoded_key: bool,
}

/// Whether tables of `format` decode their keys.
fn decodes_keys(format: &ValueFormat) -> bool {
    matches!(format, ValueFormat::Keyed(_))
}

impl LatestTable {
    /// Table `name` (a `'changelog' 'upsert'` table of `format` over
    /// `base`) read as each key's latest value.
    pub fn over(
        name: impl Into<String>,
        base: Arc<dyn TableProvider>,
        format: &ValueFormat,
    ) -> Self {
        Self {
            name: name.into(),
            schema: base.schema(),
            base: Some(base),
            as_of: None,
            decoded_key: decodes_keys(format),
        }
    }

    /// The column that says which key a record is of.
    fn key(&self) -> &'static str {
        if self.decoded_key { IDENTITY } else { KEY }
    }

    /// The table whose keys it reads.
    pub fn name(&self) -> &str {
        &self.name
    }

    async fn base(&self, state: &dyn Session) -> DfResult<Arc<dyn TableProvider>> {
        if let Some(base) = &self.base {
            return Ok(Arc::clone(base));
        }
        let table = session_table(state, &self.name).await?;
        // latest() of a changelog table: the same rows.
        Ok(
            match (table.as_ref() as &dyn Any).downcast_ref::<LatestTable>() {
                Some(LatestTable {
                    base: Some(base), ..
                }) => Arc::clone(base),
                _ => table,
            },
        )
    }

    /// Whether a row is a tombstone: its value was null.
    fn tombstone(&self) -> Expr {
        let has = |name: &str| self.schema.index_of(name).is_ok();
        if !has(ERROR) {
            // A raw table keeps every value in `_value`.
            return col(VALUE).is_null();
        }
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .filter(|name| ![PARTITION, OFFSET, TIMESTAMP, KEY, HEADERS, KEY_COLUMN].contains(name))
            .map(|name| col(name).is_null())
            .reduce(Expr::and)
            .unwrap_or_else(|| col(VALUE).is_null())
    }

    /// The latest rows the compactor keeps for the table, when this query
    /// may read them (see [`LakeKafkaTable::compacted_latest`]); never for
    /// a state as of a time, which needs the history.
    async fn compacted(
        &self,
        base: &Arc<dyn TableProvider>,
        state: &dyn Session,
    ) -> DfResult<Option<CompactedLatest>> {
        if self.as_of.is_some() {
            return Ok(None);
        }
        match (base.as_ref() as &dyn Any).downcast_ref::<LakeKafkaTable>() {
            Some(union) => Ok(union.compacted_latest(state).await?),
            None => Ok(None),
        }
    }

    /// The records the newest per key is chosen from: `base`'s with a key
    /// (and, with a time, at or before it); with `compacted`, those rows
    /// and `base`'s records above their watermarks.
    fn records(
        &self,
        base: Arc<dyn TableProvider>,
        compacted: Option<CompactedLatest>,
        projection: Option<&Vec<usize>>,
    ) -> DfResult<LogicalPlan> {
        let mut keyed = col(KEY).is_not_null();
        if let Some(as_of) = self.as_of {
            let bound = ScalarValue::TimestampMicrosecond(Some(as_of), Some("UTC".into()));
            keyed = keyed.and(col(TIMESTAMP).lt_eq(lit(bound)));
        }
        let mut records = LogicalPlanBuilder::scan(&self.name, provider_as_source(base), None)?;
        if let Some(compacted) = compacted {
            let (label, uncovered) = (compacted.label(), compacted.uncovered());
            let kept =
                LogicalPlanBuilder::scan(label, provider_as_source(Arc::new(compacted)), None)?
                    .build()?;
            records = records.filter(uncovered)?.union(kept)?;
        }
        // Only the columns the answer or the rule needs are read (never
        // `_headers` unless selected: a list of structs is dear to decode).
        let rule = self
            .tombstone()
            .column_refs()
            .into_iter()
            .map(|c| c.name.clone())
            .collect::<Vec<_>>();
        let mut needed: Vec<Expr> = self
            .schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(i, field)| {
                projection.is_none_or(|p| p.contains(i))
                    || [KEY, PARTITION, OFFSET, TIMESTAMP].contains(&field.name().as_str())
                    || rule.contains(field.name())
            })
            .map(|(_, field)| col(field.name()))
            .collect();
        if self.decoded_key {
            needed.push(key_identity(col(KEY_COLUMN), col(KEY)).alias(IDENTITY));
        }
        records.filter(keyed)?.project(needed)?.build()
    }

    /// The physical plan: `records`, hash-partitioned on `_key`, each key's
    /// newest record ([`NewestPerKeyExec`]), tombstones dropped, the
    /// `projection`'s columns.
    async fn plan(
        &self,
        state: &dyn Session,
        records: LogicalPlan,
        projection: Option<&Vec<usize>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = state.create_physical_plan(&records).await?;
        let schema = input.schema();
        let partitions = state.config_options().execution.target_partitions.max(1);
        let by_key = Partitioning::Hash(vec![physical_col(self.key(), &schema)?], partitions);
        let newest = Arc::new(NewestPerKeyExec::keyed_by(
            Arc::new(RepartitionExec::try_new(input, by_key)?),
            self.key(),
        )?);
        let live = state.create_physical_expr(
            !self.tombstone(),
            &DFSchema::try_from(schema.as_ref().clone())?,
        )?;
        let live: Arc<dyn ExecutionPlan> = Arc::new(FilterExec::try_new(live, newest)?);
        let columns = match projection {
            Some(indices) => indices.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let exprs = columns
            .iter()
            .map(|&i| {
                let name = self.schema.field(i).name();
                Ok((physical_col(name, &schema)?, name.clone()))
            })
            .collect::<DfResult<Vec<_>>>()?;
        Ok(Arc::new(ProjectionExec::try_new(exprs, live)?))
    }
}

#[async_trait]
impl TableProvider for LatestTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// A declared changelog table is a table like any other (listed as
    /// one by `information_schema` and GetTables alike); `latest(…)`'s is
    /// the function's.
    fn table_type(&self) -> TableType {
        match self.base {
            Some(_) => TableType::Base,
            None => TableType::Temporary,
        }
    }

    fn get_table_definition(&self) -> Option<&str> {
        self.base.as_ref().and_then(|b| b.get_table_definition())
    }

    /// Filters apply to the latest rows, never before choosing them (a
    /// filter on a value column would otherwise bring back an older value).
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
        let base = self.base(state).await?;
        let compacted = self.compacted(&base, state).await?;
        let records = self.records(base, compacted, projection)?;
        self.plan(state, records, projection).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        Array, BinaryArray, Int32Array, Int64Array, ListArray, RecordBatch,
        TimestampMicrosecondArray,
    };
    use datafusion::arrow::datatypes::Schema;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    use crate::columns::{header_struct, raw_schema};
    use crate::format::ValueFormat;

    /// `(partition, offset, timestamp ms, key, value)`.
    type Record = (i32, i64, i64, Option<&'static str>, Option<&'static str>);

    fn raw_table(records: &[Record]) -> Arc<dyn TableProvider> {
        let schema = raw_schema();
        let headers = ListArray::new_null(
            Arc::new(datafusion::arrow::datatypes::Field::new_list_field(
                header_struct(),
                true,
            )),
            records.len(),
        );
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int32Array::from_iter_values(records.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(records.iter().map(|r| r.1))),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(records.iter().map(|r| r.2 * 1000))
                        .with_timezone("UTC"),
                ),
                Arc::new(BinaryArray::from_iter(
                    records.iter().map(|r| r.3.map(str::as_bytes)),
                )),
                Arc::new(BinaryArray::from_iter(
                    records.iter().map(|r| r.4.map(str::as_bytes)),
                )),
                Arc::new(headers),
            ],
        )
        .unwrap();
        Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap())
    }

    async fn latest(records: &[Record], as_of_ms: Option<i64>) -> Vec<(String, i32, i64, String)> {
        let ctx = SessionContext::new();
        let mut table = LatestTable::over("users", raw_table(records), &ValueFormat::Raw);
        table.as_of = as_of_ms.map(|ms| ms * 1000);
        ctx.register_table("latest_users", Arc::new(table)).unwrap();
        let batches = ctx
            .sql("SELECT _key, _partition, _offset, _value FROM latest_users ORDER BY _key")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let mut out = Vec::new();
        for batch in batches {
            let text = |c: usize, row: usize| {
                let column = batch
                    .column(c)
                    .as_any()
                    .downcast_ref::<BinaryArray>()
                    .unwrap();
                String::from_utf8(column.value(row).to_vec()).unwrap()
            };
            let partitions = batch
                .column(1)
                .as_any()
                .downcast_ref::<Int32Array>()
                .unwrap();
            let offsets = batch
                .column(2)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            for row in 0..batch.num_rows() {
                out.push((
                    text(0, row),
                    partitions.value(row),
                    offsets.value(row),
                    text(3, row),
                ));
            }
        }
        out
    }

    fn row(key: &str, partition: i32, offset: i64, value: &str) -> (String, i32, i64, String) {
        (key.into(), partition, offset, value.into())
    }

    #[tokio::test]
    async fn the_log_decides_within_a_partition_and_time_across_them() {
        let records: &[Record] = &[
            // Within partition 0, the higher offset wins though its timestamp is older.
            (0, 0, 500, Some("a"), Some("a1")),
            (0, 1, 100, Some("a"), Some("a2")),
            // b: in two partitions; the later timestamp wins across them.
            (0, 2, 300, Some("b"), Some("b-p0")),
            (1, 0, 400, Some("b"), Some("b-p1")),
            // c: equal timestamps across partitions: the higher partition.
            (1, 1, 600, Some("c"), Some("c-p1")),
            (0, 3, 600, Some("c"), Some("c-p0")),
            // d: deleted by a tombstone.
            (1, 2, 700, Some("d"), Some("d1")),
            (1, 3, 800, Some("d"), None),
            // e: deleted, then written again.
            (0, 4, 900, Some("e"), Some("e1")),
            (0, 5, 950, Some("e"), None),
            (0, 6, 990, Some("e"), Some("e2")),
            // No key: no key's record.
            (1, 4, 1000, None, Some("nobody")),
        ];
        assert_eq!(
            latest(records, None).await,
            vec![
                row("a", 0, 1, "a2"),
                row("b", 1, 0, "b-p1"),
                row("c", 1, 1, "c-p1"),
                row("e", 0, 6, "e2"),
            ]
        );
        // As of 760 ms: d is not deleted yet, e not written yet.
        assert_eq!(
            latest(records, Some(760)).await,
            vec![
                row("a", 0, 1, "a2"),
                row("b", 1, 0, "b-p1"),
                row("c", 1, 1, "c-p1"),
                row("d", 1, 2, "d1"),
            ]
        );
        // Before either of b's records in partition 1: partition 0's.
        assert_eq!(latest(records, Some(350)).await[1], row("b", 0, 2, "b-p0"));
    }

    #[test]
    fn a_declared_tables_tombstone_is_a_row_with_nothing_in_it() {
        let value = Schema::new(vec![datafusion::arrow::datatypes::Field::new(
            "name",
            datafusion::arrow::datatypes::DataType::Utf8,
            true,
        )]);
        let table = LatestTable {
            name: "t".into(),
            schema: table_schema(&ValueFormat::Json(None), &value),
            base: None,
            as_of: None,
            decoded_key: false,
        };
        assert_eq!(
            table.tombstone().to_string(),
            "name IS NULL AND _error IS NULL AND _value IS NULL"
        );
        let raw = LatestTable {
            schema: raw_schema(),
            ..table
        };
        assert_eq!(raw.tombstone().to_string(), "_value IS NULL");
    }
}

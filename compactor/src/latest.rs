//! A changelog table's latest rows: the compactor keeps, beside the
//! table's history, a Delta table of one row per key and partition (that
//! partition's newest record of the key, tombstones included), so
//! `latest()` reads about as many lake rows as there are keys, not records.
//!
//! It is derived from the history table, never from Kafka: each pass reads
//! the history's records between the offsets the latest rows already cover
//! and the history's watermarks, keeps each key's newest per partition, and
//! MERGEs them in (a matched row is always older: every row kept is below
//! the watermark the source starts at). The covered offsets are `txn`
//! actions committed with the MERGE, exactly as tiering commits its
//! watermarks with its files, so a reader always knows which records the
//! rows stand for (see `kappa_catalog::changelog::compacted`). They are
//! named after the history table's Delta id: a history deleted and created
//! again starts its latest rows afresh.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use datafusion::arrow::array::RecordBatch;
use datafusion::common::Column;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{Expr, ExprFunctionExt, col, lit};
use datafusion::prelude::{DataFrame, SessionContext};
use deltalake::delta_datafusion::{DeltaColumn, DeltaSessionContext};
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError};
use kappa_catalog::columns::{KEY, OFFSET, PARTITION};
use kappa_catalog::lake::layout::writer_properties;
use kappa_catalog::lake::{app_id, delta_provider, latest_app_id, latest_source_id};
use url::Url;

use crate::error::{CompactorError, Result};
use crate::tier::{after_conflict, is_conflict};

/// Passes tried when other writers keep committing first.
const MAX_ATTEMPTS: u32 = 50;

/// The rank of a record among its key's records in its partition.
const RANK: &str = "__kappa_newest_in_partition";

/// What one run did to a table's latest rows.
#[derive(Debug, Clone, Default)]
pub struct LatestMetrics {
    /// Delta commits made (0 when the rows were up to date).
    pub commits: usize,
    /// History offsets read (the ranges between what the rows covered and
    /// the history's watermarks).
    pub offsets: u64,
    /// Rows merged: each key's newest record per partition among them.
    pub merged: u64,
    /// Rows inserted (a key new to a partition).
    pub inserted: u64,
    /// Rows replaced by a newer record of their key.
    pub updated: u64,
    /// The latest rows' Delta version after the run (`None`: no history yet).
    pub version: Option<u64>,
    /// Each partition's covered offsets after the run: the rows stand for
    /// every record of the history below it.
    pub watermarks: BTreeMap<i32, i64>,
    /// The run stopped early when asked to.
    pub stopped: bool,
}

/// Brings a changelog table's latest rows up to its history's watermarks:
/// `CompactLatest::new(..).with_partitions(..).run().await`.
#[derive(Debug)]
pub struct CompactLatest {
    table: String,
    history: Url,
    latest: Url,
    storage_options: HashMap<String, String>,
    partitions: Vec<i32>,
    max_records_per_commit: u64,
    stop: Arc<AtomicBool>,
}

impl CompactLatest {
    /// The latest rows of table `table` at `latest`, from its history at
    /// `history`.
    pub fn new(table: impl Into<String>, history: Url, latest: Url) -> Self {
        Self {
            table: table.into(),
            history,
            latest,
            storage_options: HashMap::new(),
            partitions: Vec::new(),
            max_records_per_commit: 500_000,
            stop: Arc::default(),
        }
    }

    /// Object-store options for the lake.
    pub fn with_storage_options(mut self, options: HashMap<String, String>) -> Self {
        self.storage_options = options;
        self
    }

    /// The partitions to bring up to date (this compactor's shard).
    pub fn with_partitions(mut self, partitions: impl IntoIterator<Item = i32>) -> Self {
        self.partitions = partitions.into_iter().collect();
        self.partitions.sort_unstable();
        self
    }

    /// At most this many history offsets per MERGE (bounds the work a lost
    /// race repeats and the rows deduplicated at once).
    pub fn with_max_records_per_commit(mut self, max: u64) -> Self {
        self.max_records_per_commit = max.max(1);
        self
    }

    /// A flag that, once set, ends the run after the commit in flight.
    pub fn with_stop(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = stop;
        self
    }

    /// Runs passes until the rows cover the history's watermarks (another
    /// compactor committing first starts the pass again from its commit).
    pub async fn run(self) -> Result<LatestMetrics> {
        let mut metrics = LatestMetrics::default();
        let mut attempt = 1;
        loop {
            match self.pass(&mut metrics).await {
                Err(CompactorError::Delta(e)) if is_conflict(&e) && attempt < MAX_ATTEMPTS => {
                    after_conflict(&self.table, attempt, &e).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
                Ok(()) => return Ok(metrics),
            }
        }
    }

    async fn pass(&self, metrics: &mut LatestMetrics) -> Result<()> {
        let history = self.open(&self.history).await?;
        let Some(history_version) = history.version() else {
            return Ok(());
        };
        let history_id = history.snapshot()?.metadata().id().to_string();
        let mut latest = self.open(&self.latest).await?;
        let schema = history.snapshot()?.snapshot().arrow_schema();
        if latest.version().is_none() {
            // Created with no rows and no watermark in a commit of its own,
            // as the history is (see tier.rs).
            latest
                .write([RecordBatch::new_empty(Arc::clone(&schema))])
                .with_writer_properties(writer_properties())
                .await?;
            latest = self.open(&self.latest).await?;
        }
        let source_id = latest_source_id(&history_id);
        let derived = transaction(&latest, &source_id).await?.is_some();
        if !derived && latest.version().is_some_and(|v| v > 0) {
            // Rows of a history deleted since: drop them (readers take none
            // of these rows: no commit names this history).
            tracing::info!(table = %self.table, "the history table was created again: starting its latest rows afresh");
            latest = latest
                .write([RecordBatch::new_empty(Arc::clone(&schema))])
                .with_save_mode(SaveMode::Overwrite)
                .with_schema_mode(SchemaMode::Overwrite)
                .with_writer_properties(writer_properties())
                .await?;
        }

        let mut watermarks = BTreeMap::new();
        let mut covered = BTreeMap::new();
        for &partition in &self.partitions {
            if let Some(w) = transaction(&history, &app_id(&self.table, partition)).await? {
                watermarks.insert(partition, w);
            }
            if let Some(c) = transaction(&latest, &latest_app_id(&history_id, partition)).await? {
                covered.insert(partition, c);
            }
        }
        loop {
            let ranges = self.next_commit(&covered, &watermarks);
            if ranges.is_empty() {
                break;
            }
            if self.stop.load(Ordering::Relaxed) {
                metrics.stopped = true;
                break;
            }
            let mut after = covered.clone();
            for &(partition, _, end) in &ranges {
                after.insert(partition, end);
            }
            let mut transactions = vec![Transaction::new(
                source_id.clone(),
                i64::try_from(history_version).unwrap_or(i64::MAX),
            )];
            transactions.extend(after.iter().map(|(&partition, &watermark)| {
                Transaction::new(latest_app_id(&history_id, partition), watermark)
            }));
            let session = SessionContext::from(DeltaSessionContext::default());
            let source = newest_per_key(&session, &history, &ranges).await?;
            let target = Column::new(Some("target"), KEY);
            let source_key = Column::new(Some("source"), KEY);
            let on = Expr::Column(target).eq(Expr::Column(source_key)).and(
                Expr::Column(Column::new(Some("target"), PARTITION))
                    .eq(Expr::Column(Column::new(Some("source"), PARTITION))),
            );
            let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
            let (table, merged) = latest
                .clone()
                .merge(source, on)
                .with_source_alias("source")
                .with_target_alias("target")
                .with_merge_schema(true)
                .with_writer_properties(writer_properties())
                .with_commit_properties(
                    CommitProperties::default().with_application_transactions(transactions),
                )
                .when_matched_update(|update| {
                    names.iter().fold(update, |update, name| {
                        update.update(
                            column(None, name),
                            Expr::Column(column(Some("source"), name).into()),
                        )
                    })
                })?
                .when_not_matched_insert(|insert| {
                    names.iter().fold(insert, |insert, name| {
                        insert.set(
                            column(None, name),
                            Expr::Column(column(Some("source"), name).into()),
                        )
                    })
                })?
                .await?;
            latest = table;
            covered = after;
            metrics.commits += 1;
            metrics.offsets += ranges
                .iter()
                .map(|&(_, from, to)| (to - from) as u64)
                .sum::<u64>();
            metrics.merged += merged.num_source_rows as u64;
            metrics.inserted += merged.num_target_rows_inserted as u64;
            metrics.updated += merged.num_target_rows_updated as u64;
            tracing::info!(
                table = %self.table,
                version = latest.version(),
                history_version,
                keys = merged.num_source_rows,
                inserted = merged.num_target_rows_inserted,
                updated = merged.num_target_rows_updated,
                "latest rows merged"
            );
        }
        metrics.version = latest.version();
        metrics.watermarks = covered;
        Ok(())
    }

    /// `(partition, from, to)` of the next MERGE: from what the rows cover
    /// (0 for a partition they do not) towards the history's watermark, at
    /// most `max_records_per_commit` offsets in all.
    fn next_commit(
        &self,
        covered: &BTreeMap<i32, i64>,
        watermarks: &BTreeMap<i32, i64>,
    ) -> Vec<(i32, i64, i64)> {
        let mut budget = i64::try_from(self.max_records_per_commit).unwrap_or(i64::MAX);
        let mut ranges = Vec::new();
        for (&partition, &watermark) in watermarks {
            let from = covered.get(&partition).copied().unwrap_or(0);
            if budget == 0 || from >= watermark {
                continue;
            }
            let to = watermark.min(from.saturating_add(budget));
            budget -= to - from;
            ranges.push((partition, from, to));
        }
        ranges
    }

    async fn open(&self, url: &Url) -> Result<DeltaTable> {
        Ok(
            DeltaTable::try_from_url_with_storage_options(
                url.clone(),
                self.storage_options.clone(),
            )
            .await?,
        )
    }
}

/// Column `name` (never parsed: names may hold dots or capitals).
fn column(relation: Option<&str>, name: &str) -> DeltaColumn {
    Column::new(relation, name).into()
}

/// The version of `txn` app id `app_id` in `delta`, if any.
async fn transaction(delta: &DeltaTable, app_id: &str) -> Result<Option<i64>> {
    Ok(delta
        .snapshot()?
        .transaction_version(delta.log_store().as_ref(), app_id)
        .await?)
}

/// The history's records with a key in `ranges` (`(partition, from, to)`),
/// only each key's newest per partition, in the history's columns.
async fn newest_per_key(
    session: &SessionContext,
    history: &DeltaTable,
    ranges: &[(i32, i64, i64)],
) -> Result<DataFrame> {
    let provider = delta_provider(history, &session.state())
        .await
        .map_err(DeltaTableError::from)?;
    let names: Vec<String> = provider
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let within = ranges
        .iter()
        .map(|&(partition, from, to)| {
            col(PARTITION)
                .eq(lit(partition))
                .and(col(OFFSET).gt_eq(lit(from)))
                .and(col(OFFSET).lt(lit(to)))
        })
        .reduce(Expr::or)
        .expect("a commit has a range");
    let newest = row_number()
        .partition_by(vec![col(KEY), col(PARTITION)])
        .order_by(vec![col(OFFSET).sort(false, true)])
        .build()
        .map_err(DeltaTableError::from)?
        .alias(RANK);
    let frame = session
        .read_table(provider)
        .and_then(|frame| frame.filter(within.and(col(KEY).is_not_null())))
        .and_then(|frame| frame.window(vec![newest]))
        .and_then(|frame| frame.filter(col(RANK).eq(lit(1u64))))
        .and_then(|frame| {
            frame.select(
                names
                    .iter()
                    .map(|name| Expr::Column(Column::new_unqualified(name)))
                    .collect::<Vec<_>>(),
            )
        })
        .map_err(DeltaTableError::from)?;
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_split_the_history_and_start_where_the_rows_end() {
        let run = CompactLatest::new(
            "t",
            Url::parse("file:///unused/h/").unwrap(),
            Url::parse("file:///unused/l/").unwrap(),
        )
        .with_max_records_per_commit(100);
        let covered = BTreeMap::from([(0, 10), (2, 5)]);
        let watermarks = BTreeMap::from([(0, 100), (1, 30), (2, 5)]);
        assert_eq!(
            run.next_commit(&covered, &watermarks),
            vec![(0, 10, 100), (1, 0, 10)],
            "90 + 10 offsets; partition 2 is covered up to its watermark"
        );
        assert!(run.next_commit(&watermarks, &watermarks).is_empty());
    }
}

//! One pass of tiering for one table: Kafka records below the cutoff go into
//! the table's Delta table, with each partition's watermark (the next offset
//! to tier) committed in the same Delta transaction as the files holding the
//! records below it. See docs/exactly-once.md.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::execution::session_state::SessionState;
use deltalake::DeltaTable;
use deltalake::delta_datafusion::DeltaSessionContext;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::operations::write::SchemaMode;
use kappa_catalog::columns::table_schema;
use kappa_catalog::lake::CommitSummary;
use kappa_catalog::lake::layout::{DATE, lake_schema, writer_properties};
use kappa_catalog::offsets::PartitionRange;
use kappa_catalog::{DeclaredTable, KafkaClient};
use url::Url;

use crate::error::{CompactorError, Result};
use crate::progress::TierProgress;
use crate::shard::Shard;
use crate::source::CommitSource;

/// Passes tried when other writers keep committing first (each lost race
/// is another writer's commit, so with a few writers this is never reached).
const MAX_ATTEMPTS: u32 = 200;

/// Whether a Delta error means another writer committed first (the commit
/// did not land; the log has what the other wrote).
pub(crate) fn is_conflict(error: &deltalake::DeltaTableError) -> bool {
    use deltalake::kernel::transaction::TransactionError;
    matches!(
        error,
        deltalake::DeltaTableError::VersionAlreadyExists(_)
            | deltalake::DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(_)
                    | TransactionError::VersionAlreadyExists(_)
                    | TransactionError::MaxCommitAttempts(_)
            }
    )
}

/// Logs that another writer committed first, then waits a little, with
/// jitter, so writers racing for the same partitions stop colliding: every
/// loss is some other writer's progress, so retrying ends.
pub(crate) async fn after_conflict(table: &str, attempt: u32, error: &deltalake::DeltaTableError) {
    tracing::info!(table, attempt, %error, "another writer committed first; reloading");
    let jitter = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() % 50);
    tokio::time::sleep(Duration::from_millis(10 + u64::from(jitter))).await;
}

/// The session deltalake plans a commit's write in: one partition, so the
/// rows reach the writer in the order they were read.
/// (deltalake's own session, for its write planner.)
static WRITE_SESSION: LazyLock<Arc<SessionState>> = LazyLock::new(|| {
    let one_partition = HashMap::from([(
        "datafusion.execution.target_partitions".to_string(),
        "1".to_string(),
    )]);
    let session = DeltaSessionContext::new_with_session_overrides(&one_partition)
        .expect("a valid DataFusion setting");
    Arc::new(session.state())
});

/// Versions between explicit checkpoints, unless told otherwise.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 10;

/// Microseconds in a day.
pub use kappa_catalog::lake::app_id;

/// What one run did to one table.
#[derive(Debug, Clone, Default)]
pub struct TierMetrics {
    /// Delta commits made (0 when there was nothing to tier).
    pub commits: usize,
    /// Records written.
    pub records: u64,
    /// Parquet files written.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Checkpoints written.
    pub checkpoints: usize,
    /// The run stopped early when asked to (the rest is left for the next).
    pub stopped: bool,
    /// The table's Delta version after the run (`None`: no table yet).
    pub version: Option<u64>,
    /// Each partition's watermark after the run: the next offset to tier.
    pub watermarks: BTreeMap<i32, i64>,
    /// Offsets Kafka deleted before they were tiered, skipped under
    /// `--allow-data-loss`.
    pub lost: Vec<PartitionRange>,
}

/// Tiers one table: `TierTable::new(..).with_tier_after(..).run().await`.
#[derive(Debug)]
pub struct TierTable {
    client: Arc<KafkaClient>,
    table: DeclaredTable,
    location: Url,
    storage_options: HashMap<String, String>,
    tier_after: Duration,
    allow_data_loss: bool,
    max_records_per_commit: u64,
    target_file_size: u64,
    checkpoint_every: u64,
    shard: Shard,
    progress: Arc<TierProgress>,
    stop: Arc<AtomicBool>,
}

impl TierTable {
    /// Tiers `table` (read with `client`) into the Delta table at `location`.
    pub fn new(client: Arc<KafkaClient>, table: DeclaredTable, location: Url) -> Self {
        Self {
            client,
            table,
            location,
            storage_options: HashMap::new(),
            tier_after: Duration::from_secs(3600),
            allow_data_loss: false,
            max_records_per_commit: 500_000,
            target_file_size: 128 * 1024 * 1024,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            shard: Shard::ALL,
            progress: Arc::default(),
            stop: Arc::default(),
        }
    }

    /// Only the partitions of `shard` (several compactors split a table's
    /// partitions between them, so they never contend).
    pub fn with_shard(mut self, shard: Shard) -> Self {
        self.shard = shard;
        self
    }

    /// Object-store options for the lake (endpoint, region, credentials…).
    pub fn with_storage_options(mut self, options: HashMap<String, String>) -> Self {
        self.storage_options = options;
        self
    }

    /// Tier records older than this (`0s`: everything up to the end).
    pub fn with_tier_after(mut self, tier_after: Duration) -> Self {
        self.tier_after = tier_after;
        self
    }

    /// Go on when Kafka deleted records before they were tiered, recording
    /// the gap in the commit's metadata.
    pub fn with_allow_data_loss(mut self, allow: bool) -> Self {
        self.allow_data_loss = allow;
        self
    }

    /// At most this many offsets per Delta commit (records stream into the
    /// writer, so this bounds a commit's duration and the work a lost race
    /// repeats, not memory).
    pub fn with_max_records_per_commit(mut self, max: u64) -> Self {
        self.max_records_per_commit = max.max(1);
        self
    }

    /// Target size of the Parquet files.
    pub fn with_target_file_size(mut self, bytes: u64) -> Self {
        self.target_file_size = bytes.max(1);
        self
    }

    /// Write a Delta checkpoint after every `n`th version (0: leave it to
    /// deltalake, every 100), so loading the table reads one Parquet file
    /// and the few commits since instead of the whole log.
    pub fn with_checkpoint_every(mut self, n: u64) -> Self {
        self.checkpoint_every = n;
        self
    }

    /// A flag that, once set (SIGTERM), ends the run after the commit in
    /// flight: what was committed stays, the rest waits for the next run.
    pub fn with_stop(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = stop;
        self
    }

    /// Counters for a progress display, updated as records are read.
    pub fn with_progress(mut self, progress: Arc<TierProgress>) -> Self {
        self.progress = progress;
        self
    }

    /// Runs the pass. When another compactor commits the same partitions
    /// first (Delta's conflict check on the txn app ids), the pass starts
    /// again from the watermarks that commit left.
    pub async fn run(self) -> Result<TierMetrics> {
        let mut metrics = TierMetrics::default();
        let mut attempt = 1;
        loop {
            match self.pass(&mut metrics).await {
                Err(CompactorError::Delta(e)) if is_conflict(&e) && attempt < MAX_ATTEMPTS => {
                    after_conflict(&self.table.name, attempt, &e).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
                Ok(()) => return Ok(metrics),
            }
        }
    }

    /// One pass against one Delta snapshot; commits add to `metrics`.
    async fn pass(&self, metrics: &mut TierMetrics) -> Result<()> {
        let name = self.table.name.clone();
        let mut delta = self.open().await?;
        if delta.version().is_none() {
            // Create the table in a commit of its own, with no data and no
            // watermark. deltalake 1.1 does not check a losing creator's
            // commit against the winner's version 0, so two writers racing
            // to create the table with data would both land their records.
            delta
                .write([RecordBatch::new_empty(self.lake_schema())])
                .with_partition_columns([DATE])
                .with_writer_properties(writer_properties())
                .await?;
            delta = self.open().await?;
        }
        let topic = self.table.topic.clone();
        let mut snapshot = self
            .client
            .run_blocking(move |client| client.snapshot_ranges(&topic))
            .await?;
        snapshot.retain(|range| self.shard.owns(range.partition));
        let cutoffs = self.cutoffs(&snapshot).await?;

        // Watermarks and files come from one Delta snapshot: the one this
        // run's commits are made against.
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        let mut lost = Vec::new();
        for range in &snapshot {
            let watermark = match delta.version() {
                Some(_) => {
                    delta
                        .snapshot()?
                        .transaction_version(
                            delta.log_store().as_ref(),
                            app_id(&name, range.partition),
                        )
                        .await?
                }
                None => None,
            };
            let start = match watermark {
                // Never tiered: history starts at the log start.
                None => range.start,
                Some(w) if range.start > w => {
                    lost.push(PartitionRange {
                        partition: range.partition,
                        start: w,
                        end: range.start,
                    });
                    range.start
                }
                Some(w) if w > range.end => {
                    return Err(CompactorError::WatermarkAhead {
                        table: name,
                        partition: range.partition,
                        watermark: w,
                        end: range.end,
                    });
                }
                Some(w) => w,
            };
            next.insert(range.partition, start);
        }
        if !lost.is_empty() && !self.allow_data_loss {
            return Err(CompactorError::DataLoss {
                table: name,
                detail: lost
                    .iter()
                    .map(|r| format!("partition {}: offsets {}..{}", r.partition, r.start, r.end))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }

        let remaining: i64 = next
            .iter()
            .map(|(p, start)| (cutoffs.get(p).copied().unwrap_or(*start) - start).max(0))
            .sum();
        self.progress
            .set_remaining(u64::try_from(remaining).unwrap_or(0));

        // A definition that gained (or lost) columns since the table was
        // written: the commit merges them into the table's schema, and
        // older files read a new column as null.
        let evolves = schema_changed(&delta, &self.lake_schema())?;
        if evolves {
            tracing::info!(table = %name, "the definition's columns changed: merging them into the lake table's schema");
        }

        let mut recorded_loss = !lost.is_empty();
        loop {
            let ranges = self.next_commit(&next, &cutoffs);
            if ranges.is_empty() {
                break;
            }
            if self.stop.load(Ordering::Relaxed) {
                tracing::info!(table = %name, "stopping before the next commit");
                metrics.stopped = true;
                break;
            }
            let read_before = self.progress.snapshot().records;
            let source = CommitSource::new(
                Arc::clone(&self.client),
                self.table.clone(),
                table_schema(&self.table.format, &self.table.value_schema),
                self.lake_schema(),
                ranges.clone(),
                Arc::clone(&self.progress),
            );
            // The watermark of every partition this writer handles goes into
            // every commit, not only those this commit moves: Delta then
            // refuses the commit if any other writer moved one of them since
            // our snapshot (its commit carries the same app id), so a pass
            // never builds on watermarks another writer has moved.
            let mut after = next.clone();
            for r in &ranges {
                after.insert(r.partition, r.end);
            }
            let transactions = after
                .iter()
                .map(|(&partition, &watermark)| {
                    Transaction::new(app_id(&name, partition), watermark)
                })
                .collect();
            let mut commit =
                CommitProperties::default().with_application_transactions(transactions);
            if recorded_loss {
                commit = commit.with_metadata([(
                    "kappa.lost_offsets".to_string(),
                    serde_json::json!(lost
                        .iter()
                        .map(|r| serde_json::json!({"partition": r.partition, "start": r.start, "end": r.end}))
                        .collect::<Vec<_>>()),
                )]);
                recorded_loss = false;
            }
            let mut write = delta
                .write([])
                .with_input_plan(source.into_plan()?)
                .with_session_state(Arc::clone(&WRITE_SESSION) as _);
            if evolves {
                write = write.with_schema_mode(SchemaMode::Merge);
            }
            delta = write
                .with_partition_columns([DATE])
                .with_writer_properties(writer_properties())
                .with_target_file_size(NonZeroU64::new(self.target_file_size))
                .with_commit_properties(commit)
                .await?;
            let records = self.progress.snapshot().records - read_before;
            let offsets: i64 = ranges.iter().map(|r| r.end - r.start).sum();
            self.progress
                .add_gaps(u64::try_from(offsets).unwrap_or(0).saturating_sub(records));
            next = after;
            metrics.commits += 1;
            metrics.records += records;
            self.after_commit(&delta, metrics).await;
            tracing::info!(
                table = %name,
                version = delta.version(),
                records,
                ranges = %ranges.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "),
                "committed"
            );
        }
        metrics.version = delta.version();
        metrics.watermarks = next;
        metrics.lost = lost;
        Ok(())
    }

    /// The lake table's schema for the table's current definition.
    fn lake_schema(&self) -> SchemaRef {
        lake_schema(&table_schema(&self.table.format, &self.table.value_schema))
    }

    /// Counts the files the commit just made wrote, and writes a checkpoint
    /// when it is due. Neither can undo the commit, so failures are logged.
    async fn after_commit(&self, delta: &DeltaTable, metrics: &mut TierMetrics) {
        let Some(version) = delta.version() else {
            return;
        };
        match CommitSummary::read(delta.log_store().as_ref(), version).await {
            Ok(Some(commit)) => {
                metrics.files += u64::try_from(commit.files).unwrap_or(0);
                metrics.bytes += u64::try_from(commit.bytes).unwrap_or(0);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(table = %self.table.name, version, error = %e, "could not read the commit back")
            }
        }
        if self.checkpoint_every > 0 && version % self.checkpoint_every == 0 {
            match deltalake::checkpoints::create_checkpoint(delta, None).await {
                Ok(()) => metrics.checkpoints += 1,
                Err(e) => {
                    tracing::warn!(table = %self.table.name, version, error = %e, "checkpoint failed; the next one will cover it")
                }
            }
        }
    }

    /// The Delta table at its latest version (not loaded if it does not exist).
    async fn open(&self) -> Result<DeltaTable> {
        Ok(DeltaTable::try_from_url_with_storage_options(
            self.location.clone(),
            self.storage_options.clone(),
        )
        .await?)
    }

    /// Each partition's cutoff: the first offset whose timestamp is within
    /// the last `tier_after` (offsets-for-times), or the end when it is 0.
    async fn cutoffs(&self, snapshot: &[PartitionRange]) -> Result<BTreeMap<i32, i64>> {
        let mut cutoffs: BTreeMap<i32, i64> =
            snapshot.iter().map(|r| (r.partition, r.end)).collect();
        if self.tier_after.is_zero() || snapshot.is_empty() {
            return Ok(cutoffs);
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let before = now_ms - i64::try_from(self.tier_after.as_millis()).unwrap_or(i64::MAX);
        let topic = self.table.topic.clone();
        let partitions: Vec<i32> = snapshot.iter().map(|r| r.partition).collect();
        let firsts = self
            .client
            .run_blocking(move |client| client.offsets_for_time(&topic, &partitions, before))
            .await?;
        for (partition, first_recent) in firsts {
            if let Some(cutoff) = cutoffs.get_mut(&partition) {
                *cutoff = (*cutoff).min(first_recent);
            }
        }
        Ok(cutoffs)
    }

    /// The ranges of the next commit: from each partition's watermark
    /// towards its cutoff, at most `max_records_per_commit` offsets in all.
    fn next_commit(
        &self,
        next: &BTreeMap<i32, i64>,
        cutoffs: &BTreeMap<i32, i64>,
    ) -> Vec<PartitionRange> {
        let mut budget = i64::try_from(self.max_records_per_commit).unwrap_or(i64::MAX);
        let mut ranges = Vec::new();
        for (&partition, &start) in next {
            let cutoff = cutoffs.get(&partition).copied().unwrap_or(start);
            if budget == 0 || start >= cutoff {
                continue;
            }
            let end = cutoff.min(start.saturating_add(budget));
            budget -= end - start;
            ranges.push(PartitionRange {
                partition,
                start,
                end,
            });
        }
        ranges
    }
}

/// Whether the Delta table's columns differ from `wanted`'s (by name).
fn schema_changed(delta: &DeltaTable, wanted: &SchemaRef) -> Result<bool> {
    let current = delta.snapshot()?.snapshot().arrow_schema();
    let names = |schema: &Schema| {
        let mut names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        names.sort_unstable();
        names
    };
    Ok(names(&current) != names(wanted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kappa_catalog::{KafkaOptions, ValueFormat};

    fn tier(max_records_per_commit: u64) -> TierTable {
        let table = DeclaredTable {
            name: "t".into(),
            topic: "t".into(),
            format: ValueFormat::Raw,
            value_schema: Arc::new(Schema::empty()),
            timestamp_skew: None,
            changelog: None,
            definition: None,
        };
        // Connects lazily: no broker is contacted.
        let client = KafkaClient::new(KafkaOptions::new("127.0.0.1:1")).unwrap();
        TierTable::new(client, table, Url::parse("file:///unused/").unwrap())
            .with_max_records_per_commit(max_records_per_commit)
    }

    #[test]
    fn commits_split_the_backlog_and_stop_at_each_cutoff() {
        let next = BTreeMap::from([(0, 10), (1, 0), (2, 5)]);
        let cutoffs = BTreeMap::from([(0, 100), (1, 30), (2, 5)]);
        let ranges = tier(100).next_commit(&next, &cutoffs);
        let spans: Vec<(i32, i64, i64)> = ranges
            .iter()
            .map(|r| (r.partition, r.start, r.end))
            .collect();
        assert_eq!(
            spans,
            vec![(0, 10, 100), (1, 0, 10)],
            "90 + 10 offsets, partition 2 has nothing"
        );
        assert!(
            tier(100).next_commit(&cutoffs, &cutoffs).is_empty(),
            "all caught up: no commit"
        );
    }
}

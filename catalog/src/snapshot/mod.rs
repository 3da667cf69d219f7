//! Snapshot tokens: a query's snapshot as a value users keep.
//!
//! A query reads one snapshot of each table: the lake tier's Delta version
//! and each partition's end offset, fixed when it is planned. Every table
//! scan records its snapshot in the query's [`SnapshotRecorder`], so the
//! gateway can hand the whole as a [`SnapshotToken`] back with the answer;
//! with `kappa.snapshot = '<token>'` each table the token names reads that
//! state again ([`pinned`]), the same rows next month.
//!
//! * [`token`] is the value and its text form.
//! * [`function`] is `snapshot('t', …)`, a token of tables as they are now.
//! * [`slice`] cuts a token's offsets into shares, so one answer is read in
//!   parallel from several gateways.
//! * Replaying is the tables' own: [`crate::table::KafkaTable`] reads the
//!   token's offset ranges, and [`crate::union::LakeKafkaTable`] the lake
//!   rows below the token's ends plus Kafka above the lake's watermarks.

pub mod function;
pub mod slice;
pub mod token;

use std::sync::Mutex;

use datafusion::catalog::Session;

pub use function::{SNAPSHOT, SnapshotFunction};
pub use slice::{Slice, slices_cleanly};
pub use token::{PartitionSnapshot, SnapshotToken, TOKEN_PREFIX, TableSnapshot};

use crate::error::{CatalogError, Result};
use crate::offsets::PartitionRange;
use crate::options::KappaOptions;

/// What the tables of one query read, recorded by each scan as it is
/// planned. The gateway puts one in each statement's session (a
/// `SessionConfig` extension) and reads it once the statement is planned.
#[derive(Debug, Default)]
pub struct SnapshotRecorder {
    token: Mutex<SnapshotToken>,
}

impl SnapshotRecorder {
    /// Records that the query read `snapshot` of `table`. A table scanned
    /// twice (self-join) reads one snapshot, so the second record is the
    /// first's; a table read only in part (named partitions, from the lake)
    /// keeps the partitions of both records.
    pub fn record(&self, table: &str, snapshot: TableSnapshot) {
        let mut token = self.token.lock().expect("snapshot recorder poisoned");
        let merged = match token.table(table) {
            Some(known) if !known.complete && !snapshot.complete => {
                let mut merged = known.clone();
                merged.partitions.extend(
                    snapshot
                        .partitions
                        .iter()
                        .filter(|p| known.partition(p.partition).is_none()),
                );
                merged
            }
            Some(known) if known.complete => return,
            _ => snapshot,
        };
        token.insert(table, merged);
    }

    /// The snapshot of every table recorded so far.
    pub fn token(&self) -> SnapshotToken {
        self.token
            .lock()
            .expect("snapshot recorder poisoned")
            .clone()
    }
}

/// Records `snapshot` of `table` in the recorder of the query `state`
/// plans, if its session has one.
pub(crate) fn record(state: &dyn Session, table: &str, snapshot: TableSnapshot) {
    if let Some(recorder) = state.config().get_extension::<SnapshotRecorder>() {
        recorder.record(table, snapshot);
    }
}

/// The token the session of `state` replays (`kappa.snapshot`), if any.
pub fn session_token(state: &dyn Session) -> Result<Option<SnapshotToken>> {
    let options = KappaOptions::from_config(state.config_options());
    match options.snapshot.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text.parse().map(Some),
    }
}

/// The snapshot of `table` that the query `state` plans must read, when
/// the session replays a token naming it.
pub(crate) fn pinned(state: &dyn Session, table: &str) -> Result<Option<TableSnapshot>> {
    Ok(session_token(state)?.and_then(|token| token.table(table).cloned()))
}

/// The ranges `pinned` names in a topic whose partitions are now `live`
/// (each `[log start, end)`): `[from, end)` of each partition in the token.
/// A partition added since is not in the snapshot. A token whose partition
/// is missing or ends beyond the partition's end now was not taken on this
/// topic (it was deleted and created again, or the token was made by hand).
pub(crate) fn pinned_ranges(
    table: &str,
    pinned: &TableSnapshot,
    live: &[PartitionRange],
) -> Result<Vec<PartitionRange>> {
    let mut ranges = Vec::with_capacity(pinned.partitions.len());
    for p in &pinned.partitions {
        let Some(now) = live.iter().find(|r| r.partition == p.partition) else {
            return Err(CatalogError::InvalidSnapshot(format!(
                "table '{table}' has no partition {} (the snapshot token names it)",
                p.partition
            )));
        };
        if p.end > now.end {
            return Err(CatalogError::InvalidSnapshot(format!(
                "table '{table}' partition {}: the snapshot token ends at offset {}, beyond the \
                 partition's end {} (was the topic deleted and created again?)",
                p.partition, p.end, now.end
            )));
        }
        ranges.push(PartitionRange::new(p.partition, p.from, p.end));
    }
    Ok(ranges)
}

/// Fails when Kafka no longer holds offsets a replay needs from it: each
/// `(partition, first offset needed, end)` against the partitions' log
/// starts now (`live`). Nothing else holds them, so the answer would miss
/// them.
pub(crate) fn check_kept(
    table: &str,
    needed: &[PartitionRange],
    live: &[PartitionRange],
) -> Result<()> {
    let mut lost = Vec::new();
    for range in needed.iter().filter(|r| r.start < r.end) {
        let log_start = live
            .iter()
            .find(|r| r.partition == range.partition)
            .map_or(range.start, |r| r.start);
        if log_start > range.start {
            lost.push(format!(
                "partition {}: offsets {}..{}",
                range.partition,
                range.start,
                log_start.min(range.end)
            ));
        }
    }
    if lost.is_empty() {
        return Ok(());
    }
    Err(CatalogError::SnapshotLost {
        table: table.to_string(),
        detail: format!(
            "Kafka deleted its records ({}) and the lake does not hold them",
            lost.join(", ")
        ),
    })
}

/// Whether `plan` reads any table a snapshot covers (a topic, a table
/// over one with its lake tier, or `snapshot(…)`), so that planning it
/// takes a snapshot worth naming.
pub fn reads_snapshot_tables(plan: &datafusion::logical_expr::LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::datasource::source_as_provider;
    use datafusion::logical_expr::LogicalPlan;
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(provider) = source_as_provider(&scan.source)
        {
            let provider = provider.as_ref() as &dyn std::any::Any;
            if provider.is::<crate::table::KafkaTable>()
                || provider.is::<crate::union::LakeKafkaTable>()
                || provider.is::<function::SnapshotTable>()
                || provider.is::<crate::changelog::LatestTable>()
            {
                found = true;
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

//! What one Delta commit of a lake table did: read from its log entry by
//! version (`DeltaTable::history` drops the version a commit has), for
//! `system.compactions` and the compactor's summary.

use deltalake::DeltaResult;
use deltalake::kernel::Action;
use deltalake::logstore::{LogStore, get_actions};

/// What one commit did, summed over its actions.
#[derive(Debug, Clone, Default)]
pub struct CommitSummary {
    /// When it was committed, in milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
    /// Delta's operation name (WRITE for a tiering pass, OPTIMIZE…).
    pub operation: Option<String>,
    /// Records in the files it added (from their statistics).
    pub records: i64,
    /// Files it added.
    pub files: i64,
    /// Bytes of the files it added.
    pub bytes: i64,
    /// `partition:watermark` of each partition it carries, comma-separated.
    pub watermarks: String,
}

impl CommitSummary {
    /// The summary of commit `version`, or `None` when log retention has
    /// removed it.
    pub async fn read(log_store: &dyn LogStore, version: u64) -> DeltaResult<Option<Self>> {
        let Some(entry) = log_store.read_commit_entry(version).await? else {
            return Ok(None);
        };
        Ok(Some(Self::of(&get_actions(version, &entry)?)))
    }

    fn of(actions: &[Action]) -> Self {
        let mut commit = Self::default();
        let mut marks: Vec<(i32, i64)> = Vec::new();
        for action in actions {
            match action {
                Action::CommitInfo(info) => {
                    commit.timestamp_ms = info.in_commit_timestamp.or(info.timestamp);
                    commit.operation = info.operation.clone();
                }
                Action::Add(add) => {
                    commit.files += 1;
                    commit.bytes += add.size;
                    commit.records += add
                        .get_stats()
                        .ok()
                        .flatten()
                        .map_or(0, |stats| stats.num_records);
                }
                Action::Txn(txn) => {
                    if let Some(partition) = txn
                        .app_id
                        .rsplit_once('/')
                        .and_then(|(_, p)| p.parse().ok())
                    {
                        marks.push((partition, txn.version));
                    }
                }
                _ => {}
            }
        }
        marks.sort_unstable();
        commit.watermarks = marks
            .iter()
            .map(|(p, w)| format!("{p}:{w}"))
            .collect::<Vec<_>>()
            .join(",");
        commit
    }
}

//! Counters a tiering run updates as it goes, so the binary can draw a
//! progress bar on a terminal or log periodic lines otherwise.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Progress of the table being tiered. Shared between the run (which
/// updates it) and a display (which reads it); cheap to update per batch.
#[derive(Debug, Default)]
pub struct TierProgress {
    table: Mutex<String>,
    /// Offsets this table's run has to read (records and compacted gaps).
    backlog: AtomicU64,
    /// Offsets read so far.
    offsets: AtomicU64,
    /// Records read so far.
    records: AtomicU64,
    /// Bytes of the records read, as decoded in memory.
    bytes: AtomicU64,
}

/// A reading of [`TierProgress`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgressSnapshot {
    /// The table being tiered.
    pub table: String,
    /// Offsets to read in all.
    pub backlog: u64,
    /// Offsets read.
    pub offsets: u64,
    /// Records read.
    pub records: u64,
    /// Bytes read.
    pub bytes: u64,
}

impl TierProgress {
    /// A new table starts: counters go back to zero.
    pub fn start_table(&self, table: &str) {
        *self.table.lock().expect("progress lock") = table.to_string();
        for counter in [&self.backlog, &self.offsets, &self.records, &self.bytes] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    /// A pass has `remaining` offsets left to read (a pass retried after
    /// losing a race to another writer recounts from its new snapshot).
    pub fn set_remaining(&self, remaining: u64) {
        let offsets = self.offsets.load(Ordering::Relaxed);
        self.backlog.store(offsets + remaining, Ordering::Relaxed);
    }

    /// `records` records of `bytes` bytes were read.
    pub fn add_records(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.offsets.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A range is read; `gaps` of its offsets held no record.
    pub fn add_gaps(&self, gaps: u64) {
        self.offsets.fetch_add(gaps, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            table: self.table.lock().expect("progress lock").clone(),
            backlog: self.backlog.load(Ordering::Relaxed),
            offsets: self.offsets.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retried_pass_recounts_the_backlog_from_what_was_read() {
        let progress = TierProgress::default();
        progress.start_table("orders");
        progress.set_remaining(100);
        progress.add_records(30, 3000);
        progress.add_gaps(10);
        // Another writer tiered some: 40 remain from here.
        progress.set_remaining(40);
        let now = progress.snapshot();
        assert_eq!(
            (now.backlog, now.offsets, now.records, now.bytes),
            (80, 40, 30, 3000)
        );
        progress.start_table("payments");
        assert_eq!(progress.snapshot().offsets, 0);
        assert_eq!(progress.snapshot().table, "payments");
    }
}

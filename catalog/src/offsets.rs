//! Offset arithmetic for bounded scans, free of any Kafka client so it can be
//! tested exhaustively with synthetic offset sequences.
//!
//! A scan is a list of [`PartitionRange`]s fixed at plan time. A partition is
//! finished when its read position reaches the range's end, never by counting
//! records: offsets have gaps (compaction, transaction markers, retention).

use std::fmt;

/// Offsets `[start, end)` of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRange {
    /// Kafka partition.
    pub partition: i32,
    /// First offset to read.
    pub start: i64,
    /// One past the last offset to read (the high watermark, or last stable
    /// offset under read_committed, at plan time).
    pub end: i64,
}

impl PartitionRange {
    /// Offsets `[start, end)` of `partition`.
    pub const fn new(partition: i32, start: i64, end: i64) -> Self {
        Self {
            partition,
            start,
            end,
        }
    }

    /// The range a full scan reads, given a partition's watermarks.
    pub fn from_watermarks(partition: i32, low: i64, high: i64) -> Self {
        Self {
            partition,
            start: low.max(0),
            end: high.max(low.max(0)),
        }
    }

    /// Whether there is nothing to read.
    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }

    /// Number of offsets covered (an upper bound on the records in it).
    pub fn span(&self) -> i64 {
        self.end - self.start
    }
}

impl fmt::Display for PartitionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}:{}..{}", self.partition, self.start, self.end)
    }
}

/// Splits ranges into at most `max_groups` groups of similar total span, one
/// group per output partition (and consumer) of the scan. Empty ranges are
/// dropped; within a group, ranges keep partition order.
pub fn group_ranges(ranges: &[PartitionRange], max_groups: usize) -> Vec<Vec<PartitionRange>> {
    let mut ranges: Vec<PartitionRange> =
        ranges.iter().filter(|r| !r.is_empty()).copied().collect();
    let groups = max_groups.max(1).min(ranges.len());
    if groups == 0 {
        return Vec::new();
    }
    // Longest span first into the lightest group (LPT scheduling).
    ranges.sort_by(|a, b| b.span().cmp(&a.span()).then(a.partition.cmp(&b.partition)));
    let mut out: Vec<(i64, Vec<PartitionRange>)> = vec![(0, Vec::new()); groups];
    for range in ranges {
        let lightest = out
            .iter_mut()
            .min_by_key(|(load, _)| *load)
            .expect("at least one group");
        lightest.0 += range.span();
        lightest.1.push(range);
    }
    out.into_iter()
        .map(|(_, mut group)| {
            // A partition's ranges in offset order, so reads only move forward.
            group.sort_by_key(|r| (r.partition, r.start));
            group
        })
        .collect()
}

/// What to do with a record the consumer delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Inside the range: emit it; the partition has more to read.
    Take,
    /// Inside the range and the last offset of it: emit it; the partition is done.
    TakeLast,
    /// Below the next expected offset (re-delivered after a reset): drop it.
    Duplicate,
    /// At or past the end (produced after the plan fixed the end): drop it;
    /// the partition is done.
    PastEnd,
}

/// Read position of one partition within its range.
///
/// A jump in offsets is either a hole in the log (compaction, transaction
/// markers) or records deleted while the scan read them (retention,
/// DeleteRecords), which some brokers answer by serving from the new log
/// start. The cursor remembers the first unexplained jump; the reader checks
/// it against the log start ([`Self::verify`]) before it calls the range done.
#[derive(Debug, Clone, Copy)]
pub struct PartitionCursor {
    range: PartitionRange,
    next: i64,
    done: bool,
    unverified_gap: Option<i64>,
}

impl PartitionCursor {
    /// A cursor at the start of `range`.
    pub fn new(range: PartitionRange) -> Self {
        Self {
            range,
            next: range.start,
            done: range.is_empty(),
            unverified_gap: None,
        }
    }

    /// Where the first jump not yet checked against the log start began.
    pub fn unverified_gap(&self) -> Option<i64> {
        self.unverified_gap
    }

    /// Notes that offsets from the read position on may have vanished (the
    /// consumer reported its position outside the log).
    pub fn suspect_gap(&mut self) {
        if !self.done {
            self.unverified_gap.get_or_insert(self.next);
        }
    }

    /// Checks the jump against the partition's current log start: records
    /// below it were deleted. Returns the offsets of the snapshot that
    /// vanished, or clears the jump as a hole in the log.
    pub fn verify(&mut self, log_start: i64) -> Result<(), (i64, i64)> {
        match self.unverified_gap.take() {
            Some(gap) if log_start > gap => Err((gap, log_start.min(self.range.end))),
            _ => Ok(()),
        }
    }

    fn note_jump(&mut self, to: i64) {
        if to > self.next {
            self.unverified_gap.get_or_insert(self.next);
        }
    }

    /// The range this cursor reads.
    pub fn range(&self) -> PartitionRange {
        self.range
    }

    /// The next offset the cursor expects.
    pub fn next_offset(&self) -> i64 {
        self.next
    }

    /// Whether the partition is finished.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Classifies a delivered record's offset and advances the cursor.
    pub fn deliver(&mut self, offset: i64) -> Delivery {
        if self.done {
            return if offset < self.next {
                Delivery::Duplicate
            } else {
                Delivery::PastEnd
            };
        }
        if offset < self.next {
            return Delivery::Duplicate;
        }
        self.note_jump(offset.min(self.range.end));
        if offset >= self.range.end {
            self.done = true;
            return Delivery::PastEnd;
        }
        self.next = offset + 1;
        if self.next >= self.range.end {
            self.done = true;
            Delivery::TakeLast
        } else {
            Delivery::Take
        }
    }

    /// The consumer reports its position (the next offset it will fetch), or
    /// that it reached the end of the log: either finishes the partition once
    /// it is at or past the range's end, whatever offsets were skipped.
    pub fn reached(&mut self, position: i64) {
        if position >= self.range.end && !self.done {
            self.note_jump(self.range.end);
            self.next = self.next.max(self.range.end);
            self.done = true;
        }
    }
}

/// Walks one partition's ranges backwards from the newest offset, in
/// windows, until `n` records were read or the ranges are exhausted: the
/// reads behind "the last n records" (`ORDER BY _offset DESC LIMIT n`).
///
/// The first window is the last `n` offsets; where offsets have gaps
/// (compaction, retention, transaction markers) it holds fewer than `n`
/// records, and the next window reaches back by exactly the shortfall.
#[derive(Debug, Clone)]
pub struct TailCursor {
    /// Ranges of one partition, newest first.
    ranges: Vec<PartitionRange>,
    current: usize,
    window_end: i64,
    wanted: usize,
    collected: usize,
}

impl TailCursor {
    /// A cursor for the last `wanted` records of `ranges` (one partition's).
    pub fn new(mut ranges: Vec<PartitionRange>, wanted: usize) -> Self {
        ranges.retain(|r| !r.is_empty());
        ranges.sort_by_key(|r| std::cmp::Reverse(r.end));
        let window_end = ranges.first().map_or(0, |r| r.end);
        Self {
            ranges,
            current: 0,
            window_end,
            wanted,
            collected: 0,
        }
    }

    /// The next window to read, or `None` when enough records were read or
    /// nothing older is left.
    pub fn next_window(&mut self) -> Option<PartitionRange> {
        while self.collected < self.wanted && self.current < self.ranges.len() {
            let range = self.ranges[self.current];
            if self.window_end <= range.start {
                self.current += 1;
                if let Some(next) = self.ranges.get(self.current) {
                    self.window_end = self.window_end.min(next.end);
                }
                continue;
            }
            let missing = i64::try_from(self.wanted - self.collected).unwrap_or(i64::MAX);
            let start = range.start.max(self.window_end.saturating_sub(missing));
            return Some(PartitionRange {
                partition: range.partition,
                start,
                end: self.window_end,
            });
        }
        None
    }

    /// Records that `window` (the last [`Self::next_window`]) held.
    pub fn read(&mut self, window: PartitionRange, records: usize) {
        self.collected += records;
        self.window_end = window.start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds a sequence of delivered offsets and returns what was taken and
    /// whether the cursor finished.
    fn run(r: PartitionRange, delivered: &[i64]) -> (Vec<i64>, bool) {
        let mut c = PartitionCursor::new(r);
        let mut taken = Vec::new();
        for &o in delivered {
            match c.deliver(o) {
                Delivery::Take | Delivery::TakeLast => taken.push(o),
                Delivery::Duplicate | Delivery::PastEnd => {}
            }
        }
        (taken, c.is_done())
    }

    #[test]
    fn contiguous_offsets_finish_on_the_last_one() {
        assert_eq!(
            run(PartitionRange::new(0, 3, 6), &[3, 4, 5]),
            (vec![3, 4, 5], true)
        );
        assert_eq!(
            run(PartitionRange::new(0, 3, 6), &[3, 4]),
            (vec![3, 4], false)
        );
    }

    #[test]
    fn gaps_do_not_hang_the_scan() {
        // Compacted topic: 5 and 6 are gone; the record at 7 ends it.
        assert_eq!(
            run(PartitionRange::new(0, 0, 8), &[0, 2, 4, 7]),
            (vec![0, 2, 4, 7], true)
        );
        // The last offsets are gone (or are transaction markers): the
        // consumer's position or end-of-partition finishes the range.
        let mut c = PartitionCursor::new(PartitionRange::new(0, 0, 10));
        for o in [0, 1, 2] {
            c.deliver(o);
        }
        assert!(!c.is_done());
        c.reached(9);
        assert!(!c.is_done());
        c.reached(10);
        assert!(c.is_done());
    }

    #[test]
    fn records_after_the_snapshot_are_dropped() {
        assert_eq!(
            run(PartitionRange::new(1, 0, 3), &[0, 1, 2, 3, 4]),
            (vec![0, 1, 2], true)
        );
        // A gap straight across the end: 2 missing, 3 is past the snapshot.
        assert_eq!(
            run(PartitionRange::new(1, 0, 3), &[0, 1, 3]),
            (vec![0, 1], true)
        );
    }

    #[test]
    fn redelivered_records_are_dropped() {
        assert_eq!(
            run(PartitionRange::new(0, 0, 5), &[0, 1, 2, 1, 2, 3, 4]),
            (vec![0, 1, 2, 3, 4], true)
        );
    }

    #[test]
    fn every_subset_of_offsets_is_read_exactly_once() {
        // Exhaustive over which of 8 offsets exist, with every record
        // delivered twice in a row (a worst-case re-delivery).
        for mask in 0u32..256 {
            let present: Vec<i64> = (0..8).filter(|o| mask & (1 << o) != 0).collect();
            let delivered: Vec<i64> = present.iter().flat_map(|&o| [o, o]).collect();
            let (taken, done) = run(PartitionRange::new(0, 0, 8), &delivered);
            assert_eq!(taken, present, "mask {mask:#b}");
            assert_eq!(done, present.last() == Some(&7), "mask {mask:#b}");
        }
    }

    #[test]
    fn jumps_are_checked_against_the_log_start() {
        // A hole (compaction): the log start is below it, so it is real.
        let mut c = PartitionCursor::new(PartitionRange::new(0, 0, 10));
        c.deliver(0);
        c.deliver(4);
        assert_eq!(c.unverified_gap(), Some(1));
        assert_eq!(c.verify(0), Ok(()));
        assert_eq!(c.unverified_gap(), None);
        // Deleted under the scan: the broker served from the new log start.
        c.deliver(8);
        assert_eq!(c.verify(8), Err((5, 8)));
        // Contiguous reads and the exact end raise nothing.
        let mut c = PartitionCursor::new(PartitionRange::new(0, 0, 3));
        for o in [0, 1, 2] {
            c.deliver(o);
        }
        c.reached(3);
        assert_eq!(c.unverified_gap(), None);
        // Reaching the end by position past unread offsets is a jump too.
        let mut c = PartitionCursor::new(PartitionRange::new(0, 0, 10));
        c.deliver(0);
        c.reached(10);
        assert_eq!(c.verify(10), Err((1, 10)));
    }

    #[test]
    fn watermarks_make_ranges() {
        assert_eq!(
            PartitionRange::from_watermarks(0, 5, 9),
            PartitionRange::new(0, 5, 9)
        );
        assert!(PartitionRange::from_watermarks(0, 7, 7).is_empty());
        assert!(PartitionCursor::new(PartitionRange::new(0, 7, 7)).is_done());
        assert!(PartitionRange::from_watermarks(0, -1, -1).is_empty());
    }

    #[test]
    fn groups_balance_spans_and_drop_empty_ranges() {
        let ranges = [
            PartitionRange::new(0, 0, 100),
            PartitionRange::new(1, 0, 10),
            PartitionRange::new(2, 0, 90),
            PartitionRange::new(3, 5, 5),
        ];
        let groups = group_ranges(&ranges, 2);
        assert_eq!(groups.len(), 2);
        let spans: Vec<i64> = groups
            .iter()
            .map(|g| g.iter().map(|r| r.span()).sum())
            .collect();
        assert_eq!(spans, vec![100, 100]);
        assert_eq!(group_ranges(&ranges, 16).len(), 3);
        assert!(group_ranges(&[PartitionRange::new(0, 1, 1)], 4).is_empty());
        let all: usize = group_ranges(&ranges, 1).iter().map(Vec::len).sum();
        assert_eq!(all, 3);
    }

    /// Runs a tail cursor over a partition holding `present` offsets and
    /// returns the windows it read and the records they held.
    fn tail(ranges: Vec<PartitionRange>, present: &[i64], n: usize) -> (Vec<(i64, i64)>, Vec<i64>) {
        let mut cursor = TailCursor::new(ranges, n);
        let (mut windows, mut records) = (Vec::new(), Vec::new());
        while let Some(w) = cursor.next_window() {
            let held: Vec<i64> = present
                .iter()
                .copied()
                .filter(|o| (w.start..w.end).contains(o))
                .collect();
            windows.push((w.start, w.end));
            cursor.read(w, held.len());
            records.extend(held);
        }
        (windows, records)
    }

    #[test]
    fn the_last_records_cost_one_window_without_gaps() {
        let present: Vec<i64> = (0..1000).collect();
        let (windows, records) = tail(vec![PartitionRange::new(0, 0, 1000)], &present, 100);
        assert_eq!(windows, vec![(900, 1000)]);
        assert_eq!(records.len(), 100);
        // Fewer records than asked: everything, once.
        let (_, records) = tail(vec![PartitionRange::new(0, 0, 5)], &present, 100);
        assert_eq!(records.len(), 5);
    }

    #[test]
    fn gaps_reach_back_by_the_shortfall_only() {
        // Every other offset is gone (a compacted topic).
        let present: Vec<i64> = (0..1000).filter(|o| o % 2 == 0).collect();
        let (windows, records) = tail(vec![PartitionRange::new(0, 0, 1000)], &present, 10);
        assert_eq!(windows.first(), Some(&(990, 1000)));
        assert_eq!(records.len(), 10);
        let mut newest: Vec<i64> = present.iter().rev().take(10).copied().collect();
        newest.sort_unstable();
        let mut got = records.clone();
        got.sort_unstable();
        assert_eq!(got, newest);
    }

    #[test]
    fn several_ranges_are_walked_newest_first() {
        let present: Vec<i64> = (0..100).collect();
        let ranges = vec![
            PartitionRange::new(0, 10, 20),
            PartitionRange::new(0, 50, 53),
        ];
        let (windows, records) = tail(ranges, &present, 5);
        assert_eq!(windows, vec![(50, 53), (18, 20)]);
        assert_eq!(records, vec![50, 51, 52, 18, 19]);
    }
}

//! Slices of a result: one query's answer read as `count` disjoint shares,
//! each by a different gateway, so clients fetch a large result in parallel
//! (several Flight endpoints).
//!
//! A slice is cut from the offsets a snapshot token pins, not from files or
//! output partitions, so every gateway cuts the same shares whatever its
//! cores, and whatever the lake did since the token was taken (a replay
//! reads the lake's latest version, whose files OPTIMIZE may have
//! rewritten): a share is a set of `(partition, offsets)` ranges, applied to
//! the Kafka records and to the lake's rows alike, as both carry
//! `_partition` and `_offset`. Each share's pieces run in order through the
//! token's partitions, so share `i` of `count` is the `i`-th `count`-th of
//! the pinned offsets; the piece holding a partition's first pinned offset
//! also holds its rows below it, which only the lake may have (a tiered
//! table's token pins Kafka from the lake's watermark).
//!
//! Only a statement whose answer is the concatenation of its slices' answers
//! may be sliced ([`slices_cleanly`]): row by row over the tables' rows, with
//! no aggregate, sort, limit, join or window.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::LogicalPlan;

use crate::error::{CatalogError, Result};
use crate::offsets::PartitionRange;

/// Share `index` of `count` of a query's answer. Put in a statement's
/// session (a `SessionConfig` extension), its table scans read only their
/// share of the snapshot token the session replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    index: u32,
    count: u32,
}

impl Slice {
    /// Share `index` (from 0) of `count`.
    pub fn new(index: u32, count: u32) -> Result<Self> {
        if count == 0 || index >= count {
            return Err(CatalogError::InvalidSnapshot(format!(
                "slice {index}/{count}: a slice is i/n with 0 <= i < n"
            )));
        }
        Ok(Self { index, count })
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// The slice the query `state` plans reads, if any.
    pub fn of_session(state: &dyn Session) -> Option<Self> {
        state.config().get_extension::<Self>().map(|s| *s)
    }

    /// This share of `ranges` (a table's pinned `[from, end)` per
    /// partition): even in offsets, whatever order `ranges` come in.
    pub fn cut(&self, ranges: &[PartitionRange]) -> Cut {
        let mut ranges = ranges.to_vec();
        ranges.sort_by_key(|r| r.partition);
        let total: u128 = ranges.iter().map(|r| span(r) as u128).sum();
        let count = u128::from(self.count);
        let index = u128::from(self.index);
        // This share's positions in the ranges laid end to end.
        let (low, high) = (index * total / count, (index + 1) * total / count);
        let last = self.index + 1 == self.count;
        let mut pieces = HashMap::new();
        let mut at: u128 = 0;
        for range in &ranges {
            let len = span(range) as u128;
            let (first, past) = (at, at + len);
            at = past;
            // The share holding the partition's first position (the last
            // share for an empty partition at the very end) also reads what
            // lies below it.
            let holds_first = (low <= first && first < high) || (last && first == total);
            let from = low.max(first);
            let to = high.min(past);
            if from >= to && !holds_first {
                continue;
            }
            let offset = |position: u128| range.start + ((position - first) as i64);
            pieces.insert(
                range.partition,
                Piece {
                    lower: (!holds_first).then(|| offset(from)),
                    upper: if to >= past { range.end } else { offset(to) },
                },
            );
        }
        Cut { pieces }
    }
}

impl fmt::Display for Slice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Slice {
    type Err = CatalogError;

    /// `i/n`, as [`Slice`]'s `Display` writes it.
    fn from_str(text: &str) -> Result<Self> {
        let invalid = || CatalogError::InvalidSnapshot(format!("'{text}' is not a slice (i/n)"));
        let (index, count) = text.split_once('/').ok_or_else(invalid)?;
        Self::new(
            index.parse().map_err(|_| invalid())?,
            count.parse().map_err(|_| invalid())?,
        )
    }
}

fn span(range: &PartitionRange) -> u64 {
    u64::try_from(range.end - range.start).unwrap_or(0)
}

/// The offsets of one partition a slice reads: `[lower, upper)`, `lower`
/// unbounded for the piece holding the partition's first pinned offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    lower: Option<i64>,
    upper: i64,
}

/// One slice of a table's pinned offsets, by partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pieces: HashMap<i32, Piece>,
}

impl Cut {
    /// `[lower, upper)` of `partition` (`lower` unbounded when `None`)
    /// narrowed to this slice, or `None` where the slice reads none of it.
    pub fn narrow(
        &self,
        partition: i32,
        lower: Option<i64>,
        upper: i64,
    ) -> Option<(Option<i64>, i64)> {
        let piece = self.pieces.get(&partition)?;
        let lower = match (lower, piece.lower) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let upper = upper.min(piece.upper);
        (lower.is_none_or(|lower| lower < upper)).then_some((lower, upper))
    }

    /// The part of `range` in this slice, if any.
    pub fn narrow_range(&self, range: &PartitionRange) -> Option<PartitionRange> {
        let (lower, upper) = self.narrow(range.partition, Some(range.start), range.end)?;
        Some(PartitionRange::new(
            range.partition,
            lower.unwrap_or(range.start),
            upper,
        ))
    }
}

/// The slice of `table`'s pinned `ranges` the query `state` plans reads,
/// when it reads a slice. `pinned` says whether the session replays a
/// token naming `table`: a slice of anything else would not be a share of
/// one answer the other slices share.
pub(crate) fn session_cut(
    state: &dyn Session,
    table: &str,
    pinned: bool,
    ranges: &[PartitionRange],
) -> Result<Option<Cut>> {
    let Some(slice) = Slice::of_session(state) else {
        return Ok(None);
    };
    if !pinned {
        return Err(CatalogError::InvalidSnapshot(format!(
            "slice {slice} reads table '{table}', which the query's snapshot token does not name: \
             a slice is a share of a snapshot"
        )));
    }
    Ok(Some(slice.cut(ranges)))
}

/// Whether the answer of `plan` is its slices' answers put together: it
/// reads topics and tables over them ([`crate::table::KafkaTable`],
/// [`crate::union::LakeKafkaTable`]) row by row (projections, filters,
/// `UNION ALL`), without a limit, sort, aggregate, join, window,
/// subquery, or a row of its own (`VALUES`, a `SELECT` without `FROM`) that
/// each slice would repeat.
pub fn slices_cleanly(plan: &LogicalPlan) -> bool {
    let mut clean = true;
    let mut tables = 0;
    let _ = plan.apply_with_subqueries(|node| {
        clean = match node {
            LogicalPlan::Projection(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::SubqueryAlias(_)
            | LogicalPlan::Union(_) => true,
            LogicalPlan::TableScan(scan) => {
                tables += 1;
                scan.fetch.is_none()
                    && source_as_provider(&scan.source).is_ok_and(|provider| {
                        let provider = provider.as_ref() as &dyn std::any::Any;
                        provider.is::<crate::table::KafkaTable>()
                            || provider.is::<crate::union::LakeKafkaTable>()
                    })
            }
            _ => false,
        };
        Ok(if clean {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    clean && tables > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges() -> Vec<PartitionRange> {
        vec![
            PartitionRange::new(2, 100, 100),
            PartitionRange::new(0, 10, 17),
            PartitionRange::new(1, 0, 5),
            PartitionRange::new(3, 40, 41),
        ]
    }

    /// Which slices of `count` read `offset` of `partition`.
    fn readers(count: u32, partition: i32, offset: i64) -> Vec<u32> {
        (0..count)
            .filter(|&i| {
                let cut = Slice::new(i, count).unwrap().cut(&ranges());
                cut.narrow(partition, Some(offset), offset + 1).is_some()
            })
            .collect()
    }

    #[test]
    fn every_offset_and_every_row_below_a_partition_is_in_exactly_one_slice() {
        for count in 1..=15 {
            for range in ranges() {
                // Rows below the first pinned offset (only the lake has them) too.
                for offset in range.start - 3..range.end {
                    assert_eq!(
                        readers(count, range.partition, offset).len(),
                        1,
                        "count {count}, partition {}, offset {offset}",
                        range.partition
                    );
                }
            }
        }
    }

    #[test]
    fn nothing_at_or_past_a_partitions_end_and_no_unknown_partition_is_read() {
        for count in 1..=15 {
            for range in ranges() {
                assert!(readers(count, range.partition, range.end).is_empty());
            }
            assert!(readers(count, 9, 0).is_empty());
        }
    }

    #[test]
    fn shares_are_even_in_offsets() {
        let ranges = vec![
            PartitionRange::new(0, 0, 1000),
            PartitionRange::new(1, 0, 10),
            PartitionRange::new(2, 500, 2500),
        ];
        let total: i64 = 3010;
        for count in 2..=7u32 {
            for i in 0..count {
                let cut = Slice::new(i, count).unwrap().cut(&ranges);
                let read: i64 = ranges
                    .iter()
                    .filter_map(|r| cut.narrow_range(r))
                    .map(|r| r.end - r.start)
                    .sum();
                let even = total / i64::from(count);
                assert!((read - even).abs() <= 1, "{i}/{count} reads {read}");
            }
        }
    }

    #[test]
    fn a_slice_reads_and_writes_as_i_of_n() {
        let slice: Slice = "2/5".parse().unwrap();
        assert_eq!((slice.index(), slice.count()), (2, 5));
        assert_eq!(slice.to_string(), "2/5");
        for bad in ["5/5", "1/0", "x/2", "3", "-1/2"] {
            assert!(bad.parse::<Slice>().is_err(), "{bad}");
        }
    }
}

//! Planning a scan: which offsets of which partitions a query needs.
//!
//! [`predicate`] reads the filters on `_partition`, `_offset` and `_timestamp`
//! into a tree, [`interval`] is the set arithmetic it evaluates to, and
//! [`ranges`] turns it, with a snapshot's watermarks and offsets-for-times
//! answers, into the [`crate::offsets::PartitionRange`]s a scan reads.

pub mod interval;
pub mod predicate;
pub mod ranges;

pub use interval::IntervalSet;
pub use predicate::{RangePredicate, TimestampOrder};
pub use ranges::{candidate_partitions, plan_ranges};

//! Planning a scan: which offsets of which partitions a query needs.
//!
//! [`predicate`] reads the filters on `_partition`, `_offset` and `_timestamp`
//! into a tree, [`interval`] is the set arithmetic it evaluates to, and
//! [`ranges`] turns it, with a snapshot's watermarks and offsets-for-times
//! answers, into the [`crate::offsets::PartitionRange`]s a scan reads.
//! [`last_records`] lets `ORDER BY _offset DESC LIMIT n` read only the tail.

pub mod interval;
pub mod last_records;
pub mod predicate;
pub mod ranges;

pub use interval::IntervalSet;
pub use last_records::LastRecordsRule;
pub use predicate::{RangePredicate, TimestampOrder};
pub use ranges::{candidate_partitions, plan_ranges};

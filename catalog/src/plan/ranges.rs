//! From a predicate and a snapshot to the offset ranges a scan reads.

use super::interval::IntervalSet;
use super::predicate::{RangePredicate, TimestampOrder};
use crate::offsets::PartitionRange;

/// The partitions of `snapshot` (each a full `[log start, end)` range) that
/// `predicate` may select records of, judged without timestamp lookups: the
/// only partitions worth asking offsets-for-times about.
pub fn candidate_partitions(
    predicate: &RangePredicate,
    snapshot: &[PartitionRange],
) -> Vec<PartitionRange> {
    snapshot
        .iter()
        .filter(|full| {
            let (over, _) = predicate.bounds(full.partition, None, TimestampOrder::Unordered);
            !over
                .intersect(&IntervalSet::range(full.start, full.end))
                .is_empty()
        })
        .copied()
        .collect()
}

/// The ranges to read: for each partition, the offsets `predicate` may
/// select within its snapshot range, as one range per interval (empty
/// partitions contribute none).
///
/// `first_at_or_after(partition, t)` answers offsets-for-times (the first
/// offset whose timestamp is at least `t`, or `i64::MAX` if none).
pub fn plan_ranges(
    predicate: &RangePredicate,
    snapshot: &[PartitionRange],
    first_at_or_after: &dyn Fn(i32, i64) -> i64,
    order: TimestampOrder,
) -> Vec<PartitionRange> {
    let mut out = Vec::new();
    for full in snapshot {
        let lookup = |t: i64| first_at_or_after(full.partition, t);
        let (over, _) = predicate.bounds(full.partition, Some(&lookup), order);
        let wanted = over.intersect(&IntervalSet::range(full.start, full.end));
        out.extend(
            wanted
                .intervals()
                .iter()
                .map(|&(start, end)| PartitionRange::new(full.partition, start, end)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::columns::{OFFSET, PARTITION, TIMESTAMP};
    use datafusion::common::ScalarValue;
    use datafusion::prelude::{col, lit};

    #[test]
    fn ranges_stay_inside_the_snapshot() {
        let snapshot = [
            PartitionRange::new(0, 10, 20),
            PartitionRange::new(1, 0, 5),
            PartitionRange::new(2, 7, 7),
        ];
        let expr = col(OFFSET)
            .lt(lit(12i64))
            .or(col(OFFSET).between(lit(15i64), lit(100i64)))
            .and(col(PARTITION).not_eq(lit(1)));
        let predicate = RangePredicate::from_expr(&expr);
        let candidates = candidate_partitions(&predicate, &snapshot);
        assert_eq!(candidates, vec![PartitionRange::new(0, 10, 20)]);
        let none = |_: i32, _: i64| -> i64 { unreachable!("no time bound") };
        assert_eq!(
            plan_ranges(&predicate, &candidates, &none, TimestampOrder::Unordered),
            vec![
                PartitionRange::new(0, 10, 12),
                PartitionRange::new(0, 15, 20)
            ]
        );
        // Wholly outside the log: nothing to read, no error.
        let outside = RangePredicate::from_expr(&col(OFFSET).gt(lit(1_000i64)));
        assert!(candidate_partitions(&outside, &snapshot).is_empty());
    }

    #[test]
    fn a_start_time_narrows_each_partition_by_its_own_answer() {
        let snapshot = [
            PartitionRange::new(0, 0, 100),
            PartitionRange::new(1, 50, 60),
        ];
        let t = lit(ScalarValue::TimestampMillisecond(Some(1_000), None));
        let predicate = RangePredicate::from_expr(&col(TIMESTAMP).gt_eq(t));
        let lookup = |partition: i32, _t: i64| if partition == 0 { 40 } else { i64::MAX };
        assert_eq!(
            plan_ranges(&predicate, &snapshot, &lookup, TimestampOrder::Unordered),
            vec![PartitionRange::new(0, 40, 100)]
        );
    }
}

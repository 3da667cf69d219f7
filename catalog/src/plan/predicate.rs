//! Filters on the metadata columns as a tree the scan can bound.
//!
//! [`RangePredicate::from_expr`] keeps what a filter says about `_partition`,
//! `_offset` and `_timestamp` and replaces everything else by
//! [`RangePredicate::Unknown`]. [`RangePredicate::bounds`] then turns the tree
//! into offsets for one partition, as two sets:
//!
//! * `over`: every record for which the filter may be true. The scan reads
//!   exactly these, so nothing the filter keeps is ever left out.
//! * `under`: records for which the filter is certainly not false (true, or
//!   null). Only `NOT` needs it: `NOT e` may be true only outside `under(e)`.
//!
//! Both follow SQL's three-valued logic, so `NOT`, `AND` and `OR` compose
//! soundly however deeply they nest.

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};

use super::interval::IntervalSet;
use crate::columns::{OFFSET, PARTITION, TIMESTAMP};

/// What a filter says about the metadata columns.
#[derive(Debug, Clone, PartialEq)]
pub enum RangePredicate {
    /// True for every record.
    True,
    /// False for every record (`false`).
    False,
    /// NULL for every record (a comparison with NULL): never true, and
    /// `NOT` of it is never true either.
    Null,
    /// Not about the metadata columns, or not in a form the scan can bound:
    /// any record may match.
    Unknown,
    /// `_partition` is in the set.
    Partitions(IntervalSet),
    /// `_offset` is in the set.
    Offsets(IntervalSet),
    /// `_timestamp >= t` (milliseconds since the epoch).
    TimestampAtLeast(i64),
    /// `_timestamp < t` (milliseconds since the epoch).
    TimestampBelow(i64),
    /// All hold.
    And(Vec<RangePredicate>),
    /// One holds.
    Or(Vec<RangePredicate>),
    /// Does not hold.
    Not(Box<RangePredicate>),
}

/// How a partition's timestamps relate to its offsets, which decides how far
/// an upper time bound (`_timestamp < t`) narrows a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampOrder {
    /// Never decreasing in offset order (LogAppendTime topics).
    Ordered,
    /// A record's timestamp is never more than this many milliseconds earlier
    /// than that of a record before it (the `timestamp_skew` table option).
    Skewed(i64),
    /// No promise (CreateTime): any record may carry any timestamp.
    Unordered,
}

impl RangePredicate {
    /// The conjunction of `filters`, as DataFusion passes them to a scan.
    pub fn from_filters(filters: &[Expr]) -> Self {
        Self::And(filters.iter().map(Self::from_expr).collect())
    }

    /// What `expr` says about the metadata columns.
    pub fn from_expr(expr: &Expr) -> Self {
        match expr {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
                Operator::And => Self::And(vec![Self::from_expr(left), Self::from_expr(right)]),
                Operator::Or => Self::Or(vec![Self::from_expr(left), Self::from_expr(right)]),
                _ => comparison(left, *op, right).unwrap_or(Self::Unknown),
            },
            Expr::Not(inner) => Self::Not(Box::new(Self::from_expr(inner))),
            Expr::Between(Between {
                expr,
                negated,
                low,
                high,
            }) => {
                let both = Self::And(vec![
                    comparison(expr, Operator::GtEq, low).unwrap_or(Self::Unknown),
                    comparison(expr, Operator::LtEq, high).unwrap_or(Self::Unknown),
                ]);
                negate_if(*negated, both)
            }
            Expr::InList(list) => {
                let any = Self::Or(
                    list.list
                        .iter()
                        .map(|item| {
                            comparison(&list.expr, Operator::Eq, item).unwrap_or(Self::Unknown)
                        })
                        .collect(),
                );
                negate_if(list.negated, any)
            }
            Expr::Literal(ScalarValue::Boolean(Some(true)), _) => Self::True,
            Expr::Literal(ScalarValue::Boolean(Some(false)), _) => Self::False,
            Expr::Literal(ScalarValue::Boolean(None), _) => Self::Null,
            _ => Self::Unknown,
        }
    }

    /// Whether the scan can apply this filter exactly by offsets alone, with
    /// no timestamp lookups: then DataFusion need not filter again.
    pub fn is_exact(&self) -> bool {
        match self {
            Self::True | Self::False | Self::Null | Self::Partitions(_) | Self::Offsets(_) => true,
            Self::Unknown | Self::TimestampAtLeast(_) | Self::TimestampBelow(_) => false,
            Self::And(parts) | Self::Or(parts) => parts.iter().all(Self::is_exact),
            Self::Not(inner) => inner.is_exact(),
        }
    }

    /// The timestamps whose offsets [`Self::bounds`] will ask for.
    pub fn timestamps(&self, order: TimestampOrder, out: &mut Vec<i64>) {
        match self {
            Self::TimestampAtLeast(t) => out.push(*t),
            Self::TimestampBelow(t) => {
                out.push(*t);
                if let TimestampOrder::Skewed(skew) = order {
                    out.push(t.saturating_add(skew));
                }
            }
            Self::And(parts) | Self::Or(parts) => {
                parts.iter().for_each(|p| p.timestamps(order, out));
            }
            Self::Not(inner) => inner.timestamps(order, out),
            _ => {}
        }
    }

    /// Whether the filter bounds `_timestamp` at all.
    pub fn has_timestamps(&self) -> bool {
        let mut out = Vec::new();
        self.timestamps(TimestampOrder::Unordered, &mut out);
        !out.is_empty()
    }

    /// `(over, under)` partitions, as [`Self::bounds`] is for offsets: the
    /// partitions the filter may select records of, and those all of whose
    /// records it certainly does not reject. Only `_partition` bounds them.
    pub fn partitions(&self) -> (IntervalSet, IntervalSet) {
        let everything = || (IntervalSet::all(), IntervalSet::all());
        let nothing = || (IntervalSet::empty(), IntervalSet::empty());
        match self {
            Self::True => everything(),
            Self::False => nothing(),
            Self::Null => (IntervalSet::empty(), IntervalSet::all()),
            Self::Unknown
            | Self::Offsets(_)
            | Self::TimestampAtLeast(_)
            | Self::TimestampBelow(_) => (IntervalSet::all(), IntervalSet::empty()),
            Self::Partitions(set) => (set.clone(), set.clone()),
            Self::And(parts) => parts.iter().fold(everything(), |(over, under), p| {
                let (o, u) = p.partitions();
                (over.intersect(&o), under.intersect(&u))
            }),
            Self::Or(parts) => parts.iter().fold(nothing(), |(over, under), p| {
                let (o, u) = p.partitions();
                (over.union(&o), under.union(&u))
            }),
            Self::Not(inner) => {
                let (over, under) = inner.partitions();
                (under.complement(), over.complement())
            }
        }
    }

    /// `(over, under)` offsets of `partition` (see the module docs).
    ///
    /// `first_at_or_after(t)` is the partition's first offset whose timestamp
    /// is at least `t` (offsets-for-times), or [`super::interval::UNBOUNDED`]
    /// if no record has one; `None` bounds timestamps without asking (every
    /// record may match a time bound), for pruning before any lookup.
    pub fn bounds(
        &self,
        partition: i32,
        first_at_or_after: Option<&dyn Fn(i64) -> i64>,
        order: TimestampOrder,
    ) -> (IntervalSet, IntervalSet) {
        let everything = || (IntervalSet::all(), IntervalSet::all());
        let nothing = || (IntervalSet::empty(), IntervalSet::empty());
        match self {
            Self::True => everything(),
            Self::False => nothing(),
            Self::Null => (IntervalSet::empty(), IntervalSet::all()),
            Self::Unknown => (IntervalSet::all(), IntervalSet::empty()),
            Self::Partitions(set) if set.contains(i64::from(partition)) => everything(),
            Self::Partitions(_) => nothing(),
            Self::Offsets(set) => (set.clone(), set.clone()),
            Self::TimestampAtLeast(t) => {
                let Some(lookup) = first_at_or_after else {
                    return (IntervalSet::all(), IntervalSet::empty());
                };
                // Every record before the first one at or after `t` is
                // earlier than `t`: exact on any topic.
                let from = IntervalSet::at_least(lookup(*t));
                let under = match order {
                    TimestampOrder::Ordered => from.clone(),
                    _ => IntervalSet::empty(),
                };
                (from, under)
            }
            Self::TimestampBelow(t) => {
                let Some(lookup) = first_at_or_after else {
                    return (IntervalSet::all(), IntervalSet::empty());
                };
                let certain = IntervalSet::below(lookup(*t));
                let possible = match order {
                    TimestampOrder::Ordered => certain.clone(),
                    TimestampOrder::Skewed(skew) => {
                        IntervalSet::below(lookup(t.saturating_add(skew)))
                    }
                    TimestampOrder::Unordered => IntervalSet::all(),
                };
                (possible, certain)
            }
            Self::And(parts) => parts.iter().fold(everything(), |(over, under), p| {
                let (o, u) = p.bounds(partition, first_at_or_after, order);
                (over.intersect(&o), under.intersect(&u))
            }),
            Self::Or(parts) => parts.iter().fold(nothing(), |(over, under), p| {
                let (o, u) = p.bounds(partition, first_at_or_after, order);
                (over.union(&o), under.union(&u))
            }),
            Self::Not(inner) => {
                let (over, under) = inner.bounds(partition, first_at_or_after, order);
                (under.complement(), over.complement())
            }
        }
    }
}

fn negate_if(negated: bool, predicate: RangePredicate) -> RangePredicate {
    if negated {
        RangePredicate::Not(Box::new(predicate))
    } else {
        predicate
    }
}

/// The metadata columns a comparison can bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetaColumn {
    Partition,
    Offset,
    Timestamp,
}

/// `column <op> literal` (either way round) on a metadata column.
fn comparison(left: &Expr, op: Operator, right: &Expr) -> Option<RangePredicate> {
    let (column, op, literal) = match (meta_column(left), meta_column(right)) {
        (Some(column), None) => (column, op, right),
        (None, Some(column)) => (column, op.swap()?, left),
        _ => return None,
    };
    let Expr::Literal(value, _) = literal else {
        return None;
    };
    if value.is_null() {
        // A comparison with NULL is NULL; any other operator (IS DISTINCT
        // FROM…) is not bounded here.
        return matches!(
            op,
            Operator::Eq
                | Operator::NotEq
                | Operator::Lt
                | Operator::LtEq
                | Operator::Gt
                | Operator::GtEq
        )
        .then_some(RangePredicate::Null);
    }
    let bound = match column {
        MetaColumn::Partition | MetaColumn::Offset => Bound::of(op, number(value)?)?,
        // Milliseconds: the column's unit.
        MetaColumn::Timestamp => Bound::of(op, Number::Ratio(nanoseconds(value)?, 1_000_000))?,
    };
    Some(match column {
        MetaColumn::Partition => RangePredicate::Partitions(bound.set()),
        MetaColumn::Offset => RangePredicate::Offsets(bound.set()),
        MetaColumn::Timestamp => bound.timestamps(),
    })
}

/// The metadata column `expr` reads, seen through casts that keep every
/// value distinct and in order (widening integers, finer time units).
fn meta_column(expr: &Expr) -> Option<MetaColumn> {
    match expr {
        Expr::Column(c) => match c.name.as_str() {
            PARTITION => Some(MetaColumn::Partition),
            OFFSET => Some(MetaColumn::Offset),
            TIMESTAMP => Some(MetaColumn::Timestamp),
            _ => None,
        },
        Expr::Cast(cast) => through_cast(&cast.expr, cast.field.data_type()),
        Expr::TryCast(cast) => through_cast(&cast.expr, cast.field.data_type()),
        _ => None,
    }
}

fn through_cast(inner: &Expr, to: &DataType) -> Option<MetaColumn> {
    let column = meta_column(inner)?;
    let keeps_values = match column {
        // A decimal keeps every value only with enough integer digits.
        MetaColumn::Partition => match to {
            DataType::Int32 | DataType::Int64 | DataType::Float64 => true,
            DataType::Decimal128(precision, scale) => {
                i16::from(*precision) - i16::from(*scale) >= 10
            }
            _ => false,
        },
        MetaColumn::Offset => match to {
            DataType::Int64 => true,
            DataType::Decimal128(precision, scale) => {
                i16::from(*precision) - i16::from(*scale) >= 19
            }
            _ => false,
        },
        MetaColumn::Timestamp => matches!(
            to,
            DataType::Timestamp(
                TimeUnit::Millisecond | TimeUnit::Microsecond | TimeUnit::Nanosecond,
                _
            )
        ),
    };
    keeps_values.then_some(column)
}

/// A literal as an exact number.
#[derive(Debug, Clone, Copy)]
enum Number {
    /// An integer.
    Int(i128),
    /// A float (finite).
    Float(f64),
    /// `numerator / denominator` (denominator > 0).
    Ratio(i128, i128),
}

impl Number {
    fn floor(self) -> i128 {
        match self {
            Number::Int(v) => v,
            Number::Float(f) => f.floor().clamp(i128::MIN as f64, i128::MAX as f64) as i128,
            Number::Ratio(n, d) => n.div_euclid(d),
        }
    }

    fn ceil(self) -> i128 {
        match self {
            Number::Int(v) => v,
            Number::Float(f) => f.ceil().clamp(i128::MIN as f64, i128::MAX as f64) as i128,
            Number::Ratio(n, d) => -(-n).div_euclid(d),
        }
    }
}

fn number(value: &ScalarValue) -> Option<Number> {
    let int = |v: Option<i128>| v.map(Number::Int);
    match value {
        ScalarValue::Int8(v) => int(v.map(i128::from)),
        ScalarValue::Int16(v) => int(v.map(i128::from)),
        ScalarValue::Int32(v) => int(v.map(i128::from)),
        ScalarValue::Int64(v) => int(v.map(i128::from)),
        ScalarValue::UInt8(v) => int(v.map(i128::from)),
        ScalarValue::UInt16(v) => int(v.map(i128::from)),
        ScalarValue::UInt32(v) => int(v.map(i128::from)),
        ScalarValue::UInt64(v) => int(v.map(i128::from)),
        ScalarValue::Float32(Some(f)) if f.is_finite() => Some(Number::Float(f64::from(*f))),
        ScalarValue::Float64(Some(f)) if f.is_finite() => Some(Number::Float(*f)),
        ScalarValue::Decimal128(Some(v), _, scale) if (0..=38).contains(scale) => {
            Some(Number::Ratio(*v, 10i128.pow(*scale as u32)))
        }
        _ => None,
    }
}

/// A timestamp literal in nanoseconds since the epoch (any time zone: the
/// stored value is an instant).
fn nanoseconds(value: &ScalarValue) -> Option<i128> {
    let (v, per_unit): (i64, i128) = match value {
        ScalarValue::TimestampSecond(Some(v), _) => (*v, 1_000_000_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => (*v, 1_000_000),
        ScalarValue::TimestampMicrosecond(Some(v), _) => (*v, 1_000),
        ScalarValue::TimestampNanosecond(Some(v), _) => (*v, 1),
        _ => return None,
    };
    Some(i128::from(v) * per_unit)
}

/// A comparison of an integer column with a number, as integer bounds.
#[derive(Debug, Clone, Copy)]
enum Bound {
    /// `column >= v`.
    AtLeast(i128),
    /// `column < v`.
    Below(i128),
    /// `lo <= column < hi`.
    Within(i128, i128),
    /// Not `lo <= column < hi`.
    Outside(i128, i128),
}

impl Bound {
    fn of(op: Operator, x: Number) -> Option<Self> {
        let (ceil, floor) = (x.ceil(), x.floor());
        Some(match op {
            Operator::GtEq => Self::AtLeast(ceil),
            Operator::Gt => Self::AtLeast(floor.saturating_add(1)),
            Operator::Lt => Self::Below(ceil),
            Operator::LtEq => Self::Below(floor.saturating_add(1)),
            // Empty when x is not a whole number (ceil > floor).
            Operator::Eq => Self::Within(ceil, floor.saturating_add(1)),
            Operator::NotEq => Self::Outside(ceil, floor.saturating_add(1)),
            _ => return None,
        })
    }

    fn set(self) -> IntervalSet {
        let clamp = |v: i128| v.clamp(-1, i128::from(i64::MAX)) as i64;
        match self {
            Self::AtLeast(v) => IntervalSet::at_least(clamp(v)),
            Self::Below(v) => IntervalSet::below(clamp(v)),
            Self::Within(lo, hi) => IntervalSet::range(clamp(lo), clamp(hi)),
            Self::Outside(lo, hi) => IntervalSet::range(clamp(lo), clamp(hi)).complement(),
        }
    }

    fn timestamps(self) -> RangePredicate {
        let clamp = |v: i128| v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        let at_least = |v| RangePredicate::TimestampAtLeast(clamp(v));
        let below = |v| RangePredicate::TimestampBelow(clamp(v));
        match self {
            Self::AtLeast(v) => at_least(v),
            Self::Below(v) => below(v),
            Self::Within(lo, hi) => RangePredicate::And(vec![at_least(lo), below(hi)]),
            Self::Outside(lo, hi) => {
                RangePredicate::Not(Box::new(RangePredicate::And(vec![at_least(lo), below(hi)])))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};
    use std::ops::Not;

    fn offsets(expr: Expr) -> IntervalSet {
        let (over, under) =
            RangePredicate::from_expr(&expr).bounds(0, None, TimestampOrder::Unordered);
        assert_eq!(over, under, "offset predicates are exact");
        over
    }

    #[test]
    fn partitions_are_bounded_by_partition_filters_alone() {
        let partitions = |expr: Expr| RangePredicate::from_expr(&expr).partitions().0;
        assert_eq!(
            partitions(col(PARTITION).in_list(vec![lit(0), lit(2)], false)),
            IntervalSet::point(0).union(&IntervalSet::point(2))
        );
        assert_eq!(
            partitions(col(PARTITION).eq(lit(1)).and(col(OFFSET).lt(lit(5i64)))),
            IntervalSet::point(1)
        );
        // An offset filter says nothing about which partitions.
        assert_eq!(
            partitions(col(PARTITION).eq(lit(1)).or(col(OFFSET).lt(lit(5i64)))),
            IntervalSet::all()
        );
        assert_eq!(
            partitions(col(PARTITION).not_eq(lit(1)).not()),
            IntervalSet::point(1)
        );
        // NOT (_partition = 1 AND _offset < 5) may hold on partition 1.
        assert_eq!(
            partitions(
                col(PARTITION)
                    .eq(lit(1))
                    .and(col(OFFSET).lt(lit(5i64)))
                    .not()
            ),
            IntervalSet::all()
        );
    }

    #[test]
    fn offset_comparisons_become_intervals() {
        assert_eq!(
            offsets(col(OFFSET).gt_eq(lit(5i64))),
            IntervalSet::at_least(5)
        );
        assert_eq!(offsets(col(OFFSET).gt(lit(5i64))), IntervalSet::at_least(6));
        assert_eq!(offsets(lit(5i64).lt(col(OFFSET))), IntervalSet::at_least(6));
        assert_eq!(offsets(col(OFFSET).lt_eq(lit(5i64))), IntervalSet::below(6));
        assert_eq!(offsets(col(OFFSET).eq(lit(5i64))), IntervalSet::point(5));
        assert_eq!(offsets(col(OFFSET).eq(lit(5.5f64))), IntervalSet::empty());
        assert_eq!(offsets(col(OFFSET).lt(lit(5.5f64))), IntervalSet::below(6));
        assert_eq!(offsets(col(OFFSET).lt(lit(-3i64))), IntervalSet::empty());
        assert_eq!(offsets(col(OFFSET).gt(lit(-3i64))), IntervalSet::all());
        assert_eq!(
            offsets(col(OFFSET).not_eq(lit(5i64))),
            IntervalSet::point(5).complement()
        );
        assert_eq!(
            offsets(col(OFFSET).between(lit(3i64), lit(7i64))),
            IntervalSet::range(3, 8)
        );
        assert_eq!(
            offsets(col(OFFSET).in_list(vec![lit(1i64), lit(9i64)], false)),
            IntervalSet::point(1).union(&IntervalSet::point(9))
        );
        assert_eq!(
            offsets(col(OFFSET).in_list(vec![lit(1i64)], true)),
            IntervalSet::point(1).complement()
        );
    }

    #[test]
    fn each_partition_gets_its_own_ranges() {
        let p = |n: i32| col(PARTITION).eq(lit(n));
        let expr = p(0)
            .and(col(OFFSET).gt_eq(lit(100i64)))
            .or(p(1).and(col(OFFSET).lt(lit(50i64))));
        let predicate = RangePredicate::from_expr(&expr);
        assert!(predicate.is_exact());
        let over = |partition| {
            predicate
                .bounds(partition, None, TimestampOrder::Unordered)
                .0
        };
        assert_eq!(over(0), IntervalSet::at_least(100));
        assert_eq!(over(1), IntervalSet::below(50));
        assert_eq!(over(2), IntervalSet::empty());
    }

    #[test]
    fn other_columns_are_unknown_and_not_exact() {
        let predicate = RangePredicate::from_expr(&col("amount").gt(lit(3)));
        assert_eq!(predicate, RangePredicate::Unknown);
        assert!(!predicate.is_exact());
        // NOT of something unknown is still unknown, never "nothing".
        let not = RangePredicate::from_expr(&col("amount").gt(lit(3)).not());
        assert_eq!(
            not.bounds(0, None, TimestampOrder::Unordered).0,
            IntervalSet::all()
        );
    }

    /// Offsets-for-times over a partition whose timestamps are `ts`.
    fn lookup(ts: &[i64]) -> impl Fn(i64) -> i64 + '_ {
        move |t| {
            ts.iter()
                .position(|&x| x >= t)
                .map_or(i64::MAX, |o| o as i64)
        }
    }

    fn ts_lit(ms: i64) -> Expr {
        lit(ScalarValue::TimestampMillisecond(
            Some(ms),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn time_bounds_are_supersets_on_unordered_partitions() {
        // Out of order: offset 2 is earlier than offset 1.
        let ts = [10, 30, 20, 40, 50];
        let check = |expr: Expr, order| {
            let predicate = RangePredicate::from_expr(&expr);
            let l = lookup(&ts);
            let (over, _) = predicate.bounds(0, Some(&l), order);
            // Brute force: which offsets match.
            for (o, &t) in ts.iter().enumerate() {
                let matches = match &predicate {
                    RangePredicate::TimestampAtLeast(x) => t >= *x,
                    RangePredicate::TimestampBelow(x) => t < *x,
                    RangePredicate::Not(inner) => match **inner {
                        RangePredicate::TimestampAtLeast(x) => t < x,
                        _ => unreachable!(),
                    },
                    _ => unreachable!(),
                };
                if matches {
                    assert!(
                        over.contains(o as i64),
                        "{expr} offset {o} missing from {over}"
                    );
                }
            }
            over
        };
        assert_eq!(
            check(col(TIMESTAMP).gt_eq(ts_lit(25)), TimestampOrder::Unordered),
            IntervalSet::at_least(1)
        );
        assert_eq!(
            check(col(TIMESTAMP).lt(ts_lit(25)), TimestampOrder::Unordered),
            IntervalSet::all()
        );
        // Skew 10 holds here (20 is 10 below 30): stop at the first >= 35.
        assert_eq!(
            check(col(TIMESTAMP).lt(ts_lit(25)), TimestampOrder::Skewed(10)),
            IntervalSet::below(3)
        );
        assert_eq!(
            check(
                col(TIMESTAMP).gt_eq(ts_lit(25)).not(),
                TimestampOrder::Unordered
            ),
            IntervalSet::all()
        );
        // Past the newest record: nothing, not an error.
        assert_eq!(
            check(col(TIMESTAMP).gt_eq(ts_lit(99)), TimestampOrder::Unordered),
            IntervalSet::empty()
        );
    }

    #[test]
    fn time_literals_round_towards_the_records_that_match() {
        let ns = |v: i64| lit(ScalarValue::TimestampNanosecond(Some(v), None));
        let p = |e: Expr| RangePredicate::from_expr(&e);
        assert_eq!(
            p(col(TIMESTAMP).gt_eq(ns(1_500_000))),
            RangePredicate::TimestampAtLeast(2)
        );
        assert_eq!(
            p(col(TIMESTAMP).gt(ns(1_500_000))),
            RangePredicate::TimestampAtLeast(2)
        );
        assert_eq!(
            p(col(TIMESTAMP).gt(ns(1_000_000))),
            RangePredicate::TimestampAtLeast(2)
        );
        assert_eq!(
            p(col(TIMESTAMP).lt(ns(1_500_000))),
            RangePredicate::TimestampBelow(2)
        );
        assert_eq!(
            p(col(TIMESTAMP).lt_eq(ns(1_000_000))),
            RangePredicate::TimestampBelow(2)
        );
        assert_eq!(
            p(col(TIMESTAMP).lt_eq(ns(-1_500_000))),
            RangePredicate::TimestampBelow(-1)
        );
        assert!(p(col(TIMESTAMP).gt(ns(1))).has_timestamps());
    }

    #[test]
    fn null_comparisons_are_never_true_even_under_not() {
        let null = || lit(ScalarValue::Int64(None));
        let eq_null = RangePredicate::from_expr(&col(OFFSET).eq(null()));
        assert_eq!(eq_null, RangePredicate::Null);
        assert_eq!(
            eq_null.bounds(0, None, TimestampOrder::Unordered).0,
            IntervalSet::empty()
        );
        // NOT IN with a NULL in the list is never true.
        let not_in = col(OFFSET).in_list(vec![lit(1i64), lit(2i64), null()], true);
        let predicate = RangePredicate::from_expr(&not_in);
        assert!(predicate.is_exact());
        assert_eq!(
            predicate.bounds(0, None, TimestampOrder::Unordered).0,
            IntervalSet::empty()
        );
        // IS DISTINCT FROM NULL is true for every record: not bounded.
        let distinct = Expr::BinaryExpr(BinaryExpr::new(
            Box::new(col(OFFSET)),
            Operator::IsDistinctFrom,
            Box::new(null()),
        ));
        assert_eq!(
            RangePredicate::from_expr(&distinct),
            RangePredicate::Unknown
        );
        // A narrow decimal cast is not value-preserving.
        let narrow = Expr::Cast(datafusion::logical_expr::Cast::new(
            Box::new(col(OFFSET)),
            DataType::Decimal128(3, 0),
        ));
        assert_eq!(
            RangePredicate::from_expr(&narrow.lt(lit(5i64))),
            RangePredicate::Unknown
        );
    }
}

//! Sets of non-negative integers as sorted, disjoint half-open intervals.
//!
//! Offsets and partition ids are both non-negative, so one type serves both.
//! Every operation keeps the canonical form (sorted, disjoint, no two
//! intervals touching), so two sets are equal exactly when they hold the same
//! values, and complements and intersections compose without drift.

use std::fmt;

/// One past the largest value a set can hold: offsets and partition ids are
/// below it.
pub const UNBOUNDED: i64 = i64::MAX;

/// A set of values in `[0, UNBOUNDED)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IntervalSet {
    intervals: Vec<(i64, i64)>,
}

impl IntervalSet {
    /// Every value.
    pub fn all() -> Self {
        Self::range(0, UNBOUNDED)
    }

    /// No value.
    pub fn empty() -> Self {
        Self::default()
    }

    /// `[start, end)`, with `start` clamped to 0; empty if `start >= end`.
    pub fn range(start: i64, end: i64) -> Self {
        let start = start.max(0);
        if start >= end {
            return Self::empty();
        }
        Self {
            intervals: vec![(start, end)],
        }
    }

    /// `{value}`.
    pub fn point(value: i64) -> Self {
        Self::range(value, value.saturating_add(1))
    }

    /// `[value, UNBOUNDED)`.
    pub fn at_least(value: i64) -> Self {
        Self::range(value, UNBOUNDED)
    }

    /// `[0, value)`.
    pub fn below(value: i64) -> Self {
        Self::range(0, value)
    }

    /// Whether the set holds no value.
    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }

    /// Whether `value` is in the set.
    pub fn contains(&self, value: i64) -> bool {
        self.intervals
            .iter()
            .any(|&(start, end)| start <= value && value < end)
    }

    /// The smallest value of the set at or after `from`.
    pub fn first_at_or_after(&self, from: i64) -> Option<i64> {
        self.intervals
            .iter()
            .find(|&&(_, end)| end > from)
            .map(|&(start, _)| start.max(from))
    }

    /// The intervals, sorted and disjoint.
    pub fn intervals(&self) -> &[(i64, i64)] {
        &self.intervals
    }

    /// Values in either set.
    pub fn union(&self, other: &Self) -> Self {
        let mut all: Vec<(i64, i64)> = self
            .intervals
            .iter()
            .chain(&other.intervals)
            .copied()
            .collect();
        all.sort_unstable();
        let mut out: Vec<(i64, i64)> = Vec::with_capacity(all.len());
        for (start, end) in all {
            match out.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => out.push((start, end)),
            }
        }
        Self { intervals: out }
    }

    /// Values in both sets.
    pub fn intersect(&self, other: &Self) -> Self {
        let mut out = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < self.intervals.len() && j < other.intervals.len() {
            let (a, b) = (self.intervals[i], other.intervals[j]);
            let (start, end) = (a.0.max(b.0), a.1.min(b.1));
            if start < end {
                out.push((start, end));
            }
            if a.1 < b.1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        Self { intervals: out }
    }

    /// Values in `[0, UNBOUNDED)` not in the set.
    pub fn complement(&self) -> Self {
        let mut out = Vec::with_capacity(self.intervals.len() + 1);
        let mut next = 0;
        for &(start, end) in &self.intervals {
            if next < start {
                out.push((next, start));
            }
            next = end;
        }
        if next < UNBOUNDED {
            out.push((next, UNBOUNDED));
        }
        Self { intervals: out }
    }
}

impl fmt::Display for IntervalSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{")?;
        for (i, (start, end)) in self.intervals.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            if *end == UNBOUNDED {
                write!(f, "{start}..")?;
            } else {
                write!(f, "{start}..{end}")?;
            }
        }
        write!(f, "}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The set as a bitmap over `0..n`, for comparison with a brute force.
    fn bits(set: &IntervalSet, n: i64) -> Vec<bool> {
        (0..n).map(|v| set.contains(v)).collect()
    }

    #[test]
    fn first_at_or_after_agrees_with_a_brute_force() {
        for mask in 0..256u32 {
            let set = from_mask(mask);
            for from in -1..10 {
                let brute = (from.max(0)..8).find(|&v| set.contains(v));
                assert_eq!(
                    set.first_at_or_after(from),
                    brute,
                    "mask {mask:#b} from {from}"
                );
            }
        }
    }

    /// A small set from a bit mask over `0..8` (values ≥ 8 excluded).
    fn from_mask(mask: u32) -> IntervalSet {
        (0..8)
            .filter(|v| mask & (1 << v) != 0)
            .fold(IntervalSet::empty(), |s, v| s.union(&IntervalSet::point(v)))
    }

    #[test]
    fn operations_match_a_brute_force_on_every_pair_of_small_sets() {
        for a in 0u32..256 {
            for b in (0u32..256).step_by(7) {
                let (sa, sb) = (from_mask(a), from_mask(b));
                let (ba, bb) = (bits(&sa, 10), bits(&sb, 10));
                let union: Vec<bool> = ba.iter().zip(&bb).map(|(x, y)| *x || *y).collect();
                let inter: Vec<bool> = ba.iter().zip(&bb).map(|(x, y)| *x && *y).collect();
                let comp: Vec<bool> = ba.iter().map(|x| !x).collect();
                assert_eq!(bits(&sa.union(&sb), 10), union, "{sa} ∪ {sb}");
                assert_eq!(bits(&sa.intersect(&sb), 10), inter, "{sa} ∩ {sb}");
                assert_eq!(bits(&sa.complement(), 10), comp, "¬{sa}");
                // Canonical form: equal sets compare equal.
                assert_eq!(sa.complement().complement(), sa);
                assert_eq!(sa.union(&sb), sb.union(&sa));
            }
        }
    }

    #[test]
    fn bounds_clamp_and_never_go_negative() {
        assert!(IntervalSet::below(-5).is_empty());
        assert_eq!(IntervalSet::at_least(-5), IntervalSet::all());
        assert!(IntervalSet::range(7, 3).is_empty());
        assert_eq!(
            IntervalSet::point(UNBOUNDED - 1).intervals(),
            &[(UNBOUNDED - 1, UNBOUNDED)]
        );
        assert!(IntervalSet::point(UNBOUNDED).is_empty());
        assert_eq!(IntervalSet::all().complement(), IntervalSet::empty());
        assert_eq!(IntervalSet::at_least(3).to_string(), "{3..}");
    }
}

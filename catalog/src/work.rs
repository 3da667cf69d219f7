//! A plan's known work: the Kafka offsets and lake rows its scans read, and
//! how many of them they have read so far.
//!
//! This is what a progress bar can honestly show before a query ends: the
//! work is known when the plan is made (the snapshot pins each partition's
//! offsets, and the Delta log counts each file's rows), while the rows an
//! aggregate or a join will produce are not.

use std::sync::Arc;

use datafusion::physical_plan::ExecutionPlan;

use crate::lake::last::{file_scan, logged_rows};
use crate::lake::travel::LakeFilesExec;
use crate::scan::KafkaScanExec;

/// Records (Kafka offsets and lake rows) read so far, of those to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    pub done: u64,
    pub total: u64,
}

impl Work {
    /// The share done, from 0 to 1 (0 for no known work).
    pub fn share(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            (self.done as f64 / self.total as f64).clamp(0.0, 1.0)
        }
    }
}

impl std::ops::Add for Work {
    type Output = Work;

    fn add(self, other: Work) -> Work {
        Work {
            done: self.done + other.done,
            total: self.total + other.total,
        }
    }
}

impl std::iter::Sum for Work {
    fn sum<I: Iterator<Item = Work>>(iter: I) -> Work {
        iter.fold(Work::default(), |a, b| a + b)
    }
}

/// The work of `node` itself if it is a scan whose work is known: a Kafka
/// scan (offsets fetched of those it reads), a lake file scan or a lake
/// tier read on another gateway (rows read of those its files hold).
pub fn scan_work(node: &Arc<dyn ExecutionPlan>) -> Option<Work> {
    let (counted_by, total) = known_total(node)?;
    let done = node
        .metrics()
        .and_then(|m| m.sum_by_name(counted_by))
        .map_or(0, |v| v.as_usize() as u64);
    Some(Work {
        done: done.min(total),
        total,
    })
}

/// The metric that counts what `node` has read, and what it reads in all,
/// if it is a scan whose work is known (without reading its metrics).
fn known_total(node: &Arc<dyn ExecutionPlan>) -> Option<(&'static str, u64)> {
    if let Some(scan) = node.downcast_ref::<KafkaScanExec>() {
        return Some((
            "records_fetched",
            u64::try_from(scan.spec().offsets()).unwrap_or(0),
        ));
    }
    if let Some(files) = node.downcast_ref::<LakeFilesExec>() {
        return Some(("output_rows", files.rows()));
    }
    let config = file_scan(node)?;
    let rows = config
        .file_groups
        .iter()
        .flat_map(|g| g.iter())
        .filter_map(logged_rows)
        .sum();
    Some(("output_rows", rows))
}

/// The work of every scan in `plan`.
pub fn work(plan: &Arc<dyn ExecutionPlan>) -> Work {
    scan_work(plan).unwrap_or_else(|| plan.children().into_iter().map(work).sum())
}

/// The scans in `plan` whose work is known, to follow its progress
/// without holding the rest of the plan (a finished join's build side, for
/// one, lives as long as its node).
pub fn scans(plan: &Arc<dyn ExecutionPlan>) -> Vec<Arc<dyn ExecutionPlan>> {
    if known_total(plan).is_some() {
        return vec![Arc::clone(plan)];
    }
    plan.children().into_iter().flat_map(scans).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_is_done_over_total_and_nothing_known_is_nothing_done() {
        assert_eq!(Work { done: 1, total: 4 }.share(), 0.25);
        assert_eq!(Work::default().share(), 0.0);
        let both: Work = [Work { done: 1, total: 2 }, Work { done: 3, total: 6 }]
            .into_iter()
            .sum();
        assert_eq!(both, Work { done: 4, total: 8 });
    }
}

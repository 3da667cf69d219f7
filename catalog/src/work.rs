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
    let metric = |name: &str| {
        node.metrics()
            .and_then(|m| m.sum_by_name(name))
            .map_or(0, |v| v.as_usize() as u64)
    };
    let (counted_by, total) = if let Some(scan) = node.downcast_ref::<KafkaScanExec>() {
        (
            "records_fetched",
            u64::try_from(scan.spec().offsets()).unwrap_or(0),
        )
    } else if let Some(files) = node.downcast_ref::<LakeFilesExec>() {
        ("output_rows", files.rows())
    } else {
        let config = file_scan(node)?;
        let rows = config
            .file_groups
            .iter()
            .flat_map(|g| g.iter())
            .filter_map(logged_rows)
            .sum();
        ("output_rows", rows)
    };
    Some(Work {
        done: metric(counted_by).min(total),
        total,
    })
}

/// The work of every scan in `plan`.
pub fn work(plan: &Arc<dyn ExecutionPlan>) -> Work {
    scans(plan).iter().filter_map(scan_work).sum()
}

/// The scans in `plan` whose work is known, to follow its progress
/// without holding the rest of the plan (a finished join's build side, for
/// one, lives as long as its node).
pub fn scans(plan: &Arc<dyn ExecutionPlan>) -> Vec<Arc<dyn ExecutionPlan>> {
    let mut found = Vec::new();
    let mut stack = vec![Arc::clone(plan)];
    while let Some(node) = stack.pop() {
        if scan_work(&node).is_some() {
            found.push(node);
        } else {
            stack.extend(node.children().into_iter().cloned());
        }
    }
    found
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

//! How much one task of a distributed query reads at least: the size below
//! which sending a share of a scan to another gateway costs more (planning
//! again, sending the stage, the extra hop) than it saves.
//!
//! Kafka offsets and lake rows are weighed apart: on this project's
//! benchmark machine one gateway reads a lake table through Flight at about
//! 14 M rows/s, and Kafka (librdkafka's mock cluster, release build) at
//! 1–2 M records/s, so a lake row is about a tenth of an offset's work. A
//! plan's work is counted in offsets, its lake rows converted.

use std::sync::Arc;

use datafusion::physical_plan::ExecutionPlan;
use kappa_catalog::lake::travel::LakeFilesExec;
use kappa_catalog::scan::KafkaScanExec;

/// Offsets one task reads at least, by default (`--offsets-per-task`).
pub const OFFSETS_PER_TASK: i64 = 200_000;
/// Lake rows one task reads at least, by default (`--lake-rows-per-task`).
pub const LAKE_ROWS_PER_TASK: i64 = 2_000_000;

/// The least one task reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSize {
    offsets: i64,
    lake_rows: i64,
}

impl Default for TaskSize {
    fn default() -> Self {
        Self::new(OFFSETS_PER_TASK, LAKE_ROWS_PER_TASK)
    }
}

impl TaskSize {
    /// A task of at least `offsets` Kafka offsets, or `lake_rows` lake rows.
    pub fn new(offsets: i64, lake_rows: i64) -> Self {
        Self {
            offsets: offsets.max(1),
            lake_rows: lake_rows.max(1),
        }
    }

    /// The tasks `work` (in offsets) fills.
    pub fn tasks(&self, work: i64) -> usize {
        usize::try_from(work / self.offsets).unwrap_or(usize::MAX)
    }

    /// `rows` lake rows as the offsets that are as much work.
    fn lake_rows_as_offsets(&self, rows: u64) -> i64 {
        let offsets = i128::from(rows) * i128::from(self.offsets) / i128::from(self.lake_rows);
        i64::try_from(offsets).unwrap_or(i64::MAX)
    }

    /// The work (in offsets) of the Kafka scans and lake tiers in `plan`.
    pub fn work(&self, plan: &Arc<dyn ExecutionPlan>) -> i64 {
        let own = self.scan_work(plan).map_or(0, |(work, _)| work);
        plan.children()
            .into_iter()
            .fold(own, |sum, child| sum.saturating_add(self.work(child)))
    }

    /// The work (in offsets) of `plan` if it is a scan that travels (a
    /// Kafka scan or a lake tier), and whether it may stop early (a limit,
    /// or only the newest records), which leaves too little to split.
    pub fn scan_work(&self, plan: &Arc<dyn ExecutionPlan>) -> Option<(i64, bool)> {
        if let Some(scan) = plan.downcast_ref::<KafkaScanExec>() {
            let spec = scan.spec();
            return Some((spec.offsets(), spec.last.is_some() || spec.limit.is_some()));
        }
        let files = plan.downcast_ref::<LakeFilesExec>()?;
        Some((
            self.lake_rows_as_offsets(files.rows()),
            files.spec().limit.is_some(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lake_rows_weigh_what_their_share_of_a_task_does() {
        let size = TaskSize::new(200_000, 2_000_000);
        assert_eq!(size.lake_rows_as_offsets(2_000_000), 200_000);
        assert_eq!(size.lake_rows_as_offsets(300_000), 30_000);
        assert_eq!(size.lake_rows_as_offsets(u64::MAX), (u64::MAX / 10) as i64);
        assert_eq!(TaskSize::new(i64::MAX, 1).lake_rows_as_offsets(2), i64::MAX);
        assert_eq!(size.tasks(399_999), 1);
        assert_eq!(size.tasks(400_000), 2);
        // Counted alike, a lake row is an offset.
        let alike = TaskSize::new(2_000, 2_000);
        assert_eq!(alike.lake_rows_as_offsets(18_000), 18_000);
        assert_eq!(TaskSize::new(0, 0), TaskSize::new(1, 1));
    }
}

//! The last `n` records of each partition in the lake, read from the few
//! files that can hold them.
//!
//! `ORDER BY _offset DESC LIMIT n` needs each partition's newest `n`
//! records (see [`crate::plan::last_records`]). In Kafka the scan reads the
//! tail of each range. In the lake the offsets may have gaps (a compacted
//! or transactional topic leaves some out), so no offset can be computed
//! below which the newest `n` lie. The files' statistics in the Delta log
//! say it instead: take a partition's files newest first until they hold
//! `n` rows; every one of the partition's newest `n` records has an offset
//! at or above the least offset of those files, so only files reaching
//! that offset are read. A file holding several partitions, or without
//! statistics, cannot be counted: it is read whenever it may reach a
//! partition's floor.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Int32Type, Int64Type};
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result as DfResult;
use datafusion::physical_plan::ExecutionPlan;
use deltalake::logstore::object_store::path::Path;

use crate::error::Result;
use crate::lake::LakeSnapshot;
use crate::system::lake_files;

/// One data file of a lake table, as its `add` action describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct FileStats {
    /// Relative to the table's location, as in the log.
    pub path: String,
    /// `(min, max)` of `_partition`; `None` without statistics.
    pub partitions: Option<(i32, i32)>,
    /// `(min, max)` of `_offset`; `None` without statistics.
    pub offsets: Option<(i64, i64)>,
    /// `None` without statistics.
    pub rows: Option<i64>,
}

/// The files of `snapshot`'s version, with their statistics.
pub fn file_stats(table: &str, snapshot: &LakeSnapshot) -> Result<Vec<FileStats>> {
    let files = lake_files::read(&[(table.to_string(), snapshot.clone())])?;
    Ok(stats_of(&files))
}

fn stats_of(files: &RecordBatch) -> Vec<FileStats> {
    let column = |name: &str| {
        files
            .column_by_name(name)
            .expect("system.lake_files column")
    };
    let paths = column("path").as_string::<i32>();
    let (min_p, max_p) = (
        column("min_partition").as_primitive::<Int32Type>(),
        column("max_partition").as_primitive::<Int32Type>(),
    );
    let (min_o, max_o) = (
        column("min_offset").as_primitive::<Int64Type>(),
        column("max_offset").as_primitive::<Int64Type>(),
    );
    let rows = column("rows").as_primitive::<Int64Type>();
    (0..files.num_rows())
        .map(|i| FileStats {
            path: paths.value(i).to_string(),
            partitions: (min_p.is_valid(i) && max_p.is_valid(i))
                .then(|| (min_p.value(i), max_p.value(i))),
            offsets: (min_o.is_valid(i) && max_o.is_valid(i))
                .then(|| (min_o.value(i), max_o.value(i))),
            rows: rows.is_valid(i).then(|| rows.value(i)),
        })
        .collect()
}

/// The paths of the files that hold every partition's newest `n` records.
pub fn files_holding_last(files: &[FileStats], n: usize) -> HashSet<String> {
    // Per partition, the files that are wholly its and can be counted:
    // `(max offset, min offset, rows)`.
    let mut own: HashMap<i32, Vec<(i64, i64, i64)>> = HashMap::new();
    for file in files {
        if let (Some((low, high)), Some((min, max)), Some(rows)) =
            (file.partitions, file.offsets, file.rows)
            && low == high
        {
            own.entry(low).or_default().push((max, min, rows));
        }
    }
    // Per partition, the least offset its newest `n` records can have
    // (absent: any, the counted files hold fewer than `n` rows).
    let mut floors: HashMap<i32, i64> = HashMap::new();
    for (partition, mut counted) in own {
        counted.sort_unstable_by(|a, b| b.cmp(a)); // newest first
        let mut rows = 0usize;
        let mut floor = i64::MAX;
        for (_, min, file_rows) in counted {
            rows += usize::try_from(file_rows).unwrap_or(0);
            floor = floor.min(min);
            if rows >= n {
                floors.insert(partition, floor);
                break;
            }
        }
    }
    files
        .iter()
        .filter(|file| {
            let (Some((low, high)), Some((_, max))) = (file.partitions, file.offsets) else {
                return true;
            };
            (low..=high).any(|p| floors.get(&p).is_none_or(|&floor| max >= floor))
        })
        .map(|file| file.path.clone())
        .collect()
}

/// A lake scan narrowed to some of its files.
#[derive(Debug)]
pub struct Narrowed {
    pub plan: Arc<dyn ExecutionPlan>,
    /// Files it reads.
    pub kept: usize,
    /// Files it was planned with.
    pub planned: usize,
}

/// `plan` (a lake scan) reading only the files named in `keep` (paths
/// relative to the table). `None` when the plan has no file scan to narrow.
pub fn keep_files(
    plan: &Arc<dyn ExecutionPlan>,
    keep: &HashSet<String>,
) -> DfResult<Option<Narrowed>> {
    let keep: Vec<Path> = keep
        .iter()
        .filter_map(|relative| Path::from_url_path(relative).ok())
        .collect();
    let (mut kept, mut total, mut found) = (0, 0, false);
    let narrowed = Arc::clone(plan).transform_down(|node| {
        let Some(config) = file_scan(&node) else {
            return Ok(Transformed::no(node));
        };
        found = true;
        let groups: Vec<FileGroup> = config
            .file_groups
            .iter()
            .map(|group| {
                total += group.len();
                let files: Vec<_> = group
                    .iter()
                    .filter(|file| {
                        let location = file.object_meta.location.as_ref();
                        keep.iter().any(|path| {
                            location
                                .strip_suffix(path.as_ref())
                                .is_some_and(|rest| rest.is_empty() || rest.ends_with('/'))
                        })
                    })
                    .cloned()
                    .collect();
                kept += files.len();
                FileGroup::new(files)
            })
            .collect();
        Ok(Transformed::yes(with_file_groups(config, groups)))
    })?;
    Ok(found.then_some(Narrowed {
        plan: narrowed.data,
        kept,
        planned: total,
    }))
}

/// The file scan `node` is, if it is one (the Parquet reader under a Delta
/// scan).
pub fn file_scan(node: &Arc<dyn ExecutionPlan>) -> Option<&FileScanConfig> {
    node.downcast_ref::<DataSourceExec>()
        .and_then(|source| source.data_source().downcast_ref::<FileScanConfig>())
}

/// The rows of `file` the Delta log counted, if it did.
pub fn logged_rows(file: &PartitionedFile) -> Option<u64> {
    match file.statistics.as_ref().map(|s| s.num_rows) {
        Some(Precision::Exact(n) | Precision::Inexact(n)) => u64::try_from(n).ok(),
        _ => None,
    }
}

/// The file scan of `config` reading `groups` instead.
pub(crate) fn with_file_groups(
    config: &FileScanConfig,
    groups: Vec<FileGroup>,
) -> Arc<dyn ExecutionPlan> {
    let config = FileScanConfigBuilder::from(config.clone())
        .with_file_groups(groups)
        .build();
    DataSourceExec::from_data_source(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, partition: i32, offsets: (i64, i64), rows: i64) -> FileStats {
        FileStats {
            path: path.into(),
            partitions: Some((partition, partition)),
            offsets: Some(offsets),
            rows: Some(rows),
        }
    }

    fn chosen(files: &[FileStats], n: usize) -> Vec<String> {
        let mut out: Vec<String> = files_holding_last(files, n).into_iter().collect();
        out.sort();
        out
    }

    #[test]
    fn the_newest_files_of_each_partition_until_they_hold_n_rows() {
        let files = [
            file("a0", 0, (0, 99), 100),
            file("b0", 0, (100, 199), 100),
            file("c0", 0, (200, 299), 100),
            file("a1", 1, (0, 99), 100),
            file("b1", 1, (100, 109), 3), // a compacted range: 3 rows in 10 offsets
        ];
        assert_eq!(chosen(&files, 5), ["a1", "b1", "c0"]);
        assert_eq!(chosen(&files, 100), ["a1", "b1", "c0"]);
        assert_eq!(chosen(&files, 101), ["a1", "b0", "b1", "c0"]);
        assert_eq!(chosen(&files, 1000), ["a0", "a1", "b0", "b1", "c0"]);
    }

    #[test]
    fn files_that_overlap_the_floor_or_cannot_be_counted_are_read() {
        let files = [
            file("old", 0, (0, 99), 100),
            file("new", 0, (100, 199), 100),
            // OPTIMIZE may leave a file whose range reaches into the newest.
            file("wide", 0, (50, 150), 20),
            FileStats {
                path: "mixed".into(),
                partitions: Some((0, 1)),
                offsets: Some((0, 10)),
                rows: Some(5),
            },
            FileStats {
                path: "no-stats".into(),
                partitions: None,
                offsets: None,
                rows: None,
            },
        ];
        assert_eq!(chosen(&files, 10), ["mixed", "new", "no-stats", "wide"]);
    }
}

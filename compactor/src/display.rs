//! What an operator sees while the compactor works: a progress bar when
//! stderr is a terminal, a log line every `--progress-every` otherwise (a
//! CronJob's log), and a summary at the end.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use kappa_compactor::{LatestMetrics, ProgressSnapshot, TierMetrics, TierProgress};
use tokio::task::JoinHandle;

/// Shows a run's progress until dropped.
#[derive(Debug)]
pub struct ProgressDisplay {
    task: JoinHandle<()>,
    bar: Option<ProgressBar>,
}

impl ProgressDisplay {
    /// Starts showing `progress`: a bar on a terminal, else a log line
    /// every `every` while records are being read.
    pub fn start(progress: Arc<TierProgress>, every: Duration) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(0).with_style(
                ProgressStyle::with_template(
                    "{msg:20} [{bar:30}] {pos}/{len} offsets ({per_sec}, {eta} left)",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            let shown = bar.clone();
            let task = tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tick.tick().await;
                    let now = progress.snapshot();
                    shown.set_length(now.backlog);
                    shown.set_position(now.offsets);
                    shown.set_message(format!("{} {}", now.table, HumanBytes(now.bytes)));
                }
            });
            Self {
                task,
                bar: Some(bar),
            }
        } else {
            let task = tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                let mut last = (ProgressSnapshot::default(), Instant::now());
                loop {
                    tick.tick().await;
                    let now = progress.snapshot();
                    if now.offsets != last.0.offsets || now.table != last.0.table {
                        log_progress(&now, &last);
                    }
                    last = (now, Instant::now());
                }
            });
            Self { task, bar: None }
        }
    }
}

impl Drop for ProgressDisplay {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn log_progress(now: &ProgressSnapshot, (before, at): &(ProgressSnapshot, Instant)) {
    let same_table = now.table == before.table;
    let read = now.records - if same_table { before.records } else { 0 };
    let seconds = at.elapsed().as_secs_f64().max(1e-3);
    tracing::info!(
        table = %now.table,
        records = now.records,
        offsets = now.offsets,
        backlog = now.backlog,
        bytes = now.bytes,
        records_per_second = (read as f64 / seconds) as u64,
        "tiering"
    );
}

/// One table's line in the summary.
pub fn table_line(name: &str, metrics: &TierMetrics) -> String {
    format!(
        "{name}: {} records in {} commits, {} files, {}, version {}, watermarks {}{}",
        metrics.records,
        metrics.commits,
        metrics.files,
        HumanBytes(metrics.bytes),
        metrics.version.map_or("none".into(), |v| v.to_string()),
        watermarks(metrics),
        if metrics.stopped {
            " (stopped early: the rest is left for the next run)"
        } else {
            ""
        }
    )
}

/// What a run did to a changelog table's latest rows.
pub fn latest_line(name: &str, metrics: &LatestMetrics) -> String {
    format!(
        "{name}: latest rows: {} offsets read, {} rows merged in {} commits ({} new, {} updated), version {}, covering {}",
        metrics.offsets,
        metrics.merged,
        metrics.commits,
        metrics.inserted,
        metrics.updated,
        metrics.version.map_or("none".into(), |v| v.to_string()),
        pairs(&metrics.watermarks)
    )
}

/// `partition:watermark` pairs, space-separated.
pub fn watermarks(metrics: &TierMetrics) -> String {
    pairs(&metrics.watermarks)
}

/// `partition:offset` pairs, space-separated.
fn pairs(offsets: &BTreeMap<i32, i64>) -> String {
    offsets
        .iter()
        .map(|(p, w)| format!("{p}:{w}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The totals of a pass over several tables.
#[derive(Debug, Default)]
pub struct PassSummary {
    /// Tables tiered.
    pub tables: usize,
    /// Tables that failed.
    pub failed: usize,
    /// Partitions whose watermarks the tables carry.
    pub partitions: usize,
    /// Records written.
    pub records: u64,
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
}

impl PassSummary {
    /// Adds a table that was tiered.
    pub fn add(&mut self, metrics: &TierMetrics) {
        self.tables += 1;
        self.partitions += metrics.watermarks.len();
        self.records += metrics.records;
        self.files += metrics.files;
        self.bytes += metrics.bytes;
    }

    /// The closing line.
    pub fn line(&self, took: Duration) -> String {
        format!(
            "tiered {} tables ({} partitions), {} failed: {} records, {} files, {} in {:.1?}",
            self.tables,
            self.partitions,
            self.failed,
            self.records,
            self.files,
            HumanBytes(self.bytes),
            took
        )
    }
}

/// The columns `table` is tiered with, one line each (`name  type`), names
/// padded to one width: the table's schema as the lake stores it.
pub fn schema_lines(table: &kappa_catalog::DeclaredTable) -> Vec<String> {
    let schema = kappa_catalog::lake::layout::lake_schema(&kappa_catalog::columns::table_schema(
        &table.format,
        &table.value_schema,
    ));
    let width = schema
        .fields()
        .iter()
        .map(|f| f.name().chars().count())
        .max()
        .unwrap_or(0);
    schema
        .fields()
        .iter()
        .map(|f| {
            let null = if f.is_nullable() { "" } else { " NOT NULL" };
            format!("{:width$}  {}{null}", f.name(), f.data_type())
        })
        .collect()
}

//! Table maintenance: OPTIMIZE (small files into target-size files) and
//! VACUUM (delete files no version within the retention reads, and files a
//! crashed run wrote but never committed). Each runs under the table's
//! [`Lease`], one job per table at a time.
//!
//! Neither touches the watermarks: they are application transactions in the
//! Delta log, which every later version keeps whatever files it rewrites.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU64;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deltalake::logstore::object_store::ObjectStoreExt;
use deltalake::logstore::object_store::path::Path;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::{DeltaTable, DeltaTableBuilder};
use futures::TryStreamExt;
use url::Url;

use crate::error::{CompactorError, Result};
use crate::lease::Lease;
use kappa_catalog::lake::layout::writer_properties;

/// How long a maintenance lease lasts unless renewed (it is renewed every
/// third of this while the job runs).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(600);

/// What OPTIMIZE did to one table.
#[derive(Debug, Clone, Default)]
pub struct OptimizeMetrics {
    /// Small files rewritten.
    pub files_removed: u64,
    /// Files written in their place.
    pub files_added: u64,
    /// The table's version after the run.
    pub version: Option<u64>,
}

/// What VACUUM did to one table.
#[derive(Debug, Clone, Default)]
pub struct VacuumMetrics {
    /// Files deleted (or, in a dry run, that would be).
    pub files: Vec<String>,
    /// Nothing was deleted.
    pub dry_run: bool,
    /// Files the retention keeps for now: removed from the table, or
    /// written by no commit, less than the retention ago.
    pub kept: usize,
    /// When the first and the last of those become deletable (the
    /// retention after each was removed, or written).
    pub kept_until: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// Where a table is and how to reach its store: what both jobs share.
#[derive(Debug, Clone)]
pub struct TableLocation {
    /// The table's name (for errors and the lease).
    pub name: String,
    /// Its Delta table's URL.
    pub url: Url,
    /// Object-store options.
    pub storage_options: HashMap<String, String>,
}

impl TableLocation {
    /// The Delta table at its latest version; [`CompactorError::NotTiered`]
    /// when it was never created.
    async fn open(&self) -> Result<DeltaTable> {
        let not_tiered = || CompactorError::NotTiered {
            table: self.name.clone(),
            location: self.url.to_string(),
        };
        if !self.exists().await? {
            return Err(not_tiered());
        }
        let table = DeltaTable::try_from_url_with_storage_options(
            self.url.clone(),
            self.storage_options.clone(),
        )
        .await?;
        if table.version().is_none() {
            return Err(not_tiered());
        }
        Ok(table)
    }

    /// Whether a Delta table is there: not a local folder that is missing
    /// (deltalake refuses to open it with a less helpful message), nor a
    /// location with no Delta log.
    pub async fn exists(&self) -> Result<bool> {
        let missing_folder =
            self.url.scheme() == "file" && self.url.to_file_path().is_ok_and(|path| !path.exists());
        Ok(!missing_folder
            && DeltaTableBuilder::from_url(self.url.clone())?
                .with_storage_options(self.storage_options.clone())
                .build()?
                .log_store()
                .is_delta_table_location()
                .await?)
    }

    async fn lease(&self, table: &DeltaTable, job: &str, ttl: Duration) -> Result<Lease> {
        Lease::acquire(table.object_store(), &self.name, job, ttl).await
    }
}

/// Rewrites a table's small files into files of the target size:
/// `OptimizeTable::new(location).with_target_file_size(..).run().await`.
#[derive(Debug)]
pub struct OptimizeTable {
    location: TableLocation,
    target_file_size: u64,
    lease_ttl: Duration,
}

impl OptimizeTable {
    /// OPTIMIZE for the table at `location`, 128 MiB files.
    pub fn new(location: TableLocation) -> Self {
        Self {
            location,
            target_file_size: 128 * 1024 * 1024,
            lease_ttl: DEFAULT_LEASE_TTL,
        }
    }

    /// Target size of the files written.
    pub fn with_target_file_size(mut self, bytes: u64) -> Self {
        self.target_file_size = bytes;
        self
    }

    /// How long the lease lasts unless renewed.
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Takes the lease, compacts, releases it.
    pub async fn run(self) -> Result<OptimizeMetrics> {
        let table = self.location.open().await?;
        let lease = self
            .location
            .lease(&table, "optimize", self.lease_ttl)
            .await?;
        lease
            .hold(async {
                // Reload under the lease: a job that held it before may have
                // committed since we first opened the table.
                let table = self.location.open().await?;
                let (table, metrics) = table
                    .optimize()
                    .with_target_size(
                        NonZeroU64::new(self.target_file_size).unwrap_or(NonZeroU64::MIN),
                    )
                    .with_writer_properties(writer_properties())
                    .await?;
                Ok(OptimizeMetrics {
                    files_removed: metrics.num_files_removed,
                    files_added: metrics.num_files_added,
                    version: table.version(),
                })
            })
            .await
    }
}

/// Deletes files the table no longer needs:
/// `VacuumTable::new(location).with_retention(..).run().await`.
#[derive(Debug)]
pub struct VacuumTable {
    location: TableLocation,
    retention: Duration,
    dry_run: bool,
    lease_ttl: Duration,
}

impl VacuumTable {
    /// VACUUM for the table at `location`, keeping 7 days.
    pub fn new(location: TableLocation) -> Self {
        Self {
            location,
            retention: Duration::from_secs(7 * 24 * 3600),
            dry_run: false,
            lease_ttl: DEFAULT_LEASE_TTL,
        }
    }

    /// Keep files removed less than this long ago (a reader of an older
    /// version, or a gateway's cached snapshot, may still read them) and
    /// uncommitted files younger than this (a running compactor's).
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// List what would be deleted, delete nothing.
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// How long the lease lasts unless renewed.
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Takes the lease, vacuums, releases it.
    pub async fn run(self) -> Result<VacuumMetrics> {
        let table = self.location.open().await?;
        let lease = self
            .location
            .lease(&table, "vacuum", self.lease_ttl)
            .await?;
        let retention = chrono::Duration::from_std(self.retention).unwrap_or(chrono::Duration::MAX);
        lease
            .hold(async {
                let table = self.location.open().await?;
                // Full mode: also files no log entry lists (a run killed
                // between writing its files and committing them), once they
                // are older than the retention.
                let (table, metrics) = table
                    .vacuum()
                    .with_mode(VacuumMode::Full)
                    .with_retention_period(retention)
                    .with_enforce_retention_duration(false)
                    .with_dry_run(self.dry_run)
                    .await?;
                // What the retention keeps: what a vacuum keeping nothing
                // would delete now, less what this one deleted.
                let (table, everything) = table
                    .vacuum()
                    .with_mode(VacuumMode::Full)
                    .with_retention_period(chrono::Duration::zero())
                    .with_enforce_retention_duration(false)
                    .with_dry_run(true)
                    .await?;
                let done: HashSet<&String> = metrics.files_deleted.iter().collect();
                let kept: Vec<&String> = everything
                    .files_deleted
                    .iter()
                    .filter(|file| !done.contains(file))
                    .collect();
                let kept_until = deletable_between(&table, &kept, retention).await?;
                Ok(VacuumMetrics {
                    kept: kept.len(),
                    kept_until,
                    files: metrics.files_deleted,
                    dry_run: metrics.dry_run,
                })
            })
            .await
    }
}

/// When the first and the last of `files` (paths in `table`'s folder)
/// become deletable: `retention` after a file was removed from the table,
/// or, for a file no commit lists, after it was written.
async fn deletable_between(
    table: &DeltaTable,
    files: &[&String],
    retention: chrono::Duration,
) -> Result<Option<(DateTime<Utc>, DateTime<Utc>)>> {
    if files.is_empty() {
        return Ok(None);
    }
    let parse = |path: &str| Path::parse(path).unwrap_or_else(|_| Path::from(path));
    let log_store = table.log_store();
    let removed: HashMap<String, i64> = table
        .snapshot()?
        .all_tombstones(log_store.as_ref())
        .map_ok(|tombstone| {
            let path = parse(tombstone.path().as_ref()).to_string();
            (path, tombstone.deletion_timestamp().unwrap_or(0))
        })
        .try_collect()
        .await?;
    let store = table.object_store();
    let mut times = Vec::with_capacity(files.len());
    for file in files {
        let since = match removed.get(file.as_str()) {
            Some(&millis) => DateTime::from_timestamp_millis(millis).unwrap_or_default(),
            None => match store.head(&parse(file)).await {
                Ok(meta) => meta.last_modified,
                // Deleted since it was listed.
                Err(deltalake::logstore::object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(deltalake::DeltaTableError::from(e).into()),
            },
        };
        times.push(since + retention);
    }
    Ok(times
        .iter()
        .min()
        .zip(times.iter().max())
        .map(|(first, last)| (*first, *last)))
}

//! The lake tier: Delta tables the compactor writes, one per table, at
//! `<lake>/tables/<table>/`, each partition's watermark a Delta `txn` action.

pub mod commit;
pub mod exec;
pub mod last;
pub mod layout;
pub mod location;
pub mod plan;
pub mod snapshot;
pub mod survey;
pub mod travel;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use deltalake::DeltaTable;
use url::Url;

pub use commit::CommitSummary;
pub use exec::LakeTierExec;
pub use location::{app_id, latest_app_id, latest_source_id, latest_url, table_url};
pub use plan::{delta_provider, lake_plan, lake_provider};
pub use snapshot::LakeSnapshot;
pub use survey::{LakeContents, LakeSurvey};

use crate::error::{CatalogError, Result};

/// Where the lake is and how to reach it.
///
/// Clones share a cache of the tables opened so far: a query brings its
/// table up to date by reading only the commits since the last query
/// (`update_incremental`) instead of replaying the log from its checkpoint.
#[derive(Debug, Clone, Default)]
pub struct Lake {
    /// The lake's location (a folder, `file://…`, `s3://…`).
    pub location: String,
    /// Object-store options (endpoint, region, credentials…).
    pub storage_options: HashMap<String, String>,
    opened: Arc<Mutex<HashMap<(Kind, String), LakeSnapshot>>>,
}

/// The two Delta tables the compactor keeps for a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// Its records (the lake tier): `<lake>/tables/<table>/`.
    History,
    /// A changelog table's latest row per key: `<lake>/latest/<table>/`.
    Latest,
}

impl Lake {
    /// A lake at `location` with `storage_options`.
    pub fn new(location: impl Into<String>, storage_options: HashMap<String, String>) -> Self {
        Self {
            location: location.into(),
            storage_options,
            opened: Arc::default(),
        }
    }

    /// The Delta table of `table` at its latest version, or `None` when the
    /// compactor has not created it.
    pub async fn open(&self, table: &str) -> Result<Option<DeltaTable>> {
        Ok(self.snapshot(table).await?.map(|s| s.delta().clone()))
    }

    /// `table`'s lake tier at its latest version, or `None` when the
    /// compactor has not created it.
    pub async fn snapshot(&self, table: &str) -> Result<Option<LakeSnapshot>> {
        self.load(Kind::History, table).await
    }

    /// `table`'s lake tier at Delta `version` (its latest version, or an
    /// older one read again): what a query planned on another gateway read.
    pub async fn snapshot_at(&self, table: &str, version: u64) -> Result<LakeSnapshot> {
        let missing = || {
            CatalogError::Lake(format!(
                "table '{table}': this gateway's lake has no Delta version {version} (give every \
                 gateway the same --lake)"
            ))
        };
        let latest = self.snapshot(table).await?.ok_or_else(missing)?;
        if latest.version() == version {
            return Ok(latest);
        }
        if latest.version() < version {
            return Err(missing());
        }
        let mut delta = latest.delta().clone();
        delta.load_version(version).await.map_err(|e| {
            CatalogError::Lake(format!("table '{table}' at version {version}: {e}"))
        })?;
        LakeSnapshot::new(table, delta).await
    }

    /// The latest rows of changelog table `table` the compactor keeps, at
    /// their latest version, or `None` when it has not created them.
    pub async fn latest(&self, table: &str) -> Result<Option<LakeSnapshot>> {
        self.load(Kind::Latest, table).await
    }

    async fn load(&self, kind: Kind, table: &str) -> Result<Option<LakeSnapshot>> {
        let key = (kind, table.to_string());
        let cached = self
            .opened
            .lock()
            .expect("lake cache poisoned")
            .get(&key)
            .cloned();
        let latest = match cached {
            // The same table, brought up to date by its new commits.
            Some(previous) if previous.is_current_table().await? => {
                let mut delta = previous.delta().clone();
                delta
                    .update_incremental(None)
                    .await
                    .map_err(|e| CatalogError::Lake(format!("table '{table}': {e}")))?;
                if delta.version() == previous.delta().version() {
                    return Ok(Some(previous));
                }
                LakeSnapshot::new(table, delta).await?
            }
            // Not cached, or deleted (and maybe created again) since.
            _ => match self.open_latest(kind, table).await? {
                Some(delta) => LakeSnapshot::new(table, delta).await?,
                None => {
                    self.opened
                        .lock()
                        .expect("lake cache poisoned")
                        .remove(&key);
                    return Ok(None);
                }
            },
        };
        self.opened
            .lock()
            .expect("lake cache poisoned")
            .insert(key, latest.clone());
        Ok(Some(latest))
    }

    async fn open_latest(&self, kind: Kind, table: &str) -> Result<Option<DeltaTable>> {
        let url = match kind {
            Kind::History => table_url(&self.location, table, false)?,
            Kind::Latest => latest_url(&self.location, table, false)?,
        };
        if url.scheme() == "file"
            && url
                .to_file_path()
                .is_ok_and(|p| !p.join("_delta_log").is_dir())
        {
            return Ok(None);
        }
        let delta = open_url(url, self.storage_options.clone()).await?;
        Ok(delta.version().is_some().then_some(delta))
    }
}

/// The Delta table at `url` (not loaded if it does not exist yet).
pub async fn open_url(url: Url, storage_options: HashMap<String, String>) -> Result<DeltaTable> {
    DeltaTable::try_from_url_with_storage_options(url.clone(), storage_options)
        .await
        .map_err(|e| CatalogError::Lake(format!("{url}: {e}")))
}

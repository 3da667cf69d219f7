//! The lake tier: Delta tables the compactor writes, one per table, at
//! `<lake>/tables/<table>/`, each partition's watermark a Delta `txn` action.

pub mod location;

use std::collections::HashMap;

use deltalake::DeltaTable;
use url::Url;

pub use location::{app_id, table_url};

use crate::error::{CatalogError, Result};

/// Where the lake is and how to reach it.
#[derive(Debug, Clone, Default)]
pub struct Lake {
    /// The lake's location (a folder, `file://…`, `s3://…`).
    pub location: String,
    /// Object-store options (endpoint, region, credentials…).
    pub storage_options: HashMap<String, String>,
}

impl Lake {
    /// A lake at `location` with `storage_options`.
    pub fn new(location: impl Into<String>, storage_options: HashMap<String, String>) -> Self {
        Self {
            location: location.into(),
            storage_options,
        }
    }

    /// The Delta table of `table` at its latest version, or `None` when the
    /// compactor has not created it.
    pub async fn open(&self, table: &str) -> Result<Option<DeltaTable>> {
        let url = table_url(&self.location, table, false)?;
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

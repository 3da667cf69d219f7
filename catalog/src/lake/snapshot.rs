//! One table's lake tier at one Delta version: the files a query reads and
//! the watermarks that bound them, always taken together.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use deltalake::DeltaTable;
use deltalake::logstore::commit_uri_from_version;
use deltalake::logstore::object_store::{Error as StoreError, ObjectMeta, ObjectStoreExt};

use super::app_id;
use crate::error::{CatalogError, Result};

/// A table's Delta table loaded at one version, with the partition
/// watermarks of that version read on demand and remembered (a version never
/// changes, so neither do its watermarks).
#[derive(Debug, Clone)]
pub struct LakeSnapshot {
    table: String,
    delta: DeltaTable,
    /// The log entry of the loaded version as the store describes it: a
    /// table deleted and created again has an entry of that version too,
    /// but not this one.
    commit: Option<ObjectMeta>,
    /// The `txn` versions read so far, by app id.
    transactions: Arc<Mutex<HashMap<String, Option<i64>>>>,
}

impl LakeSnapshot {
    pub(crate) async fn new(table: impl Into<String>, delta: DeltaTable) -> Result<Self> {
        let commit = commit_entry(&delta).await?;
        Ok(Self {
            table: table.into(),
            delta,
            commit,
            transactions: Arc::default(),
        })
    }

    /// Whether the loaded version's log entry is still the one in the store
    /// (so later commits extend this table, not a new one of the same name).
    pub(crate) async fn is_current_table(&self) -> Result<bool> {
        Ok(self.commit.is_some() && commit_entry(&self.delta).await? == self.commit)
    }

    /// The loaded Delta table.
    pub fn delta(&self) -> &DeltaTable {
        &self.delta
    }

    /// The Delta version loaded.
    pub fn version(&self) -> u64 {
        self.delta.version().unwrap_or_default()
    }

    /// The watermarks of `partitions` in this version: the next offset to
    /// tier of each partition the compactor has committed, absent for the
    /// others (the lake holds none of their records).
    pub async fn watermarks(&self, partitions: &[i32]) -> Result<HashMap<i32, i64>> {
        self.watermarks_named(partitions, |partition| app_id(&self.table, partition))
            .await
    }

    /// The versions of the `txn` app ids `app_id` names for `partitions`,
    /// for those that have one.
    pub async fn watermarks_named(
        &self,
        partitions: &[i32],
        app_id: impl Fn(i32) -> String,
    ) -> Result<HashMap<i32, i64>> {
        let mut out = HashMap::new();
        for &partition in partitions {
            if let Some(watermark) = self.transaction(&app_id(partition)).await? {
                out.insert(partition, watermark);
            }
        }
        Ok(out)
    }

    /// The version of the Delta `txn` app id `app_id` in this version.
    pub async fn transaction(&self, app_id: &str) -> Result<Option<i64>> {
        let known = self
            .transactions
            .lock()
            .expect("transaction cache poisoned")
            .get(app_id)
            .copied();
        if let Some(version) = known {
            return Ok(version);
        }
        let lake = |e: deltalake::DeltaTableError| CatalogError::Lake(e.to_string());
        let version = self
            .delta
            .snapshot()
            .map_err(lake)?
            .transaction_version(self.delta.log_store().as_ref(), app_id)
            .await
            .map_err(lake)?;
        self.transactions
            .lock()
            .expect("transaction cache poisoned")
            .insert(app_id.to_string(), version);
        Ok(version)
    }

    /// The Delta table id (a UUID fixed when the table was created: a table
    /// deleted and created again has another).
    pub fn table_id(&self) -> Result<String> {
        let snapshot = self
            .delta
            .snapshot()
            .map_err(|e| CatalogError::Lake(e.to_string()))?;
        Ok(snapshot.metadata().id().to_string())
    }
}

/// The store's description of the log entry of `delta`'s loaded version.
async fn commit_entry(delta: &DeltaTable) -> Result<Option<ObjectMeta>> {
    let Some(version) = delta.version() else {
        return Ok(None);
    };
    let store = delta.log_store().object_store(None);
    match store.head(&commit_uri_from_version(Some(version))).await {
        Ok(meta) => Ok(Some(meta)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(CatalogError::Lake(format!("{}: {e}", delta.table_url()))),
    }
}

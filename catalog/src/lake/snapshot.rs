//! One table's lake tier at one Delta version: the files a query reads and
//! the watermarks that bound them, always taken together.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use deltalake::DeltaTable;

use super::app_id;
use crate::error::{CatalogError, Result};

/// A table's Delta table loaded at one version, with the partition
/// watermarks of that version read on demand and remembered (a version never
/// changes, so neither do its watermarks).
#[derive(Debug, Clone)]
pub struct LakeSnapshot {
    table: String,
    delta: DeltaTable,
    watermarks: Arc<Mutex<HashMap<i32, Option<i64>>>>,
}

impl LakeSnapshot {
    pub(crate) fn new(table: impl Into<String>, delta: DeltaTable) -> Self {
        Self {
            table: table.into(),
            delta,
            watermarks: Arc::default(),
        }
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
        let lake = |e: deltalake::DeltaTableError| CatalogError::Lake(e.to_string());
        let mut out = HashMap::new();
        for &partition in partitions {
            let known = self
                .watermarks
                .lock()
                .expect("watermark cache poisoned")
                .get(&partition)
                .copied();
            let watermark = match known {
                Some(watermark) => watermark,
                None => {
                    let watermark = self
                        .delta
                        .snapshot()
                        .map_err(lake)?
                        .transaction_version(
                            self.delta.log_store().as_ref(),
                            app_id(&self.table, partition),
                        )
                        .await
                        .map_err(lake)?;
                    self.watermarks
                        .lock()
                        .expect("watermark cache poisoned")
                        .insert(partition, watermark);
                    watermark
                }
            };
            if let Some(watermark) = watermark {
                out.insert(partition, watermark);
            }
        }
        Ok(out)
    }
}

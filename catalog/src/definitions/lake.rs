//! Definitions made by SQL, kept on the lake beside the tables they
//! describe: one JSON object per table at `<lake>/_kappa/tables/<name>.json`.
//!
//! The object store is the only shared state, so every gateway and the
//! compactor on one lake read the same definitions with no server of their
//! own. A definition is created with a conditional put (`PutMode::Create`):
//! of two gateways creating one name at once exactly one wins and the other
//! is told the table exists; creating different names never conflicts, as
//! each is its own object. An object is written once and never changed, so
//! a reader that saw its tag once need not read it again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use deltalake::DeltaTableBuilder;
use deltalake::logstore::object_store::path::Path;
use deltalake::logstore::object_store::{
    Error as StoreError, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use super::DefinitionStore;
use super::file::{DeclaredTable, FormatName, TableDefinition, registered};
use crate::error::{CatalogError, Result};
use crate::format::SchemaRegistry;
use crate::lake::Lake;
use crate::lake::location::definitions_url;

/// Where definitions live under the lake's `_kappa/` folder.
const FOLDER: &str = "tables";

/// What is stored for one table: its definition and who made it when.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredDefinition {
    /// The definition, in the config file's shape.
    pub definition: TableDefinition,
    /// The user who created it.
    pub created_by: String,
    /// When (RFC 3339).
    pub created_at: String,
}

/// The definitions on one lake.
#[derive(Debug)]
pub struct LakeDefinitions {
    lake: Lake,
    registry: Option<Arc<SchemaRegistry>>,
    store: OnceCell<Arc<dyn ObjectStore>>,
    /// What each object read as, by its path and tag: objects never change,
    /// so a refresh reads only new ones.
    read: Mutex<HashMap<Path, ReadObject>>,
}

/// An object's tag when it was read, and what it read as.
type ReadObject = (Option<String>, Arc<StoredDefinition>);

impl LakeDefinitions {
    /// The definitions on `lake`, with `registry` to resolve registry
    /// formats.
    pub fn new(lake: Lake, registry: Option<Arc<SchemaRegistry>>) -> Self {
        Self {
            lake,
            registry,
            store: OnceCell::new(),
            read: Mutex::default(),
        }
    }

    /// The registry the definitions' formats resolve in.
    pub fn registry(&self) -> Option<&Arc<SchemaRegistry>> {
        self.registry.as_ref()
    }

    /// The object store at `<lake>/_kappa/`, opened the first time it is
    /// needed (a local lake's folder is made then).
    async fn store(&self) -> Result<&Arc<dyn ObjectStore>> {
        self.store
            .get_or_try_init(|| async {
                let url = definitions_url(&self.lake.location)?;
                let unavailable = |e: deltalake::DeltaTableError| {
                    CatalogError::Lake(format!("definitions at {url}: {e}"))
                };
                let log_store = DeltaTableBuilder::from_url(url.clone())
                    .map_err(unavailable)?
                    .with_storage_options(self.lake.storage_options.clone())
                    .build_storage()
                    .map_err(unavailable)?;
                Ok(log_store.object_store(None))
            })
            .await
    }

    /// Validates `definition`, pins the registry schema version it reads
    /// with, and stores it unless a table of its name is stored already.
    /// Returns what was stored and the table it makes.
    pub async fn create(
        &self,
        mut definition: TableDefinition,
        created_by: &str,
    ) -> Result<(StoredDefinition, DeclaredTable)> {
        self.pin_schema_version(&mut definition).await?;
        let table = definition.resolve(self.registry.as_ref()).await?;
        let stored = StoredDefinition {
            definition,
            created_by: created_by.to_string(),
            created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        };
        let bytes = serde_json::to_vec_pretty(&stored)
            .map_err(|e| CatalogError::Definition(format!("cannot store the definition: {e}")))?;
        let path = object_path(&table.name);
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store()
            .await?
            .put_opts(&path, PutPayload::from(bytes), options)
            .await
        {
            Ok(_) => Ok((stored, table)),
            Err(StoreError::AlreadyExists { .. }) => Err(CatalogError::AlreadyExists(format!(
                "table '{}' already exists",
                table.name
            ))),
            Err(e) => Err(self.unavailable(e)),
        }
    }

    /// Deletes `name`'s definition; `false` if there was none.
    pub async fn remove(&self, name: &str) -> Result<bool> {
        let store = self.store().await?;
        let path = object_path(name);
        match store.head(&path).await {
            Ok(_) => {}
            Err(StoreError::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(self.unavailable(e)),
        }
        match store.delete(&path).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(self.unavailable(e)),
        }
        self.read
            .lock()
            .expect("definitions cache poisoned")
            .remove(&path);
        Ok(true)
    }

    /// Every stored definition, as stored (listing the folder, reading only
    /// the objects not read before).
    pub async fn stored(&self) -> Result<Vec<Arc<StoredDefinition>>> {
        let store = self.store().await?;
        let listed: Vec<_> = store
            .list(Some(&Path::from(FOLDER)))
            .try_collect()
            .await
            .map_err(|e| self.unavailable(e))?;
        let mut out = Vec::with_capacity(listed.len());
        let mut seen = HashMap::new();
        for meta in listed {
            if meta.location.extension() != Some("json") {
                continue;
            }
            let known = {
                let read = self.read.lock().expect("definitions cache poisoned");
                read.get(&meta.location)
                    .filter(|(tag, _)| *tag == meta.e_tag)
                    .map(|(_, stored)| Arc::clone(stored))
            };
            let stored = match known {
                Some(stored) => stored,
                None => {
                    let bytes = match store.get(&meta.location).await {
                        Ok(got) => got.bytes().await.map_err(|e| self.unavailable(e))?,
                        // Dropped since it was listed.
                        Err(StoreError::NotFound { .. }) => continue,
                        Err(e) => return Err(self.unavailable(e)),
                    };
                    let stored: StoredDefinition = serde_json::from_slice(&bytes).map_err(|e| {
                        CatalogError::Lake(format!(
                            "definition {} cannot be read: {e}",
                            meta.location
                        ))
                    })?;
                    Arc::new(stored)
                }
            };
            seen.insert(
                meta.location.clone(),
                (meta.e_tag.clone(), Arc::clone(&stored)),
            );
            out.push(stored);
        }
        *self.read.lock().expect("definitions cache poisoned") = seen;
        Ok(out)
    }

    /// A registry format with no version given reads with the subject's
    /// latest version *now*, written into the definition: every gateway
    /// then decodes the table the same way, whatever is registered later.
    async fn pin_schema_version(&self, definition: &mut TableDefinition) -> Result<()> {
        let Some(registry) = &self.registry else {
            // `resolve` says a registry is needed.
            return Ok(());
        };
        if is_registry_format(Some(definition.format))
            && definition.schema.is_none()
            && definition.schema_version.is_none()
        {
            let subject = definition.value_subject_name();
            definition.schema_version =
                latest_version(registry, &definition.name, &subject).await?;
        }
        if is_registry_format(definition.key_format) && definition.key_schema_version.is_none() {
            let subject = definition.key_subject_name();
            definition.key_schema_version =
                latest_version(registry, &definition.name, &subject).await?;
        }
        Ok(())
    }

    fn unavailable(&self, e: StoreError) -> CatalogError {
        CatalogError::Lake(format!("table definitions on {}: {e}", self.lake.location))
    }
}

fn is_registry_format(format: Option<FormatName>) -> bool {
    matches!(
        format,
        Some(FormatName::AvroConfluent | FormatName::ProtobufConfluent | FormatName::JsonSchema)
    )
}

/// The latest version of `subject`, for table `table`.
async fn latest_version(
    registry: &SchemaRegistry,
    table: &str,
    subject: &str,
) -> Result<Option<u32>> {
    let found = registered(registry, subject, None).await?.ok_or_else(|| {
        CatalogError::Definition(format!(
            "table '{table}': subject '{subject}' is not in the schema registry"
        ))
    })?;
    Ok(found.version)
}

#[async_trait]
impl DefinitionStore for LakeDefinitions {
    async fn tables(&self) -> Result<Vec<DeclaredTable>> {
        let mut tables = Vec::new();
        for stored in self.stored().await? {
            tables.push(stored.definition.resolve(self.registry.as_ref()).await?);
        }
        Ok(tables)
    }
}

fn object_path(name: &str) -> Path {
    Path::from(FOLDER).join(format!("{name}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definitions::CatalogConfig;

    fn definition(name: &str) -> TableDefinition {
        let toml = format!(
            "[[tables]]\nname = \"{name}\"\ntopic = \"t\"\nformat = \"json\"\ncolumns = \"id BIGINT\"\n"
        );
        CatalogConfig::from_toml(&toml).unwrap().tables.remove(0)
    }

    #[tokio::test]
    async fn definitions_are_created_once_listed_and_removed() {
        let folder = std::env::temp_dir().join(format!("kappa-definitions-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&folder);
        let lake = Lake::new(folder.to_str().unwrap(), HashMap::new());
        let store = LakeDefinitions::new(lake.clone(), None);
        store.create(definition("a"), "me").await.unwrap();
        let again = store.create(definition("a"), "you").await.unwrap_err();
        assert!(matches!(again, CatalogError::AlreadyExists(_)), "{again}");
        store.create(definition("b"), "me").await.unwrap();

        // Another store on the same lake (another gateway) reads both.
        let other = LakeDefinitions::new(lake, None);
        let mut names: Vec<String> = other
            .stored()
            .await
            .unwrap()
            .iter()
            .map(|s| s.definition.name.clone())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(other.stored().await.unwrap()[0].created_by, "me");

        assert!(other.remove("a").await.unwrap());
        assert!(!store.remove("a").await.unwrap());
        let tables = store.tables().await.unwrap();
        assert_eq!(tables.len(), 1);
        assert_eq!(tables[0].name, "b");
        std::fs::remove_dir_all(&folder).unwrap();
    }
}

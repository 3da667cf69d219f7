//! The tables the lake's SQL definitions make, as one gateway sees them.
//!
//! The list is read again once it is older than the refresh interval (the
//! gateway's `--topic-refresh`), so a table created or dropped on another
//! gateway shows here within that interval; a table created or dropped
//! here shows at once. A definition is resolved (its columns parsed, its
//! registry subject looked up) once, when first seen: stored definitions
//! never change. One that cannot be resolved now (a registry that is down)
//! is kept and resolved again when queried, so its queries fail with the
//! reason rather than the table vanishing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::file::{DeclaredTable, TableDefinition};
use super::lake::{LakeDefinitions, StoredDefinition};
use crate::error::Result;

/// A stored definition and, once resolved, its table.
#[derive(Debug, Clone)]
struct Defined {
    stored: Arc<StoredDefinition>,
    table: Option<DeclaredTable>,
}

#[derive(Debug, Default)]
struct State {
    fetched_at: Option<Instant>,
    tables: HashMap<String, Defined>,
}

/// The SQL-defined tables of one lake, cached for `refresh_interval`.
#[derive(Debug)]
pub struct LakeTables {
    store: LakeDefinitions,
    refresh_interval: Duration,
    state: Mutex<State>,
}

impl LakeTables {
    /// The tables `store` defines (resolved in its registry), listed again
    /// after `refresh_interval`.
    pub fn new(store: LakeDefinitions, refresh_interval: Duration) -> Self {
        Self {
            store,
            refresh_interval,
            state: Mutex::default(),
        }
    }

    /// Lists the definitions again if the list is older than the refresh
    /// interval.
    pub async fn refresh_if_stale(&self) -> Result<()> {
        let stale = self
            .lock()
            .fetched_at
            .is_none_or(|at| at.elapsed() >= self.refresh_interval);
        if stale {
            self.refresh().await?;
        }
        Ok(())
    }

    /// Lists the definitions now, resolving those not seen before.
    pub async fn refresh(&self) -> Result<()> {
        let asked_at = Instant::now();
        let stored = self.store.stored().await?;
        let known = self.lock().tables.clone();
        let mut tables = HashMap::with_capacity(stored.len());
        for stored in stored {
            let name = stored.definition.name.clone();
            let defined = match known.get(&name) {
                Some(seen) if Arc::ptr_eq(&seen.stored, &stored) && seen.table.is_some() => {
                    seen.clone()
                }
                _ => {
                    let table = match stored.definition.resolve(self.store.registry()).await {
                        Ok(table) => Some(table),
                        Err(e) => {
                            tracing::warn!(table = %name, "definition not resolved: {e}");
                            None
                        }
                    };
                    Defined { stored, table }
                }
            };
            tables.insert(name, defined);
        }
        let mut state = self.lock();
        state.tables = tables;
        state.fetched_at = Some(asked_at);
        Ok(())
    }

    /// The table `name` defines, or `None` if no definition has that name.
    /// A definition that did not resolve is resolved now, its error the
    /// answer if it fails again.
    pub async fn get(&self, name: &str) -> Result<Option<DeclaredTable>> {
        self.refresh_if_stale().await?;
        let Some(defined) = self.lock().tables.get(name).cloned() else {
            return Ok(None);
        };
        if let Some(table) = defined.table {
            return Ok(Some(table));
        }
        let table = defined
            .stored
            .definition
            .resolve(self.store.registry())
            .await?;
        if let Some(entry) = self.lock().tables.get_mut(name) {
            entry.table = Some(table.clone());
        }
        Ok(Some(table))
    }

    /// The resolved table `name` as last listed, without asking the lake
    /// (for callers that cannot wait).
    pub fn cached(&self, name: &str) -> Option<DeclaredTable> {
        self.lock().tables.get(name).and_then(|d| d.table.clone())
    }

    /// The names defined, as last listed.
    pub fn names(&self) -> Vec<String> {
        self.lock().tables.keys().cloned().collect()
    }

    /// The names of the tables reading `topic`, as last listed.
    pub fn reading(&self, topic: &str) -> Vec<String> {
        self.lock()
            .tables
            .values()
            .filter(|d| d.stored.definition.topic.as_deref() == Some(topic))
            .map(|d| d.stored.definition.name.clone())
            .collect()
    }

    /// Stores `definition` (see [`LakeDefinitions::create`]) and adds its
    /// table.
    pub async fn create(
        &self,
        definition: TableDefinition,
        created_by: &str,
    ) -> Result<DeclaredTable> {
        let (stored, table) = self.store.create(definition, created_by).await?;
        self.lock().tables.insert(
            table.name.clone(),
            Defined {
                stored: Arc::new(stored),
                table: Some(table.clone()),
            },
        );
        Ok(table)
    }

    /// Deletes `name`'s definition; `false` if there was none.
    pub async fn remove(&self, name: &str) -> Result<bool> {
        let dropped = self.store.remove(name).await?;
        self.lock().tables.remove(name);
        Ok(dropped)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("definitions cache poisoned")
    }
}

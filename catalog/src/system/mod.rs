//! The `system` schema: the cluster's and the lake's state as tables, so it
//! can be queried (and joined) with the same SQL as the data.
//!
//! * `system.partitions`: every partition of every topic: log start, high
//!   watermark, and for tables with a lake tier the lake's watermark and how
//!   far the lake lags behind Kafka ([`partitions`]).
//! * `system.lake_files`: the Parquet files of every lake table's current
//!   version, with the offsets and times each holds ([`lake_files`]).
//! * `system.compactions`: the recent commits of every lake table, with the
//!   records, files and watermarks each committed ([`compactions`]).
//! * `system.streams`: the streaming queries running now ([`streams`]).
//!
//! Resolving or listing a system table reads nothing: each is read when a
//! query scans it, so `information_schema` and `SHOW TABLES` stay cheap.

pub mod compactions;
pub mod lake_files;
pub mod partitions;
pub mod streams;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::context::CatalogContext;
use crate::lake::LakeSnapshot;

/// Name of the schema.
pub const SYSTEM_SCHEMA: &str = "system";
/// Name of the partitions table.
pub const PARTITIONS: &str = "partitions";
/// Name of the lake files table.
pub const LAKE_FILES: &str = "lake_files";
/// Name of the compactions table.
pub const COMPACTIONS: &str = "compactions";
/// Name of the streams table.
pub const STREAMS: &str = "streams";

/// One system table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SystemTableKind {
    Partitions,
    LakeFiles,
    Compactions,
    Streams,
}

impl SystemTableKind {
    const ALL: [Self; 4] = [
        Self::Partitions,
        Self::LakeFiles,
        Self::Compactions,
        Self::Streams,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Partitions => PARTITIONS,
            Self::LakeFiles => LAKE_FILES,
            Self::Compactions => COMPACTIONS,
            Self::Streams => STREAMS,
        }
    }

    fn schema(self) -> SchemaRef {
        match self {
            Self::Partitions => partitions::schema(),
            Self::LakeFiles => lake_files::schema(),
            Self::Compactions => compactions::schema(),
            Self::Streams => streams::schema(),
        }
    }

    fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// Every system table's name and schema (for metadata calls that list
/// tables without reading them).
pub fn tables() -> Vec<(&'static str, SchemaRef)> {
    SystemTableKind::ALL
        .iter()
        .map(|kind| (kind.name(), kind.schema()))
        .collect()
}

/// The `system` schema over the topics of a [`CatalogContext`].
#[derive(Debug)]
pub struct SystemSchema {
    topics: Arc<CatalogContext>,
}

impl SystemSchema {
    /// System tables for the cluster behind `topics`.
    pub fn new(topics: Arc<CatalogContext>) -> Self {
        Self { topics }
    }
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        SystemTableKind::ALL
            .iter()
            .map(|kind| kind.name().to_string())
            .collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Ok(SystemTableKind::named(name).map(|kind| {
            Arc::new(SystemTable {
                kind,
                topics: Arc::clone(&self.topics),
            }) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        SystemTableKind::named(name).is_some()
    }
}

/// A system table: its rows are read when it is scanned.
#[derive(Debug)]
struct SystemTable {
    kind: SystemTableKind,
    topics: Arc<CatalogContext>,
}

#[async_trait]
impl TableProvider for SystemTable {
    fn schema(&self) -> SchemaRef {
        self.kind.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch: RecordBatch = match self.kind {
            SystemTableKind::Partitions => partitions::read(&self.topics).await?,
            SystemTableKind::LakeFiles => lake_files::read(&lake_tables(&self.topics).await?)?,
            SystemTableKind::Compactions => {
                compactions::read(&lake_tables(&self.topics).await?).await?
            }
            SystemTableKind::Streams => streams::read(self.topics.streams())?,
        };
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.kind.schema(),
            projection.cloned(),
        )?)
    }
}

/// Every table with a lake tier, at its latest version, by name.
async fn lake_tables(topics: &CatalogContext) -> crate::Result<Vec<(String, LakeSnapshot)>> {
    let Some(lake) = topics.lake() else {
        return Ok(Vec::new());
    };
    topics.refresh_if_stale().await?;
    let mut names = topics.declared_names();
    names.extend(topics.topic_names());
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        if let Some(snapshot) = lake.snapshot(&name).await? {
            out.push((name, snapshot));
        }
    }
    Ok(out)
}

//! `system.compactions`: each lake table's recent commits, read from its
//! Delta log: when, what operation, how many records and files it added and
//! the watermarks it committed. (`DeltaTable::history` drops the version a
//! commit has, so the log entries are read by version here.)

use std::sync::{Arc, LazyLock};

use crate::error::{CatalogError, Result};
use crate::lake::{CommitSummary, LakeSnapshot};
use datafusion::arrow::array::{
    Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Commits shown per table, newest first.
pub const COMMITS_SHOWN: u64 = 100;

/// Schema of `system.compactions`.
pub fn schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("table", DataType::Utf8, false),
            Field::new("version", DataType::Int64, false),
            Field::new(
                "committed_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            // Delta's operation name (WRITE for a tiering pass).
            Field::new("operation", DataType::Utf8, true),
            Field::new("records", DataType::Int64, false),
            Field::new("files", DataType::Int64, false),
            Field::new("bytes", DataType::Int64, false),
            // `partition:watermark` of each partition the commit carries,
            // by partition, comma-separated.
            Field::new("watermarks", DataType::Utf8, false),
        ]))
    });
    Arc::clone(&SCHEMA)
}

/// The rows of `system.compactions` for `tables`: up to [`COMMITS_SHOWN`]
/// per table, newest first.
pub async fn read(tables: &[(String, LakeSnapshot)]) -> Result<RecordBatch> {
    let mut table = StringBuilder::new();
    let mut version = Int64Builder::new();
    let mut committed_at = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut operation = StringBuilder::new();
    let mut records = Int64Builder::new();
    let mut files = Int64Builder::new();
    let mut bytes = Int64Builder::new();
    let mut watermarks = StringBuilder::new();
    for (name, snapshot) in tables {
        let lake =
            |e: deltalake::DeltaTableError| CatalogError::Lake(format!("table '{name}': {e}"));
        let log_store = snapshot.delta().log_store();
        let latest = snapshot.version();
        for v in (latest.saturating_sub(COMMITS_SHOWN - 1)..=latest).rev() {
            // Cleaned up by log retention: older commits are gone too.
            let Some(commit) = CommitSummary::read(log_store.as_ref(), v)
                .await
                .map_err(lake)?
            else {
                break;
            };
            table.append_value(name);
            version.append_value(i64::try_from(v).unwrap_or(i64::MAX));
            committed_at.append_option(commit.timestamp_ms.map(|ms| ms.saturating_mul(1000)));
            operation.append_option(commit.operation);
            records.append_value(commit.records);
            files.append_value(commit.files);
            bytes.append_value(commit.bytes);
            watermarks.append_value(commit.watermarks);
        }
    }
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(table.finish()),
            Arc::new(version.finish()),
            Arc::new(committed_at.finish()),
            Arc::new(operation.finish()),
            Arc::new(records.finish()),
            Arc::new(files.finish()),
            Arc::new(bytes.finish()),
            Arc::new(watermarks.finish()),
        ],
    )?)
}

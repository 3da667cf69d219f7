//! `system.partitions`: every partition of every topic, read from the
//! brokers (and the lake) when the query runs.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    Float64Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::context::CatalogContext;
use crate::error::{CatalogError, Result};
use crate::lake::LakeSnapshot;
use crate::offsets::PartitionRange;

/// Schema of `system.partitions`.
pub fn schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("topic", DataType::Utf8, false),
            Field::new("partition", DataType::Int32, false),
            Field::new("log_start_offset", DataType::Int64, false),
            Field::new("high_watermark", DataType::Int64, false),
            // The next offset the lake tier holds records up to (its Delta
            // watermark); null where the table has no lake tier.
            Field::new("lake_watermark", DataType::Int64, true),
            // Offsets in Kafka not yet in the lake: high watermark minus lake
            // watermark (gaps in the log count too).
            Field::new("lake_lag_records", DataType::Int64, true),
            // Age of the oldest record not yet in the lake (0 when the lake
            // holds everything): how far behind the compactor is in time.
            Field::new("lake_lag_seconds", DataType::Float64, true),
        ]))
    });
    Arc::clone(&SCHEMA)
}

/// The rows of `system.partitions`.
pub async fn read(topics: &CatalogContext) -> Result<RecordBatch> {
    topics.refresh_if_stale().await?;
    let names = topics.topic_names();
    let rows = topics
        .client()
        .run_blocking(move |client| {
            let mut rows = Vec::new();
            for topic in names {
                match client.snapshot_ranges(&topic) {
                    Ok(ranges) => rows.push((topic, ranges)),
                    // Deleted since it was listed: not a partition any more.
                    Err(CatalogError::TopicNotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(rows)
        })
        .await?;

    let mut topic = StringBuilder::new();
    let mut partition = Int32Builder::new();
    let mut low = Int64Builder::new();
    let mut high = Int64Builder::new();
    let mut lake = Int64Builder::new();
    let mut lag_records = Int64Builder::new();
    let mut lag_seconds = Float64Builder::new();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    for (name, ranges) in rows {
        let watermarks = lake_watermarks(topics, &name, &ranges).await?;
        let oldest = oldest_untiered(topics, &name, &ranges, &watermarks).await?;
        for range in ranges {
            let watermark = watermarks.get(&range.partition).copied();
            topic.append_value(&name);
            partition.append_value(range.partition);
            low.append_value(range.start);
            high.append_value(range.end);
            lake.append_option(watermark);
            lag_records.append_option(watermark.map(|w| (range.end - w).max(0)));
            lag_seconds.append_option(watermark.map(|w| match oldest.get(&range.partition) {
                Some(&ms) if w < range.end => (now_ms - ms).max(0) as f64 / 1000.0,
                _ => 0.0,
            }));
        }
    }
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(topic.finish()),
            Arc::new(partition.finish()),
            Arc::new(low.finish()),
            Arc::new(high.finish()),
            Arc::new(lake.finish()),
            Arc::new(lag_records.finish()),
            Arc::new(lag_seconds.finish()),
        ],
    )?)
}

/// The lake watermarks of `topic`'s partitions (none without a lake tier).
async fn lake_watermarks(
    topics: &CatalogContext,
    topic: &str,
    ranges: &[PartitionRange],
) -> Result<HashMap<i32, i64>> {
    let Some(lake) = topics.lake() else {
        return Ok(HashMap::new());
    };
    let table = topics.table_name_for_topic(topic);
    let Some(snapshot): Option<LakeSnapshot> = lake.snapshot(&table).await? else {
        return Ok(HashMap::new());
    };
    let partitions: Vec<i32> = ranges.iter().map(|r| r.partition).collect();
    snapshot.watermarks(&partitions).await
}

/// The timestamp of the first record at or after each lake watermark still
/// below its partition's end: the oldest record the lake does not hold yet.
async fn oldest_untiered(
    topics: &CatalogContext,
    topic: &str,
    ranges: &[PartitionRange],
    watermarks: &HashMap<i32, i64>,
) -> Result<HashMap<i32, i64>> {
    let positions: Vec<(i32, i64)> = ranges
        .iter()
        .filter_map(|r| {
            let w = *watermarks.get(&r.partition)?;
            (w < r.end).then_some((r.partition, w.max(r.start)))
        })
        .collect();
    if positions.is_empty() {
        return Ok(HashMap::new());
    }
    let topic = topic.to_string();
    topics
        .client()
        .run_blocking(move |client| client.timestamps_at(&topic, &positions))
        .await
}

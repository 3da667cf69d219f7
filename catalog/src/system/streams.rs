//! `system.streams`: the streaming queries (`tail`) running now.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::Result;
use crate::tail::StreamRegistry;

/// Schema of `system.streams`.
pub fn schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("table", DataType::Utf8, false),
            Field::new(
                "started_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            // Rows handed to the client's stream so far.
            Field::new("records", DataType::Int64, false),
        ]))
    });
    Arc::clone(&SCHEMA)
}

/// The rows of `system.streams`: one per running stream, oldest first. A
/// stream is listed until its Kafka consumer is gone.
pub fn read(registry: &StreamRegistry) -> Result<RecordBatch> {
    let mut id = Int64Builder::new();
    let mut table = StringBuilder::new();
    let mut started_at = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut records = Int64Builder::new();
    for stream in registry.running() {
        id.append_value(i64::try_from(stream.id).unwrap_or(i64::MAX));
        table.append_value(&stream.table);
        started_at.append_value(stream.started_at_us);
        records.append_value(i64::try_from(stream.records()).unwrap_or(i64::MAX));
    }
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(id.finish()),
            Arc::new(table.finish()),
            Arc::new(started_at.finish()),
            Arc::new(records.finish()),
        ],
    )?)
}

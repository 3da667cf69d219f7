//! `system.lake_files`: the data files of each lake table's current
//! version, from the Delta log's `add` actions and the column statistics the
//! compactor wrote with them (no Parquet file is opened).

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    Array, ArrayRef, RecordBatch, StringArray, StringBuilder, new_null_array,
};
use datafusion::arrow::compute::{cast, concat};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::columns::{OFFSET, PARTITION, TIMESTAMP};
use crate::error::{CatalogError, Result};
use crate::lake::LakeSnapshot;

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Schema of `system.lake_files`.
pub fn schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("table", DataType::Utf8, false),
            // Relative to the table's location.
            Field::new("path", DataType::Utf8, false),
            // Delta partition values, `name=value` joined by `/`.
            Field::new("partition_values", DataType::Utf8, false),
            Field::new("min_partition", DataType::Int32, true),
            Field::new("max_partition", DataType::Int32, true),
            Field::new("min_offset", DataType::Int64, true),
            Field::new("max_offset", DataType::Int64, true),
            Field::new("min_timestamp", utc_micros(), true),
            Field::new("max_timestamp", utc_micros(), true),
            Field::new("rows", DataType::Int64, true),
            Field::new("bytes", DataType::Int64, true),
            Field::new("modified", utc_micros(), true),
        ]))
    });
    Arc::clone(&SCHEMA)
}

/// The rows of `system.lake_files` for `tables`.
pub fn read(tables: &[(String, LakeSnapshot)]) -> Result<RecordBatch> {
    let mut batches = Vec::new();
    for (name, snapshot) in tables {
        let actions = snapshot
            .delta()
            .snapshot()
            .and_then(|state| state.add_actions_table(true))
            .map_err(|e| CatalogError::Lake(format!("table '{name}': {e}")))?;
        batches.push(rows_of(name, &actions)?);
    }
    if batches.is_empty() {
        return Ok(RecordBatch::new_empty(schema()));
    }
    let columns = (0..schema().fields().len())
        .map(|i| {
            let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
            concat(&parts)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema(), columns)?)
}

/// One table's files, from its flattened `add` actions.
fn rows_of(table: &str, actions: &RecordBatch) -> Result<RecordBatch> {
    let rows = actions.num_rows();
    let column = |name: &str, to: &DataType| -> Result<ArrayRef> {
        match actions.column_by_name(name) {
            Some(values) => Ok(cast(values, to)?),
            None => Ok(new_null_array(to, rows)),
        }
    };
    let partition_columns: Vec<(String, ArrayRef)> = actions
        .schema()
        .fields()
        .iter()
        .filter_map(|f| {
            let name = f.name().strip_prefix("partition.")?;
            let values = cast(actions.column_by_name(f.name())?, &DataType::Utf8).ok()?;
            Some((name.to_string(), values))
        })
        .collect();
    let mut partition_values = StringBuilder::new();
    for row in 0..rows {
        let joined = partition_columns
            .iter()
            .map(|(name, values)| {
                let values = values
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .expect("cast to Utf8");
                let value = if values.is_null(row) {
                    "__HIVE_DEFAULT_PARTITION__"
                } else {
                    values.value(row)
                };
                format!("{name}={value}")
            })
            .collect::<Vec<_>>()
            .join("/");
        partition_values.append_value(joined);
    }
    let stat = |kind: &str, of: &str, to: &DataType| column(&format!("{kind}.{of}"), to);
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(vec![table; rows])),
            column("path", &DataType::Utf8)?,
            Arc::new(partition_values.finish()),
            stat("min", PARTITION, &DataType::Int32)?,
            stat("max", PARTITION, &DataType::Int32)?,
            stat("min", OFFSET, &DataType::Int64)?,
            stat("max", OFFSET, &DataType::Int64)?,
            stat("min", TIMESTAMP, &utc_micros())?,
            stat("max", TIMESTAMP, &utc_micros())?,
            column("num_records", &DataType::Int64)?,
            column("size_bytes", &DataType::Int64)?,
            // Delta writes `modificationTime` in milliseconds since the epoch.
            cast(
                &column(
                    "modification_time",
                    &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                )?,
                &utc_micros(),
            )?,
        ],
    )?)
}

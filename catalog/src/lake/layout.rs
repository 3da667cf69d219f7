//! How a table is laid out in the lake, shared by the compactor's writer and
//! the gateway's reader so both see one shape: the table's columns as they
//! are in Kafka (types the lake can store: timestamps in microseconds), plus
//! `_date`, the partition column, and the Parquet settings every file is
//! written with (tiering and OPTIMIZE alike).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Date32Array, RecordBatch};
use datafusion::arrow::datatypes::{
    DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;

use crate::columns::TIMESTAMP;
use crate::error::Result;

/// The lake's partition column: the UTC day of `_timestamp`.
pub const DATE: &str = "_date";

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The table's schema plus `_date`.
pub fn lake_schema(table: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = table.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(DATE, DataType::Date32, true));
    Arc::new(Schema::new(fields))
}

/// `batch` with `_date`, the UTC day of its `_timestamp`.
pub fn with_date(lake_schema: &SchemaRef, batch: RecordBatch) -> Result<RecordBatch> {
    let timestamps = batch
        .column_by_name(TIMESTAMP)
        .expect("every table has _timestamp")
        .as_primitive::<TimestampMicrosecondType>();
    let dates: Date32Array = timestamps
        .iter()
        .map(|ts| ts.map(|us| us.div_euclid(MICROS_PER_DAY) as i32))
        .collect();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(dates) as Arc<dyn Array>);
    Ok(RecordBatch::try_new(Arc::clone(lake_schema), columns)?)
}

/// zstd, with column statistics (the default): for tiering and OPTIMIZE alike.
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build()
}

/// The type a declared column has everywhere: timestamps in microseconds,
/// the precision Delta Lake stores (SQL's `TIMESTAMP` plans as nanoseconds,
/// `TIMESTAMP(0)` as seconds), nested ones included.
pub fn lake_type(data_type: &DataType) -> DataType {
    map_timestamps(data_type, &|_, tz| {
        DataType::Timestamp(TimeUnit::Microsecond, tz.clone())
    })
}

/// `data_type` with each timestamp in it, nested ones included, replaced by
/// `leaf(unit, zone)`; everything else kept.
pub fn map_timestamps(
    data_type: &DataType,
    leaf: &dyn Fn(TimeUnit, &Option<Arc<str>>) -> DataType,
) -> DataType {
    let field = |f: &FieldRef| {
        Arc::new(Field::new(
            f.name(),
            map_timestamps(f.data_type(), leaf),
            f.is_nullable(),
        ))
    };
    match data_type {
        DataType::Timestamp(unit, tz) => leaf(*unit, tz),
        DataType::List(item) => DataType::List(field(item)),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(field).collect()),
        DataType::Map(entries, sorted) => DataType::Map(field(entries), *sorted),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::TimestampMicrosecondArray;

    use super::*;
    use crate::columns::table_schema;
    use crate::format::ValueFormat;

    #[test]
    fn the_date_is_the_utc_day_of_the_timestamp() {
        use datafusion::arrow::array::{Int32Array, Int64Array, new_null_array};
        let schema = table_schema(&ValueFormat::Raw, &Schema::empty());
        let timestamps = vec![Some(MICROS_PER_DAY - 1), Some(-1), None];
        let columns = schema
            .fields()
            .iter()
            .map(|f| match f.name().as_str() {
                TIMESTAMP => Arc::new(
                    TimestampMicrosecondArray::from(timestamps.clone()).with_timezone("UTC"),
                ) as ArrayRef,
                "_partition" => Arc::new(Int32Array::from(vec![0, 0, 0])),
                "_offset" => Arc::new(Int64Array::from(vec![0, 1, 2])),
                _ => new_null_array(f.data_type(), 3),
            })
            .collect();
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns).unwrap();
        let dated = with_date(&lake_schema(&schema), batch).unwrap();
        let dates = dated
            .column_by_name(DATE)
            .unwrap()
            .as_primitive::<datafusion::arrow::datatypes::Date32Type>();
        assert_eq!(
            dates.iter().collect::<Vec<_>>(),
            vec![Some(0), Some(-1), None]
        );
    }
}

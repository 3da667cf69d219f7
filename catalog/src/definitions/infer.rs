//! Columns of a JSON topic inferred from a sample of its records, for
//! `CREATE EXTERNAL TABLE … OPTIONS ('value.format' 'json',
//! 'value.json.infer' 'true')`.
//!
//! The sample is stated and bounded: the newest `records` records of each
//! partition, as the topic holds them when the table is created. The
//! inferred column list is written into the definition like a declared one,
//! so the table never changes shape by itself: a query never infers again,
//! and a field that appears later is added by defining the table anew.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Fields};
use datafusion::arrow::json::reader::infer_json_schema_from_iterator;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;

use super::sql::quote_identifier as quoted;
use crate::error::{CatalogError, Result};
use crate::format::ValueFormat;
use crate::kafka::KafkaClient;
use crate::table::KafkaTable;

/// Records per partition sampled unless the definition says otherwise.
pub const DEFAULT_SAMPLE: usize = 100;

/// The column list (SQL) the newest `records` JSON values of each partition
/// of `topic` make, and how many values it was inferred from.
pub async fn infer_json_columns(
    client: &Arc<KafkaClient>,
    topic: &str,
    records: usize,
) -> Result<(String, usize)> {
    let values = sample(client, topic, records).await?;
    let objects: Vec<serde_json::Value> = values
        .iter()
        .filter_map(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
        .filter(serde_json::Value::is_object)
        .collect();
    if objects.is_empty() {
        return Err(CatalogError::Definition(format!(
            "topic '{topic}': no JSON object among the newest {records} records of each partition \
             ({} values) to infer columns from; give a column list",
            values.len()
        )));
    }
    let schema =
        infer_json_schema_from_iterator(objects.iter().map(|v| Ok(v.clone()))).map_err(|e| {
            CatalogError::Definition(format!("topic '{topic}': inferring columns: {e}"))
        })?;
    Ok((columns_sql(schema.fields())?, objects.len()))
}

/// The newest `records` values of each partition of `topic`.
async fn sample(client: &Arc<KafkaClient>, topic: &str, records: usize) -> Result<Vec<Vec<u8>>> {
    let owned = topic.to_string();
    let ranges = client
        .run_blocking(move |c| c.snapshot_ranges(&owned))
        .await?;
    let ctx = SessionContext::new();
    let table = KafkaTable::new(
        topic,
        ValueFormat::Raw,
        Arc::new(datafusion::arrow::datatypes::Schema::empty()),
        Arc::clone(client),
    );
    ctx.register_table("sampled", Arc::new(table))
        .map_err(scan_error)?;
    let mut values = Vec::new();
    for range in ranges.iter().filter(|r| !r.is_empty()) {
        let from = range.end.saturating_sub(records as i64).max(range.start);
        let batches = ctx
            .sql(&format!(
                "SELECT _value FROM sampled WHERE _partition = {} AND _offset >= {from}",
                range.partition
            ))
            .await
            .map_err(scan_error)?
            .collect()
            .await
            .map_err(scan_error)?;
        for batch in batches {
            let column = batch.column(0).as_binary::<i32>();
            values.extend(
                (0..column.len())
                    .filter(|&row| column.is_valid(row))
                    .map(|row| column.value(row).to_vec()),
            );
        }
    }
    Ok(values)
}

/// The scan's own error where it is kappa's (a broker that is down stays
/// `Unavailable`), else DataFusion's.
fn scan_error(err: DataFusionError) -> CatalogError {
    match err {
        DataFusionError::External(inner) => match inner.downcast::<CatalogError>() {
            Ok(catalog) => *catalog,
            Err(other) => CatalogError::BrokerUnavailable(format!("sampling the topic: {other}")),
        },
        other => CatalogError::BrokerUnavailable(format!("sampling the topic: {other}")),
    }
}

/// `fields` as a column list kappa's definitions read.
fn columns_sql(fields: &Fields) -> Result<String> {
    let mut columns = Vec::with_capacity(fields.len());
    for field in fields {
        if field.name().starts_with('_') {
            return Err(CatalogError::Definition(format!(
                "field '{}': names starting with '_' are kappa's metadata columns; give a column list",
                field.name()
            )));
        }
        columns.push(format!(
            "{} {}",
            quoted(field.name()),
            sql_type(field.data_type())
        ));
    }
    Ok(columns.join(", "))
}

/// The SQL type of an inferred JSON type: arrow-json infers integers,
/// floats, booleans, strings, lists and objects; a field only ever null is
/// read as text.
fn sql_type(data_type: &DataType) -> String {
    match data_type {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::List(item) => format!("ARRAY<{}>", sql_type(item.data_type())),
        DataType::Struct(fields) => format!(
            "STRUCT<{}>",
            fields
                .iter()
                .map(|f| format!("{} {}", quoted(f.name()), sql_type(f.data_type())))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => "VARCHAR".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inferred_columns_are_a_column_list_kappa_reads() {
        let objects = [
            r#"{"id": 1, "price": 2, "tags": ["a"], "address": {"city": "x", "geo": {"lat": 1.5}}}"#,
            r#"{"id": 2, "price": 2.5, "paid": true, "note": null, "Mixed Case": "y"}"#,
        ];
        let values: Vec<serde_json::Value> = objects
            .iter()
            .map(|o| serde_json::from_str(o).unwrap())
            .collect();
        let schema = infer_json_schema_from_iterator(values.into_iter().map(Ok)).unwrap();
        let columns = columns_sql(schema.fields()).unwrap();
        assert_eq!(
            columns,
            // In the order fields first appear in the sample.
            "\"id\" BIGINT, \"price\" DOUBLE, \"tags\" ARRAY<VARCHAR>, \
             \"address\" STRUCT<\"city\" VARCHAR, \"geo\" STRUCT<\"lat\" DOUBLE>>, \
             \"paid\" BOOLEAN, \"note\" VARCHAR, \"Mixed Case\" VARCHAR"
        );
        let parsed = crate::definitions::columns::parse_columns("t", &columns)
            .await
            .unwrap();
        assert_eq!(parsed.fields().len(), 7);
        assert_eq!(parsed.field(6).name(), "Mixed Case");
    }

    #[test]
    fn a_field_named_like_a_metadata_column_is_refused() {
        let value: serde_json::Value = serde_json::from_str(r#"{"_offset": 1}"#).unwrap();
        let schema = infer_json_schema_from_iterator([Ok(value)].into_iter()).unwrap();
        let err = columns_sql(schema.fields()).unwrap_err().to_string();
        assert!(err.contains("'_offset'"), "{err}");
    }
}

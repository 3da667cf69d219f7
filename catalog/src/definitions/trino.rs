//! Trino's Kafka table-description files, read as kappa definitions, for
//! moving a Trino Kafka catalog to kappa (`kappa-gateway import-trino`).
//!
//! A description names a topic and how its message decodes: `dataFormat`
//! (`raw`, `json`, `avro`, `csv`, `protobuf`) and `fields`, each a column
//! with a Trino `type` and a `mapping` (for JSON a path like
//! `customer/name`). kappa's JSON columns are matched by field name, so a
//! column is named after its mapping: `customer/name` becomes the field
//! `name` of a column `customer STRUCT<name …>`, queried as
//! `customer['name']`. What kappa cannot express is an error naming the
//! field, never silently dropped, except key fields: kappa keeps the key's
//! bytes in `_key`, and the note says so.

use std::path::Path;

use serde::Deserialize;

use super::file::{FormatName, TableDefinition};
use super::sql::quote_identifier as quoted;
use crate::error::{CatalogError, Result};

/// One table-description file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Description {
    table_name: String,
    #[serde(default)]
    schema_name: Option<String>,
    topic_name: String,
    #[serde(default)]
    key: Option<Section>,
    #[serde(default)]
    message: Option<Section>,
}

/// `key` or `message`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Section {
    data_format: String,
    #[serde(default)]
    data_schema: Option<String>,
    #[serde(default)]
    fields: Vec<TrinoField>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TrinoField {
    name: String,
    #[serde(rename = "type")]
    trino_type: String,
    #[serde(default)]
    mapping: Option<String>,
    #[serde(default)]
    data_format: Option<String>,
}

/// A translated description: the definition and what the reader should know
/// (renamed columns, ignored key fields), as SQL comments.
#[derive(Debug)]
pub struct Imported {
    /// The definition.
    pub definition: TableDefinition,
    /// Notes, one line each.
    pub notes: Vec<String>,
}

/// Translates the description in `text`; `dir` is where relative
/// `dataSchema` paths (an Avro schema file) are found.
pub fn import(text: &str, dir: &Path) -> Result<Imported> {
    let description: Description = serde_json::from_str(text)
        .map_err(|e| CatalogError::Definition(format!("not a Trino table description: {e}")))?;
    let table = &description.table_name;
    let bad = |why: String| CatalogError::Definition(format!("table '{table}': {why}"));
    let mut notes = Vec::new();
    if let Some(schema) = &description.schema_name {
        notes.push(format!(
            "Trino schema '{schema}': kappa's tables are all in kafka.default"
        ));
    }
    if let Some(key) = &description.key
        && !key.fields.is_empty()
    {
        let names: Vec<&str> = key.fields.iter().map(|f| f.name.as_str()).collect();
        notes.push(format!(
            "key fields {} ({}) are not columns: the key's bytes are `_key`",
            names.join(", "),
            key.data_format
        ));
    }
    let mut definition = TableDefinition::new(
        table.clone(),
        description.topic_name.clone(),
        FormatName::Raw,
    );
    let Some(message) = &description.message else {
        return Ok(Imported { definition, notes });
    };
    match message.data_format.to_ascii_lowercase().as_str() {
        "raw" => {
            if !message.fields.is_empty() {
                notes.push(
                    "raw fields (byte ranges of the message) are not columns: the bytes are `_value`"
                        .into(),
                );
            }
        }
        "json" => {
            definition.format = FormatName::Json;
            definition.columns = Some(json_columns(&message.fields, &mut notes).map_err(bad)?);
        }
        "avro" => {
            let path = message
                .data_schema
                .as_deref()
                .ok_or_else(|| bad("avro messages need `dataSchema`".into()))?;
            if path.contains("://") {
                return Err(bad(format!(
                    "dataSchema '{path}': give the Avro schema as a local file"
                )));
            }
            let schema = std::fs::read_to_string(dir.join(path))
                .map_err(|e| bad(format!("dataSchema '{path}': {e}")))?;
            definition.format = FormatName::Avro;
            definition.schema = Some(schema);
            notes.push(
                "Avro columns are the schema's fields; Trino's field mappings are not needed"
                    .into(),
            );
        }
        other => {
            return Err(bad(format!(
                "message dataFormat '{other}' is not one kappa reads yet (raw, json, avro)"
            )));
        }
    }
    Ok(Imported { definition, notes })
}

/// The column list of JSON `fields`: each named by its mapping's first
/// segment, nested segments as STRUCT fields.
fn json_columns(
    fields: &[TrinoField],
    notes: &mut Vec<String>,
) -> std::result::Result<String, String> {
    // Columns in order of first appearance, each a tree of nested fields.
    let mut columns: Vec<(String, Node)> = Vec::new();
    for field in fields {
        let mapping = field.mapping.as_deref().unwrap_or(&field.name);
        if let Some(format) = &field.data_format
            && !matches!(format.as_str(), "iso8601" | "rfc3339")
        {
            return Err(format!(
                "field '{}': dataFormat '{format}' (kappa reads ISO 8601 dates and times)",
                field.name
            ));
        }
        let sql_type = sql_type(&field.trino_type)
            .ok_or_else(|| format!("field '{}': type {}", field.name, field.trino_type))?;
        let path: Vec<&str> = mapping.split('/').collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(format!("field '{}': mapping '{mapping}'", field.name));
        }
        if mapping != field.name {
            notes.push(format!(
                "Trino column {} is {} here",
                field.name,
                path.join(".")
            ));
        }
        let position = match columns.iter().position(|(name, _)| name == path[0]) {
            Some(position) => position,
            None => {
                columns.push((path[0].to_string(), Node::Struct(Vec::new())));
                columns.len() - 1
            }
        };
        insert(&mut columns[position].1, &path[1..], sql_type)
            .map_err(|why| format!("field '{}': mapping '{mapping}': {why}", field.name))?;
    }
    Ok(columns
        .iter()
        .map(|(name, node)| format!("{} {}", quoted(name), node.render()))
        .collect::<Vec<_>>()
        .join(", "))
}

/// A column's type: a leaf, or a struct of named nodes.
#[derive(Debug)]
enum Node {
    Leaf(String),
    Struct(Vec<(String, Node)>),
}

impl Node {
    fn render(&self) -> String {
        match self {
            Self::Leaf(sql_type) => sql_type.clone(),
            Self::Struct(fields) => format!(
                "STRUCT<{}>",
                fields
                    .iter()
                    .map(|(name, node)| format!("{} {}", quoted(name), node.render()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// Puts `sql_type` at `path` under `node` (an empty path: `node` itself).
fn insert(node: &mut Node, path: &[&str], sql_type: String) -> std::result::Result<(), String> {
    if path.is_empty() {
        // Only a node nothing was put under yet may become a value.
        return match node {
            Node::Struct(fields) if fields.is_empty() => {
                *node = Node::Leaf(sql_type);
                Ok(())
            }
            _ => Err("mapped twice, or both a value and an object".into()),
        };
    }
    match (node, path) {
        (Node::Struct(fields), [first, rest @ ..]) => {
            let position = match fields.iter().position(|(name, _)| name == first) {
                Some(position) => position,
                None => {
                    fields.push((first.to_string(), Node::Struct(Vec::new())));
                    fields.len() - 1
                }
            };
            insert(&mut fields[position].1, rest, sql_type)
        }
        _ => Err("mapped twice, or both a value and an object".into()),
    }
}

/// kappa's SQL type for a Trino type, or `None` if kappa has none.
fn sql_type(trino: &str) -> Option<String> {
    let upper = trino.trim().to_ascii_uppercase();
    let base = upper.split('(').next().unwrap_or("").trim();
    Some(match base {
        "BOOLEAN" | "TINYINT" | "SMALLINT" | "BIGINT" | "REAL" | "DOUBLE" | "DATE" => {
            base.to_string()
        }
        "INTEGER" | "INT" => "INT".into(),
        "VARCHAR" | "CHAR" => "VARCHAR".into(),
        "DECIMAL" => upper.clone(),
        "TIMESTAMP" if upper.contains("WITH TIME ZONE") => return None,
        "TIMESTAMP" => "TIMESTAMP".into(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of Trino's Kafka connector documentation, extended with a
    /// nested mapping and a decimal.
    const ORDERS: &str = r#"{
        "tableName": "orders",
        "schemaName": "tpch",
        "topicName": "tpch.orders",
        "key": {"dataFormat": "raw", "fields": [
            {"name": "kafka_key", "dataFormat": "LONG", "type": "BIGINT", "hidden": "false"}]},
        "message": {"dataFormat": "json", "fields": [
            {"name": "row_number", "mapping": "rowNumber", "type": "BIGINT"},
            {"name": "customer_key", "mapping": "customerKey", "type": "BIGINT"},
            {"name": "order_status", "mapping": "orderStatus", "type": "VARCHAR(1)"},
            {"name": "total_price", "mapping": "totalPrice", "type": "DECIMAL(12,2)"},
            {"name": "order_date", "mapping": "orderDate", "type": "DATE", "dataFormat": "iso8601"},
            {"name": "city", "mapping": "address/city", "type": "VARCHAR"},
            {"name": "zip", "mapping": "address/zip", "type": "INTEGER"}]}
    }"#;

    #[tokio::test]
    async fn a_json_description_becomes_a_definition_with_the_same_columns() {
        let imported = import(ORDERS, Path::new(".")).unwrap();
        let def = &imported.definition;
        assert_eq!(def.name, "orders");
        assert_eq!(def.topic.as_deref(), Some("tpch.orders"));
        assert_eq!(def.format, FormatName::Json);
        assert_eq!(
            def.columns.as_deref(),
            Some(
                "\"rowNumber\" BIGINT, \"customerKey\" BIGINT, \"orderStatus\" VARCHAR, \
                 \"totalPrice\" DECIMAL(12,2), \"orderDate\" DATE, \
                 \"address\" STRUCT<\"city\" VARCHAR, \"zip\" INT>"
            )
        );
        assert!(imported.notes.iter().any(|n| n.contains("kafka_key")));
        assert!(
            imported
                .notes
                .iter()
                .any(|n| n == "Trino column city is address.city here")
        );
        // The columns are ones kappa reads.
        let table = def.resolve(None).await.unwrap();
        let address = table.value_schema.field_with_name("address").unwrap();
        assert!(matches!(
            address.data_type(),
            datafusion::arrow::datatypes::DataType::Struct(f) if f.len() == 2
        ));
    }

    #[test]
    fn what_kappa_cannot_express_names_the_field() {
        for (change, why) in [
            (
                (
                    "\"DATE\", \"dataFormat\": \"iso8601\"",
                    "\"DATE\", \"dataFormat\": \"milliseconds-since-epoch\"",
                ),
                "dataFormat 'milliseconds-since-epoch'",
            ),
            (
                ("\"VARCHAR(1)\"", "\"TIMESTAMP WITH TIME ZONE\""),
                "field 'order_status': type",
            ),
            (
                ("\"address/zip\"", "\"address/city/zip\""),
                "mapping 'address/city/zip'",
            ),
            (
                ("\"dataFormat\": \"json\"", "\"dataFormat\": \"csv\""),
                "dataFormat 'csv'",
            ),
        ] {
            let text = ORDERS.replace(change.0, change.1);
            assert_ne!(text, ORDERS, "{change:?}");
            let err = import(&text, Path::new(".")).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
    }
}

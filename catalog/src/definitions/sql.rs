//! Table definitions written in SQL: `CREATE EXTERNAL TABLE … STORED AS
//! KAFKA` read into the same [`TableDefinition`] a config file holds, and a
//! definition written back as the statement that makes it (`SHOW CREATE
//! TABLE`).
//!
//! ```sql
//! CREATE EXTERNAL TABLE orders (id BIGINT, customer VARCHAR)
//! STORED AS KAFKA LOCATION 'orders-v1'
//! OPTIONS ('value.format' 'json', 'timestamp_skew' '30s')
//! ```
//!
//! Option names follow Flink's Kafka connector where it has one
//! (`value.format`, `key.format`, `value.avro-confluent.subject`); the rest
//! are kappa's (`value.schema.version`, `timestamp_skew`).

use datafusion::sql::parser::CreateExternalTable;
use datafusion::sql::sqlparser::ast::{Ident, ObjectName, Value};

use super::file::{FormatName, TableDefinition};
use crate::changelog::Changelog;
use crate::error::{CatalogError, Result};
use crate::kafka::is_legal_topic_name;

/// `STORED AS` of a kappa table.
pub const STORED_AS: &str = "KAFKA";

/// The options a `CREATE EXTERNAL TABLE … STORED AS KAFKA` takes, for the
/// error that names an unknown one.
const OPTIONS: &[&str] = &[
    "value.format",
    "key.format",
    "key.subject",
    "key.schema.version",
    "value.subject",
    "value.schema",
    "value.schema.version",
    "value.protobuf.message",
    "value.json.infer",
    "value.json.infer.records",
    "timestamp_skew",
    "changelog",
];

/// What a `CREATE EXTERNAL TABLE` asks for.
#[derive(Debug)]
pub struct CreateTable {
    /// The definition (its schema not resolved yet).
    pub definition: TableDefinition,
    /// With `'value.json.infer' 'true'`: infer the columns from the newest
    /// this many records of each partition, once, before storing.
    pub infer_json: Option<usize>,
}

/// The definition `statement` makes (its schema not resolved yet). Anything
/// kappa would have to ignore is refused: another `STORED AS` (kappa reads
/// Kafka topics only, never local files or other locations), partitions,
/// orderings, constraints, unknown options.
pub fn from_create(statement: &CreateExternalTable) -> Result<CreateTable> {
    let name = table_name(&statement.name)?;
    let bad =
        |why: String| CatalogError::Definition(format!("CREATE EXTERNAL TABLE {name}: {why}"));
    if !statement.file_type.eq_ignore_ascii_case(STORED_AS) {
        return Err(bad(format!(
            "STORED AS {} is not supported: kappa's tables are Kafka topics (STORED AS KAFKA LOCATION 'topic')",
            statement.file_type
        )));
    }
    if statement.temporary || statement.unbounded || statement.or_replace {
        return Err(bad(
            "TEMPORARY, UNBOUNDED and OR REPLACE are not supported (DROP the table first)".into(),
        ));
    }
    if !statement.table_partition_cols.is_empty()
        || !statement.order_exprs.is_empty()
        || !statement.constraints.is_empty()
    {
        return Err(bad(
            "PARTITIONED BY, WITH ORDER and constraints are not supported: a topic's partitions and order are Kafka's".into(),
        ));
    }
    let topic = match statement.locations.as_slice() {
        [topic] if is_legal_topic_name(topic) => topic.clone(),
        [other] => {
            return Err(bad(format!(
                "LOCATION '{other}' is not a Kafka topic name (letters, digits, '.', '_', '-')"
            )));
        }
        _ => return Err(bad("LOCATION takes one topic".into())),
    };
    let mut definition = TableDefinition::new(name.clone(), topic, FormatName::Json);
    let mut format = None;
    let (mut infer, mut infer_records) = (false, None);
    for (key, value) in &statement.options {
        let value = option_text(value)
            .ok_or_else(|| bad(format!("option '{key}': a string value is expected")))?;
        match key.to_ascii_lowercase().as_str() {
            "value.format" | "format" => format = Some(format_name(&value).map_err(bad)?),
            "key.format" => {
                definition.key_format = Some(format_name(&value).map_err(bad)?);
            }
            "key.subject" | "key.avro-confluent.subject" | "key.protobuf-confluent.subject" => {
                definition.key_subject = Some(value);
            }
            "key.schema.version" => {
                definition.key_schema_version = Some(value.parse().map_err(|_| {
                    bad(format!(
                        "key.schema.version '{value}' is not a version number"
                    ))
                })?);
            }
            "value.subject"
            | "value.avro-confluent.subject"
            | "value.protobuf-confluent.subject" => {
                definition.subject = Some(value);
            }
            "value.protobuf.message" | "value.protobuf-confluent.message" => {
                definition.message = Some(value);
            }
            "value.schema" | "value.avro.schema" | "value.avro-confluent.schema" => {
                definition.schema = Some(value);
            }
            "value.schema.version" => {
                definition.schema_version = Some(value.parse().map_err(|_| {
                    bad(format!(
                        "value.schema.version '{value}' is not a version number"
                    ))
                })?);
            }
            "timestamp_skew" => definition.timestamp_skew = Some(value),
            "changelog" => {
                value.parse::<Changelog>().map_err(|e| bad(e.to_string()))?;
                definition.changelog = Some(value.trim().to_ascii_lowercase());
            }
            "value.json.infer" => {
                infer = value
                    .parse()
                    .map_err(|_| bad(format!("value.json.infer '{value}': true or false")))?;
            }
            "value.json.infer.records" => {
                infer_records = Some(value.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(
                    || {
                        bad(format!(
                            "value.json.infer.records '{value}': a number of records"
                        ))
                    },
                )?);
            }
            _ => {
                return Err(bad(format!(
                    "unknown option '{key}' (kappa takes {})",
                    OPTIONS.join(", ")
                )));
            }
        }
    }
    definition.format = format.ok_or_else(|| {
        bad("OPTIONS ('value.format' '…') is required: json, csv, string, raw, avro, avro-confluent, protobuf-confluent or json-schema".into())
    })?;
    if !statement.columns.is_empty() {
        let columns: Vec<String> = statement.columns.iter().map(|c| c.to_string()).collect();
        definition.columns = Some(columns.join(", "));
    }
    if infer_records.is_some() && !infer {
        return Err(bad(
            "value.json.infer.records goes with 'value.json.infer' 'true'".into(),
        ));
    }
    if infer && (definition.format != FormatName::Json || definition.columns.is_some()) {
        return Err(bad(
            "value.json.infer infers the columns of a json table given none".into(),
        ));
    }
    Ok(CreateTable {
        definition,
        infer_json: infer.then(|| infer_records.unwrap_or(super::infer::DEFAULT_SAMPLE)),
    })
}

/// The table name of `name`: `t`, `default.t` or `kafka.default.t`;
/// unquoted names lower-cased, as DataFusion reads them.
pub fn table_name(name: &ObjectName) -> Result<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|part| part.as_ident().map(normalized))
        .collect::<Option<_>>()
        .ok_or_else(|| CatalogError::Definition(format!("'{name}' is not a table name")))?;
    let table = match parts.as_slice() {
        [table] => table,
        [schema, table] if schema == crate::SCHEMA => table,
        [catalog, schema, table] if catalog == crate::CATALOG && schema == crate::SCHEMA => table,
        _ => {
            return Err(CatalogError::Definition(format!(
                "'{name}': tables are defined in {}.{}",
                crate::CATALOG,
                crate::SCHEMA
            )));
        }
    };
    // The name is an object's name on the lake (and usually a topic's):
    // the characters a topic may have.
    if !is_legal_topic_name(table) || table.starts_with("__") {
        return Err(CatalogError::Definition(format!(
            "table name '{table}': use letters, digits, '.', '_' and '-' (not starting with '__')"
        )));
    }
    Ok(table.clone())
}

fn normalized(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

fn option_text(value: &Value) -> Option<String> {
    match value {
        Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.clone()),
        Value::Number(n, _) => Some(n.to_string()),
        Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A format by the name a definition gives it (the TOML file's names).
fn format_name(name: &str) -> std::result::Result<FormatName, String> {
    serde_json::from_value(serde_json::Value::String(name.to_ascii_lowercase()))
        .map_err(|_| format!("'{name}' is not a format kappa reads"))
}

/// The statement that makes `definition`, as `SHOW CREATE TABLE` shows it:
/// options in a fixed order, the resolved schema version included.
pub fn create_statement(definition: &TableDefinition) -> String {
    let quote = |text: &str| format!("'{}'", text.replace('\'', "''"));
    let mut sql = format!("CREATE EXTERNAL TABLE {}", quoted_name(&definition.name));
    if let Some(columns) = &definition.columns {
        sql.push_str(&format!(" ({columns})"));
    }
    let topic = definition.topic.as_deref().unwrap_or(&definition.name);
    sql.push_str(&format!(" STORED AS {STORED_AS} LOCATION {}", quote(topic)));
    let mut options = vec![("value.format", definition.format.to_string())];
    if let Some(subject) = &definition.subject {
        options.push(("value.subject", subject.clone()));
    }
    if let Some(version) = definition.schema_version {
        options.push(("value.schema.version", version.to_string()));
    }
    if let Some(message) = &definition.message {
        options.push(("value.protobuf.message", message.clone()));
    }
    if let Some(schema) = &definition.schema {
        options.push(("value.schema", schema.clone()));
    }
    if let Some(format) = definition.key_format {
        options.push(("key.format", format.to_string()));
    }
    if let Some(subject) = &definition.key_subject {
        options.push(("key.subject", subject.clone()));
    }
    if let Some(version) = definition.key_schema_version {
        options.push(("key.schema.version", version.to_string()));
    }
    if let Some(skew) = &definition.timestamp_skew {
        options.push(("timestamp_skew", skew.clone()));
    }
    if let Some(changelog) = &definition.changelog {
        options.push(("changelog", changelog.clone()));
    }
    let options: Vec<String> = options
        .iter()
        .map(|(key, value)| format!("{} {}", quote(key), quote(value)))
        .collect();
    sql.push_str(&format!(" OPTIONS ({})", options.join(", ")));
    sql
}

/// `name` as a SQL identifier, double-quoted so case and punctuation are
/// kept.
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `name`, double-quoted unless it reads the same unquoted.
fn quoted_name(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        quote_identifier(name)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::parser::{DFParser, Statement};

    use super::*;

    fn parse(sql: &str) -> Result<TableDefinition> {
        let mut statements = DFParser::parse_sql(sql).expect("parses");
        match statements.pop_front() {
            Some(Statement::CreateExternalTable(create)) => {
                from_create(&create).map(|c| c.definition)
            }
            other => panic!("not CREATE EXTERNAL TABLE: {other:?}"),
        }
    }

    #[test]
    fn a_json_table_keeps_its_columns_and_options() {
        let def = parse(
            "CREATE EXTERNAL TABLE Orders (id BIGINT, \"userId\" VARCHAR, amount DECIMAL(10,2)) \
             STORED AS KAFKA LOCATION 'orders-v1' OPTIONS ('value.format' 'json', 'timestamp_skew' '30s')",
        )
        .unwrap();
        assert_eq!(def.name, "orders");
        assert_eq!(def.topic.as_deref(), Some("orders-v1"));
        assert_eq!(def.format, FormatName::Json);
        assert_eq!(
            def.columns.as_deref(),
            Some("id BIGINT, \"userId\" VARCHAR, amount DECIMAL(10,2)")
        );
        assert_eq!(def.timestamp_skew.as_deref(), Some("30s"));
    }

    #[test]
    fn the_statement_shown_makes_the_same_definition() {
        let def = parse(
            "CREATE EXTERNAL TABLE kafka.default.\"Pay-Ments\" STORED AS KAFKA LOCATION 'payments' \
             OPTIONS ('value.format' 'avro-confluent', 'value.avro-confluent.subject' 'pay''s', 'value.schema.version' '3')",
        )
        .unwrap();
        assert_eq!(def.name, "Pay-Ments");
        assert_eq!(def.subject.as_deref(), Some("pay's"));
        assert_eq!(def.schema_version, Some(3));
        let shown = create_statement(&def);
        let again = parse(&shown).unwrap();
        assert_eq!(create_statement(&again), shown);
        assert_eq!(again.name, def.name);
        assert_eq!(again.subject, def.subject);
    }

    /// A column list from SQL is read again when the table is resolved: its
    /// errors name the column, as in the statement, not a position in text
    /// the user never wrote.
    #[tokio::test]
    async fn a_bad_column_type_names_the_column() {
        let def = parse(
            "CREATE EXTERNAL TABLE t (id BIGINT, amount NOTATYPE) STORED AS KAFKA LOCATION 't' \
             OPTIONS ('value.format' 'json')",
        )
        .unwrap();
        let err = def.resolve(None).await.unwrap_err().to_string();
        assert!(err.contains("column 'amount': "), "{err}");
        assert!(!err.contains("Line: "), "{err}");
    }

    #[test]
    fn what_kappa_would_ignore_is_refused() {
        for (sql, why) in [
            (
                "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
                "STORED AS CSV",
            ),
            (
                "CREATE EXTERNAL TABLE t STORED AS KAFKA LOCATION 'a/b' OPTIONS ('value.format' 'raw')",
                "not a Kafka topic",
            ),
            (
                "CREATE EXTERNAL TABLE t STORED AS KAFKA LOCATION 't'",
                "'value.format' '…') is required",
            ),
            (
                "CREATE EXTERNAL TABLE t STORED AS KAFKA LOCATION 't' OPTIONS ('value.format' 'xml')",
                "not a format",
            ),
            (
                "CREATE EXTERNAL TABLE t STORED AS KAFKA LOCATION 't' OPTIONS ('value.format' 'raw', 'bogus' 'x')",
                "unknown option 'bogus'",
            ),
            (
                "CREATE EXTERNAL TABLE other.t STORED AS KAFKA LOCATION 't' OPTIONS ('value.format' 'raw')",
                "tables are defined in kafka.default",
            ),
            (
                "CREATE EXTERNAL TABLE t (a INT) STORED AS KAFKA PARTITIONED BY (a) LOCATION 't' OPTIONS ('value.format' 'json')",
                "PARTITIONED BY",
            ),
        ] {
            let err = parse(sql).expect_err(sql).to_string();
            assert!(err.contains(why), "{sql}: {err}");
        }
    }
}

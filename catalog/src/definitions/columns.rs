//! A definition's column list (`id BIGINT, customer VARCHAR`), as in a
//! config file's `columns` or a `CREATE EXTERNAL TABLE`'s column list, read
//! into an Arrow schema by DataFusion's own planner, so that a type means
//! the same here as in a query.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::{CatalogError, Result};
use crate::lake::layout::lake_type;

/// Parses `id BIGINT, name VARCHAR` with DataFusion's SQL planner.
///
/// Strings map to `Utf8` (not `Utf8View`) because several Flight SQL client
/// drivers cannot read view types. Every column is nullable: a missing field
/// or a message that does not decode yields nulls, never a dropped row.
/// DataFusion's SQL has no map type, so a column typed `MAP<K, V>` (or
/// `MAP(K, V)`) is read here, its key and value types by DataFusion.
pub async fn parse_columns(table: &str, columns: &str) -> Result<SchemaRef> {
    let bad = |why: String| CatalogError::Config(format!("table '{table}': columns: {why}"));
    let parts = split_top_level(columns);
    let planned = if parts.iter().any(|c| map_type_text(c).is_some()) {
        let mut fields = Vec::with_capacity(parts.len());
        for column in parts {
            match map_type_text(column) {
                Some((name, key, value)) => {
                    let key = Box::pin(sql_fields(&format!("k {key}")))
                        .await
                        .map_err(bad)?;
                    let value = Box::pin(sql_fields(&format!("v {value}")))
                        .await
                        .map_err(bad)?;
                    let entries = Field::new(
                        "entries",
                        DataType::Struct(
                            vec![
                                Field::new("key", key[0].data_type().clone(), false),
                                Field::new("value", value[0].data_type().clone(), true),
                            ]
                            .into(),
                        ),
                        false,
                    );
                    fields.push(Field::new(
                        name,
                        DataType::Map(Arc::new(entries), false),
                        true,
                    ));
                }
                None => fields.extend(sql_fields(column).await.map_err(bad)?),
            }
        }
        fields
    } else {
        sql_fields(columns).await.map_err(bad)?
    };
    let mut fields = Vec::new();
    for field in planned {
        if field.name().starts_with('_') {
            return Err(bad(format!(
                "column '{}': names starting with '_' are reserved for metadata columns",
                field.name()
            )));
        }
        if !crate::format::json::supports(field.data_type()) {
            return Err(bad(format!(
                "column '{}': type {} is not supported by the json format",
                field.name(),
                field.data_type()
            )));
        }
        fields.push(Field::new(field.name(), lake_type(field.data_type()), true));
    }
    if fields.is_empty() {
        return Err(bad("no columns".into()));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The fields DataFusion's planner makes of a column list.
async fn sql_fields(columns: &str) -> std::result::Result<Vec<Field>, String> {
    let mut config = SessionConfig::new();
    config.options_mut().sql_parser.map_string_types_to_utf8view = false;
    // `userId` stays `userId`: arrow-json matches field names exactly, so a
    // lower-cased name would never match and always read null.
    config.options_mut().sql_parser.enable_ident_normalization = false;
    let ctx = SessionContext::new_with_config(config);
    let sql = format!("CREATE EXTERNAL TABLE t ({columns}) STORED AS CSV LOCATION 'unused'");
    let plan = ctx
        .state()
        .create_logical_plan(&sql)
        .await
        .map_err(|e| e.strip_backtrace())?;
    let LogicalPlan::Ddl(DdlStatement::CreateExternalTable(cmd)) = plan else {
        return Err("not a column list".into());
    };
    Ok(cmd
        .schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect())
}

/// Splits at the commas outside brackets and quotes.
fn split_top_level(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut quoted, mut start) = (Vec::new(), 0i32, false, 0);
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' | '(' if !quoted => depth += 1,
            '>' | ')' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                parts.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(text[start..].trim());
    parts.retain(|p| !p.is_empty());
    parts
}

/// `name MAP<K, V>` (or `MAP(K, V)`) as its name (unquoted) and the texts of
/// K and V; `None` for any other column.
fn map_type_text(column: &str) -> Option<(String, &str, &str)> {
    let (name, rest) = match column.strip_prefix('"') {
        Some(quoted) => {
            let end = quoted.find('"')?;
            (quoted[..end].to_string(), &quoted[end + 1..])
        }
        None => {
            let end = column.find(char::is_whitespace)?;
            (column[..end].to_string(), &column[end..])
        }
    };
    let rest = rest.trim();
    let keyword = rest.get(..3)?;
    if !keyword.eq_ignore_ascii_case("map") {
        return None;
    }
    let inner = rest[3..].trim_start();
    let inner = inner
        .strip_prefix('<')
        .and_then(|i| i.strip_suffix('>'))
        .or_else(|| inner.strip_prefix('(').and_then(|i| i.strip_suffix(')')))?;
    match split_top_level(inner).as_slice() {
        [key, value] => Some((name, key, value)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::ValueDecoder;
    use crate::format::json::JsonDecoder;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

    #[tokio::test]
    async fn json_columns_nest_and_take_decimals_dates_and_timestamps() {
        let schema = parse_columns(
            "t",
            "id BIGINT, address STRUCT<city VARCHAR, zip VARCHAR>, tags ARRAY<VARCHAR>, \
             lines ARRAY<STRUCT<sku VARCHAR, qty INT>>, price DECIMAL(10, 2), day DATE, at TIMESTAMP, \
             attrs MAP<VARCHAR, BIGINT>, \"Per Day\" map(DATE, DOUBLE)",
        )
        .await
        .unwrap();
        let types: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().to_string())
            .collect();
        assert_eq!(types[4], "Decimal128(10, 2)");
        assert_eq!(types[5], "Date32");
        assert_eq!(types[6], "Timestamp(µs)");
        assert_eq!(schema.field(8).name(), "Per Day");
        let mut decoder = JsonDecoder::new(Arc::clone(&schema)).unwrap();
        decoder.append(Some(
            br#"{"id": 1, "address": {"city": "Oslo", "zip": null}, "tags": ["a", "b"],
                 "lines": [{"sku": "x", "qty": 2}], "price": "12.34", "day": "2026-12-06",
                 "at": "2026-12-06T10:00:00.123456Z", "attrs": {"n": 1, "m": 2},
                 "Per Day": {"2026-12-06": 1.5}}"#,
        ));
        let decoded = decoder.finish().unwrap();
        assert!(decoded.errors.is_null(0), "{:?}", decoded.errors);
        let shown: Vec<String> = decoded
            .columns
            .iter()
            .map(|c| {
                ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default())
                    .unwrap()
                    .value(0)
                    .to_string()
            })
            .collect();
        assert_eq!(
            shown,
            [
                "1",
                "{city: Oslo, zip: }",
                "[a, b]",
                "[{sku: x, qty: 2}]",
                "12.34",
                "2026-12-06",
                "2026-12-06T10:00:00.123456",
                "{n: 1, m: 2}",
                "{2026-12-06: 1.5}"
            ]
        );
        assert!(decoded.columns[1].as_struct().column(1).is_null(0));
    }
}

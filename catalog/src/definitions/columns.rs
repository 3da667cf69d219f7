//! A definition's column list (`id BIGINT, customer VARCHAR`), as in a
//! config file's `columns` or a `CREATE EXTERNAL TABLE`'s column list, read
//! into an Arrow schema by DataFusion's own planner, so that a type means
//! the same here as in a query.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{CreateExternalTable, Statement};
use datafusion::sql::sqlparser::ast::{ColumnDef, Ident, ObjectName};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Location, Token};

use crate::error::{CatalogError, Result};
use crate::lake::layout::lake_type;

/// Parses `id BIGINT, name VARCHAR` with DataFusion's SQL planner.
///
/// Strings map to `Utf8` (not `Utf8View`) because several Flight SQL client
/// drivers cannot read view types. Every column is nullable: a missing field
/// or a message that does not decode yields nulls, never a dropped row.
/// DataFusion's SQL has no map type, so a column typed `MAP<K, V>` (or
/// `MAP(K, V)`) is read here, its key and value types by DataFusion.
///
/// A syntax error gives the line and column in `columns` as written; a type
/// the planner refuses names its column.
pub async fn parse_columns(table: &str, columns: &str) -> Result<SchemaRef> {
    let declared = declared_columns(table, columns).await?;
    Ok(Arc::new(lake_columns(&declared)))
}

/// The table's columns of `declared` ones: timestamps in microseconds.
pub(crate) fn lake_columns(declared: &Schema) -> Schema {
    Schema::new(
        declared
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), lake_type(f.data_type()), true))
            .collect::<Vec<_>>(),
    )
}

/// The columns as declared, before timestamps become microseconds: a
/// declared precision says what a JSON number counts.
pub(crate) async fn declared_columns(table: &str, columns: &str) -> Result<SchemaRef> {
    let bad = |why: String| CatalogError::Config(format!("table '{table}': columns: {why}"));
    if declares_nanoseconds(columns) {
        return Err(bad(
            "TIMESTAMP(9): kappa keeps microseconds, the precision Delta Lake stores; declare \
             TIMESTAMP(6) (numbers are microseconds) or TIMESTAMP (numbers are milliseconds)"
                .into(),
        ));
    }
    let planner = Planner::new();
    let mut parts = split_top_level(columns);
    if parts.last().is_some_and(|last| last.is_empty()) {
        // A trailing comma, as DataFusion's own column lists allow.
        parts.pop();
    }
    let mut fields: Vec<Field> = Vec::with_capacity(parts.len());
    for column in parts {
        let field = match map_type_text(column) {
            Some((name, key, value)) => {
                let key = planner
                    .data_type(columns, key)
                    .await
                    .map_err(|e| bad(format!("column '{name}': key: {e}")))?;
                let value = planner
                    .data_type(columns, value)
                    .await
                    .map_err(|e| bad(format!("column '{name}': value: {e}")))?;
                Field::new(name, crate::format::map_type(key, value), true)
            }
            None => planner.column(columns, column).await.map_err(bad)?,
        };
        let name = field.name();
        if name.starts_with('_') {
            return Err(bad(format!(
                "column '{name}': names starting with '_' are reserved for metadata columns"
            )));
        }
        if fields.iter().any(|f| f.name() == name) {
            return Err(bad(format!("column '{name}' is declared twice")));
        }
        if !crate::format::json::supports(field.data_type()) {
            return Err(bad(format!(
                "column '{name}': type {} is not supported by the json format",
                field.data_type()
            )));
        }
        fields.push(Field::new(name, field.data_type().clone(), true));
    }
    if fields.is_empty() {
        return Err(bad("no columns".into()));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// Whether a column list declares `TIMESTAMP(9)` (DataFusion plans it as a
/// bare `TIMESTAMP`, so only the text tells them apart).
fn declares_nanoseconds(columns: &str) -> bool {
    let squeezed: String = columns
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    squeezed.contains("TIMESTAMP(9)")
}

/// Reads column definitions and types with DataFusion's parser and planner
/// (a `CREATE EXTERNAL TABLE` of one column, built as a statement, never as
/// text).
struct Planner {
    state: SessionState,
}

impl Planner {
    fn new() -> Self {
        let mut config = SessionConfig::new();
        config.options_mut().sql_parser.map_string_types_to_utf8view = false;
        // `userId` stays `userId`: arrow-json matches field names exactly, so a
        // lower-cased name would never match and always read null.
        config.options_mut().sql_parser.enable_ident_normalization = false;
        // `TIMESTAMP WITH TIME ZONE` is an instant: kept as UTC, so that
        // `AT TIME ZONE` converts it rather than reading it as local time.
        config.options_mut().execution.time_zone = Some("UTC".into());
        Self {
            state: SessionContext::new_with_config(config).state(),
        }
    }

    /// The field of `column` (`name TYPE [options]`), a part of `columns`.
    async fn column(&self, columns: &str, column: &str) -> std::result::Result<Field, String> {
        let def = parse_in_place(columns, column, "',' or the end of the columns", |parser| {
            parser.parse_column_def()
        })?;
        let name = def.name.value.clone();
        self.field(def)
            .await
            .map_err(|e| format!("column '{name}': {e}"))
    }

    /// The Arrow type of `text`, an SQL type written in `columns`.
    async fn data_type(&self, columns: &str, text: &str) -> std::result::Result<DataType, String> {
        let data_type = parse_in_place(columns, text, "the end of the type", |parser| {
            parser.parse_data_type()
        })?;
        let def = ColumnDef {
            name: Ident::new("t"),
            data_type,
            options: Vec::new(),
        };
        Ok(self.field(def).await?.data_type().clone())
    }

    async fn field(&self, def: ColumnDef) -> std::result::Result<Field, String> {
        let statement = Statement::CreateExternalTable(CreateExternalTable {
            name: ObjectName::from(vec![Ident::new("t")]),
            columns: vec![def],
            file_type: "CSV".into(),
            locations: vec!["unused".into()],
            table_partition_cols: Vec::new(),
            order_exprs: Vec::new(),
            if_not_exists: false,
            or_replace: false,
            temporary: false,
            unbounded: false,
            options: Vec::new(),
            constraints: Vec::new(),
        });
        let plan = self
            .state
            .statement_to_plan(statement)
            .await
            .map_err(|e| e.strip_backtrace())?;
        match plan {
            LogicalPlan::Ddl(DdlStatement::CreateExternalTable(cmd)) => {
                match cmd.schema.fields().first() {
                    Some(field) => Ok(field.as_ref().clone()),
                    None => Err("not a column".into()),
                }
            }
            _ => Err("not a column".into()),
        }
    }
}

/// `part` (a slice of `whole`) parsed by `parse`, which must take all of it
/// (else: expected `end`). The parser reads `whole` with everything outside
/// `part` blanked, so the lines and columns its errors give are those of
/// `whole`, the text the user wrote.
fn parse_in_place<T>(
    whole: &str,
    part: &str,
    end: &str,
    parse: impl FnOnce(&mut Parser<'_>) -> std::result::Result<T, ParserError>,
) -> std::result::Result<T, String> {
    let start = offset_in(whole, part);
    let stop = start + part.len();
    let blanked: String = whole
        .char_indices()
        .map(|(i, c)| {
            if (start..stop).contains(&i) || c.is_whitespace() {
                c
            } else {
                ' '
            }
        })
        .collect();
    let dialect = GenericDialect {};
    let parsed = Parser::new(&dialect)
        .try_with_sql(&blanked)
        .and_then(|mut parser| {
            let parsed = parse(&mut parser)?;
            match parser.peek_token().token {
                Token::EOF => Ok(parsed),
                _ => parser.expected(end, parser.peek_token()),
            }
        });
    parsed.map_err(|e| {
        let message = match e {
            ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
            ParserError::RecursionLimitExceeded => "nested too deeply".into(),
        };
        // The end of the part has no token, so no position: give it one.
        match message.strip_suffix("found: EOF") {
            Some(head) => format!(
                "{head}found: the end of the column{}",
                location_of(whole, stop)
            ),
            None => message,
        }
    })
}

/// Where `part` starts in `whole`, of which it is a slice.
fn offset_in(whole: &str, part: &str) -> usize {
    let offset = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    assert!(
        offset <= whole.len() && offset + part.len() <= whole.len(),
        "a part of the column list"
    );
    offset
}

/// Byte `offset` of `text` as the parser says a position.
fn location_of(text: &str, offset: usize) -> Location {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    Location::new(line as u64, column as u64)
}

/// Splits at the commas outside brackets and quotes; each part is trimmed,
/// and empty where two commas meet.
fn split_top_level(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut quote, mut start) = (Vec::new(), 0i32, None, 0);
    for (i, c) in text.char_indices() {
        match (c, quote) {
            ('"' | '\'', None) => quote = Some(c),
            (c, Some(open)) if c == open => quote = None,
            (_, Some(_)) => {}
            ('<' | '(', None) => depth += 1,
            ('>' | ')', None) => depth -= 1,
            (',', None) if depth == 0 => {
                parts.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(text[start..].trim());
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

    async fn error(columns: &str) -> String {
        parse_columns("t", columns)
            .await
            .expect_err(columns)
            .to_string()
    }

    /// Lines and columns are those of the list as written, never of a
    /// statement the list was put into.
    #[tokio::test]
    async fn syntax_errors_point_into_the_column_list() {
        for (columns, at) in [
            // 29 characters: the list ends where a number is expected.
            (
                "id BIGINT, amount DECIMAL(10,",
                "found: the end of the column at Line: 1, Column: 30",
            ),
            ("id BIGINT x INT", "found: x at Line: 1, Column: 11"),
            (
                "id BIGINT,\n  amount DECIMAL(10 2)",
                "found: 2 at Line: 2, Column: 21",
            ),
            ("id BIGINT,, b INT", "at Line: 1, Column: 11"),
            ("m MAP<VARCHAR, DECIMAL(10,>", "at Line: 1, Column: 27"),
            (
                "m MAP<VARCHAR, BIGINT>, n INT) STORED AS CSV",
                "found: ) at Line: 1, Column: 30",
            ),
        ] {
            let err = error(columns).await;
            assert!(err.contains("table 't': columns: "), "{columns:?}: {err}");
            assert!(err.contains(at), "{columns:?}: {err}");
            assert!(
                !err.contains("STORED") && !err.contains("CREATE"),
                "{columns:?}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn type_errors_name_the_column() {
        let err = error("id BIGINT, amount NOTATYPE").await;
        assert!(err.contains("column 'amount': "), "{err}");
        assert!(err.contains("NOTATYPE"), "{err}");
        let err = error("id BIGINT, id VARCHAR").await;
        assert!(err.contains("column 'id'"), "{err}");
    }

    #[tokio::test]
    async fn a_list_is_one_list_of_columns() {
        // Commas in quotes do not split a column; a trailing comma is
        // allowed, as DataFusion allows it.
        let schema = parse_columns("t", "id BIGINT COMMENT 'a, b', \"x, y\" INT,")
            .await
            .unwrap();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "x, y"]);
        // What follows a list is not a statement.
        let err = error("id INT) STORED AS CSV LOCATION '/etc/passwd'; --").await;
        assert!(err.contains("Line: 1, Column: 7"), "{err}");
    }

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

//! `CommandGetSqlInfo`: what the SQL engine behind kappa supports, in the
//! terms of JDBC's `DatabaseMetaData` (which the Flight SQL JDBC driver
//! answers from these values).
//!
//! Every id a read-only SQL engine can answer is filled: the JDBC driver
//! unboxes a missing value into a `NullPointerException`, so one gap breaks
//! a BI tool (DBeaver asks for most of them when it connects). Keywords and
//! function lists come from the parser and function registry the gateway
//! runs, not from a hand-kept copy, so they follow DataFusion upgrades.

use std::collections::BTreeMap;

use arrow::compute::can_cast_types;
use arrow::datatypes::{DataType, IntervalUnit, TimeUnit};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{
    SqlInfo, SqlNullOrdering, SqlOuterJoinsSupportLevel, SqlSupportedCaseSensitivity,
    SqlSupportedGroupBy, SqlSupportedResultSetConcurrency, SqlSupportedResultSetType,
    SqlSupportedSubqueries, SqlSupportedTransaction, SqlSupportedUnions, SqlSupportsConvert,
    SqlTransactionIsolationLevel, SupportedSqlGrammar,
};
use datafusion::execution::SessionStateBuilder;
use datafusion::sql::sqlparser::keywords::ALL_KEYWORDS;

/// GetSqlInfo's answers, built once per service.
pub struct SqlInfoAnswers(SqlInfoData);

impl SqlInfoAnswers {
    /// The answers of a gateway that takes SQL of at most
    /// `max_statement_bytes` (`--max-sql-bytes`).
    pub fn new(max_statement_bytes: usize) -> Self {
        let mut b = SqlInfoDataBuilder::new();
        server(&mut b);
        syntax(&mut b);
        capabilities(&mut b);
        limits(&mut b, max_statement_bytes);
        transactions(&mut b);
        Self(b.build().expect("static SqlInfo is valid"))
    }
}

impl std::ops::Deref for SqlInfoAnswers {
    type Target = SqlInfoData;

    fn deref(&self) -> &SqlInfoData {
        &self.0
    }
}

/// `SqlInfoData` has no `Debug`; the service's does not need the values.
impl std::fmt::Debug for SqlInfoAnswers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqlInfoAnswers")
    }
}

/// A bitmask of enum values (how Flight SQL encodes "which of these").
fn bits<T: Into<i32>>(values: impl IntoIterator<Item = T>) -> i32 {
    values.into_iter().fold(0, |mask, v| mask | (1 << v.into()))
}

fn server(b: &mut SqlInfoDataBuilder) {
    b.append(SqlInfo::FlightSqlServerName, "kappa");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    // CancelFlightInfo stops a running query.
    b.append(SqlInfo::FlightSqlServerCancel, true);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, false);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    // Handles carry their SQL and parameters, so they never expire (only
    // the bindings kept for clients that ignore DoPut's handle do).
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
}

/// Identifiers, keywords and functions as DataFusion's SQL reads them.
fn syntax(b: &mut SqlInfoDataBuilder) {
    // Unquoted names are folded to lower case (`FROM Orders` reads `orders`).
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    // Quoted names keep their case and compare case-sensitively; the enum
    // has no value for that (CASE_INSENSITIVE means "stored mixed, compared
    // without case"), so it is UNKNOWN, as other Flight SQL servers say.
    b.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityUnknown as i32,
    );
    // DataFusion's default (`nulls_max`): nulls sort as the largest value.
    b.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    b.append(SqlInfo::SqlKeywords, keywords());
    let functions = FunctionLists::of_datafusion();
    b.append(SqlInfo::SqlNumericFunctions, functions.numeric);
    b.append(SqlInfo::SqlStringFunctions, functions.string);
    b.append(SqlInfo::SqlSystemFunctions, functions.system);
    b.append(SqlInfo::SqlDatetimeFunctions, functions.datetime);
    // The escape of `_` and `%` in GetTables patterns (see `exact_name`).
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    // sqlparser's generic dialect also takes these in unquoted names.
    b.append(SqlInfo::SqlExtraNameCharacters, "@$#");
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlProcedureTerm, "procedure");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlCatalogAtStart, true);
}

/// What a query may use.
fn capabilities(b: &mut SqlInfoDataBuilder) {
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    // GetTables lists only what the caller may read.
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlSupportsConvert, convertible());
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    // "Restricted to differ from the table names": DataFusion does not.
    b.append(SqlInfo::SqlSupportsDifferentTableCorrelationNames, false);
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    b.append(
        SqlInfo::SqlSupportedGroupBy,
        bits([
            SqlSupportedGroupBy::SqlGroupByUnrelated,
            SqlSupportedGroupBy::SqlGroupByBeyondSelect,
        ]),
    );
    // `LIKE … ESCAPE '\'`: DataFusion takes the backslash only.
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    // `_partition` and `_offset` are NOT NULL.
    b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    b.append(
        SqlInfo::SqlSupportedGrammar,
        bits([
            SupportedSqlGrammar::SqlMinimumGrammar,
            SupportedSqlGrammar::SqlCoreGrammar,
        ]),
    );
    // ANSI92_ENTRY_SQL (0; arrow-flight does not export that enum).
    b.append(SqlInfo::SqlAnsi92SupportedLevel, bits([0]));
    b.append(SqlInfo::SqlSupportsIntegrityEnhancementFacility, false);
    // An ordinal, not a bitmask (the proto says so; the JDBC driver reads
    // it as a bitmask and so answers supportsFullOuterJoins() false).
    b.append(
        SqlInfo::SqlOuterJoinsSupportLevel,
        SqlOuterJoinsSupportLevel::SqlFullOuterJoins as i32,
    );
    b.append(SqlInfo::SqlSchemasSupportedActions, 0i32);
    b.append(SqlInfo::SqlCatalogsSupportedActions, 0i32);
    b.append(SqlInfo::SqlSupportedPositionedCommands, 0i32);
    b.append(SqlInfo::SqlSelectForUpdateSupported, false);
    b.append(SqlInfo::SqlStoredProceduresSupported, false);
    b.append(
        SqlInfo::SqlSupportedSubqueries,
        bits([
            SqlSupportedSubqueries::SqlSubqueriesInComparisons,
            SqlSupportedSubqueries::SqlSubqueriesInExists,
            SqlSupportedSubqueries::SqlSubqueriesInIns,
            SqlSupportedSubqueries::SqlSubqueriesInQuantifieds,
        ]),
    );
    b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
    b.append(
        SqlInfo::SqlSupportedUnions,
        bits([
            SqlSupportedUnions::SqlUnion,
            SqlSupportedUnions::SqlUnionAll,
        ]),
    );
    b.append(
        SqlInfo::SqlSupportedResultSetTypes,
        bits([SqlSupportedResultSetType::SqlResultSetTypeForwardOnly]),
    );
    let read_only = bits([SqlSupportedResultSetConcurrency::SqlResultSetConcurrencyReadOnly]);
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetUnspecified,
        read_only,
    );
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetForwardOnly,
        read_only,
    );
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollSensitive,
        0i32,
    );
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollInsensitive,
        0i32,
    );
    b.append(SqlInfo::SqlBatchUpdatesSupported, false);
    b.append(SqlInfo::SqlNamedParametersSupported, false);
    b.append(SqlInfo::SqlLocatorsUpdateCopy, false);
    b.append(SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported, false);
}

/// Maximum lengths and counts: 0 is "no limit or unknown" (JDBC's words).
/// Table names are Kafka topic names, at most 249 characters. A statement
/// is refused past `max_statement_bytes` of UTF-8: JDBC counts characters,
/// which is that many for ASCII (as SQL mostly is) and fewer for other text.
fn limits(b: &mut SqlInfoDataBuilder, max_statement_bytes: usize) {
    const TOPIC_NAME_MAX: i64 = 249;
    let max_statement = i64::try_from(max_statement_bytes).unwrap_or(0);
    for (info, value) in [
        (SqlInfo::SqlMaxBinaryLiteralLength, 0),
        (SqlInfo::SqlMaxCharLiteralLength, 0),
        (SqlInfo::SqlMaxColumnNameLength, 0),
        (SqlInfo::SqlMaxColumnsInGroupBy, 0),
        (SqlInfo::SqlMaxColumnsInIndex, 0),
        (SqlInfo::SqlMaxColumnsInOrderBy, 0),
        (SqlInfo::SqlMaxColumnsInSelect, 0),
        (SqlInfo::SqlMaxColumnsInTable, 0),
        (SqlInfo::SqlMaxConnections, 0),
        (SqlInfo::SqlMaxCursorNameLength, 0),
        (SqlInfo::SqlMaxIndexLength, 0),
        (SqlInfo::SqlDbSchemaNameLength, 0),
        (SqlInfo::SqlMaxProcedureNameLength, 0),
        (SqlInfo::SqlMaxCatalogNameLength, 0),
        (SqlInfo::SqlMaxRowSize, 0),
        (SqlInfo::SqlMaxStatementLength, max_statement),
        (SqlInfo::SqlMaxStatements, 0),
        (SqlInfo::SqlMaxTableNameLength, TOPIC_NAME_MAX),
        (SqlInfo::SqlMaxTablesInSelect, 0),
        (SqlInfo::SqlMaxUsernameLength, 0),
    ] {
        b.append(info, value);
    }
    b.append(SqlInfo::SqlMaxRowSizeIncludesBlobs, false);
}

/// No transactions: every query reads its own snapshot.
fn transactions(b: &mut SqlInfoDataBuilder) {
    // An int64, not the int32 the proto names: the JDBC driver casts this
    // one to Long and fails on an Integer.
    b.append(
        SqlInfo::SqlDefaultTransactionIsolation,
        SqlTransactionIsolationLevel::SqlTransactionNone as i64,
    );
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(
        SqlInfo::SqlSupportedTransactionsIsolationLevels,
        bits([SqlTransactionIsolationLevel::SqlTransactionNone]),
    );
    b.append(SqlInfo::SqlDataDefinitionCausesTransactionCommit, false);
    b.append(SqlInfo::SqlDataDefinitionsInTransactionsIgnored, false);
    b.append(SqlInfo::SqlSavepointsSupported, false);
}

/// The parser's keywords.
fn keywords() -> Vec<String> {
    ALL_KEYWORDS.iter().map(|k| k.to_string()).collect()
}

/// DataFusion's scalar functions (names and aliases) sorted into JDBC's
/// four lists by the section of DataFusion's own documentation they are in.
#[derive(Debug, Default)]
struct FunctionLists {
    numeric: Vec<String>,
    string: Vec<String>,
    system: Vec<String>,
    datetime: Vec<String>,
}

impl FunctionLists {
    fn of_datafusion() -> Self {
        let state = SessionStateBuilder::new().with_default_features().build();
        let mut lists = Self::default();
        for (name, udf) in state.scalar_functions() {
            let Some(section) = udf.documentation().map(|d| d.doc_section.label) else {
                continue;
            };
            let list = match section {
                "Math Functions" => &mut lists.numeric,
                "String Functions"
                | "Binary String Functions"
                | "Regular Expression Functions"
                | "Hashing Functions" => &mut lists.string,
                "Time and Date Functions" => &mut lists.datetime,
                "Conditional Functions" | "Other Functions" => &mut lists.system,
                // Array, struct, map and union functions have no JDBC list.
                _ => continue,
            };
            list.push(name.to_uppercase());
        }
        for list in [
            &mut lists.numeric,
            &mut lists.string,
            &mut lists.system,
            &mut lists.datetime,
        ] {
            list.sort();
            list.dedup();
        }
        lists
    }
}

/// Which SQL types `CAST` converts between, from the casts Arrow can do
/// between a representative Arrow type of each.
fn convertible() -> BTreeMap<i32, Vec<i32>> {
    use SqlSupportsConvert as C;
    let types = [
        (C::SqlConvertBigint, DataType::Int64),
        (C::SqlConvertBinary, DataType::Binary),
        (C::SqlConvertBit, DataType::Boolean),
        (C::SqlConvertChar, DataType::Utf8),
        (C::SqlConvertDate, DataType::Date32),
        (C::SqlConvertDecimal, DataType::Decimal128(38, 10)),
        (C::SqlConvertFloat, DataType::Float64),
        (C::SqlConvertInteger, DataType::Int32),
        (
            C::SqlConvertIntervalDayTime,
            DataType::Interval(IntervalUnit::MonthDayNano),
        ),
        (
            C::SqlConvertIntervalYearMonth,
            DataType::Interval(IntervalUnit::YearMonth),
        ),
        (C::SqlConvertLongvarbinary, DataType::LargeBinary),
        (C::SqlConvertLongvarchar, DataType::LargeUtf8),
        (C::SqlConvertNumeric, DataType::Decimal128(38, 10)),
        (C::SqlConvertReal, DataType::Float32),
        (C::SqlConvertSmallint, DataType::Int16),
        (C::SqlConvertTime, DataType::Time64(TimeUnit::Microsecond)),
        (
            C::SqlConvertTimestamp,
            DataType::Timestamp(TimeUnit::Microsecond, None),
        ),
        (C::SqlConvertTinyint, DataType::Int8),
        (C::SqlConvertVarbinary, DataType::Binary),
        (C::SqlConvertVarchar, DataType::Utf8),
    ];
    types
        .iter()
        .map(|(from, from_type)| {
            let to = types
                .iter()
                .filter(|(_, to_type)| can_cast_types(from_type, to_type))
                .map(|(to, _)| *to as i32)
                .collect();
            (*from as i32, to)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_lists_hold_datafusions_functions() {
        let lists = FunctionLists::of_datafusion();
        assert!(lists.numeric.contains(&"ABS".to_string()), "{lists:?}");
        assert!(lists.string.contains(&"UPPER".to_string()));
        assert!(lists.datetime.contains(&"DATE_TRUNC".to_string()));
        assert!(lists.system.contains(&"COALESCE".to_string()));
        assert!(!lists.numeric.contains(&"UPPER".to_string()));
    }

    #[test]
    fn casts_follow_arrow() {
        let map = convertible();
        let varchar = SqlSupportsConvert::SqlConvertVarchar as i32;
        let bigint = SqlSupportsConvert::SqlConvertBigint as i32;
        assert!(map[&bigint].contains(&varchar));
        assert!(map[&varchar].contains(&bigint));
    }

    #[test]
    fn every_sql_info_a_read_only_engine_answers_is_there() {
        let batch = SqlInfoAnswers::new(1024).record_batch([]).unwrap();
        // All of 0..=11, 100, 101 and 500..=576, less the two Substrait
        // versions (no value says "null" in a SqlInfo union).
        assert_eq!(batch.num_rows(), 12 - 2 + 2 + 77);
    }
}

//! The one place where errors become gRPC statuses.
//!
//! Classification is by category of the root cause: what the user got wrong
//! is InvalidArgument, a missing thing NotFound, a dependency that is down
//! Unavailable, a limit ResourceExhausted, and anything else Internal. The
//! message is the root cause's, without backtraces or debug output, capped.

use datafusion::common::{Column, SchemaError};
use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;
use kappa_catalog::error::{ErrorKind, kind_from_another_gateway};
use kappa_catalog::{CATALOG, CatalogError, SCHEMA};

use crate::auth::AuthError;
use crate::distributed::ClusterError;
use crate::limits::LimitError;
use crate::prepared::ParamError;
use tonic::{Code, Status};

/// Longest message sent to a client.
const MAX_MESSAGE_LEN: usize = 4096;

/// Maps a DataFusion error (which may wrap a catalog error) to a status.
pub fn datafusion_status(err: &DataFusionError) -> Status {
    let root = err.find_root();
    // A catalog error raised by a task on another gateway arrives as text,
    // its kind beside it; one run here still has its own type, and is
    // mapped below as any other.
    if let Some(kind) = kind_from_another_gateway(err) {
        match root {
            DataFusionError::External(inner) if inner.is::<CatalogError>() => {}
            DataFusionError::External(inner) => {
                return status(catalog_code(kind), inner.to_string());
            }
            _ => return status(catalog_code(kind), message_of(root)),
        }
    }
    let code = match root {
        DataFusionError::External(inner) => {
            if let Some(auth) = inner.downcast_ref::<AuthError>() {
                return auth_status(auth);
            }
            if let Some(limit) = inner.downcast_ref::<LimitError>() {
                return limit_status(limit);
            }
            if let Some(cluster) = inner.downcast_ref::<ClusterError>() {
                let code = match cluster {
                    // Retrying does not help: the cluster is set up wrong.
                    ClusterError::Refused(_) => Code::FailedPrecondition,
                    _ => Code::Unavailable,
                };
                return status(code, cluster.to_string());
            }
            match inner.downcast_ref::<CatalogError>() {
                Some(catalog) => return catalog_status(catalog),
                None => Code::Internal,
            }
        }
        // A table that is not there, in `FROM` as in `tail(…)`.
        DataFusionError::Plan(_) if missing_table(root).is_some() => Code::NotFound,
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::Configuration(_) => Code::InvalidArgument,
        // Errors in the data a query computes on (a failed cast, a division
        // by zero) are the query's, not kappa's.
        DataFusionError::ArrowError(inner, _) if is_user_arrow_error(inner) => {
            Code::InvalidArgument
        }
        // What a function refuses at run time (`LIKE … ESCAPE '!'`, a bad
        // regex): DataFusion raises these for its arguments, so the query's.
        DataFusionError::Execution(_) => Code::InvalidArgument,
        DataFusionError::NotImplemented(_) => Code::Unimplemented,
        DataFusionError::ResourcesExhausted(_) => Code::ResourceExhausted,
        _ => Code::Internal,
    };
    let message = message_of(root);
    // The memory pool's refusal, wherever it is wrapped (some operators
    // pass it on as text inside another error).
    if let Some(at) = message.find(RESOURCES_EXHAUSTED) {
        return status(Code::ResourceExhausted, memory_message(&message[at..]));
    }
    status(code, message)
}

const RESOURCES_EXHAUSTED: &str = "Resources exhausted: ";

/// A memory-pool refusal as a user reads it: which limit, and how to raise
/// it, without the pool's list of consumers.
fn memory_message(refusal: &str) -> String {
    let what = refusal[RESOURCES_EXHAUSTED.len()..]
        .lines()
        .next()
        .unwrap_or_default();
    let what = what
        .split(" with top memory consumers")
        .next()
        .unwrap_or(what)
        .trim_end_matches([':', '.', ' ']);
    if what.contains("--memory-limit") {
        return what.to_string();
    }
    format!(
        "the query needs more memory than --memory-limit allows ({what}); raise --memory-limit \
         (KAPPA_MEMORY_LIMIT) or narrow the query"
    )
}

/// The root cause's message as a user should read it: DataFusion shows a
/// parser's error as its Rust value (`ParserError("Expected: …")`), names a
/// missing table with the default catalog and schema, and answers a column
/// named in the wrong case with a setting `SET` refuses.
fn message_of(root: &DataFusionError) -> String {
    if let Some(table) = missing_table(root) {
        return format!("table '{table}' not found");
    }
    match root {
        DataFusionError::SchemaError(schema, _) => match schema.as_ref() {
            SchemaError::FieldNotFound {
                field,
                valid_fields,
            } => quote_to_match_case(&root.to_string(), field.name(), valid_fields),
            _ => root.to_string(),
        },
        DataFusionError::SQL(parser, _) => match parser.as_ref() {
            ParserError::TokenizerError(message) | ParserError::ParserError(message) => {
                format!("SQL error: {message}")
            }
            ParserError::RecursionLimitExceeded => {
                "SQL error: the statement nests too deeply".to_string()
            }
        },
        other => other.to_string(),
    }
}

/// The table DataFusion's planner found missing (`table
/// 'kafka.default.x' not found`), named as a user names it: without the
/// default catalog and schema.
fn missing_table(root: &DataFusionError) -> Option<&str> {
    let DataFusionError::Plan(message) = root else {
        return None;
    };
    let message = message.split(DataFusionError::BACK_TRACE_SEP).next()?;
    let resolved = message
        .strip_prefix("table '")?
        .strip_suffix("' not found")?;
    let Some(in_catalog) = resolved
        .strip_prefix(CATALOG)
        .and_then(|rest| rest.strip_prefix('.'))
    else {
        return Some(resolved);
    };
    Some(
        in_catalog
            .strip_prefix(SCHEMA)
            .and_then(|table| table.strip_prefix('.'))
            .unwrap_or(in_catalog),
    )
}

/// DataFusion's message for a column named in the wrong case (`userid` for
/// `"userId"`) says to quote it or to turn off identifier normalization,
/// which `SET` refuses here: it says only to quote it.
fn quote_to_match_case(message: &str, asked: &str, valid: &[Column]) -> String {
    const SENTENCE: &str = "\nColumn names are case sensitive";
    const END: &str = "enable_ident_normalization configuration.";
    let Some(start) = message.find(SENTENCE) else {
        return message.to_string();
    };
    let Some(end) = message[start..].find(END).map(|at| start + at + END.len()) else {
        return message.to_string();
    };
    let lower = asked.to_lowercase();
    let advice = match valid
        .iter()
        .find(|column| column.name() != asked && column.name().to_lowercase() == lower)
    {
        Some(column) => format!("quote it as \"{}\"", column.name().replace('"', "\"\"")),
        None => "quote the column's name as it is written in the table".to_string(),
    };
    format!(
        "{}{SENTENCE}: {advice}.{}",
        &message[..start],
        &message[end..]
    )
}

/// A name written unquoted that SQL reads as something else than one table
/// name, though a topic may be named so: `payments.avro` (table `avro` of a
/// schema `payments`) or `checkout-events` (`checkout`, then `- events`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unquoted {
    /// The keyword before the name: `FROM`, `JOIN` or `DESCRIBE`.
    keyword: &'static str,
    /// The name as written.
    name: String,
}

impl Unquoted {
    /// The name as written, which quoted would name one table.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `status` with a hint to quote the name.
    pub fn hint(&self, status: &Status) -> Status {
        let Self { keyword, name } = self;
        let hint = if name.contains('-') {
            format!("topic names with '-' must be quoted: {keyword} \"{name}\"")
        } else {
            format!("if you meant the topic \"{name}\", quote it: {keyword} \"{name}\"")
        };
        self::status(status.code(), format!("{}; {hint}", status.message()))
    }
}

/// The name in `sql` whose missing quotes `err` may come from: a dotted
/// name that is the missing table, or a name with dashes where the parser
/// stopped at a `-` or where one of its parts is the missing table or
/// column.
pub fn unquoted_name(sql: &str, err: &DataFusionError) -> Option<Unquoted> {
    let root = err.find_root();
    let names = unquoted_names(sql);
    if let Some(table) = missing_table(root)
        && let Some(dotted) = names
            .iter()
            .find(|n| !n.name.contains('-') && n.name.to_lowercase() == table)
    {
        return Some(dotted.clone());
    }
    let missing = match root {
        DataFusionError::SQL(parser, _) => {
            return match parser.as_ref() {
                ParserError::ParserError(message) if message.contains("found: -") => {
                    names.into_iter().find(|n| n.name.contains('-'))
                }
                _ => None,
            };
        }
        DataFusionError::SchemaError(schema, _) => match schema.as_ref() {
            SchemaError::FieldNotFound { field, .. } => field.name().to_string(),
            _ => return None,
        },
        _ => missing_table(root)?.to_string(),
    };
    names.into_iter().find(|n| {
        n.name.contains('-')
            && n.name
                .split(['-', '.'])
                .any(|part| part.to_lowercase() == missing)
    })
}

/// The unquoted names with a `.` or a `-` after `FROM`, `JOIN` and
/// `DESCRIBE` in `sql`.
fn unquoted_names(sql: &str) -> Vec<Unquoted> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Vec::new();
    };
    let mut names = Vec::new();
    let mut at = 0;
    while at < tokens.len() {
        let keyword = match &tokens[at] {
            Token::Word(word) if word.quote_style.is_none() => match word.keyword {
                Keyword::FROM => "FROM",
                Keyword::JOIN => "JOIN",
                Keyword::DESCRIBE => "DESCRIBE",
                _ => {
                    at += 1;
                    continue;
                }
            },
            _ => {
                at += 1;
                continue;
            }
        };
        at += 1;
        while matches!(tokens.get(at), Some(Token::Whitespace(_))) {
            at += 1;
        }
        let mut name = String::new();
        while let Some(token) = tokens.get(at) {
            match token {
                Token::Word(word) if word.quote_style.is_none() => name.push_str(&word.value),
                Token::Number(digits, _) if !name.is_empty() => name.push_str(digits),
                Token::Minus | Token::Period if !name.is_empty() => {
                    name.push_str(&token.to_string())
                }
                _ => break,
            }
            at += 1;
        }
        let is_one_name = name.ends_with(|c: char| c != '-' && c != '.');
        if is_one_name && name.contains(['-', '.']) {
            names.push(Unquoted { keyword, name });
        }
    }
    names
}

fn is_user_arrow_error(err: &arrow::error::ArrowError) -> bool {
    use arrow::error::ArrowError;
    matches!(
        err,
        ArrowError::CastError(_)
            | ArrowError::ParseError(_)
            | ArrowError::DivideByZero
            | ArrowError::ArithmeticOverflow(_)
            | ArrowError::InvalidArgumentError(_)
    )
}

/// Maps a catalog error to a status.
pub fn catalog_status(err: &CatalogError) -> Status {
    status(catalog_code(err.kind()), err.to_string())
}

/// The gRPC code of a catalog error of `kind`, raised here or on another
/// gateway.
fn catalog_code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::Config
        | ErrorKind::Definition
        | ErrorKind::NotStreamable
        | ErrorKind::InvalidSnapshot => Code::InvalidArgument,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::TableNotFound => Code::NotFound,
        ErrorKind::TooManyStreams => Code::ResourceExhausted,
        ErrorKind::StreamFellBehind => Code::Aborted,
        ErrorKind::TopicNotFound => Code::NotFound,
        ErrorKind::BrokerUnavailable | ErrorKind::Kafka | ErrorKind::Lake | ErrorKind::Registry => {
            Code::Unavailable
        }
        // History that no tier holds any more.
        ErrorKind::HistoryGap | ErrorKind::SnapshotLost => Code::DataLoss,
        // The snapshot changed under the query: running it again succeeds.
        ErrorKind::RecordsVanished => Code::Aborted,
        ErrorKind::InvalidRecord | ErrorKind::Arrow => Code::Internal,
    }
}

/// Maps an error in a statement handle or its bound parameters to a status.
pub fn param_status(err: &ParamError) -> Status {
    let code = match err {
        ParamError::Encode(_) => Code::Internal,
        ParamError::MalformedHandle(_)
        | ParamError::Count { .. }
        | ParamError::Unbound(_)
        | ParamError::Type { .. }
        | ParamError::Value { .. }
        | ParamError::Named(_)
        | ParamError::MixedStyles => Code::InvalidArgument,
    };
    status(code, err.to_string())
}

/// Maps a refused caller to a status.
pub fn auth_status(err: &AuthError) -> Status {
    let code = match err {
        AuthError::Missing | AuthError::Rejected(_) => Code::Unauthenticated,
        AuthError::NotGranted(_) => Code::PermissionDenied,
        AuthError::Config(_) => Code::Internal,
    };
    status(code, err.to_string())
}

/// Maps a limit a query hit to a status.
pub fn limit_status(err: &LimitError) -> Status {
    let code = match err {
        LimitError::Busy { .. } => Code::ResourceExhausted,
        LimitError::Timeout(_) => Code::DeadlineExceeded,
        LimitError::SqlTooLong { .. } => Code::InvalidArgument,
        // Clients retry elsewhere.
        LimitError::ShuttingDown
        | LimitError::ShutdownGraceOver(_)
        | LimitError::StreamShutDown => Code::Unavailable,
    };
    status(code, err.to_string())
}

/// An InvalidArgument status for a malformed request.
pub fn invalid_request(what: impl std::fmt::Display) -> Status {
    status(Code::InvalidArgument, what.to_string())
}

/// An Internal status for an error in kappa itself.
pub fn internal(what: impl std::fmt::Display) -> Status {
    status(Code::Internal, what.to_string())
}

fn status(code: Code, message: String) -> Status {
    let mut message = strip_backtrace(message);
    if message.len() > MAX_MESSAGE_LEN {
        let mut cut = MAX_MESSAGE_LEN;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    Status::new(code, message)
}

fn strip_backtrace(message: String) -> String {
    match message.split_once("\n\nbacktrace:") {
        Some((head, _)) => head.to_string(),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_refusal_is_resource_exhausted_however_it_is_wrapped() {
        let refusal = "Resources exhausted: Additional allocation failed for CrossJoinExec[0] with \
                       top memory consumers (across reservations) as:\n  CrossJoinExec#3(can spill: \
                       false) consumed 60.0 MB, peak 60.0 MB.\nError: Failed to allocate additional \
                       4.0 MB for CrossJoinExec[0] with 60.0 MB already allocated";
        for wrapped in [
            DataFusionError::ResourcesExhausted(refusal["Resources exhausted: ".len()..].into()),
            DataFusionError::Execution(format!("Join Error: {refusal}")),
            DataFusionError::External(Box::new(std::io::Error::other(refusal.to_string()))),
        ] {
            let status = datafusion_status(&wrapped);
            assert_eq!(status.code(), Code::ResourceExhausted, "{wrapped}");
            assert_eq!(
                status.message(),
                "the query needs more memory than --memory-limit allows (Additional allocation \
                 failed for CrossJoinExec[0]); raise --memory-limit (KAPPA_MEMORY_LIMIT) or narrow \
                 the query"
            );
        }
    }
    use std::sync::Arc;

    #[test]
    fn wrapped_catalog_errors_keep_their_category() {
        let err = DataFusionError::Context(
            "scan".into(),
            Box::new(DataFusionError::Shared(Arc::new(
                DataFusionError::External(Box::new(CatalogError::BrokerUnavailable("down".into()))),
            ))),
        );
        let status = datafusion_status(&err);
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("down"), "{}", status.message());
    }

    #[test]
    fn parser_errors_read_as_the_parsers_message() {
        let parsed = datafusion::sql::sqlparser::parser::Parser::parse_sql(
            &datafusion::sql::sqlparser::dialect::GenericDialect {},
            "SELEC 1",
        );
        let err = DataFusionError::from(parsed.expect_err("not SQL"));
        let status = datafusion_status(&err);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "SQL error: Expected: an SQL statement, found: SELEC at Line: 1, Column: 1"
        );
    }

    #[test]
    fn planning_errors_are_invalid_arguments() {
        for message in [
            "table function 'x' not found",
            "table 'x' not found in a way DataFusion never says",
            "Projections require unique expression names",
        ] {
            let status = datafusion_status(&DataFusionError::Plan(message.into()));
            assert_eq!(status.code(), Code::InvalidArgument, "{message}");
            assert!(status.message().contains(message), "{}", status.message());
        }
    }

    /// What DataFusion's planner says of a table no catalog has: a plan
    /// error with a diagnostic.
    fn missing(resolved: &str) -> DataFusionError {
        DataFusionError::Plan(format!("table '{resolved}' not found")).with_diagnostic(
            datafusion::common::Diagnostic::new_error("table not found", None),
        )
    }

    #[test]
    fn a_missing_table_is_not_found_and_named_as_the_user_names_it() {
        for (resolved, named) in [
            ("kafka.default.orders", "orders"),
            ("kafka.default.payments.avro", "payments.avro"),
            ("kafka.payments.avro", "payments.avro"),
            ("kafka.system.nope", "system.nope"),
            ("other.default.orders", "other.default.orders"),
        ] {
            let status = datafusion_status(&missing(resolved));
            assert_eq!(status.code(), Code::NotFound, "{resolved}");
            assert_eq!(status.message(), format!("table '{named}' not found"));
        }
    }

    #[test]
    fn a_column_in_the_wrong_case_is_to_be_quoted() {
        let schema = datafusion::common::DFSchema::try_from_qualified_schema(
            "events",
            &arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
                "userId",
                arrow::datatypes::DataType::Int64,
                true,
            )]),
        )
        .unwrap();
        let err = datafusion::common::field_not_found(None::<&str>, "userid", &schema);
        assert!(
            err.to_string().contains("enable_ident_normalization"),
            "DataFusion's own message: {err}"
        );
        let status = datafusion_status(&err);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "Schema error: No field named userid. Did you mean 'events.\"userId\"'?\n\
             Column names are case sensitive: quote it as \"userId\".\n\
             Valid fields are events.\"userId\"."
        );
    }

    fn parse_error(sql: &str) -> DataFusionError {
        let parsed = datafusion::sql::parser::DFParser::parse_sql(sql);
        parsed.expect_err("not SQL")
    }

    fn hint(sql: &str, err: &DataFusionError) -> Option<String> {
        unquoted_name(sql, err).map(|name| {
            let hinted = name.hint(&datafusion_status(err));
            hinted.message().to_string()
        })
    }

    #[test]
    fn a_dotted_name_that_is_the_missing_table_is_to_be_quoted() {
        let sql = "SELECT * FROM payments.avro WHERE _offset > 1";
        let hinted = hint(sql, &missing("kafka.payments.avro")).expect("a hint");
        assert_eq!(
            hinted,
            "table 'payments.avro' not found; if you meant the topic \"payments.avro\", \
             quote it: FROM \"payments.avro\""
        );
        // As written, case and all.
        let sql = "SELECT * FROM a JOIN Payments.Avro USING (_offset)";
        assert_eq!(
            unquoted_name(sql, &missing("kafka.payments.avro")).map(|n| n.name().to_string()),
            Some("Payments.Avro".to_string())
        );
        for (sql, resolved) in [
            // Quoted already, in part or in whole.
            ("SELECT * FROM \"payments\".avro", "kafka.payments.avro"),
            (
                "SELECT * FROM \"payments.avro\"",
                "kafka.default.payments.avro",
            ),
            // Another table is the missing one.
            (
                "SELECT * FROM payments.avro JOIN nope",
                "kafka.default.nope",
            ),
            // In a string, not a name.
            (
                "SELECT 'FROM payments.avro' FROM nope",
                "kafka.default.nope",
            ),
        ] {
            assert_eq!(hint(sql, &missing(resolved)), None, "{sql}");
        }
    }

    #[test]
    fn a_dashed_name_the_parser_stops_in_is_to_be_quoted() {
        let sql = "SELECT * FROM checkout-events WHERE _offset > 1";
        let hinted = hint(sql, &parse_error(sql)).expect("a hint");
        assert!(
            hinted.starts_with("SQL error: Expected: end of statement, found: -"),
            "{hinted}"
        );
        assert!(
            hinted.ends_with("; topic names with '-' must be quoted: FROM \"checkout-events\""),
            "{hinted}"
        );
        let sql = "DESCRIBE my-topic-2";
        assert!(
            hint(sql, &parse_error(sql))
                .expect("a hint")
                .ends_with("DESCRIBE \"my-topic-2\""),
        );
        for sql in [
            // No dash in a name: another mistake.
            "SELECT * FROM orders WHERE",
            "SELECT * FROM orders - 1",
            // Quoted already.
            "SELECT * FROM \"checkout-events\" WHERE",
        ] {
            assert_eq!(hint(sql, &parse_error(sql)), None, "{sql}");
        }
        assert!(
            datafusion_status(&parse_error("SELECT * FROM orders - 1"))
                .message()
                .contains("found: -"),
            "the parser stops at a '-' with no name around it"
        );
        // Arithmetic is no name.
        assert_eq!(
            hint(
                "SELECT a-b FROM orders",
                &DataFusionError::Plan("table 'kafka.default.orders' not found".into())
            ),
            None
        );
    }

    #[test]
    fn failed_casts_are_invalid_arguments() {
        let err = DataFusionError::ArrowError(
            Box::new(arrow::error::ArrowError::CastError(
                "cannot cast 'x' to Int64".into(),
            )),
            None,
        );
        assert_eq!(datafusion_status(&err).code(), Code::InvalidArgument);
    }

    #[test]
    fn what_a_function_refuses_at_run_time_is_an_invalid_argument() {
        let err = DataFusionError::Execution(
            "LIKE does not support escape_char other than the backslash (\\)".into(),
        );
        assert_eq!(datafusion_status(&err).code(), Code::InvalidArgument);
    }

    #[test]
    fn messages_are_capped() {
        let status = internal("é".repeat(5000));
        assert!(status.message().len() <= MAX_MESSAGE_LEN + '…'.len_utf8());
    }
}

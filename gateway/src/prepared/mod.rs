//! Bound parameters without server state.
//!
//! A prepared statement's handle carries everything needed to run it: the
//! SQL and, once the client has bound them with DoPut, the parameter rows.
//! Any gateway replica can therefore serve any handle DoPut returned. (A
//! client that executes the handle it prepared instead finds its parameters
//! in [`crate::bindings`], which closing the statement clears.) The encoding
//! is versioned so a newer gateway can still read the handles an older one
//! gave out:
//!
//! ```text
//! kappa-stmt/1\n
//! <length of the SQL in bytes, decimal>\n
//! <SQL>
//! <the parameters as an Arrow IPC stream, absent when none are bound>
//! ```
//!
//! Plain UTF-8 SQL (what gateways before version 1 handed out) is still
//! accepted as an unbound handle.
//!
//! Parameters are positional: `$1`, `$2`, … as DataFusion plans them, and `?`
//! (what JDBC, ODBC and most DB-API code write), numbered here in the order
//! they appear in the text. A parameter set with several rows runs the query
//! once per row, results in row order, as `executemany` expects.

mod bind;
mod handle;

use arrow::datatypes::DataType;
use arrow::error::ArrowError;

pub use bind::{Placeholders, number_placeholders, runs_schema};
pub use handle::PreparedHandle;

/// What can be wrong with a handle or with the parameters bound to it.
#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    /// The handle was not made by a kappa gateway, or was damaged.
    #[error("malformed prepared statement handle: {0}")]
    MalformedHandle(String),
    /// Parameters that cannot be written into a handle (a bug).
    #[error("cannot encode the bound parameters: {0}")]
    Encode(#[source] ArrowError),
    /// Parameters whose count differs from the statement's placeholders.
    #[error(
        "the statement has {expected} parameter(s) ({names}) but {got} were bound{missing}",
        names = names(*expected),
        missing = missing_note(*expected, *got)
    )]
    Count { expected: usize, got: usize },
    /// A statement with placeholders executed before any were bound.
    #[error("missing parameter(s) {}: bind values for them before executing", names(*.0))]
    Unbound(usize),
    /// A value that does not convert to its placeholder's type.
    #[error("parameter ${position} must be {expected}, got {value} ({actual}): {reason}")]
    Type {
        position: usize,
        expected: DataType,
        actual: DataType,
        value: String,
        reason: String,
    },
    /// A value that cannot be read from the bound batch.
    #[error("parameter ${position}: {reason}")]
    Value { position: usize, reason: String },
    /// A placeholder that is not positional (`$name`).
    #[error("placeholder {0} cannot be bound: kappa binds parameters by position ($1, $2, … or ?)")]
    Named(String),
    /// Both `?` and `$n` in one statement: their numbering would be ambiguous.
    #[error("the statement mixes ? and $n placeholders: use one style")]
    MixedStyles,
}

/// `$1, $2, …, $n`.
fn names(count: usize) -> String {
    (1..=count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn missing_note(expected: usize, got: usize) -> String {
    if got < expected {
        let missing: Vec<String> = (got + 1..=expected).map(|i| format!("${i}")).collect();
        format!(": {} missing", missing.join(", "))
    } else {
        String::new()
    }
}

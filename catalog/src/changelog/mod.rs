//! Changelog tables: a topic of changes to keys, read as each key's latest
//! value.
//!
//! * [`latest`] is `latest('t' [, as_of])` and the table a declared
//!   `'changelog' 'upsert'` table reads as: one row per key, its newest
//!   record, where a tombstone deletes the key.
//! * [`compacted`] is the latest rows the compactor keeps for a changelog
//!   table, which `latest` reads instead of the history below their
//!   watermarks.
//! * [`identity`] says which key a record is of where the table decodes
//!   its keys.

pub mod compacted;
pub mod exec;
pub mod identity;
pub mod latest;

use std::fmt;
use std::str::FromStr;

pub use compacted::CompactedLatest;
pub use exec::NewestPerKeyExec;
pub use latest::{LATEST, LatestFunction, LatestTable};

use crate::error::CatalogError;

/// How a table's records change its keys (the `changelog` table option).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changelog {
    /// Each record is its key's new value; a record with a null value (a
    /// tombstone) deletes its key. Kafka's compacted topics, Kafka Streams'
    /// KTables and Flink's upsert-kafka read topics this way.
    Upsert,
}

impl FromStr for Changelog {
    type Err = CatalogError;

    fn from_str(text: &str) -> Result<Self, CatalogError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "upsert" => Ok(Self::Upsert),
            other => Err(CatalogError::Definition(format!(
                "'changelog' '{other}' is not a changelog kind: 'upsert' reads each key's newest \
                 record (a null value deletes the key); leave the option out to read every record"
            ))),
        }
    }
}

impl fmt::Display for Changelog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Upsert => write!(f, "upsert"),
        }
    }
}

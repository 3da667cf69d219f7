//! The snapshot token: what a query read, as a compact text value a user
//! keeps and hands back (`kappa.snapshot`) to read the same state again.
//!
//! A token is `ks1.` and the base64url (no padding) of a small binary
//! record ending in a CRC-32 of the rest:
//!
//! ```text
//! u8 format version (1)
//! varint table count, then per table (sorted by name):
//!   varint name length, name (UTF-8)
//!   varint lake version + 1 (0: no lake tier was read)
//!   u8 flags (bit 0: every partition of the table is listed)
//!   varint partition count, then per partition (ascending):
//!     varint partition, varint from, varint end - from
//! u32 CRC-32 (little endian) of everything before it
//! ```
//!
//! Tokens are not signed: they carry no secret and grant nothing. Every
//! table a token names is checked against the caller's grants like any
//! other, and a hand-made token can only bound a read by offsets, which a
//! `_offset` filter does too. The checksum catches a token damaged in a copy
//! (a lost or changed character) so it is refused instead of read as
//! another state.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{CatalogError, Result};

/// What every token's text starts with: the token's format, version 1.
pub const TOKEN_PREFIX: &str = "ks1.";

const FORMAT_VERSION: u8 = 1;
const COMPLETE: u8 = 1;

/// One partition of a table's snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionSnapshot {
    /// The Kafka partition.
    pub partition: i32,
    /// The first offset read from Kafka: records below it came from the
    /// lake (where the table has one), or did not exist any more.
    pub from: i64,
    /// The partition's end: the snapshot holds no offset at or above it.
    pub end: i64,
}

/// One table's state in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableSnapshot {
    /// The Delta version of the table's lake tier, if it has one.
    pub lake_version: Option<u64>,
    /// Whether `partitions` lists every partition the table had. A query
    /// answered from the lake alone (it named its partitions) knows only
    /// those.
    pub complete: bool,
    /// Each partition's range, ascending by partition.
    pub partitions: Vec<PartitionSnapshot>,
}

impl TableSnapshot {
    /// The snapshot of `partition`, if the table's snapshot lists it.
    pub fn partition(&self, partition: i32) -> Option<&PartitionSnapshot> {
        self.partitions
            .binary_search_by_key(&partition, |p| p.partition)
            .ok()
            .map(|i| &self.partitions[i])
    }
}

/// The state of some tables: for each, its lake version and each
/// partition's end offset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotToken {
    tables: BTreeMap<String, TableSnapshot>,
}

impl SnapshotToken {
    /// A token of no table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) `table`'s snapshot.
    pub fn insert(&mut self, table: impl Into<String>, mut snapshot: TableSnapshot) {
        snapshot.partitions.sort_by_key(|p| p.partition);
        snapshot.partitions.dedup_by_key(|p| p.partition);
        self.tables.insert(table.into(), snapshot);
    }

    /// `table`'s snapshot, if the token names the table.
    pub fn table(&self, table: &str) -> Option<&TableSnapshot> {
        self.tables.get(table)
    }

    /// The tables named, by name.
    pub fn tables(&self) -> impl Iterator<Item = (&str, &TableSnapshot)> {
        self.tables.iter().map(|(name, t)| (name.as_str(), t))
    }

    /// Whether the token names no table.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![FORMAT_VERSION];
        put_varint(&mut out, self.tables.len() as u64);
        for (name, table) in &self.tables {
            put_varint(&mut out, name.len() as u64);
            out.extend_from_slice(name.as_bytes());
            put_varint(&mut out, table.lake_version.map_or(0, |v| v + 1));
            out.push(if table.complete { COMPLETE } else { 0 });
            put_varint(&mut out, table.partitions.len() as u64);
            for p in &table.partitions {
                put_varint(&mut out, p.partition as u64);
                put_varint(&mut out, p.from as u64);
                put_varint(&mut out, (p.end - p.from) as u64);
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, &'static str> {
        let Some((body, crc)) = bytes.split_last_chunk::<4>() else {
            return Err("it is too short");
        };
        if crc32fast::hash(body) != u32::from_le_bytes(*crc) {
            return Err("its checksum does not match (was it changed or cut short?)");
        }
        let mut reader = Reader { bytes: body };
        if reader.byte()? != FORMAT_VERSION {
            return Err("it is of a format version this gateway does not read");
        }
        let mut token = Self::new();
        for _ in 0..reader.varint()? {
            let length = usize::try_from(reader.varint()?).map_err(|_| "bad name length")?;
            let name = std::str::from_utf8(reader.take(length)?)
                .map_err(|_| "a table name is not UTF-8")?
                .to_string();
            let lake_version = reader.varint()?.checked_sub(1);
            let complete = reader.byte()? & COMPLETE != 0;
            let count = reader.varint()?;
            let mut partitions = Vec::new();
            for _ in 0..count {
                let partition =
                    i32::try_from(reader.varint()?).map_err(|_| "a partition is out of range")?;
                let from = i64::try_from(reader.varint()?).map_err(|_| "an offset is too large")?;
                let length =
                    i64::try_from(reader.varint()?).map_err(|_| "an offset is too large")?;
                let end = from.checked_add(length).ok_or("an offset is too large")?;
                if partitions
                    .last()
                    .is_some_and(|p: &PartitionSnapshot| p.partition >= partition)
                {
                    return Err("its partitions are out of order");
                }
                partitions.push(PartitionSnapshot {
                    partition,
                    from,
                    end,
                });
            }
            token.tables.insert(
                name,
                TableSnapshot {
                    lake_version,
                    complete,
                    partitions,
                },
            );
        }
        if !reader.bytes.is_empty() {
            return Err("it has bytes after its last table");
        }
        Ok(token)
    }
}

impl fmt::Display for SnapshotToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(self.to_bytes())
        )
    }
}

impl FromStr for SnapshotToken {
    type Err = CatalogError;

    fn from_str(text: &str) -> Result<Self> {
        let invalid = |why: &str| {
            CatalogError::InvalidSnapshot(format!("the snapshot token is not valid: {why}"))
        };
        let text = text.trim();
        let Some(body) = text.strip_prefix(TOKEN_PREFIX) else {
            return Err(invalid(&format!(
                "a token starts with '{TOKEN_PREFIX}' (take one with snapshot('table'))"
            )));
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| invalid("it is not base64url text"))?;
        Self::from_bytes(&bytes).map_err(invalid)
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> std::result::Result<u8, &'static str> {
        let (&first, rest) = self.bytes.split_first().ok_or("it ends early")?;
        self.bytes = rest;
        Ok(first)
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], &'static str> {
        if self.bytes.len() < n {
            return Err("it ends early");
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn varint(&mut self) -> std::result::Result<u64, &'static str> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a number is too long")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orders() -> TableSnapshot {
        TableSnapshot {
            lake_version: Some(12),
            complete: true,
            partitions: (0..32)
                .map(|p| PartitionSnapshot {
                    partition: p,
                    from: 1_000_000 + i64::from(p),
                    end: 1_250_000 + i64::from(p) * 7,
                })
                .collect(),
        }
    }

    #[test]
    fn tokens_read_back_what_they_were_made_of() {
        let mut token = SnapshotToken::new();
        token.insert("orders", orders());
        token.insert(
            "payments.avro",
            TableSnapshot {
                lake_version: None,
                complete: false,
                partitions: vec![PartitionSnapshot {
                    partition: 3,
                    from: 0,
                    end: 0,
                }],
            },
        );
        let text = token.to_string();
        assert!(text.starts_with(TOKEN_PREFIX), "{text}");
        assert!(
            text[TOKEN_PREFIX.len()..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{text}"
        );
        // 32 partitions with offsets past a million: compact enough for a header.
        assert!(text.len() < 400, "{} characters", text.len());
        assert_eq!(text.parse::<SnapshotToken>().unwrap(), token);
        assert_eq!(
            SnapshotToken::new()
                .to_string()
                .parse::<SnapshotToken>()
                .unwrap(),
            SnapshotToken::new()
        );
    }

    #[test]
    fn a_changed_or_cut_token_is_refused() {
        let mut token = SnapshotToken::new();
        token.insert("orders", orders());
        let text = token.to_string();
        let mut refused = 0;
        for i in TOKEN_PREFIX.len()..text.len() {
            let mut chars: Vec<char> = text.chars().collect();
            chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
            let changed: String = chars.into_iter().collect();
            let error = changed.parse::<SnapshotToken>().unwrap_err();
            assert!(matches!(error, CatalogError::InvalidSnapshot(_)), "{error}");
            refused += 1;
        }
        assert_eq!(refused, text.len() - TOKEN_PREFIX.len());
        for cut in [TOKEN_PREFIX.len(), TOKEN_PREFIX.len() + 3, text.len() - 1] {
            assert!(
                text[..cut].parse::<SnapshotToken>().is_err(),
                "cut at {cut}"
            );
        }
        for junk in ["", "latest", "ks1.", "ks1.abc", "ks2.AAAA", "ks1.!!!!"] {
            let error = junk.parse::<SnapshotToken>().unwrap_err().to_string();
            assert!(
                error.contains("snapshot token is not valid"),
                "{junk}: {error}"
            );
        }
    }
}

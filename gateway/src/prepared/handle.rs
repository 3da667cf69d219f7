//! The handle's bytes: see the [module documentation](super).

use std::io::Cursor;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::error::ArrowError;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;

use super::ParamError;

/// The first line of a versioned handle.
const MAGIC: &[u8] = b"kappa-stmt/1\n";
/// What every version's first line starts with.
const FAMILY: &[u8] = b"kappa-stmt/";

/// A statement and the parameters bound to it: what a prepared-statement
/// handle and a statement ticket carry.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedHandle {
    /// The SQL as the client wrote it.
    pub sql: String,
    /// The bound parameter rows, one column per placeholder.
    pub params: Option<RecordBatch>,
}

impl PreparedHandle {
    /// `sql` with nothing bound yet.
    pub fn unbound(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            params: None,
        }
    }

    /// This statement with `params` bound (replacing any bound before).
    pub fn bind(self, params: RecordBatch) -> Self {
        Self {
            params: Some(params),
            ..self
        }
    }

    /// The handle's bytes (see the module documentation).
    pub fn encode(&self) -> Result<Vec<u8>, ParamError> {
        let mut out = Vec::with_capacity(MAGIC.len() + 24 + self.sql.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(format!("{}\n", self.sql.len()).as_bytes());
        out.extend_from_slice(self.sql.as_bytes());
        if let Some(params) = &self.params {
            let mut writer =
                StreamWriter::try_new(&mut out, &params.schema()).map_err(ParamError::Encode)?;
            writer.write(params).map_err(ParamError::Encode)?;
            writer.finish().map_err(ParamError::Encode)?;
        }
        Ok(out)
    }

    /// Reads a handle [`Self::encode`] wrote, or plain UTF-8 SQL.
    pub fn decode(handle: &[u8]) -> Result<Self, ParamError> {
        let malformed = |what: &str| ParamError::MalformedHandle(what.to_string());
        let Some(rest) = handle.strip_prefix(MAGIC) else {
            if handle.starts_with(FAMILY) {
                let version = handle.split(|&b| b == b'\n').next().unwrap_or_default();
                return Err(ParamError::MalformedHandle(format!(
                    "version '{}' is not one this gateway reads (kappa-stmt/1)",
                    String::from_utf8_lossy(version)
                )));
            }
            return String::from_utf8(handle.to_vec())
                .map(Self::unbound)
                .map_err(|_| malformed("neither a kappa handle nor UTF-8 SQL"));
        };
        let newline = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| malformed("no SQL length"))?;
        let len: usize = std::str::from_utf8(&rest[..newline])
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| malformed("the SQL length is not a number"))?;
        let rest = &rest[newline + 1..];
        if rest.len() < len {
            return Err(malformed("shorter than its SQL length says (truncated?)"));
        }
        let (sql, ipc) = rest.split_at(len);
        let sql = String::from_utf8(sql.to_vec()).map_err(|_| malformed("the SQL is not UTF-8"))?;
        let params = if ipc.is_empty() {
            None
        } else {
            Some(read_ipc(ipc).map_err(|e| {
                ParamError::MalformedHandle(format!("the bound parameters do not decode: {e}"))
            })?)
        };
        Ok(Self { sql, params })
    }
}

fn read_ipc(bytes: &[u8]) -> Result<RecordBatch, ArrowError> {
    let reader = StreamReader::try_new(Cursor::new(bytes), None)?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    concat_batches(&schema, &batches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, StringArray};

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(columns).unwrap()
    }

    #[test]
    fn handles_round_trip_with_and_without_parameters() {
        let sql = "SELECT * FROM t WHERE a = $1\n-- 'ü' ?";
        let unbound = PreparedHandle::unbound(sql);
        assert_eq!(
            PreparedHandle::decode(&unbound.encode().unwrap()).unwrap(),
            unbound
        );

        let params = batch(vec![
            ("0", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
            ("1", Arc::new(StringArray::from(vec![Some("x"), None]))),
        ]);
        let bound = unbound.bind(params);
        let encoded = bound.encode().unwrap();
        assert!(encoded.starts_with(b"kappa-stmt/1\n"));
        assert_eq!(PreparedHandle::decode(&encoded).unwrap(), bound);
    }

    #[test]
    fn plain_sql_is_an_unbound_handle() {
        assert_eq!(
            PreparedHandle::decode(b"SELECT 1").unwrap(),
            PreparedHandle::unbound("SELECT 1")
        );
    }

    #[test]
    fn malformed_handles_say_what_is_wrong() {
        let message = |bytes: &[u8]| PreparedHandle::decode(bytes).unwrap_err().to_string();
        assert!(message(&[0xff, 0xfe]).contains("neither a kappa handle nor UTF-8 SQL"));
        assert!(message(b"kappa-stmt/9\n3\nabc").contains("'kappa-stmt/9'"));
        assert!(message(b"kappa-stmt/1\nabc").contains("no SQL length"));
        assert!(message(b"kappa-stmt/1\nx\nabc").contains("not a number"));
        assert!(message(b"kappa-stmt/1\n10\nabc").contains("truncated"));
        assert!(message(b"kappa-stmt/1\n3\nabcjunk").contains("do not decode"));
        assert!(matches!(
            PreparedHandle::decode(b"kappa-stmt/1\n3\nabcjunk"),
            Err(ParamError::MalformedHandle(_))
        ));
    }
}

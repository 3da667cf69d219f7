//! Which key a record is of, where the table has a key format.
//!
//! A registry-framed key carries its schema's id in its bytes, so one key
//! written under two schema versions is two different `_key` values. The
//! changelog rule says the decoded key decides where there is one: the
//! record's identity is then its `key` column, encoded by arrow's row format
//! (the same bytes for equal values, whatever schema they were written
//! with). A key that did not decode (a null `key`, the reason in `_error`)
//! falls back to its raw bytes, as does a key type the row format cannot
//! encode. A tag byte keeps the two kinds apart. A record without `_key`
//! is no key's record: its identity is null.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::exec_err;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The column the identity is computed into, read by `NewestPerKeyExec`
/// and dropped from the answer.
pub const IDENTITY: &str = "__kappa_key_identity";

/// Tag of an identity that is a decoded key's row encoding.
const DECODED: u8 = 1;
/// Tag of an identity that is the raw `_key` bytes.
const RAW: u8 = 0;

/// `key_identity(key, _key)`: the bytes that say which key a record is of.
pub fn key_identity(key: Expr, raw_key: Expr) -> Expr {
    let udf = ScalarUDF::new_from_impl(KeyIdentity {
        signature: Signature::any(2, Volatility::Immutable),
    });
    Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(udf), vec![key, raw_key]))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct KeyIdentity {
    signature: Signature,
}

impl ScalarUDFImpl for KeyIdentity {
    fn name(&self) -> &str {
        "kappa_key_identity"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Binary)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let [key, raw] = args.args.as_slice() else {
            return exec_err!("kappa_key_identity takes the key and _key");
        };
        let (key, raw) = (key.to_array(rows)?, raw.to_array(rows)?);
        Ok(ColumnarValue::Array(identities(&key, &raw)?))
    }
}

/// Each row's identity: the tagged row encoding of `key` where it is
/// valid, else the tagged raw bytes; null where `raw` is null.
fn identities(key: &ArrayRef, raw: &ArrayRef) -> DfResult<ArrayRef> {
    let Some(raw) = raw.as_binary_opt::<i32>() else {
        return exec_err!("_key is {}, not Binary", raw.data_type());
    };
    let fields = [SortField::new(key.data_type().clone())];
    let encoded = if RowConverter::supports_fields(&fields) {
        Some(RowConverter::new(fields.to_vec())?.convert_columns(&[Arc::clone(key)])?)
    } else {
        None
    };
    let mut out = BinaryBuilder::with_capacity(raw.len(), raw.values().len() + raw.len());
    let mut buffer = Vec::new();
    for row in 0..raw.len() {
        if raw.is_null(row) {
            out.append_null();
            continue;
        }
        buffer.clear();
        match &encoded {
            Some(rows) if key.is_valid(row) => {
                buffer.push(DECODED);
                buffer.extend_from_slice(rows.row(row).as_ref());
            }
            _ => {
                buffer.push(RAW);
                buffer.extend_from_slice(raw.value(row));
            }
        }
        out.append_value(&buffer);
    }
    Ok(Arc::new(out.finish()))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{BinaryArray, Int64Array, StringArray, StructArray};
    use datafusion::arrow::buffer::NullBuffer;
    use datafusion::arrow::datatypes::{Field, Fields};

    use super::*;

    fn raw(keys: &[Option<&[u8]>]) -> ArrayRef {
        Arc::new(BinaryArray::from_iter(keys.iter().copied()))
    }

    #[test]
    fn equal_decoded_keys_are_one_key_whatever_their_bytes() {
        // Rows 0 and 1: one key written under two schema ids. Row 2: another
        // key. Row 3: a key that did not decode. Row 4: no key at all.
        let fields = Fields::from(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("region", DataType::Utf8, true),
        ]);
        let key: ArrayRef = Arc::new(
            StructArray::try_new(
                fields,
                vec![
                    Arc::new(Int64Array::from(vec![7, 7, 8, 0, 0])),
                    Arc::new(StringArray::from(vec!["eu", "eu", "eu", "", ""])),
                ],
                Some(NullBuffer::from(vec![true, true, true, false, false])),
            )
            .unwrap(),
        );
        let raw = raw(&[
            Some(b"\0\0\0\0\x01seven"),
            Some(b"\0\0\0\0\x02seven"),
            Some(b"\0\0\0\0\x01eight"),
            Some(b"\x07bad"),
            None,
        ]);
        let out = identities(&key, &raw).unwrap();
        let out = out.as_binary::<i32>();
        assert_eq!(out.value(0), out.value(1), "one key under two schema ids");
        assert_ne!(out.value(0), out.value(2));
        assert_eq!(out.value(3), b"\0\x07bad", "an undecoded key is its bytes");
        assert!(out.is_null(4), "a record without a key is no key's");
    }

    #[test]
    fn a_decoded_key_never_equals_raw_bytes() {
        let key: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), None]));
        let out = identities(&key, &raw(&[Some(b"x"), Some(b"x")])).unwrap();
        let out = out.as_binary::<i32>();
        assert_eq!(out.value(0)[0], DECODED);
        assert_eq!(out.value(1), b"\0x");
    }
}

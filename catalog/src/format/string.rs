//! UTF-8 text values: each value is one VARCHAR column (`value` unless the
//! definition names it), for topics of log lines, CSV-like text or IDs that
//! a query parses further with SQL's string functions.
//!
//! A value that is not valid UTF-8 is a row with a null column, the reason
//! in `_error` and its bytes in `_value`, like any value that does not
//! decode; a tombstone is a null.

use std::sync::Arc;

use datafusion::arrow::array::{Array, BinaryBuilder, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::{DecodedValues, ValueDecoder};
use crate::error::Result;

/// The column of a `string` table without a column list.
pub const DEFAULT_COLUMN: &str = "value";

/// The value schema of a `string` table whose column is `name`.
pub fn schema(name: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, true)]))
}

/// Decodes the values of one batch as UTF-8.
#[derive(Debug, Default)]
pub struct StringDecoder {
    raw: BinaryBuilder,
}

impl ValueDecoder for StringDecoder {
    fn append(&mut self, value: Option<&[u8]>) {
        self.raw.append_option(value);
    }

    fn finish(&mut self) -> Result<DecodedValues> {
        let raw = self.raw.finish();
        let mut text = StringBuilder::with_capacity(raw.len(), raw.value_data().len());
        let mut errors = Vec::with_capacity(raw.len());
        for row in 0..raw.len() {
            if raw.is_null(row) {
                text.append_null();
                errors.push(None);
                continue;
            }
            match std::str::from_utf8(raw.value(row)) {
                Ok(value) => {
                    text.append_value(value);
                    errors.push(None);
                }
                Err(e) => {
                    text.append_null();
                    errors.push(Some(format!("not UTF-8 text: {e}")));
                }
            }
        }
        let rows: Vec<usize> = (0..raw.len()).collect();
        let field = Field::new(DEFAULT_COLUMN, DataType::Utf8, true);
        DecodedValues::spread(
            &raw,
            &[Arc::new(text.finish())],
            &vec![field].into(),
            &rows,
            errors,
        )
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::AsArray;

    use super::*;

    #[test]
    fn text_is_a_column_and_other_bytes_are_rows_with_errors() {
        let mut decoder = StringDecoder::default();
        decoder.append(Some("héllo".as_bytes()));
        decoder.append(None);
        decoder.append(Some(&[0xff, 0xfe]));
        let decoded = decoder.finish().unwrap();
        let text = decoded.columns[0].as_string::<i32>();
        assert_eq!(text.value(0), "héllo");
        assert!(text.is_null(1) && text.is_null(2));
        let errors = decoded.errors.as_string::<i32>();
        assert!(errors.is_null(0) && errors.is_null(1));
        assert!(
            errors.value(2).starts_with("not UTF-8 text"),
            "{}",
            errors.value(2)
        );
        let undecoded = decoded.undecoded.as_binary::<i32>();
        assert!(undecoded.is_null(0) && undecoded.is_null(1));
        assert_eq!(undecoded.value(2), &[0xff, 0xfe]);
    }
}

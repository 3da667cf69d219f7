//! CSV values: each value one record of comma-separated fields, in the
//! order of the declared columns (arrow-csv parses them, with its type
//! rules: numbers, booleans, decimals, dates and RFC 3339 timestamps).
//!
//! Each value is parsed alone: a record with an unclosed quote or a stray
//! newline can then never run into the next value, and a value that is not
//! exactly one record of the columns (a field missing or extra, a field
//! that does not parse as its column's type) is a row with `_error` and its
//! bytes in `_value`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, BinaryBuilder, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::csv::reader::ReaderBuilder;
use datafusion::arrow::datatypes::{DataType, SchemaRef};

use super::{DecodedValues, ValueDecoder};
use crate::error::Result;

/// Whether a column of `data_type` can be read from CSV: flat types only.
pub fn supports(data_type: &DataType) -> bool {
    !data_type.is_nested()
}

/// Decodes the CSV values of one batch into declared columns.
#[derive(Debug)]
pub struct CsvDecoder {
    schema: SchemaRef,
    raw: BinaryBuilder,
}

impl CsvDecoder {
    /// Values decoding into `schema`'s columns.
    pub fn new(schema: SchemaRef) -> Self {
        Self {
            schema,
            raw: BinaryBuilder::new(),
        }
    }

    /// `value` as one record of the columns, or why it is not one.
    fn record(&self, value: &[u8]) -> std::result::Result<RecordBatch, String> {
        let mut decoder = ReaderBuilder::new(Arc::clone(&self.schema))
            .with_batch_size(2)
            .build_decoder();
        let mut rest: &[u8] = value;
        while !rest.is_empty() {
            let used = decoder.decode(rest).map_err(|e| e.to_string())?;
            if used == 0 {
                break;
            }
            rest = &rest[used..];
        }
        if !value.ends_with(b"\n") {
            decoder.decode(b"\n").map_err(|e| e.to_string())?;
        }
        // An unclosed quote leaves the record open: flush reports it.
        let batch = decoder
            .flush()
            .map_err(|e| e.to_string())?
            .ok_or("an empty value is no CSV record")?;
        match batch.num_rows() {
            1 => Ok(batch),
            n => Err(format!("{n} CSV records in one value, expected one")),
        }
    }
}

impl ValueDecoder for CsvDecoder {
    fn append(&mut self, value: Option<&[u8]>) {
        self.raw.append_option(value);
    }

    fn finish(&mut self) -> Result<DecodedValues> {
        let raw = self.raw.finish();
        let mut errors = vec![None; raw.len()];
        let mut rows = Vec::with_capacity(raw.len());
        let mut records = Vec::with_capacity(raw.len());
        for (row, error) in errors.iter_mut().enumerate() {
            if raw.is_null(row) {
                continue;
            }
            match self.record(raw.value(row)) {
                Ok(record) => {
                    rows.push(row);
                    records.push(record);
                }
                Err(why) => *error = Some(format!("invalid CSV: {why}")),
            }
        }
        let decoded = concat_batches(&self.schema, &records)?;
        DecodedValues::spread(&raw, decoded.columns(), self.schema.fields(), &rows, errors)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Field, Int64Type, Schema};

    use super::*;

    #[test]
    fn each_value_is_one_record_or_a_row_with_the_reason() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let mut decoder = CsvDecoder::new(schema);
        let values: [Option<&[u8]>; 7] = [
            Some(b"1,alice"),
            Some(b"2,\"bob, jr\"\n"),
            Some(b"3,\"unclosed"),
            Some(b"x,carol"),
            Some(b"4,dave\n5,eve"),
            None,
            Some(b"6,"),
        ];
        for value in values {
            decoder.append(value);
        }
        let decoded = decoder.finish().unwrap();
        let ids = decoded.columns[0].as_primitive::<Int64Type>();
        let names = decoded.columns[1].as_string::<i32>();
        assert_eq!(
            ids.iter().collect::<Vec<_>>(),
            [Some(1), Some(2), None, None, None, None, Some(6)]
        );
        assert_eq!(names.value(1), "bob, jr");
        let errors = decoded.errors.as_string::<i32>();
        for row in [2, 3, 4] {
            assert!(
                errors.value(row).starts_with("invalid CSV"),
                "{row}: {}",
                errors.value(row)
            );
            assert!(decoded.undecoded.is_valid(row));
        }
        assert!(
            errors.value(4).contains("2 CSV records"),
            "{}",
            errors.value(4)
        );
        for row in [0, 1, 5, 6] {
            assert!(errors.is_null(row), "{row}: {}", errors.value(row));
        }
    }
}

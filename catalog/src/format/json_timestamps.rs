//! How a JSON value becomes a `TIMESTAMP`: one rule, stated once.
//!
//! - A string is a date-time (RFC 3339 or `YYYY-MM-DD[ hh:mm:ss[.f]]`), as
//!   arrow parses it; without an offset it is UTC.
//! - A number counts units since the Unix epoch: **milliseconds** (the unit
//!   Kafka itself uses) unless the column declares its precision:
//!   `TIMESTAMP(0)` seconds, `TIMESTAMP(3)` milliseconds, `TIMESTAMP(6)`
//!   microseconds. A number that lands outside 1900-01-01 .. 2200-01-01 is
//!   the record's `_error` (most likely a number in another unit), never a
//!   date in 1970 or in the year 55000.
//!
//! The table stores microseconds whatever was declared (Delta Lake's
//! precision), so the Kafka and the lake tier read the same value.
//!
//! arrow-json reads a number into a timestamp column as a count of the
//! column's own unit, so the decoder reads timestamp columns as text
//! (numbers keep their digits) and this module converts them.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, ListArray, MapArray, StructArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::kernels::cast_utils::string_to_datetime;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::error::ArrowError;

use crate::lake::layout::map_timestamps;

/// Earliest instant a number may name: 1900-01-01T00:00:00Z, in µs.
const EARLIEST_MICROS: i64 = -2_208_988_800_000_000;
/// First instant past the range: 2200-01-01T00:00:00Z, in µs.
const END_MICROS: i64 = 7_258_118_400_000_000;

/// `declared` with each timestamp in the unit its numbers count: a bare
/// `TIMESTAMP` (which DataFusion plans as nanoseconds) counts milliseconds.
pub fn number_units(declared: &DataType) -> DataType {
    map_timestamps(declared, &|unit, tz| match unit {
        TimeUnit::Nanosecond => DataType::Timestamp(TimeUnit::Millisecond, tz.clone()),
        unit => DataType::Timestamp(unit, tz.clone()),
    })
}

/// The type arrow-json reads `declared` as: timestamps (nested ones too) as
/// text, everything else as it is.
pub(crate) fn read_type(declared: &DataType) -> DataType {
    map_timestamps(declared, &|_, _| DataType::Utf8)
}

/// `read` (as [`read_type`] read it) as `output`, the table's type: each
/// timestamp text parsed by the rule above, in the unit `declared` names.
pub(crate) fn convert(
    read: &ArrayRef,
    declared: &DataType,
    output: &DataType,
) -> Result<ArrayRef, ArrowError> {
    match (declared, output) {
        (DataType::Timestamp(unit, _), DataType::Timestamp(_, tz)) => {
            let texts = read.as_string::<i32>();
            let micros = texts
                .iter()
                .map(|text| text.map(|t| micros_of(t, *unit)).transpose())
                .collect::<Result<TimestampMicrosecondArray, ArrowError>>()?;
            Ok(Arc::new(micros.with_timezone_opt(tz.clone())))
        }
        (DataType::Struct(declared), DataType::Struct(output)) => {
            let read = read.as_struct();
            let columns = read
                .columns()
                .iter()
                .zip(declared.iter().zip(output.iter()))
                .map(|(column, (d, o))| convert(column, d.data_type(), o.data_type()))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Arc::new(StructArray::try_new(
                output.clone(),
                columns,
                read.nulls().cloned(),
            )?))
        }
        (DataType::List(declared), DataType::List(output)) => {
            let read = read.as_list::<i32>();
            let values = convert(read.values(), declared.data_type(), output.data_type())?;
            Ok(Arc::new(ListArray::try_new(
                Arc::clone(output),
                read.offsets().clone(),
                values,
                read.nulls().cloned(),
            )?))
        }
        (DataType::Map(declared, _), DataType::Map(output_entries, sorted)) => {
            let read = read.as_map();
            let entries: ArrayRef = Arc::new(read.entries().clone());
            let entries = convert(&entries, declared.data_type(), output_entries.data_type())?;
            Ok(Arc::new(MapArray::try_new(
                Arc::clone(output_entries),
                read.offsets().clone(),
                entries.as_struct().clone(),
                read.nulls().cloned(),
                *sorted,
            )?))
        }
        _ => Ok(Arc::clone(read)),
    }
}

/// One timestamp text as microseconds since the epoch.
fn micros_of(text: &str, unit: TimeUnit) -> Result<i64, ArrowError> {
    let (micros_per_unit, name) = match unit {
        TimeUnit::Second => (1_000_000.0, "seconds"),
        TimeUnit::Millisecond => (1_000.0, "milliseconds"),
        TimeUnit::Microsecond => (1.0, "microseconds"),
        TimeUnit::Nanosecond => (0.001, "nanoseconds"),
    };
    let looks_numeric = text
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'-');
    let micros = if let Ok(whole) = text.parse::<i64>() {
        // Exact for integers: no detour through f64's 53 bits.
        match unit {
            TimeUnit::Nanosecond => Some(whole / 1_000),
            _ => whole.checked_mul(micros_per_unit as i64),
        }
    } else if let Some(number) = looks_numeric.then(|| text.parse::<f64>().ok()).flatten() {
        Some((number * micros_per_unit).round() as i64)
    } else {
        return string_to_datetime(&chrono::Utc, text)
            .map(|t| t.timestamp_micros())
            .map_err(|e| {
                ArrowError::JsonError(format!("failed to parse \"{text}\" as a timestamp: {e}"))
            });
    };
    match micros {
        Some(micros) if (EARLIEST_MICROS..END_MICROS).contains(&micros) => Ok(micros),
        _ => Err(ArrowError::JsonError(format!(
            "timestamp {text} ({name} since the epoch) is outside 1900-01-01 .. 2200-01-01: \
             declare the column's precision (TIMESTAMP(0) seconds, TIMESTAMP(3) milliseconds, \
             TIMESTAMP(6) microseconds)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::TimestampMicrosecondType;

    fn read(texts: &[Option<&str>], unit: TimeUnit) -> Result<Vec<Option<i64>>, ArrowError> {
        let read: ArrayRef = Arc::new(StringArray::from(texts.to_vec()));
        let out = convert(
            &read,
            &DataType::Timestamp(unit, None),
            &DataType::Timestamp(TimeUnit::Microsecond, None),
        )?;
        Ok(out
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .collect())
    }

    #[test]
    fn numbers_count_the_declared_unit_and_milliseconds_by_default() {
        let at = 1_700_000_000_123_000; // 2023-11-14T22:13:20.123Z in µs
        assert_eq!(
            read(&[Some("1700000000123"), None], TimeUnit::Millisecond).unwrap(),
            vec![Some(at), None]
        );
        assert_eq!(
            read(&[Some("1700000000")], TimeUnit::Second).unwrap(),
            vec![Some(1_700_000_000_000_000)]
        );
        assert_eq!(
            read(&[Some("1700000000123000")], TimeUnit::Microsecond).unwrap(),
            vec![Some(at)]
        );
        assert_eq!(
            read(&[Some("1700000000123.5")], TimeUnit::Millisecond).unwrap(),
            vec![Some(at + 500)]
        );
        assert_eq!(
            read(
                &[Some("2023-11-14T22:13:20.123456Z")],
                TimeUnit::Millisecond
            )
            .unwrap(),
            vec![Some(at + 456)],
            "strings keep their microseconds"
        );
    }

    #[test]
    fn numbers_outside_the_sane_range_are_errors() {
        for (text, unit) in [
            ("1700000000123000", TimeUnit::Millisecond),
            ("1700000000123", TimeUnit::Second),
            ("-9223372036854775808", TimeUnit::Millisecond),
            ("1e300", TimeUnit::Millisecond),
        ] {
            let err = read(&[Some(text)], unit).unwrap_err().to_string();
            assert!(err.contains("outside 1900-01-01"), "{text}: {err}");
        }
        assert!(read(&[Some("yesterday")], TimeUnit::Millisecond).is_err());
    }
}

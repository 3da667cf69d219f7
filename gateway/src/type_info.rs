//! The SQL types kappa produces: the rows of `CommandGetXdbcTypeInfo` (what
//! JDBC's `DatabaseMetaData.getTypeInfo` and BI tools read to map column
//! types), and the type names GetTables puts on each column of a table's
//! schema, both from one mapping of Arrow types ([`SqlType::of`]),
//! so a column's type name is always one the type table lists.

use std::collections::HashMap;
use std::sync::LazyLock;

use arrow::datatypes::{DataType, Field, TimeUnit};
use arrow_flight::sql::metadata::{XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder};
use arrow_flight::sql::{Nullable, Searchable, XdbcDataType, XdbcDatetimeSubcode};

/// The SQL side of an Arrow type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlType {
    /// The name GetXdbcTypeInfo lists it under.
    pub name: &'static str,
    /// The name a column of this type reports: `name`, or for nested types
    /// the type spelled out (`ARRAY<STRUCT<key VARCHAR, value VARBINARY>>`).
    pub column_name: String,
    pub data_type: XdbcDataType,
    pub datetime_sub: Option<XdbcDatetimeSubcode>,
    /// Digits of a number, precision of a decimal, characters of a date or
    /// time value; `None` when unbounded (strings, binaries).
    pub column_size: Option<i32>,
    /// Digits after the point: a decimal's scale, a time's fractional
    /// seconds.
    pub decimal_digits: Option<i32>,
    pub unsigned: Option<bool>,
}

impl SqlType {
    fn new(name: &'static str, data_type: XdbcDataType, column_size: Option<i32>) -> Self {
        Self {
            name,
            column_name: name.to_string(),
            data_type,
            datetime_sub: None,
            column_size,
            decimal_digits: None,
            unsigned: None,
        }
    }

    fn integer(name: &'static str, data_type: XdbcDataType, digits: i32, unsigned: bool) -> Self {
        Self {
            decimal_digits: Some(0),
            unsigned: Some(unsigned),
            ..Self::new(name, data_type, Some(digits))
        }
    }

    fn datetime(
        name: &'static str,
        data_type: XdbcDataType,
        sub: XdbcDatetimeSubcode,
        size: i32,
        fraction: i32,
    ) -> Self {
        Self {
            datetime_sub: Some(sub),
            decimal_digits: Some(fraction),
            ..Self::new(name, data_type, Some(size))
        }
    }

    /// The SQL type of an Arrow type, as DataFusion's SQL names it.
    pub fn of(data_type: &DataType) -> Self {
        use XdbcDataType as X;
        match data_type {
            DataType::Boolean => Self::new("BOOLEAN", X::XdbcBit, Some(1)),
            DataType::Int8 => Self::integer("TINYINT", X::XdbcTinyint, 3, false),
            DataType::Int16 => Self::integer("SMALLINT", X::XdbcSmallint, 5, false),
            DataType::Int32 => Self::integer("INTEGER", X::XdbcInteger, 10, false),
            DataType::Int64 => Self::integer("BIGINT", X::XdbcBigint, 19, false),
            DataType::UInt8 => Self::integer("TINYINT UNSIGNED", X::XdbcTinyint, 3, true),
            DataType::UInt16 => Self::integer("SMALLINT UNSIGNED", X::XdbcSmallint, 5, true),
            DataType::UInt32 => Self::integer("INTEGER UNSIGNED", X::XdbcInteger, 10, true),
            DataType::UInt64 => Self::integer("BIGINT UNSIGNED", X::XdbcBigint, 20, true),
            DataType::Float16 | DataType::Float32 => Self::new("REAL", X::XdbcReal, Some(7)),
            DataType::Float64 => Self::new("DOUBLE", X::XdbcDouble, Some(15)),
            DataType::Decimal32(p, s)
            | DataType::Decimal64(p, s)
            | DataType::Decimal128(p, s)
            | DataType::Decimal256(p, s) => Self {
                decimal_digits: Some(i32::from(*s)),
                ..Self::new("DECIMAL", X::XdbcDecimal, Some(i32::from(*p)))
            },
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                Self::new("VARCHAR", X::XdbcVarchar, None)
            }
            DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::FixedSizeBinary(_) => Self::new("VARBINARY", X::XdbcVarbinary, None),
            DataType::Date32 | DataType::Date64 => {
                // Subcode 1 is SQL_CODE_DATE in ODBC; the proto names it YEAR.
                Self::datetime(
                    "DATE",
                    X::XdbcDate,
                    XdbcDatetimeSubcode::XdbcSubcodeYear,
                    10,
                    0,
                )
            }
            DataType::Time32(unit) | DataType::Time64(unit) => {
                let fraction = fraction_digits(unit);
                Self::datetime(
                    "TIME",
                    X::XdbcTime,
                    XdbcDatetimeSubcode::XdbcSubcodeTime,
                    8 + fraction + i32::from(fraction > 0),
                    fraction,
                )
            }
            DataType::Timestamp(unit, tz) => {
                let fraction = fraction_digits(unit);
                let size = 19 + fraction + i32::from(fraction > 0);
                match tz {
                    None => Self::datetime(
                        "TIMESTAMP",
                        X::XdbcTimestamp,
                        XdbcDatetimeSubcode::XdbcSubcodeTimestamp,
                        size,
                        fraction,
                    ),
                    // `+00:00` after the time.
                    Some(_) => Self::datetime(
                        "TIMESTAMP WITH TIME ZONE",
                        X::XdbcTimestamp,
                        XdbcDatetimeSubcode::XdbcSubcodeTimestampWithTimezone,
                        size + 6,
                        fraction,
                    ),
                }
            }
            DataType::Interval(_) | DataType::Duration(_) => {
                Self::new("INTERVAL", X::XdbcInterval, None)
            }
            DataType::Dictionary(_, value) => Self::of(value),
            // Nested types have no xDBC code; ADBC's driver reports them as
            // VARBINARY, and so does kappa, to agree with it.
            DataType::List(item)
            | DataType::LargeList(item)
            | DataType::ListView(item)
            | DataType::LargeListView(item)
            | DataType::FixedSizeList(item, _) => Self {
                column_name: format!("ARRAY<{}>", Self::nested_name(item)),
                ..Self::new("ARRAY", X::XdbcVarbinary, None)
            },
            DataType::Struct(fields) => {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|f| format!("{} {}", f.name(), Self::nested_name(f)))
                    .collect();
                Self {
                    column_name: format!("STRUCT<{}>", fields.join(", ")),
                    ..Self::new("STRUCT", X::XdbcVarbinary, None)
                }
            }
            DataType::Map(entries, _) => {
                let name = match entries.data_type() {
                    DataType::Struct(kv) if kv.len() == 2 => format!(
                        "MAP<{}, {}>",
                        Self::nested_name(&kv[0]),
                        Self::nested_name(&kv[1])
                    ),
                    _ => "MAP".to_string(),
                };
                Self {
                    column_name: name,
                    ..Self::new("MAP", X::XdbcVarbinary, None)
                }
            }
            _ => Self::new("UNKNOWN", X::XdbcUnknownType, None),
        }
    }

    fn nested_name(field: &Field) -> String {
        Self::of(field.data_type()).column_name
    }

    /// The Flight SQL column metadata of a column of this type: the
    /// `ARROW:FLIGHT:SQL:*` keys the Flight SQL spec defines. The JDBC driver
    /// reads precision and scale from them; ADBC's driver (1.13) reads only
    /// the type name, into `get_objects`' `xdbc_type_name`. Nullability is
    /// the field's own flag.
    pub fn column_metadata(&self) -> HashMap<String, String> {
        let flag = |b: bool| if b { "1" } else { "0" }.to_string();
        let mut meta = HashMap::from([
            (
                "ARROW:FLIGHT:SQL:TYPE_NAME".into(),
                self.column_name.clone(),
            ),
            ("ARROW:FLIGHT:SQL:IS_AUTO_INCREMENT".into(), flag(false)),
            (
                "ARROW:FLIGHT:SQL:IS_CASE_SENSITIVE".into(),
                flag(self.data_type == XdbcDataType::XdbcVarchar),
            ),
            ("ARROW:FLIGHT:SQL:IS_READ_ONLY".into(), flag(true)),
            ("ARROW:FLIGHT:SQL:IS_SEARCHABLE".into(), flag(true)),
        ]);
        if let Some(size) = self.column_size {
            meta.insert("ARROW:FLIGHT:SQL:PRECISION".into(), size.to_string());
        }
        if let Some(digits) = self.decimal_digits {
            meta.insert("ARROW:FLIGHT:SQL:SCALE".into(), digits.to_string());
        }
        meta
    }
}

fn fraction_digits(unit: &TimeUnit) -> i32 {
    match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 3,
        TimeUnit::Microsecond => 6,
        TimeUnit::Nanosecond => 9,
    }
}

/// ODBC's SQL_DESC_TYPE: the datetime types share one code, with the
/// subcode telling them apart.
fn sql_data_type(data_type: XdbcDataType) -> XdbcDataType {
    match data_type {
        XdbcDataType::XdbcDate | XdbcDataType::XdbcTime | XdbcDataType::XdbcTimestamp => {
            XdbcDataType::XdbcDatetime
        }
        other => other,
    }
}

/// One GetXdbcTypeInfo row.
fn type_info(sql: SqlType) -> XdbcTypeInfo {
    let numeric = sql.unsigned.is_some()
        || matches!(
            sql.data_type,
            XdbcDataType::XdbcDouble | XdbcDataType::XdbcReal | XdbcDataType::XdbcDecimal
        );
    let quoted = matches!(
        sql.data_type,
        XdbcDataType::XdbcVarchar
            | XdbcDataType::XdbcDate
            | XdbcDataType::XdbcTime
            | XdbcDataType::XdbcTimestamp
            | XdbcDataType::XdbcInterval
    );
    let nested = matches!(sql.name, "ARRAY" | "STRUCT" | "MAP");
    XdbcTypeInfo {
        type_name: sql.name.into(),
        data_type: sql.data_type,
        // The widest a column of the type can be.
        column_size: match sql.data_type {
            XdbcDataType::XdbcDecimal => Some(38),
            XdbcDataType::XdbcTime => Some(18),
            XdbcDataType::XdbcTimestamp => sql
                .column_size
                .map(|_| if sql.name == "TIMESTAMP" { 29 } else { 35 }),
            _ => sql.column_size,
        },
        literal_prefix: quoted.then(|| "'".into()),
        literal_suffix: quoted.then(|| "'".into()),
        create_params: (sql.data_type == XdbcDataType::XdbcDecimal)
            .then(|| vec!["precision".into(), "scale".into()]),
        nullable: Nullable::NullabilityNullable,
        case_sensitive: sql.data_type == XdbcDataType::XdbcVarchar,
        searchable: if nested {
            Searchable::None
        } else {
            Searchable::Full
        },
        unsigned_attribute: numeric.then(|| sql.unsigned.unwrap_or(false)),
        fixed_prec_scale: false,
        auto_increment: numeric.then_some(false),
        local_type_name: Some(sql.name.into()),
        minimum_scale: match sql.data_type {
            XdbcDataType::XdbcDecimal => Some(0),
            _ => None,
        },
        maximum_scale: match sql.data_type {
            XdbcDataType::XdbcDecimal => Some(38),
            XdbcDataType::XdbcTime | XdbcDataType::XdbcTimestamp => Some(9),
            _ => None,
        },
        sql_data_type: sql_data_type(sql.data_type),
        datetime_subcode: sql.datetime_sub,
        num_prec_radix: numeric.then_some(10),
        interval_precision: None,
    }
}

/// Every type a kappa column or query result can have, one row per name.
pub static XDBC_TYPES: LazyLock<XdbcTypeInfoData> = LazyLock::new(|| {
    let mut builder = XdbcTypeInfoDataBuilder::new();
    let headers = kappa_catalog::columns::headers_type();
    for data_type in [
        DataType::Boolean,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::UInt8,
        DataType::UInt16,
        DataType::UInt32,
        DataType::UInt64,
        DataType::Float32,
        DataType::Float64,
        DataType::Decimal128(38, 10),
        DataType::Utf8,
        DataType::Binary,
        DataType::Date32,
        DataType::Time64(TimeUnit::Microsecond),
        DataType::Timestamp(TimeUnit::Microsecond, None),
        kappa_catalog::columns::timestamp_type(),
        DataType::Interval(arrow::datatypes::IntervalUnit::MonthDayNano),
        // `_headers`: a list of key/value structs.
        headers.clone(),
        kappa_catalog::columns::header_struct(),
        DataType::Map(
            std::sync::Arc::new(Field::new(
                "entries",
                kappa_catalog::columns::header_struct(),
                false,
            )),
            false,
        ),
    ] {
        builder.append(type_info(SqlType::of(&data_type)));
    }
    builder.build().expect("static xDBC type table is valid")
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kappas_columns_have_sql_names() {
        let headers = SqlType::of(&kappa_catalog::columns::headers_type());
        assert_eq!(headers.name, "ARRAY");
        assert_eq!(
            headers.column_name,
            "ARRAY<STRUCT<key VARCHAR, value VARBINARY>>"
        );
        let ts = SqlType::of(&kappa_catalog::columns::timestamp_type());
        assert_eq!(ts.name, "TIMESTAMP WITH TIME ZONE");
        assert_eq!(ts.decimal_digits, Some(6));
        let decimal = SqlType::of(&DataType::Decimal128(10, 2));
        assert_eq!(
            (decimal.column_size, decimal.decimal_digits),
            (Some(10), Some(2))
        );
    }

    #[test]
    fn type_name_and_size_go_into_column_metadata() {
        let meta = SqlType::of(&DataType::Decimal128(10, 2)).column_metadata();
        assert_eq!(meta["ARROW:FLIGHT:SQL:TYPE_NAME"], "DECIMAL");
        assert_eq!(meta["ARROW:FLIGHT:SQL:PRECISION"], "10");
        assert_eq!(meta["ARROW:FLIGHT:SQL:SCALE"], "2");
    }
}

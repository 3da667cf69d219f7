//! The SQL types kappa produces, for `CommandGetXdbcTypeInfo` (what JDBC's
//! `DatabaseMetaData.getTypeInfo` and BI tools read to map column types).

use std::sync::LazyLock;

use arrow_flight::sql::metadata::{XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder};
use arrow_flight::sql::{Nullable, Searchable, XdbcDataType, XdbcDatetimeSubcode};

/// One row: a type name and its xDBC code; the rest follows from the kind.
fn type_info(name: &str, data_type: XdbcDataType, column_size: Option<i32>) -> XdbcTypeInfo {
    let numeric = matches!(
        data_type,
        XdbcDataType::XdbcInteger
            | XdbcDataType::XdbcBigint
            | XdbcDataType::XdbcSmallint
            | XdbcDataType::XdbcTinyint
            | XdbcDataType::XdbcDouble
            | XdbcDataType::XdbcReal
            | XdbcDataType::XdbcDecimal
    );
    let text = matches!(data_type, XdbcDataType::XdbcVarchar);
    let datetime = matches!(
        data_type,
        XdbcDataType::XdbcDate | XdbcDataType::XdbcTimestamp
    );
    XdbcTypeInfo {
        type_name: name.into(),
        data_type,
        column_size,
        literal_prefix: (text || datetime).then(|| "'".into()),
        literal_suffix: (text || datetime).then(|| "'".into()),
        create_params: None,
        nullable: Nullable::NullabilityNullable,
        case_sensitive: text,
        searchable: Searchable::Full,
        unsigned_attribute: numeric.then_some(false),
        fixed_prec_scale: matches!(data_type, XdbcDataType::XdbcDecimal),
        auto_increment: numeric.then_some(false),
        local_type_name: Some(name.into()),
        minimum_scale: None,
        maximum_scale: None,
        sql_data_type: if datetime {
            XdbcDataType::XdbcDatetime
        } else {
            data_type
        },
        datetime_subcode: match data_type {
            // Subcode 1 is SQL_CODE_DATE in ODBC; the proto names it YEAR.
            XdbcDataType::XdbcDate => Some(XdbcDatetimeSubcode::XdbcSubcodeYear),
            XdbcDataType::XdbcTimestamp => Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
            _ => None,
        },
        num_prec_radix: numeric.then_some(10),
        interval_precision: None,
    }
}

/// The types, built once.
pub static XDBC_TYPES: LazyLock<XdbcTypeInfoData> = LazyLock::new(|| {
    let mut builder = XdbcTypeInfoDataBuilder::new();
    for info in [
        type_info("BOOLEAN", XdbcDataType::XdbcBit, Some(1)),
        type_info("TINYINT", XdbcDataType::XdbcTinyint, Some(3)),
        type_info("SMALLINT", XdbcDataType::XdbcSmallint, Some(5)),
        type_info("INTEGER", XdbcDataType::XdbcInteger, Some(10)),
        type_info("BIGINT", XdbcDataType::XdbcBigint, Some(19)),
        type_info("REAL", XdbcDataType::XdbcReal, Some(7)),
        type_info("DOUBLE", XdbcDataType::XdbcDouble, Some(15)),
        type_info("DECIMAL", XdbcDataType::XdbcDecimal, Some(38)),
        type_info("VARCHAR", XdbcDataType::XdbcVarchar, None),
        type_info("VARBINARY", XdbcDataType::XdbcVarbinary, None),
        type_info("DATE", XdbcDataType::XdbcDate, Some(10)),
        type_info("TIMESTAMP", XdbcDataType::XdbcTimestamp, Some(29)),
    ] {
        builder.append(info);
    }
    builder.build().expect("static xDBC type table is valid")
});

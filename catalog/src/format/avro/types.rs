//! The types Avro-decoded columns take in the table, and the conversion to
//! them: the ones both tiers store (Delta Lake and the clients kappa serves
//! set the terms).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, ListArray, MapArray, StringArray, StructArray, make_array,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::{cast, union_extract_by_id};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, TimeUnit, UnionFields};
use datafusion::arrow::error::ArrowError;

/// The type an Avro-decoded column has in the table (and the lake).
///
/// Delta Lake and the clients kappa serves set the terms: timestamps in
/// microseconds, no dictionary or view types, no fixed-size binary, no time
/// of day (microseconds since midnight instead), no unions (a union of
/// several types is a struct of one nullable field per type, see
/// [`union_fields`]), decimals of at most 38 digits. Nested fields keep their nullability and lose
/// arrow-avro's field metadata, so both tiers compare equal.
pub fn table_type(field: &Field) -> std::result::Result<DataType, String> {
    Ok(match field.data_type() {
        DataType::Dictionary(_, values) if values.as_ref() == &DataType::Utf8 => DataType::Utf8,
        DataType::FixedSizeBinary(16) if is_uuid(field) => DataType::Utf8,
        DataType::FixedSizeBinary(_) => DataType::Binary,
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::Timestamp(_, tz) => {
            DataType::Timestamp(TimeUnit::Microsecond, tz.as_ref().map(|_| "UTC".into()))
        }
        DataType::Time32(_) | DataType::Time64(_) => DataType::Int64,
        DataType::Null => DataType::Utf8,
        DataType::Decimal256(p, _) => {
            return Err(format!(
                "decimal precision {p} is above 38, the most Delta Lake stores"
            ));
        }
        DataType::Union(branches, _) => DataType::Struct(union_fields(branches)?),
        DataType::Interval(_) => return Err("the duration type is not supported yet".into()),
        DataType::List(item) => DataType::List(Arc::new(Field::new(
            item.name(),
            table_type(item)?,
            item.is_nullable(),
        ))),
        DataType::Struct(fields) if fields.is_empty() => {
            return Err("a record with no fields (Parquet cannot store it)".into());
        }
        DataType::Struct(fields) => DataType::Struct(table_fields(fields)?),
        DataType::Map(entries, sorted) => {
            let DataType::Struct(kv) = entries.data_type() else {
                return Err("a map whose entries are not a struct".into());
            };
            DataType::Map(
                Arc::new(Field::new(
                    entries.name(),
                    DataType::Struct(table_fields(kv)?),
                    false,
                )),
                *sorted,
            )
        }
        other => other.clone(),
    })
}

fn table_fields(fields: &Fields) -> std::result::Result<Fields, String> {
    fields
        .iter()
        .map(|f| {
            // Avro's `null` type becomes a column of nulls, so nullable.
            let nullable = f.is_nullable() || f.data_type() == &DataType::Null;
            table_type(f)
                .map(|t| Field::new(f.name(), t, nullable))
                .map_err(|e| format!("{}: {e}", f.name()))
        })
        .collect()
}

/// A union's branches as the fields of a struct, the way Protobuf's `oneof`
/// reads: one nullable field per branch that is not `null`, set in the
/// branch the value took and null in the others; the struct is null where
/// the value took `null`. A field is named after its branch's type: the
/// primitive or logical type (`int`, `string`, `timestamp_millis_utc`), or
/// a named type's name without its namespace unless two branches share it.
/// (`["null", T]` never gets here: arrow-avro reads it as a nullable T.)
fn union_fields(branches: &UnionFields) -> std::result::Result<Fields, String> {
    let kept: Vec<&FieldRef> = branches
        .iter()
        .map(|(_, branch)| branch)
        .filter(|branch| branch.data_type() != &DataType::Null)
        .collect();
    let short = |name: &str| name.rsplit('.').next().unwrap_or(name).to_string();
    let shared = |name: &str| {
        kept.iter()
            .filter(|other| short(other.name()) == short(name))
            .count()
            > 1
    };
    if kept.is_empty() {
        return Err("a union of null alone (Parquet cannot store it)".into());
    }
    kept.iter()
        .map(|branch| {
            let name = match shared(branch.name()) {
                true => branch.name().to_string(),
                false => short(branch.name()),
            };
            table_type(branch)
                .map(|t| Field::new(&name, t, true))
                .map_err(|e| format!("{name}: {e}"))
        })
        .collect()
}

fn is_uuid(field: &Field) -> bool {
    field.metadata().get("logicalType").map(String::as_str) == Some("uuid")
}

/// Converts a decoded column to the table's type ([`table_type`]).
pub(super) fn to_table_type(
    array: &ArrayRef,
    target: &DataType,
) -> std::result::Result<ArrayRef, ArrowError> {
    // Nested types are always rebuilt: their structs' nulls are pushed down.
    let nested = matches!(
        target,
        DataType::Struct(_) | DataType::List(_) | DataType::Map(..)
    );
    if array.data_type() == target && !nested {
        return Ok(Arc::clone(array));
    }
    Ok(match (array.data_type(), target) {
        (DataType::FixedSizeBinary(16), DataType::Utf8) => {
            let bytes = array.as_fixed_size_binary();
            let text: StringArray = bytes
                .iter()
                .map(|v| v.map(|b| uuid_text(b.try_into().expect("16 bytes"))))
                .collect();
            Arc::new(text)
        }
        (DataType::Time32(_) | DataType::Time64(_), DataType::Int64) => cast(
            &cast(array, &DataType::Time64(TimeUnit::Microsecond))?,
            &DataType::Int64,
        )?,
        (DataType::Union(branches, _), DataType::Struct(fields)) => {
            let union = array.as_union();
            let mut targets = fields.iter();
            let mut columns = Vec::with_capacity(fields.len());
            let mut null_branch = None;
            for (type_id, branch) in branches.iter() {
                if branch.data_type() == &DataType::Null {
                    null_branch = Some(type_id);
                    continue;
                }
                let target = targets.next().expect("a field per branch but null");
                let taken = union_extract_by_id(union, type_id)?;
                columns.push(to_table_type(&taken, target.data_type())?);
            }
            let nulls = null_branch.map(|null| {
                union
                    .type_ids()
                    .iter()
                    .map(|&taken| taken != null)
                    .collect::<NullBuffer>()
            });
            Arc::new(StructArray::try_new(fields.clone(), columns, nulls)?)
        }
        (DataType::Struct(_), DataType::Struct(fields)) => {
            let parts = array.as_struct();
            // A field of a null struct reads as null (`address['city']` of
            // a missing address), whatever bytes arrow-avro left beneath it.
            let columns = parts
                .columns()
                .iter()
                .zip(fields)
                .map(|(c, f)| {
                    let c = match c.data_type() {
                        DataType::Null => Arc::clone(c),
                        // A union has no nulls of its own: as a struct first.
                        DataType::Union(..) => {
                            with_nulls_of(&to_table_type(c, f.data_type())?, parts.nulls())?
                        }
                        _ => with_nulls_of(c, parts.nulls())?,
                    };
                    to_table_type(&c, f.data_type())
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Arc::new(StructArray::try_new(
                fields.clone(),
                columns,
                parts.nulls().cloned(),
            )?)
        }
        (DataType::List(_), DataType::List(item)) => {
            let list = array.as_list::<i32>();
            let values = to_table_type(list.values(), item.data_type())?;
            Arc::new(ListArray::try_new(
                Arc::clone(item),
                list.offsets().clone(),
                values,
                list.nulls().cloned(),
            )?)
        }
        (DataType::Map(..), DataType::Map(entries, sorted)) => {
            let map = array.as_map();
            let DataType::Struct(fields) = entries.data_type() else {
                unreachable!("table_type makes map entries a struct")
            };
            let kv = to_table_type(
                &(Arc::new(map.entries().clone()) as ArrayRef),
                &DataType::Struct(fields.clone()),
            )?;
            Arc::new(MapArray::try_new(
                Arc::clone(entries),
                map.offsets().clone(),
                kv.as_struct().clone(),
                map.nulls().cloned(),
                *sorted,
            )?)
        }
        _ => cast(array, target)?,
    })
}

/// `array` with its rows null wherever `parent` is null as well.
fn with_nulls_of(
    array: &ArrayRef,
    parent: Option<&NullBuffer>,
) -> std::result::Result<ArrayRef, ArrowError> {
    let Some(parent) = parent else {
        return Ok(Arc::clone(array));
    };
    let nulls = NullBuffer::union(Some(parent), array.nulls());
    Ok(make_array(
        array.to_data().into_builder().nulls(nulls).build()?,
    ))
}

fn uuid_text(b: [u8; 16]) -> String {
    let hex = |range: std::ops::Range<usize>| {
        b[range]
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    };
    format!(
        "{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    )
}

//! Arrow builders for the table's column types, filled from decoded
//! messages by their plans. Appending cannot fail (values were checked
//! first), so a row is always whole.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Decimal128Builder, Float32Builder, Float64Builder,
    Int32Builder, Int64Builder, ListArray, MapArray, StringBuilder, StructArray,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::datatypes::{DataType, FieldRef, Fields};
use prost_reflect::{DynamicMessage, Kind, MapKey, Value};

use super::flat::Raw;
use super::plan::{Plan, Slot, seconds_nanos};

/// Builds one column of the table's type.
#[derive(Debug)]
pub(super) enum Column {
    Boolean(BooleanBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Utf8(StringBuilder),
    Binary(BinaryBuilder),
    Decimal(Decimal128Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Struct {
        fields: Fields,
        children: Vec<Column>,
        valid: Vec<bool>,
    },
    List {
        item: FieldRef,
        offsets: Vec<i32>,
        values: Box<Column>,
        valid: Vec<bool>,
    },
    Map {
        entries: FieldRef,
        offsets: Vec<i32>,
        keys: Box<Column>,
        values: Box<Column>,
        valid: Vec<bool>,
    },
}

impl Column {
    /// A builder of `data_type`, one of those [`super::schema`] maps to.
    pub(super) fn new(data_type: &DataType) -> Self {
        match data_type {
            DataType::Boolean => Self::Boolean(BooleanBuilder::new()),
            DataType::Int32 => Self::Int32(Int32Builder::new()),
            DataType::Int64 => Self::Int64(Int64Builder::new()),
            DataType::Float32 => Self::Float32(Float32Builder::new()),
            DataType::Float64 => Self::Float64(Float64Builder::new()),
            DataType::Utf8 => Self::Utf8(StringBuilder::new()),
            DataType::Binary => Self::Binary(BinaryBuilder::new()),
            DataType::Decimal128(..) => {
                Self::Decimal(Decimal128Builder::new().with_data_type(data_type.clone()))
            }
            DataType::Timestamp(..) => Self::Timestamp(
                TimestampMicrosecondBuilder::new().with_data_type(data_type.clone()),
            ),
            DataType::Struct(fields) => Self::Struct {
                fields: fields.clone(),
                children: fields.iter().map(|f| Self::new(f.data_type())).collect(),
                valid: Vec::new(),
            },
            DataType::List(item) => Self::List {
                item: Arc::clone(item),
                offsets: vec![0],
                values: Box::new(Self::new(item.data_type())),
                valid: Vec::new(),
            },
            DataType::Map(entries, _) => {
                let DataType::Struct(kv) = entries.data_type() else {
                    unreachable!("map entries are a struct")
                };
                Self::Map {
                    entries: Arc::clone(entries),
                    offsets: vec![0],
                    keys: Box::new(Self::new(kv[0].data_type())),
                    values: Box::new(Self::new(kv[1].data_type())),
                    valid: Vec::new(),
                }
            }
            other => unreachable!("Protobuf columns are never {other}"),
        }
    }

    pub(super) fn append_null(&mut self) {
        match self {
            Self::Boolean(b) => b.append_null(),
            Self::Int32(b) => b.append_null(),
            Self::Int64(b) => b.append_null(),
            Self::Float32(b) => b.append_null(),
            Self::Float64(b) => b.append_null(),
            Self::Utf8(b) => b.append_null(),
            Self::Binary(b) => b.append_null(),
            Self::Decimal(b) => b.append_null(),
            Self::Timestamp(b) => b.append_null(),
            // A field of a null struct reads as null.
            Self::Struct {
                children, valid, ..
            } => {
                children.iter_mut().for_each(Self::append_null);
                valid.push(false);
            }
            Self::List { offsets, valid, .. } | Self::Map { offsets, valid, .. } => {
                offsets.push(*offsets.last().expect("offsets start at 0"));
                valid.push(false);
            }
        }
    }

    /// Appends `value`, read by `plan` (checked by [`check`] first).
    pub(super) fn append(&mut self, plan: &Plan, value: &Value) {
        match (self, plan, value) {
            (column, Plan::Wrapper(inner), Value::Message(m)) => match m.get_field_by_number(1) {
                Some(v) => column.append(inner, &v),
                None => column.append_null(),
            },
            (Self::Utf8(b), Plan::Enum(values), Value::EnumNumber(n)) => match values.get_value(*n)
            {
                Some(known) => b.append_value(known.name()),
                // An open enum's number this schema does not name.
                None => b.append_value(n.to_string()),
            },
            (Self::Timestamp(b), Plan::Timestamp, Value::Message(m)) => {
                let (seconds, nanos) = seconds_nanos(m);
                b.append_value(seconds * 1_000_000 + i64::from(nanos / 1_000));
            }
            (Self::Int64(b), Plan::Duration, Value::Message(m)) => {
                let (seconds, nanos) = seconds_nanos(m);
                b.append_value(seconds * 1_000_000 + i64::from(nanos / 1_000));
            }
            (
                Self::Struct {
                    children, valid, ..
                },
                Plan::Message(slots),
                Value::Message(m),
            ) => {
                append_message(children, slots, m);
                valid.push(true);
            }
            (
                Self::List {
                    offsets,
                    values,
                    valid,
                    ..
                },
                Plan::List(item),
                Value::List(items),
            ) => {
                for v in items {
                    values.append(item, v);
                }
                offsets.push(offsets.last().expect("offsets start at 0") + items.len() as i32);
                valid.push(true);
            }
            (
                Self::Map {
                    offsets,
                    keys,
                    values,
                    valid,
                    ..
                },
                Plan::Map(key_plan, value_plan),
                Value::Map(entries),
            ) => {
                // Sorted, so a map reads the same however it was written.
                let mut sorted: Vec<_> = entries.iter().collect();
                sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
                for (k, v) in &sorted {
                    keys.append(key_plan, &map_key(k));
                    values.append(value_plan, v);
                }
                offsets.push(offsets.last().expect("offsets start at 0") + sorted.len() as i32);
                valid.push(true);
            }
            (column, Plan::Scalar, value) => column.append_scalar(value),
            (column, _, _) => column.append_null(), // ruled out by the plan
        }
    }

    /// Appends a singular scalar of `kind` as it lies in the wire format
    /// (`body` holds its bytes), converted as the general route converts
    /// the same value (checked by the property tests).
    pub(super) fn append_wire(&mut self, kind: &Kind, raw: Raw, body: &[u8]) {
        let zigzag32 = |v: u64| ((v as u32) >> 1) as i32 ^ -((v & 1) as i32);
        let zigzag64 = |v: u64| (v >> 1) as i64 ^ -((v & 1) as i64);
        match (self, kind, raw) {
            (Self::Int32(b), Kind::Int32, Raw::Varint(v)) => b.append_value(v as i32),
            (Self::Int32(b), Kind::Sint32, Raw::Varint(v)) => b.append_value(zigzag32(v)),
            (Self::Int32(b), Kind::Sfixed32, Raw::Fixed32(v)) => b.append_value(v as i32),
            (Self::Int64(b), Kind::Int64, Raw::Varint(v)) => b.append_value(v as i64),
            (Self::Int64(b), Kind::Int32, Raw::Varint(v)) => b.append_value(i64::from(v as i32)),
            (Self::Int64(b), Kind::Sint64, Raw::Varint(v)) => b.append_value(zigzag64(v)),
            (Self::Int64(b), Kind::Sint32, Raw::Varint(v)) => {
                b.append_value(i64::from(zigzag32(v)));
            }
            (Self::Int64(b), Kind::Sfixed64, Raw::Fixed64(v)) => b.append_value(v as i64),
            (Self::Int64(b), Kind::Sfixed32, Raw::Fixed32(v)) => {
                b.append_value(i64::from(v as i32));
            }
            (Self::Int64(b), Kind::Uint32, Raw::Varint(v)) => b.append_value(i64::from(v as u32)),
            (Self::Int64(b), Kind::Fixed32, Raw::Fixed32(v)) => b.append_value(i64::from(v)),
            (Self::Decimal(b), Kind::Uint64, Raw::Varint(v)) => {
                b.append_value(i128::from(v));
            }
            (Self::Decimal(b), Kind::Fixed64, Raw::Fixed64(v)) => b.append_value(i128::from(v)),
            (Self::Float32(b), Kind::Float, Raw::Fixed32(v)) => b.append_value(f32::from_bits(v)),
            (Self::Float64(b), Kind::Double, Raw::Fixed64(v)) => b.append_value(f64::from_bits(v)),
            (Self::Float64(b), Kind::Float, Raw::Fixed32(v)) => {
                b.append_value(f64::from(f32::from_bits(v)));
            }
            (Self::Boolean(b), Kind::Bool, Raw::Varint(v)) => b.append_value(v != 0),
            (Self::Utf8(b), Kind::String, Raw::Bytes(start, end)) => {
                match std::str::from_utf8(&body[start..end]) {
                    Ok(text) => b.append_value(text),
                    Err(_) => b.append_null(), // checked before: never
                }
            }
            (Self::Binary(b), Kind::Bytes, Raw::Bytes(start, end)) => {
                b.append_value(&body[start..end]);
            }
            (Self::Utf8(b), Kind::Enum(values), Raw::Varint(v)) => {
                let number = v as i32;
                match values.get_value(number) {
                    Some(known) => b.append_value(known.name()),
                    None => b.append_value(number.to_string()),
                }
            }
            (column, _, _) => column.append_null(), // ruled out by the plan
        }
    }

    fn append_scalar(&mut self, value: &Value) {
        match (self, value) {
            (Self::Boolean(b), Value::Bool(v)) => b.append_value(*v),
            (Self::Int32(b), Value::I32(v)) => b.append_value(*v),
            (Self::Int64(b), Value::I64(v)) => b.append_value(*v),
            (Self::Int64(b), Value::I32(v)) => b.append_value(i64::from(*v)),
            (Self::Int64(b), Value::U32(v)) => b.append_value(i64::from(*v)),
            (Self::Decimal(b), Value::U64(v)) => b.append_value(i128::from(*v)),
            (Self::Float32(b), Value::F32(v)) => b.append_value(*v),
            (Self::Float64(b), Value::F64(v)) => b.append_value(*v),
            (Self::Float64(b), Value::F32(v)) => b.append_value(f64::from(*v)),
            (Self::Utf8(b), Value::String(v)) => b.append_value(v),
            (Self::Binary(b), Value::Bytes(v)) => b.append_value(v),
            (column, _) => column.append_null(), // ruled out by the plan
        }
    }

    pub(super) fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Boolean(b) => Arc::new(b.finish()),
            Self::Int32(b) => Arc::new(b.finish()),
            Self::Int64(b) => Arc::new(b.finish()),
            Self::Float32(b) => Arc::new(b.finish()),
            Self::Float64(b) => Arc::new(b.finish()),
            Self::Utf8(b) => Arc::new(b.finish()),
            Self::Binary(b) => Arc::new(b.finish()),
            Self::Decimal(b) => Arc::new(b.finish()),
            Self::Timestamp(b) => Arc::new(b.finish()),
            Self::Struct {
                fields,
                children,
                valid,
            } => {
                let columns = children.iter_mut().map(Self::finish).collect();
                let nulls = NullBuffer::from(std::mem::take(valid));
                Arc::new(StructArray::new(fields.clone(), columns, Some(nulls)))
            }
            Self::List {
                item,
                offsets,
                values,
                valid,
            } => {
                let offsets = OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into());
                let nulls = NullBuffer::from(std::mem::take(valid));
                Arc::new(ListArray::new(
                    Arc::clone(item),
                    offsets,
                    values.finish(),
                    Some(nulls),
                ))
            }
            Self::Map {
                entries,
                offsets,
                keys,
                values,
                valid,
            } => {
                let DataType::Struct(kv) = entries.data_type() else {
                    unreachable!("map entries are a struct")
                };
                let pairs =
                    StructArray::new(kv.clone(), vec![keys.finish(), values.finish()], None);
                let offsets = OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into());
                let nulls = NullBuffer::from(std::mem::take(valid));
                Arc::new(MapArray::new(
                    Arc::clone(entries),
                    offsets,
                    pairs,
                    Some(nulls),
                    false,
                ))
            }
        }
    }
}

fn map_key(key: &MapKey) -> Value {
    match key {
        MapKey::Bool(v) => Value::Bool(*v),
        MapKey::I32(v) => Value::I32(*v),
        MapKey::I64(v) => Value::I64(*v),
        MapKey::U32(v) => Value::U32(*v),
        MapKey::U64(v) => Value::U64(*v),
        MapKey::String(v) => Value::String(v.clone()),
    }
}

/// Appends one message's fields to the struct fields (or top-level columns)
/// its plan's slots fill.
pub(super) fn append_message(columns: &mut [Column], slots: &[Slot], message: &DynamicMessage) {
    for (column, slot) in columns.iter_mut().zip(slots) {
        match slot {
            Slot::Absent => column.append_null(),
            Slot::Field(field, plan) => {
                if field.supports_presence() && !message.has_field(field) {
                    column.append_null();
                } else {
                    column.append(plan, &message.get_field(field));
                }
            }
            Slot::Oneof(branches) => {
                let set = branches.iter().flatten().any(|(f, _)| message.has_field(f));
                let Column::Struct {
                    children, valid, ..
                } = column
                else {
                    unreachable!("a oneof's column is a struct")
                };
                if !set {
                    children.iter_mut().for_each(Column::append_null);
                    valid.push(false);
                    continue;
                }
                for (child, branch) in children.iter_mut().zip(branches) {
                    match branch {
                        Some((field, plan)) if message.has_field(field) => {
                            child.append(plan, &message.get_field(field));
                        }
                        _ => child.append_null(),
                    }
                }
                valid.push(true);
            }
        }
    }
}

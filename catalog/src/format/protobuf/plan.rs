//! How a writer's message fills the table's columns: resolved once per
//! writer message (schema id and index path), by field name, so a column
//! the writer lacks reads null and a writer field the table lacks is
//! skipped. A plan also says which decoded values the columns cannot take
//! (invalid timestamps), so those are found before anything is appended.

use datafusion::arrow::datatypes::{DataType, Fields};
use prost_reflect::{
    DynamicMessage, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, Value,
};

use super::schema::{WellKnown, kind_type, well_known};

/// Protobuf's valid `Timestamp.seconds`: 0001-01-01 to 9999-12-31.
const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;
/// Protobuf's valid `Duration.seconds`: about ±10,000 years.
const DURATION_SECONDS: std::ops::RangeInclusive<i64> = -315_576_000_000..=315_576_000_000;

/// How one value of a writer field becomes a value of its column.
#[derive(Debug)]
pub(super) enum Plan {
    /// A scalar the column takes as it is (or widened: int32 into BIGINT).
    Scalar,
    /// An enum number, written as its name.
    Enum(EnumDescriptor),
    /// `google.protobuf.Timestamp`, in microseconds.
    Timestamp,
    /// `google.protobuf.Duration`, in microseconds.
    Duration,
    /// A wrapper's one field, `value`.
    Wrapper(Box<Plan>),
    /// A message into a struct, one slot per struct field.
    Message(Vec<Slot>),
    /// Repeated values, each by the plan.
    List(Box<Plan>),
    /// A map's keys and values.
    Map(Box<Plan>, Box<Plan>),
}

/// Where one struct field's value comes from.
#[derive(Debug)]
pub(super) enum Slot {
    /// The writer has no such field: null.
    Absent,
    /// A field; one with presence reads null when it is not set.
    Field(FieldDescriptor, Plan),
    /// A `oneof` into a struct of its branches (`None`: a branch the writer
    /// lacks): the set branch has its value, the others are null, and the
    /// struct is null when no branch is set.
    Oneof(Vec<Option<(FieldDescriptor, Plan)>>),
}

/// The plan of a writer message whose fields fill `fields`, by name.
pub(super) fn message_plan(
    fields: &Fields,
    writer: &MessageDescriptor,
) -> std::result::Result<Vec<Slot>, String> {
    fields
        .iter()
        .map(|column| {
            if let Some(field) = writer.get_field_by_name(column.name()) {
                let plan = field_plan(column.data_type(), &field)
                    .map_err(|e| format!("{}: {e}", column.name()))?;
                return Ok(Slot::Field(field, plan));
            }
            let oneof = writer
                .oneofs()
                .find(|o| !o.is_synthetic() && o.name() == column.name());
            match (oneof, column.data_type()) {
                (Some(oneof), DataType::Struct(branches)) => {
                    let slots = branches
                        .iter()
                        .map(|branch| {
                            let Some(field) = oneof.fields().find(|f| f.name() == branch.name())
                            else {
                                return Ok(None);
                            };
                            let plan = field_plan(branch.data_type(), &field)
                                .map_err(|e| format!("{}.{}: {e}", column.name(), branch.name()))?;
                            Ok(Some((field, plan)))
                        })
                        .collect::<std::result::Result<_, String>>()?;
                    Ok(Slot::Oneof(slots))
                }
                _ => Ok(Slot::Absent),
            }
        })
        .collect()
}

fn field_plan(column: &DataType, field: &FieldDescriptor) -> std::result::Result<Plan, String> {
    if field.is_map() {
        let (Kind::Message(entry), DataType::Map(entries, _)) = (field.kind(), column) else {
            return Err(mismatch(column, "a map"));
        };
        let DataType::Struct(kv) = entries.data_type() else {
            return Err(mismatch(column, "a map"));
        };
        let key = kind_plan(kv[0].data_type(), &entry.map_entry_key_field().kind())?;
        let value = kind_plan(kv[1].data_type(), &entry.map_entry_value_field().kind())?;
        return Ok(Plan::Map(Box::new(key), Box::new(value)));
    }
    if field.is_list() {
        let DataType::List(item) = column else {
            return Err(mismatch(column, "a repeated field"));
        };
        return Ok(Plan::List(Box::new(kind_plan(
            item.data_type(),
            &field.kind(),
        )?)));
    }
    kind_plan(column, &field.kind())
}

fn kind_plan(column: &DataType, kind: &Kind) -> std::result::Result<Plan, String> {
    match kind {
        Kind::Message(message) => match (well_known(message), column) {
            (Some(WellKnown::Timestamp), DataType::Timestamp(..)) => Ok(Plan::Timestamp),
            (Some(WellKnown::Duration), DataType::Int64) => Ok(Plan::Duration),
            (Some(WellKnown::Wrapper), _) => {
                let value = message.get_field(1).ok_or("a wrapper with no value")?;
                Ok(Plan::Wrapper(Box::new(kind_plan(column, &value.kind())?)))
            }
            (None, DataType::Struct(fields)) => Ok(Plan::Message(message_plan(fields, message)?)),
            _ => Err(mismatch(column, message.full_name())),
        },
        Kind::Enum(values) if column == &DataType::Utf8 => Ok(Plan::Enum(values.clone())),
        scalar => {
            let written = kind_type(scalar, &mut Vec::new())?;
            let widens = matches!(
                (&written, column),
                (DataType::Int32, DataType::Int64) | (DataType::Float32, DataType::Float64)
            );
            if &written == column || widens {
                Ok(Plan::Scalar)
            } else {
                Err(mismatch(column, &format!("{written}")))
            }
        }
    }
}

fn mismatch(column: &DataType, written: &str) -> String {
    format!("the writer's {written} does not fit the table's {column}")
}

/// Whether a decoded value holds only what the columns can take: valid
/// timestamps and durations (anything else fits by its plan).
fn check(plan: &Plan, value: &Value) -> std::result::Result<(), String> {
    match (plan, value) {
        (Plan::Timestamp, Value::Message(m)) => {
            let (seconds, nanos) = seconds_nanos(m);
            if TIMESTAMP_SECONDS.contains(&seconds) && (0..1_000_000_000).contains(&nanos) {
                Ok(())
            } else {
                Err(format!("invalid Timestamp: {seconds} s {nanos} ns"))
            }
        }
        (Plan::Duration, Value::Message(m)) => {
            let (seconds, nanos) = seconds_nanos(m);
            if DURATION_SECONDS.contains(&seconds) && nanos.abs() < 1_000_000_000 {
                Ok(())
            } else {
                Err(format!("invalid Duration: {seconds} s {nanos} ns"))
            }
        }
        (Plan::Message(slots), Value::Message(m)) => check_message(slots, m),
        (Plan::List(item), Value::List(items)) => items.iter().try_for_each(|v| check(item, v)),
        (Plan::Map(_, value), Value::Map(entries)) => {
            entries.values().try_for_each(|v| check(value, v))
        }
        _ => Ok(()),
    }
}

pub(super) fn check_message(
    slots: &[Slot],
    message: &DynamicMessage,
) -> std::result::Result<(), String> {
    for slot in slots {
        match slot {
            Slot::Field(field, plan) if timed(plan) && message.has_field(field) => {
                check(plan, &message.get_field(field))
                    .map_err(|e| format!("{}: {e}", field.name()))?;
            }
            Slot::Oneof(branches) => {
                for (field, plan) in branches.iter().flatten() {
                    if timed(plan) && message.has_field(field) {
                        check(plan, &message.get_field(field))
                            .map_err(|e| format!("{}: {e}", field.name()))?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether a plan reads a timestamp or duration somewhere (the only values
/// [`check`] can refuse).
fn timed(plan: &Plan) -> bool {
    match plan {
        Plan::Timestamp | Plan::Duration => true,
        Plan::Message(slots) => slots.iter().any(|slot| match slot {
            Slot::Absent => false,
            Slot::Field(_, plan) => timed(plan),
            Slot::Oneof(branches) => branches.iter().flatten().any(|(_, p)| timed(p)),
        }),
        Plan::List(item) | Plan::Wrapper(item) => timed(item),
        Plan::Map(_, value) => timed(value),
        Plan::Scalar | Plan::Enum(_) => false,
    }
}

pub(super) fn seconds_nanos(message: &DynamicMessage) -> (i64, i32) {
    let seconds = match message.get_field_by_number(1).as_deref() {
        Some(Value::I64(s)) => *s,
        _ => 0,
    };
    let nanos = match message.get_field_by_number(2).as_deref() {
        Some(Value::I32(n)) => *n,
        _ => 0,
    };
    (seconds, nanos)
}

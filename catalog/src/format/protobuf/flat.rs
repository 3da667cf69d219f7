//! The fast path for flat messages: read straight from the wire format into
//! the columns, with no `DynamicMessage` in between.
//!
//! Most Kafka messages are flat (singular scalars, strings and enums), and
//! for them decoding into a `DynamicMessage` (a heap value per field, every
//! string copied) and then into the columns costs more than the rest of
//! the scan. A writer message whose fields are all singular scalars gets a
//! [`Flat`] reader. It only ever accepts what the `DynamicMessage` route
//! would decode to the same row: whatever it is unsure of (a truncated or
//! overlong varint, a wire type that does not match the field, a group, a
//! string that is not UTF-8) it hands back, and the value takes the
//! general route, which decides and says why. The property tests check
//! that both routes give the same rows.

use prost_reflect::{Kind, MessageDescriptor, Value};

use super::columns::Column;
use super::plan::{Plan, Slot};

/// Field numbers above this get no fast path (its lookup table would be
/// large); real flat messages number their fields from 1.
const MAX_NUMBER: u32 = 4096;

/// One field's value as it lies in the wire format.
#[derive(Debug, Clone, Copy)]
pub(super) enum Raw {
    Varint(u64),
    Fixed32(u32),
    Fixed64(u64),
    /// A length-delimited value: its bytes' range in the message.
    Bytes(usize, usize),
}

/// A writer field the fast path knows.
#[derive(Debug)]
struct Known {
    wire: u64,
    /// Its column, if the table has one for it.
    column: Option<usize>,
    /// Strings are checked to be UTF-8, whether or not they are read.
    utf8: bool,
}

/// How each column is filled when its field is not in the message.
#[derive(Debug)]
enum Missing {
    /// No such writer field, or one with presence: null.
    Null,
    /// A proto3 field without presence: its default, by its plan.
    Default(Value),
}

/// Reads a flat writer message into the table's columns.
#[derive(Debug)]
pub(super) struct Flat {
    /// Writer fields by number.
    by_number: Vec<Option<Known>>,
    /// Per column: the writer field's kind, and what a missing field reads as.
    columns: Vec<(Option<Kind>, Missing)>,
}

impl Flat {
    /// The fast path for `writer` filling columns by `slots`, if it is flat.
    pub(super) fn new(writer: &MessageDescriptor, slots: &[Slot]) -> Option<Self> {
        let mut by_number: Vec<Option<Known>> = Vec::new();
        for field in writer.fields() {
            let kind = field.kind();
            let wire = wire_type(&kind)?;
            if field.is_list() || field.is_map() || field.number() > MAX_NUMBER {
                return None;
            }
            let at = field.number() as usize;
            if by_number.len() <= at {
                by_number.resize_with(at + 1, || None);
            }
            by_number[at] = Some(Known {
                wire,
                column: None,
                utf8: matches!(kind, Kind::String),
            });
        }
        let mut columns = Vec::with_capacity(slots.len());
        for (index, slot) in slots.iter().enumerate() {
            match slot {
                Slot::Absent => columns.push((None, Missing::Null)),
                Slot::Field(field, Plan::Scalar | Plan::Enum(_)) => {
                    let known = by_number[field.number() as usize].as_mut()?;
                    known.column = Some(index);
                    let missing = if field.supports_presence() {
                        Missing::Null
                    } else {
                        Missing::Default(field.default_value())
                    };
                    columns.push((Some(field.kind()), missing));
                }
                _ => return None,
            }
        }
        Some(Self { by_number, columns })
    }

    /// Reads `body` into `found` (one entry per column: the last value of
    /// its field, as Protobuf's "last one wins"), or `None` when the value
    /// must take the general route.
    pub(super) fn read(&self, body: &[u8], found: &mut Vec<Option<Raw>>) -> Option<()> {
        found.clear();
        found.resize(self.columns.len(), None);
        let mut at = 0;
        while at < body.len() {
            let tag = varint(body, &mut at)?;
            let (number, wire) = (tag >> 3, tag & 7);
            if number == 0 || tag > u64::from(u32::MAX) {
                return None; // keys are 32 bits, numbers start at 1
            }
            let raw = match wire {
                0 => Raw::Varint(varint(body, &mut at)?),
                1 => {
                    let bytes = body.get(at..at + 8)?;
                    at += 8;
                    Raw::Fixed64(u64::from_le_bytes(bytes.try_into().ok()?))
                }
                5 => {
                    let bytes = body.get(at..at + 4)?;
                    at += 4;
                    Raw::Fixed32(u32::from_le_bytes(bytes.try_into().ok()?))
                }
                2 => {
                    let len = usize::try_from(varint(body, &mut at)?).ok()?;
                    let end = at.checked_add(len).filter(|&end| end <= body.len())?;
                    let raw = Raw::Bytes(at, end);
                    at = end;
                    raw
                }
                _ => return None, // groups, and wire types that do not exist
            };
            let known = usize::try_from(number)
                .ok()
                .and_then(|n| self.by_number.get(n))
                .and_then(Option::as_ref);
            let Some(known) = known else {
                continue; // an unknown field, skipped
            };
            if known.wire != wire {
                return None;
            }
            if let (true, Raw::Bytes(start, end)) = (known.utf8, raw) {
                std::str::from_utf8(&body[start..end]).ok()?;
            }
            if let Some(column) = known.column {
                found[column] = Some(raw);
            }
        }
        Some(())
    }

    /// Appends the row [`Self::read`] found.
    pub(super) fn append(
        &self,
        body: &[u8],
        found: &[Option<Raw>],
        slots: &[Slot],
        columns: &mut [Column],
    ) {
        let parts = columns.iter_mut().zip(&self.columns).zip(found).zip(slots);
        for (((column, (kind, missing)), raw), slot) in parts {
            match (kind, raw, missing, slot) {
                (Some(kind), Some(raw), _, _) => column.append_wire(kind, *raw, body),
                (_, None, Missing::Default(value), Slot::Field(_, plan)) => {
                    column.append(plan, value);
                }
                _ => column.append_null(),
            }
        }
    }
}

/// The wire type a singular field of `kind` is written with, or `None` for
/// kinds the fast path leaves to the general route.
fn wire_type(kind: &Kind) -> Option<u64> {
    Some(match kind {
        Kind::Int32
        | Kind::Int64
        | Kind::Uint32
        | Kind::Uint64
        | Kind::Sint32
        | Kind::Sint64
        | Kind::Bool
        | Kind::Enum(_) => 0,
        Kind::Fixed64 | Kind::Sfixed64 | Kind::Double => 1,
        Kind::String | Kind::Bytes => 2,
        Kind::Fixed32 | Kind::Sfixed32 | Kind::Float => 5,
        Kind::Message(_) => return None,
    })
}

/// A varint at `*at` (at most ten bytes, the tenth at most 1, as Protobuf
/// allows), moving `*at` past it.
fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let byte = *bytes.get(*at + i)?;
        if i == 9 && byte > 1 {
            return None;
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *at += i + 1;
            return Some(value);
        }
    }
    None
}

//! Decoding framed Protobuf values into the table's columns.
//!
//! Each writer message (schema id and index path) gets a plan once
//! ([`super::plan`]). A value is then parsed whole into a `DynamicMessage`
//! and checked before anything is appended ([`super::columns`]), so a value
//! that fails costs only its own row of nulls. Flat messages take a faster
//! route to the same rows ([`super::flat`]).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BinaryArray, BinaryBuilder, StringArray};
use prost_reflect::{DynamicMessage, MessageDescriptor};

use super::columns::{Column, append_message};
use super::flat::{Flat, Raw};
use super::plan::{Slot, check_message, message_plan};
use super::{ProtobufFormat, Unknown, index_path, message_at};
use crate::error::Result;
use crate::format::framing;
use crate::format::{DecodedValues, ValueDecoder, kept_values};
/// A writer's message and how it fills the table's columns.
#[derive(Debug)]
struct WriterMessage {
    descriptor: MessageDescriptor,
    slots: Vec<Slot>,
    /// The fast path, when the message is flat.
    flat: Option<Flat>,
}

/// What a writer message reads as, or why its values are errors.
type WriterPlan = std::result::Result<Arc<WriterMessage>, String>;

/// A decoded value and how it reads (`None`: the fast path appended it),
/// or why it does not decode.
type Decoded = std::result::Result<Option<(DynamicMessage, Arc<WriterMessage>)>, String>;

/// Decodes the Protobuf values of one batch.
#[derive(Debug)]
pub struct ProtobufDecoder {
    format: Arc<ProtobufFormat>,
    raw: BinaryBuilder,
    columns: Vec<Column>,
    /// Plans by schema id and index path.
    plans: HashMap<(u32, Vec<i32>), WriterPlan>,
    /// Ids the registry did not know in this batch, asked again next batch.
    unknown: HashMap<u32, String>,
    /// Whether flat messages take the fast path (the tests compare both).
    fast: bool,
    /// The fast path's fields of the value at hand.
    found: Vec<Option<Raw>>,
}

impl ProtobufDecoder {
    /// A decoder for `format`.
    pub fn new(format: Arc<ProtobufFormat>) -> Self {
        let columns = format
            .value_schema
            .fields()
            .iter()
            .map(|f| Column::new(f.data_type()))
            .collect();
        Self {
            format,
            raw: BinaryBuilder::new(),
            columns,
            plans: HashMap::new(),
            unknown: HashMap::new(),
            fast: true,
            found: Vec::new(),
        }
    }

    /// The same decoder with every value on the general route.
    #[cfg(test)]
    pub(crate) fn without_fast_path(mut self) -> Self {
        self.fast = false;
        self
    }

    /// The plan of the message `path` picks in writer schema `id`; `Err`
    /// only when the registry cannot be asked.
    fn plan(&mut self, id: u32, path: Vec<i32>) -> Result<WriterPlan> {
        if let Some(why) = self.unknown.get(&id) {
            return Ok(Err(why.clone()));
        }
        let key = (id, path);
        if let Some(plan) = self.plans.get(&key) {
            return Ok(plan.clone());
        }
        let file = match self.format.writer(id)? {
            Ok(file) => file,
            Err(Unknown::ForNow(why)) => {
                self.unknown.insert(id, why.clone());
                return Ok(Err(why));
            }
            Err(never) => return Ok(Err(never.why())),
        };
        let table = &self.format.message;
        let plan = message_at(&file, &key.1).and_then(|writer| {
            if writer.full_name() != table.full_name() {
                return Err(format!(
                    "the value is a {} message, and this table reads {}",
                    writer.full_name(),
                    table.full_name()
                ));
            }
            let slots = message_plan(self.format.value_schema.fields(), &writer)
                .map_err(|e| format!("schema id {id} does not fit the table: {e}"))?;
            let flat = Flat::new(&writer, &slots);
            Ok(Arc::new(WriterMessage {
                descriptor: writer,
                slots,
                flat,
            }))
        });
        self.plans.insert(key, plan.clone());
        Ok(plan)
    }

    /// Decodes one value into a message the plan reads, or says why not.
    fn decode(&mut self, value: &[u8]) -> Result<Decoded> {
        let frame = match framing::parse(value) {
            Ok(frame) => frame,
            Err(why) => return Ok(Err(why)),
        };
        let (path, body) = match index_path(frame.body) {
            Ok(split) => split,
            Err(why) => return Ok(Err(why)),
        };
        let plan = match self.plan(frame.schema_id, path)? {
            Ok(plan) => plan,
            Err(why) => return Ok(Err(why)),
        };
        if let Some(flat) = plan.flat.as_ref().filter(|_| self.fast)
            && flat.read(body, &mut self.found).is_some()
        {
            flat.append(body, &self.found, &plan.slots, &mut self.columns);
            return Ok(Ok(None));
        }
        let message = match DynamicMessage::decode(plan.descriptor.clone(), body) {
            Ok(message) => message,
            Err(e) => return Ok(Err(format!("invalid Protobuf: {e}"))),
        };
        Ok(check_message(&plan.slots, &message).map(|()| Some((message, plan))))
    }
}

impl ValueDecoder for ProtobufDecoder {
    fn append(&mut self, value: Option<&[u8]>) {
        self.raw.append_option(value);
    }

    fn finish(&mut self) -> Result<DecodedValues> {
        self.unknown.clear();
        let raw: BinaryArray = self.raw.finish();
        let mut errors: Vec<Option<String>> = Vec::with_capacity(raw.len());
        for row in 0..raw.len() {
            let decoded = if raw.is_null(row) {
                Err(None)
            } else {
                self.decode(raw.value(row))?.map_err(Some)
            };
            match decoded {
                Ok(Some((message, plan))) => {
                    append_message(&mut self.columns, &plan.slots, &message);
                    errors.push(None);
                }
                Ok(None) => errors.push(None),
                Err(why) => {
                    self.columns.iter_mut().for_each(Column::append_null);
                    errors.push(why);
                }
            }
        }
        let columns: Vec<ArrayRef> = self.columns.iter_mut().map(Column::finish).collect();
        let undecoded = kept_values(&raw, &columns, |row| errors[row].is_some());
        Ok(DecodedValues {
            columns,
            errors: Arc::new(StringArray::from(errors)),
            undecoded: Arc::new(undecoded),
        })
    }
}

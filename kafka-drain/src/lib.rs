//! Takes what a librdkafka consumer has fetched, many messages per call.
//!
//! rust-rdkafka's `BaseConsumer::poll` returns one message per call, and
//! each call pays for a queue lock, a clock read in librdkafka and another
//! in Rust, an event wrapper and an `Arc`. A full scan takes millions of
//! messages, and those costs were a large share of its time.
//! librdkafka's `rd_kafka_consume_batch_queue` takes up to `n` fetched
//! messages from the consumer's queue in one call (it is what
//! confluent-kafka-python's `Consumer.consume` uses): [`QueueDrain`] wraps it.
//!
//! This crate holds the `unsafe` that the rest of kappa forbids, so it stays
//! small. Every unsafe block says why it is sound.
//!
//! Draining and `BaseConsumer::poll` may be used on the same consumer: both
//! serve its queue, as confluent-kafka's `consume` and `poll` do. One
//! difference: a client-wide error (a broker connection lost) that a drain
//! meets is logged by librdkafka, not returned. A reader that waits with
//! `poll` when a drain finds nothing still sees those errors, since they
//! come while it waits.

use std::ffi::{CStr, c_int};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;

/// A header of a record: its name and its value (`None` for a null value).
pub type Header<'m> = (&'m str, Option<&'m [u8]>);

/// Batches taken from one consumer's queue.
///
/// The messages of the last [`fill`](Self::fill) stay valid until the next
/// `fill` or until the drain is dropped; the drain cannot outlive its
/// consumer.
pub struct QueueDrain<'c> {
    queue: NonNull<rdsys::rd_kafka_queue_t>,
    /// Messages of the last fill, owned until released.
    taken: Vec<*mut rdsys::rd_kafka_message_t>,
    capacity: usize,
    _consumer: PhantomData<&'c ()>,
}

impl std::fmt::Debug for QueueDrain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueDrain")
            .field("taken", &self.taken.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl<'c> QueueDrain<'c> {
    /// A drain of `consumer`'s queue taking at most `capacity` messages per
    /// fill; `None` if the consumer has no queue of its own (it was made
    /// without a `group.id`).
    pub fn new<C: ConsumerContext>(consumer: &'c BaseConsumer<C>, capacity: usize) -> Option<Self> {
        let client = consumer.client().native_ptr();
        // SAFETY: `client` is the live handle of `consumer`, which outlives
        // the drain ('c). librdkafka returns a new reference to the
        // consumer group's queue, or null when there is no group.
        let queue = unsafe { rdsys::rd_kafka_queue_get_consumer(client) };
        Some(Self {
            queue: NonNull::new(queue)?,
            taken: Vec::with_capacity(capacity.max(1)),
            capacity: capacity.max(1),
            _consumer: PhantomData,
        })
    }

    /// Releases the last batch, then takes up to the drain's capacity of
    /// what the consumer has fetched. It returns as soon as the batch is
    /// full or `timeout` has passed: with a zero timeout, it takes only what
    /// is already there. Returns how many messages (and errors) it took.
    pub fn fill(&mut self, timeout: Duration) -> usize {
        self.release();
        let timeout_ms = c_int::try_from(timeout.as_millis()).unwrap_or(c_int::MAX);
        // SAFETY: the queue reference is ours until drop, and `taken` has
        // room for `capacity` pointers, the most librdkafka writes.
        let count = unsafe {
            rdsys::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                timeout_ms,
                self.taken.as_mut_ptr(),
                self.capacity,
            )
        };
        // librdkafka returns -1 only for a queue it cannot serve.
        let count = usize::try_from(count).unwrap_or(0).min(self.capacity);
        // SAFETY: librdkafka wrote `count` message pointers, each ours to
        // destroy, into the first `count` slots.
        unsafe { self.taken.set_len(count) };
        count
    }

    /// How many messages the last fill took.
    pub fn len(&self) -> usize {
        self.taken.len()
    }

    /// Whether the last fill took nothing.
    pub fn is_empty(&self) -> bool {
        self.taken.is_empty()
    }

    /// The `index`th message of the last fill, or the error librdkafka
    /// delivered in its place: `PartitionEOF` at a partition's end, or
    /// `MessageConsumption` with its code (as `BaseConsumer::poll` reports
    /// them).
    pub fn get(&self, index: usize) -> Result<Record<'_>, KafkaError> {
        // SAFETY: a message of the last fill, not yet destroyed; it lives
        // until the next fill, which needs `&mut self` and so cannot happen
        // while the returned record borrows `self`.
        let message = unsafe { &*self.taken[index] };
        match message.err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR => Ok(Record { message }),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__PARTITION_EOF => {
                Err(KafkaError::PartitionEOF(message.partition))
            }
            code => Err(KafkaError::MessageConsumption(code.into())),
        }
    }

    fn release(&mut self) {
        for message in self.taken.drain(..) {
            // SAFETY: each pointer came from librdkafka in the last fill and
            // is destroyed once, here; no record borrows it (`&mut self`).
            unsafe { rdsys::rd_kafka_message_destroy(message) };
        }
    }
}

impl Drop for QueueDrain<'_> {
    fn drop(&mut self) {
        self.release();
        // SAFETY: the reference `rd_kafka_queue_get_consumer` gave us,
        // returned once; the consumer itself is still alive ('c).
        unsafe { rdsys::rd_kafka_queue_destroy(self.queue.as_ptr()) };
    }
}

/// One fetched record, borrowed from the drain's last batch.
#[derive(Clone, Copy)]
pub struct Record<'m> {
    message: &'m rdsys::rd_kafka_message_t,
}

impl std::fmt::Debug for Record<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("partition", &self.partition())
            .field("offset", &self.offset())
            .finish()
    }
}

impl<'m> Record<'m> {
    /// The record's partition.
    pub fn partition(&self) -> i32 {
        self.message.partition
    }

    /// The name of the record's topic.
    pub fn topic(&self) -> &'m CStr {
        // SAFETY: a live message's topic handle, which the message holds.
        let name = unsafe { rdsys::rd_kafka_topic_name(self.message.rkt) };
        // SAFETY: librdkafka keeps the name nul-terminated and alive as long
        // as the handle.
        unsafe { CStr::from_ptr(name) }
    }

    /// The record's offset.
    pub fn offset(&self) -> i64 {
        self.message.offset
    }

    /// The record's key, if it has one.
    pub fn key(&self) -> Option<&'m [u8]> {
        // SAFETY: the message's own key and its length.
        unsafe { bytes(self.message.key, self.message.key_len) }
    }

    /// The record's value, if it is not null.
    pub fn payload(&self) -> Option<&'m [u8]> {
        // SAFETY: the message's own value and its length.
        unsafe { bytes(self.message.payload, self.message.len) }
    }

    /// The record's timestamp in milliseconds (create or log-append time),
    /// if it has one.
    pub fn timestamp_ms(&self) -> Option<i64> {
        let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: a live message (see `QueueDrain::get`) and a valid out
        // pointer.
        let timestamp = unsafe { rdsys::rd_kafka_message_timestamp(self.message, &mut kind) };
        match kind {
            rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE => None,
            _ if timestamp == -1 => None,
            _ => Some(timestamp),
        }
    }

    /// The record's headers in order (empty if it has none), or `None` if
    /// a header's name is not UTF-8.
    pub fn headers(&self) -> Option<Vec<Header<'m>>> {
        let mut headers: *mut rdsys::rd_kafka_headers_t = std::ptr::null_mut();
        // SAFETY: a live message and a valid out pointer. librdkafka parses
        // the headers on first use and keeps them with the message, outside
        // the public struct this record borrows.
        let found = unsafe { rdsys::rd_kafka_message_headers(self.message, &mut headers) };
        if found != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
            return Some(Vec::new());
        }
        let mut out = Vec::new();
        for index in 0.. {
            let mut name: *const std::ffi::c_char = std::ptr::null();
            let mut value: *const std::ffi::c_void = std::ptr::null();
            let mut size = 0usize;
            // SAFETY: `headers` belongs to the live message; the out
            // pointers are valid. Past the last header it returns NOENT.
            let got = unsafe {
                rdsys::rd_kafka_header_get_all(headers, index, &mut name, &mut value, &mut size)
            };
            if got != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
                break;
            }
            // SAFETY: librdkafka keeps header names nul-terminated, alive
            // as long as the message.
            let name = unsafe { CStr::from_ptr(name) };
            // SAFETY: the header's own value and its size.
            let value = unsafe { bytes(value.cast_mut(), size) };
            out.push((name.to_str().ok()?, value));
        }
        Some(out)
    }
}

/// The `len` bytes at `data`, or `None` for a null pointer.
///
/// # Safety
/// `data` is null or a buffer of a live message holding `len` bytes, alive
/// for 'm.
unsafe fn bytes<'m>(data: *mut std::ffi::c_void, len: usize) -> Option<&'m [u8]> {
    if data.is_null() {
        return None;
    }
    // SAFETY: the caller's promise: `len` bytes, alive for 'm.
    Some(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) })
}

//! A fetched Kafka record as the readers see it, whichever way it was taken:
//! one at a time with `BaseConsumer::poll`, or in batches with
//! [`kappa_kafka_drain::QueueDrain`].

use kappa_kafka_drain::Record;
use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Headers};

use crate::decode::{BatchAssembler, RecordRef};
use crate::error::{CatalogError, Result};

/// One header: name and value bytes.
pub(crate) type Header<'m> = (&'m str, Option<&'m [u8]>);

/// What a reader takes from a fetched record.
pub(crate) trait FetchedRecord {
    fn is_of_topic(&self, topic: &str) -> bool;
    fn partition(&self) -> i32;
    fn offset(&self) -> i64;
    fn timestamp_ms(&self) -> Option<i64>;
    fn key(&self) -> Option<&[u8]>;
    fn value(&self) -> Option<&[u8]>;
    /// The headers in order, or `None` if a header name is not UTF-8.
    fn headers(&self) -> Option<Vec<Header<'_>>>;
}

impl FetchedRecord for BorrowedMessage<'_> {
    fn is_of_topic(&self, topic: &str) -> bool {
        Message::topic(self) == topic
    }

    fn partition(&self) -> i32 {
        Message::partition(self)
    }

    fn offset(&self) -> i64 {
        Message::offset(self)
    }

    fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp().to_millis()
    }

    fn key(&self) -> Option<&[u8]> {
        Message::key(self)
    }

    fn value(&self) -> Option<&[u8]> {
        self.payload()
    }

    /// rdkafka 0.39 panics on a header name that is not UTF-8; the panic is
    /// contained here and reported as `None`.
    fn headers(&self) -> Option<Vec<Header<'_>>> {
        let Some(headers) = Message::headers(self) else {
            return Some(Vec::new());
        };
        std::panic::catch_unwind(|| {
            headers
                .iter()
                .map(|header| (header.key, header.value))
                .collect::<Vec<_>>()
        })
        .ok()
    }
}

impl FetchedRecord for Record<'_> {
    fn is_of_topic(&self, topic: &str) -> bool {
        self.topic().to_bytes() == topic.as_bytes()
    }

    fn partition(&self) -> i32 {
        Record::partition(self)
    }

    fn offset(&self) -> i64 {
        Record::offset(self)
    }

    fn timestamp_ms(&self) -> Option<i64> {
        Record::timestamp_ms(self)
    }

    fn key(&self) -> Option<&[u8]> {
        Record::key(self)
    }

    fn value(&self) -> Option<&[u8]> {
        self.payload()
    }

    fn headers(&self) -> Option<Vec<Header<'_>>> {
        Record::headers(self)
    }
}

/// Appends `record` (of `topic`) to `assembler`; returns the bytes of its
/// key, value and headers.
pub(crate) fn append_record(
    assembler: &mut BatchAssembler,
    topic: &str,
    record: &impl FetchedRecord,
) -> Result<usize> {
    let parts = RecordRef {
        partition: record.partition(),
        offset: record.offset(),
        timestamp_ms: record.timestamp_ms(),
        key: record.key(),
        value: record.value(),
    };
    // Headers are parsed (by librdkafka) and gathered only for a query that
    // reads `_headers`: most do not, and it is a list per record.
    let headers = if assembler.needs_headers() {
        record.headers().ok_or_else(|| {
            CatalogError::InvalidRecord(format!(
                "topic '{topic}' partition {} offset {}: a header name is not UTF-8",
                record.partition(),
                record.offset()
            ))
        })?
    } else {
        Vec::new()
    };
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.len() + value.map_or(0, <[u8]>::len))
        .sum();
    let bytes =
        parts.key.map_or(0, <[u8]>::len) + parts.value.map_or(0, <[u8]>::len) + header_bytes;
    assembler.append(parts, headers)?;
    Ok(bytes)
}

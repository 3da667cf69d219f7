//! The thread that follows Kafka for one stream: one consumer assigned to
//! every partition at its start, polled until the client goes away.
//!
//! A batch leaves when it is full (`batch_size` rows or
//! [`MAX_BATCH_BYTES`]) or when its first row has waited the linger, so
//! records arrive promptly at low rates and in full batches at high ones.
//! The channel to the client holds two batches: while the client is slow the
//! thread waits on it and stops polling, librdkafka's prefetch queue fills
//! up to its bound and fetching pauses, so memory stays bounded however far
//! behind the client falls.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result as DfResult;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::StartPosition;
use super::exec::TailSpec;
use crate::decode::BatchAssembler;
use crate::error::{CatalogError, Result};
use crate::kafka::KafkaClient;
use crate::plan::TimestampOrder;
use crate::scan::fetched::append_record;
use crate::scan::reader::MAX_BATCH_BYTES;
use crate::stream_registry::StreamGuard;

/// How long one poll waits at most before the reader re-checks the client.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Records taken between two reads of the clock while records keep coming.
const CLOCK_EVERY: usize = 64;

pub(super) type BatchSender = mpsc::Sender<DfResult<RecordBatch>>;

/// Follows one topic for one stream.
pub(super) struct TailReader {
    spec: Arc<TailSpec>,
    client: Arc<KafkaClient>,
    assembler: BatchAssembler,
    batch_size: usize,
    guard: Arc<StreamGuard>,
    /// The next offset expected in each assigned partition.
    next: HashMap<i32, i64>,
    /// Records fetched and not yet added to the client's total.
    fetched: u64,
}

impl TailReader {
    pub(super) fn new(
        spec: Arc<TailSpec>,
        client: Arc<KafkaClient>,
        batch_size: usize,
        guard: Arc<StreamGuard>,
    ) -> Self {
        let assembler =
            BatchAssembler::new(spec.format.clone(), Arc::clone(&spec.value_schema), None);
        Self {
            spec,
            client,
            assembler,
            batch_size,
            guard,
            next: HashMap::new(),
            fetched: 0,
        }
    }

    /// Runs until the client goes away; an error ends the stream with it.
    pub(super) fn run(mut self, tx: BatchSender) {
        if let Err(e) = self.follow(&tx) {
            let _ = tx.blocking_send(Err(e.into()));
        }
        tracing::debug!(stream = self.guard.stats().id, "stream reader stopped");
    }

    fn follow(&mut self, tx: &BatchSender) -> Result<()> {
        let consumer = self.client.stream_consumer()?;
        let mut assignment = TopicPartitionList::new();
        let mut known: HashSet<i32> = self.spec.partitions.iter().copied().collect();
        for &(partition, start) in &self.spec.kafka_starts {
            assignment.add_partition_offset(&self.spec.topic, partition, Offset::Offset(start))?;
            self.next.insert(partition, start);
        }
        consumer.assign(&assignment)?;

        let linger = self.spec.linger;
        let mut first_row: Option<Instant> = None;
        let mut last_refresh = Instant::now();
        let mut failing_since: Option<Instant> = None;
        let mut clock = ClockRation::every(CLOCK_EVERY);
        loop {
            if tx.is_closed() {
                return Ok(());
            }
            // Records already fetched are taken without reading the clock;
            // the clock is read when the stream goes idle or every
            // `CLOCK_EVERY` records.
            let polled = consumer.poll(Duration::ZERO).or_else(|| {
                let wait = first_row.map_or(POLL_INTERVAL, |t| {
                    linger.saturating_sub(t.elapsed()).min(POLL_INTERVAL)
                });
                consumer.poll(wait)
            });
            let idle = polled.is_none();
            match polled {
                Some(Ok(message)) => {
                    self.fetched += 1;
                    let partition = message.partition();
                    let offset = message.offset();
                    let next = self.next.entry(partition).or_insert(offset);
                    // Some brokers re-deliver after a reset: each offset once.
                    if offset < *next {
                        continue;
                    }
                    *next = offset + 1;
                    append_record(&mut self.assembler, &self.spec.topic, &message)?;
                    first_row.get_or_insert_with(Instant::now);
                    if self.assembler.len() >= self.batch_size
                        || self.assembler.buffered_bytes() >= MAX_BATCH_BYTES
                    {
                        first_row = None;
                        if !self.send(tx)? {
                            return Ok(());
                        }
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange,
                ))) => return Err(self.fell_behind()),
                Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => return Err(e.into()),
                Some(Err(e)) => {
                    tracing::debug!(topic = %self.spec.topic, error = %e, "consumer error")
                }
                None => {}
            }
            if !clock.due(idle) {
                continue;
            }
            if first_row.is_some_and(|t| t.elapsed() >= linger) {
                first_row = None;
                if !self.send(tx)? {
                    return Ok(());
                }
            }
            if last_refresh.elapsed() >= self.spec.refresh_interval {
                last_refresh = Instant::now();
                match self.client.partitions(&self.spec.topic) {
                    Ok(partitions) => {
                        failing_since = None;
                        self.add_partitions(&consumer, &mut known, partitions)?;
                    }
                    Err(e) => {
                        let since = *failing_since.get_or_insert_with(Instant::now);
                        let timeout = self.client.options().fetch_timeout;
                        if since.elapsed() >= timeout {
                            let cause = match e {
                                CatalogError::BrokerUnavailable(why) => why,
                                other => other.to_string(),
                            };
                            return Err(CatalogError::BrokerUnavailable(format!(
                                "topic '{}': stream lost the brokers for {timeout:?}: {cause}",
                                self.spec.topic
                            )));
                        }
                    }
                }
            }
        }
    }

    /// Sends the assembled rows; `false` when the client is gone.
    fn send(&mut self, tx: &BatchSender) -> Result<bool> {
        if self.assembler.is_empty() {
            return Ok(true);
        }
        let batch = self.assembler.finish()?;
        self.client.count_fetched(std::mem::take(&mut self.fetched));
        Ok(tx.blocking_send(Ok(batch)).is_ok())
    }

    /// Partitions added to the topic since the stream started join it from
    /// their first record (they hold only records produced since), or from
    /// the start time's offset; the filters decide as for the others.
    fn add_partitions(
        &mut self,
        consumer: &BaseConsumer,
        known: &mut HashSet<i32>,
        partitions: Vec<i32>,
    ) -> Result<()> {
        let added: Vec<i32> = partitions
            .into_iter()
            .filter(|p| known.insert(*p))
            .collect();
        if added.is_empty() {
            return Ok(());
        }
        let by_time = match &self.spec.start {
            StartPosition::Time(t) => self.client.offsets_for_time(&self.spec.topic, &added, *t)?,
            _ => HashMap::new(),
        };
        let mut assignment = TopicPartitionList::new();
        for partition in added {
            let (allowed, _) =
                self.spec
                    .predicate
                    .bounds(partition, None, TimestampOrder::Unordered);
            let base = by_time.get(&partition).copied().unwrap_or(0);
            if base == i64::MAX {
                // No record at or after the start time yet: from its end.
                assignment.add_partition_offset(&self.spec.topic, partition, Offset::End)?;
                continue;
            }
            let Some(start) = allowed.first_at_or_after(base) else {
                continue;
            };
            tracing::info!(topic = %self.spec.topic, partition, start, "stream follows a new partition");
            assignment.add_partition_offset(
                &self.spec.topic,
                partition,
                if start == 0 {
                    Offset::Beginning
                } else {
                    Offset::Offset(start)
                },
            )?;
            self.next.insert(partition, start);
        }
        if assignment.count() > 0 {
            consumer.incremental_assign(&assignment)?;
        }
        Ok(())
    }

    /// The error for a position the log no longer holds.
    fn fell_behind(&self) -> CatalogError {
        let partitions: Vec<i32> = self.next.keys().copied().collect();
        let detail = match self.client.log_starts(&self.spec.topic, &partitions) {
            Ok(starts) => {
                let mut lost: Vec<String> = self
                    .next
                    .iter()
                    .filter_map(|(p, &next)| {
                        let start = *starts.get(p)?;
                        (start > next).then(|| format!("partition {p}: offsets {next}..{start}"))
                    })
                    .collect();
                lost.sort();
                if lost.is_empty() {
                    "records".to_string()
                } else {
                    lost.join(", ")
                }
            }
            Err(_) => "records".to_string(),
        };
        CatalogError::StreamFellBehind {
            topic: self.spec.topic.clone(),
            detail,
        }
    }
}

/// Clock reads rationed while records keep coming: reading it per record
/// cost a fifth of a scan's CPU, so a reader looks at it once every `n`
/// steps, or at once when a poll found nothing.
struct ClockRation {
    every: usize,
    since: usize,
}

impl ClockRation {
    /// Due every `n` steps.
    fn every(n: usize) -> Self {
        Self { every: n, since: 0 }
    }

    /// Whether to read the clock after this step (`idle`: the poll found
    /// nothing).
    fn due(&mut self, idle: bool) -> bool {
        self.since += 1;
        if idle || self.since >= self.every {
            self.since = 0;
            return true;
        }
        false
    }
}

//! The reader thread of one output partition: a consumer assigned to a
//! group of ranges, polled until every range is read, feeding batches to
//! the plan through a bounded channel.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::error::{DataFusionError, Result as DfResult};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use kappa_kafka_drain::QueueDrain;

use super::ScanSpec;
use super::fetched::{FetchedRecord, append_record};
use super::metrics::ScanMetrics;
use super::round::Round;
use crate::decode::{BatchAssembler, Undecoded, ValueStage};
use crate::error::{CatalogError, Result};
use crate::format::ValueFormat;
use crate::kafka::KafkaClient;
use crate::offsets::{Delivery, PartitionCursor, PartitionRange, TailCursor};
use datafusion::arrow::record_batch::RecordBatch;

/// How long one poll waits before the reader re-checks cancellation and positions.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Fetched records a reader takes from its consumer in one call.
const DRAIN_BATCH: usize = 512;

/// How often jumps in offsets are checked against the log start while a
/// round is read (and always when it ends).
const VERIFY_INTERVAL: Duration = Duration::from_secs(1);

/// A batch is cut at `batch_size` rows or this many key/value/header bytes,
/// whichever comes first, so large records do not make huge batches.
pub(crate) const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;

/// Where a reader sends its batches.
pub(super) type BatchSender = mpsc::Sender<DfResult<Cut>>;

/// A batch a reader cut: decoded on its thread, or to be decoded by the
/// receiver ([`crate::decode::ValueStage`]).
#[derive(Debug)]
pub(super) enum Cut {
    Decoded(RecordBatch),
    Undecoded(Box<Undecoded>),
}

impl Cut {
    fn num_rows(&self) -> usize {
        match self {
            Cut::Decoded(batch) => batch.num_rows(),
            Cut::Undecoded(batch) => batch.num_rows(),
        }
    }
}

/// Whether a reader goes on after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    /// The limit is reached or the receiver is gone.
    Stop,
}

/// Reads one group of partition ranges on a dedicated thread.
pub(super) struct GroupReader {
    topic: String,
    ranges: Vec<PartitionRange>,
    assembler: BatchAssembler,
    remaining: Option<usize>,
    last: Option<usize>,
    /// Records taken per partition in the last round read.
    taken: HashMap<i32, usize>,
    batch_size: usize,
    client: Arc<KafkaClient>,
    metrics: ScanMetrics,
    /// Records fetched already added to the client's total.
    reported: usize,
}

impl GroupReader {
    /// A reader of `ranges` (one group of `spec`'s).
    pub(super) fn new(
        spec: &ScanSpec,
        ranges: Vec<PartitionRange>,
        batch_size: usize,
        client: Arc<KafkaClient>,
        metrics: ScanMetrics,
    ) -> Self {
        Self {
            topic: spec.topic.clone(),
            ranges,
            assembler: BatchAssembler::new(
                spec.format.clone(),
                Arc::clone(&spec.value_schema),
                spec.projection.as_deref(),
            ),
            remaining: spec.limit,
            last: spec.last,
            taken: HashMap::new(),
            batch_size,
            client,
            metrics,
            reported: 0,
        }
    }

    /// The half that decodes the values of the batches this reader sends,
    /// to run where they are received, unless decoding `format` may wait on
    /// a schema registry (then this reader's thread decodes).
    pub(super) fn take_stage(&mut self, format: &ValueFormat) -> Option<ValueStage> {
        if format.asks_a_registry() {
            return None;
        }
        self.assembler.take_stage()
    }

    /// Adds the records fetched since the last call to the client's total:
    /// before each batch leaves and before the stream ends, so a query's
    /// records are counted by the time its client has its answer.
    fn report_fetched(&mut self) {
        let fetched = self.metrics.records_fetched.value();
        self.client
            .count_fetched(fetched.saturating_sub(self.reported) as u64);
        self.reported = fetched;
    }

    /// Reads everything, then ends the channel; an error (or a panic) is
    /// the stream's last item.
    pub(super) fn run(mut self, tx: BatchSender) {
        // A panic must not end the stream quietly (the query would look
        // complete with rows missing): turn it into an error.
        // The consumer outlives the channel: returning it to the pool, or
        // librdkafka's teardown after an error (closing connections, joining
        // its threads, up to ~100 ms), must not hold up the query's stream.
        let mut consumer: Option<BaseConsumer> = None;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if self.remaining == Some(0) {
                return Ok(());
            }
            let consumer = consumer.insert(self.client.scan_consumer()?);
            self.read(consumer, &tx)
        }));
        self.report_fetched();
        let error = match outcome {
            Ok(Ok(())) => {
                drop(tx);
                // Read cleanly (to its end, or stopped by a limit or the
                // client going away): fit for the next scan.
                if let Some(consumer) = consumer {
                    self.client.return_scan_consumer(consumer);
                }
                return;
            }
            Ok(Err(e)) => DataFusionError::from(e),
            Err(panic) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown cause".into());
                DataFusionError::Execution(format!("Kafka reader failed: {why}"))
            }
        };
        // The receiver may be gone already; then nobody needs the error.
        let _ = tx.blocking_send(Err(error));
        drop(tx);
        drop(consumer);
    }

    fn read(&mut self, consumer: &BaseConsumer, tx: &BatchSender) -> Result<()> {
        if let Some(n) = self.last {
            return self.read_last(consumer, n, tx);
        }
        // A partition may have several ranges: read them in rounds of at
        // most one range per partition, each round a fresh assignment.
        let mut pending: VecDeque<PartitionRange> = std::mem::take(&mut self.ranges).into();
        while !pending.is_empty() {
            let mut round: Vec<PartitionRange> = Vec::new();
            let mut later = VecDeque::new();
            for range in pending.drain(..) {
                if round.iter().any(|r| r.partition == range.partition) {
                    later.push_back(range);
                } else {
                    round.push(range);
                }
            }
            pending = later;
            if self.read_round(consumer, &round, tx)? == Flow::Stop {
                return Ok(());
            }
        }
        if !self.assembler.is_empty() {
            self.send(tx)?;
        }
        Ok(())
    }

    /// Reads the newest `n` records of each partition, window by window
    /// backwards (see [`TailCursor`]); all partitions' windows of one step
    /// are read as one round.
    fn read_last(&mut self, consumer: &BaseConsumer, n: usize, tx: &BatchSender) -> Result<()> {
        let mut by_partition: HashMap<i32, Vec<PartitionRange>> = HashMap::new();
        for range in std::mem::take(&mut self.ranges) {
            by_partition.entry(range.partition).or_default().push(range);
        }
        let mut tails: Vec<TailCursor> = by_partition
            .into_values()
            .map(|ranges| TailCursor::new(ranges, n))
            .collect();
        loop {
            let mut round = Vec::new();
            for (i, tail) in tails.iter_mut().enumerate() {
                if let Some(window) = tail.next_window() {
                    round.push((i, window));
                }
            }
            if round.is_empty() {
                break;
            }
            self.taken.clear();
            let windows: Vec<PartitionRange> = round.iter().map(|(_, w)| *w).collect();
            if self.read_round(consumer, &windows, tx)? == Flow::Stop {
                return Ok(());
            }
            for (i, window) in round {
                let records = self.taken.get(&window.partition).copied().unwrap_or(0);
                tails[i].read(window, records);
            }
        }
        if !self.assembler.is_empty() {
            self.send(tx)?;
        }
        Ok(())
    }

    /// Reads `ranges` (at most one per partition) to their ends.
    fn read_round(
        &mut self,
        consumer: &BaseConsumer,
        ranges: &[PartitionRange],
        tx: &BatchSender,
    ) -> Result<Flow> {
        let mut assignment = TopicPartitionList::new();
        for range in ranges {
            assignment.add_partition_offset(
                &self.topic,
                range.partition,
                Offset::Offset(range.start),
            )?;
        }
        // A partition paused when it finished an earlier round stays paused
        // across assignments. Resume it before the new assignment too:
        // librdkafka applies an assignment asynchronously, so a resume issued
        // only after `assign` can be overtaken by it and leave the partition
        // paused (the round then waits for records that never come).
        if let Ok(previous) = consumer.assignment()
            && previous.count() > 0
        {
            consumer.resume(&previous)?;
        }
        consumer.assign(&assignment)?;
        consumer.resume(&assignment)?;

        let mut round = Round::new(ranges);
        let flow = self.read_assigned(consumer, &mut round, tx);
        self.taken = round.taken_by_partition();
        flow
    }

    /// Takes the assigned round's records until every range is read: in
    /// batches while records are there, waiting in `poll` when none are.
    fn read_assigned(
        &mut self,
        consumer: &BaseConsumer,
        round: &mut Round,
        tx: &BatchSender,
    ) -> Result<Flow> {
        let fetch_timeout = self.client.options().fetch_timeout;
        let mut drain = QueueDrain::new(consumer, DRAIN_BATCH)
            .ok_or_else(|| CatalogError::Config("a scan consumer has no group.id".into()))?;
        let mut last_verified = Instant::now();
        while !round.is_done() {
            if tx.is_closed() {
                return Ok(Flow::Stop);
            }
            // What is already fetched is taken in a batch, without waiting
            // and without reading the clock per record (per-record clock
            // reads once cost a fifth of a scan). Only when nothing is there
            // does the reader wait, timed, in `poll`, which also returns the
            // client's errors.
            let step = if drain.fill(Duration::ZERO) > 0 {
                let mut step = Step::Next;
                for index in 0..drain.len() {
                    step = self.take(drain.get(index), round, consumer, tx)?;
                    if step != Step::Next {
                        break;
                    }
                }
                step
            } else {
                let polled = {
                    let _waiting = self.metrics.kafka_wait.timer();
                    consumer.poll(POLL_INTERVAL)
                };
                match polled {
                    Some(fetched) => self.take(fetched, round, consumer, tx)?,
                    None => {
                        round.reached_positions(consumer);
                        Step::Next
                    }
                }
            };
            if step == Step::Stop {
                return Ok(Flow::Stop);
            }
            let now = Instant::now();
            if std::mem::take(&mut round.progressed) {
                round.last_progress = now;
            }
            if now.duration_since(last_verified) >= VERIFY_INTERVAL {
                self.verify_gaps(&mut round.cursors)?;
                last_verified = now;
            }
            if now.duration_since(round.last_progress) > fetch_timeout {
                return Err(self.stalled(round, fetch_timeout));
            }
        }
        // No range is done before its jumps are explained.
        self.verify_gaps(&mut round.cursors)?;
        Ok(Flow::Continue)
    }

    /// Takes one fetched record, or the error fetched in its place.
    fn take(
        &mut self,
        fetched: std::result::Result<impl FetchedRecord, KafkaError>,
        round: &mut Round,
        consumer: &BaseConsumer,
        tx: &BatchSender,
    ) -> Result<Step> {
        let record = match fetched {
            Ok(record) => record,
            Err(error) => {
                self.fetch_error(error, round, consumer)?;
                return Ok(Step::Next);
            }
        };
        round.progressed = true;
        self.metrics.records_fetched.add(1);
        // Only this scan's ranges count (a pooled consumer never delivers
        // another's, but a record is cheap to check).
        if !record.is_of_topic(&self.topic) {
            return Ok(Step::Next);
        }
        let partition = record.partition();
        let Some(index) = round.cursor_of(partition) else {
            return Ok(Step::Next);
        };
        let cursor = &mut round.cursors[index];
        let finished_before = cursor.is_done();
        match cursor.deliver(record.offset()) {
            Delivery::Take | Delivery::TakeLast => {
                let bytes = append_record(&mut self.assembler, &self.topic, &record)?;
                self.metrics.bytes_fetched.add(bytes);
                round.taken[index] += 1;
                if let Some(remaining) = &mut self.remaining {
                    *remaining -= 1;
                    if *remaining == 0 {
                        self.send(tx)?;
                        return Ok(Step::Stop);
                    }
                }
            }
            Delivery::Duplicate | Delivery::PastEnd => {
                self.metrics.records_dropped.add(1);
            }
        }
        let finished = round.cursors[index].is_done() && !finished_before;
        if finished {
            pause(consumer, &self.topic, partition);
        }
        let full = self.assembler.len() >= self.batch_size
            || self.assembler.buffered_bytes() >= MAX_BATCH_BYTES;
        if full {
            if !self.send(tx)? {
                return Ok(Step::Stop);
            }
            // Time spent waiting for a slow client is not a stall.
            round.last_progress = Instant::now();
        }
        // The rest of a batch is for ranges already read.
        Ok(if finished && round.is_done() {
            Step::RoundRead
        } else {
            Step::Next
        })
    }

    /// Handles an error fetched in a record's place.
    fn fetch_error(
        &self,
        error: KafkaError,
        round: &mut Round,
        consumer: &BaseConsumer,
    ) -> Result<()> {
        match error {
            KafkaError::PartitionEOF(partition) => {
                round.progressed = true;
                if let Some(index) = round.cursor_of(partition) {
                    let cursor = &mut round.cursors[index];
                    // The end of the log as the broker sees it now. Only at
                    // or past the range's end does it finish the range: a
                    // log that ends before it lost records, and the fetch
                    // timeout says so.
                    if let Some(position) = position_of(consumer, &self.topic, partition) {
                        cursor.reached(position);
                    }
                    if cursor.is_done() {
                        pause(consumer, &self.topic, partition);
                    }
                }
            }
            e @ KafkaError::MessageConsumptionFatal(_) => return Err(e.into()),
            KafkaError::MessageConsumption(
                RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange,
            ) => {
                // A read position outside the log: something vanished.
                round
                    .cursors
                    .iter_mut()
                    .for_each(PartitionCursor::suspect_gap);
                self.verify_gaps(&mut round.cursors)?;
            }
            e => {
                tracing::debug!(topic = %self.topic, error = %e, "consumer error");
                round.last_error = Some(e);
            }
        }
        Ok(())
    }

    /// The error of a round that got no record for `fetch_timeout`, naming
    /// where each unfinished range stopped.
    fn stalled(&self, round: &mut Round, fetch_timeout: Duration) -> CatalogError {
        let stuck: Vec<String> = round
            .cursors
            .iter()
            .filter(|c| !c.is_done())
            .map(|c| {
                format!(
                    "partition {} at offset {} of {}",
                    c.range().partition,
                    c.next_offset(),
                    c.range().end
                )
            })
            .collect();
        let cause = round
            .last_error
            .take()
            .map(|e| format!(": {}", crate::error::kafka_cause(&e)))
            .unwrap_or_default();
        CatalogError::BrokerUnavailable(format!(
            "topic '{}': no data for {:?} ({}){cause}",
            self.topic,
            fetch_timeout,
            stuck.join(", ")
        ))
    }

    /// Checks every unexplained jump in offsets against the partitions' log
    /// starts: if the log start passed where a jump began, records of the
    /// snapshot were deleted under the query, which must fail rather than
    /// return the rest.
    fn verify_gaps(&self, cursors: &mut [PartitionCursor]) -> Result<()> {
        let suspects: Vec<i32> = cursors
            .iter()
            .filter(|c| c.unverified_gap().is_some())
            .map(|c| c.range().partition)
            .collect();
        if suspects.is_empty() {
            return Ok(());
        }
        let starts = self.client.log_starts(&self.topic, &suspects)?;
        let mut lost = Vec::new();
        for partition in suspects {
            let (Some(cursor), Some(&start)) = (
                cursors
                    .iter_mut()
                    .find(|c| c.range().partition == partition),
                starts.get(&partition),
            ) else {
                continue;
            };
            if let Err((from, to)) = cursor.verify(start) {
                lost.push(format!("partition {partition}: offsets {from}..{to}"));
            }
        }
        if lost.is_empty() {
            return Ok(());
        }
        lost.sort();
        Err(CatalogError::RecordsVanished {
            topic: self.topic.clone(),
            detail: lost.join(", "),
        })
    }

    /// Sends the assembled batch, its values to be decoded by the receiver;
    /// `false` when the receiver is gone.
    fn send(&mut self, tx: &BatchSender) -> Result<bool> {
        let batch = if self.assembler.has_stage() {
            Cut::Decoded(self.assembler.finish()?)
        } else {
            Cut::Undecoded(Box::new(self.assembler.finish_undecoded()))
        };
        self.metrics.output_rows.add(batch.num_rows());
        self.report_fetched();
        Ok(tx.blocking_send(Ok(batch)).is_ok())
    }
}

/// What a step of a round's reading did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Next,
    /// Every range of the round is read; the rest of a batch is not needed.
    RoundRead,
    /// The limit is reached or the receiver is gone.
    Stop,
}

/// The consumer's fetch position in `partition`, if it has one.
fn position_of(consumer: &BaseConsumer, topic: &str, partition: i32) -> Option<i64> {
    let positions = consumer.position().ok()?;
    match positions.find_partition(topic, partition)?.offset() {
        Offset::Offset(position) => Some(position),
        _ => None,
    }
}

/// Stops fetching a finished partition so the prefetch queue holds only what
/// is still needed.
fn pause(consumer: &BaseConsumer, topic: &str, partition: i32) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    if let Err(e) = consumer.pause(&tpl) {
        tracing::debug!(topic, partition, error = %e, "pause failed");
    }
}

//! `KafkaScanExec`: reads a fixed list of partition offset ranges.
//!
//! Each output partition of the plan is one group of ranges, read by its own
//! consumer on its own thread (librdkafka polling blocks, so it stays off the
//! async runtime). Records go into a [`BatchAssembler`] and leave as a batch
//! every `batch_size` rows through a channel of two batches, so memory is
//! bounded whatever the topic's size, and a client that goes away stops the
//! reader at its next poll.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, Time,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions,
};
use rdkafka::Message;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::config::ValueFormat;
use crate::decode::{BatchAssembler, RecordRef};
use crate::error::{CatalogError, Result};
use crate::kafka::KafkaClient;
use crate::offsets::{Delivery, PartitionCursor, PartitionRange, TailCursor, group_ranges};

/// How long one poll waits before the reader re-checks cancellation and positions.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How often jumps in offsets are checked against the log start while a
/// round is read (and always when it ends).
const VERIFY_INTERVAL: Duration = Duration::from_secs(1);

/// A batch is cut at `batch_size` rows or this many key/value/header bytes,
/// whichever comes first, so large records do not make huge batches.
const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;

/// `EXPLAIN` lists every range up to this many; beyond, a summary (use
/// `EXPLAIN VERBOSE` for all).
const MAX_RANGES_SHOWN: usize = 8;

/// What one scan reads: the topic, how to decode it, and its ranges.
#[derive(Debug, Clone)]
pub struct ScanSpec {
    /// Kafka topic.
    pub topic: String,
    /// Value format.
    pub format: ValueFormat,
    /// Declared value columns.
    pub value_schema: SchemaRef,
    /// Table columns to produce (all when `None`).
    pub projection: Option<Vec<usize>>,
    /// Offset ranges to read, fixed at plan time.
    pub ranges: Vec<PartitionRange>,
    /// The filters the ranges were derived from, as shown by `EXPLAIN`.
    pub pushed_filters: Vec<String>,
    /// Stop after this many rows (only set when no filter is left above the scan).
    pub limit: Option<usize>,
    /// Read only the newest this many records of each partition (set by
    /// [`crate::plan::LastRecordsRule`] under `ORDER BY _offset DESC LIMIT n`).
    pub last: Option<usize>,
}

/// Physical plan node that reads offset ranges of one topic.
#[derive(Debug)]
pub struct KafkaScanExec {
    spec: ScanSpec,
    groups: Vec<Vec<PartitionRange>>,
    client: Arc<KafkaClient>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl KafkaScanExec {
    /// A scan of `spec`, its ranges split over at most `target_partitions`
    /// output partitions, producing `schema` (the table schema after the
    /// projection).
    pub fn new(
        spec: ScanSpec,
        schema: SchemaRef,
        target_partitions: usize,
        client: Arc<KafkaClient>,
    ) -> Self {
        let groups = group_ranges(&spec.ranges, target_partitions);
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(groups.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            spec,
            groups,
            client,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The ranges each output partition reads.
    pub fn groups(&self) -> &[Vec<PartitionRange>] {
        &self.groups
    }

    /// What this scan reads.
    pub fn spec(&self) -> &ScanSpec {
        &self.spec
    }

    /// This scan reading only the newest `n` records of each partition.
    pub fn with_last(&self, n: usize) -> Self {
        let mut spec = self.spec.clone();
        spec.last = Some(n);
        Self {
            spec,
            groups: self.groups.clone(),
            client: Arc::clone(&self.client),
            properties: Arc::clone(&self.properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for KafkaScanExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let ranges = &self.spec.ranges;
        write!(f, "KafkaScanExec: topic={}", self.spec.topic)?;
        if !self.spec.pushed_filters.is_empty() {
            write!(f, ", filters=[{}]", self.spec.pushed_filters.join(", "))?;
        }
        if let Some(limit) = self.spec.limit {
            write!(f, ", limit={limit}")?;
        }
        if let Some(last) = self.spec.last {
            write!(f, ", last={last} per partition")?;
        }
        let all = matches!(t, DisplayFormatType::Verbose) || ranges.len() <= MAX_RANGES_SHOWN;
        let shown = if all { ranges.len() } else { MAX_RANGES_SHOWN };
        write!(f, ", ranges=[")?;
        for (i, range) in ranges[..shown].iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{range}")?;
        }
        if shown < ranges.len() {
            let mut partitions: Vec<i32> = ranges.iter().map(|r| r.partition).collect();
            partitions.dedup();
            let offsets: i64 = ranges.iter().map(PartitionRange::span).sum();
            write!(
                f,
                ", … {} more; {} ranges over {} partitions, {offsets} offsets",
                ranges.len() - shown,
                ranges.len(),
                partitions.len()
            )?;
        }
        write!(f, "]")
    }
}

impl ExecutionPlan for KafkaScanExec {
    fn name(&self) -> &str {
        "KafkaScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let schema = self.schema();
        let Some(ranges) = self.groups.get(partition).cloned() else {
            // A scan with no non-empty range still has one (empty) partition.
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::empty(),
            )));
        };
        let spec = &self.spec;
        let reader = GroupReader {
            topic: spec.topic.clone(),
            ranges,
            assembler: BatchAssembler::new(
                spec.format,
                Arc::clone(&spec.value_schema),
                spec.projection.as_deref(),
            ),
            remaining: spec.limit,
            last: spec.last,
            taken: HashMap::new(),
            batch_size: context.session_config().batch_size().max(1),
            client: Arc::clone(&self.client),
            metrics: ScanMetrics::new(&self.metrics, partition),
        };
        let (tx, rx) = mpsc::channel(2);
        std::thread::Builder::new()
            .name(format!("kappa-scan-{}-{partition}", spec.topic))
            .spawn(move || reader.run(tx))
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            ReceiverStream::new(rx),
        )))
    }
}

/// What `EXPLAIN ANALYZE` shows of a scan, per output partition.
#[derive(Debug, Clone)]
struct ScanMetrics {
    /// Rows produced.
    output_rows: Count,
    /// Records the consumer delivered (kept or dropped).
    records_fetched: Count,
    /// Key, value and header bytes of those records.
    bytes_fetched: Count,
    /// Records dropped: re-delivered below the read position, or past the
    /// snapshot's end.
    records_dropped: Count,
    /// Time spent waiting on Kafka in `poll`.
    kafka_wait: Time,
}

impl ScanMetrics {
    fn new(set: &ExecutionPlanMetricsSet, partition: usize) -> Self {
        Self {
            output_rows: MetricBuilder::new(set).output_rows(partition),
            records_fetched: MetricBuilder::new(set).counter("records_fetched", partition),
            bytes_fetched: MetricBuilder::new(set).counter("bytes_fetched", partition),
            records_dropped: MetricBuilder::new(set).counter("records_dropped", partition),
            kafka_wait: MetricBuilder::new(set).subset_time("kafka_wait_time", partition),
        }
    }
}

type BatchSender = mpsc::Sender<DfResult<RecordBatch>>;

/// Whether a reader goes on after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    /// The limit is reached or the receiver is gone.
    Stop,
}

/// Reads one group of partition ranges on a dedicated thread.
struct GroupReader {
    topic: String,
    ranges: Vec<PartitionRange>,
    assembler: BatchAssembler,
    remaining: Option<usize>,
    last: Option<usize>,
    /// Records taken per partition in the current round.
    taken: HashMap<i32, usize>,
    batch_size: usize,
    client: Arc<KafkaClient>,
    metrics: ScanMetrics,
}

impl GroupReader {
    fn run(mut self, tx: BatchSender) {
        // A panic must not end the stream quietly (the query would look
        // complete with rows missing): turn it into an error.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.read(&tx)));
        let error = match outcome {
            Ok(Ok(())) => return,
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
    }

    fn read(&mut self, tx: &BatchSender) -> Result<()> {
        if self.remaining == Some(0) {
            return Ok(());
        }
        let consumer = self.client.scan_consumer()?;
        if let Some(n) = self.last {
            return self.read_last(&consumer, n, tx);
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
            if self.read_round(&consumer, &round, tx)? == Flow::Stop {
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

    /// Reads `round` (at most one range per partition) to its ends.
    fn read_round(
        &mut self,
        consumer: &BaseConsumer,
        round: &[PartitionRange],
        tx: &BatchSender,
    ) -> Result<Flow> {
        let mut assignment = TopicPartitionList::new();
        let mut cursors = HashMap::new();
        for range in round {
            assignment.add_partition_offset(
                &self.topic,
                range.partition,
                Offset::Offset(range.start),
            )?;
            cursors.insert(range.partition, PartitionCursor::new(*range));
        }
        consumer.assign(&assignment)?;
        // A partition paused when it finished an earlier round stays paused
        // across assignments.
        consumer.resume(&assignment)?;

        let fetch_timeout = self.client.options().fetch_timeout;
        let mut last_progress = Instant::now();
        let mut last_error: Option<KafkaError> = None;
        let mut last_verified = Instant::now();
        while cursors.values().any(|c| !c.is_done()) {
            if tx.is_closed() {
                return Ok(Flow::Stop);
            }
            let polled = {
                let _waiting = self.metrics.kafka_wait.timer();
                consumer.poll(POLL_INTERVAL)
            };
            match polled {
                Some(Ok(message)) => {
                    last_progress = Instant::now();
                    self.metrics.records_fetched.add(1);
                    let Some(cursor) = cursors.get_mut(&message.partition()) else {
                        continue;
                    };
                    let finished_before = cursor.is_done();
                    match cursor.deliver(message.offset()) {
                        Delivery::Take | Delivery::TakeLast => {
                            self.append(&message)?;
                            *self.taken.entry(message.partition()).or_default() += 1;
                            if let Some(remaining) = &mut self.remaining {
                                *remaining -= 1;
                                if *remaining == 0 {
                                    self.send(tx)?;
                                    return Ok(Flow::Stop);
                                }
                            }
                        }
                        Delivery::Duplicate | Delivery::PastEnd => {
                            self.metrics.records_dropped.add(1);
                        }
                    }
                    if cursor.is_done() && !finished_before {
                        pause(consumer, &self.topic, message.partition());
                    }
                    let full = self.assembler.len() >= self.batch_size
                        || self.assembler.buffered_bytes() >= MAX_BATCH_BYTES;
                    if full {
                        if !self.send(tx)? {
                            return Ok(Flow::Stop);
                        }
                        // Time spent waiting for a slow client is not a stall.
                        last_progress = Instant::now();
                    }
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    last_progress = Instant::now();
                    if let Some(cursor) = cursors.get_mut(&partition) {
                        // The end of the log as the broker sees it now. Only
                        // at or past the range's end does it finish the range:
                        // a log that ends before it lost records, and the
                        // fetch timeout says so.
                        if let Some(position) = position_of(consumer, &self.topic, partition) {
                            cursor.reached(position);
                        }
                        if cursor.is_done() {
                            pause(consumer, &self.topic, partition);
                        }
                    }
                }
                Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => return Err(e.into()),
                Some(Err(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange,
                ))) => {
                    // A read position outside the log: something vanished.
                    cursors.values_mut().for_each(PartitionCursor::suspect_gap);
                    self.verify_gaps(&mut cursors)?;
                }
                Some(Err(e)) => {
                    tracing::debug!(topic = %self.topic, error = %e, "consumer error");
                    last_error = Some(e);
                }
                None => {
                    if let Ok(positions) = consumer.position() {
                        for elem in positions.elements() {
                            if let (Offset::Offset(position), Some(cursor)) =
                                (elem.offset(), cursors.get_mut(&elem.partition()))
                            {
                                cursor.reached(position);
                            }
                        }
                    }
                }
            }
            if last_verified.elapsed() >= VERIFY_INTERVAL {
                self.verify_gaps(&mut cursors)?;
                last_verified = Instant::now();
            }
            if last_progress.elapsed() > fetch_timeout {
                let stuck: Vec<String> = cursors
                    .values()
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
                let cause = last_error.map(|e| format!(": {e}")).unwrap_or_default();
                return Err(CatalogError::BrokerUnavailable(format!(
                    "topic '{}': no data for {:?} ({}){cause}",
                    self.topic,
                    fetch_timeout,
                    stuck.join(", ")
                )));
            }
        }
        // No range is done before its jumps are explained.
        self.verify_gaps(&mut cursors)?;
        Ok(Flow::Continue)
    }

    fn append(&mut self, message: &BorrowedMessage<'_>) -> Result<()> {
        let record = RecordRef {
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key: message.key(),
            value: message.payload(),
        };
        let headers = read_headers(message).ok_or_else(|| {
            CatalogError::InvalidRecord(format!(
                "topic '{}' partition {} offset {}: a header name is not UTF-8",
                self.topic,
                message.partition(),
                message.offset()
            ))
        })?;
        let header_bytes: usize = headers
            .iter()
            .map(|(name, value)| name.len() + value.map_or(0, <[u8]>::len))
            .sum();
        self.metrics.bytes_fetched.add(
            record.key.map_or(0, <[u8]>::len) + record.value.map_or(0, <[u8]>::len) + header_bytes,
        );
        self.assembler.append(record, headers)
    }

    /// Checks every unexplained jump in offsets against the partitions' log
    /// starts: if the log start passed where a jump began, records of the
    /// snapshot were deleted under the query, which must fail rather than
    /// return the rest.
    fn verify_gaps(&self, cursors: &mut HashMap<i32, PartitionCursor>) -> Result<()> {
        let suspects: Vec<i32> = cursors
            .values()
            .filter(|c| c.unverified_gap().is_some())
            .map(|c| c.range().partition)
            .collect();
        if suspects.is_empty() {
            return Ok(());
        }
        let starts = self.client.log_starts(&self.topic, &suspects)?;
        let mut lost = Vec::new();
        for partition in suspects {
            let (Some(cursor), Some(&start)) =
                (cursors.get_mut(&partition), starts.get(&partition))
            else {
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

    /// Sends the assembled batch; `false` when the receiver is gone.
    fn send(&mut self, tx: &BatchSender) -> Result<bool> {
        let batch = self.assembler.finish()?;
        self.metrics.output_rows.add(batch.num_rows());
        Ok(tx.blocking_send(Ok(batch)).is_ok())
    }
}

/// One header: name and value bytes.
type Header<'m> = (&'m str, Option<&'m [u8]>);

/// The record's headers, or `None` if a header name is not UTF-8 (rdkafka
/// 0.39 panics on those; the panic is contained here and reported as an error).
fn read_headers<'m>(message: &'m BorrowedMessage<'_>) -> Option<Vec<Header<'m>>> {
    let Some(headers) = message.headers() else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::KafkaOptions;
    use datafusion::arrow::datatypes::Schema;
    use datafusion::physical_plan::displayable;

    fn scan_of(partitions: i32) -> KafkaScanExec {
        let ranges = (0..partitions)
            .map(|partition| PartitionRange {
                partition,
                start: 10,
                end: 20,
            })
            .collect();
        let spec = ScanSpec {
            topic: "t".into(),
            format: ValueFormat::Raw,
            value_schema: Arc::new(Schema::empty()),
            projection: None,
            ranges,
            pushed_filters: vec!["_offset >= Int64(10)".into()],
            limit: None,
            last: None,
        };
        // The client connects lazily: no broker is contacted here.
        let client = KafkaClient::new(KafkaOptions::new("127.0.0.1:1")).unwrap();
        KafkaScanExec::new(spec, crate::columns::raw_schema(), 4, client)
    }

    #[test]
    fn explain_lists_ranges_and_summarises_hundreds_of_partitions() {
        let few = scan_of(2);
        let shown = displayable(&few).indent(false).to_string();
        assert_eq!(
            shown.trim(),
            "KafkaScanExec: topic=t, filters=[_offset >= Int64(10)], ranges=[p0:10..20, p1:10..20]"
        );

        let many = scan_of(300);
        let compact = displayable(&many).indent(false).to_string();
        assert!(
            compact.contains("p7:10..20, … 292 more; 300 ranges over 300 partitions, 3000 offsets"),
            "{compact}"
        );
        assert!(!compact.contains("p8:"), "{compact}");
        let verbose = displayable(&many).indent(true).to_string();
        assert!(verbose.contains("p299:10..20]"), "{verbose}");
    }
}

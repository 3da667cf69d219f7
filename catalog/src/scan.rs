//! `KafkaScanExec`: reads a fixed list of partition offset ranges.
//!
//! Each output partition of the plan is one group of Kafka partitions, read by
//! its own consumer on its own thread (librdkafka polling blocks, so it stays
//! off the async runtime). Records go into a [`BatchAssembler`] and leave as a
//! batch every `batch_size` rows through a channel of two batches, so memory is
//! bounded whatever the topic's size, and a client that goes away stops the
//! reader at its next poll.

use std::collections::HashMap;
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
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::config::ValueFormat;
use crate::decode::{BatchAssembler, RecordRef};
use crate::error::{CatalogError, Result};
use crate::kafka::KafkaClient;
use crate::offsets::{Delivery, PartitionCursor, PartitionRange};

/// How long one poll waits before the reader re-checks cancellation and positions.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A batch is cut at `batch_size` rows or this many key/value/header bytes,
/// whichever comes first, so large records do not make huge batches.
const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;

/// Physical plan node that reads offset ranges of one topic.
#[derive(Debug)]
pub struct KafkaScanExec {
    topic: String,
    format: ValueFormat,
    value_schema: SchemaRef,
    projection: Option<Vec<usize>>,
    groups: Vec<Vec<PartitionRange>>,
    client: Arc<KafkaClient>,
    properties: Arc<PlanProperties>,
}

impl KafkaScanExec {
    /// A scan of `groups` (one output partition each), producing `schema`
    /// (the table schema after `projection`).
    pub fn new(
        topic: String,
        format: ValueFormat,
        value_schema: SchemaRef,
        projection: Option<Vec<usize>>,
        schema: SchemaRef,
        groups: Vec<Vec<PartitionRange>>,
        client: Arc<KafkaClient>,
    ) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(groups.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            topic,
            format,
            value_schema,
            projection,
            groups,
            client,
            properties: Arc::new(properties),
        }
    }

    /// The ranges each output partition reads.
    pub fn groups(&self) -> &[Vec<PartitionRange>] {
        &self.groups
    }
}

impl DisplayAs for KafkaScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "KafkaScanExec: topic={}, ranges=[", self.topic)?;
        let mut first = true;
        for range in self.groups.iter().flatten() {
            if !first {
                write!(f, ", ")?;
            }
            first = false;
            write!(f, "{range}")?;
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
        let reader = GroupReader {
            topic: self.topic.clone(),
            ranges,
            assembler: BatchAssembler::new(self.format, Arc::clone(&self.value_schema)),
            projection: self.projection.clone(),
            batch_size: context.session_config().batch_size().max(1),
            client: Arc::clone(&self.client),
        };
        let (tx, rx) = mpsc::channel(2);
        std::thread::Builder::new()
            .name(format!("kappa-scan-{}-{partition}", self.topic))
            .spawn(move || reader.run(tx))
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            ReceiverStream::new(rx),
        )))
    }
}

type BatchSender = mpsc::Sender<DfResult<RecordBatch>>;

/// Reads one group of partition ranges on a dedicated thread.
struct GroupReader {
    topic: String,
    ranges: Vec<PartitionRange>,
    assembler: BatchAssembler,
    projection: Option<Vec<usize>>,
    batch_size: usize,
    client: Arc<KafkaClient>,
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
        let consumer = self.client.scan_consumer()?;
        let mut assignment = TopicPartitionList::new();
        let mut cursors = HashMap::new();
        for range in &self.ranges {
            assignment.add_partition_offset(
                &self.topic,
                range.partition,
                Offset::Offset(range.start),
            )?;
            cursors.insert(range.partition, PartitionCursor::new(*range));
        }
        consumer.assign(&assignment)?;

        let fetch_timeout = self.client.options().fetch_timeout;
        let mut last_progress = Instant::now();
        let mut last_error: Option<KafkaError> = None;
        while cursors.values().any(|c| !c.is_done()) {
            if tx.is_closed() {
                return Ok(());
            }
            match consumer.poll(POLL_INTERVAL) {
                Some(Ok(message)) => {
                    last_progress = Instant::now();
                    let Some(cursor) = cursors.get_mut(&message.partition()) else {
                        continue;
                    };
                    let finished_before = cursor.is_done();
                    match cursor.deliver(message.offset()) {
                        Delivery::Take | Delivery::TakeLast => {
                            let record = RecordRef {
                                partition: message.partition(),
                                offset: message.offset(),
                                timestamp_ms: message.timestamp().to_millis(),
                                key: message.key(),
                                value: message.payload(),
                            };
                            let headers = read_headers(&message).ok_or_else(|| {
                                CatalogError::InvalidRecord(format!(
                                    "topic '{}' partition {} offset {}: a header name is not UTF-8",
                                    self.topic,
                                    message.partition(),
                                    message.offset()
                                ))
                            })?;
                            self.assembler.append(record, headers)?;
                        }
                        Delivery::Duplicate | Delivery::PastEnd => {}
                    }
                    if cursor.is_done() && !finished_before {
                        pause(&consumer, &self.topic, message.partition());
                    }
                    let full = self.assembler.len() >= self.batch_size
                        || self.assembler.buffered_bytes() >= MAX_BATCH_BYTES;
                    if full {
                        if !self.send(tx)? {
                            return Ok(());
                        }
                        // Time spent waiting for a slow client is not a stall.
                        last_progress = Instant::now();
                    }
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    last_progress = Instant::now();
                    if let Some(cursor) = cursors.get_mut(&partition) {
                        // End of the log: at or past the snapshot's end.
                        cursor.reached(cursor.range().end);
                        pause(&consumer, &self.topic, partition);
                    }
                }
                Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => return Err(e.into()),
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
        if !self.assembler.is_empty() {
            self.send(tx)?;
        }
        Ok(())
    }

    /// Sends the assembled batch; `false` when the receiver is gone.
    fn send(&mut self, tx: &BatchSender) -> Result<bool> {
        let mut batch = self.assembler.finish()?;
        if let Some(projection) = &self.projection {
            batch = batch.project(projection)?;
        }
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

/// Stops fetching a finished partition so the prefetch queue holds only what
/// is still needed.
fn pause(consumer: &BaseConsumer, topic: &str, partition: i32) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    if let Err(e) = consumer.pause(&tpl) {
        tracing::debug!(topic, partition, error = %e, "pause failed");
    }
}

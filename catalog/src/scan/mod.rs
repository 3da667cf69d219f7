//! `KafkaScanExec`: reads a fixed list of partition offset ranges.
//!
//! Each output partition of the plan is one group of ranges, read by its own
//! consumer on its own thread (librdkafka polling blocks, so it stays off the
//! async runtime; see `reader.rs`). Records go into a [`crate::decode::BatchAssembler`] and leave as a batch
//! every `batch_size` rows through a channel of two batches, so memory is
//! bounded whatever the topic's size, and a client that goes away stops the
//! reader at its next poll.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions,
};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

pub(crate) mod fetched;
mod metrics;
pub(crate) mod reader;
mod round;

use metrics::ScanMetrics;
use reader::{Cut, GroupReader};

use crate::format::ValueFormat;
use crate::kafka::KafkaClient;
use crate::offsets::{PartitionRange, group_ranges};

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

impl ScanSpec {
    /// The offsets the ranges span: what the scan reads at most.
    pub fn offsets(&self) -> i64 {
        self.ranges.iter().map(PartitionRange::span).sum()
    }
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

/// Offsets a scan has per reader (consumer) before it is split over
/// another one.
const MIN_OFFSETS_PER_READER: i64 = 20_000;

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
        // A small scan is read by one consumer: a second would cost the
        // broker another fetch session for little parallel work.
        let worth = usize::try_from(spec.offsets() / MIN_OFFSETS_PER_READER).unwrap_or(usize::MAX);
        let groups = group_ranges(&spec.ranges, target_partitions.min(worth.max(1)));
        Self::from_groups(spec, schema, groups, client)
    }

    /// A scan of `spec` whose output partitions read `groups` (an empty
    /// group is an empty partition): a scan rebuilt where its plan was sent,
    /// or one task's share of a scan split over several (see [`Self::split`]).
    pub fn from_groups(
        spec: ScanSpec,
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
            spec,
            groups,
            client,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// This scan's offsets shared among `tasks` scans of `partitions` output
    /// partitions each, for tasks that run apart (on other gateways). A range
    /// longer than an even share is cut at offsets, so one busy Kafka
    /// partition spreads too; each task's scan has the same number of output
    /// partitions (some empty), as the tasks of a stage must.
    pub fn split(&self, tasks: usize, partitions: usize) -> Vec<Self> {
        let tasks = tasks.max(1);
        let partitions = partitions.max(1);
        let offsets = self.spec.offsets();
        let pieces = i64::try_from(tasks * partitions).unwrap_or(i64::MAX);
        let share = (offsets / pieces.max(1)).max(MIN_OFFSETS_PER_READER);
        let cut: Vec<PartitionRange> = self
            .spec
            .ranges
            .iter()
            .flat_map(|range| {
                (range.start..range.end)
                    .step_by(usize::try_from(share).unwrap_or(usize::MAX))
                    .map(move |start| {
                        PartitionRange::new(range.partition, start, (start + share).min(range.end))
                    })
            })
            .collect();
        let mut per_task = group_ranges(&cut, tasks);
        per_task.resize(tasks, Vec::new());
        per_task
            .into_iter()
            .map(|mut ranges| {
                let mut groups = group_ranges(&ranges, partitions);
                groups.resize(partitions, Vec::new());
                // `EXPLAIN` shows what this task reads.
                ranges.sort_by_key(|r| (r.partition, r.start));
                let spec = ScanSpec {
                    ranges,
                    ..self.spec.clone()
                };
                Self::from_groups(spec, self.schema(), groups, Arc::clone(&self.client))
            })
            .collect()
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
        let Some(ranges) = self
            .groups
            .get(partition)
            .filter(|g| !g.is_empty())
            .cloned()
        else {
            // A scan with no non-empty range still has one (empty) partition.
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::empty(),
            )));
        };
        let spec = &self.spec;
        let mut reader = GroupReader::new(
            spec,
            ranges,
            context.session_config().batch_size().max(1),
            Arc::clone(&self.client),
            ScanMetrics::new(&self.metrics, partition),
        );
        // Values are decoded as the stream is read, off the reader thread,
        // which meanwhile reads the next batch's records.
        let mut stage = reader.take_stage(&spec.format);
        let (tx, rx) = mpsc::channel(2);
        std::thread::Builder::new()
            .name(format!("kappa-scan-{}-{partition}", spec.topic))
            .spawn(move || reader.run(tx))
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let decoded = ReceiverStream::new(rx).map(move |cut| match cut? {
            Cut::Decoded(batch) => Ok(batch),
            Cut::Undecoded(batch) => stage
                .as_mut()
                .expect("a reader sends undecoded batches only once its stage is taken")
                .decode(*batch)
                .map_err(DataFusionError::from),
        });
        let stream = Box::pin(RecordBatchStreamAdapter::new(schema, decoded));
        Ok(crate::error::leaving_for(&context, stream))
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
    fn a_split_reads_every_offset_once_in_tasks_of_equal_partition_counts() {
        let mut scan = scan_of(3);
        // One busy partition and two small ones.
        scan.spec.ranges = vec![
            PartitionRange::new(0, 5, 200_005),
            PartitionRange::new(1, 0, 30),
            PartitionRange::new(2, 7, 9),
        ];
        for (tasks, partitions) in [(1, 1), (3, 2), (4, 4), (10, 1)] {
            let split = scan.split(tasks, partitions);
            assert_eq!(split.len(), tasks);
            let mut read: Vec<PartitionRange> = Vec::new();
            for task in &split {
                assert_eq!(task.properties().partitioning.partition_count(), partitions);
                read.extend(task.groups().iter().flatten().copied());
            }
            read.sort_by_key(|r| (r.partition, r.start));
            let mut expected = scan.spec.ranges.clone();
            expected.sort_by_key(|r| (r.partition, r.start));
            // Consecutive pieces of a range join up again, with nothing missing or read twice.
            let mut joined: Vec<PartitionRange> = Vec::new();
            for range in read {
                match joined.last_mut() {
                    Some(last) if last.partition == range.partition && last.end == range.start => {
                        last.end = range.end;
                    }
                    _ => joined.push(range),
                }
            }
            assert_eq!(joined, expected, "{tasks} tasks of {partitions}");
        }
        // The busy partition is spread: no task reads more than about its share.
        let split = scan.split(4, 1);
        let spans: Vec<i64> = split
            .iter()
            .map(|t| t.groups().iter().flatten().map(PartitionRange::span).sum())
            .collect();
        assert!(spans.iter().all(|&s| s <= 60_000), "{spans:?}");
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

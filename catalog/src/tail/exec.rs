//! `TailExec`: the unbounded plan node of a stream. It replays its lake
//! child (if any) to the end, then follows Kafka from each partition's
//! start on a reader thread, until the client goes away.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, Distribution, ExecutionPlan,
    Partitioning, PlanProperties, ReplaceChildrenOptions,
};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::StartPosition;
use super::reader::TailReader;
use crate::format::ValueFormat;
use crate::kafka::KafkaClient;
use crate::plan::RangePredicate;
use crate::stream_registry::StreamRegistry;

/// Starts listed in full before `EXPLAIN` summarises them.
const MAX_STARTS_SHOWN: usize = 8;

/// What a stream reads: plain data, fixed when the query runs.
#[derive(Debug)]
pub struct TailSpec {
    /// The table (as named in `tail(…)`).
    pub table: String,
    /// The topic it reads.
    pub topic: String,
    /// How values decode.
    pub format: ValueFormat,
    /// The declared value columns.
    pub value_schema: SchemaRef,
    /// The start asked for (new partitions start by it).
    pub start: StartPosition,
    /// The filters on `_partition`/`_offset`/`_timestamp`, to start new
    /// partitions by them too.
    pub predicate: RangePredicate,
    /// Every partition of the topic when the query ran.
    pub partitions: Vec<i32>,
    /// `(partition, first offset)` Kafka is read from.
    pub kafka_starts: Vec<(i32, i64)>,
    /// `(partition, from, watermark)` replayed from the lake first.
    pub lake_replay: Vec<(i32, i64, i64)>,
    /// How long a batch waits for more rows before it is sent.
    pub linger: Duration,
    /// How often the reader looks for new partitions (and the brokers).
    pub refresh_interval: Duration,
    /// The query's filters, applied here to every batch as it comes: a
    /// `FilterExec` would hold filtered rows back until a full batch of them
    /// had matched, which on a quiet stream may be never.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// The rows after which the stream ends (`LIMIT n`).
    pub limit: Option<usize>,
}

/// A stream of a table's records: unbounded, one output partition.
#[derive(Debug)]
pub struct TailExec {
    spec: Arc<TailSpec>,
    lake: Option<Arc<dyn ExecutionPlan>>,
    client: Arc<KafkaClient>,
    streams: Arc<StreamRegistry>,
    properties: Arc<PlanProperties>,
}

impl TailExec {
    /// A stream per `spec` with the full table `schema`, replaying `lake`
    /// (sorted by `_partition`, `_offset`) first if given.
    pub fn new(
        spec: TailSpec,
        schema: SchemaRef,
        lake: Option<Arc<dyn ExecutionPlan>>,
        client: Arc<KafkaClient>,
        streams: Arc<StreamRegistry>,
    ) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Unbounded {
                requires_infinite_memory: false,
            },
        );
        Self {
            spec: Arc::new(spec),
            lake,
            client,
            streams,
            properties: Arc::new(properties),
        }
    }

    /// What the stream reads.
    pub fn spec(&self) -> &TailSpec {
        &self.spec
    }
}

impl DisplayAs for TailExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let spec = &self.spec;
        write!(f, "TailExec: topic={}, start={}", spec.topic, spec.start)?;
        if !spec.lake_replay.is_empty() {
            write!(f, ", lake replay=[")?;
            for (i, (p, from, to)) in spec.lake_replay.iter().enumerate() {
                if i > 0 {
                    write!(f, ", ")?;
                }
                write!(f, "p{p}:{from}..{to}")?;
            }
            write!(f, "]")?;
        }
        let all =
            matches!(t, DisplayFormatType::Verbose) || spec.kafka_starts.len() <= MAX_STARTS_SHOWN;
        let shown = if all {
            spec.kafka_starts.len()
        } else {
            MAX_STARTS_SHOWN
        };
        write!(f, ", kafka from=[")?;
        for (i, (p, start)) in spec.kafka_starts[..shown].iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "p{p}:{start}")?;
        }
        if shown < spec.kafka_starts.len() {
            write!(f, ", … {} more", spec.kafka_starts.len() - shown)?;
        }
        write!(f, "], linger={:?}", spec.linger)?;
        if let Some(filter) = &spec.filter {
            write!(f, ", filter={filter}")?;
        }
        if let Some(limit) = spec.limit {
            write!(f, ", limit={limit}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for TailExec {
    fn name(&self) -> &str {
        "TailExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.lake.iter().collect()
    }

    /// The replay is one stream, so each partition's lake rows come in
    /// offset order, before its Kafka rows.
    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::SinglePartition; self.lake.iter().count()]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.len() != self.lake.iter().count() {
            return Err(DataFusionError::Internal(format!(
                "TailExec: expected {} children, got {}",
                self.lake.iter().count(),
                children.len()
            )));
        }
        Ok(Arc::new(Self {
            spec: Arc::clone(&self.spec),
            lake: children.pop(),
            client: Arc::clone(&self.client),
            streams: Arc::clone(&self.streams),
            properties: Arc::clone(&self.properties),
        }))
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
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "TailExec has one partition, asked for {partition}"
            )));
        }
        let guard = self.streams.register(&self.spec.table)?;
        let replay = match &self.lake {
            Some(lake) => lake.execute(0, Arc::clone(&context))?.boxed(),
            None => futures::stream::empty().boxed(),
        };
        let reader = TailReader::new(
            Arc::clone(&self.spec),
            Arc::clone(&self.client),
            context.session_config().batch_size().max(1),
            Arc::clone(&guard),
        );
        let name = format!("kappa-tail-{}", self.spec.topic);
        // Kafka is followed once the replay is done, so the lake's rows of
        // each partition come before its Kafka rows.
        let follow = futures::stream::once(async move {
            let (tx, rx) = mpsc::channel(2);
            match std::thread::Builder::new()
                .name(name)
                .spawn(move || reader.run(tx))
            {
                Ok(_) => ReceiverStream::new(rx).boxed(),
                Err(e) => {
                    futures::stream::once(
                        async move { Err(DataFusionError::External(Box::new(e))) },
                    )
                    .boxed()
                }
            }
        })
        .flatten();
        let filter = self.spec.filter.clone();
        let filtered = replay.chain(follow).filter_map(move |batch| {
            let kept = match (batch, &filter) {
                (Ok(batch), Some(filter)) => keep_matching(&batch, filter.as_ref()),
                (other, _) => other,
            };
            // An empty batch says nothing: wait for rows.
            std::future::ready(match kept {
                Ok(batch) if batch.num_rows() == 0 => None,
                other => Some(other),
            })
        });
        let mut remaining = self.spec.limit.unwrap_or(usize::MAX);
        let limited = filtered.scan((), move |(), batch| {
            if remaining == 0 {
                return std::future::ready(None);
            }
            let batch = batch.map(|batch| {
                let rows = batch.num_rows().min(remaining);
                remaining -= rows;
                batch.slice(0, rows)
            });
            std::future::ready(Some(batch))
        });
        let counted = limited.inspect(move |batch| {
            if let Ok(batch) = batch {
                guard.stats().add_records(batch.num_rows());
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            counted,
        )))
    }
}

/// The rows of `batch` for which `filter` is true.
fn keep_matching(batch: &RecordBatch, filter: &dyn PhysicalExpr) -> DfResult<RecordBatch> {
    let mask = filter.evaluate(batch)?.into_array(batch.num_rows())?;
    let Some(mask) = mask.as_any().downcast_ref::<BooleanArray>() else {
        return Err(DataFusionError::Internal(format!(
            "stream filter {filter} is not a predicate"
        )));
    };
    Ok(filter_record_batch(batch, mask)?)
}

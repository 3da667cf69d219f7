//! `NewestPerKeyExec`: each key's newest record, in one pass with a hash
//! table, by the changelog rule (see [`super::latest`]): within a partition
//! the higher offset, across partitions the later `_timestamp` (a record
//! with one before a record without), then the higher partition.
//!
//! Two `row_number()` windows say the same, but a window pays per key
//! partition (a sort, then state per partition): with many keys and few
//! records per key, as over the latest rows the compactor keeps, that cost
//! dwarfs reading the rows. Here a record costs one hash lookup.
//!
//! Input must be hash-partitioned on `_key` (every record of a key in one
//! partition; it says so with `required_input_distribution`). It keeps the
//! batches holding current winners, and when they hold many more rows than
//! winners it copies the winners out and lets the rest go, so it holds
//! about the winners' size; that memory is counted by the query's pool.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::interleave_record_batch;
use datafusion::arrow::datatypes::{Int32Type, Int64Type, SchemaRef, TimestampMicrosecondType};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::col;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, Distribution, ExecutionPlan,
    PlanProperties, ReplaceChildrenOptions,
};
use futures::{StreamExt, TryStreamExt};

use crate::columns::{KEY, OFFSET, PARTITION, TIMESTAMP};

/// Rows kept beyond the winners' before the winners are copied out.
const SLACK_ROWS: usize = 64 * 1024;

/// Each key's newest record of its input.
#[derive(Debug)]
pub struct NewestPerKeyExec {
    input: Arc<dyn ExecutionPlan>,
    /// The BINARY column naming each record's key (`_key`, or the identity
    /// of a decoded key, see [`super::identity`]); a null is no key's.
    key: String,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl NewestPerKeyExec {
    /// The newest record per `_key` of `input` (which has `_key`,
    /// `_partition`, `_offset` and `_timestamp`, and is hash-partitioned on
    /// `_key`).
    pub fn try_new(input: Arc<dyn ExecutionPlan>) -> DfResult<Self> {
        Self::keyed_by(input, KEY)
    }

    /// The newest record per value of column `key` (BINARY) of `input`,
    /// which is hash-partitioned on it.
    pub fn keyed_by(input: Arc<dyn ExecutionPlan>, key: &str) -> DfResult<Self> {
        let schema = input.schema();
        for column in [key, PARTITION, OFFSET, TIMESTAMP] {
            schema.index_of(column)?;
        }
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            input.properties().output_partitioning().clone(),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Ok(Self {
            input,
            key: key.to_string(),
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl DisplayAs for NewestPerKeyExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "NewestPerKeyExec: key={}, in a partition by {OFFSET}, across by {TIMESTAMP} then {PARTITION}",
            self.key
        )
    }
}

impl ExecutionPlan for NewestPerKeyExec {
    fn name(&self) -> &str {
        "NewestPerKeyExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        let key = col(&self.key, &self.input.schema()).expect("checked when built");
        vec![Distribution::KeyPartitioned(vec![key])]
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
        if children.len() != 1 {
            return Err(DataFusionError::Internal(format!(
                "NewestPerKeyExec has one child, got {}",
                children.len()
            )));
        }
        Ok(Arc::new(Self::keyed_by(children.remove(0), &self.key)?))
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
        let mut input = self.input.execute(partition, Arc::clone(&context))?;
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let keys = MetricBuilder::new(&self.metrics).counter("keys", partition);
        let copies = MetricBuilder::new(&self.metrics).counter("winner_copies", partition);
        let reservation = MemoryConsumer::new(format!("NewestPerKeyExec[{partition}]"))
            .register(context.memory_pool());
        let batch_size = context.session_config().batch_size().max(1);
        let key = schema.index_of(&self.key)?;
        let mut newest = Newest::new(Arc::clone(&schema), key, reservation, copies);
        let output = futures::stream::once(async move {
            while let Some(batch) = input.next().await {
                let _timer = baseline.elapsed_compute().timer();
                newest.push(batch?)?;
            }
            let _timer = baseline.elapsed_compute().timer();
            let batches = newest.finish(batch_size)?;
            keys.add(batches.iter().map(RecordBatch::num_rows).sum());
            for batch in &batches {
                baseline.record_output(batch.num_rows());
            }
            baseline.done();
            Ok::<_, DataFusionError>(futures::stream::iter(batches.into_iter().map(Ok)))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, output)))
    }
}

/// A partition's newest record of a key so far.
#[derive(Debug, Clone, Copy)]
struct Winner {
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    /// `(batch, row)` in the kept batches.
    at: (usize, usize),
}

impl Winner {
    /// The order across partitions: the later timestamp (a record with one
    /// after a record without), then the higher partition.
    fn rank(&self) -> (bool, i64, i32) {
        (
            self.timestamp.is_some(),
            self.timestamp.unwrap_or(i64::MIN),
            self.partition,
        )
    }
}

/// The state of one output partition.
struct Newest {
    schema: SchemaRef,
    /// Index of the key column.
    key: usize,
    /// Per key, one winner per partition it was seen in (almost always one).
    winners: HashMap<Box<[u8]>, Vec<Winner>>,
    winner_count: usize,
    batches: Vec<RecordBatch>,
    kept_rows: usize,
    reservation: MemoryReservation,
    copies: Count,
}

impl Newest {
    fn new(schema: SchemaRef, key: usize, reservation: MemoryReservation, copies: Count) -> Self {
        Self {
            schema,
            key,
            winners: HashMap::new(),
            winner_count: 0,
            batches: Vec::new(),
            kept_rows: 0,
            reservation,
            copies,
        }
    }

    fn push(&mut self, batch: RecordBatch) -> DfResult<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let column = |name: &str| -> DfResult<&Arc<dyn Array>> {
            Ok(batch.column(batch.schema().index_of(name)?))
        };
        let keys = batch
            .column(self.key)
            .as_binary_opt::<i32>()
            .ok_or_else(|| {
                DataFusionError::Internal(format!(
                    "{} is not Binary in NewestPerKeyExec",
                    self.schema.field(self.key).name()
                ))
            })?;
        let partitions = column(PARTITION)?.as_primitive::<Int32Type>();
        let offsets = column(OFFSET)?.as_primitive::<Int64Type>();
        let timestamps = column(TIMESTAMP)?.as_primitive::<TimestampMicrosecondType>();
        let index = self.batches.len();
        let mut used = false;
        for row in 0..batch.num_rows() {
            if keys.is_null(row) {
                continue;
            }
            let candidate = Winner {
                partition: partitions.value(row),
                offset: offsets.value(row),
                timestamp: timestamps.is_valid(row).then(|| timestamps.value(row)),
                at: (index, row),
            };
            let key = keys.value(row);
            match self.winners.get_mut(key) {
                Some(seen) => match seen.iter_mut().find(|w| w.partition == candidate.partition) {
                    Some(winner) if winner.offset < candidate.offset => {
                        *winner = candidate;
                        used = true;
                    }
                    Some(_) => {}
                    None => {
                        seen.push(candidate);
                        self.winner_count += 1;
                        used = true;
                    }
                },
                None => {
                    self.winners.insert(key.into(), vec![candidate]);
                    self.winner_count += 1;
                    used = true;
                }
            }
        }
        if !used {
            return Ok(());
        }
        self.reservation.try_grow(batch.get_array_memory_size())?;
        self.kept_rows += batch.num_rows();
        self.batches.push(batch);
        if self.kept_rows > 2 * self.winner_count + SLACK_ROWS {
            self.copy_winners()?;
        }
        Ok(())
    }

    /// Copies the winners into one batch and drops the batches kept so far.
    fn copy_winners(&mut self) -> DfResult<()> {
        let mut indices = Vec::with_capacity(self.winner_count);
        for seen in self.winners.values_mut() {
            for winner in seen.iter_mut() {
                indices.push(winner.at);
                winner.at = (0, indices.len() - 1);
            }
        }
        let batches: Vec<&RecordBatch> = self.batches.iter().collect();
        let copied = interleave_record_batch(&batches, &indices)?;
        self.batches = vec![copied];
        self.kept_rows = indices.len();
        self.reservation
            .try_resize(self.batches[0].get_array_memory_size())?;
        self.copies.add(1);
        Ok(())
    }

    /// Each key's newest record, in batches of at most `batch_size` rows.
    fn finish(self, batch_size: usize) -> DfResult<Vec<RecordBatch>> {
        let chosen: Vec<(usize, usize)> = self
            .winners
            .values()
            .filter_map(|seen| seen.iter().max_by_key(|w| w.rank()).map(|w| w.at))
            .collect();
        let batches: Vec<&RecordBatch> = self.batches.iter().collect();
        let mut out = Vec::with_capacity(chosen.len().div_ceil(batch_size));
        for indices in chosen.chunks(batch_size) {
            out.push(interleave_record_batch(&batches, indices)?);
        }
        if out.is_empty() {
            out.push(RecordBatch::new_empty(Arc::clone(&self.schema)));
        }
        self.reservation.free();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::array::{
        BinaryArray, Int32Array, Int64Array, TimestampMicrosecondArray,
    };
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::execution::memory_pool::{MemoryPool, UnboundedMemoryPool};

    use super::*;

    /// `(partition, offset, timestamp, key)`.
    type Record = (i32, i64, Option<i64>, Option<Vec<u8>>);
    /// `(has a timestamp, timestamp, partition)`: the order across partitions.
    type Rank = (bool, i64, i32);

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(PARTITION, DataType::Int32, false),
            Field::new(OFFSET, DataType::Int64, false),
            Field::new(
                TIMESTAMP,
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new(KEY, DataType::Binary, true),
        ]))
    }

    fn batch(records: &[Record]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int32Array::from_iter_values(records.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(records.iter().map(|r| r.1))),
                Arc::new(
                    TimestampMicrosecondArray::from_iter(records.iter().map(|r| r.2))
                        .with_timezone("UTC"),
                ),
                Arc::new(BinaryArray::from_iter(
                    records.iter().map(|r| r.3.as_deref()),
                )),
            ],
        )
        .unwrap()
    }

    /// The rule, written plainly: `key → (partition, offset)` of its newest record.
    fn model(records: &[Record]) -> BTreeMap<Vec<u8>, (i32, i64)> {
        let mut in_partition: BTreeMap<(Vec<u8>, i32), (i64, Option<i64>)> = BTreeMap::new();
        for (p, o, ts, key) in records {
            let Some(key) = key else { continue };
            let best = in_partition.entry((key.clone(), *p)).or_insert((*o, *ts));
            if *o >= best.0 {
                *best = (*o, *ts);
            }
        }
        let mut out: BTreeMap<Vec<u8>, (i32, i64, Rank)> = BTreeMap::new();
        for ((key, p), (o, ts)) in in_partition {
            let rank = (ts.is_some(), ts.unwrap_or(i64::MIN), p);
            match out.get(&key) {
                Some(best) if best.2 >= rank => {}
                _ => {
                    out.insert(key, (p, o, rank));
                }
            }
        }
        out.into_iter().map(|(k, (p, o, _))| (k, (p, o))).collect()
    }

    fn newest(records: &[Record], rows_per_batch: usize) -> (BTreeMap<Vec<u8>, (i32, i64)>, usize) {
        let pool: Arc<dyn MemoryPool> = Arc::new(UnboundedMemoryPool::default());
        let copies = Count::new();
        let mut state = Newest::new(
            schema(),
            3,
            MemoryConsumer::new("test").register(&pool),
            copies.clone(),
        );
        for chunk in records.chunks(rows_per_batch) {
            state.push(batch(chunk)).unwrap();
        }
        let mut out = BTreeMap::new();
        for batch in state.finish(1000).unwrap() {
            let p = batch.column(0).as_primitive::<Int32Type>();
            let o = batch.column(1).as_primitive::<Int64Type>();
            let k = batch.column(3).as_binary::<i32>();
            for row in 0..batch.num_rows() {
                let previous = out.insert(k.value(row).to_vec(), (p.value(row), o.value(row)));
                assert!(previous.is_none(), "one row per key");
            }
        }
        assert_eq!(pool.reserved(), 0, "all memory returned");
        (out, copies.value())
    }

    #[test]
    fn matches_the_rule_over_many_batches_while_copying_winners_out() {
        // A small deterministic generator: 300k records, 500 keys, 3 partitions,
        // offsets rising per partition, timestamps out of order, some missing,
        // a few records without a key.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut offsets = [0i64; 3];
        let records: Vec<Record> = (0..300_000)
            .map(|_| {
                let p = next(3) as i32;
                offsets[p as usize] += 1 + next(3) as i64;
                let ts = (next(50) != 0).then(|| next(1_000) as i64);
                let key = (next(100) != 0).then(|| format!("k{}", next(500)).into_bytes());
                (p, offsets[p as usize], ts, key)
            })
            .collect();
        let (got, copies) = newest(&records, 1_000);
        assert_eq!(got, model(&records));
        assert!(
            copies > 0,
            "the winners were copied out of the kept batches"
        );
        // Records of one key in any order of batches: the same answer.
        let mut reversed = records.clone();
        reversed.reverse();
        assert_eq!(newest(&reversed, 777).0, model(&records));
    }
}

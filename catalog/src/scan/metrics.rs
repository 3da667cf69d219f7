//! The scan's `EXPLAIN ANALYZE` metrics.

use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet, MetricBuilder, Time};

/// What `EXPLAIN ANALYZE` shows of a scan, per output partition.
#[derive(Debug, Clone)]
pub(super) struct ScanMetrics {
    /// Rows produced.
    pub(super) output_rows: Count,
    /// Records the consumer delivered (kept or dropped).
    pub(super) records_fetched: Count,
    /// Key, value and header bytes of those records.
    pub(super) bytes_fetched: Count,
    /// Records dropped: re-delivered below the read position, or past the
    /// snapshot's end.
    pub(super) records_dropped: Count,
    /// Time spent waiting on Kafka in `poll`.
    pub(super) kafka_wait: Time,
}

impl ScanMetrics {
    pub(super) fn new(set: &ExecutionPlanMetricsSet, partition: usize) -> Self {
        Self {
            output_rows: MetricBuilder::new(set).output_rows(partition),
            records_fetched: MetricBuilder::new(set).counter("records_fetched", partition),
            bytes_fetched: MetricBuilder::new(set).counter("bytes_fetched", partition),
            records_dropped: MetricBuilder::new(set).counter("records_dropped", partition),
            kafka_wait: MetricBuilder::new(set).subset_time("kafka_wait_time", partition),
        }
    }
}

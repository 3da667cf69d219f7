//! The gateway's metrics: one registry, carried by the service, served at
//! `/metrics` on `--metrics-listen` (see [`kappa_ops`]).
//!
//! Counters move where the work is accounted once: a query's outcome, time,
//! rows and bytes when its log line is written ([`crate::flight`]), queries
//! and streams in flight where shutdown tracks them ([`crate::drain`]),
//! records fetched by the Kafka client's readers. The lake lag per table is
//! measured at scrape time, the way `system.partitions` measures it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use kappa_catalog::KafkaSchema;
use kappa_ops::Exposition;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::Mutex;

use crate::health::Readiness;

/// How a query ended, the label of `kappa_queries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Every row reached the client.
    Ok,
    /// It failed while running (or could not start: no slot, shutting down).
    Error,
    /// The client went away or cancelled it before its end.
    Cancelled,
    /// Its SQL did not plan (or bind): nothing ran.
    Rejected,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Cancelled => "cancelled",
            Self::Rejected => "rejected",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TableLabel {
    table: String,
}

/// How often at most the lake lag is measured again (a scrape in between
/// reads the last measure), and how long a measure may take.
const LAG_EVERY: Duration = Duration::from_secs(10);
const LAG_TIMEOUT: Duration = Duration::from_secs(5);

/// The gateway's registry and the metrics in it.
#[derive(Debug)]
pub struct GatewayMetrics {
    registry: Registry,
    queries: Family<OutcomeLabel, Counter>,
    duration: Histogram,
    rows_sent: Counter,
    bytes_sent: Counter,
    records_fetched: Counter,
    /// The client's total at the last scrape.
    records_seen: AtomicU64,
    queries_active: Gauge,
    streams_active: Gauge,
    lag_records: Family<TableLabel, Gauge>,
    lag_seconds: Family<TableLabel, Gauge<f64, AtomicU64>>,
    /// When the lag was last measured.
    lag_measured: Mutex<Option<Instant>>,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayMetrics {
    /// Every metric at zero, registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let queries = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "kappa_queries",
            "Queries run, by how they ended (ok, error, cancelled, rejected)",
            queries.clone(),
        );
        // Every outcome's series exists from the start, so rates over them
        // are defined before the first query.
        for outcome in [
            Outcome::Ok,
            Outcome::Error,
            Outcome::Cancelled,
            Outcome::Rejected,
        ] {
            let _ = queries.get_or_create(&OutcomeLabel {
                outcome: outcome.as_str(),
            });
        }
        // 5 ms to about 80 s.
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 15));
        registry.register_with_unit(
            "kappa_query_duration",
            "Time from a query's start to its stream's end",
            Unit::Seconds,
            duration.clone(),
        );
        let rows_sent = Counter::default();
        registry.register(
            "kappa_rows_sent",
            "Rows sent to clients in query results",
            rows_sent.clone(),
        );
        let bytes_sent = Counter::default();
        registry.register(
            "kappa_bytes_sent",
            "Bytes of Arrow Flight data (IPC headers and bodies) sent in query results",
            bytes_sent.clone(),
        );
        let records_fetched = Counter::default();
        registry.register(
            "kappa_kafka_records_fetched",
            "Records fetched from Kafka by scans and streams",
            records_fetched.clone(),
        );
        let queries_active = Gauge::default();
        registry.register(
            "kappa_queries_active",
            "Queries running now (streams not included)",
            queries_active.clone(),
        );
        let streams_active = Gauge::default();
        registry.register(
            "kappa_streams_active",
            "Streaming queries (tail) running now",
            streams_active.clone(),
        );
        let lag_records = Family::<TableLabel, Gauge>::default();
        registry.register(
            "kappa_table_lake_lag_records",
            "Offsets in Kafka not yet tiered into the lake, summed over the table's partitions",
            lag_records.clone(),
        );
        let lag_seconds = Family::<TableLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "kappa_table_lake_lag_seconds",
            "Age of the oldest record not yet tiered into the lake, over the table's partitions",
            lag_seconds.clone(),
        );
        registry.register(
            "kappa_build",
            "The running build",
            Info::new(vec![
                ("binary".to_string(), "kappa-gateway".to_string()),
                ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
            ]),
        );
        Self {
            registry,
            queries,
            duration,
            rows_sent,
            bytes_sent,
            records_fetched,
            records_seen: AtomicU64::new(0),
            queries_active,
            streams_active,
            lag_records,
            lag_seconds,
            lag_measured: Mutex::new(None),
        }
    }

    /// A query that ran ended: how, after how long, with how many rows and
    /// bytes sent.
    pub fn query_ended(&self, outcome: Outcome, took: Duration, rows: u64, bytes: u64) {
        self.queries
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str(),
            })
            .inc();
        self.duration.observe(took.as_secs_f64());
        self.rows_sent.inc_by(rows);
        self.bytes_sent.inc_by(bytes);
    }

    /// A query whose SQL did not plan.
    pub fn query_rejected(&self) {
        self.queries
            .get_or_create(&OutcomeLabel {
                outcome: Outcome::Rejected.as_str(),
            })
            .inc();
    }

    /// The gauge of queries (or streams) running now.
    pub fn active(&self, streaming: bool) -> &Gauge {
        if streaming {
            &self.streams_active
        } else {
            &self.queries_active
        }
    }

    /// The registry in the text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String does not fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Brings what is measured at scrape time up to date: records fetched
    /// (from the Kafka client's total) and, at most every [`LAG_EVERY`],
    /// each tiered table's lake lag.
    async fn measure(&self, schema: &KafkaSchema) {
        let total = schema.context().client().records_fetched();
        let seen = self.records_seen.swap(total, Ordering::AcqRel);
        self.records_fetched.inc_by(total.saturating_sub(seen));

        let mut measured = self.lag_measured.lock().await;
        if measured.is_some_and(|at| at.elapsed() < LAG_EVERY) {
            return;
        }
        *measured = Some(Instant::now());
        let read = kappa_catalog::system::partitions::read(schema.context());
        match tokio::time::timeout(LAG_TIMEOUT, read).await {
            Ok(Ok(batch)) => self.set_lag(schema, &batch),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "lake lag not measured");
                self.lag_records.clear();
                self.lag_seconds.clear();
            }
            Err(_) => {
                tracing::debug!("lake lag not measured within {LAG_TIMEOUT:?}");
                self.lag_records.clear();
                self.lag_seconds.clear();
            }
        }
    }

    /// Sets each tiered table's lag from `system.partitions` rows: records
    /// summed and seconds the largest over its partitions. A table with no
    /// lake tier has no series.
    fn set_lag(&self, schema: &KafkaSchema, rows: &datafusion::arrow::array::RecordBatch) {
        let (Some(topics), Some(records), Some(seconds)) = (
            rows.column_by_name("topic"),
            rows.column_by_name("lake_lag_records"),
            rows.column_by_name("lake_lag_seconds"),
        ) else {
            return;
        };
        let topics = topics.as_string::<i32>();
        let records = records.as_primitive::<Int64Type>();
        let seconds = seconds.as_primitive::<Float64Type>();
        let mut tables: std::collections::BTreeMap<String, (i64, f64)> = Default::default();
        for row in 0..rows.num_rows() {
            if records.is_null(row) {
                continue;
            }
            let table = schema.context().table_name_for_topic(topics.value(row));
            let entry = tables.entry(table).or_default();
            entry.0 += records.value(row);
            if !seconds.is_null(row) {
                entry.1 = entry.1.max(seconds.value(row));
            }
        }
        self.lag_records.clear();
        self.lag_seconds.clear();
        for (table, (lag_records, lag_seconds)) in tables {
            let label = TableLabel { table };
            self.lag_records.get_or_create(&label).set(lag_records);
            self.lag_seconds.get_or_create(&label).set(lag_seconds);
        }
    }
}

/// What the gateway shows on its metrics port.
#[derive(Debug)]
pub struct GatewayExposition {
    /// The registry.
    pub metrics: Arc<GatewayMetrics>,
    /// The catalog, for what is measured at scrape time.
    pub schema: Arc<KafkaSchema>,
    /// `/readyz`.
    pub readiness: Arc<Readiness>,
}

impl Exposition for GatewayExposition {
    fn render(&self) -> Pin<Box<dyn Future<Output = String> + Send + '_>> {
        Box::pin(async move {
            self.metrics.measure(&self.schema).await;
            self.metrics.encode()
        })
    }

    fn ready(&self) -> bool {
        self.readiness.is_ready()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_as_documented() {
        let metrics = GatewayMetrics::new();
        metrics.query_ended(Outcome::Ok, Duration::from_millis(20), 3, 100);
        metrics.query_rejected();
        let text = metrics.encode();
        for line in [
            "kappa_queries_total{outcome=\"ok\"} 1",
            "kappa_queries_total{outcome=\"rejected\"} 1",
            "kappa_query_duration_seconds_count 1",
            "kappa_rows_sent_total 3",
            "kappa_bytes_sent_total 100",
            "kappa_kafka_records_fetched_total 0",
            "kappa_queries_active 0",
            "kappa_streams_active 0",
            "kappa_build_info{binary=\"kappa-gateway\",version=\"",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}

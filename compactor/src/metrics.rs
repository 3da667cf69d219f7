//! The compactor's metrics, served at `/metrics` on `--metrics-listen`
//! while `kappa-compactor run --every …` runs.
//!
//! Counted when a table's run ends: the records it tiered and the Delta
//! commits it made (`outcome="ok"`), or one failed commit when the run
//! failed (records committed by a failed run before its failure are in the
//! lake and are not counted). The last-success time is set when a pass
//! over every table succeeded, so `time() - kappa_compactor_last_success_timestamp_seconds`
//! grows when any table keeps failing.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kappa_ops::Exposition;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::tier::TierMetrics;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The compactor's registry and the metrics in it.
#[derive(Debug)]
pub struct CompactorMetrics {
    registry: Registry,
    records_tiered: Counter,
    commits: Family<OutcomeLabel, Counter>,
    last_success: Gauge<f64, AtomicU64>,
    stopping: AtomicBool,
}

impl Default for CompactorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CompactorMetrics {
    /// Every metric at zero, registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let records_tiered = Counter::default();
        registry.register(
            "kappa_compactor_records_tiered",
            "Records written into the lake",
            records_tiered.clone(),
        );
        let commits = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "kappa_compactor_commits",
            "Delta commits made (ok), and table runs that failed (error)",
            commits.clone(),
        );
        // Both series exist from the start, so a rate over them is defined.
        for outcome in ["ok", "error"] {
            let _ = commits.get_or_create(&OutcomeLabel { outcome });
        }
        let last_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "kappa_compactor_last_success_timestamp_seconds",
            "When the last pass in which every table succeeded ended (Unix seconds; 0: none yet)",
            last_success.clone(),
        );
        registry.register(
            "kappa_build",
            "The running build",
            Info::new(vec![
                ("binary".to_string(), "kappa-compactor".to_string()),
                ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
            ]),
        );
        Self {
            registry,
            records_tiered,
            commits,
            last_success,
            stopping: AtomicBool::new(false),
        }
    }

    /// A table's run ended with `metrics`.
    pub fn tiered(&self, metrics: &TierMetrics) {
        self.records_tiered.inc_by(metrics.records);
        self.commits
            .get_or_create(&OutcomeLabel { outcome: "ok" })
            .inc_by(metrics.commits as u64);
    }

    /// A table's run failed.
    pub fn failed(&self) {
        self.commits
            .get_or_create(&OutcomeLabel { outcome: "error" })
            .inc();
    }

    /// A pass over every table succeeded, now.
    pub fn pass_succeeded(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_success.set(now);
    }

    /// The compactor is stopping: `/readyz` says so.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// The registry in the text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Exposition for CompactorMetrics {
    fn render(&self) -> Pin<Box<dyn Future<Output = String> + Send + '_>> {
        Box::pin(async move { self.encode() })
    }

    fn ready(&self) -> bool {
        !self.stopping.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_counts_its_records_and_commits() {
        let metrics = CompactorMetrics::new();
        metrics.tiered(&TierMetrics {
            commits: 2,
            records: 30,
            ..TierMetrics::default()
        });
        metrics.failed();
        let text = metrics.encode();
        for line in [
            "kappa_compactor_records_tiered_total 30",
            "kappa_compactor_commits_total{outcome=\"ok\"} 2",
            "kappa_compactor_commits_total{outcome=\"error\"} 1",
            "kappa_compactor_last_success_timestamp_seconds 0",
            "kappa_build_info{binary=\"kappa-compactor\",version=\"",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}

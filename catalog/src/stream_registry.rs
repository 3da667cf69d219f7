//! The streams a gateway is running: how many may run at once, and what
//! each has sent (`system.streams`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{CatalogError, Result};

/// How many streams run at once by default.
pub const DEFAULT_MAX_STREAMS: usize = 64;

/// The running streams.
#[derive(Debug)]
pub struct StreamRegistry {
    max: usize,
    next_id: AtomicU64,
    streams: Mutex<BTreeMap<u64, Arc<StreamStats>>>,
}

/// What one stream is and has sent.
#[derive(Debug)]
pub struct StreamStats {
    /// Unique within the gateway's lifetime.
    pub id: u64,
    /// The table tailed.
    pub table: String,
    /// Microseconds since the epoch.
    pub started_at_us: i64,
    records: AtomicU64,
}

impl StreamStats {
    /// Rows handed to the client's stream so far.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Counts `n` more rows sent.
    pub fn add_records(&self, n: usize) {
        self.records.fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl StreamRegistry {
    /// A registry allowing `max` streams at once.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            next_id: AtomicU64::new(1),
            streams: Mutex::default(),
        }
    }

    /// Registers a stream of `table`, or refuses it when `max` run already.
    /// The stream is listed until every clone of the guard is dropped (the
    /// client's stream and the reader thread each hold one).
    pub fn register(self: &Arc<Self>, table: &str) -> Result<Arc<StreamGuard>> {
        let mut streams = self.streams.lock().expect("stream registry poisoned");
        if streams.len() >= self.max {
            return Err(CatalogError::TooManyStreams(self.max));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stats = Arc::new(StreamStats {
            id,
            table: table.to_string(),
            started_at_us: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
            records: AtomicU64::new(0),
        });
        streams.insert(id, Arc::clone(&stats));
        Ok(Arc::new(StreamGuard {
            registry: Arc::clone(self),
            stats,
        }))
    }

    /// The running streams, oldest first.
    pub fn running(&self) -> Vec<Arc<StreamStats>> {
        let streams = self.streams.lock().expect("stream registry poisoned");
        streams.values().cloned().collect()
    }
}

impl Default for StreamRegistry {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_STREAMS)
    }
}

/// A registered stream; unregisters it when dropped.
#[derive(Debug)]
pub struct StreamGuard {
    registry: Arc<StreamRegistry>,
    stats: Arc<StreamStats>,
}

impl StreamGuard {
    /// The stream's counters.
    pub fn stats(&self) -> &StreamStats {
        &self.stats
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut streams = self
            .registry
            .streams
            .lock()
            .expect("stream registry poisoned");
        streams.remove(&self.stats.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_listed_while_held_and_capped() {
        let registry = Arc::new(StreamRegistry::new(2));
        let a = registry.register("orders").unwrap();
        let a_thread = Arc::clone(&a);
        let b = registry.register("clicks").unwrap();
        assert!(matches!(
            registry.register("x"),
            Err(CatalogError::TooManyStreams(2))
        ));
        a.stats().add_records(3);
        assert_eq!(registry.running()[0].records(), 3);
        drop(a);
        assert_eq!(registry.running().len(), 2, "the reader still holds it");
        drop(a_thread);
        assert_eq!(registry.running().len(), 1);
        drop(b);
        assert!(registry.running().is_empty());
        assert!(registry.register("x").is_ok());
    }
}

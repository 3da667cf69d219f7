//! Parameters bound with DoPut, remembered for clients that go on executing
//! the handle they prepared instead of the one DoPut returns
//! (flightsql-dbapi 0.2, which Apache Superset uses; Flight SQL clients
//! written before DoPut returned a handle).
//!
//! Handles stay stateless for every client that uses DoPut's answer: the
//! updated handle carries the parameters and any gateway serves it. The
//! handle CreatePreparedStatement gives out carries an id (as a ticket does),
//! and the latest parameters bound to it are kept here under that id, for a
//! caller with the same settings and grants, until the statement is closed,
//! bound again, or the binding expires. Only the gateway that took the DoPut
//! has them, as with CancelFlightInfo.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;

use crate::plan_cache::PlanKey;

/// How long a binding waits to be executed.
pub const BINDING_TTL: Duration = Duration::from_secs(600);

/// What all kept bindings may hold together, so clients that never close
/// their statements cannot grow it.
pub const MAX_BINDING_BYTES: usize = 64 << 20;

/// A binding larger than this is not kept: clients that bind that much
/// (`executemany` over many rows) use the handle DoPut returns.
pub const MAX_KEPT_BINDING_BYTES: usize = 4 << 20;

#[derive(Debug)]
struct Binding {
    key: PlanKey,
    made: Instant,
    bytes: usize,
    params: RecordBatch,
}

/// The latest binding of each prepared statement, by the id in its handle.
#[derive(Debug)]
pub struct Bindings {
    entries: Mutex<HashMap<u64, Binding>>,
    ttl: Duration,
    budget: usize,
}

impl Default for Bindings {
    fn default() -> Self {
        Self::new(BINDING_TTL, MAX_BINDING_BYTES)
    }
}

impl Bindings {
    /// Bindings kept `ttl`, holding at most `budget` bytes together.
    pub fn new(ttl: Duration, budget: usize) -> Self {
        Self {
            entries: Mutex::default(),
            ttl,
            budget,
        }
    }

    /// Keeps `params` as statement `id`'s binding for callers matching
    /// `key`, replacing the one before. When over budget, expired bindings
    /// go first, then the oldest.
    pub fn put(&self, id: u64, key: PlanKey, params: RecordBatch) {
        let bytes = params.get_array_memory_size();
        let mut entries = self.entries.lock().expect("bindings poisoned");
        entries.remove(&id);
        if bytes > MAX_KEPT_BINDING_BYTES.min(self.budget) {
            return;
        }
        let mut held: usize = entries.values().map(|b| b.bytes).sum();
        if held + bytes > self.budget {
            entries.retain(|_, b| b.made.elapsed() < self.ttl);
            held = entries.values().map(|b| b.bytes).sum();
        }
        while held + bytes > self.budget {
            let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, b)| b.made)
                .map(|(id, _)| *id)
            else {
                break;
            };
            held -= entries.remove(&oldest).map_or(0, |b| b.bytes);
        }
        entries.insert(
            id,
            Binding {
                key,
                made: Instant::now(),
                bytes,
                params,
            },
        );
    }

    /// Statement `id`'s binding, if it is fresh and was made for exactly
    /// `key`; it stays for the next execution.
    pub fn get(&self, id: u64, key: &PlanKey) -> Option<RecordBatch> {
        let entries = self.entries.lock().expect("bindings poisoned");
        let binding = entries.get(&id)?;
        (binding.made.elapsed() < self.ttl && binding.key == *key).then(|| binding.params.clone())
    }

    /// Forgets statement `id`'s binding (ClosePreparedStatement), if it was
    /// made for `key`: another caller cannot drop it.
    pub fn remove(&self, id: u64, key: &PlanKey) {
        let mut entries = self.entries.lock().expect("bindings poisoned");
        if entries.get(&id).is_some_and(|b| b.key == *key) {
            entries.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array};

    use super::*;
    use crate::auth::Grants;

    fn key(handle: &str, grants: Grants) -> PlanKey {
        PlanKey {
            ticket: handle.as_bytes().to_vec(),
            settings: vec![],
            grants,
        }
    }

    fn params(values: Vec<i64>) -> RecordBatch {
        RecordBatch::try_from_iter([("0", Arc::new(Int64Array::from(values)) as ArrayRef)]).unwrap()
    }

    #[test]
    fn a_binding_serves_every_execution_of_its_caller_until_closed() {
        let bindings = Bindings::default();
        bindings.put(1, key("s1", Grants::all()), params(vec![7]));
        assert_eq!(
            bindings.get(1, &key("s1", Grants::all())),
            Some(params(vec![7]))
        );
        assert_eq!(
            bindings.get(1, &key("s1", Grants::all())),
            Some(params(vec![7])),
            "kept"
        );
        let narrower = Grants::only(&["orders".into()]);
        assert_eq!(
            bindings.get(1, &key("s1", narrower)),
            None,
            "another caller's"
        );
        assert_eq!(
            bindings.get(1, &key("s2", Grants::all())),
            None,
            "another statement's"
        );
        bindings.put(1, key("s1", Grants::all()), params(vec![8]));
        assert_eq!(
            bindings.get(1, &key("s1", Grants::all())),
            Some(params(vec![8])),
            "rebound"
        );
        bindings.remove(1, &key("s1", Grants::only(&["orders".into()])));
        assert!(
            bindings.get(1, &key("s1", Grants::all())).is_some(),
            "not another caller's to close"
        );
        bindings.remove(1, &key("s1", Grants::all()));
        assert_eq!(bindings.get(1, &key("s1", Grants::all())), None, "closed");
    }

    #[test]
    fn bindings_expire_and_stay_within_their_budget() {
        let bindings = Bindings::new(Duration::ZERO, MAX_BINDING_BYTES);
        bindings.put(1, key("s", Grants::all()), params(vec![1]));
        assert_eq!(bindings.get(1, &key("s", Grants::all())), None, "expired");

        let one = params(vec![1]).get_array_memory_size();
        let bindings = Bindings::new(Duration::from_secs(60), 2 * one);
        for id in 0..5 {
            bindings.put(id, key("s", Grants::all()), params(vec![1]));
        }
        let kept: Vec<u64> = (0..5)
            .filter(|&id| bindings.get(id, &key("s", Grants::all())).is_some())
            .collect();
        assert_eq!(kept, [3, 4], "the newest stay");

        bindings.put(9, key("s", Grants::all()), params((0..1000).collect()));
        assert_eq!(
            bindings.get(9, &key("s", Grants::all())),
            None,
            "over budget: not kept"
        );
    }
}

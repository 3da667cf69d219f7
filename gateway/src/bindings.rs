//! Parameters bound with DoPut, remembered for clients that go on executing
//! the handle they prepared instead of the one DoPut returns
//! (flightsql-dbapi 0.2, which Apache Superset uses; Flight SQL clients
//! written before DoPut returned a handle).
//!
//! Handles stay stateless for every client that uses DoPut's answer: the
//! updated handle carries the parameters and any gateway serves it. The
//! handle CreatePreparedStatement gives out carries a random id, and the
//! latest parameters bound to it are kept here under that id, for the same
//! user and SQL, until the statement is closed, bound again, executed through
//! DoPut's handle (the client does not need them), or the binding expires.
//! Only the gateway that took the DoPut has them, as with CancelFlightInfo:
//! a load balancer must keep a client's calls on one gateway (gRPC over one
//! connection does, behind an L4 balancer; per-call L7 routing does not, and
//! the client then gets "missing parameter(s)").

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;

/// How long a binding waits to be executed: such clients execute right
/// after binding.
pub const BINDING_TTL: Duration = Duration::from_secs(120);

/// What all kept bindings may hold together, so clients that never close
/// their statements cannot grow it.
pub const MAX_BINDING_BYTES: usize = 64 << 20;

/// A binding larger than this is not kept: clients that bind that much
/// (`executemany` over many rows) use the handle DoPut returns.
pub const MAX_KEPT_BINDING_BYTES: usize = 4 << 20;

/// At most this many bindings are kept, however small.
pub const MAX_BINDINGS: usize = 4096;

/// Whose binding it is: the user, and the statement's SQL (as a digest, so
/// a kept binding does not hold the SQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingOwner {
    user: String,
    sql_digest: u64,
}

impl BindingOwner {
    /// `user`'s binding of a statement of `sql`.
    pub fn new(user: &str, sql: &str) -> Self {
        let mut hasher = DefaultHasher::new();
        sql.hash(&mut hasher);
        Self {
            user: user.to_string(),
            sql_digest: hasher.finish(),
        }
    }
}

struct Binding {
    owner: BindingOwner,
    /// Insertion order: the oldest binding is evicted first.
    seq: u64,
    made: Instant,
    bytes: usize,
    params: RecordBatch,
}

#[derive(Default)]
struct Kept {
    by_id: HashMap<u64, Binding>,
    /// `(seq, id)` in insertion order; an entry whose binding was replaced
    /// or removed since is skipped when it comes up.
    order: VecDeque<(u64, u64)>,
    next_seq: u64,
    held: usize,
}

impl Kept {
    fn take(&mut self, id: u64) -> Option<Binding> {
        let binding = self.by_id.remove(&id)?;
        self.held -= binding.bytes;
        Some(binding)
    }

    /// Forgets the order of bindings replaced or removed since, once they
    /// outnumber the kept ones: bindings that never reach the budget (each
    /// removed by its client) would otherwise grow it without end.
    fn drop_stale_order(&mut self) {
        if self.order.len() > 2 * self.by_id.len() + 64 {
            let by_id = &self.by_id;
            self.order
                .retain(|(seq, id)| by_id.get(id).is_some_and(|b| b.seq == *seq));
        }
    }

    /// Drops the oldest binding still kept; false when none is.
    fn evict_oldest(&mut self) -> bool {
        while let Some((seq, id)) = self.order.pop_front() {
            if self.by_id.get(&id).is_some_and(|b| b.seq == seq) {
                self.take(id);
                return true;
            }
        }
        false
    }
}

/// The latest binding of each prepared statement, by the id in its handle.
pub struct Bindings {
    kept: Mutex<Kept>,
    ttl: Duration,
    budget: usize,
}

impl Default for Bindings {
    fn default() -> Self {
        Self::new(BINDING_TTL, MAX_BINDING_BYTES)
    }
}

/// The parameters are users' values: a debug dump shows only how many.
impl std::fmt::Debug for Bindings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept = self.kept.lock().expect("bindings poisoned");
        f.debug_struct("Bindings")
            .field("kept", &kept.by_id.len())
            .field("bytes", &kept.held)
            .finish()
    }
}

impl Bindings {
    /// Bindings kept `ttl`, holding at most `budget` bytes together.
    pub fn new(ttl: Duration, budget: usize) -> Self {
        Self {
            kept: Mutex::default(),
            ttl,
            budget,
        }
    }

    /// Keeps `params` as statement `id`'s binding for `owner`, replacing
    /// theirs before. Another owner's binding of that id stays, and this one
    /// is not kept. When over budget, the oldest bindings go first.
    pub fn put(&self, id: u64, owner: BindingOwner, params: RecordBatch) {
        let bytes = params.get_array_memory_size() + owner.user.len() + size_of::<Binding>();
        let mut kept = self.kept.lock().expect("bindings poisoned");
        if kept.by_id.get(&id).is_some_and(|b| b.owner != owner) {
            return;
        }
        kept.take(id);
        if bytes > MAX_KEPT_BINDING_BYTES.min(self.budget) {
            return;
        }
        while kept.held + bytes > self.budget || kept.by_id.len() >= MAX_BINDINGS {
            if !kept.evict_oldest() {
                break;
            }
        }
        let seq = kept.next_seq;
        kept.next_seq += 1;
        kept.order.push_back((seq, id));
        kept.drop_stale_order();
        kept.held += bytes;
        kept.by_id.insert(
            id,
            Binding {
                owner,
                seq,
                made: Instant::now(),
                bytes,
                params,
            },
        );
    }

    /// Statement `id`'s binding, if it is fresh and `owner`'s; it stays for
    /// the next execution.
    pub fn get(&self, id: u64, owner: &BindingOwner) -> Option<RecordBatch> {
        let kept = self.kept.lock().expect("bindings poisoned");
        let binding = kept.by_id.get(&id)?;
        (binding.made.elapsed() < self.ttl && binding.owner == *owner)
            .then(|| binding.params.clone())
    }

    /// Forgets statement `id`'s binding if it is `owner`'s: they closed the
    /// statement, bound it again, or execute the handle DoPut returned.
    pub fn remove(&self, id: u64, owner: &BindingOwner) {
        let mut kept = self.kept.lock().expect("bindings poisoned");
        if kept.by_id.get(&id).is_some_and(|b| b.owner == *owner) {
            kept.take(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array};

    use super::*;

    fn owner(user: &str, sql: &str) -> BindingOwner {
        BindingOwner::new(user, sql)
    }

    fn params(values: Vec<i64>) -> RecordBatch {
        RecordBatch::try_from_iter([("0", Arc::new(Int64Array::from(values)) as ArrayRef)]).unwrap()
    }

    #[test]
    fn a_binding_serves_every_execution_of_its_owner_until_removed() {
        let bindings = Bindings::default();
        let ada = owner("ada", "SELECT $1");
        bindings.put(1, ada.clone(), params(vec![7]));
        assert_eq!(bindings.get(1, &ada), Some(params(vec![7])));
        assert_eq!(bindings.get(1, &ada), Some(params(vec![7])), "kept");
        assert_eq!(
            bindings.get(1, &owner("bob", "SELECT $1")),
            None,
            "another user's"
        );
        assert_eq!(
            bindings.get(1, &owner("ada", "SELECT 2")),
            None,
            "another statement's"
        );
        bindings.put(1, ada.clone(), params(vec![8]));
        assert_eq!(bindings.get(1, &ada), Some(params(vec![8])), "rebound");
        bindings.remove(1, &owner("bob", "SELECT $1"));
        assert!(
            bindings.get(1, &ada).is_some(),
            "not another user's to remove"
        );
        bindings.remove(1, &ada);
        assert_eq!(bindings.get(1, &ada), None, "removed");
    }

    #[test]
    fn another_owner_can_neither_replace_nor_drop_a_binding() {
        let bindings = Bindings::default();
        let ada = owner("ada", "SELECT $1");
        let bob = owner("bob", "SELECT $1");
        bindings.put(1, ada.clone(), params(vec![7]));
        bindings.put(1, bob.clone(), params(vec![666]));
        assert_eq!(bindings.get(1, &ada), Some(params(vec![7])));
        assert_eq!(bindings.get(1, &bob), None);
    }

    #[test]
    fn bindings_expire_and_stay_within_their_budget() {
        let bindings = Bindings::new(Duration::ZERO, MAX_BINDING_BYTES);
        let ada = owner("ada", "s");
        bindings.put(1, ada.clone(), params(vec![1]));
        assert_eq!(bindings.get(1, &ada), None, "expired");

        let one = params(vec![1]).get_array_memory_size() + "ada".len() + size_of::<Binding>();
        let bindings = Bindings::new(Duration::from_secs(60), 2 * one);
        for id in 0..5 {
            bindings.put(id, ada.clone(), params(vec![1]));
        }
        // A rebound binding is new again: 3 outlives 4 once rebound.
        bindings.put(3, ada.clone(), params(vec![1]));
        bindings.put(5, ada.clone(), params(vec![1]));
        let kept: Vec<u64> = (0..6)
            .filter(|&id| bindings.get(id, &ada).is_some())
            .collect();
        assert_eq!(kept, [3, 5], "the newest stay");

        bindings.put(9, ada.clone(), params((0..1000).collect()));
        assert_eq!(bindings.get(9, &ada), None, "over budget: not kept");
    }

    #[test]
    fn bindings_their_clients_remove_leave_nothing_behind() {
        let bindings = Bindings::default();
        let ada = owner("ada", "s");
        for id in 0..10_000 {
            bindings.put(id, ada.clone(), params(vec![1]));
            bindings.remove(id, &ada);
        }
        let kept = bindings.kept.lock().unwrap();
        assert!(kept.by_id.is_empty() && kept.held == 0);
        assert!(kept.order.len() <= 65, "{} stale entries", kept.order.len());
    }

    #[test]
    fn at_most_max_bindings_are_kept() {
        let bindings = Bindings::default();
        let ada = owner("ada", "s");
        for id in 0..(MAX_BINDINGS as u64 + 10) {
            bindings.put(id, ada.clone(), params(vec![1]));
        }
        let kept = bindings.kept.lock().unwrap();
        assert_eq!(kept.by_id.len(), MAX_BINDINGS);
        assert!(!kept.by_id.contains_key(&9) && kept.by_id.contains_key(&10));
    }
}

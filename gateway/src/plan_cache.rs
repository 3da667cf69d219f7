//! Plans made for GetFlightInfo, kept for the DoGet that follows, so a
//! query is planned once where the protocol allows it.
//!
//! Handles stay stateless: the ticket still carries the whole statement, and
//! a DoGet that finds no plan here (another gateway answered GetFlightInfo,
//! the plan expired, or the ticket is fetched twice) plans it again. A plan
//! is taken out by the first DoGet of its ticket, and only by a call with
//! the same ticket bytes, settings and grants that made it. The snapshot is
//! unchanged: end offsets are fixed when DoGet turns the plan into a
//! physical plan, not when it is cached.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::auth::Grants;

/// How long a plan waits for its DoGet (clients fetch right away).
pub const PLAN_TTL: Duration = Duration::from_secs(30);

/// Plans waiting at most, so a client that never fetches cannot grow it.
pub const MAX_PLANS: usize = 1024;

/// What a plan depends on: the exact ticket, and the caller's settings and
/// grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanKey {
    /// The ticket's bytes (query id, statement, bound parameters).
    pub ticket: Vec<u8>,
    /// The call's `kappa.*` settings.
    pub settings: Vec<(String, String)>,
    /// What the caller may read.
    pub grants: Grants,
}

#[derive(Debug)]
struct Entry<V> {
    key: PlanKey,
    made: Instant,
    plan: V,
}

/// Plans by query id.
#[derive(Debug)]
pub struct PlanCache<V> {
    entries: Mutex<HashMap<u64, Entry<V>>>,
    ttl: Duration,
    capacity: usize,
}

impl<V> Default for PlanCache<V> {
    fn default() -> Self {
        Self::new(PLAN_TTL, MAX_PLANS)
    }
}

impl<V> PlanCache<V> {
    /// A cache keeping plans `ttl`, at most `capacity` of them.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: Mutex::default(),
            ttl,
            capacity,
        }
    }

    /// Keeps `plan` of query `id` for its DoGet. When full, expired plans go
    /// first, then the oldest.
    pub fn put(&self, id: u64, key: PlanKey, plan: V) {
        let mut entries = self.entries.lock().expect("plan cache poisoned");
        if entries.len() >= self.capacity {
            entries.retain(|_, e| e.made.elapsed() < self.ttl);
        }
        if entries.len() >= self.capacity
            && let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.made)
                .map(|(id, _)| *id)
        {
            entries.remove(&oldest);
        }
        entries.insert(
            id,
            Entry {
                key,
                made: Instant::now(),
                plan,
            },
        );
    }

    /// The plan of query `id`, if it is here, fresh, and was made for
    /// exactly `key`; it leaves the cache either way.
    pub fn take(&self, id: u64, key: &PlanKey) -> Option<V> {
        let entry = self
            .entries
            .lock()
            .expect("plan cache poisoned")
            .remove(&id)?;
        (entry.made.elapsed() < self.ttl && entry.key == *key).then_some(entry.plan)
    }

    /// Plans waiting.
    pub fn len(&self) -> usize {
        self.entries.lock().expect("plan cache poisoned").len()
    }

    /// Whether no plan is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ticket: &str, grants: Grants) -> PlanKey {
        PlanKey {
            ticket: ticket.as_bytes().to_vec(),
            settings: vec![],
            grants,
        }
    }

    #[test]
    fn a_plan_is_taken_once_and_only_by_the_call_that_made_it() {
        let cache = PlanCache::default();
        cache.put(1, key("q1", Grants::all()), "plan 1");
        assert_eq!(cache.take(1, &key("q1", Grants::all())), Some("plan 1"));
        assert_eq!(cache.take(1, &key("q1", Grants::all())), None, "taken once");

        cache.put(2, key("q2", Grants::all()), "plan 2");
        let narrower = Grants::only(&["orders".into()]);
        assert_eq!(
            cache.take(2, &key("q2", narrower)),
            None,
            "other grants re-plan"
        );
        cache.put(3, key("q3", Grants::all()), "plan 3");
        assert_eq!(cache.take(3, &key("q3-forged", Grants::all())), None);
        assert!(cache.is_empty(), "a mismatch drops the plan too");
    }

    #[test]
    fn plans_expire_and_the_cache_stays_bounded() {
        let cache = PlanCache::new(Duration::ZERO, 2);
        cache.put(1, key("q", Grants::all()), 1);
        assert_eq!(cache.take(1, &key("q", Grants::all())), None, "expired");
        let cache = PlanCache::new(Duration::from_secs(60), 2);
        for id in 0..5 {
            cache.put(id, key("q", Grants::all()), id);
        }
        assert_eq!(cache.len(), 2);
        assert_eq!(
            cache.take(4, &key("q", Grants::all())),
            Some(4),
            "the newest stays"
        );
    }
}

//! A lease on one table, so OPTIMIZE and VACUUM never overlap on it.
//!
//! Tiering needs no lease (its commits carry the watermarks, and Delta's
//! conflict check lets one of two racing writers land). Two overlapping
//! OPTIMIZE runs in deltalake 1.1 can both commit, each rewriting the same
//! files into new ones, so the table would hold those rows twice; a VACUUM
//! next to an OPTIMIZE could delete files the OPTIMIZE is about to commit.
//!
//! The lease lives in the table's folder, in `_kappa/lease/` (Delta and
//! VACUUM skip folders starting with `_`), as numbered generations:
//! `00000000000000000007.json`. Taking the lease writes the next generation
//! with put-if-absent, the one primitive every object store Delta runs on
//! offers (it is what a Delta commit itself relies on), so of two jobs that
//! read the same latest generation only one can write the next. The holder
//! is the latest generation's owner until it expires or is released; a
//! holder renews by writing further generations, and a renewal that fails
//! means another job took the lease after ours expired, so the job stops.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deltalake::ObjectStore;
use deltalake::Path;
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{CompactorError, Result};

/// Where a table's lease generations are, relative to the table's root.
const LEASE_PREFIX: &str = "_kappa/lease";

/// One generation of the lease, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseRecord {
    /// Who holds it: host, process and a random id.
    owner: String,
    /// What for (`optimize`, `vacuum`), for the error a waiting job shows.
    job: String,
    /// Milliseconds since the epoch after which the lease is free.
    expires_at_ms: i64,
    /// The holder finished: the lease is free now.
    released: bool,
}

/// A lease held on one table. Release it with [`Lease::release`] when the
/// job is done; a holder that dies leaves it to expire.
#[derive(Debug)]
pub struct Lease {
    store: Arc<dyn ObjectStore>,
    table: String,
    owner: String,
    job: String,
    ttl: Duration,
    /// The latest generation this job wrote (or saw, before it holds).
    generation: u64,
    /// Whether `generation` is ours.
    holding: bool,
}

impl Lease {
    /// Takes the lease on the table whose root is `store`, or fails with
    /// [`CompactorError::LeaseHeld`] when another job holds it.
    pub async fn acquire(
        store: Arc<dyn ObjectStore>,
        table: &str,
        job: &str,
        ttl: Duration,
    ) -> Result<Self> {
        Self::observe(store, table, job, ttl).await?.take().await
    }

    /// The first half of taking the lease: reads the latest generation and
    /// fails if it is held. (Split from [`Lease::take`] so a test can make
    /// many jobs observe the same generation before any takes it.)
    async fn observe(
        store: Arc<dyn ObjectStore>,
        table: &str,
        job: &str,
        ttl: Duration,
    ) -> Result<Self> {
        let latest =
            latest_generation(store.as_ref())
                .await
                .map_err(|source| CompactorError::Lease {
                    table: table.to_string(),
                    source,
                })?;
        if let Some((generation, record)) = &latest {
            if !record.released && record.expires_at_ms > now_ms() {
                return Err(held(table, record));
            }
            tracing::debug!(
                table,
                generation,
                "taking over an expired or released lease"
            );
        }
        Ok(Self {
            store,
            table: table.to_string(),
            owner: owner_id(),
            job: job.to_string(),
            ttl,
            generation: latest.as_ref().map_or(0, |(g, _)| *g),
            holding: false,
        })
    }

    /// The second half: writes the generation after the one observed, which
    /// only one of the jobs that observed it can do.
    async fn take(mut self) -> Result<Self> {
        self.write_next(false).await?;
        // Earlier generations are history; keep the one before ours so a
        // concurrent reader's view stays explainable, drop the rest.
        self.prune().await;
        Ok(self)
    }

    /// Extends the lease by its time to live. Fails with
    /// [`CompactorError::LeaseLost`] when another job has taken it.
    pub async fn renew(&mut self) -> Result<()> {
        self.write_next(false).await
    }

    /// Frees the lease for the next job (best effort: an unreleased lease
    /// expires by itself).
    pub async fn release(mut self) {
        if let Err(e) = self.write_next(true).await {
            tracing::warn!(table = %self.table, error = %e, "could not release the lease; it will expire");
        }
    }

    /// Runs `job` while holding the lease, renewing it every third of its
    /// time to live; stops the job if the lease is lost. Releases it after.
    pub async fn hold<T>(mut self, job: impl Future<Output = Result<T>>) -> Result<T> {
        let mut job = std::pin::pin!(job);
        let mut renewal = tokio::time::interval(self.ttl / 3);
        renewal.tick().await; // the first tick is immediate
        let outcome = loop {
            tokio::select! {
                outcome = &mut job => break outcome,
                _ = renewal.tick() => self.renew().await?,
            }
        };
        self.release().await;
        outcome
    }

    /// Writes generation `self.generation + 1` if no one else has.
    async fn write_next(&mut self, released: bool) -> Result<()> {
        let next = self.generation + 1;
        let record = LeaseRecord {
            owner: self.owner.clone(),
            job: self.job.clone(),
            expires_at_ms: if released {
                now_ms()
            } else {
                now_ms().saturating_add(i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX))
            },
            released,
        };
        let body = serde_json::to_vec(&record).expect("a lease record serializes");
        let put = self
            .store
            .put_opts(
                &generation_path(next),
                PutPayload::from(body),
                PutOptions::from(PutMode::Create),
            )
            .await;
        match put {
            Ok(_) => {
                self.generation = next;
                self.holding = true;
                Ok(())
            }
            Err(object_store::Error::AlreadyExists { .. }) if self.holding => {
                Err(CompactorError::LeaseLost {
                    table: self.table.clone(),
                })
            }
            // Another job wrote the same generation first: it holds the lease.
            Err(object_store::Error::AlreadyExists { .. }) => {
                match read_generation(self.store.as_ref(), next).await {
                    Ok(record) => Err(held(&self.table, &record)),
                    Err(_) => Err(CompactorError::LeaseLost {
                        table: self.table.clone(),
                    }),
                }
            }
            Err(e) => Err(CompactorError::Lease {
                table: self.table.clone(),
                source: e,
            }),
        }
    }

    /// Deletes generations older than the one before ours.
    async fn prune(&self) {
        let Ok(generations) = list_generations(self.store.as_ref()).await else {
            return;
        };
        for generation in generations.into_iter().filter(|g| *g + 1 < self.generation) {
            let _ = self.store.delete(&generation_path(generation)).await;
        }
    }
}

/// The error for a lease another job holds.
fn held(table: &str, record: &LeaseRecord) -> CompactorError {
    CompactorError::LeaseHeld {
        table: table.to_string(),
        job: record.job.clone(),
        owner: record.owner.clone(),
        expires_in: Duration::from_millis(
            u64::try_from(record.expires_at_ms - now_ms()).unwrap_or(0),
        ),
    }
}

fn generation_path(generation: u64) -> Path {
    Path::from(format!("{LEASE_PREFIX}/{generation:020}.json"))
}

async fn list_generations(store: &dyn ObjectStore) -> object_store::Result<Vec<u64>> {
    let prefix = Path::from(LEASE_PREFIX);
    let objects: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
    Ok(objects
        .iter()
        .filter_map(|meta| {
            meta.location
                .filename()?
                .strip_suffix(".json")?
                .parse()
                .ok()
        })
        .collect())
}

async fn read_generation(
    store: &dyn ObjectStore,
    generation: u64,
) -> object_store::Result<LeaseRecord> {
    let bytes = store
        .get(&generation_path(generation))
        .await?
        .bytes()
        .await?;
    serde_json::from_slice(&bytes).map_err(|e| object_store::Error::Generic {
        store: "kappa lease",
        source: Box::new(e),
    })
}

/// The latest generation and what it says.
async fn latest_generation(
    store: &dyn ObjectStore,
) -> object_store::Result<Option<(u64, LeaseRecord)>> {
    let Some(latest) = list_generations(store).await?.into_iter().max() else {
        return Ok(None);
    };
    Ok(Some((latest, read_generation(store, latest).await?)))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Host, process and a random id: unique per job, readable in the error a
/// waiting job shows.
fn owner_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into());
    format!(
        "{host}/pid {}/{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn a_held_lease_refuses_a_second_job_until_released() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let first = Lease::acquire(Arc::clone(&store), "orders", "optimize", TTL)
            .await
            .unwrap();
        let refused = Lease::acquire(Arc::clone(&store), "orders", "vacuum", TTL)
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, CompactorError::LeaseHeld { job, .. } if job == "optimize"),
            "{refused}"
        );
        first.release().await;
        Lease::acquire(store, "orders", "vacuum", TTL)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_and_its_holder_cannot_renew() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut stalled = Lease::acquire(
            Arc::clone(&store),
            "orders",
            "optimize",
            Duration::from_millis(1),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let _next = Lease::acquire(Arc::clone(&store), "orders", "optimize", TTL)
            .await
            .unwrap();
        let lost = stalled.renew().await.unwrap_err();
        assert!(matches!(lost, CompactorError::LeaseLost { .. }), "{lost}");
    }

    #[tokio::test]
    async fn of_many_jobs_racing_for_a_free_lease_one_wins() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        // An expired lease, so there is a generation to race past.
        Lease::acquire(Arc::clone(&store), "orders", "optimize", Duration::ZERO)
            .await
            .unwrap();
        let mut racers = Vec::new();
        for _ in 0..16 {
            let store = Arc::clone(&store);
            racers.push(
                Lease::observe(store, "orders", "optimize", TTL)
                    .await
                    .unwrap(),
            );
        }
        let mut winners = 0;
        for racer in racers {
            match racer.take().await {
                Ok(_) => winners += 1,
                Err(e) => assert!(matches!(e, CompactorError::LeaseHeld { .. }), "{e}"),
            }
        }
        assert_eq!(winners, 1);
    }

    #[tokio::test]
    async fn a_job_held_past_its_renewals_keeps_the_lease_and_frees_it_after() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let ttl = Duration::from_millis(90);
        let lease = Lease::acquire(Arc::clone(&store), "orders", "optimize", ttl)
            .await
            .unwrap();
        let during = Arc::clone(&store);
        let held_throughout = lease
            .hold(async move {
                // Several lifetimes of the lease: renewals keep it ours.
                for _ in 0..5 {
                    tokio::time::sleep(ttl / 2).await;
                    let other = Lease::acquire(Arc::clone(&during), "orders", "vacuum", ttl).await;
                    if other.is_ok() {
                        return Ok(false);
                    }
                }
                Ok(true)
            })
            .await
            .unwrap();
        assert!(held_throughout, "another job took a lease being renewed");
        Lease::acquire(store, "orders", "vacuum", ttl)
            .await
            .unwrap();
    }
}

//! kappa's compactor: tiers Kafka topics into Delta Lake tables, exactly once.
//!
//! [`tier::TierTable`] moves one table's old records into its Delta table at
//! `<lake>/tables/<name>/` ([`kappa_catalog::lake`]), committing each partition's watermark
//! in the same Delta transaction as the data. The records are read and decoded
//! by the catalog's own scan, so a table reads the same from the lake and from
//! Kafka.

pub mod error;
pub mod latest;
pub mod lease;
pub mod maintain;
pub mod metrics;
pub mod progress;
pub mod shard;
mod source;
pub mod tier;

pub use error::{CompactorError, Result};
pub use latest::{CompactLatest, LatestMetrics};
pub use lease::Lease;
pub use maintain::{OptimizeMetrics, OptimizeTable, TableLocation, VacuumMetrics, VacuumTable};
pub use metrics::CompactorMetrics;
pub use progress::{ProgressSnapshot, TierProgress};
pub use shard::Shard;
pub use tier::{TierMetrics, TierTable};

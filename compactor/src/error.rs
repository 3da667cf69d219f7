//! Errors of the compactor library.

/// Result alias for the compactor.
pub type Result<T, E = CompactorError> = std::result::Result<T, E>;

/// What can stop a table from being tiered.
#[derive(Debug, thiserror::Error)]
pub enum CompactorError {
    /// Reading Kafka or a table definition failed.
    #[error(transparent)]
    Catalog(#[from] kappa_catalog::CatalogError),

    /// The Delta table could not be read or written.
    #[error("Delta table: {0}")]
    Delta(#[from] deltalake::DeltaTableError),

    /// Reading records through the scan failed.
    #[error("reading the topic: {0}")]
    Scan(#[from] datafusion::error::DataFusionError),

    /// Building a batch failed.
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),

    /// The lake holds offsets the topic does not have (the topic was deleted
    /// and created again, or the lake belongs to another cluster).
    #[error(
        "table '{table}': partition {partition} is tiered up to offset {watermark}, but the topic ends at {end}; \
         was the topic re-created? Move the table's lake folder away to start over"
    )]
    WatermarkAhead {
        /// The table.
        table: String,
        /// The partition.
        partition: i32,
        /// Its watermark in the lake.
        watermark: i64,
        /// The partition's end in Kafka.
        end: i64,
    },

    /// Kafka deleted records before they were tiered.
    #[error(
        "table '{table}': Kafka deleted records before they were tiered ({detail}); \
         run with --allow-data-loss to tier what is left and record the gap"
    )]
    DataLoss {
        /// The table.
        table: String,
        /// Which partitions lost which offsets.
        detail: String,
    },

    /// Another job holds the table's maintenance lease.
    #[error(
        "table '{table}': its lease is held by {owner} running {job} for {expires_in:.0?} more; \
         try again later (a holder that died leaves it to expire)"
    )]
    LeaseHeld {
        /// The table.
        table: String,
        /// What the holder runs.
        job: String,
        /// Who holds it.
        owner: String,
        /// Until it expires unless renewed.
        expires_in: std::time::Duration,
    },

    /// Another job took the lease while this one held it (this job stalled
    /// past the lease's time to live); this job stopped.
    #[error("table '{table}': another job took the table's lease; this job stopped")]
    LeaseLost {
        /// The table.
        table: String,
    },

    /// Reading or writing the lease failed.
    #[error("table '{table}': the lease: {source}")]
    Lease {
        /// The table.
        table: String,
        /// The object store's error.
        source: object_store::Error,
    },

    /// OPTIMIZE or VACUUM on a table the compactor never tiered.
    #[error("table '{table}': no Delta table at {location} (run `kappa-compactor run` first)")]
    NotTiered {
        /// The table.
        table: String,
        /// Where it was looked for.
        location: String,
    },
}

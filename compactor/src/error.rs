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
}

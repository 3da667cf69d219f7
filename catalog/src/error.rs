//! Errors of the catalog crate.
//!
//! Each variant is a category the gateway maps to one gRPC code (see
//! `kappa_gateway::error`), so keep the categories meaningful rather than
//! mirroring every underlying library error.

use datafusion::error::DataFusionError;

/// Result alias for the catalog crate.
pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// What can go wrong while describing or reading tables.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The configuration is invalid (bad TOML, unknown format, bad column list,
    /// an unknown Kafka property).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A table definition given in SQL is invalid or refused.
    #[error("{0}")]
    Definition(String),

    /// A table of that name is already defined.
    #[error("{0}")]
    AlreadyExists(String),

    /// No table of that name is defined.
    #[error("{0}")]
    TableNotFound(String),

    /// The broker did not answer within the deadline, or refused the request.
    #[error("Kafka broker unavailable: {0}")]
    BrokerUnavailable(String),

    /// The topic does not exist on the broker.
    #[error("topic '{0}' not found")]
    TopicNotFound(String),

    /// Records of a query's snapshot were deleted (retention, DeleteRecords)
    /// while the query read them: the answer would be incomplete.
    #[error(
        "topic '{topic}': records of the query's snapshot were deleted while it read them ({detail}); run the query again for a new snapshot"
    )]
    RecordsVanished {
        /// The topic.
        topic: String,
        /// Which partitions lost which offsets.
        detail: String,
    },

    /// Kafka deleted records of a table with a lake tier before the
    /// compactor tiered them, and the query asks for some of them.
    #[error(
        "table '{table}': records were deleted from Kafka before they were tiered ({detail}); \
         the lake does not hold them, so the answer would be incomplete"
    )]
    HistoryGap {
        /// The table.
        table: String,
        /// Which partitions miss which offsets.
        detail: String,
    },

    /// A snapshot token that cannot be read, or that names a state these
    /// tables never had (offsets beyond their end, a table that is not).
    #[error("{0}")]
    InvalidSnapshot(String),

    /// What a snapshot token names is gone everywhere: Kafka deleted the
    /// records and the lake does not hold them.
    #[error("table '{table}': the snapshot cannot be read again: {detail}")]
    SnapshotLost {
        /// The table.
        table: String,
        /// What is gone.
        detail: String,
    },

    /// The schema registry could not be asked (down, slow, refused our
    /// credentials). Never a reason to return rows: the query fails.
    #[error("{0}")]
    Registry(String),

    /// The lake (a Delta table) could not be read.
    #[error("lake unavailable: {0}")]
    Lake(String),

    /// As many streaming queries run as the gateway allows.
    #[error("{0} streaming queries are running, the most this gateway allows (--max-streams)")]
    TooManyStreams(usize),

    /// A query shape a stream cannot run (it needs the whole input first).
    #[error("{0}")]
    NotStreamable(String),

    /// A position a stream had not read yet was deleted (the client fell
    /// behind retention, or DeleteRecords).
    #[error("topic '{topic}': {detail} were deleted before the stream read them")]
    StreamFellBehind {
        /// The topic.
        topic: String,
        /// Which partitions lost which offsets.
        detail: String,
    },

    /// A record kappa cannot represent (for example a header name that is not UTF-8).
    #[error("invalid record: {0}")]
    InvalidRecord(String),

    /// Any other error reported by librdkafka.
    #[error("Kafka error: {}", kafka_cause(.0))]
    Kafka(#[from] rdkafka::error::KafkaError),

    /// Arrow failed to build a batch.
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}

impl From<CatalogError> for DataFusionError {
    fn from(err: CatalogError) -> Self {
        DataFusionError::External(Box::new(err))
    }
}

/// What librdkafka says went wrong, in its own words, after what kappa was
/// doing ("fetching metadata: Broker transport failure"), without the Rust
/// names its `Display` wraps them in ("Meta data fetch error:
/// BrokerTransportFailure (Local: Broker transport failure)"): users read
/// these messages, and the enum names are internals. librdkafka's "Local:"
/// prefix goes (the client failed, which the words say); "Broker:" stays
/// (the broker refused).
pub(crate) fn kafka_cause(err: &rdkafka::error::KafkaError) -> String {
    use rdkafka::error::KafkaError as E;
    let Some(code) = err.rdkafka_error_code() else {
        return err.to_string();
    };
    // A code displays as "Name (description)".
    let shown = code.to_string();
    let description = shown
        .split_once(" (")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or(&shown);
    let description = description.strip_prefix("Local: ").unwrap_or(description);
    let doing = match err {
        E::MetadataFetch(_) => "fetching metadata",
        E::OffsetFetch(_) => "fetching offsets",
        E::MessageConsumption(_) | E::MessageConsumptionFatal(_) => "reading records",
        E::SetPartitionOffset(_) => "positioning the reader",
        _ => return description.to_string(),
    };
    format!("{doing}: {description}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};

    #[test]
    fn kafka_errors_read_in_librdkafkas_words_without_enum_names() {
        let down = KafkaError::MetadataFetch(RDKafkaErrorCode::BrokerTransportFailure);
        assert_eq!(
            kafka_cause(&down),
            "fetching metadata: Broker transport failure"
        );
        let shown = CatalogError::Kafka(down).to_string();
        assert_eq!(
            shown,
            "Kafka error: fetching metadata: Broker transport failure"
        );
        let refused = KafkaError::MessageConsumption(RDKafkaErrorCode::TopicAuthorizationFailed);
        assert_eq!(
            kafka_cause(&refused),
            "reading records: Broker: Topic authorization failed"
        );
        // Errors without a librdkafka code keep rdkafka's own words.
        assert_eq!(
            kafka_cause(&KafkaError::Canceled),
            "KafkaError (Client dropped)"
        );
    }
}

/// Declares [`ErrorKind`], one per [`CatalogError`] variant, with its name.
macro_rules! error_kinds {
    ($($kind:ident),* $(,)?) => {
        /// A [`CatalogError`]'s variant without its details: what decides its
        /// gRPC code, and what travels with its text from another gateway
        /// ([`for_another_gateway`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorKind {
            $($kind),*
        }

        impl ErrorKind {
            /// Every kind.
            pub const ALL: &[ErrorKind] = &[$(ErrorKind::$kind),*];

            /// The kind's name (its variant's).
            pub fn name(self) -> &'static str {
                match self {
                    $(ErrorKind::$kind => stringify!($kind)),*
                }
            }

            /// The kind named `name`.
            pub fn named(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|kind| kind.name() == name)
            }
        }

        impl CatalogError {
            /// This error's kind.
            pub fn kind(&self) -> ErrorKind {
                match self {
                    $(CatalogError::$kind { .. } => ErrorKind::$kind),*
                }
            }
        }
    };
}

error_kinds!(
    Config,
    Definition,
    AlreadyExists,
    TableNotFound,
    BrokerUnavailable,
    TopicNotFound,
    RecordsVanished,
    HistoryGap,
    InvalidSnapshot,
    SnapshotLost,
    Registry,
    Lake,
    TooManyStreams,
    NotStreamable,
    StreamFellBehind,
    InvalidRecord,
    Kafka,
    Arrow,
);

/// What a task's error is wrapped in when it leaves for another gateway:
/// its kind's name follows.
const KIND_CONTEXT: &str = "kappa error of kind ";

/// Marks the session of a distributed query's task (run for another
/// gateway, or in-process for this one): its scans' errors leave through
/// [`for_another_gateway`].
#[derive(Debug, Default)]
pub struct TaskForAnotherGateway;

/// `err` as it leaves a task run for another gateway. datafusion-distributed
/// sends an external error as its text alone, so a kappa error would arrive
/// as an unknown one; a context naming its kind travels with it
/// ([`kind_from_another_gateway`] reads it back).
pub fn for_another_gateway(err: DataFusionError) -> DataFusionError {
    let kind = match err.find_root() {
        DataFusionError::External(inner) => {
            inner.downcast_ref::<CatalogError>().map(CatalogError::kind)
        }
        _ => None,
    };
    match kind {
        Some(kind) => {
            DataFusionError::Context(format!("{KIND_CONTEXT}{}", kind.name()), Box::new(err))
        }
        None => err,
    }
}

/// The kind of the kappa error a task on another gateway raised, if `err`
/// is one ([`for_another_gateway`]).
pub fn kind_from_another_gateway(err: &DataFusionError) -> Option<ErrorKind> {
    let mut at: &dyn std::error::Error = err;
    loop {
        let here = at.downcast_ref::<DataFusionError>().or_else(|| {
            at.downcast_ref::<std::sync::Arc<DataFusionError>>()
                .map(AsRef::as_ref)
        });
        if let Some(DataFusionError::Context(context, _)) = here
            && let Some(kind) = context.strip_prefix(KIND_CONTEXT)
        {
            return ErrorKind::named(kind);
        }
        at = at.source()?;
    }
}

/// `stream`, its errors leaving through [`for_another_gateway`] if
/// `context` is that of a distributed query's task.
pub fn leaving_for(
    context: &datafusion::execution::TaskContext,
    stream: datafusion::execution::SendableRecordBatchStream,
) -> datafusion::execution::SendableRecordBatchStream {
    use futures::TryStreamExt;
    if context
        .session_config()
        .get_extension::<TaskForAnotherGateway>()
        .is_none()
    {
        return stream;
    }
    let schema = stream.schema();
    Box::pin(
        datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
            schema,
            stream.map_err(for_another_gateway),
        ),
    )
}

#[cfg(test)]
mod kind_tests {
    use super::*;

    #[test]
    fn a_kappa_error_from_another_gateway_keeps_its_kind_and_others_are_untouched() {
        let err = for_another_gateway(CatalogError::Lake("gone".into()).into());
        assert_eq!(kind_from_another_gateway(&err), Some(ErrorKind::Lake));
        // As it arrives: the inner error is text now, the context is not.
        let DataFusionError::Context(context, _) = err else {
            panic!("not wrapped")
        };
        let arrived = DataFusionError::Shared(std::sync::Arc::new(DataFusionError::Context(
            context,
            Box::new(DataFusionError::External("lake unavailable: gone".into())),
        )));
        assert_eq!(kind_from_another_gateway(&arrived), Some(ErrorKind::Lake));
        let plain = for_another_gateway(DataFusionError::Execution("x".into()));
        assert!(matches!(plain, DataFusionError::Execution(_)));
        assert_eq!(kind_from_another_gateway(&plain), None);
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::named(kind.name()), Some(*kind));
        }
    }
}

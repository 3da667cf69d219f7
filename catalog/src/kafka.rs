//! The broker connection: topic metadata, watermarks and scan consumers.
//!
//! Every method here blocks on the network (librdkafka is synchronous), so
//! async callers go through [`KafkaClient::run_blocking`], which moves the
//! call onto tokio's blocking pool.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::error::{CatalogError, Result};
use crate::offsets::PartitionRange;

/// How to reach the brokers and how long to wait for them.
#[derive(Clone)]
pub struct KafkaOptions {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Deadline for one metadata or offsets request.
    pub request_timeout: Duration,
    /// How long a scan waits without any progress before it fails.
    pub fetch_timeout: Duration,
    /// Extra librdkafka properties (security settings and the like).
    pub properties: Vec<(String, String)>,
}

impl std::fmt::Debug for KafkaOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let property_names: Vec<&str> = self.properties.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("KafkaOptions")
            .field("brokers", &self.brokers)
            .field("request_timeout", &self.request_timeout)
            .field("fetch_timeout", &self.fetch_timeout)
            // Names only: values may be credentials.
            .field("properties", &property_names)
            .finish()
    }
}

impl KafkaOptions {
    /// Options for `brokers` with the default timeouts.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            request_timeout: Duration::from_secs(10),
            fetch_timeout: Duration::from_secs(30),
            properties: Vec::new(),
        }
    }
}

/// A connection to the Kafka cluster for metadata, plus a factory for the
/// consumers scans use.
pub struct KafkaClient {
    options: KafkaOptions,
    /// `None` only while the client is dropped ([`Drop`] stops them together).
    metadata: Option<BaseConsumer>,
    admin: Option<AdminClient<DefaultClientContext>>,
    /// Scan consumers between queries: a query takes one (connected, its
    /// threads running) instead of paying a new client's start-up.
    idle: std::sync::Mutex<Vec<BaseConsumer>>,
    /// Records scans and streams have fetched through this client (the
    /// gateway's `kappa_kafka_records_fetched_total`).
    records_fetched: std::sync::atomic::AtomicU64,
}

/// Scan consumers kept between queries at most.
const MAX_IDLE_CONSUMERS: usize = 16;

/// Properties a scan sets itself: a user value would silently change what a
/// query returns (`isolation.level`), commit offsets on the user's groups, or
/// let a scan jump over records that vanished (`auto.offset.reset`).
const RESERVED_PROPERTIES: [&str; 6] = [
    "group.id",
    "isolation.level",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "enable.partition.eof",
];

/// Whether `name` is a legal Kafka topic name: 1 to 249 of `[a-zA-Z0-9._-]`,
/// not `.` or `..`. Anything else cannot exist, so it is not looked up.
pub fn is_legal_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl std::fmt::Debug for KafkaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `KafkaOptions`' Debug shows property names only.
        f.debug_struct("KafkaClient")
            .field("options", &self.options)
            .finish()
    }
}

impl Drop for KafkaClient {
    /// Stops the librdkafka clients this one holds (the metadata and admin
    /// clients and every idle scan consumer) at once, each on a thread of its
    /// own: librdkafka takes about 100 ms to stop a client's threads, so
    /// stopping them one after another made a `kappa-compactor run --once`
    /// of a few records spend half a second exiting.
    fn drop(&mut self) {
        let idle = std::mem::take(
            self.idle
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let (metadata, admin) = (self.metadata.take(), self.admin.take());
        std::thread::scope(|threads| {
            for consumer in idle.into_iter().chain(metadata) {
                threads.spawn(move || drop(consumer));
            }
            threads.spawn(move || drop(admin));
        });
    }
}

impl KafkaClient {
    /// Creates the metadata client. It connects lazily: a broker that is down
    /// shows up as an error on the first request, not here.
    pub fn new(options: KafkaOptions) -> Result<Arc<Self>> {
        if let Some((name, _)) = options
            .properties
            .iter()
            .find(|(name, _)| RESERVED_PROPERTIES.contains(&name.as_str()))
        {
            return Err(CatalogError::Config(format!(
                "Kafka property {name} is set by kappa's scans and cannot be overridden"
            )));
        }
        let config_error = |e: KafkaError| match e {
            KafkaError::ClientConfig(_, description, property, value) => {
                CatalogError::Config(format!("Kafka property {property}={value}: {description}"))
            }
            other => other.into(),
        };
        let metadata = base_config(&options).create().map_err(config_error)?;
        let admin = admin_config(&options).create().map_err(config_error)?;
        Ok(Arc::new(Self {
            options,
            metadata: Some(metadata),
            admin: Some(admin),
            idle: std::sync::Mutex::default(),
            records_fetched: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// The client for metadata and offset lookups.
    fn metadata(&self) -> &BaseConsumer {
        self.metadata
            .as_ref()
            .expect("the metadata client lives as long as the client")
    }

    /// Records fetched from Kafka by every scan and stream so far.
    pub fn records_fetched(&self) -> u64 {
        self.records_fetched
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Adds `records` fetched by a reader (readers add in batches, not per
    /// record, and before the batch they count reaches the query).
    pub(crate) fn count_fetched(&self, records: u64) {
        self.records_fetched
            .fetch_add(records, std::sync::atomic::Ordering::Relaxed);
    }

    /// The options this client was made with.
    pub fn options(&self) -> &KafkaOptions {
        &self.options
    }

    /// Runs a blocking client call on tokio's blocking pool.
    pub async fn run_blocking<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&KafkaClient) -> Result<T> + Send + 'static,
    {
        let client = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&client))
            .await
            .map_err(|e| CatalogError::BrokerUnavailable(format!("metadata task failed: {e}")))?
    }

    /// Names of all topics on the cluster.
    pub fn topic_names(&self) -> Result<Vec<String>> {
        let md = self
            .metadata()
            .fetch_metadata(None, self.options.request_timeout)
            .map_err(|e| self.unavailable(e))?;
        Ok(md.topics().iter().map(|t| t.name().to_string()).collect())
    }

    /// Partition ids of `topic`, sorted; [`CatalogError::TopicNotFound`] if it does not exist.
    pub fn partitions(&self, topic: &str) -> Result<Vec<i32>> {
        let md = self
            .metadata()
            .fetch_metadata(Some(topic), self.options.request_timeout)
            .map_err(|e| self.unavailable(e))?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return Err(CatalogError::TopicNotFound(topic.to_string()));
        };
        if let Some(err) = t.error() {
            let code = RDKafkaErrorCode::from(err);
            return Err(match code {
                RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
                    CatalogError::TopicNotFound(topic.to_string())
                }
                other => {
                    CatalogError::BrokerUnavailable(format!("metadata of topic '{topic}': {other}"))
                }
            });
        }
        let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Whether `topic` exists.
    pub fn topic_exists(&self, topic: &str) -> Result<bool> {
        match self.partitions(topic) {
            Ok(_) => Ok(true),
            Err(CatalogError::TopicNotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The full-scan range of every partition of `topic`: from the log start
    /// offset to the high watermark (the last stable offset, as the client
    /// reads `read_committed`). Two requests for all partitions together,
    /// whatever their number.
    pub fn snapshot_ranges(&self, topic: &str) -> Result<Vec<PartitionRange>> {
        let partitions = self.partitions(topic)?;
        let lows = self.list_offsets(topic, &partitions, Offset::Beginning)?;
        let highs = self.list_offsets(topic, &partitions, Offset::End)?;
        partitions
            .iter()
            .map(|partition| {
                let answer = |offsets: &HashMap<i32, Offset>| match offsets.get(partition) {
                    Some(Offset::Offset(o)) => Ok(*o),
                    other => Err(CatalogError::BrokerUnavailable(format!(
                        "watermarks of topic '{topic}' partition {partition}: unexpected answer {other:?}"
                    ))),
                };
                Ok(PartitionRange::from_watermarks(
                    *partition,
                    answer(&lows)?,
                    answer(&highs)?,
                ))
            })
            .collect()
    }

    /// One ListOffsets request for `partitions`: the log start (`Beginning`),
    /// the end (`End`), or the first offset at or after a time
    /// (`Offset(ms)`), as the broker answers it.
    fn list_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
        at: Offset,
    ) -> Result<HashMap<i32, Offset>> {
        let mut request = TopicPartitionList::new();
        for &partition in partitions {
            request.add_partition_offset(topic, partition, at)?;
        }
        let answer = self
            .metadata()
            .offsets_for_times(request, self.options.request_timeout)
            .map_err(|e| self.offsets_error(topic, e))?;
        let mut out = HashMap::with_capacity(partitions.len());
        for elem in answer.elements() {
            elem.error().map_err(|e| self.offsets_error(topic, e))?;
            out.insert(elem.partition(), elem.offset());
        }
        if let Some(missing) = partitions.iter().find(|p| !out.contains_key(p)) {
            return Err(CatalogError::BrokerUnavailable(format!(
                "offsets of topic '{topic}': no answer for partition {missing}"
            )));
        }
        Ok(out)
    }

    fn offsets_error(&self, topic: &str, e: KafkaError) -> CatalogError {
        match e.rdkafka_error_code() {
            // Deleted since its metadata was read.
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
                CatalogError::TopicNotFound(topic.to_string())
            }
            _ => self.unavailable(e),
        }
    }

    /// Offsets-for-times for every partition in `partitions` at once: the
    /// first offset whose timestamp is at least `timestamp_ms`, or `i64::MAX`
    /// where no record has one.
    pub fn offsets_for_time(
        &self,
        topic: &str,
        partitions: &[i32],
        timestamp_ms: i64,
    ) -> Result<HashMap<i32, i64>> {
        let answer = self.list_offsets(topic, partitions, Offset::Offset(timestamp_ms))?;
        answer
            .into_iter()
            .map(|(partition, offset)| match offset {
                Offset::Offset(o) if o >= 0 => Ok((partition, o)),
                // No record at or after the time.
                Offset::End | Offset::Offset(_) => Ok((partition, i64::MAX)),
                other => Err(CatalogError::BrokerUnavailable(format!(
                    "offsets-for-times of topic '{topic}' partition {partition}: unexpected answer {other:?}"
                ))),
            })
            .collect()
    }

    /// The log start offset of each of `partitions` now (to tell a hole in
    /// the log from records deleted under a scan).
    pub fn log_starts(&self, topic: &str, partitions: &[i32]) -> Result<HashMap<i32, i64>> {
        self.list_offsets(topic, partitions, Offset::Beginning)?
            .into_iter()
            .map(|(partition, offset)| match offset {
                Offset::Offset(o) => Ok((partition, o)),
                other => Err(CatalogError::BrokerUnavailable(format!(
                    "log start of topic '{topic}' partition {partition}: unexpected answer {other:?}"
                ))),
            })
            .collect()
    }

    /// Whether the broker stamps `topic`'s records on append
    /// (`message.timestamp.type=LogAppendTime`), so timestamps never go down
    /// in offset order. `false` if the broker does not say.
    pub async fn log_append_time(&self, topic: &str) -> bool {
        let options = AdminOptions::new().request_timeout(Some(self.options.request_timeout));
        let answer = self
            .admin
            .as_ref()
            .expect("the admin client lives as long as the client")
            .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
            .await;
        match answer.as_deref() {
            Ok([Ok(resource)]) => resource
                .get("message.timestamp.type")
                .and_then(|entry| entry.value.as_deref())
                .is_some_and(|value| value == "LogAppendTime"),
            other => {
                tracing::debug!(topic, answer = ?other.map(|r| r.len()), "no topic config; timestamps taken as CreateTime");
                false
            }
        }
    }

    /// A new consumer for one scan: explicit assignment only, no group
    /// membership, no offset commits, bounded prefetch.
    ///
    /// It comes from the idle pool if one is there; give it back with
    /// [`Self::return_scan_consumer`] after a scan that ended cleanly (a
    /// consumer that saw an error is dropped, never reused).
    pub fn scan_consumer(&self) -> Result<BaseConsumer> {
        if let Some(consumer) = self.idle.lock().expect("consumer pool poisoned").pop() {
            return Ok(consumer);
        }
        self.consumer(true)
    }

    /// Takes back a scan consumer whose scan ended cleanly: its assignment
    /// is removed (which drops what it prefetched) and its partitions
    /// resumed, so the next scan starts from its own positions only.
    pub fn return_scan_consumer(&self, consumer: BaseConsumer) {
        if let Ok(assignment) = consumer.assignment()
            && assignment.count() > 0
            && consumer.resume(&assignment).is_err()
        {
            return;
        }
        if consumer.unassign().is_err() {
            return;
        }
        let mut idle = self.idle.lock().expect("consumer pool poisoned");
        if idle.len() < MAX_IDLE_CONSUMERS {
            idle.push(consumer);
        }
    }

    /// A new consumer for one stream: as [`Self::scan_consumer`], without
    /// end-of-partition events (a stream never ends at a partition's end).
    pub fn stream_consumer(&self) -> Result<BaseConsumer> {
        self.consumer(false)
    }

    fn consumer(&self, partition_eof: bool) -> Result<BaseConsumer> {
        let mut config = base_config(&self.options);
        // Defaults the user may tune: the prefetch bound (memory per scan),
        // and how long a broker may hold a fetch. A bounded scan stops at its
        // end, so a short wait costs nothing there; a long one is paid by every
        // short query on brokers that hold fetches for the full wait (the test
        // broker does: 100 ms made a one-record read 4x slower).
        //
        // And how long a partition waits to fetch again once the prefetch
        // bound is reached. A scan that decodes is slower than its fetches,
        // so it reaches the bound; with librdkafka's 1 s default every
        // partition then sat idle for up to a second after the reader had
        // drained it (librdkafka issue 3662): JSON and Avro full scans ran
        // at a third of their speed, and varied several-fold between runs.
        for (name, value) in [
            ("queued.max.messages.kbytes", "16384"),
            ("fetch.wait.max.ms", "10"),
            ("fetch.queue.backoff.ms", "10"),
        ] {
            if !self.options.properties.iter().any(|(k, _)| k == name) {
                config.set(name, value);
            }
        }
        config
            .set(
                "enable.partition.eof",
                if partition_eof { "true" } else { "false" },
            )
            // A position outside the log is an error, never a silent jump:
            // records of the snapshot that vanished must fail the query.
            .set("auto.offset.reset", "error");
        Ok(config.create()?)
    }

    /// The timestamp (milliseconds) of the first record at or after each
    /// `(partition, offset)` of `topic`, for the partitions that have one
    /// within the request timeout. One consumer reads them all.
    pub fn timestamps_at(
        &self,
        topic: &str,
        positions: &[(i32, i64)],
    ) -> Result<HashMap<i32, i64>> {
        use rdkafka::message::Message;
        let mut out = HashMap::new();
        if positions.is_empty() {
            return Ok(out);
        }
        // A consumer of its own: one from the scan pool would leave it with
        // this topic's assignment and prefetch.
        let consumer = self.consumer(true)?;
        let mut assignment = TopicPartitionList::new();
        for &(partition, offset) in positions {
            assignment.add_partition_offset(topic, partition, Offset::Offset(offset))?;
        }
        consumer.assign(&assignment)?;
        let mut answered = std::collections::HashSet::new();
        let deadline = std::time::Instant::now() + self.options.request_timeout;
        while answered.len() < positions.len() {
            let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) else {
                break;
            };
            match consumer.poll(left.min(Duration::from_millis(100))) {
                Some(Ok(message)) => {
                    let partition = message.partition();
                    if answered.insert(partition)
                        && let Some(ms) = message.timestamp().to_millis()
                    {
                        out.insert(partition, ms);
                    }
                }
                // At the end: no record yet.
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    answered.insert(partition);
                }
                // A position no longer in the log: the rest is what is known.
                Some(Err(KafkaError::MessageConsumption(_))) => break,
                Some(Err(e)) => return Err(e.into()),
                None => {}
            }
        }
        Ok(out)
    }

    /// The error a query's caller sees names no broker: addresses are the
    /// deployment's, for its operators, so the log has them.
    fn unavailable(&self, err: KafkaError) -> CatalogError {
        let cause = crate::error::kafka_cause(&err);
        tracing::warn!(brokers = %self.options.brokers, error = %cause, "Kafka brokers did not answer");
        CatalogError::BrokerUnavailable(format!(
            "{cause} (waited up to {:?})",
            self.options.request_timeout
        ))
    }
}

/// The admin client takes the user's properties (security) but none of the
/// consumer settings.
fn admin_config(options: &KafkaOptions) -> ClientConfig {
    client_config(options, &[])
}

/// Metadata and scan consumers: explicit assignment only, no commits, no
/// topic creation, committed reads.
fn base_config(options: &KafkaOptions) -> ClientConfig {
    client_config(
        options,
        &[
            ("group.id", "kappa"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("allow.auto.create.topics", "false"),
            ("isolation.level", "read_committed"),
        ],
    )
}

/// The brokers and timeouts, `settings`, then the user's properties.
fn client_config(options: &KafkaOptions, settings: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &options.brokers)
        .set(
            "socket.connection.setup.timeout.ms",
            options.request_timeout.as_millis().to_string(),
        )
        .set("log_level", "3");
    for (k, v) in settings {
        config.set(*k, *v);
    }
    for (k, v) in &options.properties {
        config.set(k, v);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_property_values() {
        let mut options = KafkaOptions::new("127.0.0.1:9092");
        options
            .properties
            .push(("sasl.password".into(), "hunter2".into()));
        let shown = format!("{options:?}");
        assert!(shown.contains("sasl.password"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn scan_settings_cannot_be_overridden() {
        for name in ["isolation.level", "enable.auto.commit", "group.id"] {
            let mut options = KafkaOptions::new("127.0.0.1:9092");
            options.properties.push((name.into(), "x".into()));
            let err = KafkaClient::new(options).unwrap_err();
            assert!(matches!(err, CatalogError::Config(_)), "{err}");
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn illegal_topic_names_are_recognised() {
        assert!(is_legal_topic_name("orders.v1_x-2"));
        for bad in ["/etc/passwd", "", ".", "..", "a b", &"x".repeat(250)] {
            assert!(!is_legal_topic_name(bad), "{bad:?}");
        }
    }
}

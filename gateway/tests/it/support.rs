#![allow(dead_code)] // shared by the `it` and `slt` test binaries; each uses a part.
//! Test support: the real broker (started by scripts/test.sh), the real
//! gateway binary on port 0, a Flight SQL client and a Kafka producer.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use arrow_flight::{FlightDescriptor, FlightInfo};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::Status;
use tonic::transport::Channel;

/// Every wait in these tests ends by this deadline.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// What the gateway at `addr` answers the standard gRPC health check for
/// `service` (`""`: the server as a whole).
pub async fn health_status(
    addr: &str,
    service: &str,
) -> Result<tonic_health::pb::health_check_response::ServingStatus, Status> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await?;
    Ok(ServingStatus::try_from(answer.into_inner().status).expect("a known status"))
}

/// Bootstrap address of the test broker.
pub fn brokers() -> String {
    std::env::var("KAPPA_TEST_BROKERS").expect(
        "KAPPA_TEST_BROKERS is not set: run scripts/test.sh, or `scripts/broker.sh start` \
         and export the address it prints",
    )
}

/// Milliseconds since the epoch: a timestamp the broker's retention keeps.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("admin client")
}

/// Creates `name` with `partitions` partitions, keeping records forever.
pub async fn create_topic(name: &str, partitions: i32) {
    create_topic_with(name, partitions, &[]).await;
}

/// [`create_topic`] with extra topic configs (`cleanup.policy`,
/// `message.timestamp.type`…).
pub async fn create_topic_with(name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin = admin();
    let mut topic =
        NewTopic::new(name, partitions, TopicReplication::Fixed(1)).set("retention.ms", "-1");
    for (key, value) in configs {
        topic = topic.set(key, value);
    }
    let results = admin
        .create_topics(
            [&topic],
            &AdminOptions::new().operation_timeout(Some(DEADLINE)),
        )
        .await
        .expect("create_topics");
    for result in results {
        result.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

/// Deletes the records of `partition` below `before` (DeleteRecords): the
/// log start offset moves to `before`.
pub async fn delete_records(topic: &str, partition: i32, before: i64) {
    let mut offsets = rdkafka::TopicPartitionList::new();
    offsets
        .add_partition_offset(topic, partition, rdkafka::Offset::Offset(before))
        .expect("offset");
    let result = admin()
        .delete_records(
            &offsets,
            &AdminOptions::new().operation_timeout(Some(DEADLINE)),
        )
        .await
        .expect("delete_records");
    for elem in result.elements() {
        elem.error().expect("records deleted");
    }
}

/// Grows `topic` to `total` partitions; the broker's refusal is returned.
pub async fn add_partitions(topic: &str, total: usize) -> Result<(), String> {
    let results = admin()
        .create_partitions(
            [&rdkafka::admin::NewPartitions::new(topic, total)],
            &AdminOptions::new().operation_timeout(Some(DEADLINE)),
        )
        .await
        .map_err(|e| e.to_string())?;
    for result in results {
        result.map_err(|(t, e)| format!("adding partitions to {t}: {e}"))?;
    }
    Ok(())
}

/// One record to produce.
#[derive(Debug, Clone)]
pub struct TestRecord {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp_ms: i64,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl TestRecord {
    /// A record of `value` for `partition`, stamped now, with no key or headers.
    pub fn value(partition: i32, value: impl Into<Vec<u8>>) -> Self {
        Self {
            partition,
            key: None,
            value: Some(value.into()),
            timestamp_ms: now_ms(),
            headers: vec![],
        }
    }
}

/// Produces `records` in order and returns each record's offset.
pub async fn produce(topic: &str, records: &[TestRecord]) -> Vec<i64> {
    produce_with(topic, records, &[]).await
}

/// [`produce`] with extra producer properties (compression, batching).
pub async fn produce_with(
    topic: &str,
    records: &[TestRecord],
    properties: &[(&str, &str)],
) -> Vec<i64> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000");
    for (k, v) in properties {
        config.set(*k, *v);
    }
    let producer: FutureProducer = config.create().expect("producer");
    let mut pending = Vec::with_capacity(records.len());
    for r in records {
        let mut headers = OwnedHeaders::new();
        for (name, value) in &r.headers {
            headers = headers.insert(rdkafka::message::Header {
                key: name,
                value: value.as_deref(),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
            .partition(r.partition)
            .timestamp(r.timestamp_ms)
            .headers(headers);
        if let Some(key) = &r.key {
            record = record.key(key.as_slice());
        }
        if let Some(value) = &r.value {
            record = record.payload(value.as_slice());
        }
        // Enqueue everything first (order is kept per partition), then wait.
        pending.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
    }
    let mut offsets = Vec::with_capacity(records.len());
    for delivery in pending {
        let delivery = tokio::time::timeout(DEADLINE, delivery)
            .await
            .expect("delivered in time")
            .expect("delivery not cancelled")
            .map_err(|(e, _)| e)
            .expect("delivered");
        offsets.push(delivery.offset);
    }
    offsets
}

/// A running `kappa-gateway serve`, killed on drop.
pub struct Gateway {
    pub addr: String,
    /// The `--metrics-listen` address, when given.
    pub metrics_addr: Option<String>,
    _child: Child,
    _config: Option<tempfile_path::TempPath>,
}

/// A temporary file removed on drop (no extra crate for one file).
mod tempfile_path {
    #[derive(Debug)]
    pub struct TempPath(pub std::path::PathBuf);
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Runs `kappa-gateway serve` with `args` against an address nothing
/// listens on, expecting it to refuse to start: its stderr.
pub async fn refused_start(args: &[&str]) -> String {
    let output = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_kappa-gateway"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--brokers",
                "127.0.0.1:1",
            ])
            .args(args)
            .output(),
    )
    .await
    .expect("exits in time")
    .expect("runs");
    assert!(!output.status.success(), "{args:?} was accepted");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

impl Gateway {
    /// Starts the gateway binary on port 0 with `config` as its table file.
    pub async fn start(config: Option<&str>) -> Self {
        Self::start_with(config, brokers()).await
    }

    /// Starts the gateway against `brokers` (which may be down).
    pub async fn start_with(config: Option<&str>, brokers: String) -> Self {
        Self::launch(config, brokers, &[]).await
    }

    /// Starts the gateway on the test broker with extra flags.
    pub async fn start_with_args(config: Option<&str>, args: &[&str]) -> Self {
        Self::launch(config, brokers(), args).await
    }

    /// Starts the gateway against `brokers` (which may be down) with extra flags.
    pub async fn launch_with(config: Option<&str>, brokers: String, args: &[&str]) -> Self {
        Self::launch(config, brokers, args).await
    }

    async fn launch(config: Option<&str>, brokers: String, args: &[&str]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kappa-gateway"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--brokers", &brokers])
            .args(args)
            .args([
                "--kafka-request-timeout",
                "3s",
                "--kafka-fetch-timeout",
                "5s",
            ])
            .env("KAPPA_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let config = config.map(|text| {
            let path = std::env::temp_dir().join(format!("{}.toml", unique("kappa-test")));
            std::fs::write(&path, text).expect("write config");
            cmd.arg("--config").arg(&path);
            tempfile_path::TempPath(path)
        });
        let mut child = cmd.spawn().expect("spawn kappa-gateway");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let wants_metrics = args.contains(&"--metrics-listen");
        let (addr, metrics_addr) = tokio::time::timeout(DEADLINE, async {
            let mut addr = None;
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if let Some(at) = line.strip_prefix("listening on ") {
                    addr = Some(at.to_string());
                    if !wants_metrics {
                        return (addr, None);
                    }
                }
                if let Some(at) = line.strip_prefix("metrics on ") {
                    return (addr, Some(at.to_string()));
                }
            }
            panic!("kappa-gateway exited before listening");
        })
        .await
        .expect("kappa-gateway did not start in time");
        Gateway {
            addr: addr.expect("listening"),
            metrics_addr,
            _child: child,
            _config: config,
        }
    }

    /// Names of the gateway's threads that are reading Kafka right now
    /// (Linux cuts thread names to 15 bytes: `kappa-scan-…`).
    pub fn scan_threads(&self) -> Vec<String> {
        let pid = self._child.id().expect("gateway is running");
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return Vec::new();
        };
        tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|name| name.trim().to_string())
            .filter(|name| name.starts_with("kappa-scan"))
            .collect()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self._child.id().expect("gateway is running")
    }

    /// Waits for the process to exit: its exit status.
    pub async fn wait(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(DEADLINE, self._child.wait())
            .await
            .expect("exits in time")
            .expect("wait")
    }

    /// GET `path` on the metrics port: status code and body.
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self
            .metrics_addr
            .as_ref()
            .expect("started with --metrics-listen");
        let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        socket.write_all(request.as_bytes()).await.expect("send");
        let mut answer = Vec::new();
        tokio::time::timeout(DEADLINE, socket.read_to_end(&mut answer))
            .await
            .expect("answered in time")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let code = answer
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("a status line");
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (code, body)
    }

    /// A Flight SQL client connected to this gateway.
    pub async fn client(&self) -> Client {
        Self::client_for(&self.addr).await
    }

    /// A Flight SQL client connected to a gateway at `addr`.
    pub async fn client_for(addr: &str) -> Client {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        Client {
            inner: FlightServiceClient::new(channel),
        }
    }
}

/// A minimal Flight SQL client that keeps gRPC status codes visible.
pub struct Client {
    pub inner: FlightServiceClient<Channel>,
}

/// A query result: the FlightInfo schema, the stream schema, the batches.
#[derive(Debug)]
pub struct QueryResult {
    pub info_schema: Schema,
    pub stream_schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl QueryResult {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// All batches as one.
    pub fn batch(&self) -> RecordBatch {
        arrow::compute::concat_batches(&self.stream_schema, &self.batches).expect("concat")
    }
}

fn to_status(e: FlightError) -> Status {
    match e {
        FlightError::Tonic(status) => *status,
        other => Status::internal(other.to_string()),
    }
}

impl Client {
    /// GetFlightInfo for a Flight SQL command.
    pub async fn flight_info(&mut self, cmd: impl ProstMessageExt) -> Result<FlightInfo, Status> {
        let descriptor = FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec());
        Ok(self.inner.get_flight_info(descriptor).await?.into_inner())
    }

    /// DoGet of every endpoint of `info`.
    pub async fn fetch(&mut self, info: FlightInfo) -> Result<QueryResult, Status> {
        let info_schema = info.clone().try_decode_schema().expect("FlightInfo schema");
        let mut batches = Vec::new();
        let mut stream_schema = None;
        for endpoint in info.endpoint {
            let ticket = endpoint.ticket.expect("ticket");
            let flight = self.inner.do_get(ticket).await?.into_inner();
            let mut stream = FlightRecordBatchStream::new_from_flight_data(
                flight.map_err(|s| FlightError::Tonic(Box::new(s))),
            );
            while let Some(batch) = stream.next().await {
                batches.push(batch.map_err(to_status)?);
            }
            stream_schema = stream.schema().cloned();
        }
        Ok(QueryResult {
            info_schema,
            stream_schema: stream_schema.unwrap_or_else(|| Arc::new(Schema::empty())),
            batches,
        })
    }

    /// Starts `sql` and returns its DoGet stream unread (for tests that stop
    /// reading part way or act while the query runs).
    pub async fn stream(&mut self, sql: &str) -> Result<FlightRecordBatchStream, Status> {
        let info = self
            .flight_info(CommandStatementQuery {
                query: sql.to_string(),
                transaction_id: None,
            })
            .await?;
        let ticket = info.endpoint[0].ticket.clone().expect("ticket");
        let flight = self.inner.do_get(ticket).await?.into_inner();
        Ok(FlightRecordBatchStream::new_from_flight_data(
            flight.map_err(|s| FlightError::Tonic(Box::new(s))),
        ))
    }

    /// The plan `EXPLAIN [ANALYZE] …` printed, all rows' `plan` column joined.
    pub async fn explain(&mut self, sql: &str) -> String {
        let result = self.query(sql).await.expect("explain");
        let batch = result.batch();
        batch
            .column_by_name("plan")
            .expect("plan column")
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .expect("plan is a string")
            .iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs `sql` as a Flight SQL statement query.
    pub async fn query(&mut self, sql: &str) -> Result<QueryResult, Status> {
        let info = self
            .flight_info(CommandStatementQuery {
                query: sql.to_string(),
                transaction_id: None,
            })
            .await?;
        self.fetch(info).await
    }
}

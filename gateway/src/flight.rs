//! Results as Flight data: record batch streams encoded for DoGet (with the
//! query's log line), FlightInfo for statements and metadata commands, and
//! IPC schemas.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::ProstMessageExt;
use arrow_flight::{
    FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc, Ticket,
};
use bytes::Bytes;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use std::pin::Pin;
use tonic::{Request, Response, Status};

use crate::client_types::to_client_batch;
use crate::error::{datafusion_status, internal};
use crate::metrics::{GatewayMetrics, Outcome};

/// The stream DoGet answers with.
pub type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// One line per executed query when its stream ends, fails or is dropped by
/// the client (the query's id, caller, SQL, rows and bytes sent, time taken
/// and outcome), and the same numbers in the gateway's metrics. (A query
/// that does not plan is logged as rejected where it is planned.) Clones
/// share one record, written once: when the stream ends, when it fails, or
/// when the last clone is dropped (the client went away). Written before
/// the client sees the end, so metrics read after a query include it.
#[derive(Clone)]
pub(crate) struct QueryLog(Arc<Mutex<QueryRecord>>);

struct QueryRecord {
    id: String,
    user: String,
    sql: String,
    started: Instant,
    rows: u64,
    bytes: u64,
    /// Rows are sent as a result (not counted for `executemany`).
    streams_rows: bool,
    finished: bool,
    /// Written already.
    closed: bool,
    error: Option<(tonic::Code, String)>,
    /// The snapshot token of what the query read, once planned.
    snapshot: String,
    metrics: Arc<GatewayMetrics>,
}

impl QueryLog {
    pub(crate) fn new(
        id: Option<u64>,
        user: &str,
        sql: &str,
        started: Instant,
        metrics: Arc<GatewayMetrics>,
    ) -> Self {
        // A log line stays readable (and a log store within its line size)
        // whatever a client sends.
        const LOGGED_SQL_CHARS: usize = 2000;
        let sql = match sql.char_indices().nth(LOGGED_SQL_CHARS) {
            Some((cut, _)) => format!("{}… ({} bytes)", &sql[..cut], sql.len()),
            None => sql.to_string(),
        };
        // Queries without a ticket id (prepared statements) get one here,
        // so that every line has one.
        let id = format!("{:016x}", id.unwrap_or_else(rand::random));
        Self(Arc::new(Mutex::new(QueryRecord {
            id,
            user: user.to_string(),
            sql,
            started,
            rows: 0,
            bytes: 0,
            streams_rows: true,
            finished: false,
            closed: false,
            error: None,
            snapshot: String::new(),
            metrics,
        })))
    }

    fn record(&self) -> std::sync::MutexGuard<'_, QueryRecord> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Rows counted rather than sent (`executemany`'s row count).
    pub(crate) fn counting(self) -> Self {
        self.record().streams_rows = false;
        self
    }

    /// Names the snapshot the query read in its line.
    pub(crate) fn read_snapshot(&self, token: Option<String>) {
        self.record().snapshot = token.unwrap_or_default();
    }

    pub(crate) fn sent(&self, rows: usize) {
        self.record().rows += rows as u64;
    }

    fn sent_bytes(&self, bytes: usize) {
        self.record().bytes += bytes as u64;
    }

    /// The query ran to its end (a stream that is dropped before is a
    /// query the client cancelled).
    pub(crate) fn finished(&self) {
        let mut record = self.record();
        record.finished = true;
        record.close();
    }

    /// The query failed with `status`: nothing more is sent.
    pub(crate) fn failed(&self, status: &Status) {
        let mut record = self.record();
        if record.error.is_none() {
            record.error = Some((status.code(), status.message().to_string()));
        }
        record.close();
    }
}

impl Drop for QueryRecord {
    fn drop(&mut self) {
        self.close();
    }
}

impl QueryRecord {
    /// Writes the line and the metrics, once.
    fn close(&mut self) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        let took = self.started.elapsed();
        let elapsed_ms = took.as_millis() as u64;
        let outcome = match &self.error {
            Some(_) => Outcome::Error,
            None if self.finished => Outcome::Ok,
            None => Outcome::Cancelled,
        };
        let rows_sent = if self.streams_rows { self.rows } else { 0 };
        self.metrics
            .query_ended(outcome, took, rows_sent, self.bytes);
        let (id, user, sql, rows, bytes) = (&self.id, &self.user, &self.sql, self.rows, self.bytes);
        let snapshot = &self.snapshot;
        let outcome = outcome.as_str();
        match &self.error {
            None => tracing::info!(
                id,
                user,
                sql,
                rows,
                bytes,
                elapsed_ms,
                outcome,
                snapshot,
                "query done"
            ),
            Some((code, error)) => {
                let code = format!("{code:?}");
                tracing::info!(
                    id,
                    user,
                    sql,
                    rows,
                    bytes,
                    elapsed_ms,
                    outcome,
                    code,
                    error,
                    snapshot,
                    "query failed"
                )
            }
        }
    }
}

pub(crate) fn encode_stream(
    stream: SendableRecordBatchStream,
    schema: SchemaRef,
    log: QueryLog,
) -> DoGetStream {
    let target = Arc::clone(&schema);
    let rows = log.clone();
    let batches = stream.map(move |batch| match batch {
        Ok(batch) => match to_client_batch(batch, &target) {
            Ok(batch) => {
                rows.sent(batch.num_rows());
                Ok(batch)
            }
            Err(e) => {
                rows.failed(&internal(&e));
                Err(FlightError::Arrow(e))
            }
        },
        Err(e) => {
            let status = datafusion_status(&e);
            rows.failed(&status);
            Err(FlightError::Tonic(Box::new(status)))
        }
    });
    let end = log.clone();
    let flight = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(Status::from)
        .inspect_ok(move |data| log.sent_bytes(data.data_header.len() + data.data_body.len()))
        .chain(
            futures::stream::once(async move {
                // Reached only when every message before has been taken.
                end.finished();
                None
            })
            .filter_map(std::future::ready),
        );
    Box::pin(flight)
}

pub(crate) fn one_batch(batch: Result<RecordBatch, FlightError>, schema: SchemaRef) -> DoGetStream {
    let flight = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async move { batch }))
        .map_err(Status::from);
    Box::pin(flight)
}

/// A result with no rows.
pub(crate) fn empty_result(schema: SchemaRef) -> DoGetStream {
    one_batch(Ok(RecordBatch::new_empty(Arc::clone(&schema))), schema)
}

pub(crate) fn flight_info(
    schema: &Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket));
    statement_flight_info(schema, vec![endpoint], descriptor, None)
}

/// FlightInfo for a statement; its `app_metadata` names the snapshot it
/// read (`{"snapshot": "<token>"}`), when it read tables.
pub(crate) fn statement_flight_info(
    schema: &Schema,
    endpoints: Vec<FlightEndpoint>,
    descriptor: FlightDescriptor,
    snapshot: Option<&str>,
) -> Result<Response<FlightInfo>, Status> {
    let mut info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(internal)?
        .with_descriptor(descriptor);
    for endpoint in endpoints {
        info = info.with_endpoint(endpoint);
    }
    if let Some(token) = snapshot {
        // A token is `ks1.` and base64url: nothing in it needs escaping.
        info = info.with_app_metadata(format!("{{\"snapshot\":\"{token}\"}}"));
    }
    Ok(Response::new(info))
}

/// FlightInfo for a metadata command: its result schema, and the command
/// itself as the ticket (the command is all DoGet needs).
pub(crate) fn metadata_info(
    schema: &Schema,
    command: &impl ProstMessageExt,
    request: Request<FlightDescriptor>,
) -> Result<Response<FlightInfo>, Status> {
    flight_info(
        schema,
        command.as_any().encode_to_vec(),
        request.into_inner(),
    )
}

pub(crate) fn encode_schema(schema: &Schema) -> Result<Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(internal)?;
    Ok(bytes)
}

//! Results as Flight data: record batch streams encoded for DoGet (with the
//! query's log line), FlightInfo for statements and metadata commands, and
//! IPC schemas.

use std::sync::Arc;
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

/// The stream DoGet answers with.
pub type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// One line per executed query when its stream ends, fails or is dropped by
/// the client: the SQL, rows sent, time taken and, if any, the error. (A query
/// that does not plan is logged as rejected where it is planned.)
pub(crate) struct QueryLog {
    sql: String,
    started: Instant,
    rows: usize,
    error: Option<String>,
}

impl QueryLog {
    pub(crate) fn new(sql: &str, started: Instant) -> Self {
        // A log line stays readable (and a log store within its line size)
        // whatever a client sends.
        const LOGGED_SQL_CHARS: usize = 2000;
        let sql = match sql.char_indices().nth(LOGGED_SQL_CHARS) {
            Some((cut, _)) => format!("{}… ({} bytes)", &sql[..cut], sql.len()),
            None => sql.to_string(),
        };
        Self {
            sql,
            started,
            rows: 0,
            error: None,
        }
    }

    pub(crate) fn sent(&mut self, rows: usize) {
        self.rows += rows;
    }

    pub(crate) fn failed(&mut self, status: &Status) {
        self.error = Some(status.message().to_string());
    }
}

impl Drop for QueryLog {
    fn drop(&mut self) {
        let elapsed_ms = self.started.elapsed().as_millis() as u64;
        match &self.error {
            None => tracing::info!(sql = %self.sql, rows = self.rows, elapsed_ms, "query done"),
            Some(error) => {
                tracing::info!(sql = %self.sql, rows = self.rows, elapsed_ms, %error, "query failed")
            }
        }
    }
}

pub(crate) fn encode_stream(
    stream: SendableRecordBatchStream,
    schema: SchemaRef,
    mut log: QueryLog,
) -> DoGetStream {
    let target = Arc::clone(&schema);
    let batches = stream.map(move |batch| match batch {
        Ok(batch) => match to_client_batch(batch, &target) {
            Ok(batch) => {
                log.sent(batch.num_rows());
                Ok(batch)
            }
            Err(e) => {
                log.failed(&internal(&e));
                Err(FlightError::Arrow(e))
            }
        },
        Err(e) => {
            let status = datafusion_status(&e);
            log.failed(&status);
            Err(FlightError::Tonic(Box::new(status)))
        }
    });
    let flight = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(Status::from);
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
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(internal)?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor);
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

//! The Flight SQL service: the Flight SQL calls here, statements in
//! [`statements`].
//!
//! Handles are stateless: a ticket or prepared-statement handle carries the
//! SQL text itself and any bound parameters ([`crate::prepared`]), so any
//! gateway can serve any DoGet and a restart loses nothing but running
//! streams. (Clients that execute the handle they prepared after DoPut,
//! instead of the one DoPut returned, find their parameters in
//! [`crate::bindings`], on the gateway that took the DoPut.) A query is
//! planned again on DoGet, and that plan fixes each partition's end offset
//! (the snapshot).

use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetCrossReference,
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, CancelFlightInfoRequest, FlightDescriptor, FlightInfo, HandshakeRequest,
    HandshakeResponse, Ticket,
};
use bytes::Bytes;
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use futures::Stream;
use kappa_catalog::KafkaSchema;
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Authenticator, Identity, TokenSigner};
use crate::bindings::{BindingOwner, Bindings};
use crate::cancel::{QueryTicket, RunningQueries};
use crate::distributed::progress::PROGRESS_ACTION;
use crate::distributed::{Cluster, ProgressKey, TaskProgress};
use crate::drain::Drain;
use crate::error::{internal, invalid_request, param_status};
use crate::executor::QueryExecutor;
use crate::flight::{empty_result, encode_schema, metadata_info};
use crate::keys::{foreign_keys_schema, primary_keys_schema};
use crate::limits::Limits;
use crate::metrics::GatewayMetrics;
use crate::plan_cache::PlanCache;
use crate::prepared::PreparedHandle;
use crate::settings::Settings;

mod ddl;
mod get_schema;
mod metadata;
mod poll;
mod retry;
mod runs;
mod slices;
mod sql_info;
mod statements;

use sql_info::SqlInfoAnswers;
use statements::Planned;

pub use get_schema::KappaFlightService;

type DoGetStream = <KappaFlightSqlService as FlightService>::DoGetStream;

/// kappa's Flight SQL service over the `kafka` catalog.
#[derive(Debug, Clone)]
pub struct KappaFlightSqlService {
    schema: Arc<KafkaSchema>,
    /// Shared by every query: one memory pool for the gateway, so the sum of
    /// what queries hold stays under `--memory-limit` (sorts and joins spill
    /// to disk; what cannot spill fails with ResourceExhausted).
    runtime: Arc<RuntimeEnv>,
    /// The queries running now, to cancel by the id in their ticket.
    running: Arc<RunningQueries>,
    /// Who may connect; issues the handshake's bearer tokens.
    auth: Arc<Authenticator>,
    /// Plans GetFlightInfo made, waiting for their DoGet.
    plans: Arc<PlanCache<Planned>>,
    /// Parameters bound to prepared statements, for clients that execute
    /// the handle they prepared rather than the one DoPut returned.
    bindings: Arc<Bindings>,
    /// Queries at once, their time and SQL size.
    limits: Limits,
    /// GetSqlInfo's answers, built from the limits at the first request.
    sql_info: Arc<OnceLock<SqlInfoAnswers>>,
    /// The gateway's metrics.
    metrics: Arc<GatewayMetrics>,
    /// Queries and streams in flight, and whether new ones are taken.
    drain: Arc<Drain>,
    /// Where queries execute.
    executor: QueryExecutor,
    /// The gateways a large query runs across, if this one is in a cluster.
    cluster: Option<Arc<Cluster>>,
    /// Statements PollFlightInfo started.
    polls: Arc<poll::Polls>,
}

impl KappaFlightSqlService {
    /// A service answering queries over `schema`, its queries holding at
    /// most `memory_limit` bytes together.
    pub fn new(schema: Arc<KafkaSchema>, memory_limit: usize) -> Self {
        let pool = TrackConsumersPool::new(
            FairSpillPool::new(memory_limit),
            NonZeroUsize::new(5).expect("non-zero"),
        );
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(pool))
            .build_arc()
            .expect("the default runtime builds");
        let metrics = Arc::new(GatewayMetrics::new());
        let drain = Drain::new(crate::drain::DEFAULT_GRACE, &metrics);
        Self {
            metrics,
            drain,
            schema,
            runtime,
            running: Arc::default(),
            plans: Arc::default(),
            bindings: Arc::default(),
            sql_info: Arc::default(),
            limits: Limits::default(),
            executor: QueryExecutor::on_caller(),
            cluster: None,
            polls: Arc::default(),
            auth: Arc::new(Authenticator::anonymous(TokenSigner::new(
                None,
                std::time::Duration::from_secs(3600),
            ))),
        }
    }

    /// The same service, with sign-in checked by `auth` (whose interceptor
    /// must wrap the service: it hands each call its caller's identity).
    pub fn with_auth(mut self, auth: Arc<Authenticator>) -> Self {
        self.auth = auth;
        self
    }

    /// The same service counting into `metrics`, shut down by `drain`
    /// (which must count into the same metrics).
    pub fn with_metrics(mut self, metrics: Arc<GatewayMetrics>, drain: Arc<Drain>) -> Self {
        self.metrics = metrics;
        self.drain = drain;
        self
    }

    /// The same service, running large queries across `cluster`.
    pub fn with_cluster(mut self, cluster: Arc<Cluster>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// The runtime queries run in: its memory pool and disk manager.
    pub fn runtime(&self) -> &Arc<RuntimeEnv> {
        &self.runtime
    }

    /// The same service executing queries on `executor`.
    pub fn with_executor(mut self, executor: QueryExecutor) -> Self {
        self.executor = executor;
        self
    }

    /// The same service under `limits`.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.sql_info = Arc::default();
        self.limits = limits;
        self
    }

    /// GetSqlInfo's answers, which tell the SQL size limit.
    fn sql_info_answers(&self) -> &SqlInfoAnswers {
        self.sql_info
            .get_or_init(|| SqlInfoAnswers::new(self.limits.max_sql_bytes()))
    }

    /// The statement of a prepared handle. One that carries no parameters
    /// takes those last bound to it, if kept (a client that executes the
    /// handle it prepared after DoPut); one that carries them shows its
    /// client uses DoPut's handle, so the kept binding is dropped.
    fn prepared(&self, handle: &[u8], settings: &Settings) -> Result<PreparedHandle, Status> {
        let (id, statement) = handle_of(handle)?;
        let Some(id) = id else {
            return Ok(statement);
        };
        let owner = BindingOwner::new(&settings.caller, &statement.sql);
        if statement.params.is_some() {
            self.bindings.remove(id, &owner);
            return Ok(statement);
        }
        Ok(match self.bindings.get(id, &owner) {
            Some(params) => statement.bind(params),
            None => statement,
        })
    }
}

/// A prepared statement's id (absent from handles older gateways gave out)
/// and the statement its handle carries.
fn handle_of(handle: &[u8]) -> Result<(Option<u64>, PreparedHandle), Status> {
    QueryTicket::decode(handle).map_err(|e| param_status(&e))
}

#[tonic::async_trait]
impl FlightSqlService for KappaFlightSqlService {
    type FlightService = KappaFlightSqlService;

    /// Anonymous access: every client is accepted (authentication is a later
    /// feature), and the handshake returns no token.
    /// Sign-in: the interceptor has checked the call's credentials (Basic
    /// or Bearer); the answer carries a bearer token for the calls after.
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let identity = request
            .extensions()
            .get::<Identity>()
            .cloned()
            .ok_or_else(|| internal("the call reached the service without an identity"))?;
        let token = self.auth.issue_token(&identity);
        let response = HandshakeResponse {
            protocol_version: 0,
            payload: Bytes::from(token.clone()),
        };
        let mut response = Response::new(Box::pin(futures::stream::once(async { Ok(response) }))
            as Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>);
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| internal("a token is not a valid header"))?;
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.statement_info(PreparedHandle::unbound(query.query), request, true)
            .await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let settings = Settings::of_request(&request)?;
        let statement = self.prepared(&query.prepared_statement_handle, &settings)?;
        self.statement_info(statement, request, true).await
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: arrow_flight::sql::Any,
    ) -> Result<Response<DoGetStream>, Status> {
        let settings = Settings::of_request(&request)?;
        match self.polls.fetch(&message, &settings) {
            Some(fetched) => fetched,
            None => Err(Status::invalid_argument(format!(
                "a DoGet ticket of an unknown kind ({})",
                message.type_url
            ))),
        }
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let settings = Settings::of_request(&request)?;
        let (statement, id, planned) = self.ticket_plan(&ticket.statement_handle, &settings)?;
        let settings = match planned {
            Some(_) => settings,
            None => Self::replaying_ticket(&ticket.statement_handle, settings),
        };
        self.execute(&statement, &settings, id, planned).await
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let settings = Settings::of_request(&request)?;
        let statement = self.prepared(&query.prepared_statement_handle, &settings)?;
        self.execute(&statement, &settings, None, None).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let settings = Settings::of_request(&request)?;
        let (schema, parameters) = if self.definition(&query.query, &settings)?.is_some() {
            // Checked now, run when executed: no columns, no parameters.
            let none = arrow::datatypes::Schema::empty();
            (Arc::new(none.clone()), none)
        } else {
            let (df, schema) = self.plan(&query.query, &settings).await?;
            // Placeholders whose type the plan does not fix are `Null` here:
            // any value binds to them.
            (schema, statements::placeholders(&df)?.schema())
        };
        // The id lets a binding be found by this handle (see `bindings`).
        let handle = QueryTicket::new(PreparedHandle::unbound(query.query))
            .encode()
            .map_err(|e| param_status(&e))?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: Bytes::from(handle),
            dataset_schema: encode_schema(&schema)?,
            parameter_schema: encode_schema(&parameters)?,
        })
    }

    /// Binds parameters: the answer is a new handle carrying them, which the
    /// client uses from then on. They are also kept under the statement's id
    /// for clients that go on executing the handle they prepared.
    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let settings = Settings::of_request(&request)?;
        let (id, statement) = handle_of(&query.prepared_statement_handle)?;
        let owner = BindingOwner::new(&settings.caller, &statement.sql);
        // A binding that fails leaves none kept: executing the prepared
        // handle then fails, rather than running with the values before.
        if let Some(id) = id {
            self.bindings.remove(id, &owner);
        }
        let bound = self
            .bind(statement, &settings, request.into_inner())
            .await?;
        let handle = match id {
            Some(id) => {
                if let Some(params) = &bound.params {
                    self.bindings.put(id, owner, params.clone());
                }
                QueryTicket {
                    id,
                    statement: bound,
                    snapshot: None,
                    slice: None,
                }
                .encode()
            }
            None => bound.encode(),
        }
        .map_err(|e| param_status(&e))?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(Bytes::from(handle)),
        })
    }

    /// kappa is read-only, so an "update" is a query run for its row count:
    /// what ADBC's `executemany` sends. The query runs once per parameter
    /// row and the answer is the number of rows all runs return.
    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let settings = Settings::of_request(&request)?;
        let (_, statement) = handle_of(&query.prepared_statement_handle)?;
        let bound = self
            .bind(statement, &settings, request.into_inner())
            .await?;
        self.count_rows(&bound, &settings).await
    }

    /// An update with no result set (ADBC's `execute_update`): the DDL
    /// kappa takes, `CREATE EXTERNAL TABLE` and `DROP TABLE`, which change
    /// no rows. Anything else is a query, not an update.
    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let settings = Settings::of_request(&request)?;
        let ctx = self.session(&settings)?;
        match self.definition(&command.query, &settings)? {
            Some(definition) => {
                self.run_definition(&ctx, definition, &settings).await?;
                Ok(0)
            }
            None => Err(invalid_request(
                "kappa takes CREATE EXTERNAL TABLE … STORED AS KAFKA and DROP TABLE as updates; run queries as queries",
            )),
        }
    }

    /// Forgets the binding kept for the statement, if any: handles hold
    /// everything else.
    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        if let (Some(id), statement) = handle_of(&query.prepared_statement_handle)? {
            let owner = BindingOwner::new(&Settings::of_request(&request)?.caller, &statement.sql);
            self.bindings.remove(id, &owner);
        }
        Ok(())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(&query.into_builder().schema(), &query, request)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Ok(self.catalogs(query))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(&query.clone().into_builder().schema(), &query, request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let grants = Settings::of_request(&request)?.grants;
        Ok(self.db_schemas(query, &grants))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(&query.clone().into_builder().schema(), &query, request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.tables(query, request).await
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(&query.into_builder().schema(), &query, request)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Ok(self.table_types(query))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata::sql_info_flight_info(query, self.sql_info_answers(), request)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Ok(self.sql_info(query))
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(&primary_keys_schema(), &query, request)
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Ok(Response::new(empty_result(primary_keys_schema())))
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(&foreign_keys_schema(), &query, request)
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Ok(Response::new(empty_result(foreign_keys_schema())))
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(&foreign_keys_schema(), &query, request)
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Ok(Response::new(empty_result(foreign_keys_schema())))
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(&foreign_keys_schema(), &query, request)
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Ok(Response::new(empty_result(foreign_keys_schema())))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata::xdbc_type_info_flight_info(query, request)
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Ok(self.xdbc_type_info(query))
    }

    /// `CancelFlightInfo` and the session-option actions, which
    /// arrow-flight leaves to this fallback.
    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let action = request.into_inner();
        if matches!(
            action.r#type.as_str(),
            metadata::GET_SESSION_OPTIONS | metadata::SET_SESSION_OPTIONS | metadata::CLOSE_SESSION
        ) {
            let body = arrow_flight::Result {
                body: metadata::session_action(&action)?.into(),
            };
            return Ok(Response::new(Box::pin(futures::stream::once(async {
                Ok(body)
            }))));
        }
        if action.r#type == PROGRESS_ACTION {
            // Another gateway coordinating a query asks what its tasks here
            // have read (see crate::distributed::progress).
            let key = ProgressKey::from_bytes(&action.body)
                .ok_or_else(|| invalid_request("kappa.progress takes a query's key (8 bytes)"))?;
            let answer = match &self.cluster {
                Some(cluster) => cluster.task_progress().answer(key),
                None => TaskProgress::default().answer(key),
            };
            let body = arrow_flight::Result {
                body: answer.into(),
            };
            return Ok(Response::new(Box::pin(futures::stream::once(async {
                Ok(body)
            }))));
        }
        if action.r#type != "CancelFlightInfo" {
            return Err(invalid_request(format!(
                "unknown action '{}'",
                action.r#type
            )));
        }
        let cancel = CancelFlightInfoRequest::decode(action.body)
            .map_err(|e| invalid_request(format!("CancelFlightInfo: {e}")))?;
        let info = cancel
            .info
            .ok_or_else(|| invalid_request("CancelFlightInfo without a FlightInfo"))?;
        let result = self.cancel(&info)?;
        let body = arrow_flight::Result {
            body: result.encode_to_vec().into(),
        };
        Ok(Response::new(Box::pin(futures::stream::once(async {
            Ok(body)
        }))))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

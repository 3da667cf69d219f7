//! Planning and running statements: the session each query gets, planning
//! with the gateway's read-only rules, binding parameters (see
//! [`crate::prepared`]), FlightInfo and DoGet for statements, and cancelling
//! them by the id in their ticket.

use std::sync::Arc;
use std::time::Instant;

use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{ProstMessageExt, TicketStatementQuery};
use arrow_flight::{
    CancelFlightInfoResult, CancelStatus, FlightDescriptor, FlightEndpoint, FlightInfo, Ticket,
};
use bytes::Bytes;
use datafusion::catalog::information_schema::INFORMATION_SCHEMA;
use datafusion::catalog::{CatalogProvider, TableFunctionImpl};
use datafusion::common::tree_node::TreeNode;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::MemoryLimit;
use datafusion::execution::{SendableRecordBatchStream, SessionStateBuilder, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{EmptyRecordBatchStream, ExecutionPlan};
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use futures::{StreamExt, TryStreamExt};
use kappa_catalog::changelog::{LATEST, LatestFunction};
use kappa_catalog::plan::LastRecordsRule;
use kappa_catalog::snapshot::{
    SNAPSHOT, SnapshotFunction, SnapshotRecorder, SnapshotToken, reads_snapshot_tables,
    session_token,
};
use kappa_catalog::tail::{TAIL, TailFunction, check_streaming};
use kappa_catalog::{CATALOG, KafkaCatalog, KappaOptions, SCHEMA};
use prost::Message;
use tonic::{Request, Response, Status};

use super::retry;
pub(crate) use super::runs::Planned;
use super::runs::Runs;
use super::slices::check_sliced;
use super::{DoGetStream, KappaFlightSqlService};
use crate::auth::{GrantedCatalog, GrantedTail};
use crate::cancel::QueryTicket;
use crate::client_types::client_schema;
use crate::distributed::{Cluster, TaskRoutes};
use crate::error::{
    catalog_status, datafusion_status, invalid_request, limit_status, param_status, unquoted_name,
};
use crate::executor::QueryExecutor;
use crate::flight::{QueryLog, encode_stream, statement_flight_info};
use crate::guarded_functions::{StopOption, guard_functions};
use crate::plan_cache::PlanKey;
use crate::prepared::{Placeholders, PreparedHandle, number_placeholders, runs_schema};
use crate::settings::Settings;
use crate::stop::{QueryStop, StopOnDrop, stoppable};

impl KappaFlightSqlService {
    /// A fresh session: `kafka.default` as the default catalog and schema,
    /// strings as `Utf8`, read-only SQL, the JSON functions (over text and
    /// bytes: [`crate::json`]) and the client's `kappa.*` settings.
    pub(super) fn session(&self, settings: &Settings) -> Result<SessionContext, Status> {
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(true)
            .with_option_extension(KappaOptions::default())
            // Each scan records the snapshot it reads here.
            .with_extension(Arc::new(SnapshotRecorder::default()));
        if let Some(slice) = settings.slice {
            // Each scan reads its share of the token the session replays.
            config = config.with_extension(Arc::new(slice));
        }
        let options = config.options_mut();
        options.sql_parser.map_string_types_to_utf8view = false;
        options.execution.parquet.schema_force_view_types = false;
        crate::spill::seal_each_spilled_batch(options);
        for (name, value) in &settings.values {
            options
                .set(name, value)
                .map_err(|e| invalid_request(format!("setting {name}={value}: {e}")))?;
        }
        if let Some(cluster) = &self.cluster {
            // The tasks this query runs on other gateways carry its caller.
            cluster
                .carry_caller(&mut config, self.auth.on_behalf_of(&settings.caller))
                .map_err(|e| datafusion_status(&e))?;
        }
        if let Some(token) = settings.values.iter().find(|(n, _)| n == SNAPSHOT_SETTING) {
            token
                .1
                .parse::<SnapshotToken>()
                .map_err(|e| catalog_status(&e))?;
        }
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(Arc::clone(&self.runtime))
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(LastRecordsRule))
            .build();
        crate::json::register(&mut state).map_err(|e| datafusion_status(&e))?;
        let max_bytes = match self.runtime.memory_pool.memory_limit() {
            MemoryLimit::Finite(bytes) => bytes,
            _ => usize::MAX,
        };
        guard_functions(&mut state, max_bytes).map_err(|e| datafusion_status(&e))?;
        let ctx = SessionContext::new_with_state(state);
        let catalog: Arc<dyn CatalogProvider> =
            Arc::new(KafkaCatalog::new(Arc::clone(&self.schema)));
        let tail: Arc<dyn TableFunctionImpl> =
            Arc::new(TailFunction::new(Arc::clone(self.schema.context())));
        // `snapshot(…)` resolves its tables through the session's catalog,
        // so the caller's grants apply to it as to `FROM`.
        ctx.register_udtf(SNAPSHOT, Arc::new(SnapshotFunction));
        let latest: Arc<dyn TableFunctionImpl> =
            Arc::new(LatestFunction::new(Arc::clone(self.schema.context())));
        if settings.grants.is_all() {
            ctx.register_catalog(CATALOG, catalog);
            ctx.register_udtf(TAIL, tail);
            ctx.register_udtf(LATEST, latest);
        } else {
            // The caller sees, lists and streams only what they were granted.
            let grants = settings.grants.clone();
            ctx.register_catalog(
                CATALOG,
                Arc::new(GrantedCatalog::new(catalog, grants.clone())),
            );
            ctx.register_udtf(TAIL, Arc::new(GrantedTail::new(tail, grants.clone())));
            ctx.register_udtf(LATEST, Arc::new(GrantedTail::new(latest, grants)));
        }
        Ok(ctx)
    }

    /// Logs and counts a statement that does not plan (or bind) and passes
    /// its status on.
    fn rejected(&self, sql: &str, status: Status) -> Status {
        self.metrics.query_rejected();
        tracing::info!(sql, error = status.message(), "query rejected");
        status
    }

    /// Refuses a new query once the gateway is shutting down.
    fn admit(&self) -> Result<(), Status> {
        self.drain.admit().map_err(|e| limit_status(&e))
    }

    /// Plans `sql` (a read-only query, its placeholders unbound) and returns
    /// it with its client schema.
    pub(super) async fn plan(
        &self,
        sql: &str,
        settings: &Settings,
    ) -> Result<(DataFrame, SchemaRef), Status> {
        self.limits
            .check_sql(sql)
            .map_err(|e| self.rejected(sql, limit_status(&e)))?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let ctx = self.session(settings)?;
        if let Some(definition) = self
            .definition(sql, settings)
            .map_err(|status| self.rejected(sql, status))?
        {
            let done = self
                .run_definition(&ctx, definition, settings)
                .await
                .map_err(|status| self.rejected(sql, status))?;
            let schema = client_schema(done.schema().as_arrow());
            return Ok((done, schema));
        }
        self.check_replayed_tables(&ctx)
            .await
            .map_err(|status| self.rejected(sql, status))?;
        let numbered =
            number_placeholders(sql).map_err(|e| self.rejected(sql, param_status(&e)))?;
        let df = match ctx.sql_with_options(&numbered, options).await {
            Ok(df) => df,
            Err(e) => return Err(self.rejected(sql, planning_status(&ctx, &numbered, &e).await)),
        };
        if lists_tables(df.logical_plan()) {
            // `information_schema` (and SHOW TABLES over it) lists from the
            // topic cache: with a broker that is down, an empty list would
            // look complete, so it fails as a query would.
            self.schema
                .context()
                .refresh_if_stale()
                .await
                .map_err(|e| self.rejected(sql, catalog_status(&e)))?;
        }
        let streaming = check_streaming(df.logical_plan())
            .map_err(|e| self.rejected(sql, catalog_status(&e)))?;
        let df = if streaming {
            // A stream's batches stay in one ordered flow: spreading them
            // round-robin over partitions would reorder each partition's
            // records.
            let (mut state, plan) = df.into_parts();
            state
                .config_mut()
                .options_mut()
                .optimizer
                .enable_round_robin_repartition = false;
            DataFrame::new(state, plan)
        } else {
            df
        };
        let schema = client_schema(df.schema().as_arrow());
        Ok((df, schema))
    }

    /// Refuses a snapshot token (`kappa.snapshot`) that names a table the
    /// caller cannot read now: a replay of a state of tables that are gone
    /// would not be that state.
    async fn check_replayed_tables(&self, ctx: &SessionContext) -> Result<(), Status> {
        let state = ctx.state();
        let Some(token) = session_token(&state).map_err(|e| catalog_status(&e))? else {
            return Ok(());
        };
        let Some(schema) = ctx.catalog(CATALOG).and_then(|c| c.schema(SCHEMA)) else {
            return Ok(());
        };
        for (table, _) in token.tables() {
            if schema
                .table(table)
                .await
                .map_err(|e| datafusion_status(&e))?
                .is_none()
            {
                return Err(invalid_request(format!(
                    "the snapshot token names table '{table}', which does not exist"
                )));
            }
        }
        Ok(())
    }

    /// The snapshot token of what `runs` read, taken by planning the first
    /// run now (kept in `runs` for its DoGet, which then reads the same), or
    /// `None` for a statement that reads no table or streams.
    async fn take_snapshot(&self, runs: &mut Runs) -> Result<Option<String>, Status> {
        let plan = runs.template.logical_plan();
        if !reads_snapshot_tables(plan) || check_streaming(plan).unwrap_or(true) {
            return Ok(None);
        }
        let Some(first) = runs.first() else {
            return Ok(None);
        };
        let first = first.map_err(|e| datafusion_status(&e))?;
        let stop = QueryStop::new();
        let (plan, task, records) = plan_stoppable(first, &stop, self.cluster.as_deref())
            .await
            .map_err(|e| datafusion_status(&e))?;
        runs.first_planned = Some(((plan, task), stop));
        runs.first_records = records;
        Ok(recorded_snapshot(&runs.template))
    }

    /// Plans `statement` once: its runs (one per parameter row, one in all
    /// for a statement without parameters) and the schema of their results
    /// concatenated.
    pub(super) async fn plan_bound(
        &self,
        statement: &PreparedHandle,
        settings: &Settings,
    ) -> Result<(Runs, SchemaRef), Status> {
        let sql = statement.sql.as_str();
        let (template, schema) = self.plan(sql, settings).await?;
        let rows = placeholders(&template)?
            .bind(statement.params.as_ref())
            .map_err(|e| self.rejected(sql, param_status(&e)))?;
        let Some(rows) = rows else {
            return Ok((Runs::once(template), schema));
        };
        // The first run, bound now, gives the schema (an untyped
        // placeholder's column takes its value's type).
        let schema = match rows.first() {
            Some(first) => {
                let first = template
                    .clone()
                    .with_param_values(first.clone())
                    .map_err(|e| self.rejected(sql, datafusion_status(&e)))?;
                runs_schema(client_schema(first.schema().as_arrow()), rows.len())
            }
            None => schema,
        };
        Ok((Runs::bound(template, rows), schema))
    }

    /// `statement` with the parameters a DoPut streams bound to it, checked
    /// against its placeholders so a wrong count or type fails at binding.
    pub(super) async fn bind(
        &self,
        statement: PreparedHandle,
        settings: &Settings,
        stream: PeekableFlightDataStream,
    ) -> Result<PreparedHandle, Status> {
        let mut batches =
            FlightRecordBatchStream::new_from_flight_data(stream.map_err(FlightError::from));
        let mut received = Vec::new();
        while let Some(batch) = batches.next().await {
            received.push(batch.map_err(parameter_stream_status)?);
        }
        let schema = batches
            .schema()
            .cloned()
            .ok_or_else(|| invalid_request("DoPut without a parameter schema"))?;
        let params = concat_batches(&schema, &received).map_err(|e| {
            invalid_request(format!(
                "the bound parameter batches do not concatenate: {e}"
            ))
        })?;
        let statement = statement.bind(params);
        self.plan_bound(&statement, settings).await?;
        Ok(statement)
    }

    /// FlightInfo for `statement`: its schema and one endpoint whose ticket
    /// carries the statement and a query id, or, for a large answer across
    /// a cluster, one endpoint per slice of it ([`Self::slice_endpoints`]).
    /// `in_slices: false` keeps one endpoint (a poll fetches the whole
    /// answer where it runs).
    pub(super) async fn statement_info(
        &self,
        statement: PreparedHandle,
        request: Request<FlightDescriptor>,
        in_slices: bool,
    ) -> Result<Response<FlightInfo>, Status> {
        self.admit()?;
        let settings = Settings::of_request(&request)?;
        let descriptor = request.into_inner();
        let mut planned = self.plan_bound(&statement, &settings).await?;
        let schema = Arc::clone(&planned.1);
        let snapshot = self
            .take_snapshot(&mut planned.0)
            .await
            .map_err(|status| self.rejected(&statement.sql, status))?;
        // A token the caller replays names its own state: its answer
        // stays whole.
        let replays = settings.values.iter().any(|(n, _)| n == SNAPSHOT_SETTING);
        if in_slices
            && !replays
            && let Some(endpoints) = self.slice_endpoints(&statement, &planned.0, &snapshot)?
        {
            // Each slice's DoGet plans the statement again at the snapshot,
            // wherever it is fetched: the plan made here is not kept.
            return statement_flight_info(&schema, endpoints, descriptor, snapshot.as_deref());
        }
        let query = QueryTicket::new(statement).with_snapshot(snapshot.clone());
        let ticket = query.encode().map_err(|e| param_status(&e))?;
        // Kept for this ticket's DoGet, which then does not plan it again.
        self.plans
            .put(query.id, plan_key(&ticket, &settings), planned);
        let ticket = TicketStatementQuery {
            statement_handle: Bytes::from(ticket),
        };
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
        statement_flight_info(&schema, vec![endpoint], descriptor, snapshot.as_deref())
    }

    /// The statement of a DoGet ticket, and its plan if GetFlightInfo left
    /// it here for this very ticket and caller.
    pub(super) fn ticket_plan(
        &self,
        ticket: &[u8],
        settings: &Settings,
    ) -> Result<(PreparedHandle, Option<u64>, Option<Planned>), Status> {
        let (id, statement) = QueryTicket::decode(ticket).map_err(|e| param_status(&e))?;
        let planned = id.and_then(|id| self.plans.take(id, &plan_key(ticket, settings)));
        Ok((statement, id, planned))
    }

    /// `settings` replaying the snapshot `ticket` was planned with, unless
    /// the call names one itself: a DoGet that plans the statement again
    /// (the plan expired, or another gateway made it) reads what
    /// GetFlightInfo's plan read.
    pub(super) fn replaying_ticket(ticket: &[u8], mut settings: Settings) -> Settings {
        let named = settings.values.iter().any(|(n, _)| n == SNAPSHOT_SETTING);
        if !named && let Some(token) = QueryTicket::snapshot(ticket) {
            settings.values.push((SNAPSHOT_SETTING.to_string(), token));
        }
        // A slice's ticket reads its slice, whichever token is replayed.
        settings.slice = QueryTicket::slice(ticket);
        settings
    }

    /// Runs `statement` (with its plan, if already made) and streams its
    /// batches as Flight data: once per parameter row, results in row order.
    pub(super) async fn execute(
        &self,
        statement: &PreparedHandle,
        settings: &Settings,
        id: Option<u64>,
        planned: Option<Planned>,
    ) -> Result<Response<DoGetStream>, Status> {
        let started = Instant::now();
        self.admit()?;
        let (mut runs, schema) = match planned {
            Some(planned) => planned,
            None => self.plan_bound(statement, settings).await?,
        };
        // A slice runs here: its gateway is one of those the answer is
        // spread over already.
        let cluster = match settings.slice {
            Some(slice) => {
                check_sliced(slice, &runs)?;
                None
            }
            None => self.cluster.clone(),
        };
        let log = QueryLog::new(
            id,
            &settings.caller,
            &statement.sql,
            started,
            Arc::clone(&self.metrics),
        );
        // A query takes a slot for as long as its stream lives; a stream
        // (`tail`) runs under --max-streams instead, as it never ends.
        let streaming = check_streaming(runs.template.logical_plan()).unwrap_or(false);
        let slot = if streaming {
            None
        } else {
            Some(self.limits.admit().await.map_err(|e| {
                let status = limit_status(&e);
                log.failed(&status);
                status
            })?)
        };
        // Every operator stops at its next batch once the query is
        // cancelled, its client goes away or its time is up. A first run
        // GetFlightInfo planned was planned under its own stop.
        let first_planned = runs.first_planned.take();
        let stop = match &first_planned {
            Some((_, stop)) => Arc::clone(stop),
            None => QueryStop::new(),
        };
        let stream: SendableRecordBatchStream = match runs.next() {
            None => Box::pin(EmptyRecordBatchStream::new(Arc::clone(&schema))),
            Some(first) => {
                // Across a cluster, a run that fails before its first batch
                // (a gateway left or came back as it started) runs once more,
                // planned again on the gateways that answer.
                let again = match (&first, &cluster) {
                    (Ok(df), Some(cluster)) => Some(retry::Again {
                        df: df.clone(),
                        stop: Arc::clone(&stop),
                        executor: self.executor.clone(),
                        cluster: Arc::clone(cluster),
                    }),
                    _ => None,
                };
                let first = match (first, first_planned) {
                    (Ok(_), Some(((plan, task), _))) => {
                        stoppable(plan, &stop).and_then(|plan| self.executor.execute(plan, task))
                    }
                    (Ok(first), None) => {
                        execute_stoppable(first, &stop, &self.executor, cluster.as_deref()).await
                    }
                    (Err(e), _) => Err(e),
                };
                let first = match again {
                    Some(again) => first.map(|stream| again.if_it_fails_at_once(stream)),
                    None => first,
                };
                let first = first.map_err(|e| {
                    let status = datafusion_status(&e);
                    log.failed(&status);
                    status
                })?;
                log.read_snapshot(recorded_snapshot(&runs.template));
                if runs.len() == 0 {
                    first
                } else {
                    // A later run is bound and starts when the one before
                    // has ended.
                    let each = Arc::clone(&stop);
                    let executor = self.executor.clone();
                    let cluster = cluster.clone();
                    let rest = futures::stream::iter(runs)
                        .then(move |run| {
                            let stop = Arc::clone(&each);
                            let executor = executor.clone();
                            let cluster = cluster.clone();
                            async move {
                                execute_stoppable(run?, &stop, &executor, cluster.as_deref()).await
                            }
                        })
                        .try_flatten();
                    Box::pin(RecordBatchStreamAdapter::new(
                        Arc::clone(&schema),
                        first.chain(rest),
                    ))
                }
            }
        };
        let stream: SendableRecordBatchStream =
            Box::pin(StopOnDrop::new(stream, Arc::clone(&stop)));
        let stream = match slot {
            Some(slot) => self.limits.bound(stream, slot, &stop),
            None => stream,
        };
        // Counted while it runs; ended when the gateway shuts down.
        let stream = self.drain.track(stream, streaming);
        let encoded = encode_stream(stream, schema, log);
        Ok(Response::new(match id {
            Some(id) => Box::pin(self.running.track(id, encoded)),
            None => encoded,
        }))
    }

    /// Runs `statement` once per parameter row and counts the rows the runs
    /// return: `executemany` on a query (DB-API's rowcount).
    pub(super) async fn count_rows(
        &self,
        statement: &PreparedHandle,
        settings: &Settings,
    ) -> Result<i64, Status> {
        let started = Instant::now();
        self.admit()?;
        let (runs, _) = self.plan_bound(statement, settings).await?;
        let log = QueryLog::new(
            None,
            &settings.caller,
            &statement.sql,
            started,
            Arc::clone(&self.metrics),
        )
        .counting();
        let mut total = 0;
        for run in runs {
            let rows = match run {
                Ok(run) => run.count().await,
                Err(e) => Err(e),
            };
            let rows = rows.map_err(|e| {
                let status = datafusion_status(&e);
                log.failed(&status);
                status
            })?;
            log.sent(rows);
            total += rows;
        }
        log.finished();
        Ok(total as i64)
    }

    /// Cancels the queries whose tickets `info` lists.
    pub(super) fn cancel(&self, info: &FlightInfo) -> Result<CancelFlightInfoResult, Status> {
        let mut cancelled = false;
        for endpoint in &info.endpoint {
            let Some(ticket) = &endpoint.ticket else {
                continue;
            };
            let Ok(any) = arrow_flight::sql::Any::decode(ticket.ticket.clone()) else {
                continue;
            };
            let Ok(Some(statement)) = any.unpack::<TicketStatementQuery>() else {
                continue;
            };
            if let (Some(id), _) =
                QueryTicket::decode(&statement.statement_handle).map_err(|e| param_status(&e))?
            {
                cancelled |= self.running.cancel(id);
            }
        }
        if !cancelled {
            return Err(Status::not_found(
                "no such query is running on this gateway (finished, or another gateway runs it)",
            ));
        }
        Ok(CancelFlightInfoResult {
            status: CancelStatus::Cancelled as i32,
        })
    }
}

/// The placeholders of a planned statement.
pub(super) fn placeholders(df: &DataFrame) -> Result<Placeholders, Status> {
    let types = df
        .logical_plan()
        .get_parameter_types()
        .map_err(|e| datafusion_status(&e))?;
    Placeholders::new(types).map_err(|e| param_status(&e))
}

/// Executes `df` on `executor` (across `cluster` when it is worth it) with
/// each operator under `stop` (see [`crate::stop`]).
pub(super) async fn execute_stoppable(
    df: DataFrame,
    stop: &Arc<QueryStop>,
    executor: &QueryExecutor,
    cluster: Option<&Cluster>,
) -> datafusion::error::Result<SendableRecordBatchStream> {
    let (plan, task, _) = plan_stoppable(df, stop, cluster).await?;
    executor.execute(stoppable(plan, stop)?, task)
}

/// The physical plan of `df`, its functions planned under `stop`, the
/// task context to run it in, and the records it reads (counted only with
/// a `cluster`): planned again across `cluster` when the plan is large
/// enough and can travel ([`Cluster::distributable`]).
async fn plan_stoppable(
    df: DataFrame,
    stop: &Arc<QueryStop>,
    cluster: Option<&Cluster>,
) -> datafusion::error::Result<(Arc<dyn ExecutionPlan>, Arc<TaskContext>, i64)> {
    // The functions planned now see the stop (see crate::guarded_functions).
    let (mut state, plan) = df.into_parts();
    state
        .config_mut()
        .options_mut()
        .extensions
        .insert(StopOption(Some(Arc::clone(stop))));
    // Physical expressions take their options from the execution props,
    // stamped when the statement was planned: stamp them again.
    let options = Arc::clone(state.config().options());
    state.execution_props_mut().config_options = Some(options);
    let df = DataFrame::new(state.clone(), plan.clone());
    let task = Arc::new(df.task_ctx());
    let local = df.create_physical_plan().await?;
    if let (Some(cluster), LogicalPlan::Explain(explain)) = (cluster, &plan) {
        let shown = cluster.explain(&state, explain, &local).await?;
        return Ok((shown.unwrap_or(local), task, 0));
    }
    let records = cluster.map_or(0, |c| c.records(&local));
    let Some(cluster) = cluster.filter(|c| c.distributable(&local)) else {
        return Ok((local, task, records));
    };
    // The table providers keep the snapshot they pinned for `local`: the
    // distributed plan reads the same offsets and lake version.
    let df = DataFrame::new(cluster.distribute(state)?, plan);
    let task = Arc::new(df.task_ctx());
    let routes = task.session_config().get_extension::<TaskRoutes>();
    Ok((
        cluster.guard(df.create_physical_plan().await?, routes),
        task,
        records,
    ))
}

/// The snapshot token of what the runs of `template` have read so far.
fn recorded_snapshot(template: &DataFrame) -> Option<String> {
    let token = template
        .task_ctx()
        .session_config()
        .get_extension::<SnapshotRecorder>()?
        .token();
    (!token.is_empty()).then(|| token.to_string())
}

/// Whether `plan` reads `information_schema`, whose tables list the topics.
fn lists_tables(plan: &LogicalPlan) -> bool {
    plan.exists(|node| {
        Ok(matches!(node, LogicalPlan::TableScan(scan)
            if scan.table_name.schema() == Some(INFORMATION_SCHEMA)))
    })
    .unwrap_or(false)
}

/// The status for a statement `sql` that did not plan, with a hint to quote
/// a topic's name the statement left unquoted (`payments.avro`,
/// `checkout-events`) when that topic is a table the caller may read.
async fn planning_status(ctx: &SessionContext, sql: &str, err: &DataFusionError) -> Status {
    let status = datafusion_status(err);
    let Some(unquoted) = unquoted_name(sql, err) else {
        return status;
    };
    let Some(schema) = ctx.catalog(CATALOG).and_then(|c| c.schema(SCHEMA)) else {
        return status;
    };
    match schema.table(unquoted.name()).await {
        Ok(Some(_)) => unquoted.hint(&status),
        _ => status,
    }
}

/// A parameter stream that does not decode is the client's error; a failed
/// transport keeps its own status.
fn parameter_stream_status(err: FlightError) -> Status {
    match err {
        FlightError::Tonic(status) => *status,
        other => invalid_request(format!("the bound parameters do not decode: {other}")),
    }
}

/// The setting that replays a snapshot token.
const SNAPSHOT_SETTING: &str = "kappa.snapshot";

/// What a plan kept for a ticket depends on.
fn plan_key(ticket: &[u8], settings: &Settings) -> PlanKey {
    PlanKey {
        ticket: ticket.to_vec(),
        settings: settings.values.clone(),
        grants: settings.grants.clone(),
    }
}

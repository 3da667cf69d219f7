//! Planning and running statements: the session each query gets, planning
//! with the gateway's read-only rules, FlightInfo and DoGet for statements,
//! and cancelling them by the id in their ticket.

use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::SchemaRef;
use arrow_flight::sql::{ProstMessageExt, TicketStatementQuery};
use arrow_flight::{CancelFlightInfoResult, CancelStatus, FlightDescriptor, FlightInfo};
use bytes::Bytes;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use kappa_catalog::plan::LastRecordsRule;
use kappa_catalog::tail::{TAIL, TailFunction, check_streaming};
use kappa_catalog::{CATALOG, KafkaCatalog, KappaOptions, SCHEMA};
use prost::Message;
use tonic::{Request, Response, Status};

use super::{DoGetStream, KappaFlightSqlService};
use crate::cancel::QueryTicket;
use crate::client_types::client_schema;
use crate::error::{catalog_status, datafusion_status, invalid_request};
use crate::flight::{QueryLog, encode_stream, flight_info};
use crate::settings::Settings;

impl KappaFlightSqlService {
    /// A fresh session: `kafka.default` as the default catalog and schema,
    /// strings as `Utf8`, read-only SQL, and the client's `kappa.*` settings.
    pub(super) fn session(&self, settings: &Settings) -> Result<SessionContext, Status> {
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(true)
            .with_option_extension(KappaOptions::default());
        let options = config.options_mut();
        options.sql_parser.map_string_types_to_utf8view = false;
        options.execution.parquet.schema_force_view_types = false;
        for (name, value) in &settings.0 {
            options
                .set(name, value)
                .map_err(|e| invalid_request(format!("setting {name}={value}: {e}")))?;
        }
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(Arc::clone(&self.runtime))
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(LastRecordsRule))
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.register_catalog(
            CATALOG,
            Arc::new(KafkaCatalog::new(Arc::clone(&self.schema))),
        );
        ctx.register_udtf(TAIL, Arc::new(TailFunction::new(Arc::clone(&self.schema))));
        Ok(ctx)
    }

    /// Plans `sql` (a read-only query) and returns it with its client schema.
    pub(super) async fn plan(
        &self,
        sql: &str,
        settings: &Settings,
    ) -> Result<(DataFrame, SchemaRef), Status> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = self
            .session(settings)?
            .sql_with_options(sql, options)
            .await
            .map_err(|e| {
                let status = datafusion_status(&e);
                tracing::info!(sql, error = status.message(), "query rejected");
                status
            })?;
        let streaming = check_streaming(df.logical_plan()).map_err(|e| {
            let status = catalog_status(&e);
            tracing::info!(sql, error = status.message(), "query rejected");
            status
        })?;
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

    /// FlightInfo for `sql`: its schema and one endpoint whose ticket carries the SQL.
    pub(super) async fn statement_info(
        &self,
        sql: String,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let settings = Settings::of(request.metadata())?;
        let descriptor = request.into_inner();
        let (_, schema) = self.plan(&sql, &settings).await?;
        let ticket = TicketStatementQuery {
            statement_handle: Bytes::from(QueryTicket::new(sql).encode()),
        };
        flight_info(&schema, ticket.as_any().encode_to_vec(), descriptor)
    }

    /// Runs `sql` and streams its batches as Flight data.
    pub(super) async fn execute(
        &self,
        sql: &str,
        settings: &Settings,
        id: Option<u64>,
    ) -> Result<Response<DoGetStream>, Status> {
        let started = Instant::now();
        let (df, schema) = self.plan(sql, settings).await?;
        let mut log = QueryLog::new(sql, started);
        let stream = df.execute_stream().await.map_err(|e| {
            let status = datafusion_status(&e);
            log.failed(&status);
            status
        })?;
        let encoded = encode_stream(stream, schema, log);
        Ok(Response::new(match id {
            Some(id) => Box::pin(self.running.track(id, encoded)),
            None => encoded,
        }))
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
            if let (Some(id), _) = QueryTicket::decode(&statement.statement_handle)? {
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

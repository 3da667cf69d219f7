//! GetSchema, which arrow-flight's Flight SQL server answers with "not yet
//! implemented" and offers no hook for: a thin [`FlightService`] in front of
//! [`KappaFlightSqlService`] answers it and passes every other call through.
//!
//! A statement's schema comes from planning it, nothing runs; a prepared
//! statement's is its result schema with the parameters bound so far (with
//! none bound yet, the one CreatePreparedStatement gave, where an untyped
//! placeholder's column is `Null`). Any other command's schema is the one
//! its GetFlightInfo reports.

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::{Any, Command};
use arrow_flight::{
    Action, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, PollInfo,
    SchemaResult, Ticket,
};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use super::KappaFlightSqlService;
use crate::flight::encode_schema;
use crate::settings::Settings;

/// kappa's Flight service: Flight SQL plus GetSchema.
#[derive(Debug, Clone)]
pub struct KappaFlightService(KappaFlightSqlService);

impl KappaFlightService {
    /// `service` with GetSchema answered.
    pub fn new(service: KappaFlightSqlService) -> Self {
        Self(service)
    }
}

type Inner = KappaFlightSqlService;

#[tonic::async_trait]
impl FlightService for KappaFlightService {
    type HandshakeStream = <Inner as FlightService>::HandshakeStream;
    type ListFlightsStream = <Inner as FlightService>::ListFlightsStream;
    type DoGetStream = <Inner as FlightService>::DoGetStream;
    type DoPutStream = <Inner as FlightService>::DoPutStream;
    type DoExchangeStream = <Inner as FlightService>::DoExchangeStream;
    type DoActionStream = <Inner as FlightService>::DoActionStream;
    type ListActionsStream = <Inner as FlightService>::ListActionsStream;

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let command = Any::decode(request.get_ref().cmd.clone())
            .ok()
            .and_then(|any| Command::try_from(any).ok());
        let settings = Settings::of_request(&request)?;
        let schema = match command {
            Some(Command::CommandStatementQuery(query)) => {
                self.0.plan(&query.query, &settings).await?.1
            }
            Some(Command::CommandPreparedStatementQuery(query)) => {
                // With the parameters kept for it, as GetFlightInfo takes them.
                let statement = self
                    .0
                    .prepared(&query.prepared_statement_handle, &settings)?;
                if statement.params.is_some() {
                    self.0.plan_bound(&statement, &settings).await?.1
                } else {
                    self.0.plan(&statement.sql, &settings).await?.1
                }
            }
            _ => {
                let info = FlightService::get_flight_info(&self.0, request)
                    .await?
                    .into_inner();
                return Ok(Response::new(SchemaResult {
                    schema: info.schema,
                }));
            }
        };
        Ok(Response::new(SchemaResult {
            schema: encode_schema(&schema)?,
        }))
    }

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        FlightService::handshake(&self.0, request).await
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        FlightService::list_flights(&self.0, request).await
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        FlightService::get_flight_info(&self.0, request).await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        self.0.poll_statement(request).await
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        FlightService::do_get(&self.0, request).await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        FlightService::do_put(&self.0, request).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        FlightService::do_exchange(&self.0, request).await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        FlightService::do_action(&self.0, request).await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        FlightService::list_actions(&self.0, request).await
    }
}

//! kappa's gateway: Arrow Flight SQL over the `kafka` catalog.
//!
//! [`service`] implements Flight SQL on top of DataFusion and the catalog,
//! [`error`] is the single mapping of errors to gRPC codes, and
//! [`client_types`] keeps every schema a client sees free of view types.

pub mod client_types;
pub mod config;
pub mod error;
pub mod keys;
pub mod service;

use std::future::Future;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use kappa_catalog::KafkaSchema;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

pub use service::KappaFlightSqlService;

/// Serves Flight SQL over `schema` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    schema: Arc<KafkaSchema>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let service = FlightServiceServer::new(KappaFlightSqlService::new(schema))
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}

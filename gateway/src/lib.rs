//! kappa's gateway: Arrow Flight SQL over the `kafka` catalog.
//!
//! [`service`] implements Flight SQL on top of DataFusion and the catalog,
//! [`error`] is the single mapping of errors to gRPC codes, and
//! [`client_types`] keeps every schema a client sees free of view types,
//! and [`prepared`] carries statements and their bound parameters in handles.

pub mod cancel;
pub mod client_types;
pub mod config;
pub mod error;
pub mod flight;
pub mod keys;
pub mod prepared;
pub mod service;
pub mod settings;
pub mod type_info;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use kappa_catalog::KafkaSchema;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

pub use service::{KappaFlightService, KappaFlightSqlService};

/// Keeps the topic list fresh in the background, so SQL that lists tables
/// (`information_schema`, `SHOW TABLES`) sees new topics without waiting for
/// a Flight SQL metadata call to refresh it.
fn spawn_topic_refresher(schema: Arc<KafkaSchema>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(schema.refresh_interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            ticker.tick().await;
            match schema.refresh().await {
                Ok(()) if failing => {
                    tracing::info!("topic list refreshed again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "cannot refresh the topic list");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    })
}

/// Serves Flight SQL over `schema` on `listener` until `shutdown` resolves,
/// its queries holding at most `memory_limit` bytes together.
pub async fn serve(
    listener: TcpListener,
    schema: Arc<KafkaSchema>,
    memory_limit: usize,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let refresher = spawn_topic_refresher(Arc::clone(&schema));
    let service = FlightServiceServer::new(KappaFlightService::new(KappaFlightSqlService::new(
        schema,
        memory_limit,
    )))
    .max_decoding_message_size(64 * 1024 * 1024)
    .max_encoding_message_size(64 * 1024 * 1024);
    // Every accepted socket gets TCP_NODELAY: without it each small
    // response waits on the client's delayed ACK (about 40 ms a round trip).
    // HTTP/2 pings keep idle connections (and long streams) alive through
    // proxies and NAT.
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)));
    let served = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    refresher.abort();
    served
}

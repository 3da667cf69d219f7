//! Readiness: whether this gateway should be sent queries.
//!
//! One state, said in two places: the standard gRPC health service
//! (`grpc.health.v1.Health`) on the Flight port, which Kubernetes' `grpc:`
//! probe and `kappa-gateway healthcheck` ask, and `/readyz` on the metrics
//! port. The health service is served beside the Flight service, outside
//! sign-in: a probe carries no credentials.
//!
//! A gateway is ready once the topic list has been read from the brokers
//! (and its lake has been listed), and stops being ready the moment it
//! starts shutting down. A gateway that has not yet reached its brokers
//! would fail every query, so a load balancer should not send it any; one
//! that reached them once and loses them later stays ready, since the
//! queries' own errors say `Unavailable` and a restart would not help.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow_flight::flight_service_server::FlightServiceServer;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
pub use tonic_health::pb::health_check_response::ServingStatus as CheckedStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::{HealthReporter, health_reporter};

use crate::client_tls::ClientTls;
use crate::service::KappaFlightService;

/// The name clients give the Flight service in a health check; the empty
/// name means the whole server, and both answer the same.
pub const FLIGHT_SERVICE: &str = <FlightServiceServer<KappaFlightService> as NamedService>::NAME;

/// Whether the gateway is ready, and the health service that says so.
#[derive(Debug)]
pub struct Readiness {
    topics_listed: AtomicBool,
    lake_reached: AtomicBool,
    shutting_down: AtomicBool,
    reporter: HealthReporter,
}

impl Readiness {
    /// A gateway not ready yet, and the gRPC health service reporting it.
    pub async fn new() -> (Arc<Self>, HealthServer<impl Health>) {
        let (reporter, service) = health_reporter();
        let readiness = Arc::new(Self {
            topics_listed: AtomicBool::new(false),
            lake_reached: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            reporter,
        });
        // The reporter starts the whole server as SERVING: say otherwise
        // before the first call can ask.
        readiness.publish().await;
        (readiness, service)
    }

    /// Whether queries should be sent here now.
    pub fn is_ready(&self) -> bool {
        self.topics_listed.load(Ordering::Acquire)
            && self.lake_reached.load(Ordering::Acquire)
            && !self.shutting_down.load(Ordering::Acquire)
    }

    /// Whether the lake has been listed once.
    pub fn lake_reached(&self) -> bool {
        self.lake_reached.load(Ordering::Acquire)
    }

    /// The topic list was read from the brokers.
    pub async fn set_topics_listed(&self) {
        if !self.topics_listed.swap(true, Ordering::AcqRel) {
            self.publish().await;
        }
    }

    /// The lake was listed (or the gateway has none).
    pub async fn set_lake_reached(&self) {
        if !self.lake_reached.swap(true, Ordering::AcqRel) {
            self.publish().await;
        }
    }

    /// The gateway is shutting down: not ready from now on.
    pub async fn set_shutting_down(&self) {
        if !self.shutting_down.swap(true, Ordering::AcqRel) {
            self.publish().await;
        }
    }

    async fn publish(&self) {
        let status = if self.is_ready() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in ["", FLIGHT_SERVICE] {
            self.reporter.set_service_status(name, status).await;
        }
    }
}

/// Why `kappa-gateway healthcheck` got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The address is not one.
    #[error("{0} is not an address (host:port, or http://… / https://…)")]
    Address(String),
    /// No connection, or TLS failed.
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    /// The health call failed.
    #[error("health check of {0}: {1}")]
    Call(String, String),
}

/// Asks the health service at `address` how `service` is (`""`: the whole
/// gateway), within `timeout`, reaching an `https://` gateway with `tls`.
pub async fn probe(
    address: &str,
    service: &str,
    tls: &ClientTls,
    timeout: std::time::Duration,
) -> Result<CheckedStatus, ProbeError> {
    use tonic::transport::Endpoint;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let url = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|_| ProbeError::Address(address.to_string()))?
        .connect_timeout(timeout)
        .timeout(timeout);
    if url.starts_with("https://") {
        endpoint = endpoint
            .tls_config(tls.config(&url))
            .map_err(|e| ProbeError::Connect(address.to_string(), e.to_string()))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| ProbeError::Connect(address.to_string(), root_cause(&e)))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .map_err(|status| ProbeError::Call(address.to_string(), status.message().to_string()))?;
    Ok(CheckedStatus::try_from(response.into_inner().status).unwrap_or(CheckedStatus::Unknown))
}

/// The innermost cause of `error`, which says what went wrong ("Connection
/// refused") where tonic's own message says only "transport error".
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_after_topics_and_lake_until_shutdown() {
        let (readiness, _service) = Readiness::new().await;
        assert!(!readiness.is_ready());
        readiness.set_topics_listed().await;
        assert!(!readiness.is_ready(), "the lake is not listed yet");
        readiness.set_lake_reached().await;
        assert!(readiness.is_ready());
        readiness.set_shutting_down().await;
        assert!(!readiness.is_ready());
    }
}

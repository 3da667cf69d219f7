//! kappa's gateway: Arrow Flight SQL over the `kafka` catalog.
//!
//! [`service`] implements Flight SQL on top of DataFusion and the catalog,
//! [`error`] is the single mapping of errors to gRPC codes, and
//! [`client_types`] keeps every schema a client sees free of view types,
//! and [`prepared`] carries statements and their bound parameters in handles
//! ([`bindings`] remembers them for clients that execute the handle they
//! prepared rather than the one DoPut returned).

pub mod auth;
pub mod bindings;
pub mod cancel;
pub mod client_tls;
pub mod client_types;
pub mod config;
pub mod distributed;
pub mod drain;
pub mod error;
pub mod executor;
pub mod flight;
pub mod guarded_functions;
pub mod health;
pub mod json;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod plan_cache;
pub mod prepared;
pub mod service;
pub mod settings;
pub mod spill;
pub mod stop;
pub mod type_info;
pub mod wrapped;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use datafusion_distributed::{Worker, WorkerQueryContext};
use kappa_catalog::KafkaSchema;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::ServerTlsConfig;
use tonic::transport::server::TcpIncoming;

use auth::{Authenticator, TokenSigner};
use drain::Drain;
use health::Readiness;
use limits::Limits;
use metrics::{GatewayExposition, GatewayMetrics};

pub use service::{KappaFlightService, KappaFlightSqlService};

/// How long the readiness check of the lake (a listing of its root) may take.
const LAKE_CHECK: Duration = Duration::from_secs(10);

/// Keeps the topic list fresh in the background, so SQL that lists tables
/// (`information_schema`, `SHOW TABLES`) sees new topics without waiting for
/// a Flight SQL metadata call to refresh it. Its first successes make the
/// gateway ready: the topic list read, and the lake listed.
fn spawn_topic_refresher(
    schema: Arc<KafkaSchema>,
    readiness: Arc<Readiness>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(schema.context().refresh_interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        let mut lake_failing = false;
        loop {
            ticker.tick().await;
            match schema.context().refresh().await {
                Ok(()) => {
                    if failing {
                        tracing::info!("topic list refreshed again");
                        failing = false;
                    }
                    readiness.set_topics_listed().await;
                }
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "cannot refresh the topic list");
                    failing = true;
                }
                Err(_) => {}
            }
            if !readiness.lake_reached() {
                match schema.context().lake() {
                    None => readiness.set_lake_reached().await,
                    // Bounded, so that an object store that retries for
                    // minutes does not hold up the topic refreshes.
                    Some(lake) => match tokio::time::timeout(LAKE_CHECK, lake.survey()).await {
                        Ok(Ok(_)) => readiness.set_lake_reached().await,
                        failed if !lake_failing => {
                            let error = match failed {
                                Ok(Err(e)) => e.to_string(),
                                _ => format!("no answer within {LAKE_CHECK:?}"),
                            };
                            tracing::warn!(%error, "the lake cannot be listed: not ready");
                            lake_failing = true;
                        }
                        _ => {}
                    },
                }
            }
        }
    })
}

/// How the gateway serves: memory, who may connect, TLS.
#[derive(Debug)]
pub struct ServeOptions {
    /// Memory all queries may hold together.
    pub memory_limit: usize,
    /// Checks every call's credentials.
    pub auth: Arc<Authenticator>,
    /// TLS (and client certificates), or plain TCP.
    pub tls: Option<ServerTlsConfig>,
    /// Queries at once, their time and SQL size.
    pub limits: Limits,
    /// How long running queries may take to finish once shutdown begins.
    pub shutdown_grace: Duration,
    /// Where to serve `/metrics`, `/healthz` and `/readyz`, if anywhere.
    pub metrics_listener: Option<TcpListener>,
    /// Where queries execute (a runtime apart from the one serving calls).
    pub executor: executor::QueryExecutor,
    /// The gateways a query may run across, if this one is in a cluster.
    pub cluster: Option<ClusterOptions>,
}

/// This gateway's part in a cluster (see [`distributed`]).
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The other gateways (this one may be listed too).
    pub workers: Vec<url::Url>,
    /// This gateway's address as the others reach it.
    pub self_url: url::Url,
    /// Kafka offsets each task of a query reads at least.
    pub offsets_per_task: i64,
    /// Lake rows each task of a query reads at least.
    pub lake_rows_per_task: i64,
    /// A DNS name (`name:port`) whose addresses are gateways of the cluster.
    pub workers_dns: Option<String>,
    /// How the other gateways are reached when they serve TLS.
    pub tls: client_tls::ClientTls,
}

/// Serves Flight SQL over `schema` on `listener` until `shutdown` resolves,
/// its queries holding at most `memory_limit` bytes together; anyone may
/// connect, without TLS.
pub async fn serve(
    listener: TcpListener,
    schema: Arc<KafkaSchema>,
    memory_limit: usize,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let auth = Authenticator::anonymous(TokenSigner::new(None, Duration::from_secs(3600)));
    let options = ServeOptions {
        memory_limit,
        auth: Arc::new(auth),
        tls: None,
        limits: Limits::default(),
        shutdown_grace: drain::DEFAULT_GRACE,
        metrics_listener: None,
        executor: executor::QueryExecutor::on_caller(),
        cluster: None,
    };
    serve_with(listener, schema, options, shutdown).await
}

/// Serves Flight SQL over `schema` on `listener` until `shutdown` resolves,
/// then shuts down cleanly (see [`drain`]) and returns.
pub async fn serve_with(
    listener: TcpListener,
    schema: Arc<KafkaSchema>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (readiness, health) = Readiness::new().await;
    let refresher = spawn_topic_refresher(Arc::clone(&schema), Arc::clone(&readiness));
    let metrics = Arc::new(GatewayMetrics::new());
    let drain = Drain::new(options.shutdown_grace, &metrics);
    let metrics_server = options.metrics_listener.map(|listener| {
        let exposition = GatewayExposition {
            metrics: Arc::clone(&metrics),
            schema: Arc::clone(&schema),
            readiness: Arc::clone(&readiness),
        };
        kappa_ops::spawn(listener, Arc::new(exposition))
    });
    let client = Arc::clone(schema.context().client());
    let lake = schema.context().lake().cloned();
    let mut sql = KappaFlightSqlService::new(schema, options.memory_limit)
        .with_auth(Arc::clone(&options.auth))
        .with_limits(options.limits)
        .with_executor(options.executor)
        .with_metrics(metrics, Arc::clone(&drain));
    let cluster = match options.cluster {
        Some(cluster) => {
            let codec = distributed::KappaCodec::new(client, lake);
            let worker_codec = codec.clone();
            let channels = distributed::GatewayChannels::new().with_tls(cluster.tls.clone());
            let worker_channels = channels.clone();
            let max_bytes = options.memory_limit;
            let progress = distributed::TaskProgress::default();
            let worker_progress = progress.clone();
            let worker = Worker::from_session_builder(move |ctx: WorkerQueryContext| {
                distributed::worker_session(
                    ctx,
                    worker_codec.clone(),
                    worker_channels.clone(),
                    worker_progress.clone(),
                    max_bytes,
                )
            })
            .with_runtime_env(Arc::clone(sql.runtime()));
            let mut members = distributed::Cluster::new(
                cluster.self_url,
                cluster.workers,
                worker,
                codec,
                channels,
            )
            .with_task_size(distributed::TaskSize::new(
                cluster.offsets_per_task,
                cluster.lake_rows_per_task,
            ))
            .with_progress(progress)
            .with_tls(cluster.tls);
            if let Some(name) = cluster.workers_dns {
                members = members.with_dns(name);
            }
            let cluster = Arc::new(members);
            tracing::info!(members = ?cluster.members().iter().map(url::Url::as_str).collect::<Vec<_>>(), "in a cluster: large queries run across these gateways");
            cluster.spawn_checks();
            sql = sql.with_cluster(Arc::clone(&cluster));
            Some(cluster)
        }
        None => None,
    };
    // The other gateways' calls to this one's worker, counted so that
    // leaving the cluster waits for their tasks.
    let worker_calls = cluster.as_ref().map(|_| distributed::WorkerCalls::new());
    let grace = options.shutdown_grace;
    // The server stops taking connections only once the queries in flight
    // have finished or been stopped, and the tasks run here for other
    // gateways have ended.
    let (drained, closing) = tokio::sync::oneshot::channel::<()>();
    let settling = worker_calls.clone();
    let shutdown = async move {
        shutdown.await;
        tracing::info!("shutting down: not ready, no new queries");
        readiness.set_shutting_down().await;
        let started = tokio::time::Instant::now();
        drain.shut_down().await;
        if let Some(calls) = settling {
            calls.settle(grace.saturating_sub(started.elapsed())).await;
        }
        let _ = drained.send(());
    };
    let service = FlightServiceServer::new(KappaFlightService::new(sql))
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    // Every call is authenticated before it reaches the service.
    let worker_auth = Arc::clone(&options.auth);
    let service = InterceptedService::new(service, auth::interceptor(options.auth));
    // Every accepted socket gets TCP_NODELAY: without it each small
    // response waits on the client's delayed ACK (about 40 ms a round trip).
    // HTTP/2 pings keep idle connections (and long streams) alive through
    // proxies and NAT.
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)));
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = options.tls {
        server = server.tls_config(tls)?;
    }
    let serving = server
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(service)
        // The other gateways' calls: the tasks of the queries they coordinate.
        .add_optional_service(cluster.zip(worker_calls).map(|(c, calls)| {
            // Checked as every Flight call is: the coordinator sends its caller.
            calls.count(InterceptedService::new(
                c.worker().clone().into_worker_server(),
                auth::interceptor(Arc::clone(&worker_auth)),
            ))
        }))
        // Outside the authentication interceptor: probes carry no
        // credentials.
        .add_service(health)
        .serve_with_incoming_shutdown(incoming, shutdown);
    // A client that stopped reading keeps its connection (and the server's
    // graceful stop) waiting: once drained, connections get a few seconds
    // to close, then the process goes on without them.
    let served = tokio::select! {
        served = serving => served,
        () = async {
            if closing.await.is_ok() {
                tokio::time::sleep(Duration::from_secs(5)).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!("connections still open after shutdown: closed");
            Ok(())
        }
    };
    refresher.abort();
    if let Some(server) = metrics_server {
        server.abort();
    }
    served
}

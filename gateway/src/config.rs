//! Command-line flags; each has a `KAPPA_…` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
pub use kappa_catalog::cli::{
    KafkaArgs, LakeArgs, LogArgs, LogFormat, MetricsArgs, RegistryArgs, byte_size, key_value,
    positive_duration,
};

/// kappa's Flight SQL gateway: SQL over Kafka topics and their lake tables.
#[derive(Debug, Parser)]
#[command(name = "kappa-gateway", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve Arrow Flight SQL.
    Serve(Box<ServeArgs>),
    /// Read a password on standard input and print its argon2id hash, for
    /// `password_hash` in the users file.
    HashPassword,
    /// Turn Trino Kafka table-description files into `CREATE EXTERNAL
    /// TABLE` statements: printed, and with `--apply` stored on the lake.
    ImportTrino(ImportTrinoArgs),
    /// Ask a gateway's gRPC health service whether it is ready: exit 0 when
    /// it answers SERVING, 1 otherwise (for container health checks, in an
    /// image with no curl).
    Healthcheck(HealthcheckArgs),
}

/// Flags of `kappa-gateway healthcheck`.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The gateway's Flight address: `host:port`, or a URL (`http://…`,
    /// `https://…` for TLS).
    #[arg(
        long,
        env = "KAPPA_HEALTHCHECK_ADDRESS",
        default_value = "127.0.0.1:50051"
    )]
    pub address: String,

    /// The service to ask about (`""`, the default, is the whole gateway).
    #[arg(long, default_value = "")]
    pub service: String,

    /// PEM file of the CA that signed the gateway's certificate (with
    /// `https://`; the system's roots otherwise).
    #[arg(long, env = "KAPPA_HEALTHCHECK_CA")]
    pub ca: Option<PathBuf>,

    /// PEM certificate to present to a gateway that asks for one (mutual
    /// TLS, `--tls-client-ca`), with `--key`: inside the gateway's
    /// container, its own `--tls-cert`.
    #[arg(long, env = "KAPPA_HEALTHCHECK_CERT", requires = "key")]
    pub cert: Option<PathBuf>,

    /// PEM private key of `--cert`.
    #[arg(long, env = "KAPPA_HEALTHCHECK_KEY", requires = "cert")]
    pub key: Option<PathBuf>,

    /// How long to wait for the answer.
    #[arg(long, default_value = "3s", value_parser = positive_duration)]
    pub timeout: Duration,
}

/// Flags of `kappa-gateway import-trino`.
#[derive(Debug, Args)]
pub struct ImportTrinoArgs {
    /// Table-description files (`etc/kafka/*.json` of a Trino install).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,

    /// Store each definition on the lake (as `CREATE EXTERNAL TABLE` does)
    /// instead of only printing it.
    #[arg(long)]
    pub apply: bool,

    /// The lake the definitions go to with `--apply`.
    #[command(flatten)]
    pub lake: LakeArgs,

    /// Schema registry (resolves registry formats with `--apply`).
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Flags of `kappa-gateway serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port. The chosen address is
    /// printed on stdout as `listening on <addr>`.
    #[arg(long, env = "KAPPA_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Where the lake is.
    #[command(flatten)]
    pub lake: LakeArgs,

    /// TOML file with table definitions (`[[tables]]`).
    #[arg(long, env = "KAPPA_CONFIG")]
    pub config: Option<PathBuf>,

    /// Kafka connection.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Schema registry.
    #[command(flatten)]
    pub registry: RegistryArgs,

    /// How often the list of topics (tables) is refreshed. A table name not
    /// in the list is looked up on the broker at once, whatever this is.
    #[arg(long, env = "KAPPA_TOPIC_REFRESH", default_value = "3s", value_parser = positive_duration)]
    pub topic_refresh: Duration,

    /// Memory all running queries may hold together (`512MiB`, `2GiB`).
    /// Sorts, aggregates and joins spill to disk beyond it; a query that
    /// cannot fails with ResourceExhausted and the gateway stays up.
    #[arg(long, env = "KAPPA_MEMORY_LIMIT", default_value = "1GiB", value_parser = byte_size)]
    pub memory_limit: usize,

    /// Streaming queries (`tail`) running at once; one more is refused
    /// with ResourceExhausted.
    #[arg(long, env = "KAPPA_MAX_STREAMS", default_value_t = kappa_catalog::stream_registry::DEFAULT_MAX_STREAMS)]
    pub max_streams: usize,

    /// How long a streaming query's batch waits for more rows before it is
    /// sent (records reach the client within about this long).
    #[arg(long, env = "KAPPA_STREAM_LINGER", default_value = "50ms", value_parser = positive_duration)]
    pub stream_linger: Duration,

    /// Queries running at once (a stream from `tail` is not one: see
    /// --max-streams); more wait up to --queue-timeout, then are refused
    /// with ResourceExhausted.
    #[arg(long, env = "KAPPA_MAX_CONCURRENT_QUERIES", default_value_t = 64)]
    pub max_concurrent_queries: usize,

    /// How long a query waits for one of --max-concurrent-queries.
    #[arg(long, env = "KAPPA_QUEUE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub queue_timeout: Duration,

    /// A query running longer is stopped with DeadlineExceeded (`0s`: no
    /// limit). Streams are not limited.
    #[arg(long, env = "KAPPA_QUERY_TIMEOUT", default_value = "0s", value_parser = humantime::parse_duration)]
    pub query_timeout: Duration,

    /// Longest SQL text accepted (`64KiB`, `1MiB`).
    #[arg(long, env = "KAPPA_MAX_SQL_BYTES", default_value = "1MiB", value_parser = byte_size)]
    pub max_sql_bytes: usize,

    /// On SIGTERM, how long running queries may take to finish before they
    /// are stopped (new queries are refused at once, streams ended).
    #[arg(long, env = "KAPPA_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Running large queries across several gateways.
    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// TLS and sign-in.
    #[command(flatten)]
    pub security: SecurityArgs,

    /// Metrics and health over HTTP.
    #[command(flatten)]
    pub metrics: MetricsArgs,

    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

/// One query across several gateways (docs/scale-out.md).
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// The gateways a large query may run across, as the others reach them
    /// (`http://10.0.0.2:50051,http://10.0.0.3:50051`; this one may be
    /// listed too). The gateway a query arrives at coordinates it.
    #[arg(long, env = "KAPPA_WORKERS", value_delimiter = ',')]
    pub workers: Vec<url::Url>,

    /// A DNS name and port whose addresses are the cluster's gateways
    /// (`kappa-gateway.kappa.svc.cluster.local:50051`, a headless Service),
    /// looked up again every second; with or without --workers.
    #[arg(long, env = "KAPPA_WORKERS_DNS")]
    pub workers_dns: Option<String>,

    /// Run parts of other gateways' queries here, without coordinating any
    /// (implied by --workers and --workers-dns).
    #[arg(long, env = "KAPPA_WORKER")]
    pub worker: bool,

    /// The CA (PEM) that signed the other gateways' certificates, for a
    /// cluster of TLS gateways (the system's roots are trusted too).
    #[arg(long, env = "KAPPA_CLUSTER_CA")]
    pub cluster_ca: Option<PathBuf>,

    /// This gateway's address as the others reach it (`http://`, or
    /// `https://` with TLS, and the address it listens on by default).
    #[arg(long, env = "KAPPA_ADVERTISE_URL")]
    pub advertise_url: Option<url::Url>,

    /// Kafka offsets each task of a query reads at least: a query reading
    /// fewer than two tasks' worth (offsets and lake rows together) runs on
    /// the gateway it arrived at.
    #[arg(long, env = "KAPPA_OFFSETS_PER_TASK", default_value_t = crate::distributed::OFFSETS_PER_TASK, value_parser = clap::value_parser!(i64).range(1..))]
    pub offsets_per_task: i64,

    /// Lake rows each task of a query reads at least: a lake row costs
    /// about a tenth of a Kafka record to read, so a task's worth of lake
    /// rows is larger.
    #[arg(long, env = "KAPPA_LAKE_ROWS_PER_TASK", default_value_t = crate::distributed::LAKE_ROWS_PER_TASK, value_parser = clap::value_parser!(i64).range(1..))]
    pub lake_rows_per_task: i64,
}

impl ClusterArgs {
    /// Whether this gateway is in a cluster (serves the worker service).
    pub fn enabled(&self) -> bool {
        !self.workers.is_empty() || self.workers_dns.is_some() || self.worker
    }
}

/// TLS and who may connect.
#[derive(Debug, Args)]
pub struct SecurityArgs {
    /// Serve TLS with this certificate chain (PEM); needs `--tls-key`.
    #[arg(long, env = "KAPPA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of `--tls-cert` (PEM).
    #[arg(long, env = "KAPPA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(long, env = "KAPPA_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Users, their password hashes, grants and static tokens (TOML). Without
    /// it anyone may connect and read every table.
    #[arg(long, env = "KAPPA_USERS")]
    pub users: Option<PathBuf>,

    /// Secret that signs the bearer tokens sign-in returns; gateways sharing
    /// it accept each other's tokens. Default: a random one per start.
    #[arg(long, env = "KAPPA_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,

    /// How long a token from sign-in is valid.
    #[arg(long, env = "KAPPA_TOKEN_TTL", default_value = "1h", value_parser = positive_duration)]
    pub token_ttl: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn flags_override_file_properties() {
        let cli = Cli::parse_from([
            "kappa-gateway",
            "serve",
            "--kafka-property",
            "client.id=from-flag",
            "--kafka-property",
            "security.protocol=SSL",
        ]);
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        let file = BTreeMap::from([("client.id".to_string(), "from-file".to_string())]);
        let properties = args.kafka.options(&file).properties;
        let last = |key: &str| {
            properties
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(last("client.id"), Some("from-flag"));
        assert_eq!(last("security.protocol"), Some("SSL"));
    }

    #[test]
    fn property_values_keep_their_commas() {
        let cli = Cli::parse_from([
            "kappa-gateway",
            "serve",
            "--kafka-property",
            "debug=broker,topic",
        ]);
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        assert_eq!(
            args.kafka.kafka_property,
            vec![("debug".to_string(), "broker,topic".to_string())]
        );
    }

    #[test]
    fn a_zero_topic_refresh_is_refused() {
        assert!(Cli::try_parse_from(["kappa-gateway", "serve", "--topic-refresh", "0s"]).is_err());
    }

    #[test]
    fn log_formats_are_json_and_text_or_plain() {
        for (given, json) in [("json", true), ("text", false), ("plain", false)] {
            let cli = Cli::try_parse_from(["kappa-gateway", "serve", "--log-format", given])
                .unwrap_or_else(|e| panic!("{given}: {e}"));
            let Command::Serve(args) = cli.command else {
                panic!("serve")
            };
            assert_eq!(
                matches!(args.log.log_format, LogFormat::Json),
                json,
                "{given}"
            );
        }
        assert!(Cli::try_parse_from(["kappa-gateway", "serve", "--log-format", "xml"]).is_err());
    }

    #[test]
    fn properties_need_an_equals_sign() {
        assert!(key_value("novalue").is_err());
        assert_eq!(key_value("a=b=c").unwrap(), ("a".into(), "b=c".into()));
    }
}

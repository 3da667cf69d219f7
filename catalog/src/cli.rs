//! Command-line blocks both binaries share (`kappa-gateway`, `kappa-compactor`):
//! how to reach Kafka, where the lake is, and logging. Each flag has a
//! `KAPPA_…` environment variable.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::kafka::KafkaOptions;

/// Where the lake is.
#[derive(Debug, Args)]
pub struct LakeArgs {
    /// Lake location for tiered history: a local folder or `file://` URL
    /// (relative paths are relative to the working directory), or an object
    /// store URL.
    #[arg(long, env = "KAPPA_LAKE", default_value = "file://./kappa-lake")]
    pub lake: String,

    /// An object-store option for the lake, `KEY=VALUE` (repeatable; in the
    /// env var, separated by `;`), e.g. `AWS_ENDPOINT_URL=http://…`. The
    /// usual `AWS_*` environment variables are read as well.
    #[arg(long, env = "KAPPA_LAKE_OPTIONS", value_parser = key_value, value_delimiter = ';')]
    pub lake_option: Vec<(String, String)>,
}

/// How to reach Kafka.
#[derive(Debug, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAPPA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,

    /// Deadline for one metadata or offsets request to the brokers.
    #[arg(long, env = "KAPPA_KAFKA_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub kafka_request_timeout: Duration,

    /// A librdkafka property for every Kafka connection, `KEY=VALUE`
    /// (repeatable; in the env var, separated by `;`, since librdkafka list
    /// values use commas), e.g. `security.protocol=SASL_SSL`. Overrides the
    /// config file's `[kafka.properties]`.
    #[arg(long, env = "KAPPA_KAFKA_PROPERTIES", value_parser = key_value, value_delimiter = ';')]
    pub kafka_property: Vec<(String, String)>,

    /// A scan that receives nothing for this long fails with an error.
    #[arg(long, env = "KAPPA_KAFKA_FETCH_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub kafka_fetch_timeout: Duration,
}

impl KafkaArgs {
    /// The catalog's view of these flags; `file_properties` (the config
    /// file's `[kafka.properties]`) come first, so flags override them.
    pub fn options(&self, file_properties: &BTreeMap<String, String>) -> KafkaOptions {
        let mut properties: Vec<(String, String)> = file_properties
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        properties.extend(self.kafka_property.iter().cloned());
        KafkaOptions {
            request_timeout: self.kafka_request_timeout,
            fetch_timeout: self.kafka_fetch_timeout,
            properties,
            ..KafkaOptions::new(self.brokers.clone())
        }
    }
}

/// Where the schema registry is (a Confluent-compatible REST API).
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Schema registry URL, e.g. `http://registry:8081` (credentials may be
    /// in the URL). With it, a topic whose `<topic>-value` subject exists
    /// reads as a typed Avro or Protobuf table with no definition, and
    /// `avro-confluent` and `protobuf-confluent` tables resolve their schemas.
    #[arg(long, env = "KAPPA_SCHEMA_REGISTRY", hide_env_values = true)]
    pub schema_registry: Option<String>,

    /// Basic-auth user for the registry.
    #[arg(long, env = "KAPPA_SCHEMA_REGISTRY_USER", requires = "schema_registry")]
    pub schema_registry_user: Option<String>,

    /// Basic-auth password for the registry (better in the env var than on
    /// a command line).
    #[arg(
        long,
        env = "KAPPA_SCHEMA_REGISTRY_PASSWORD",
        requires = "schema_registry_user",
        hide_env_values = true
    )]
    pub schema_registry_password: Option<String>,

    /// PEM file of the CA that signed the registry's certificate.
    #[arg(long, env = "KAPPA_SCHEMA_REGISTRY_CA", requires = "schema_registry")]
    pub schema_registry_ca: Option<std::path::PathBuf>,

    /// Deadline of one registry request: a registry that does not answer
    /// in time fails the query (`Unavailable`), it never yields rows.
    #[arg(long, env = "KAPPA_SCHEMA_REGISTRY_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub schema_registry_timeout: Duration,
}

impl RegistryArgs {
    /// The registry client, if a registry is configured. Call within the
    /// tokio runtime.
    pub fn registry(
        &self,
    ) -> Result<Option<std::sync::Arc<crate::format::SchemaRegistry>>, String> {
        let Some(url) = &self.schema_registry else {
            return Ok(None);
        };
        let options = crate::format::RegistryOptions {
            url: url.clone(),
            basic_auth: self.schema_registry_user.clone().map(|user| {
                (
                    user,
                    self.schema_registry_password.clone().unwrap_or_default(),
                )
            }),
            ca_file: self.schema_registry_ca.clone(),
            timeout: self.schema_registry_timeout,
        };
        crate::format::SchemaRegistry::new(options).map(|r| Some(std::sync::Arc::new(r)))
    }
}

/// Parses a duration greater than zero.
pub fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be greater than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// Parses `key=value`.
pub fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got '{text}'")),
    }
}

/// Where to serve metrics and health checks over HTTP.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Serve `/metrics` (Prometheus), `/healthz` and `/readyz` over HTTP on
    /// this address, e.g. `0.0.0.0:9090` (port 0 picks a free port; `metrics
    /// on <addr>` is printed on stdout). Off when not given.
    #[arg(long, env = "KAPPA_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Log format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (`text` is the same).
    #[value(alias = "text")]
    Plain,
    /// One JSON object per line.
    Json,
}

/// Logging flags.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// `tracing` filter directives, e.g. `info,kappa_catalog=debug`. The default
    /// quiets the Delta libraries' per-commit notices (a missing table is
    /// normal before the first run; binary columns have no statistics).
    #[arg(
        long,
        env = "KAPPA_LOG",
        default_value = "info,deltalake_core=warn,deltalake_core::writer::stats=error,buoyant_kernel=off,delta_kernel=warn"
    )]
    pub log_filter: String,

    /// Log line format.
    #[arg(long, env = "KAPPA_LOG_FORMAT", value_enum, default_value = "plain")]
    pub log_format: LogFormat,
}

impl LogArgs {
    /// Installs the global `tracing` subscriber, writing to stderr (stdout
    /// carries only the `listening on` line).
    pub fn init(&self) {
        let filter = tracing_subscriber::EnvFilter::new(&self.log_filter);
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            // Colours on a terminal only: not as escape codes in a log file.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr);
        match self.log_format {
            LogFormat::Plain => builder.init(),
            LogFormat::Json => builder.json().init(),
        }
    }
}

/// A size in bytes: a number with an optional unit, `512MiB`, `2GiB`, `64MB`,
/// `1024` (binary units are powers of 1024, decimal ones of 1000).
pub fn byte_size(value: &str) -> Result<usize, String> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("'{value}' is not a size such as 512MiB or 2GiB"))?;
    let multiplier: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit '{other}' (use B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .filter(|&bytes| bytes > 0)
        .ok_or_else(|| format!("'{value}' is not a positive size that fits in memory"))
}

/// Resolves on Ctrl-C or SIGTERM (what a terminal, systemd and Kubernetes
/// send to stop a process).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(byte_size("1024"), Ok(1024));
        assert_eq!(byte_size("512MiB"), Ok(512 << 20));
        assert_eq!(byte_size("2 GiB"), Ok(2 << 30));
        assert_eq!(byte_size("64MB"), Ok(64_000_000));
        assert!(byte_size("0").is_err());
        assert!(byte_size("12 parsecs").is_err());
        assert!(byte_size("MiB").is_err());
    }
}

//! Command-line flags; each has a `KAPPA_…` environment variable.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kappa_catalog::KafkaOptions;

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
    Serve(ServeArgs),
}

/// Flags of `kappa-gateway serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port. The chosen address is
    /// printed on stdout as `listening on <addr>`.
    #[arg(long, env = "KAPPA_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Lake location (object-store URL) for tiered history.
    #[arg(long, env = "KAPPA_LAKE", default_value = "file://./kappa-lake")]
    pub lake: String,

    /// TOML file with table definitions (`[[tables]]`).
    #[arg(long, env = "KAPPA_CONFIG")]
    pub config: Option<PathBuf>,

    /// Kafka connection.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
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

    /// How often the list of topics (tables) is refreshed. A table name not
    /// in the list is looked up on the broker at once, whatever this is.
    #[arg(long, env = "KAPPA_TOPIC_REFRESH", default_value = "3s", value_parser = positive_duration)]
    pub topic_refresh: Duration,

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

/// Parses a duration greater than zero.
fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be greater than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// Parses `key=value`.
fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got '{text}'")),
    }
}

/// Log format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// Logging flags.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// `tracing` filter directives, e.g. `info,kappa_catalog=debug`.
    #[arg(long, env = "KAPPA_LOG", default_value = "info")]
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
            .with_writer(std::io::stderr);
        match self.log_format {
            LogFormat::Plain => builder.init(),
            LogFormat::Json => builder.json().init(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let Command::Serve(args) = cli.command;
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
        let Command::Serve(args) = cli.command;
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
    fn properties_need_an_equals_sign() {
        assert!(key_value("novalue").is_err());
        assert_eq!(key_value("a=b=c").unwrap(), ("a".into(), "b=c".into()));
    }
}

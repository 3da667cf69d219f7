//! `kappa-compactor`: tiers Kafka topics into Delta Lake tables.
//!
//! `run --once` makes one pass over every table (for cron, a Kubernetes
//! CronJob, Airflow); `run --every 5m` repeats until SIGTERM, finishing the
//! table it is on. `check` validates a table file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use kappa_catalog::cli::{KafkaArgs, LakeArgs, LogArgs};
use kappa_catalog::lake;
use kappa_catalog::{CatalogConfig, DeclaredTable, KafkaClient, ValueFormat};
use kappa_compactor::{Shard, TierTable};

/// kappa's compactor: tiers Kafka topics into a Delta Lake.
#[derive(Debug, Parser)]
#[command(name = "kappa-compactor", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Tier old records of every table into the lake.
    Run(Box<RunArgs>),
    /// Validate a table configuration file and list its tables.
    Check {
        /// TOML file with table definitions.
        #[arg(long, env = "KAPPA_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// TOML file with table definitions (`[[tables]]`), as the gateway's.
    #[arg(long, env = "KAPPA_CONFIG")]
    config: Option<PathBuf>,

    /// One pass over every table, then exit.
    #[arg(long, conflicts_with = "every", required_unless_present = "every")]
    once: bool,

    /// Repeat a pass this often until SIGTERM or Ctrl-C.
    #[arg(long, env = "KAPPA_COMPACT_EVERY", value_parser = humantime::parse_duration)]
    every: Option<Duration>,

    /// Only these tables (repeatable); a name not declared in the config
    /// file is a topic tiered as a raw table. Default: every declared table.
    #[arg(long = "table")]
    tables: Vec<String>,

    /// Tier records older than this; `0s` tiers up to the end of each partition.
    #[arg(long, env = "KAPPA_TIER_AFTER", default_value = "1h", value_parser = humantime::parse_duration)]
    tier_after: Duration,

    /// Handle only the partitions `p` with `p % COUNT == INDEX` (`INDEX/COUNT`),
    /// so several compactors split a table without contending.
    #[arg(long, env = "KAPPA_SHARD", default_value = "0/1")]
    shard: Shard,

    /// Tier what is left when Kafka deleted records before they were tiered
    /// (the gap is recorded in the commit's metadata); otherwise that table stops.
    #[arg(long, env = "KAPPA_ALLOW_DATA_LOSS")]
    allow_data_loss: bool,

    /// At most this many offsets per Delta commit (bounds memory).
    #[arg(long, env = "KAPPA_MAX_RECORDS_PER_COMMIT", default_value_t = 500_000)]
    max_records_per_commit: u64,

    /// Target size of the Parquet files, in bytes.
    #[arg(long, env = "KAPPA_TARGET_FILE_SIZE", default_value_t = 128 * 1024 * 1024)]
    target_file_size: u64,

    #[command(flatten)]
    kafka: KafkaArgs,

    #[command(flatten)]
    lake: LakeArgs,

    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Check { config } => {
            let tables = CatalogConfig::from_file(&config)?.resolve().await?;
            for table in tables {
                println!(
                    "{} <- topic {} ({:?})",
                    table.name, table.topic, table.format
                );
            }
            Ok(())
        }
        Command::Run(args) => run(*args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    args.log.init();
    let config = match &args.config {
        Some(path) => CatalogConfig::from_file(path)?,
        None => CatalogConfig::default(),
    };
    let declared = config.resolve().await?;
    let tables = select_tables(&declared, &args.tables)?;
    anyhow::ensure!(
        !tables.is_empty(),
        "no tables to tier: declare them in --config or name topics with --table"
    );
    let client = KafkaClient::new(args.kafka.options(&config.kafka.properties))?;
    let mut shutdown = std::pin::pin!(kappa_catalog::cli::shutdown_signal());
    loop {
        let failed = pass(&args, &client, &tables).await;
        let Some(every) = args.every else {
            anyhow::ensure!(failed == 0, "{failed} of {} tables failed", tables.len());
            return Ok(());
        };
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = &mut shutdown => {
                tracing::info!("stopping");
                return Ok(());
            }
        }
    }
}

/// One pass over `tables`; a table that fails does not stop the others.
/// Returns how many failed.
async fn pass(args: &RunArgs, client: &Arc<KafkaClient>, tables: &[DeclaredTable]) -> usize {
    let mut failed = 0;
    for table in tables {
        let started = Instant::now();
        let name = table.name.clone();
        let outcome = async {
            let location = lake::table_url(&args.lake.lake, &table.name, true)?;
            TierTable::new(Arc::clone(client), table.clone(), location)
                .with_storage_options(args.lake.lake_option.iter().cloned().collect())
                .with_shard(args.shard)
                .with_tier_after(args.tier_after)
                .with_allow_data_loss(args.allow_data_loss)
                .with_max_records_per_commit(args.max_records_per_commit)
                .with_target_file_size(args.target_file_size)
                .run()
                .await
        }
        .await;
        match outcome {
            Ok(metrics) => {
                let watermarks: Vec<String> = metrics
                    .watermarks
                    .iter()
                    .map(|(p, w)| format!("{p}:{w}"))
                    .collect();
                tracing::info!(
                    table = %name,
                    records = metrics.records,
                    commits = metrics.commits,
                    version = metrics.version,
                    watermarks = %watermarks.join(" "),
                    lost = metrics.lost.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "tiered"
                );
                println!(
                    "{name}: {} records in {} commits, version {}, watermarks {}",
                    metrics.records,
                    metrics.commits,
                    metrics.version.map_or("none".into(), |v| v.to_string()),
                    watermarks.join(" ")
                );
            }
            Err(e) => {
                failed += 1;
                tracing::error!(table = %name, error = %e, "table failed");
                eprintln!("{name}: failed: {e}");
            }
        }
    }
    failed
}

/// The tables named with `--table` (declared, or raw topics), or every
/// declared table.
fn select_tables(
    declared: &[DeclaredTable],
    names: &[String],
) -> anyhow::Result<Vec<DeclaredTable>> {
    if names.is_empty() {
        return Ok(declared.to_vec());
    }
    names
        .iter()
        .map(|name| {
            let table = declared.iter().find(|t| &t.name == name).cloned();
            Ok(table.unwrap_or_else(|| DeclaredTable {
                name: name.clone(),
                topic: name.clone(),
                format: ValueFormat::Raw,
                value_schema: Arc::new(datafusion::arrow::datatypes::Schema::empty()),
                timestamp_skew: None,
            }))
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .context("selecting tables")
}

//! `kappa-compactor`: tiers Kafka topics into Delta Lake tables.
//!
//! `run --once` makes one pass over every table (for cron, a Kubernetes
//! CronJob, Airflow); `run --every 5m` repeats until SIGTERM, finishing the
//! table it is on. `optimize` and `vacuum` maintain the tables, one job per
//! table at a time (a lease in the lake). `check` validates a table file.

mod display;
mod maintenance;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{ArgGroup, Args, Parser, Subcommand};
use kappa_catalog::cli::{KafkaArgs, LakeArgs, LogArgs, MetricsArgs, RegistryArgs};
use kappa_catalog::format::SchemaRegistry;
use kappa_catalog::lake;
use kappa_catalog::{
    CatalogConfig, DeclaredTable, DefinitionStore, FileDefinitions, KafkaClient, LakeDefinitions,
    ValueFormat,
};
use kappa_compactor::tier::DEFAULT_CHECKPOINT_EVERY;
use kappa_compactor::{
    CompactLatest, CompactorMetrics, Shard, TierMetrics, TierProgress, TierTable,
};

use display::{PassSummary, ProgressDisplay, latest_line, schema_lines, table_line, watermarks};
use maintenance::{OptimizeArgs, VacuumArgs, optimize, vacuum};

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
    /// Rewrite each table's small files into files of the target size.
    Optimize(OptimizeArgs),
    /// Delete files no table version within the retention needs, and files
    /// of runs that crashed before committing them.
    Vacuum(VacuumArgs),
    /// Validate a table configuration file and list its tables.
    Check {
        /// TOML file with table definitions.
        #[arg(long, env = "KAPPA_CONFIG")]
        config: PathBuf,

        #[command(flatten)]
        registry: RegistryArgs,
    },
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("schedule").required(true).args(["once", "every"])))]
struct RunArgs {
    /// TOML file with table definitions (`[[tables]]`), as the gateway's.
    #[arg(long, env = "KAPPA_CONFIG")]
    config: Option<PathBuf>,

    /// One pass over every table, then exit (or `--every`).
    #[arg(long)]
    once: bool,

    /// Repeat a pass this often until SIGTERM or Ctrl-C (or `--once`).
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

    /// At most this many offsets per Delta commit (a commit's records stream
    /// into the Parquet writer; this bounds how long a commit takes).
    #[arg(long, env = "KAPPA_MAX_RECORDS_PER_COMMIT", default_value_t = 500_000)]
    max_records_per_commit: u64,

    /// Target size of the Parquet files, in bytes.
    #[arg(long, env = "KAPPA_TARGET_FILE_SIZE", default_value_t = 128 * 1024 * 1024)]
    target_file_size: u64,

    /// Write a Delta checkpoint every this many table versions, so readers
    /// load a table from one Parquet file plus the commits since (0: leave
    /// it to deltalake, every 100 versions).
    #[arg(long, env = "KAPPA_CHECKPOINT_EVERY", default_value_t = DEFAULT_CHECKPOINT_EVERY)]
    checkpoint_every: u64,

    /// Without a terminal, log progress this often (with one, a bar shows it).
    #[arg(long, env = "KAPPA_PROGRESS_EVERY", default_value = "10s", value_parser = humantime::parse_duration)]
    progress_every: Duration,

    /// On SIGTERM the commit in flight finishes and nothing more starts; a
    /// commit still running after this long is abandoned (the next run
    /// tiers its records again, exactly once) and the exit code is 1.
    #[arg(long, env = "KAPPA_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,

    #[command(flatten)]
    metrics: MetricsArgs,

    #[command(flatten)]
    kafka: KafkaArgs,

    #[command(flatten)]
    registry: RegistryArgs,

    #[command(flatten)]
    lake: LakeArgs,

    #[command(flatten)]
    log: LogArgs,
}

/// Runs the command; an error is printed as its chain of causes on one
/// line (never with a backtrace, whatever `RUST_BACKTRACE` says) and the
/// exit code is 1.
#[tokio::main]
async fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Command::Check { config, registry } => check(&config, &registry).await,
        Command::Run(args) => run(*args).await,
        Command::Optimize(args) => optimize(args).await,
        Command::Vacuum(args) => vacuum(args).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints each table of the config file with the schema it is tiered with.
async fn check(config: &Path, registry: &RegistryArgs) -> anyhow::Result<()> {
    let registry = registry.registry().map_err(anyhow::Error::msg)?;
    let tables = FileDefinitions::new(CatalogConfig::from_file(config)?, registry)
        .tables()
        .await?;
    for table in tables {
        println!("{} <- topic {} ({})", table.name, table.topic, table.format);
        for line in schema_lines(&table) {
            println!("  {line}");
        }
    }
    Ok(())
}

/// Logs where the lake is and what it holds (the default lake is relative
/// to the working directory). Call before anything creates the lake's folder.
async fn log_lake(args: &LakeArgs) {
    let lake = lake::Lake::new(
        args.lake.clone(),
        args.lake_option.iter().cloned().collect(),
    );
    match lake.survey().await {
        Ok(survey) => tracing::info!("{survey}"),
        Err(e) => tracing::warn!("lake {}: not listed: {e}", args.lake),
    }
}

/// The config file (or none) and the tables a command handles: those
/// named with `--table`, or every declared one (in the config file, or by
/// SQL on the lake); none is an error.
async fn config_and_tables(
    path: Option<&PathBuf>,
    names: &[String],
    registry: Option<&Arc<SchemaRegistry>>,
    lake: &LakeArgs,
) -> anyhow::Result<(CatalogConfig, Vec<DeclaredTable>)> {
    let config = match path {
        Some(path) => CatalogConfig::from_file(path)?,
        None => CatalogConfig::default(),
    };
    let mut declared = FileDefinitions::new(config.clone(), registry.cloned())
        .tables()
        .await?;
    let lake = kappa_catalog::lake::Lake::new(
        lake.lake.clone(),
        lake.lake_option.iter().cloned().collect(),
    );
    for table in LakeDefinitions::new(lake, registry.cloned())
        .tables()
        .await?
    {
        // A name the config file declares is the file's (the gateway reads
        // it so too).
        if !declared.iter().any(|t| t.name == table.name) {
            declared.push(table);
        }
    }
    let tables = select_tables(&declared, names, registry).await?;
    anyhow::ensure!(
        !tables.is_empty(),
        "no tables: declare them in --config or name them with --table"
    );
    Ok((config, tables))
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    args.log.init();
    let metrics = Arc::new(CompactorMetrics::new());
    if let Some(at) = args.metrics.metrics_listen {
        let listener = tokio::net::TcpListener::bind(at)
            .await
            .with_context(|| format!("cannot listen on {at} (--metrics-listen)"))?;
        println!("metrics on {}", listener.local_addr()?);
        let exposition: Arc<dyn kappa_ops::Exposition> = metrics.clone();
        kappa_ops::spawn(listener, exposition);
    }
    log_lake(&args.lake).await;
    let registry = args.registry.registry().map_err(anyhow::Error::msg)?;
    let (config, mut tables) = config_and_tables(
        args.config.as_ref(),
        &args.tables,
        registry.as_ref(),
        &args.lake,
    )
    .await?;
    let client = KafkaClient::new(args.kafka.options(&config.kafka.properties))?;
    // SIGTERM or Ctrl-C: the commit in flight finishes, nothing more starts.
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::new(tokio::sync::Notify::new());
    tokio::spawn({
        let (stop, stopping) = (Arc::clone(&stop), Arc::clone(&stopping));
        let (metrics, grace) = (Arc::clone(&metrics), args.shutdown_grace);
        async move {
            kappa_catalog::cli::shutdown_signal().await;
            tracing::info!("stopping after the commit in flight");
            metrics.set_stopping();
            stop.store(true, Ordering::Relaxed);
            stopping.notify_one();
            // Bounded: a commit that does not end within the grace is
            // abandoned; its files are orphans VACUUM removes, and its
            // records are tiered again by the next run.
            tokio::time::sleep(grace).await;
            tracing::error!(
                ?grace,
                "the commit in flight did not finish within --shutdown-grace: abandoned"
            );
            std::process::exit(1);
        }
    });
    loop {
        let failed = pass(&args, &client, &tables, &stop, &metrics).await;
        anyhow::ensure!(
            args.every.is_some() || failed == 0,
            "{failed} of {} tables failed",
            tables.len()
        );
        let Some(every) = args.every.filter(|_| !stop.load(Ordering::Relaxed)) else {
            return Ok(());
        };
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stopping.notified() => return Ok(()),
        }
        // Tables created or dropped by SQL since the last pass.
        match config_and_tables(
            args.config.as_ref(),
            &args.tables,
            registry.as_ref(),
            &args.lake,
        )
        .await
        {
            Ok((_, now)) => tables = now,
            Err(e) => {
                tracing::warn!("table definitions not read again, tiering the known tables: {e:#}")
            }
        }
    }
}

/// One pass over `tables`; a table that fails does not stop the others.
/// Prints a line per table and a summary. Returns how many failed.
async fn pass(
    args: &RunArgs,
    client: &Arc<KafkaClient>,
    tables: &[DeclaredTable],
    stop: &Arc<AtomicBool>,
    metrics: &CompactorMetrics,
) -> usize {
    let started = Instant::now();
    let progress = Arc::new(TierProgress::default());
    let display = ProgressDisplay::start(Arc::clone(&progress), args.progress_every);
    let mut summary = PassSummary::default();
    let mut lines = Vec::new();
    for table in tables {
        if stop.load(Ordering::Relaxed) {
            lines.push(format!("{}: not started (stopping)", table.name));
            continue;
        }
        let table_started = Instant::now();
        let name = table.name.clone();
        progress.start_table(&name);
        let outcome = async {
            let location = lake::table_url(&args.lake.lake, &table.name, true)?;
            let storage_options: HashMap<String, String> =
                args.lake.lake_option.iter().cloned().collect();
            let tiered = TierTable::new(Arc::clone(client), table.clone(), location.clone())
                .with_storage_options(storage_options.clone())
                .with_shard(args.shard)
                .with_tier_after(args.tier_after)
                .with_allow_data_loss(args.allow_data_loss)
                .with_max_records_per_commit(args.max_records_per_commit)
                .with_target_file_size(args.target_file_size)
                .with_checkpoint_every(args.checkpoint_every)
                .with_progress(Arc::clone(&progress))
                .with_stop(Arc::clone(stop))
                .run()
                .await?;
            // A changelog table's latest rows follow its history.
            let latest = match table.changelog {
                Some(_) if !tiered.watermarks.is_empty() => Some(
                    CompactLatest::new(
                        &table.name,
                        location,
                        lake::latest_url(&args.lake.lake, &table.name, true)?,
                    )
                    .with_storage_options(storage_options)
                    .with_partitions(tiered.watermarks.keys().copied())
                    .with_max_records_per_commit(args.max_records_per_commit)
                    .with_stop(Arc::clone(stop))
                    .run()
                    .await?,
                ),
                _ => None,
            };
            Ok::<_, anyhow::Error>((tiered, latest))
        }
        .await;
        match outcome {
            Ok((tiered, latest)) => {
                metrics.tiered(&tiered);
                log_tiered(&name, &tiered, table_started.elapsed());
                summary.add(&tiered);
                lines.push(table_line(&name, &tiered));
                if let Some(latest) = latest {
                    lines.push(latest_line(&name, &latest));
                }
            }
            Err(e) => {
                metrics.failed();
                summary.failed += 1;
                tracing::error!(table = %name, error = %e, "table failed");
                lines.push(format!("{name}: failed: {e}"));
            }
        }
    }
    drop(display);
    if summary.failed == 0 && !stop.load(Ordering::Relaxed) {
        metrics.pass_succeeded();
    }
    for line in lines {
        if line.contains(": failed: ") {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    println!("{}", summary.line(started.elapsed()));
    summary.failed
}

fn log_tiered(name: &str, metrics: &TierMetrics, took: Duration) {
    tracing::info!(
        table = %name,
        records = metrics.records,
        commits = metrics.commits,
        files = metrics.files,
        bytes = metrics.bytes,
        checkpoints = metrics.checkpoints,
        version = metrics.version,
        watermarks = %watermarks(metrics),
        lost = metrics.lost.len(),
        ms = took.as_millis() as u64,
        "tiered"
    );
}

/// The tables named with `--table` (declared; else topics, typed by their
/// registry subject as the gateway reads them, or raw), or every declared
/// table.
async fn select_tables(
    declared: &[DeclaredTable],
    names: &[String],
    registry: Option<&Arc<SchemaRegistry>>,
) -> anyhow::Result<Vec<DeclaredTable>> {
    if names.is_empty() {
        return Ok(declared.to_vec());
    }
    let mut tables = Vec::with_capacity(names.len());
    for name in names {
        if let Some(table) = declared.iter().find(|t| &t.name == name) {
            tables.push(table.clone());
            continue;
        }
        let typed = match registry {
            Some(registry) => DeclaredTable::from_registry(registry, name)
                .await
                .with_context(|| format!("selecting table {name}"))?,
            None => None,
        };
        tables.push(typed.unwrap_or_else(|| DeclaredTable {
            name: name.clone(),
            topic: name.clone(),
            format: ValueFormat::Raw,
            value_schema: Arc::new(datafusion::arrow::datatypes::Schema::empty()),
            timestamp_skew: None,
            changelog: None,
            definition: None,
        }));
    }
    Ok(tables)
}

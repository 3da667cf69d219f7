//! `optimize` and `vacuum`: the maintenance jobs, run on each table in turn
//! (and on a changelog table's latest rows).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use kappa_catalog::cli::{LakeArgs, LogArgs, RegistryArgs};
use kappa_catalog::lake;
use kappa_compactor::{OptimizeMetrics, OptimizeTable, TableLocation, VacuumMetrics, VacuumTable};

use crate::{config_and_tables, log_lake};

/// Which tables a maintenance job handles and where the lake is.
#[derive(Debug, Args)]
pub struct MaintainArgs {
    /// TOML file with table definitions (`[[tables]]`), as the gateway's.
    #[arg(long, env = "KAPPA_CONFIG")]
    config: Option<PathBuf>,

    /// Only these tables (repeatable). Default: every declared table.
    #[arg(long = "table")]
    tables: Vec<String>,

    /// How long a job's lease on a table lasts unless renewed (it is renewed
    /// while the job runs; a job that died frees the table after this).
    #[arg(long, env = "KAPPA_LEASE_TTL", default_value = "10m", value_parser = humantime::parse_duration)]
    lease_ttl: Duration,

    /// Schema registry (definitions of `avro-confluent` tables resolve there).
    #[command(flatten)]
    registry: RegistryArgs,

    #[command(flatten)]
    lake: LakeArgs,

    #[command(flatten)]
    log: LogArgs,
}

#[derive(Debug, Args)]
pub struct OptimizeArgs {
    /// Target size of the files written, in bytes.
    #[arg(long, env = "KAPPA_TARGET_FILE_SIZE", default_value_t = 128 * 1024 * 1024)]
    target_file_size: u64,

    #[command(flatten)]
    common: MaintainArgs,
}

#[derive(Debug, Args)]
pub struct VacuumArgs {
    /// Keep files removed from the table less than this long ago (readers of
    /// older versions, a gateway's cached snapshot) and uncommitted files
    /// younger than this (a running compactor's). Keep it longer than the
    /// longest query and the longest compactor run.
    #[arg(long, env = "KAPPA_VACUUM_RETENTION", default_value = "7days", value_parser = humantime::parse_duration)]
    retention: Duration,

    /// List what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,

    #[command(flatten)]
    common: MaintainArgs,
}

/// The tables a maintenance job handles and where each is.
async fn maintained_tables(args: &MaintainArgs) -> anyhow::Result<Vec<TableLocation>> {
    args.log.init();
    log_lake(&args.lake).await;
    let registry = args.registry.registry().map_err(anyhow::Error::msg)?;
    let (_, tables) = config_and_tables(
        args.config.as_ref(),
        &args.tables,
        registry.as_ref(),
        &args.lake,
    )
    .await?;
    let storage_options: HashMap<String, String> = args.lake.lake_option.iter().cloned().collect();
    let mut locations = Vec::new();
    for table in &tables {
        locations.push(TableLocation {
            name: table.name.clone(),
            url: lake::table_url(&args.lake.lake, &table.name, false)?,
            storage_options: storage_options.clone(),
        });
        // A changelog table's latest rows: each MERGE rewrites files, which
        // VACUUM deletes and OPTIMIZE gathers.
        let latest = TableLocation {
            name: format!("{} (latest rows)", table.name),
            url: lake::latest_url(&args.lake.lake, &table.name, false)?,
            storage_options: storage_options.clone(),
        };
        if table.changelog.is_some() && latest.exists().await? {
            locations.push(latest);
        }
    }
    Ok(locations)
}

/// Runs a maintenance job on each table in turn; a table that fails does
/// not stop the others. `report` prints what a job did.
async fn maintain_each<T, Job>(
    tables: Vec<TableLocation>,
    job_name: &str,
    job: impl Fn(TableLocation) -> Job,
    report: impl Fn(&str, &T),
) -> anyhow::Result<()>
where
    Job: Future<Output = kappa_compactor::Result<T>>,
{
    let mut failed = 0;
    for table in tables {
        let name = table.name.clone();
        match job(table).await {
            Ok(done) => report(&name, &done),
            Err(e) => {
                failed += 1;
                tracing::error!(table = %name, job = job_name, error = %e, "table failed");
                eprintln!("{name}: failed: {e}");
            }
        }
    }
    anyhow::ensure!(failed == 0, "{failed} tables failed");
    Ok(())
}

pub async fn optimize(args: OptimizeArgs) -> anyhow::Result<()> {
    let tables = maintained_tables(&args.common).await?;
    let job = |table| {
        OptimizeTable::new(table)
            .with_target_file_size(args.target_file_size)
            .with_lease_ttl(args.common.lease_ttl)
            .run()
    };
    maintain_each(tables, "optimize", job, |name, metrics: &OptimizeMetrics| {
        tracing::info!(table = %name, files_removed = metrics.files_removed, files_added = metrics.files_added, version = metrics.version, "optimized");
        println!(
            "{name}: {} files rewritten into {}, version {}",
            metrics.files_removed,
            metrics.files_added,
            metrics.version.map_or("none".into(), |v| v.to_string())
        );
    })
    .await
}

pub async fn vacuum(args: VacuumArgs) -> anyhow::Result<()> {
    let tables = maintained_tables(&args.common).await?;
    let job = |table| {
        VacuumTable::new(table)
            .with_retention(args.retention)
            .with_dry_run(args.dry_run)
            .with_lease_ttl(args.common.lease_ttl)
            .run()
    };
    maintain_each(tables, "vacuum", job, |name, metrics: &VacuumMetrics| {
        let verb = if metrics.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        tracing::info!(table = %name, files = metrics.files.len(), dry_run = metrics.dry_run, kept = metrics.kept, "vacuumed");
        println!(
            "{name}: {verb} {} files; {}",
            metrics.files.len(),
            kept_line(metrics, args.retention)
        );
        for file in &metrics.files {
            println!("  {file}");
        }
    })
    .await
}

/// What the retention keeps and until when, e.g. `the 7days retention keeps
/// 3 more files, deletable from 2026-12-01T10:00:00Z to 2026-12-05T09:00:00Z`.
fn kept_line(metrics: &VacuumMetrics, retention: Duration) -> String {
    let retention = humantime::format_duration(retention);
    let at =
        |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    match metrics.kept_until {
        _ if metrics.kept == 0 => format!("the {retention} retention keeps no other file"),
        Some((first, last)) if first == last => format!(
            "the {retention} retention keeps {}, deletable from {}",
            files(metrics.kept),
            at(&first)
        ),
        Some((first, last)) => format!(
            "the {retention} retention keeps {}, deletable from {} to {}",
            files(metrics.kept),
            at(&first),
            at(&last)
        ),
        None => format!("the {retention} retention keeps {}", files(metrics.kept)),
    }
}

/// `1 more file`, `3 more files`.
fn files(count: usize) -> String {
    if count == 1 {
        "1 more file".into()
    } else {
        format!("{count} more files")
    }
}

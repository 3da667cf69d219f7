//! `kappa-compactor`: tiers Kafka topics into Delta Lake tables.
//!
//! Only configuration checking exists so far; tiering itself lands with its
//! own issue (see docs/architecture.md). `check` validates the table file so
//! the same file can be shared by the gateway and a future compactor run.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use kappa_catalog::CatalogConfig;

/// kappa's compactor: tiers Kafka topics into a Delta Lake.
#[derive(Debug, Parser)]
#[command(name = "kappa-compactor", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a table configuration file and list its tables.
    Check {
        /// TOML file with table definitions.
        #[arg(long, env = "KAPPA_CONFIG")]
        config: PathBuf,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Check { config } => {
            let tables = CatalogConfig::from_file(&config)?.resolve().await?;
            for table in tables {
                println!(
                    "{} <- topic {} ({:?})",
                    table.name, table.topic, table.format
                );
            }
        }
    }
    Ok(())
}

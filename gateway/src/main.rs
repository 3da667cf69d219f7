use std::io::Write;

use anyhow::Context;
use clap::Parser;
use kappa_catalog::lake::Lake;
use kappa_catalog::{CatalogConfig, kafka_catalog_with_lake};
use kappa_gateway::config::{Cli, Command, ServeArgs};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    args.log.init();
    let config = match &args.config {
        Some(path) => CatalogConfig::from_file(path)?,
        None => CatalogConfig::default(),
    };
    let tables = config.resolve().await?;
    let options = args.kafka.options(&config.kafka.properties);
    let lake = Lake::new(
        args.lake.lake.clone(),
        args.lake.lake_option.iter().cloned().collect(),
    );
    let schema = kafka_catalog_with_lake(options, tables, args.topic_refresh, Some(lake))?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, brokers = %args.kafka.brokers, lake = %args.lake.lake, "kappa gateway started");
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {addr}")?;
    stdout.flush()?;
    kappa_gateway::serve(listener, schema, kappa_catalog::cli::shutdown_signal()).await?;
    tracing::info!("kappa gateway stopped");
    Ok(())
}

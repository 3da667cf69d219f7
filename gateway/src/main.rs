use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use kappa_catalog::lake::Lake;
use kappa_catalog::{CatalogConfig, KafkaClient, KafkaSchema};
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
    let client = KafkaClient::new(options)?;
    let schema = Arc::new(
        KafkaSchema::new(client, tables, args.topic_refresh)
            .with_lake(Some(lake))
            .with_streams(args.max_streams, args.stream_linger),
    );
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, brokers = %args.kafka.brokers, lake = %args.lake.lake, "kappa gateway started");
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {addr}")?;
    stdout.flush()?;
    kappa_gateway::serve(
        listener,
        schema,
        args.memory_limit,
        kappa_catalog::cli::shutdown_signal(),
    )
    .await?;
    tracing::info!("kappa gateway stopped");
    Ok(())
}

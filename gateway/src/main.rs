use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use kappa_catalog::definitions::sql::create_statement;
use kappa_catalog::definitions::trino;
use kappa_catalog::lake::Lake;
use kappa_catalog::{
    CatalogConfig, CatalogContext, DefinitionStore, FileDefinitions, KafkaClient, KafkaSchema,
    LakeDefinitions, LakeTables,
};
use kappa_gateway::auth::{Authenticator, TokenSigner, UsersFile, hash_password};
use kappa_gateway::client_tls::ClientTls;
use kappa_gateway::config::{
    Cli, Command, HealthcheckArgs, ImportTrinoArgs, SecurityArgs, ServeArgs,
};
use kappa_gateway::executor::QueryExecutor;
use kappa_gateway::health::{CheckedStatus, probe};
use kappa_gateway::limits::Limits;
use kappa_gateway::{ClusterOptions, ServeOptions};
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// Runs the command; an error is printed as its chain of causes on one
/// line (never with a backtrace, whatever `RUST_BACKTRACE` says) and the
/// exit code is 1.
///
/// Two runtimes: one serves calls (accepts, plans, encodes and sends
/// answers), the other executes queries, one worker per core, so queries
/// that hold every query worker never keep the gateway from answering (see
/// `kappa_gateway::executor`).
fn main() -> ExitCode {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = |name: &str, workers: usize| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name(name)
            .enable_all()
            .build()
    };
    let (serving, queries) = match (
        runtime("kappa-serve", cores.max(2)),
        runtime("kappa-query", cores),
    ) {
        (Ok(serving), Ok(queries)) => (serving, queries),
        (Err(err), _) | (_, Err(err)) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let executor = QueryExecutor::on(queries.handle().clone());
    let code = serving.block_on(serve_cli(executor));
    queries.shutdown_background();
    code
}

async fn serve_cli(executor: QueryExecutor) -> ExitCode {
    match run(Cli::parse(), executor).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, executor: QueryExecutor) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(*args, executor).await,
        Command::ImportTrino(args) => import_trino(args).await,
        Command::Healthcheck(args) => healthcheck(args).await,
        Command::HashPassword => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("reading the password on standard input")?;
            let password = password.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!password.is_empty(), "no password on standard input");
            println!("{}", hash_password(password));
            Ok(())
        }
    }
}

/// Exits 0 when the gateway answers SERVING; says what it answered otherwise.
async fn healthcheck(args: HealthcheckArgs) -> anyhow::Result<()> {
    let read = |path: &std::path::PathBuf| {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    };
    let ca = args.ca.as_ref().map(read).transpose()?;
    let mut tls = ClientTls::with_ca(ca);
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        tls = tls.presenting(read(cert)?, read(key)?);
    }
    let status = probe(&args.address, &args.service, &tls, args.timeout).await?;
    anyhow::ensure!(
        status == CheckedStatus::Serving,
        "{} is {}",
        args.address,
        status.as_str_name()
    );
    println!("{} is SERVING", args.address);
    Ok(())
}

/// Why a socket cannot listen, in the OS's words, with what to do about
/// the usual two causes.
fn listen_error(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "{error} (another process listens there; --listen 127.0.0.1:0 picks a free port)"
        ),
        std::io::ErrorKind::PermissionDenied => {
            format!("{error} (ports below 1024 need privileges)")
        }
        _ => error.to_string(),
    }
}

/// Prints the statement each Trino table description makes (its notes as
/// SQL comments) and, with `--apply`, stores it on the lake. A file that
/// cannot be translated or stored is reported and the others go on.
async fn import_trino(args: ImportTrinoArgs) -> anyhow::Result<()> {
    let registry = args.registry.registry().map_err(anyhow::Error::msg)?;
    let store = args.apply.then(|| {
        let lake = Lake::new(
            args.lake.lake.clone(),
            args.lake.lake_option.iter().cloned().collect(),
        );
        LakeDefinitions::new(lake, registry.clone())
    });
    let mut failed = 0;
    for path in &args.files {
        let outcome = async {
            let text = std::fs::read_to_string(path)?;
            let dir = path.parent().unwrap_or(std::path::Path::new("."));
            let imported = trino::import(&text, dir)?;
            println!("-- from {}", path.display());
            for note in &imported.notes {
                println!("-- {note}");
            }
            println!("{};", create_statement(&imported.definition));
            if let Some(store) = &store {
                let name = imported.definition.name.clone();
                match store.create(imported.definition, "import-trino").await {
                    Ok(_) => println!("-- created {name} on {}", args.lake.lake),
                    Err(kappa_catalog::CatalogError::AlreadyExists(why)) => {
                        println!("-- {why}: left as it is")
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            println!();
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = outcome {
            failed += 1;
            eprintln!("{}: {e:#}", path.display());
        }
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} files not imported",
        args.files.len()
    );
    Ok(())
}

/// Who may connect, from `--users` (or anyone, said in the log).
fn authenticator(args: &SecurityArgs) -> anyhow::Result<Authenticator> {
    let signer = TokenSigner::new(args.token_secret.as_deref(), args.token_ttl);
    let Some(path) = &args.users else {
        tracing::warn!("no --users file: anyone who can reach the gateway may read every table");
        return Ok(Authenticator::anonymous(signer));
    };
    let file = UsersFile::from_file(path)?;
    tracing::info!(
        users = file.users.len(),
        tokens = file.tokens.len(),
        "sign-in required"
    );
    if args.token_secret.is_none() {
        tracing::info!("tokens from sign-in are valid on this gateway only (no --token-secret)");
    }
    Ok(Authenticator::with_users(&file, signer)?)
}

/// The TLS setup of `--tls-cert`, `--tls-key` and `--tls-client-ca`.
fn tls(args: &SecurityArgs) -> anyhow::Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    // Two crypto providers are linked in (ring, and aws-lc through the
    // object-store crates), so rustls needs to be told which to use.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |path: &std::path::PathBuf| {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    };
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = &args.tls_client_ca {
        config = config.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(Some(config))
}

/// This gateway's part in a cluster, from --workers, --worker and
/// --advertise-url (listening on `addr`).
fn cluster_options(args: &ServeArgs, addr: SocketAddr) -> anyhow::Result<Option<ClusterOptions>> {
    let cluster = &args.cluster;
    if !cluster.enabled() {
        return Ok(None);
    }
    let scheme = cluster_scheme(args);
    let self_url = match &cluster.advertise_url {
        Some(url) => url.clone(),
        None => url::Url::parse(&format!("{scheme}://{addr}"))?,
    };
    let ca = match &cluster.cluster_ca {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
        }
        None => None,
    };
    // Under mutual TLS (--tls-client-ca) every gateway asks the others for
    // a certificate too: each presents its own.
    let mut tls = ClientTls::with_ca(ca);
    if let (Some(cert), Some(key)) = (&args.security.tls_cert, &args.security.tls_key) {
        let read = |path: &std::path::PathBuf| {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        };
        tls = tls.presenting(read(cert)?, read(key)?);
    }
    // Gateways found by name are known by their addresses: their
    // certificates are checked against the name.
    if let Some(name_and_port) = &cluster.workers_dns {
        let name = name_and_port
            .rsplit_once(':')
            .map_or(name_and_port.as_str(), |(name, _)| name);
        tls = tls.naming_addresses(name);
    }
    Ok(Some(ClusterOptions {
        workers: cluster.workers.clone(),
        self_url,
        offsets_per_task: cluster.offsets_per_task,
        lake_rows_per_task: cluster.lake_rows_per_task,
        workers_dns: cluster.workers_dns.clone(),
        tls,
    }))
}

/// Refuses what a cluster cannot do yet, before the gateway starts.
fn check_cluster_args(args: &ServeArgs) -> anyhow::Result<()> {
    let cluster = &args.cluster;
    if !cluster.enabled() {
        return Ok(());
    }
    if args.security.users.is_some() && args.security.token_secret.is_none() {
        anyhow::bail!(
            "a gateway in a cluster with --users needs --token-secret, the same on every gateway: \
             the calls between gateways carry the caller as a token the others must accept"
        );
    }
    let scheme = cluster_scheme(args);
    for url in cluster.workers.iter().chain(&cluster.advertise_url) {
        if url.scheme() != scheme || url.host().is_none() || url.port().is_none() {
            anyhow::bail!(
                "{url}: a gateway in a cluster {} is named {scheme}://host:port",
                if scheme == "https" {
                    "of TLS gateways"
                } else {
                    "without TLS"
                }
            );
        }
    }
    Ok(())
}

/// How the gateways of this one's cluster are reached: `https` when they
/// serve TLS (every gateway of a cluster does, or none).
fn cluster_scheme(args: &ServeArgs) -> &'static str {
    if args.security.tls_cert.is_some() {
        "https"
    } else {
        "http"
    }
}

async fn serve(args: ServeArgs, executor: QueryExecutor) -> anyhow::Result<()> {
    args.log.init();
    check_cluster_args(&args)?;
    let auth = Arc::new(authenticator(&args.security)?);
    let tls = tls(&args.security)?;
    let config = match &args.config {
        Some(path) => CatalogConfig::from_file(path)?,
        None => CatalogConfig::default(),
    };
    let registry = args.registry.registry().map_err(anyhow::Error::msg)?;
    let definitions = FileDefinitions::new(config.clone(), registry.clone());
    let tables = definitions.tables().await?;
    let options = args.kafka.options(&config.kafka.properties);
    let lake = Lake::new(
        args.lake.lake.clone(),
        args.lake.lake_option.iter().cloned().collect(),
    );
    // The default lake is relative to the working directory: say which
    // folder that is and what is in it.
    match lake.survey().await {
        Ok(survey) => tracing::info!("{survey}"),
        Err(e) => tracing::warn!("lake {}: not listed: {e}", args.lake.lake),
    }
    let client = KafkaClient::new(options)?;
    // Tables defined by SQL live on the lake, shared by every gateway and
    // the compactor on it.
    let defined = LakeTables::new(
        LakeDefinitions::new(lake.clone(), registry.clone()),
        args.topic_refresh,
    );
    let context = CatalogContext::new(client, tables, args.topic_refresh)
        .with_lake(Some(lake))
        .with_definitions(Some(Arc::new(defined)))
        .with_registry(registry)
        .with_streams(args.max_streams, args.stream_linger);
    let schema = Arc::new(KafkaSchema::new(Arc::new(context)));
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {}", args.listen, listen_error(&e)))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match args.metrics.metrics_listen {
        Some(at) => Some(TcpListener::bind(at).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {at} (--metrics-listen): {}",
                listen_error(&e)
            )
        })?),
        None => None,
    };
    tracing::info!(%addr, brokers = %args.kafka.brokers, lake = %args.lake.lake, tls = tls.is_some(), "kappa gateway started");
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {addr}")?;
    if let Some(metrics) = &metrics_listener {
        writeln!(stdout, "metrics on {}", metrics.local_addr()?)?;
    }
    stdout.flush()?;
    let cluster = cluster_options(&args, addr)?;
    let options = ServeOptions {
        memory_limit: args.memory_limit,
        auth,
        tls,
        limits: Limits::new(
            args.max_concurrent_queries,
            args.queue_timeout,
            Some(args.query_timeout).filter(|t| !t.is_zero()),
            args.max_sql_bytes,
        ),
        shutdown_grace: args.shutdown_grace,
        metrics_listener,
        executor,
        cluster,
    };
    kappa_gateway::serve_with(
        listener,
        schema,
        options,
        kappa_catalog::cli::shutdown_signal(),
    )
    .await?;
    tracing::info!("kappa gateway stopped");
    Ok(())
}

//! The `gateway` binary: parses configuration, sets up logs and traces,
//! builds a [`gateway::Node`] (with the gRPC hooks when a namespace names a
//! hooks backend, see [`gateway::Node::builder`]), binds the listeners and
//! serves it.
//!
//! With text logs (the default) it prints `gateway listening on <addr>` on
//! stdout once the client listener is bound, then `gateway admin listening
//! on <addr>` for the admin API (`[admin] listen`), then `gateway ops
//! listening on <addr>` when the operations port is configured (`[ops]
//! listen`, `GATEWAY_OPS__LISTEN`), so that scripts and tests that bind
//! port 0 learn the addresses. With JSON logs stdout carries only JSON
//! lines: the addresses are in the start-up summary (`gateway started`,
//! with the version, node id, listeners, bus and namespaces), which both
//! formats log.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use gateway::config::LogFormat;
use gateway::telemetry::{self, TracingOptions};
use gateway::{Node, RunError};
use tokio::io::AsyncWriteExt;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(f: LogFormatArg) -> Self {
        match f {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

/// Socket.IO gateway node.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// Client listener address (overrides `server.listen`).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Admin gRPC listener address (overrides `admin.listen`).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Validate the configuration and exit (0 valid, 2 invalid).
    #[arg(long)]
    check_config: bool,
    /// Log format (overrides `telemetry.log_format`; default text).
    #[arg(long, value_enum, env = "GATEWAY_LOG_FORMAT")]
    log_format: Option<LogFormatArg>,
}

/// Resolves at SIGTERM or Ctrl-C. The handlers are installed when this is
/// called, not when the future is first polled: a SIGTERM that comes while
/// the node is still starting (its clients may already be connected) must
/// start a drain, not kill the process.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async move {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind the {what} listener on {addr}"))
}

async fn announce(line: String) -> anyhow::Result<()> {
    let mut stdout = tokio::io::stdout();
    stdout.write_all(line.as_bytes()).await?;
    stdout.flush().await?;
    Ok(())
}

/// An optional listener's address, or `none`.
fn listed(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "none".to_owned(), |a| a.to_string())
}

/// The bus as the start-up summary names it: `in-process`, or the Redis
/// URL without its credentials.
fn bus_summary(redis_url: Option<&str>) -> String {
    let Some(url) = redis_url else {
        return "in-process".to_owned();
    };
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***{}", &url[..scheme_end], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Prints why the configuration cannot be used, with the errors beneath
/// (`invalid configuration: telemetry.log_level: "x=" is not a log filter:
/// ...`), and exits with status 2.
fn invalid(e: anyhow::Error) -> ! {
    eprintln!("{e:#}");
    std::process::exit(2)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config = match gateway::Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => invalid(e.into()),
    };
    if let Some(listen) = cli.listen {
        config.server.listen = listen;
    }
    if let Some(listen) = cli.admin_listen {
        config.admin.listen = listen;
    }
    if let Some(format) = cli.log_format {
        config.telemetry.log_format = format.into();
    }
    if cli.check_config {
        // Builds the node without serving it: every value checked, every
        // file it names loaded (no Redis connection is made).
        match Node::builder(config).build() {
            Ok(_) => {
                println!("configuration is valid");
                return Ok(());
            }
            Err(e) => invalid(e.into()),
        }
    }
    // The node id is settled before logging starts, so that every line
    // carries it.
    let node_id = config
        .cluster
        .node_id
        .get_or_insert_with(|| gateway::NodeId::random().to_string())
        .clone();
    let json_logs = config.telemetry.log_format == LogFormat::Json;
    let telemetry = telemetry::init(
        &TracingOptions::from_config(&config.telemetry).with_node_id(node_id.clone()),
    )?;
    // Plain lines on stdout only when the logs do not go there as JSON.
    let announce = |line: String| async move {
        if json_logs {
            Ok(())
        } else {
            announce(line).await
        }
    };
    // From here on, SIGTERM drains (see `shutdown_signal`).
    let shutdown = shutdown_signal();
    let node = match Node::builder(config).connect().await {
        Ok(node) => node,
        Err(RunError::Config(e)) => invalid(e.into()),
        Err(e) => return Err(e.into()),
    };

    let config = node.config();
    let client = bind(config.server.listen, "client").await?;
    let admin = bind(config.admin.listen, "admin API").await?;
    let ops = match config.ops.listen {
        Some(addr) => Some(bind(addr, "operations").await?),
        None => None,
    };
    let addr = client.local_addr()?;
    tracing::info!(%addr, path = %config.server.path, "gateway listening");
    announce(format!("gateway listening on {addr}\n")).await?;
    let admin_addr = admin.local_addr()?;
    tracing::info!(
        addr = %admin_addr,
        tls = config.admin.tls_cert.is_some(),
        token = config.admin.token.is_some(),
        "admin API listening"
    );
    announce(format!("gateway admin listening on {admin_addr}\n")).await?;
    let mut listeners = gateway::Listeners::new(client).with_admin(admin);
    let (mut ops_addr, mut internal_addr) = (None, None);
    if let Some(addr) = config.cluster.internal_listen {
        let internal = bind(addr, "internal").await?;
        let addr = internal.local_addr()?;
        tracing::info!(%addr, "internal listener (forwarded requests) listening");
        announce(format!("gateway internal listening on {addr}\n")).await?;
        internal_addr = Some(addr);
        listeners = listeners.with_internal(internal);
    }
    if let Some(ops) = ops {
        let addr = ops.local_addr()?;
        tracing::info!(%addr, "operations port listening");
        announce(format!("gateway ops listening on {addr}\n")).await?;
        ops_addr = Some(addr);
        listeners = listeners.with_ops(ops);
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        node_id,
        client = %addr,
        admin = %admin_addr,
        ops = %listed(ops_addr),
        internal = %listed(internal_addr),
        bus = %bus_summary(config.cluster.redis_url.as_deref()),
        namespaces = %config.effective_namespaces().iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(","),
        "gateway started"
    );
    let served = node.serve(listeners, shutdown).await;
    telemetry.shutdown().await;
    served?;
    Ok(())
}

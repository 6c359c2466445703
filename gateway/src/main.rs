//! The `gateway` binary: parses configuration, sets up logs and traces,
//! builds a [`gateway::Node`] (with the gRPC hooks when a namespace names a
//! hooks backend, see [`gateway::Node::builder`]), binds the listeners and
//! serves it.
//!
//! It prints `gateway listening on <addr>` once the client listener is
//! bound, then `gateway admin listening on <addr>` for the admin API
//! (`[admin] listen`), then `gateway ops listening on <addr>` when the
//! operations port is configured (`[ops] listen`, `GATEWAY_OPS__LISTEN`), so
//! that scripts and tests that bind port 0 learn the addresses.

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
    let telemetry = telemetry::init(&TracingOptions::from_config(&config.telemetry))?;
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
    if let Some(addr) = config.cluster.internal_listen {
        let internal = bind(addr, "internal").await?;
        let addr = internal.local_addr()?;
        tracing::info!(%addr, "internal listener (forwarded requests) listening");
        announce(format!("gateway internal listening on {addr}\n")).await?;
        listeners = listeners.with_internal(internal);
    }
    if let Some(ops) = ops {
        let addr = ops.local_addr()?;
        tracing::info!(%addr, "operations port listening");
        announce(format!("gateway ops listening on {addr}\n")).await?;
        listeners = listeners.with_ops(ops);
    }
    let served = node.serve(listeners, shutdown).await;
    telemetry.shutdown().await;
    served?;
    Ok(())
}

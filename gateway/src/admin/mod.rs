//! The admin API: the gRPC service through which backends drive the sockets
//! of the whole cluster (`socketio_gateway.admin.v1.Admin`, in `proto/`).
//!
//! Every node serves it on its admin port and acts for the whole cluster
//! through [`SocketIo`]'s cluster-wide operations. The pieces:
//!
//! - [`service`]: the rpcs (check, run within the client's deadline, answer);
//! - [`convert`]: request checks (`INVALID_ARGUMENT`), conversions, and the
//!   status of a failed operation (`UNAVAILABLE` when the bus is down);
//! - [`deadline`]: the client's `grpc-timeout` (`DEADLINE_EXCEEDED`);
//! - [`auth`]: the bearer tokens (`UNAUTHENTICATED`), a tower layer in front
//!   of every service on the port, reflection included; `admin.token_file`
//!   is read again every 10 s and on SIGHUP while the port is served;
//! - [`call`]: every call counted by method and status code, and timed, in
//!   the node's metrics (through [`crate::telemetry`], which also opens a
//!   span per call).
//!
//! [`AdminApi::serve`] runs the port: the admin service, gRPC reflection
//! (v1 and v1alpha, so `grpcurl` needs no `.proto` files), the standard
//! health service `grpc.health.v1.Health` (SERVING while the node is ready,
//! NOT_SERVING otherwise; answered without a token, like `/readyz`), the
//! token check, and TLS when `[admin] tls_cert`/`tls_key` are set.

pub(crate) mod auth;
pub(crate) mod call;
pub(crate) mod convert;
pub(crate) mod deadline;
pub(crate) mod service;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gateway_proto::admin::v1::admin_server::{AdminServer, SERVICE_NAME};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::config::{AdminConfig, ConfigError};
use crate::socketio::SocketIo;
use crate::telemetry::{ErrorChain, Metrics};
pub(crate) use service::AdminService;

/// Why the admin port could not be served.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// `admin.tls_cert` and `admin.tls_key` are not both set (see
    /// [`AdminConfig::validate`]).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file of the TLS identity (`key`: `tls_cert` or `tls_key`) cannot
    /// be read.
    #[error("admin TLS: cannot read admin.{key} {}", path.display())]
    TlsRead {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The certificate and key do not make a TLS server identity (not PEM,
    /// not a certificate, not the certificate's key).
    #[error(
        "admin TLS: admin.tls_cert {} and admin.tls_key {} do not make a server identity",
        cert.display(),
        key.display()
    )]
    TlsIdentity {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    /// `admin.token_file` cannot be read or holds no usable token.
    #[error(transparent)]
    TokenFile(#[from] auth::TokenFileError),
    #[error("admin reflection service cannot be built")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("admin server failed")]
    Transport(#[from] tonic::transport::Error),
}

/// Reads `[admin] tls_cert` and `tls_key` (both or neither) and checks that
/// they make a usable server identity. `None` without TLS.
pub(crate) fn tls_config(cfg: &AdminConfig) -> Result<Option<ServerTlsConfig>, AdminError> {
    let Some((cert, key)) = cfg.tls_files()? else {
        return Ok(None);
    };
    let read = |name: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| AdminError::TlsRead {
            key: name,
            path: path.to_owned(),
            source,
        })
    };
    let identity = Identity::from_pem(read("tls_cert", cert)?, read("tls_key", key)?);
    let tls = ServerTlsConfig::new().identity(identity);
    // Building the acceptor parses both files: fail now, not on the first call.
    Server::builder()
        .tls_config(tls.clone())
        .map_err(|source| AdminError::TlsIdentity {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        })?;
    Ok(Some(tls))
}

/// The admin port of one node, ready to serve.
pub(crate) struct AdminApi {
    service: AdminService,
    tokens: auth::Tokens,
    tls: Option<ServerTlsConfig>,
    metrics: Arc<Metrics>,
}

impl AdminApi {
    /// The admin API of the node whose Socket.IO server is `io`, counting
    /// its calls in `metrics`.
    pub(crate) fn new(
        io: SocketIo,
        cfg: &AdminConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, AdminError> {
        Ok(Self {
            service: AdminService::new(io, metrics.clone()),
            tokens: auth::Tokens::load(cfg.token.as_deref(), cfg.token_file.as_deref())?,
            tls: tls_config(cfg)?,
            metrics,
        })
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting
    /// and lets the calls in flight finish. The health service follows
    /// `ready` (the node's readiness).
    pub(crate) async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
        ready: impl Fn() -> bool,
    ) -> Result<(), AdminError> {
        // v1 for grpcurl and current clients, v1alpha for older ones (such
        // as Python's grpcio-reflection).
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(gateway_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name(SERVICE_NAME)
                .with_service_name(HEALTH_SERVICE)
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        let mut server = Server::builder();
        if let Some(tls) = self.tls {
            server = server.tls_config(tls)?;
        }
        let (health, health_service) = tonic_health::server::health_reporter();
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let served = server
            .layer(auth::AuthLayer::new(self.tokens.clone(), self.metrics))
            .add_service(AdminServer::new(self.service))
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(health_service)
            .serve_with_incoming_shutdown(incoming, shutdown);
        tokio::select! {
            served = served => served?,
            never = reload_tokens(self.tokens) => match never {},
            never = follow_readiness(health, ready) => match never {},
        }
        Ok(())
    }
}

/// The name of the standard health service.
pub(crate) const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// How often the health service's status is brought in line with the
/// node's readiness.
const HEALTH_POLL: Duration = Duration::from_millis(500);

/// Sets the health status of the whole server (`""`) and of the admin
/// service to SERVING while `ready()` holds and NOT_SERVING otherwise,
/// checking every [`HEALTH_POLL`] (never returns).
async fn follow_readiness(
    health: tonic_health::server::HealthReporter,
    ready: impl Fn() -> bool,
) -> std::convert::Infallible {
    use tonic_health::ServingStatus;
    let mut reported = None;
    let mut poll = tokio::time::interval(HEALTH_POLL);
    loop {
        poll.tick().await;
        let status = if ready() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if reported != Some(status) {
            for service in ["", SERVICE_NAME] {
                health.set_service_status(service, status).await;
            }
            reported = Some(status);
        }
    }
}

/// How often `admin.token_file` is read again to notice a change.
const TOKEN_FILE_POLL: Duration = Duration::from_secs(10);

/// Reads `admin.token_file` again every [`TOKEN_FILE_POLL`] and at once on
/// SIGHUP, for as long as the port is served (never returns; pending
/// forever without a token file).
async fn reload_tokens(tokens: auth::Tokens) -> std::convert::Infallible {
    let Some(path) = tokens.file().map(Path::to_owned) else {
        return std::future::pending().await;
    };
    #[cfg(unix)]
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(
                error = %ErrorChain(&e),
                "no SIGHUP handler: admin.token_file is read again every {} s only",
                TOKEN_FILE_POLL.as_secs()
            );
            None
        }
    };
    tracing::info!(
        file = %path.display(),
        every_s = TOKEN_FILE_POLL.as_secs(),
        "admin tokens: the file is read again when it changes and on SIGHUP"
    );
    let mut poll = tokio::time::interval(TOKEN_FILE_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.reset();
    loop {
        #[cfg(unix)]
        let why = tokio::select! {
            _ = poll.tick() => "changed",
            Some(()) = async { match &mut hangup { Some(h) => h.recv().await, None => None } } => "SIGHUP",
        };
        #[cfg(not(unix))]
        let why = {
            poll.tick().await;
            "changed"
        };
        match tokens.reload() {
            Ok(true) => tracing::info!(file = %path.display(), on = why, "admin tokens reloaded"),
            Ok(false) if why == "SIGHUP" => {
                tracing::info!(file = %path.display(), "admin tokens unchanged")
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(
                error = %ErrorChain(&e),
                "admin tokens not reloaded: the tokens loaded before stay in use"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn tls_errors_name_the_file_and_keep_the_cause() {
        let dir = std::env::temp_dir().join(format!("gateway-admin-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, "not a certificate").unwrap();
        let mut cfg = AdminConfig {
            tls_cert: Some(cert.clone()),
            tls_key: Some(key.clone()),
            ..AdminConfig::default()
        };

        let e = tls_config(&cfg).unwrap_err();
        assert!(
            matches!(e, AdminError::TlsRead { key: "tls_key", .. }),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!("admin TLS: cannot read admin.tls_key {}", key.display())
        );
        assert!(e.source().unwrap().is::<std::io::Error>());

        std::fs::write(&key, "not a key").unwrap();
        let e = tls_config(&cfg).unwrap_err();
        assert!(matches!(e, AdminError::TlsIdentity { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "admin TLS: admin.tls_cert {} and admin.tls_key {} do not make a server identity",
                cert.display(),
                key.display()
            )
        );
        assert!(e.source().is_some());

        // Only one of the two: the configuration's own error.
        cfg.tls_key = None;
        let e = tls_config(&cfg).unwrap_err();
        assert_eq!(e.to_string(), cfg.validate().unwrap_err().to_string());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

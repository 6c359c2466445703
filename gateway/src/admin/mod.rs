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
//! - [`auth`]: the bearer token (`UNAUTHENTICATED`), a tower layer in front
//!   of every service on the port, reflection included;
//! - [`call`]: every call counted by method and status code, and timed, in
//!   the node's metrics (through [`crate::telemetry`], which also opens a
//!   span per call).
//!
//! [`AdminApi::serve`] runs the port: the admin service, gRPC reflection
//! (v1 and v1alpha, so `grpcurl` needs no `.proto` files), the token check,
//! and TLS when `[admin] tls_cert`/`tls_key` are set.

pub(crate) mod auth;
pub(crate) mod call;
pub(crate) mod convert;
pub(crate) mod deadline;
pub(crate) mod service;

use std::future::Future;
use std::sync::Arc;

use gateway_proto::admin::v1::admin_server::{AdminServer, SERVICE_NAME};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::config::AdminConfig;
use crate::socketio::SocketIo;
use crate::telemetry::Metrics;
pub(crate) use service::AdminService;

/// Why the admin port could not be served.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin TLS: {0}")]
    Tls(String),
    #[error("admin reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("admin server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Reads `[admin] tls_cert` and `tls_key` (both or neither) and checks that
/// they make a usable server identity. `None` without TLS.
pub(crate) fn tls_config(cfg: &AdminConfig) -> Result<Option<ServerTlsConfig>, AdminError> {
    let (cert, key) = match (&cfg.tls_cert, &cfg.tls_key) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        _ => {
            return Err(AdminError::Tls(
                "admin.tls_cert and admin.tls_key must be set together".into(),
            ));
        }
    };
    let read = |what: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            AdminError::Tls(format!("cannot read admin.{what} {}: {e}", path.display()))
        })
    };
    let identity = Identity::from_pem(read("tls_cert", cert)?, read("tls_key", key)?);
    let tls = ServerTlsConfig::new().identity(identity);
    // Building the acceptor parses both files: fail now, not on the first call.
    Server::builder().tls_config(tls.clone()).map_err(|e| {
        AdminError::Tls(format!(
            "admin.tls_cert {} / admin.tls_key {}: {}",
            cert.display(),
            key.display(),
            error_chain(&e)
        ))
    })?;
    Ok(Some(tls))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The admin port of one node, ready to serve.
pub(crate) struct AdminApi {
    service: AdminService,
    token: Option<String>,
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
            token: cfg.token.clone(),
            tls: tls_config(cfg)?,
            metrics,
        })
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting
    /// and lets the calls in flight finish.
    pub(crate) async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), AdminError> {
        // v1 for grpcurl and current clients, v1alpha for older ones (such
        // as Python's grpcio-reflection).
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(gateway_proto::FILE_DESCRIPTOR_SET)
                .with_service_name(SERVICE_NAME)
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        let mut server = Server::builder();
        if let Some(tls) = self.tls {
            server = server.tls_config(tls)?;
        }
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        server
            .layer(auth::AuthLayer::new(self.token.as_deref(), self.metrics))
            .add_service(AdminServer::new(self.service))
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await?;
        Ok(())
    }
}

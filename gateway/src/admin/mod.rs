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
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gateway_proto::admin::v1::admin_server::{AdminServer, SERVICE_NAME};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::config::{AdminConfig, ConfigError};
use crate::socketio::SocketIo;
use crate::telemetry::Metrics;
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

//! What the admin API tests add to the shared harness: the configuration of
//! their nodes, admin clients (with or without a token, with or without
//! TLS) for a node started with `.admin()`, and the node's count of admin
//! calls.

use gateway::Config;
use gateway_proto::admin::v1::admin_client::AdminClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::support::node::TestNode;

/// Adds `authorization: Bearer <token>` to every call, when it has one.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Admin = AdminClient<InterceptedService<Channel, Bearer>>;

/// An admin client on `channel`, sending `token` when given.
pub fn admin_on(channel: Channel, token: Option<&str>) -> Admin {
    let bearer = token.map(|t| format!("Bearer {t}").parse().expect("ascii token"));
    AdminClient::with_interceptor(channel, Bearer(bearer))
}

/// The configuration of a test node: namespaces `/` (join anything),
/// `/chat` and `/tenant-*`; fast heartbeats so that nodes find each other
/// and notice a death within a second; `extra` TOML appended.
pub fn config(extra: &str) -> Config {
    let text = format!(
        r#"
        [cluster]
        heartbeat_interval_ms = 200
        node_timeout_ms = 1000
        request_timeout_ms = 2000
        {extra}

        [[namespaces]]
        name = "/"
        join = ["*"]
        publish = true

        [[namespaces]]
        name = "/chat"
        join = ["*"]

        [[namespaces]]
        name = "/tenant-*"
        "#
    );
    Config::from_toml(&text).expect("test configuration")
}

// Methods of the shared test node that only the admin tests need.
impl TestNode {
    /// Admin calls of `method` (`"Emit"`) that ended with `code`
    /// (`"INVALID_ARGUMENT"`), as the node's
    /// `gateway_admin_requests_total{method,code}` counts them.
    pub fn admin_calls(&self, method: &str, code: &str) -> u64 {
        let calls = self.metric(
            "gateway_admin_requests_total",
            &[("method", method), ("code", code)],
        );
        calls as u64
    }

    /// A plaintext admin client with the node's own token (if any).
    pub async fn admin(&self) -> Admin {
        self.admin_with(self.io.config().admin.token.clone().as_deref())
            .await
    }

    /// A plaintext admin client sending `token`.
    pub async fn admin_with(&self, token: Option<&str>) -> Admin {
        let channel = Endpoint::from_shared(format!("http://{}", self.admin_addr()))
            .expect("an admin URL")
            .connect()
            .await
            .expect("admin connects");
        admin_on(channel, token)
    }

    /// A TLS admin client trusting `ca_pem`, for the name `localhost`.
    pub async fn admin_tls(
        &self,
        ca_pem: &str,
        token: Option<&str>,
    ) -> Result<Admin, tonic::transport::Error> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .domain_name("localhost");
        let channel =
            Endpoint::from_shared(format!("https://localhost:{}", self.admin_addr().port()))
                .expect("an admin URL")
                .tls_config(tls)?
                .connect()
                .await?;
        Ok(admin_on(channel, token))
    }

    /// Whether the node receives other nodes' emits to the whole namespace.
    pub fn subscribed_to_namespace(&self, nsp: &str) -> bool {
        let adapter = self.io.adapter();
        adapter.is_subscribed(&adapter.channels().namespace(nsp))
    }
}

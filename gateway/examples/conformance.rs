//! The server the official socket.io-protocol test suite expects: listens on
//! 127.0.0.1:3000 (or `--listen ADDR`), pingInterval 300 ms, pingTimeout
//! 200 ms, connectTimeout 1000 ms, maxPayload 1000000, CORS `*`, namespaces
//! `/` and `/custom`.
//!
//! Behaviour, built on the in-process hooks:
//! - on connect, emits `auth` with the handshake's auth object (or `{}`);
//! - on `message`, emits `message-back` with every argument (binary kept);
//! - on `message-with-ack`, acks with every argument;
//! - on `request-ack` (event, ...args), emits `event(...args)` asking for an
//!   ack, then emits `ack-result` with the client's answer (or
//!   `{"timeout":true}` after 2 s): server -> client acks for tests.
//!
//! Run: `cargo run --release -p gateway --example conformance`.

use std::sync::Arc;
use std::time::Duration;

use gateway::hooks::{ConnectDecision, ConnectRequest, Event, HookError, Hooks};
use gateway::socketio::{Payload, Socket};
use gateway::{Config, Listeners, Node};
use serde_json::value::RawValue;

struct Conformance;

#[async_trait::async_trait]
impl Hooks for Conformance {
    fn handles_connect(&self, _namespace: &str) -> bool {
        true
    }

    fn handles_events(&self, _namespace: &str) -> bool {
        true
    }

    async fn on_connect(&self, req: ConnectRequest<'_>) -> Result<ConnectDecision, HookError> {
        let auth = req.auth.cloned().unwrap_or_else(|| serde_json::json!({}));
        Ok(ConnectDecision::Allow {
            user_id: None,
            rooms: Vec::new(),
            data: Some(auth),
        })
    }

    fn on_connected(&self, socket: &Arc<Socket>) {
        let auth = socket.data().unwrap_or_else(|| serde_json::json!({}));
        let _ = socket.emit("auth", &Payload::from_values(&[auth]));
    }

    async fn on_event(
        &self,
        socket: &Arc<Socket>,
        event: Event,
    ) -> Result<Option<Payload>, HookError> {
        let args = event.args;
        match event.name.as_str() {
            "message" => {
                let _ = socket.emit("message-back", &args);
                Ok(None)
            }
            "message-with-ack" => Ok(Some(args)),
            "request-ack" => {
                let list: Vec<&RawValue> = serde_json::from_str(&args.args)
                    .map_err(|e| HookError::Failed(e.to_string()))?;
                let Some(name) = list
                    .first()
                    .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
                else {
                    return Err(HookError::Failed("request-ack needs an event name".into()));
                };
                let rest: Vec<&str> = list.iter().skip(1).map(|v| v.get()).collect();
                let inner = Payload {
                    args: format!("[{}]", rest.join(",")),
                    attachments: args.attachments.clone(),
                };
                // Sent now, in order; only the wait for the answer is spawned.
                let pending = socket
                    .send_with_ack(&name, &inner)
                    .map_err(|e| HookError::Failed(e.to_string()))?;
                let socket = socket.clone();
                tokio::spawn(async move {
                    let result = match pending.wait(&socket, Duration::from_secs(2)).await {
                        Ok(answer) => answer,
                        Err(_) => Payload::from_values(&[serde_json::json!({"timeout": true})]),
                    };
                    let _ = socket.emit("ack-result", &result);
                });
                Ok(None)
            }
            _ => Ok(None),
        }
    }
}

fn config() -> Config {
    Config::from_toml(
        r#"
        [server]
        listen = "127.0.0.1:3000"
        cors_origins = ["*"]
        ping_interval_ms = 300
        ping_timeout_ms = 200
        connect_timeout_ms = 1000
        max_payload = 1000000
        [[namespaces]]
        name = "/"
        [[namespaces]]
        name = "/custom"
        "#,
    )
    .expect("static configuration")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut config = config();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let addr = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--listen needs ADDR"))?;
                config.server.listen = addr.parse()?;
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
    println!("gateway listening on {}", listener.local_addr()?);
    let node = Node::builder(config).hooks(Arc::new(Conformance)).build()?;
    node.serve(Listeners::new(listener), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

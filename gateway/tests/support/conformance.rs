//! The conformance server: the configuration and the application hooks the
//! official Socket.IO test suites expect of the server they run against.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway::hooks::{ConnectDecision, ConnectRequest, Event, HookError, Hooks};
use gateway::reason::DisconnectReason;
use gateway::socketio::{Payload, Socket};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The configuration the official test suites run against: pingInterval
/// 300 ms, pingTimeout 200 ms, connectTimeout 1000 ms, maxPayload 1000000,
/// CORS `*`, namespaces `/` and `/custom`.
pub const CONFORMANCE: &str = r#"
[server]
cors_origins = ["*"]
ping_interval_ms = 300
ping_timeout_ms = 200
connect_timeout_ms = 1000
max_payload = 1000000
[[namespaces]]
name = "/"
[[namespaces]]
name = "/custom"
"#;

/// The behaviour the official Socket.IO test suite expects of the server:
/// - on connect, emits `auth` with the CONNECT auth object (or `{}`);
/// - `message(...args)` -> emits `message-back(...args)`, binary kept;
/// - `message-with-ack(...args)` -> acks with `args`;
/// - `request-ack(event, ...args)` -> emits `event(...args)` asking for an
///   ack, then emits `ack-result` with the client's answer, or
///   `{"timeout":true}` after [`Conformance::ACK_TIMEOUT`].
///
/// It also records every disconnect with its reason.
#[derive(Default)]
pub struct Conformance {
    disconnects: Mutex<Vec<(String, DisconnectReason)>>,
}

impl Conformance {
    pub const ACK_TIMEOUT: Duration = Duration::from_millis(600);

    /// The reasons recorded so far for socket `id`.
    pub fn reasons_of(&self, id: &str) -> Vec<DisconnectReason> {
        self.disconnects
            .lock()
            .expect("disconnect log")
            .iter()
            .filter(|(sid, _)| sid == id)
            .map(|(_, r)| *r)
            .collect()
    }
}

/// `[a, b, c]` as raw JSON values, or an error for anything else.
fn split_args(args: &str) -> Result<Vec<Box<RawValue>>, HookError> {
    serde_json::from_str(args).map_err(|e| HookError::Failed(format!("arguments: {e}")))
}

#[async_trait::async_trait]
impl Hooks for Conformance {
    fn handles_connect(&self, _namespace: &str) -> bool {
        true
    }

    fn handles_events(&self, _namespace: &str) -> bool {
        true
    }

    async fn on_connect(&self, req: ConnectRequest<'_>) -> Result<ConnectDecision, HookError> {
        let auth = match req.auth {
            Some(a) => a.clone(),
            None => Value::Object(Map::new()),
        };
        Ok(ConnectDecision::Allow {
            user_id: None,
            rooms: Vec::new(),
            data: Some(auth),
        })
    }

    fn on_connected(&self, socket: &Arc<Socket>) {
        let auth = socket.data().unwrap_or(Value::Object(Map::new()));
        socket
            .emit("auth", &Payload::from_values(&[auth]))
            .expect("emit auth");
    }

    async fn on_event(
        &self,
        socket: &Arc<Socket>,
        event: Event,
    ) -> Result<Option<Payload>, HookError> {
        match event.name.as_str() {
            "message" => {
                socket
                    .emit("message-back", &event.args)
                    .map_err(|e| HookError::Failed(e.to_string()))?;
                Ok(None)
            }
            "message-with-ack" => Ok(Some(event.args)),
            "request-ack" => {
                let list = split_args(&event.args.args)?;
                let name: String = list
                    .first()
                    .and_then(|v| serde_json::from_str(v.get()).ok())
                    .ok_or_else(|| HookError::Failed("request-ack(event, ...)".into()))?;
                let rest: Vec<&str> = list[1..].iter().map(|v| v.get()).collect();
                let inner = Payload {
                    args: format!("[{}]", rest.join(",")),
                    attachments: event.args.attachments.clone(),
                };
                // Asked now, so that requests reach the client in order; the
                // answer is awaited on the side.
                let pending = socket
                    .send_with_ack(&name, &inner)
                    .map_err(|e| HookError::Failed(e.to_string()))?;
                let socket = socket.clone();
                tokio::spawn(async move {
                    let answer = pending
                        .wait(&socket, Self::ACK_TIMEOUT)
                        .await
                        .unwrap_or_else(|_| {
                            Payload::from_values(&[serde_json::json!({ "timeout": true })])
                        });
                    let _ = socket.emit("ack-result", &answer);
                });
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    fn on_disconnect(&self, socket: &Arc<Socket>, reason: DisconnectReason) {
        self.disconnects
            .lock()
            .expect("disconnect log")
            .push((socket.id().to_owned(), reason));
    }
}

//! A small chat backend: implements the gateway's `Hooks` gRPC service, so a
//! local gateway node sends it what chat clients do.
//!
//! - `OnConnect`: admits a client whose `auth.name` is a non-empty string
//!   (user id = the name, joined to room `lobby`); refuses anyone else with
//!   `name required`.
//! - `OnEvent`:
//!   - `chat` (room, text): prints the message with its per-socket sequence
//!     number, keeps the last messages of each room in order, and acks
//!     `{"ok":true,"seq":<sequence>}`; bad arguments are rejected with
//!     INVALID_ARGUMENT, which the client reads as `{"error":"..."}`;
//!   - `history` (room): acks the messages kept for the room, oldest first;
//!   - `whoami`: acks `{"user":<user id>,"socket":<socket id>}`;
//!   - anything else: INVALID_ARGUMENT `unknown event`.
//! - `OnDisconnect`: prints who left and why.
//!
//! What it does not do: relay the messages to the other members of the
//! room. A backend does that with the admin API (`Admin.Emit`, backend ->
//! gateway; see `examples/admin_client.rs` and `docs/api.md`), and clients
//! can relay among themselves with the gateway's `$publish`.
//!
//! Run it, then a gateway whose namespace names it:
//!
//! ```sh
//! cargo run -p gateway --example chat_backend -- --listen 127.0.0.1:50061
//! cat > /tmp/chat.toml <<'EOF'
//! [[namespaces]]
//! name = "/"
//! join = ["*"]
//! publish = true
//! [namespaces.hooks]
//! url = "http://127.0.0.1:50061"
//! EOF
//! cargo run -p gateway -- --config /tmp/chat.toml --listen 127.0.0.1:3000
//! ```
//!
//! and from a JavaScript client:
//!
//! ```js
//! const socket = io("http://127.0.0.1:3000", { auth: { name: "alice" } });
//! console.log(await socket.emitWithAck("chat", "lobby", "hello")); // {ok: true, seq: 1}
//! ```

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use clap::Parser;
use gateway_proto::common::v1::Payload;
use gateway_proto::hooks::v1::hooks_server::{Hooks, HooksServer};
use gateway_proto::hooks::v1::{
    Allow, OnConnectRequest, OnConnectResponse, OnDisconnectRequest, OnDisconnectResponse,
    OnEventRequest, OnEventResponse, Refuse, on_connect_response::Decision,
};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// Messages kept per room.
const HISTORY: usize = 100;

/// Chat backend for the Socket.IO gateway's hooks.
#[derive(Parser, Debug)]
struct Cli {
    /// Address the Hooks service listens on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:50061")]
    listen: SocketAddr,
}

/// One chat message, as received.
#[derive(Debug, Clone)]
struct Message {
    user: String,
    text: String,
}

#[derive(Default)]
struct Chat {
    /// The last [`HISTORY`] messages of each room, oldest first.
    rooms: Mutex<HashMap<String, VecDeque<Message>>>,
}

fn ack(value: Value) -> Response<OnEventResponse> {
    Response::new(OnEventResponse {
        ack_args: Some(Payload {
            json_args: Value::Array(vec![value]).to_string(),
            attachments: Vec::new(),
        }),
    })
}

/// The room (argument 0) and, when `with_text`, the text (argument 1), both
/// strings; otherwise an INVALID_ARGUMENT whose message the client reads.
fn room_and_text(args: Option<&Payload>, with_text: bool) -> Result<(String, String), Status> {
    let json = args.map(|p| p.json_args.as_str()).unwrap_or("[]");
    let args: Vec<Value> = serde_json::from_str(json)
        .map_err(|_| Status::invalid_argument("arguments are not a JSON array"))?;
    let room = match args.first() {
        Some(Value::String(room)) if !room.is_empty() => room.clone(),
        _ => return Err(Status::invalid_argument("a room name is needed")),
    };
    match args.get(1) {
        Some(Value::String(text)) => Ok((room, text.clone())),
        _ if !with_text => Ok((room, String::new())),
        _ => Err(Status::invalid_argument("chat needs a room and a text")),
    }
}

#[tonic::async_trait]
impl Hooks for Chat {
    async fn on_connect(
        &self,
        request: Request<OnConnectRequest>,
    ) -> Result<Response<OnConnectResponse>, Status> {
        let req = request.into_inner();
        let auth: Value = serde_json::from_str(&req.auth).unwrap_or(Value::Null);
        let decision = match auth.get("name").and_then(Value::as_str) {
            Some(name) if !name.is_empty() => {
                println!("{} connected to {} as {name}", req.socket_id, req.namespace);
                Decision::Allow(Allow {
                    user_id: name.to_owned(),
                    rooms: vec!["lobby".to_owned()],
                    data: String::new(),
                })
            }
            _ => Decision::Refuse(Refuse {
                message: "name required".to_owned(),
                data: String::new(),
            }),
        };
        Ok(Response::new(OnConnectResponse {
            decision: Some(decision),
        }))
    }

    async fn on_event(
        &self,
        request: Request<OnEventRequest>,
    ) -> Result<Response<OnEventResponse>, Status> {
        let req = request.into_inner();
        match req.event.as_str() {
            "chat" => {
                let (room, text) = room_and_text(req.args.as_ref(), true)?;
                println!("#{} [{room}] {}: {text}", req.sequence, req.user_id);
                let mut rooms = self.rooms.lock();
                let history = rooms.entry(room).or_default();
                if history.len() == HISTORY {
                    history.pop_front();
                }
                history.push_back(Message {
                    user: req.user_id,
                    text,
                });
                Ok(ack(json!({ "ok": true, "seq": req.sequence })))
            }
            "history" => {
                let (room, _) = room_and_text(req.args.as_ref(), false)?;
                let rooms = self.rooms.lock();
                let messages: Vec<Value> = rooms
                    .get(&room)
                    .into_iter()
                    .flatten()
                    .map(|m| json!({ "user": m.user, "text": m.text }))
                    .collect();
                Ok(ack(Value::Array(messages)))
            }
            "whoami" => Ok(ack(json!({ "user": req.user_id, "socket": req.socket_id }))),
            _ => Err(Status::invalid_argument("unknown event")),
        }
    }

    async fn on_disconnect(
        &self,
        request: Request<OnDisconnectRequest>,
    ) -> Result<Response<OnDisconnectResponse>, Status> {
        let req = request.into_inner();
        println!(
            "{} ({}) left {}: {}",
            req.socket_id, req.user_id, req.namespace, req.reason
        );
        Ok(Response::new(OnDisconnectResponse {}))
    }
}

async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    let addr = listener.local_addr()?;
    let mut stdout = tokio::io::stdout();
    stdout
        .write_all(format!("hooks backend listening on {addr}\n").as_bytes())
        .await?;
    stdout.flush().await?;
    Server::builder()
        .add_service(HooksServer::new(Chat::default()))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown_signal())
        .await?;
    Ok(())
}

//! Baseline for the load test: socketioxide with the socketioxide-redis
//! adapter, speaking the same small contract as the gateway:
//!
//! - `$join(room)`: joins the room, ack `{"ok":true}`;
//! - `$leave(room)`: leaves the room, ack `{"ok":true}`;
//! - `$publish(room, event, payload)`: emits `event(payload)` to the room
//!   except the sender, ack `{"ok":true}` (one payload argument).
//!
//! Like Node's server (and the gateway), every socket is in a room named
//! after its own id, so `$publish` to a socket id is a targeted emit
//! (`SELF_ROOM=0` turns that off).
//!
//! Env: `PORT` (default 3000), `HOST` (default 127.0.0.1), `REDIS_URL`
//! (optional; without it the node runs alone with the local adapter),
//! `NODELAY` (`1`: TCP_NODELAY on every connection, as the gateway and
//! Node's HTTP server set it; by default off, as `axum::serve` leaves it,
//! and the kernel's Nagle algorithm holds small writes while earlier data
//! is unacknowledged).

use std::convert::Infallible;

use axum::serve::ListenerExt;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::adapter::{Adapter, LocalAdapter};
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide_redis::drivers::redis::redis_client as redis;
use socketioxide_redis::{RedisAdapter, RedisAdapterCtr};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn reply(ack: AckSender<impl Adapter>, result: Result<(), &str>) {
    let body = match result {
        Ok(()) => json!({ "ok": true }),
        Err(error) => json!({ "ok": false, "error": error }),
    };
    let _ = ack.send(&body);
}

fn valid_room(room: &str) -> Result<(), &'static str> {
    if room.is_empty() {
        Err("room must be a non-empty string")
    } else {
        Ok(())
    }
}

/// Registers the contract's handlers. It runs as a connect *middleware*:
/// socketioxide sends the CONNECT reply before it runs the connect handler
/// (in a spawned task), so handlers registered there miss events a client
/// emits right after the reply; middlewares run before the reply.
async fn register<A: Adapter>(socket: SocketRef<A>) -> Result<(), Infallible> {
    if std::env::var("SELF_ROOM").as_deref() != Ok("0") {
        socket.join(socket.id);
    }
    socket.on(
        "$join",
        async |s: SocketRef<A>, Data(room): Data<String>, ack: AckSender<A>| {
            let result = valid_room(&room);
            if result.is_ok() {
                s.join(room);
            }
            reply(ack, result);
        },
    );
    socket.on(
        "$leave",
        async |s: SocketRef<A>, Data(room): Data<String>, ack: AckSender<A>| {
            let result = valid_room(&room);
            if result.is_ok() {
                s.leave(room);
            }
            reply(ack, result);
        },
    );
    socket.on(
        "$publish",
        async |s: SocketRef<A>,
               Data((room, event, payload)): Data<(String, String, Value)>,
               ack: AckSender<A>| {
            if let Err(e) = valid_room(&room) {
                return reply(ack, Err(e));
            }
            match s.to(room).emit(&event, &payload).await {
                Ok(()) => reply(ack, Ok(())),
                Err(e) => reply(ack, Err(&e.to_string())),
            }
        },
    );
    Ok(())
}

async fn on_connect<A: Adapter>(_socket: SocketRef<A>) {}

async fn serve<A: Adapter>(layer: SocketIoLayer<A>, adapter: &str) -> Result<(), BoxError> {
    let port: u16 = std::env::var("PORT").map_or(Ok(3000), |p| p.parse())?;
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let app = axum::Router::new().layer(layer);
    let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await?;
    let nodelay = std::env::var("NODELAY").is_ok_and(|v| v == "1");
    println!(
        "socketioxide baseline listening on {} (adapter: {adapter}, nodelay: {nodelay})",
        listener.local_addr()?
    );
    let listener = listener.tap_io(move |tcp| {
        if nodelay {
            let _ = tcp.set_nodelay(true);
        }
    });
    axum::serve(listener, app).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let redis_url = std::env::var("REDIS_URL").unwrap_or_default();
    if redis_url.is_empty() {
        let (layer, io) = SocketIo::builder()
            .with_adapter::<LocalAdapter>(())
            .build_layer();
        io.ns("/", on_connect.with(register));
        return serve(layer, "memory").await;
    }
    // socketioxide-redis's driver needs RESP3 (Redis >= 7).
    let sep = if redis_url.contains('?') { '&' } else { '?' };
    let client = redis::Client::open(format!("{redis_url}{sep}protocol=resp3"))?;
    let ctr = RedisAdapterCtr::new_with_redis(&client).await?;
    let (layer, io) = SocketIo::builder()
        .with_adapter::<RedisAdapter<_>>(ctr)
        .build_layer();
    io.ns("/", on_connect.with(register)).await?;
    serve(layer, "redis").await
}

//! Connection state recovery from a client's side: emitting from a node,
//! connecting with and without a recovery claim, reading stored events
//! with their offsets, and losing a transport.

use serde_json::{Value, json};

use gateway::socketio::{Payload, Target};

use super::node::TestNode;
use super::sio::{AckMode, SioClient};
use super::wait::eventually;

pub fn payload(v: Value) -> Payload {
    Payload::from_values(v.as_array().expect("an array"))
}

/// Emits from `node` (cluster-wide) and waits until it was handed over.
pub async fn emit(node: &TestNode, nsp: &str, target: Target, event: &str, args: Value) {
    node.io
        .emit(nsp, &target, event, &payload(args))
        .await
        .expect("emit");
}

pub async fn connect(node: &TestNode, nsp: &str) -> SioClient {
    SioClient::connect(node.addr, nsp, AckMode::Echo).await
}

/// Connects with the `pid` and `offset` a recovering client sends.
pub async fn reconnect(node: &TestNode, nsp: &str, pid: &str, offset: &str) -> SioClient {
    let auth = json!({ "pid": pid, "offset": offset });
    SioClient::connect_with(node.addr, nsp, AckMode::Echo, Some(auth)).await
}

/// The next event's name, its arguments without the offset, and the
/// offset (its last argument, a string).
pub async fn stored_event(c: &mut SioClient) -> (String, Vec<Value>, String) {
    let (name, mut args, _) = c.event().await;
    let offset = match args.pop() {
        Some(Value::String(o)) => o,
        other => panic!("{name}: no offset, last argument {other:?}"),
    };
    (name, args, offset)
}

/// Closes the client's transport and waits until the node let the socket go.
pub async fn drop_transport(node: &TestNode, c: &SioClient) {
    c.close();
    let (io, nsp, id) = (node.io.clone(), c.nsp.clone(), c.id.clone());
    eventually("the socket to be gone", move || {
        io.socket(&nsp, &id).is_none()
    })
    .await;
}

/// `gateway_recoveries_total` of namespace `/` with `result`.
pub fn recoveries(node: &TestNode, result: &str) -> f64 {
    node.metric(
        "gateway_recoveries_total",
        &[("namespace", "/"), ("result", result)],
    )
}

/// `c` got a new session, not the one of socket `id` with private id
/// `pid`: another socket id, another pid, no replay.
pub fn assert_new_session(c: &SioClient, id: &str, pid: &str) {
    assert_ne!(c.id, id, "a new socket id");
    assert!(c.pid.as_ref().is_some_and(|p| p != pid), "a new pid");
    assert_eq!(c.before_connect, 0);
}

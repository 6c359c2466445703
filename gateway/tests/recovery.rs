//! Connection state recovery (Socket.IO 4.6+): the `pid` in the CONNECT
//! reply, offsets on stored events, and a client that comes back after a
//! transport close with its `pid` and last offset getting its socket id,
//! rooms and exactly the events it missed, on the same node or on another
//! node sharing the in-process broker; and every case where it must not.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gateway::cluster::LocalBroker;
use gateway::socketio::{Payload, Target};
use serde_json::json;
use support::node::{TestNode, config};
use support::recovery::{
    assert_new_session, connect, drop_transport, emit, payload, reconnect, recoveries, stored_event,
};
use support::sio::{AckMode, Incoming, SioClient};
use support::wait::eventually;

const QUIET: Duration = Duration::from_millis(300);

/// `/` and `/other` with recovery (a window of `window_ms`, at most
/// `max_packets` events), `/plain` without.
fn toml(window_ms: u64, max_packets: usize) -> String {
    let recovery = format!(
        "[namespaces.recovery]\nenabled = true\nmax_disconnection_ms = {window_ms}\nmax_packets = {max_packets}\n"
    );
    format!(
        r#"
        [limits]
        rate_limit_per_sec = 0
        [[namespaces]]
        name = "/"
        join = ["*"]
        publish = true
        {recovery}
        [[namespaces]]
        name = "/other"
        join = ["*"]
        {recovery}
        [[namespaces]]
        name = "/plain"
        join = ["*"]
        publish = true
        "#
    )
}

async fn node(window_ms: u64, max_packets: usize) -> TestNode {
    TestNode::builder(config(&toml(window_ms, max_packets)))
        .start()
        .await
}

#[tokio::test]
async fn pid_only_when_enabled_and_offsets_on_stored_events_only() {
    let node = node(60_000, 10_000).await;
    let mut a = connect(&node, "/").await;
    let pid = a.pid.clone().expect("a pid with recovery on");
    assert_eq!(pid.len(), 20);
    assert_ne!(pid, a.id);
    let mut plain = connect(&node, "/plain").await;
    assert_eq!(plain.pid, None, "no pid with recovery off");

    a.join("r").await;
    emit(
        &node,
        "/",
        Target::room("r"),
        "room",
        json!([1, {"k": "v"}]),
    )
    .await;
    let (name, args, first) = stored_event(&mut a).await;
    assert_eq!(
        (name.as_str(), args),
        ("room", vec![json!(1), json!({"k": "v"})])
    );

    // Volatile: not stored, no offset.
    let volatile = Target {
        volatile: true,
        ..Target::default()
    };
    emit(&node, "/", volatile, "vol", json!([2])).await;
    assert_eq!(a.event().await.1, [json!(2)]);

    // With an ack: no offset either.
    let socket = node.io.socket("/", &a.id).expect("the socket");
    let ack = socket.send_with_ack("ask", &payload(json!([3]))).unwrap();
    match a.next(support::wait::DEADLINE).await {
        Some(Incoming::Event {
            name,
            args,
            ack: Some(_),
            ..
        }) => {
            assert_eq!((name.as_str(), args), ("ask", vec![json!(3)]));
        }
        other => panic!("expected the ack request, got {other:?}"),
    }
    ack.wait(&socket, support::wait::DEADLINE).await.unwrap();

    // A direct emit to the socket is stored, like Node's `socket.emit`.
    socket.emit("direct", &payload(json!(["x"]))).unwrap();
    let (name, args, direct) = stored_event(&mut a).await;
    assert_eq!((name.as_str(), args), ("direct", vec![json!("x")]));
    assert_ne!(direct, first);

    // Binary: the offset follows the placeholder.
    let bin = Payload {
        args: r#"[{"_placeholder":true,"num":0}]"#.into(),
        attachments: vec![Bytes::from_static(&[1, 2, 3])],
    };
    node.io
        .emit("/", &Target::default(), "bin", &bin)
        .await
        .unwrap();
    let (name, mut args, attachments) = a.event().await;
    assert_eq!(name, "bin");
    assert!(args.pop().is_some_and(|o| o.is_string()), "offset last");
    assert_eq!(args, [json!({"_placeholder": true, "num": 0})]);
    assert_eq!(attachments, [Bytes::from_static(&[1, 2, 3])]);

    // A client's $publish is stored too.
    let b = connect(&node, "/").await;
    b.join("r").await;
    let reply = b.call("$publish", json!(["r", "pub", 4])).await;
    assert_eq!(reply, [json!({"ok": true})]);
    let (name, args, _) = stored_event(&mut a).await;
    assert_eq!((name.as_str(), args), ("pub", vec![json!(4)]));

    // Without recovery, nothing is added.
    emit(&node, "/plain", Target::default(), "plain", json!(["s"])).await;
    assert_eq!(plain.event().await.1, [json!("s")]);
    node.stop().await;
}

#[tokio::test]
async fn recovers_after_a_transport_close_with_the_same_id_rooms_and_missed_events() {
    let node = node(60_000, 10_000).await;
    let mut a = connect(&node, "/").await;
    let pid = a.pid.clone().unwrap();
    a.join("r").await;
    emit(&node, "/", Target::room("r"), "before", json!([0])).await;
    let (_, _, offset) = stored_event(&mut a).await;
    let sid = a.id.clone();
    drop_transport(&node, &a).await;
    assert_eq!(node.metric("gateway_recovery_sessions", &[]), 1.0);

    emit(&node, "/", Target::room("r"), "m1", json!([1])).await;
    emit(&node, "/", Target::default(), "m2", json!([2])).await;
    emit(&node, "/", Target::room("elsewhere"), "no1", json!([])).await;
    emit(&node, "/", Target::socket(sid.clone()), "m3", json!([3])).await;
    emit(&node, "/", Target::default().except("r"), "no2", json!([])).await;
    let volatile = Target {
        volatile: true,
        ..Target::default()
    };
    emit(&node, "/", volatile, "no3", json!([])).await;
    emit(&node, "/other", Target::default(), "no4", json!([])).await;

    let mut back = reconnect(&node, "/", &pid, &offset).await;
    assert_eq!(back.id, sid, "the same socket id");
    assert_eq!(back.pid.as_deref(), Some(pid.as_str()), "the same pid");
    assert_eq!(
        back.before_connect, 3,
        "the missed events precede the CONNECT reply"
    );
    for (i, expected) in ["m1", "m2", "m3"].into_iter().enumerate() {
        let (name, args, _) = stored_event(&mut back).await;
        assert_eq!((name.as_str(), args), (expected, vec![json!(i + 1)]));
    }
    back.no_event(QUIET).await;
    // Its rooms came back with it, live traffic follows.
    let socket = node.io.socket("/", &sid).expect("the recovered socket");
    assert!(socket.in_room("r"));
    emit(&node, "/", Target::room("r"), "live", json!([])).await;
    assert_eq!(stored_event(&mut back).await.0, "live");
    assert_eq!(recoveries(&node, "recovered"), 1.0);
    assert_eq!(node.metric("gateway_recovery_sessions", &[]), 0.0);

    // The session was used: the same claim again is a new session.
    let again = reconnect(&node, "/", &pid, &offset).await;
    assert_ne!(again.id, sid);
    assert_ne!(again.pid.as_deref(), Some(pid.as_str()));
    assert_eq!(again.before_connect, 0);
    assert_eq!(recoveries(&node, "no_session"), 1.0);

    node.stop().await;
}

#[tokio::test]
async fn a_recovered_socket_recovers_again_from_its_last_offset() {
    let node = node(60_000, 10_000).await;
    let mut a = connect(&node, "/").await;
    let pid = a.pid.clone().unwrap();
    emit(&node, "/", Target::default(), "e0", json!([])).await;
    let (_, _, o0) = stored_event(&mut a).await;
    drop_transport(&node, &a).await;
    emit(&node, "/", Target::default(), "e1", json!([])).await;
    let mut b = reconnect(&node, "/", &pid, &o0).await;
    let (_, _, o1) = stored_event(&mut b).await;
    drop_transport(&node, &b).await;
    emit(&node, "/", Target::default(), "e2", json!([])).await;
    let mut c = reconnect(&node, "/", &pid, &o1).await;
    assert_eq!(c.id, a.id);
    assert_eq!(c.before_connect, 1);
    assert_eq!(stored_event(&mut c).await.0, "e2");
    c.no_event(QUIET).await;
    node.stop().await;
}

#[tokio::test]
async fn recovers_on_another_node_sharing_the_broker_and_order_is_the_logs() {
    let broker = LocalBroker::new();
    let start = || {
        TestNode::builder(config(&toml(60_000, 10_000)))
            .bus(Arc::new(broker.connect()))
            .start()
    };
    let (n1, n2) = (start().await, start().await);
    let mut a = connect(&n1, "/").await;
    let mut b = connect(&n2, "/").await;
    a.join("r").await;
    b.join("r").await;

    // Emits alternate between the nodes: each client gets them in the one
    // order of the log, whichever node it is on.
    for i in 0..20 {
        let node = if i % 2 == 0 { &n1 } else { &n2 };
        emit(node, "/", Target::room("r"), "seq", json!([i])).await;
    }
    let mut offset = String::new();
    for c in [&mut a, &mut b] {
        for i in 0..20 {
            let (_, args, o) = stored_event(c).await;
            assert_eq!(args, [json!(i)], "{}: event {i}", c.id);
            offset = o;
        }
    }

    let (sid, pid) = (a.id.clone(), a.pid.clone().unwrap());
    drop_transport(&n1, &a).await;
    emit(&n2, "/", Target::room("r"), "m1", json!([])).await;
    emit(&n1, "/", Target::default(), "m2", json!([])).await;
    emit(&n2, "/", Target::socket(sid.clone()), "m3", json!([])).await;

    // Back on the other node.
    let mut back = reconnect(&n2, "/", &pid, &offset).await;
    assert_eq!(back.id, sid);
    assert_eq!(back.before_connect, 3);
    for expected in ["m1", "m2", "m3"] {
        assert_eq!(stored_event(&mut back).await.0, expected);
    }
    // Live: to its room and to its id, from either node.
    emit(&n1, "/", Target::room("r"), "live1", json!([])).await;
    emit(&n1, "/", Target::socket(sid.clone()), "live2", json!([])).await;
    assert_eq!(stored_event(&mut back).await.0, "live1");
    assert_eq!(stored_event(&mut back).await.0, "live2");
    back.no_event(QUIET).await;
    assert!(n2.io.socket("/", &sid).is_some_and(|s| s.in_room("r")));
    assert_eq!(recoveries(&n2, "recovered"), 1.0);
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test]
async fn refused_claims_get_a_new_session() {
    let node = node(60_000, 10_000).await;
    let mut a = connect(&node, "/").await;
    let pid = a.pid.clone().unwrap();
    emit(&node, "/", Target::default(), "e0", json!([])).await;
    let (_, _, offset) = stored_event(&mut a).await;
    drop_transport(&node, &a).await;

    let fresh = |c: &SioClient| assert_new_session(c, &a.id, &pid);
    // A forged pid, a foreign namespace, an unknown offset, no offset.
    fresh(&reconnect(&node, "/", "AAAAAAAAAAAAAAAAAAAA", &offset).await);
    fresh(&reconnect(&node, "/other", &pid, &offset).await);
    fresh(&reconnect(&node, "/", &pid, "bogus").await);
    let auth = json!({ "pid": pid });
    fresh(&SioClient::connect_with(node.addr, "/", AckMode::Echo, Some(auth)).await);
    assert_eq!(recoveries(&node, "no_session"), 1.0);
    assert_eq!(
        node.metric(
            "gateway_recoveries_total",
            &[("namespace", "/other"), ("result", "no_session")]
        ),
        1.0
    );
    assert_eq!(recoveries(&node, "bad_offset"), 1.0);
    // None of them used the session up.
    let back = reconnect(&node, "/", &pid, &offset).await;
    assert_eq!(back.id, a.id);
    node.stop().await;
}

#[tokio::test]
async fn no_session_after_a_namespace_disconnect_by_either_side() {
    let node = node(60_000, 10_000).await;
    // The client leaves (`41`).
    let mut a = connect(&node, "/").await;
    let pid = a.pid.clone().unwrap();
    emit(&node, "/", Target::default(), "e0", json!([])).await;
    let (_, _, offset) = stored_event(&mut a).await;
    a.leave_namespace();
    let (io, id) = (node.io.clone(), a.id.clone());
    eventually("the socket to leave", move || io.socket("/", &id).is_none()).await;
    a.close();
    let back = reconnect(&node, "/", &pid, &offset).await;
    assert_ne!(back.id, a.id);

    // The server disconnects it (DisconnectSockets).
    let mut b = connect(&node, "/").await;
    let pid = b.pid.clone().unwrap();
    emit(&node, "/", Target::socket(b.id.clone()), "e1", json!([])).await;
    let (_, _, offset) = stored_event(&mut b).await;
    node.io
        .disconnect_sockets("/", &Target::socket(b.id.clone()), true)
        .await
        .unwrap();
    b.disconnected().await;
    let again = reconnect(&node, "/", &pid, &offset).await;
    assert_ne!(again.id, b.id);
    assert_eq!(node.metric("gateway_recovery_sessions", &[]), 0.0);
    assert_eq!(recoveries(&node, "no_session"), 2.0);
    node.stop().await;
}

#[tokio::test]
async fn no_session_after_the_window() {
    let node = node(200, 10_000).await;
    let mut a = connect(&node, "/").await;
    let pid = a.pid.clone().unwrap();
    emit(&node, "/", Target::default(), "e0", json!([])).await;
    let (_, _, offset) = stored_event(&mut a).await;
    drop_transport(&node, &a).await;
    // Lets the window pass (not an assertion).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let back = reconnect(&node, "/", &pid, &offset).await;
    assert_ne!(back.id, a.id);
    assert_eq!(recoveries(&node, "no_session"), 1.0);
    node.stop().await;
}

#[tokio::test]
async fn no_recovery_when_missed_events_were_trimmed() {
    let node = node(60_000, 3).await;
    let mut a = connect(&node, "/").await;
    let pid = a.pid.clone().unwrap();
    emit(&node, "/", Target::default(), "e0", json!([])).await;
    let (_, _, offset) = stored_event(&mut a).await;
    drop_transport(&node, &a).await;
    for i in 0..5 {
        emit(&node, "/", Target::default(), "lost", json!([i])).await;
    }
    assert_eq!(node.metric("gateway_recovery_packets", &[]), 3.0);
    let back = reconnect(&node, "/", &pid, &offset).await;
    assert_ne!(back.id, a.id);
    assert_eq!(back.before_connect, 0);
    assert_eq!(recoveries(&node, "bad_offset"), 1.0);
    node.stop().await;
}

/// A replay that does not fit in the connection's outbound queue is not
/// queued at all: the client gets a new session (counted as `failed`), and
/// the session is kept for a later attempt rather than used up.
#[tokio::test]
async fn a_replay_larger_than_the_outbound_queue_is_refused() {
    let toml = toml(60_000, 10_000).replace(
        "rate_limit_per_sec = 0",
        "rate_limit_per_sec = 0\n        outbound_queue_frames = 8",
    );
    let node = TestNode::builder(config(&toml)).start().await;
    let mut a = connect(&node, "/").await;
    let pid = a.pid.clone().unwrap();
    emit(&node, "/", Target::default(), "e0", json!([])).await;
    let (_, _, offset) = stored_event(&mut a).await;
    drop_transport(&node, &a).await;
    for i in 0..20 {
        emit(&node, "/", Target::default(), "missed", json!([i])).await;
    }
    let back = reconnect(&node, "/", &pid, &offset).await;
    assert_ne!(back.id, a.id, "recovered past the queue bound");
    assert_eq!(back.before_connect, 0, "part of the replay was queued");
    assert_eq!(recoveries(&node, "failed"), 1.0);
    assert_eq!(node.metric("gateway_recovery_sessions", &[]), 1.0);
    node.stop().await;
}

//! The gRPC hooks end to end: a real tonic backend, a real node on port 0
//! with `GrpcHooks`, and a raw Socket.IO client over WebSocket. What the
//! node counted is read from its metrics.

mod hooks_support;
mod support;

use std::time::Duration;

use hooks_support::{Backend, Call, start_node};
use support::eio::WsClient;
use support::wait::eventually;
use tokio::time::Instant;

/// A node whose `/chat` namespace calls `backend`, with `extra` added to its
/// hooks table, and a namespace `/` without hooks.
fn chat_config(backend: &Backend, extra: &str) -> String {
    format!(
        r#"
        [cluster]
        node_id = "test01"
        [[namespaces]]
        name = "/"
        [[namespaces]]
        name = "/chat"
        join = ["*"]
        [namespaces.hooks]
        url = "{}"
        {extra}
        "#,
        backend.url()
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test]
async fn admission_allowed_with_user_rooms_data_and_the_handshake() {
    let backend = Backend::start().await;
    let node = start_node(&chat_config(&backend, "timeout_ms = 3000")).await;

    let (mut client, _) = WsClient::open_with(
        &node,
        "&room=a%20b&x=1&x=2",
        &[("x-test", "yes"), ("x-forwarded-for", "10.0.0.1")],
    )
    .await;
    let sid = client
        .connect_ns("/chat", Some(r#"{"name":"alice","n":1}"#))
        .await;

    let socket = node.io.socket("/chat", &sid).expect("socket registered");
    assert_eq!(socket.user_id(), Some("alice"));
    assert!(socket.in_room("lobby"), "rooms: {:?}", socket.rooms());
    assert_eq!(socket.data(), Some(serde_json::json!({ "name": "alice" })));

    let connects = backend.state.connects();
    assert_eq!(connects.len(), 1);
    let req = &connects[0];
    assert_eq!(req.socket_id, sid);
    assert_eq!(req.namespace, "/chat");
    assert_eq!(
        json(&req.auth),
        serde_json::json!({ "name": "alice", "n": 1 })
    );
    assert_eq!(req.headers.get("x-test").map(String::as_str), Some("yes"));
    assert_eq!(
        req.headers.get("x-forwarded-for").map(String::as_str),
        Some("10.0.0.1")
    );
    assert!(req.headers.contains_key("host"), "{:?}", req.headers);
    assert_eq!(req.query.get("EIO").map(String::as_str), Some("4"));
    assert_eq!(
        req.query.get("transport").map(String::as_str),
        Some("websocket")
    );
    assert_eq!(req.query.get("room").map(String::as_str), Some("a b"));
    assert_eq!(req.query.get("x").map(String::as_str), Some("2"));
    assert!(
        req.remote_addr.starts_with("127.0.0.1:"),
        "{}",
        req.remote_addr
    );
    assert_eq!(req.node_id, "test01");
    assert_eq!(req.user_id, "", "no JWT on this namespace");
    match &backend.state.calls()[0] {
        Call::Connect(_, Some(t)) => assert!(*t <= Duration::from_secs(3), "{t:?}"),
        other => panic!("the call carries grpc-timeout: {other:?}"),
    }

    // A namespace without hooks is not sent to the backend.
    client.connect_ns("/", None).await;
    assert_eq!(backend.state.connects().len(), 1);

    let hooks = node.hook_series();
    assert_eq!(
        (hooks.total("connect"), hooks.calls("connect", "ok")),
        (1, 1),
        "{hooks:?}"
    );
    node.stop().await;
}

#[tokio::test]
async fn admission_refused_gives_connect_error_and_keeps_the_connection() {
    let backend = Backend::start().await;
    let node = start_node(&chat_config(&backend, "")).await;

    let (mut client, _) = WsClient::open(&node).await;
    let refused = client.try_connect_ns("/chat", Some(r#"{"name":""}"#)).await;
    assert_eq!(
        refused,
        Err(r#"{"message":"name required","data":{"code":42}}"#.to_owned())
    );
    let refused = client.try_connect_ns("/chat", None).await;
    assert_eq!(
        refused,
        Err(r#"{"message":"name required","data":{"code":42}}"#.to_owned())
    );
    assert!(
        node.io
            .namespaces()
            .get("/chat")
            .is_none_or(|ns| ns.is_empty())
    );

    // The connection is still there for other namespaces, and for a retry.
    client.connect_ns("/", None).await;
    client.connect_ns("/chat", Some(r#"{"name":"bob"}"#)).await;
    let hooks = node.hook_series();
    assert_eq!(hooks.total("connect"), 3, "{hooks:?}");
    assert_eq!(node.refused_connects("/chat"), 2);
    // A refused socket never connected: no OnDisconnect for it.
    client.leave("/chat").await;
    eventually("the disconnect of bob", || {
        backend.state.disconnects().len() == 1
    })
    .await;
    node.stop().await;
}

#[tokio::test]
async fn events_reach_the_backend_in_order_and_acks_come_back() {
    let backend = Backend::start().await;
    let node = start_node(&chat_config(&backend, "")).await;
    let (mut client, _) = WsClient::open(&node).await;
    let sid = client
        .connect_ns("/chat", Some(r#"{"name":"alice"}"#))
        .await;

    // 60 events sent back to back (within the socket's hook queue), each
    // asking for an ack.
    for i in 0..60u64 {
        client
            .emit("/chat", "chat", &format!("[{i}]"), Some(i))
            .await;
    }
    for i in 0..60u64 {
        let ack = client.expect_ack("/chat", i).await;
        assert_eq!(
            json(&ack),
            serde_json::json!([{ "seq": i + 1, "event": "chat" }]),
            "ack {i}"
        );
    }
    let events = backend.state.events();
    assert_eq!(events.len(), 60);
    for (i, ev) in events.iter().enumerate() {
        let i = i as u64;
        assert_eq!(ev.sequence, i + 1, "sequence numbers count from 1");
        assert_eq!(ev.event, "chat");
        assert_eq!(ev.args.as_ref().unwrap().json_args, format!("[{i}]"));
        assert!(ev.wants_ack);
        assert_eq!(
            (ev.socket_id.as_str(), ev.namespace.as_str()),
            (sid.as_str(), "/chat")
        );
        assert_eq!(ev.user_id, "alice");
    }

    // No ack asked: the backend is told, and the client gets nothing back.
    client.emit("/chat", "note", r#"["x"]"#, None).await;
    // Binary both ways: the backend echoes its arguments as the ack.
    client
        .send(r#"451-/chat,500["echo","file",{"_placeholder":true,"num":0},{"k":[1,2]}]"#)
        .await;
    client.send_binary(&[1, 2, 3]).await;
    let head = client.recv_text().await;
    assert_eq!(
        head,
        r#"461-/chat,500["file",{"_placeholder":true,"num":0},{"k":[1,2]}]"#
    );
    client.expect_binary(&[1, 2, 3]).await;
    let events = backend.state.events();
    assert!(!events[60].wants_ack);
    assert_eq!(events[60].sequence, 61);
    let echo = &events[61];
    assert_eq!(echo.sequence, 62);
    assert_eq!(echo.args.as_ref().unwrap().attachments, vec![vec![1, 2, 3]]);

    // Application errors reach the client's ack; others read "backend unavailable".
    client.emit("/chat", "reject", "[]", Some(600)).await;
    assert_eq!(
        client.expect_ack("/chat", 600).await,
        r#"[{"error":"text too long"}]"#
    );
    client.emit("/chat", "crash", "[]", Some(601)).await;
    assert_eq!(
        client.expect_ack("/chat", 601).await,
        r#"[{"error":"backend unavailable"}]"#
    );
    // ... and the socket carries on.
    client.emit("/chat", "chat", "[]", Some(602)).await;
    assert_eq!(
        json(&client.expect_ack("/chat", 602).await),
        serde_json::json!([{ "seq": 65, "event": "chat" }])
    );

    let hooks = node.hook_series();
    assert_eq!(hooks.total("event"), 65, "{hooks:?}");
    let count = |result: &str| hooks.calls("event", result);
    assert_eq!(count("ok") + count("error") + count("unavailable"), 65);
    assert_eq!(
        (count("error"), count("unavailable"), hooks.retries("event")),
        (1, 1, 0),
        "{hooks:?}"
    );
    node.stop().await;
}

#[tokio::test]
async fn disconnects_report_the_reason_after_the_last_event() {
    let backend = Backend::start().await;
    let node = start_node(&chat_config(&backend, "")).await;

    // The client leaves the namespace.
    let (mut client, _) = WsClient::open(&node).await;
    let first = client
        .connect_ns("/chat", Some(r#"{"name":"alice"}"#))
        .await;
    client.leave("/chat").await;
    eventually("the first disconnect", || {
        backend.state.disconnects().len() == 1
    })
    .await;
    let d = &backend.state.disconnects()[0];
    assert_eq!(
        (
            d.socket_id.as_str(),
            d.namespace.as_str(),
            d.user_id.as_str()
        ),
        (first.as_str(), "/chat", "alice")
    );
    assert_eq!(d.reason, "client namespace disconnect");

    // The client closes the connection right after sending events that the
    // backend is slow to take: they are all forwarded before OnDisconnect.
    backend.state.set_event_delay(Duration::from_millis(20));
    let second = client.connect_ns("/chat", Some(r#"{"name":"bob"}"#)).await;
    for i in 0..10 {
        client.emit("/chat", "chat", &format!("[{i}]"), None).await;
    }
    client.close().await;
    eventually("the second disconnect", || {
        backend.state.disconnects().len() == 2
    })
    .await;
    let calls = backend.state.calls();
    let of_second: Vec<&Call> = calls
        .iter()
        .filter(|c| match c {
            Call::Event(e, _) => e.socket_id == second,
            Call::Disconnect(d) => d.socket_id == second,
            Call::Connect(..) => false,
        })
        .collect();
    assert_eq!(of_second.len(), 11, "{of_second:?}");
    for (i, call) in of_second[..10].iter().enumerate() {
        match call {
            Call::Event(e, _) => assert_eq!(e.sequence, i as u64 + 1),
            other => panic!("event {i} expected, got {other:?}"),
        }
    }
    match of_second[10] {
        Call::Disconnect(d) => assert_eq!(d.reason, "transport close"),
        other => panic!("OnDisconnect last, got {other:?}"),
    }
    node.stop().await;
}

#[tokio::test]
async fn a_stopped_backend_gives_clear_errors_and_nothing_hangs() {
    let mut backend = Backend::start().await;
    let node = start_node(&chat_config(&backend, "timeout_ms = 2000")).await;
    let (mut client, _) = WsClient::open(&node).await;
    let sid = client
        .connect_ns("/chat", Some(r#"{"name":"alice"}"#))
        .await;

    backend.stop().await;

    // An event asking for an ack: the ack says what went wrong.
    let started = Instant::now();
    client.emit("/chat", "chat", "[1]", Some(1)).await;
    assert_eq!(
        client.expect_ack("/chat", 1).await,
        r#"[{"error":"backend unavailable"}]"#
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(node.io.socket("/chat", &sid).is_some(), "still connected");

    // A new connection: CONNECT_ERROR within the deadline.
    let (mut other, _) = WsClient::open(&node).await;
    let started = Instant::now();
    assert_eq!(
        other
            .try_connect_ns("/chat", Some(r#"{"name":"bob"}"#))
            .await,
        Err(r#"{"message":"backend unavailable"}"#.to_owned())
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Never reached the backend: retried once.
    let hooks = node.hook_series();
    assert_eq!(
        (
            hooks.calls("connect", "unavailable"),
            hooks.retries("connect")
        ),
        (1, 1),
        "{hooks:?}"
    );
    assert_eq!(
        (hooks.calls("event", "unavailable"), hooks.retries("event")),
        (1, 0),
        "{hooks:?}"
    );

    // The socket still works for what does not need the backend.
    client.emit("/chat", "$join", r#"["room"]"#, Some(2)).await;
    assert_eq!(client.expect_ack("/chat", 2).await, r#"[{"ok":true}]"#);

    // Its departure is reported, fails, and is counted.
    client.close().await;
    eventually("the failed OnDisconnect is counted", || {
        node.hook_series().calls("disconnect", "unavailable") == 1
    })
    .await;
    assert_eq!(node.hook_series().retries("disconnect"), 1);
    node.stop().await;
}

#[tokio::test]
async fn a_slow_backend_is_cut_off_at_the_deadline() {
    let backend = Backend::start().await;
    let node = start_node(&chat_config(&backend, "timeout_ms = 300")).await;
    let (mut client, _) = WsClient::open(&node).await;
    client
        .connect_ns("/chat", Some(r#"{"name":"alice"}"#))
        .await;

    backend.state.set_event_delay(Duration::from_secs(3));
    let started = Instant::now();
    client.emit("/chat", "chat", "[1]", Some(1)).await;
    assert_eq!(
        client.expect_ack("/chat", 1).await,
        r#"[{"error":"backend unavailable"}]"#
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    match backend.state.calls().last() {
        Some(Call::Event(_, Some(t))) => assert!(*t <= Duration::from_millis(300), "{t:?}"),
        other => panic!("the event carries grpc-timeout: {other:?}"),
    }
    // The gateway cancelled the call: the backend is not left holding it.
    eventually("the backend saw the cancellation", || {
        backend.state.in_flight() == 0
    })
    .await;

    backend.state.set_connect_delay(Duration::from_secs(3));
    let (mut other, _) = WsClient::open(&node).await;
    let started = Instant::now();
    assert_eq!(
        other
            .try_connect_ns("/chat", Some(r#"{"name":"bob"}"#))
            .await,
        Err(r#"{"message":"backend unavailable"}"#.to_owned())
    );
    assert!(started.elapsed() < Duration::from_millis(1500));

    let hooks = node.hook_series();
    assert_eq!(
        (
            hooks.calls("event", "timeout"),
            hooks.calls("connect", "timeout")
        ),
        (1, 1),
        "{hooks:?}"
    );
    assert_eq!(hooks.retries("connect"), 0, "a timeout is not retried");
    node.stop().await;
}

#[tokio::test]
async fn calls_in_flight_are_bounded() {
    let backend = Backend::start().await;
    // Two namespaces share the backend and its single slot; `/fast` has a
    // deadline shorter than the backend's answers.
    let node = start_node(&format!(
        r#"
        [[namespaces]]
        name = "/slow"
        [namespaces.hooks]
        url = "{url}"
        max_in_flight = 1
        timeout_ms = 5000
        [[namespaces]]
        name = "/fast"
        [namespaces.hooks]
        url = "{url}"
        max_in_flight = 1
        timeout_ms = 300
        "#,
        url = backend.url()
    ))
    .await;
    let mut clients = Vec::new();
    for (i, nsp) in ["/slow", "/slow", "/slow", "/fast"].iter().enumerate() {
        let (mut c, _) = WsClient::open(&node).await;
        c.connect_ns(nsp, Some(&format!(r#"{{"name":"u{i}"}}"#)))
            .await;
        clients.push((c, *nsp));
    }

    // Three sockets emit at once: their calls take turns, all within the deadline.
    backend.state.set_event_delay(Duration::from_millis(200));
    let started = Instant::now();
    for (c, nsp) in clients.iter_mut().take(3) {
        c.emit(nsp, "chat", "[]", Some(1)).await;
    }
    for (c, nsp) in clients.iter_mut().take(3) {
        let ack = json(&c.expect_ack(nsp, 1).await);
        assert_eq!(ack[0]["event"], "chat", "{ack}");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(550),
        "they waited for each other"
    );
    assert_eq!(backend.state.max_in_flight(), 1);

    // The slot is held by a slow call: a call whose deadline passes while it
    // waits fails at its deadline, without reaching the backend.
    backend.state.set_event_delay(Duration::from_millis(1500));
    let (slow, fast) = clients.split_at_mut(3);
    let (slow, slow_nsp) = &mut slow[0];
    let (fast, fast_nsp) = &mut fast[0];
    slow.emit(slow_nsp, "chat", "[]", Some(2)).await;
    eventually("the slow call is in flight", || {
        backend.state.in_flight() == 1
    })
    .await;
    let started = Instant::now();
    fast.emit(fast_nsp, "chat", "[]", Some(2)).await;
    assert_eq!(
        fast.expect_ack(fast_nsp, 2).await,
        r#"[{"error":"backend unavailable"}]"#
    );
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(backend.state.in_flight(), 1, "the slow call still runs");
    let ack = json(&slow.expect_ack(slow_nsp, 2).await);
    assert_eq!(ack[0]["event"], "chat", "{ack}");

    assert_eq!(backend.state.max_in_flight(), 1);
    let hooks = node.hook_series();
    assert_eq!(
        (
            hooks.calls("event", "ok"),
            hooks.calls("event", "overloaded")
        ),
        (4, 1),
        "{hooks:?}"
    );
    assert_eq!(
        backend.state.events().len(),
        4,
        "the busy call never reached the backend"
    );
    node.stop().await;
}

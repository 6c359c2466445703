//! Limits and bad input (SPEC section 6): every bound has a clear answer and
//! hits only the client that crossed it; malformed input of any shape never
//! panics the node, leaks sessions, or reaches other clients.

mod support;

use std::cell::Cell;
use std::sync::{Arc, Once};
use std::time::Duration;

use gateway::reason::DisconnectReason;
use gateway::socketio::{Payload, Target};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::conformance::{CONFORMANCE, Conformance};
use support::eio::{
    Msg, PollClient, WsClient, assert_engine_error, connect_reply_sid, http_client, packets, send,
    ws_refused,
};
use support::node::{TestNode, start, start_with};
use support::raw::{RawWs, masked};
use support::wait::eventually;

/// A node with the conformance hooks (kept, to read disconnect reasons) and
/// a quiet heartbeat, plus `extra` TOML sections.
async fn node_with(limits: &str, server: &str) -> (TestNode, Arc<Conformance>) {
    let hooks = Arc::new(Conformance::default());
    let toml = format!(
        r#"
[server]
ping_interval_ms = 10000
ping_timeout_ms = 10000
{server}
[limits]
{limits}
[[namespaces]]
name = "/"
join = ["*"]
publish = true
[[namespaces]]
name = "/a"
[[namespaces]]
name = "/b"
[[namespaces]]
name = "/c"
"#
    );
    (start_with(&toml, hooks.clone()).await, hooks)
}

/// Checks that `client` still gets its events answered.
async fn still_served(client: &mut WsClient, tag: &str) {
    client.send(&format!(r#"42["message","{tag}"]"#)).await;
    client
        .expect(&format!(r#"42["message-back","{tag}"]"#))
        .await;
}

#[tokio::test]
async fn too_many_attachments_close_only_that_connection() {
    let (node, hooks) = node_with("max_attachments = 2", "").await;
    let (mut bystander, _) = WsClient::socket(&node, true).await;
    let (mut client, id) = WsClient::socket(&node, true).await;

    // At the limit: fine.
    client
        .send(r#"452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
        .await;
    client.send_binary(&[1]).await;
    client.send_binary(&[2]).await;
    client
        .expect(
            r#"452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
        )
        .await;
    client.expect_binary(&[1]).await;
    client.expect_binary(&[2]).await;

    // Over it: the connection is closed as a protocol error.
    client
        .send(r#"453-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1},{"_placeholder":true,"num":2}]"#)
        .await;
    client.expect_closed().await;
    eventually("the socket is gone", || node.io.socket("/", &id).is_none()).await;
    assert_eq!(hooks.reasons_of(&id), [DisconnectReason::ProtocolError]);
    still_served(&mut bystander, "after attachments").await;
}

#[tokio::test]
async fn the_rate_limit_disconnects_the_flooder_only() {
    let (node, hooks) = node_with("rate_limit_per_sec = 5\nrate_limit_burst = 5", "").await;
    let (mut bystander, _) = WsClient::socket(&node, true).await;
    let (mut flooder, id) = WsClient::socket(&node, true).await;
    for i in 0..50 {
        flooder
            .send_lossy(Msg::Text(format!(r#"42["message",{i}]"#)))
            .await;
    }
    // What was within the burst may be answered before the close.
    flooder.expect_closed().await;
    eventually("the flooder is gone", || node.io.socket("/", &id).is_none()).await;
    assert_eq!(hooks.reasons_of(&id), [DisconnectReason::RateLimited]);
    assert_eq!(node.engine.len(), 1);
    still_served(&mut bystander, "calm").await;
}

#[tokio::test]
async fn a_socket_cannot_join_more_rooms_than_allowed() {
    let (node, _) = node_with("max_rooms_per_socket = 3", "").await;
    let (mut c, id) = WsClient::socket(&node, true).await;
    // The own-id room counts: two more fit.
    c.send(r#"421["$join","one"]"#).await;
    c.expect(r#"431[{"ok":true}]"#).await;
    c.send(r#"422["$join","two"]"#).await;
    c.expect(r#"432[{"ok":true}]"#).await;
    c.send(r#"423["$join","three"]"#).await;
    let refused = c.recv_text().await;
    let ack: serde_json::Value =
        serde_json::from_str(refused.strip_prefix("433").expect("ack 3")).unwrap();
    assert_eq!(ack[0]["ok"], false, "{refused}");
    assert!(ack[0]["error"].is_string());
    assert_eq!(node.io.socket("/", &id).unwrap().rooms().len(), 3);
    // Leaving makes room again; the connection was never at risk.
    c.send(r#"424["$leave","one"]"#).await;
    c.expect(r#"434[{"ok":true}]"#).await;
    c.send(r#"425["$join","three"]"#).await;
    c.expect(r#"435[{"ok":true}]"#).await;
}

#[tokio::test]
async fn a_connection_cannot_join_more_namespaces_than_allowed() {
    let (node, _) = node_with("max_namespaces_per_connection = 2", "").await;
    let (mut c, _) = WsClient::socket(&node, true).await;
    c.connect_ns("/a", None).await;
    c.expect(r#"42/a,["auth",{}]"#).await;
    c.send("40/b,").await;
    let refused = c.recv_text().await;
    let json = refused.strip_prefix("44/b,").expect("CONNECT_ERROR for /b");
    let error: serde_json::Value = serde_json::from_str(json).unwrap();
    assert!(error["message"].is_string(), "{refused}");
    still_served(&mut c, "two namespaces").await;
}

#[tokio::test]
async fn long_event_and_room_names_are_refused() {
    let (node, _) = node_with("max_event_name = 16\nmax_room_name = 8", "").await;
    let (mut c, _) = WsClient::socket(&node, true).await;
    c.send(r#"421["$join","123456789"]"#).await;
    let refused = c.recv_text().await;
    assert!(refused.starts_with(r#"431[{"ok":false"#), "{refused}");
    c.send(r#"422["$join","12345678"]"#).await;
    c.expect(r#"432[{"ok":true}]"#).await;
    let (mut bystander, _) = WsClient::socket(&node, true).await;
    c.send(&format!(r#"42["{}",1]"#, "e".repeat(17))).await;
    c.expect_closed().await;
    still_served(&mut bystander, "names").await;
}

#[tokio::test]
async fn a_websocket_message_over_max_payload_closes_the_connection() {
    let (node, _) = node_with("", "max_payload = 1000").await;
    let (mut bystander, _) = WsClient::socket(&node, true).await;
    let (mut c, _) = WsClient::socket(&node, true).await;
    c.send_lossy(Msg::Text(format!(
        r#"42["message","{}"]"#,
        "x".repeat(2000)
    )))
    .await;
    c.expect_closed().await;
    still_served(&mut bystander, "payload").await;
}

#[tokio::test]
async fn the_node_refuses_connections_over_max_connections() {
    let (node, _) = node_with("max_connections = 2", "").await;
    let (ws, _) = WsClient::open(&node).await;
    let (_poll, _) = PollClient::open(&node).await;
    assert_eq!(node.engine.len(), 2);

    let (status, body) = send(http_client().get(node.url("EIO=4&transport=polling"))).await;
    assert_eq!(status, 503, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(error["code"].is_number() && error["message"].is_string());
    let (status, _) = ws_refused(&node.ws_url("EIO=4&transport=websocket")).await;
    assert_eq!(status, 503);
    assert_eq!(node.engine.len(), 2);

    ws.close().await;
    eventually("a slot frees up", || node.engine.len() == 1).await;
    let (_again, _) = WsClient::open(&node).await;
    assert_eq!(node.engine.len(), 2);
}

#[tokio::test]
async fn a_slow_consumer_is_disconnected_and_readers_get_everything_in_order() {
    let (node, hooks) = node_with("outbound_queue_frames = 4", "").await;
    let (mut reader, _) = WsClient::socket(&node, true).await;
    let (mut slow, slow_id) = WsClient::socket(&node, true).await;
    for c in [&mut reader, &mut slow] {
        c.send(r#"421["$join","feed"]"#).await;
        c.expect(r#"431[{"ok":true}]"#).await;
    }
    let slow_session = node.engine.get(&slow.sid).expect("slow session");
    // From here `slow` never reads: the kernel buffers fill, then its queue.
    let chunk = "z".repeat(128 * 1024);
    let mut sent = 0;
    while !slow_session.is_closed() {
        assert!(sent < 2000, "the slow consumer was never disconnected");
        let args = format!(r#"[{sent},"{chunk}"]"#);
        node.io
            .emit(
                "/",
                &Target::room("feed"),
                "tick",
                &Payload {
                    args: args.clone(),
                    attachments: Vec::new(),
                },
            )
            .await
            .unwrap();
        // The reader keeps up, so its queue never holds more than this one.
        reader
            .expect(&format!(r#"42["tick",{sent},"{chunk}"]"#))
            .await;
        sent += 1;
    }
    eventually("the slow session is unregistered", || {
        node.engine.len() == 1
    })
    .await;
    assert_eq!(hooks.reasons_of(&slow_id), [DisconnectReason::SlowConsumer]);
    assert!(node.io.socket("/", &slow_id).is_none());
    // The reader carries on.
    for i in 0..3 {
        node.io
            .emit(
                "/",
                &Target::room("feed"),
                "after",
                &Payload::from_values(&[i.into()]),
            )
            .await
            .unwrap();
        reader.expect(&format!(r#"42["after",{i}]"#)).await;
    }
    drop(slow);
}

// ---------------------------------------------------------------------------
// Malformed input

thread_local! {
    /// Set on the thread running the fuzz test (its runtime is
    /// current-thread, so every node task runs there too).
    static WATCHED: Cell<bool> = const { Cell::new(false) };
    static PANICS: Cell<usize> = const { Cell::new(0) };
}

/// Counts panics on watched threads, then lets the previous hook report.
fn count_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if WATCHED.with(Cell::get) {
                PANICS.with(|p| p.set(p.get() + 1));
            }
            previous(info);
        }));
    });
}

const SEEDS: &[&str] = &[
    "40",
    "40/a,",
    r#"40{"token":"x"}"#,
    "41",
    "41/a,",
    r#"42["message",1,"2",{"3":[true]}]"#,
    r#"42/a,17["message-with-ack",{"k":[1,2,{"z":null}]}]"#,
    r#"42["request-ack","q",1]"#,
    r#"42["$join","room"]"#,
    r#"421["$publish","room","ev",1]"#,
    r#"451-["message",{"_placeholder":true,"num":0}]"#,
    r#"462-9[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
    r#"430["x"]"#,
    r#"44{"message":"m"}"#,
    "2probe",
    "3",
    "5",
    "6",
    "1",
    "0",
];

const ALPHABET: &[char] = &[
    '0',
    '1',
    '2',
    '3',
    '4',
    '5',
    '6',
    '7',
    '8',
    '9',
    '[',
    ']',
    '{',
    '}',
    '"',
    ',',
    ':',
    '/',
    '-',
    '\\',
    'a',
    'z',
    ' ',
    '\u{0}',
    '\u{1e}',
    '\u{7f}',
    'é',
    '亜',
    '\u{10ffff}',
];

fn random_text(rng: &mut StdRng, max: usize) -> String {
    let len = rng.random_range(0..max);
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
        .collect()
}

/// A frame: a mutated seed, random text, or random bytes.
fn random_frame(rng: &mut StdRng) -> Msg {
    match rng.random_range(0..10) {
        0 => Msg::Binary((0..rng.random_range(0..64)).map(|_| rng.random()).collect()),
        1 => Msg::Text(random_text(rng, 40)),
        _ => {
            let mut chars: Vec<char> = SEEDS[rng.random_range(0..SEEDS.len())].chars().collect();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..=chars.len());
                match rng.random_range(0..4) {
                    0 => chars.truncate(at),
                    1 if at < chars.len() => {
                        chars[at] = ALPHABET[rng.random_range(0..ALPHABET.len())];
                    }
                    2 => {
                        let insert: Vec<char> = random_text(rng, 8).chars().collect();
                        chars.splice(at..at, insert);
                    }
                    _ => {
                        let copy: Vec<char> = chars[at..].to_vec();
                        chars.extend(copy);
                    }
                }
            }
            Msg::Text(chars.into_iter().collect())
        }
    }
}

/// Frames sent in total over WebSocket, and polling bodies posted.
const WS_FRAMES: usize = 2400;
const POLL_BODIES: usize = 600;

#[tokio::test(flavor = "current_thread")]
async fn malformed_frames_never_panic_the_node_nor_leak_sessions() {
    count_panics();
    WATCHED.with(|w| w.set(true));
    let node = start(CONFORMANCE).await;
    let mut rng = StdRng::seed_from_u64(0x5eed_f00d);

    // WebSocket: fresh connections, each fed a few random frames (some after
    // a valid CONNECT), then dropped.
    let mut frames = 0;
    while frames < WS_FRAMES {
        let (mut client, _) = WsClient::open(&node).await;
        if rng.random_bool(0.5) {
            client.send("40").await;
        }
        for _ in 0..rng.random_range(1..=12) {
            client.send_lossy(random_frame(&mut rng)).await;
            frames += 1;
        }
        // Sometimes read what comes back, up to the close.
        if rng.random_bool(0.2) {
            while let Some(msg) = client.next_raw_within(Duration::from_millis(10)).await {
                if msg == Msg::Closed {
                    break;
                }
            }
        }
    }

    // Polling: random bodies to fresh sessions, and random handshakes.
    let http = http_client();
    let mut bodies = 0;
    while bodies < POLL_BODIES {
        let (poll, _) = PollClient::open(&node).await;
        for _ in 0..rng.random_range(1..=4) {
            let body = match random_frame(&mut rng) {
                Msg::Text(t) if rng.random_bool(0.5) => {
                    format!("{t}\u{1e}{}", random_text(&mut rng, 20))
                }
                Msg::Text(t) => t,
                Msg::Binary(b) => format!("b{}", String::from_utf8_lossy(&b)),
                Msg::Closed => String::new(),
            };
            let (status, _) = poll.post(body).await;
            assert!(status == 200 || status == 400, "POST answered {status}");
            bodies += 1;
        }
        let query: String = (0..rng.random_range(0..30))
            .map(|_| {
                let c = ALPHABET[rng.random_range(0..ALPHABET.len())];
                format!("%{:02X}", u32::from(c) & 0x7f)
            })
            .collect();
        let (status, _) = send(http.get(node.url(&format!("EIO=4&{query}")))).await;
        assert!(status < 500, "handshake with junk answered {status}");
    }

    // Nothing panicked, nothing leaked, and the node serves as before.
    assert_eq!(PANICS.with(Cell::get), 0, "node tasks panicked");
    assert!(node.is_serving());
    eventually("every session ends", || node.engine.is_empty()).await;
    assert!(
        node.io.namespaces().all().is_empty(),
        "namespaces left over"
    );
    let (mut client, _) = WsClient::socket(&node, true).await;
    still_served(&mut client, "after the storm").await;
    let (poll, _) = PollClient::open(&node).await;
    poll.post_ok("40").await;
    connect_reply_sid(&poll.recv_packets(2).await[0], "/");
    WATCHED.with(|w| w.set(false));
}

#[tokio::test]
async fn volatile_broadcasts_skip_a_full_queue_without_disconnecting() {
    let (node, _) = node_with("outbound_queue_frames = 4", "").await;
    let (mut slow, _) = WsClient::socket(&node, true).await;
    slow.send(r#"421["$join","feed"]"#).await;
    slow.expect(r#"431[{"ok":true}]"#).await;
    let session = node.engine.get(&slow.sid).expect("session");
    let volatile = Target {
        volatile: true,
        ..Target::room("feed")
    };
    let chunk = Payload::from_values(&["v".repeat(128 * 1024).into()]);
    // Fill the kernel buffers, then the queue, with volatile emits only.
    let mut sent = 0;
    while session.queue().len() < 4 || !session.queue().is_blocked() {
        assert!(sent < 2000, "the queue never filled");
        node.io.emit("/", &volatile, "tick", &chunk).await.unwrap();
        sent += 1;
        tokio::task::yield_now().await;
    }
    for _ in 0..20 {
        node.io.emit("/", &volatile, "tick", &chunk).await.unwrap();
    }
    assert!(!session.is_closed(), "volatile emits never disconnect");
    assert_eq!(
        session.queue().len(),
        4,
        "a full queue drops volatile emits"
    );
    // A regular emit to the same full queue is a slow consumer.
    node.io
        .emit("/", &Target::room("feed"), "tick", &chunk)
        .await
        .unwrap();
    assert!(session.is_closed());
    assert_eq!(session.close_reason(), Some(DisconnectReason::SlowConsumer));
    drop(slow);
}

#[tokio::test]
async fn a_polling_client_that_stops_polling_is_a_slow_consumer() {
    let (node, hooks) = node_with("outbound_queue_frames = 4", "").await;
    let (poll, _) = PollClient::open(&node).await;
    poll.post_ok("40").await;
    let id = connect_reply_sid(&poll.recv_packets(2).await[0], "/");
    let session = node.engine.get(&poll.sid).expect("session");
    // Nobody polls: four frames fit, the fifth is one too many.
    for i in 0..5 {
        node.io
            .emit(
                "/",
                &Target::default(),
                "tick",
                &Payload::from_values(&[i.into()]),
            )
            .await
            .unwrap();
    }
    assert_eq!(session.close_reason(), Some(DisconnectReason::SlowConsumer));
    eventually("the socket is gone", || node.io.socket("/", &id).is_none()).await;
    assert_eq!(hooks.reasons_of(&id), [DisconnectReason::SlowConsumer]);
    // What was queued before the close, then the close packet, then nothing.
    let (status, body) = poll.get().await;
    if status == 200 {
        assert_eq!(
            packets(&body),
            [
                r#"42["tick",0]"#,
                r#"42["tick",1]"#,
                r#"42["tick",2]"#,
                r#"42["tick",3]"#,
                "1"
            ]
        );
        let (status, body) = poll.get().await;
        assert_engine_error(status, &body, 400, 1);
    } else {
        assert_engine_error(status, &body, 400, 1);
    }
}

// ---------------------------------------------------------------------------
// What one client makes the node write and read (issue 12): a raw WebSocket
// client that writes whatever it likes and never reads.

fn slow_consumer_disconnects(node: &TestNode) -> f64 {
    node.metric("gateway_slow_consumer_disconnects_total", &[])
}

/// Writes `chunk` over and over from `raw` until the node closes its
/// session, checking between writes that the session's queue stays within
/// `bound` bytes. Returns the bytes written. At most 60 MB, or 30 s.
async fn flood_until_cut(node: &TestNode, raw: &mut RawWs, chunk: &[u8], bound: usize) -> usize {
    let session = node.engine.get(&raw.sid).expect("session");
    let start = tokio::time::Instant::now();
    let mut written = 0;
    while !session.is_closed() {
        assert!(
            written < 60_000_000 && start.elapsed() < Duration::from_secs(30),
            "not cut off after {written} bytes in {:?}",
            start.elapsed()
        );
        let queued = session.queue().queued_bytes();
        assert!(queued <= bound, "{queued} bytes queued, bound {bound}");
        if !raw.write(chunk).await {
            break;
        }
        written += chunk.len();
    }
    eventually("the session is closed", || session.is_closed()).await;
    written
}

#[tokio::test]
async fn a_ping_flood_that_never_reads_is_cut_off_at_the_outbound_bound() {
    const BOUND: usize = 64 * 1024;
    let (node, _) = node_with(
        &format!("rate_limit_per_sec = 0\noutbound_queue_bytes = {BOUND}"),
        "max_payload = 65536",
    )
    .await;
    let (mut bystander, _) = WsClient::socket(&node, true).await;
    let before = slow_consumer_disconnects(&node);
    let (mut raw, _) = RawWs::open(&node).await;
    let session = node.engine.get(&raw.sid).expect("session");
    // Pings of 125 bytes: each is answered with a 127-byte pong.
    let chunk = masked(0x89, &[b'p'; 125]).repeat(1000);
    let written = flood_until_cut(&node, &mut raw, &chunk, BOUND).await;
    assert_eq!(session.close_reason(), Some(DisconnectReason::SlowConsumer));
    assert!(
        session.queue().len() < 1024,
        "cut by the byte bound, not the frame bound"
    );
    eprintln!("ping flood cut off after {written} bytes of pings");
    // Counted before the session is unregistered.
    eventually("the session is unregistered", || node.engine.len() == 1).await;
    assert_eq!(slow_consumer_disconnects(&node), before + 1.0);
    still_served(&mut bystander, "after the ping flood").await;
}

#[tokio::test]
async fn websocket_control_frames_count_against_the_rate_limit() {
    let (node, hooks) = node_with("rate_limit_per_sec = 5\nrate_limit_burst = 5", "").await;
    let (mut bystander, _) = WsClient::socket(&node, true).await;
    for op in [0x89, 0x8A] {
        let (mut raw, _) = RawWs::open(&node).await;
        let session = node.engine.get(&raw.sid).expect("session");
        // Empty pings (or unsolicited pongs), far over the burst, in one write.
        assert!(raw.write(&masked(op, b"").repeat(50)).await);
        eventually("the flooder is closed", || session.is_closed()).await;
        assert_eq!(session.close_reason(), Some(DisconnectReason::RateLimited));
    }
    eventually("the flooders are gone", || node.engine.len() == 1).await;
    assert!(hooks.reasons_of("nobody").is_empty());
    still_served(&mut bystander, "after control frames").await;
}

#[tokio::test]
async fn the_outbound_queue_is_bounded_in_bytes_for_broadcasts() {
    const BOUND: usize = 1024 * 1024;
    let (node, hooks) = node_with(&format!("outbound_queue_bytes = {BOUND}"), "").await;
    let (mut reader, _) = WsClient::socket(&node, true).await;
    let (mut slow, slow_id) = WsClient::socket(&node, true).await;
    for c in [&mut reader, &mut slow] {
        c.send(r#"421["$join","feed"]"#).await;
        c.expect(r#"431[{"ok":true}]"#).await;
    }
    let slow_session = node.engine.get(&slow.sid).expect("slow session");
    // `slow` never reads again; 128 KiB messages: the byte bound holds 8,
    // far fewer than the 1024 frames of the frame bound.
    let chunk = "z".repeat(128 * 1024);
    let mut sent = 0;
    while !slow_session.is_closed() {
        assert!(sent < 2000, "the slow consumer was never disconnected");
        let queued = slow_session.queue().queued_bytes();
        assert!(queued <= BOUND, "{queued} bytes queued");
        node.io
            .emit(
                "/",
                &Target::room("feed"),
                "tick",
                &Payload {
                    args: format!(r#"[{sent},"{chunk}"]"#),
                    attachments: Vec::new(),
                },
            )
            .await
            .unwrap();
        reader
            .expect(&format!(r#"42["tick",{sent},"{chunk}"]"#))
            .await;
        sent += 1;
    }
    assert!(slow_session.queue().len() <= BOUND / chunk.len() + 1);
    eventually("the slow session is unregistered", || {
        node.engine.len() == 1
    })
    .await;
    assert_eq!(hooks.reasons_of(&slow_id), [DisconnectReason::SlowConsumer]);
    let disconnects = node.metric("gateway_disconnects_total", &[("reason", "slow_consumer")]);
    assert_eq!(disconnects, 1.0);
    still_served(&mut reader, "after the slow one").await;
    drop(slow);
}

#[tokio::test]
async fn a_refused_namespace_is_echoed_truncated() {
    let (node, _) = node_with("", "").await;
    let (mut c, _) = WsClient::open(&node).await;
    let name = format!("/{}", "n".repeat(900_000));
    c.send(&format!("40{name},")).await;
    c.expect(&format!(
        r#"44{},{{"message":"Invalid namespace"}}"#,
        &name[..128]
    ))
    .await;
    // The connection carries on.
    c.connect_ns("/a", None).await;
}

#[tokio::test]
async fn refusals_a_client_never_reads_are_cut_off_at_the_outbound_bound() {
    const BOUND: usize = 64 * 1024;
    let (node, _) = node_with(
        &format!("rate_limit_per_sec = 0\noutbound_queue_bytes = {BOUND}"),
        "max_payload = 65536",
    )
    .await;
    let (mut bystander, _) = WsClient::socket(&node, true).await;
    let (mut raw, _) = RawWs::open(&node).await;
    let session = node.engine.get(&raw.sid).expect("session");
    // CONNECTs to unknown namespaces of 1000 bytes: each refusal echoes at
    // most 128 of them.
    let connect = format!("40/{},", "u".repeat(999));
    let chunk = masked(0x81, connect.as_bytes()).repeat(100);
    flood_until_cut(&node, &mut raw, &chunk, BOUND).await;
    assert_eq!(session.close_reason(), Some(DisconnectReason::SlowConsumer));
    eventually("the session is unregistered", || node.engine.len() == 1).await;
    still_served(&mut bystander, "after the refusals").await;
}

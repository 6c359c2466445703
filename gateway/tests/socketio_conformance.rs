//! Socket.IO v5 conformance: every behaviour the official socket.io-protocol
//! v5 test suite checks (connect, disconnect, messages, acks, binary, invalid
//! packets), against a node running the conformance hooks, with exact
//! packet strings.

mod support;

use std::time::Duration;

use gateway::socketio::Payload;
use support::conformance::CONFORMANCE;
use support::eio::{Msg, PollClient, WsClient, connect_reply_sid};
use support::node::start;
use support::wait::{eventually, within};
use tokio::time::Instant;

// ---------------------------------------------------------------------------
// Connect

#[tokio::test]
async fn connects_to_the_main_namespace() {
    let node = start(CONFORMANCE).await;
    let (mut client, _) = WsClient::open(&node).await;
    client.send("40").await;
    let id = connect_reply_sid(&client.recv_text().await, "/");
    assert_ne!(id, client.sid, "the socket id is not the engine sid");
    client.expect(r#"42["auth",{}]"#).await;
    let socket = node.io.socket("/", &id).expect("registered socket");
    assert_eq!(socket.rooms(), vec![id], "in its own-id room only");
}

#[tokio::test]
async fn connects_to_the_main_namespace_with_auth() {
    let node = start(CONFORMANCE).await;
    let (mut client, _) = WsClient::open(&node).await;
    client.send(r#"40{"token":"123"}"#).await;
    connect_reply_sid(&client.recv_text().await, "/");
    client.expect(r#"42["auth",{"token":"123"}]"#).await;
}

#[tokio::test]
async fn auth_keeps_its_key_order() {
    let node = start(CONFORMANCE).await;
    let (mut client, _) = WsClient::open(&node).await;
    client
        .send(r#"40{"z":1,"a":2,"m":{"y":[true,null],"b":"x"}}"#)
        .await;
    connect_reply_sid(&client.recv_text().await, "/");
    client
        .expect(r#"42["auth",{"z":1,"a":2,"m":{"y":[true,null],"b":"x"}}]"#)
        .await;
}

#[tokio::test]
async fn connects_to_a_custom_namespace() {
    let node = start(CONFORMANCE).await;
    let (mut client, _) = WsClient::open(&node).await;
    client.send("40/custom,").await;
    let id = connect_reply_sid(&client.recv_text().await, "/custom");
    client.expect(r#"42/custom,["auth",{}]"#).await;
    assert!(node.io.socket("/custom", &id).is_some());
    // Without the trailing comma too.
    let (mut other, _) = WsClient::open(&node).await;
    other.send("40/custom").await;
    connect_reply_sid(&other.recv_text().await, "/custom");
    other.expect(r#"42/custom,["auth",{}]"#).await;
}

#[tokio::test]
async fn connects_to_a_custom_namespace_with_auth() {
    let node = start(CONFORMANCE).await;
    let (mut client, _) = WsClient::open(&node).await;
    client.send(r#"40/custom,{"token":"abc"}"#).await;
    connect_reply_sid(&client.recv_text().await, "/custom");
    client.expect(r#"42/custom,["auth",{"token":"abc"}]"#).await;
}

#[tokio::test]
async fn an_unknown_namespace_is_refused_and_the_connection_kept() {
    let node = start(CONFORMANCE).await;
    let (mut client, _) = WsClient::open(&node).await;
    client.send("40/random").await;
    client
        .expect(r#"44/random,{"message":"Invalid namespace"}"#)
        .await;
    // Same connection, a namespace that exists.
    client.send("40").await;
    connect_reply_sid(&client.recv_text().await, "/");
    client.expect(r#"42["auth",{}]"#).await;
    client.send(r#"42["message","still here"]"#).await;
    client.expect(r#"42["message-back","still here"]"#).await;
}

#[tokio::test]
async fn an_invalid_handshake_closes_the_connection() {
    let node = start(CONFORMANCE).await;
    let (mut client, _) = WsClient::open(&node).await;
    client.send("4abc").await;
    client.expect_closed().await;
    eventually("the session is unregistered", || node.engine.is_empty()).await;
}

// socket.io-protocol v5, "Connection to a namespace": "If the server does not
// receive a CONNECT packet first, then it MUST close the connection
// immediately." (The connect timeout is 10 s here, so a close within the
// 5 s deadline is that rule, not the timeout.)
//
// GATEWAY BUG (reported to the lead): `Client::dispatch` ignores EVENT, ACK
// and DISCONNECT packets for a namespace that is not connected, also when no
// namespace was ever connected, so the connection stays open until the
// connect timeout.
#[tokio::test]

async fn a_first_packet_other_than_connect_closes_the_connection() {
    let node =
        start(&CONFORMANCE.replace("connect_timeout_ms = 1000", "connect_timeout_ms = 10000"))
            .await;
    for first in [
        r#"42["message",1]"#,
        "41",
        r#"431["x"]"#,
        r#"42/custom,["message"]"#,
    ] {
        let (mut client, _) = WsClient::open(&node).await;
        client.send(first).await;
        client.expect_closed().await;
    }
}

#[tokio::test]
async fn no_namespace_within_the_connect_timeout_closes_the_connection() {
    let node = start(CONFORMANCE).await;
    let before_open = Instant::now();
    let (mut client, _) = WsClient::open(&node).await;
    client.expect_closed().await;
    let elapsed = before_open.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1000),
        "closed after {elapsed:?}, before connectTimeout"
    );
    assert!(
        elapsed < Duration::from_millis(2500),
        "closed late: {elapsed:?}"
    );

    // Over polling: the session ends too (pongs keep the heartbeat happy).
    let before_open = Instant::now();
    let (poll, _) = PollClient::open(&node).await;
    let closed_at = within("the connect timeout over polling", async {
        loop {
            let (status, body) = poll.get().await;
            if status == 400 {
                return Instant::now();
            }
            match body.as_str() {
                "2" => poll.post_ok("3").await,
                "1" => return Instant::now(),
                other => panic!("unexpected poll {other:?}"),
            }
        }
    })
    .await;
    assert!(closed_at - before_open >= Duration::from_millis(1000));
    eventually("sessions are unregistered", || node.engine.is_empty()).await;
}

// ---------------------------------------------------------------------------
// Disconnect

#[tokio::test]
async fn disconnects_from_the_main_namespace() {
    let node = start(CONFORMANCE).await;
    let (mut client, id) = WsClient::socket(&node, true).await;
    client.send("41").await;
    eventually("the socket is removed", || {
        node.io.socket("/", &id).is_none()
    })
    .await;
    // Nothing but pings arrives afterwards, and the connection stays open.
    let pings = client.expect_only_pings(Duration::from_millis(800)).await;
    assert!(pings >= 1, "the heartbeat goes on");
    assert!(node.engine.get(&client.sid).is_some());
}

#[tokio::test]
async fn disconnecting_a_custom_namespace_keeps_the_main_one() {
    let node = start(CONFORMANCE).await;
    let (mut client, main_id) = WsClient::socket(&node, true).await;
    let custom_id = client.connect_ns("/custom", None).await;
    client.expect(r#"42/custom,["auth",{}]"#).await;
    client.send("41/custom").await;
    client
        .send(r#"42["message","message to main namespace"]"#)
        .await;
    client
        .expect(r#"42["message-back","message to main namespace"]"#)
        .await;
    assert!(node.io.socket("/custom", &custom_id).is_none());
    assert!(node.io.socket("/", &main_id).is_some());
}

#[tokio::test]
async fn a_server_side_disconnect_sends_a_disconnect_packet() {
    let node = start(CONFORMANCE).await;
    let (mut client, id) = WsClient::socket(&node, true).await;
    node.io.socket("/", &id).unwrap().disconnect(false);
    client.expect("41").await;
    assert!(node.io.socket("/", &id).is_none());
    // The connection stays: the client may connect again.
    client.send("40").await;
    connect_reply_sid(&client.recv_text().await, "/");
}

// ---------------------------------------------------------------------------
// Messages

#[tokio::test]
async fn sends_a_plain_text_event() {
    let node = start(CONFORMANCE).await;
    let (mut client, _) = WsClient::socket(&node, true).await;
    client.send(r#"42["message",1,"2",{"3":[true]}]"#).await;
    client
        .expect(r#"42["message-back",1,"2",{"3":[true]}]"#)
        .await;
}

#[tokio::test]
async fn sends_an_event_with_binary_attachments() {
    let node = start(CONFORMANCE).await;
    let (mut client, _) = WsClient::socket(&node, true).await;
    client
        .send(r#"452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
        .await;
    client.send_binary(&[1, 2, 3]).await;
    client.send_binary(&[4, 5, 6]).await;
    client
        .expect(
            r#"452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
        )
        .await;
    client.expect_binary(&[1, 2, 3]).await;
    client.expect_binary(&[4, 5, 6]).await;
}

#[tokio::test]
async fn sends_an_event_with_an_ack() {
    let node = start(CONFORMANCE).await;
    let (mut client, _) = WsClient::socket(&node, true).await;
    client
        .send(r#"42456["message-with-ack",1,"2",{"3":[false]}]"#)
        .await;
    client.expect(r#"43456[1,"2",{"3":[false]}]"#).await;
}

#[tokio::test]
async fn sends_an_event_with_binary_attachments_and_an_ack() {
    let node = start(CONFORMANCE).await;
    let (mut client, _) = WsClient::socket(&node, true).await;
    client
        .send(
            r#"452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
        )
        .await;
    client.send_binary(&[1, 2, 3]).await;
    client.send_binary(&[4, 5, 6]).await;
    client
        .expect(r#"462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
        .await;
    client.expect_binary(&[1, 2, 3]).await;
    client.expect_binary(&[4, 5, 6]).await;
}

/// `42<id>["name",...]` -> the ack id, checking the rest.
fn ack_id_of(packet: &str, rest: &str) -> u64 {
    let after = packet
        .strip_prefix("42")
        .unwrap_or_else(|| panic!("not an event: {packet:?}"));
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    assert!(!digits.is_empty(), "no ack id in {packet:?}");
    assert_eq!(&after[digits.len()..], rest, "event with ack");
    digits.parse().unwrap()
}

#[tokio::test]
async fn the_server_asks_the_client_for_acks() {
    let node = start(CONFORMANCE).await;
    let (mut client, _) = WsClient::socket(&node, true).await;

    // Plain ack.
    client
        .send(r#"42["request-ack","question",1,{"k":"v"}]"#)
        .await;
    let id = ack_id_of(&client.recv_text().await, r#"["question",1,{"k":"v"}]"#);
    client
        .send(&format!(r#"43{id}["answer",{{"z":1,"a":2}}]"#))
        .await;
    client
        .expect(r#"42["ack-result","answer",{"z":1,"a":2}]"#)
        .await;

    // Binary ack.
    client.send(r#"42["request-ack","binary-question"]"#).await;
    let id = ack_id_of(&client.recv_text().await, r#"["binary-question"]"#);
    client
        .send(&format!(r#"461-{id}[{{"_placeholder":true,"num":0}}]"#))
        .await;
    client.send_binary(&[9, 8, 7]).await;
    client
        .expect(r#"451-["ack-result",{"_placeholder":true,"num":0}]"#)
        .await;
    client.expect_binary(&[9, 8, 7]).await;

    // No answer: the server side times out, the connection is fine.
    client.send(r#"42["request-ack","unanswered"]"#).await;
    ack_id_of(&client.recv_text().await, r#"["unanswered"]"#);
    client.expect(r#"42["ack-result",{"timeout":true}]"#).await;

    // An ack for an id never asked is ignored.
    client.send(r#"43999["late"]"#).await;
    client.send(r#"42["message","after"]"#).await;
    client.expect(r#"42["message-back","after"]"#).await;
}

#[tokio::test]
async fn acks_are_matched_to_their_requests_by_id() {
    let node = start(CONFORMANCE).await;
    let (mut client, _) = WsClient::socket(&node, true).await;
    for q in ["q1", "q2", "q3"] {
        client.send(&format!(r#"42["request-ack","{q}"]"#)).await;
    }
    let mut ids = Vec::new();
    for q in ["q1", "q2", "q3"] {
        ids.push(ack_id_of(&client.recv_text().await, &format!(r#"["{q}"]"#)));
    }
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 3, "distinct ack ids: {ids:?}");
    // Answered out of order, each answer goes to its own request.
    for (id, q) in ids.iter().zip(["q1", "q2", "q3"]).rev() {
        client.send(&format!(r#"43{id}["answer to {q}"]"#)).await;
        client
            .expect(&format!(r#"42["ack-result","answer to {q}"]"#))
            .await;
    }
}

#[tokio::test]
async fn events_of_one_socket_are_handled_in_order() {
    let node = start(CONFORMANCE).await;
    let (mut client, _) = WsClient::socket(&node, true).await;
    for i in 0..200 {
        client.send(&format!(r#"42["message",{i}]"#)).await;
    }
    for i in 0..200 {
        client.expect(&format!(r#"42["message-back",{i}]"#)).await;
    }
}

#[tokio::test]
async fn namespaces_are_multiplexed_on_one_connection() {
    let node = start(CONFORMANCE).await;
    let (mut client, _) = WsClient::socket(&node, true).await;
    client.connect_ns("/custom", Some(r#"{"n":1}"#)).await;
    client.expect(r#"42/custom,["auth",{"n":1}]"#).await;
    client.send(r#"42/custom,["message","c"]"#).await;
    client.expect(r#"42/custom,["message-back","c"]"#).await;
    client.send(r#"42["message","m"]"#).await;
    client.expect(r#"42["message-back","m"]"#).await;
    client
        .send(r#"42/custom,7["message-with-ack",{"b":1,"a":0}]"#)
        .await;
    client.expect(r#"43/custom,7[{"b":1,"a":0}]"#).await;
}

#[tokio::test]
async fn socket_io_over_polling() {
    let node = start(CONFORMANCE).await;
    let (poll, _) = PollClient::open(&node).await;
    poll.post_ok(r#"40{"via":"polling"}"#).await;
    let got = poll.recv_packets(2).await;
    connect_reply_sid(&got[0], "/");
    assert_eq!(got[1], r#"42["auth",{"via":"polling"}]"#);
    poll.post_ok(r#"42456["message-with-ack",1,"2",{"3":[false]}]"#)
        .await;
    assert_eq!(
        poll.recv_packets(1).await,
        [r#"43456[1,"2",{"3":[false]}]"#]
    );
    poll.post_ok(
        "452-[\"message\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]\u{1e}bAQID\u{1e}bBAUG",
    )
    .await;
    assert_eq!(
        poll.recv_packets(3).await,
        [
            r#"452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
            "bAQID",
            "bBAUG"
        ]
    );
}

// ---------------------------------------------------------------------------
// Invalid packets

#[tokio::test]
async fn invalid_packets_close_only_that_connection() {
    let node = start(CONFORMANCE).await;
    let (mut bystander, _) = WsClient::socket(&node, true).await;
    for (round, bad) in [
        "4abc",                                             // unknown packet type
        "42{}",                                             // payload not an array
        r#"42abc["message-with-ack",1,"2",{"3":[false]}]"#, // invalid ack id
        "4",                                                // empty Socket.IO packet
        r#"42[]"#,                                          // event without a name
        "431",                                              // ack without payload
        "431{}",                                            // ack payload not an array
        r#"40/custom,"not an object""#,                     // auth not an object
    ]
    .into_iter()
    .enumerate()
    {
        let (mut client, _) = WsClient::socket(&node, true).await;
        client.send(bad).await;
        client.expect_closed().await;
        bystander.send(&format!(r#"42["message",{round}]"#)).await;
        bystander
            .expect(&format!(r#"42["message-back",{round}]"#))
            .await;
    }
    // A placeholder that points past the attachments.
    let (mut client, _) = WsClient::socket(&node, true).await;
    client
        .send(r#"451-["message",{"_placeholder":true,"num":1}]"#)
        .await;
    client.send_lossy(Msg::Binary(vec![1])).await;
    client.expect_closed().await;
    // A binary frame that no packet announced.
    let (mut client, _) = WsClient::socket(&node, true).await;
    client.send_binary(&[1, 2, 3]).await;
    client.expect_closed().await;
    // A text packet while attachments are still expected.
    let (mut client, _) = WsClient::socket(&node, true).await;
    client
        .send(r#"451-["message",{"_placeholder":true,"num":0}]"#)
        .await;
    client.send(r#"42["message",1]"#).await;
    client.expect_closed().await;

    bystander.send(r#"42["message","last"]"#).await;
    bystander.expect(r#"42["message-back","last"]"#).await;
    eventually("only the bystander is left", || node.engine.len() == 1).await;
}

#[tokio::test]
async fn emits_from_the_server_keep_key_order() {
    let node = start(CONFORMANCE).await;
    let (mut client, id) = WsClient::socket(&node, true).await;
    let socket = node.io.socket("/", &id).unwrap();
    let payload = Payload {
        args: r#"[{"zeta":1,"alpha":{"y":2,"b":3}},"s",1.50]"#.into(),
        attachments: Vec::new(),
    };
    socket.emit("ordered", &payload).unwrap();
    client
        .expect(r#"42["ordered",{"zeta":1,"alpha":{"y":2,"b":3}},"s",1.50]"#)
        .await;
}

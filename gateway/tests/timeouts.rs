//! Every phase of a client connection has a deadline, and accepted TCP
//! connections are bounded (issue 12, item 2): silent and slow-header
//! connections are closed at `server.request_head_timeout_ms`, a stalled
//! POST body at `server.request_body_timeout_ms`, a `Content-Length` over
//! `max_payload` is refused before any of it is read, and silent
//! connections count against `limits.max_tcp_connections`. Meanwhile the
//! members of a room keep `$join` / `$publish` working.
//!
//! Timeouts are short here (hundreds of ms) so the tests stay fast; each
//! assertion is from the node's side (it closed the connection, within the
//! bound; its metrics and counts).

mod support;

use std::time::Duration;

use support::eio::{PollClient, WsClient, ws_connect};
use support::node::{TestNode, start_plain};
use support::raw::until_closed;
use support::wait::{eventually, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const HEAD_TIMEOUT_MS: u64 = 400;
const BODY_TIMEOUT_MS: u64 = 400;
/// How late after its bound a close may come on a busy test machine.
const SLACK: Duration = Duration::from_millis(1500);

fn config(limits: &str) -> String {
    format!(
        r#"
[server]
ping_interval_ms = 10000
ping_timeout_ms = 10000
request_head_timeout_ms = {HEAD_TIMEOUT_MS}
request_body_timeout_ms = {BODY_TIMEOUT_MS}
max_payload = 100000
[limits]
outbound_queue_bytes = 100000
{limits}
[[namespaces]]
name = "/"
join = ["*"]
publish = true
"#
    )
}

fn head_timeouts(node: &TestNode) -> f64 {
    node.metric("gateway_http_timeouts_total", &[("phase", "request_head")])
}

fn tcp_open(node: &TestNode) -> f64 {
    node.metric("gateway_tcp_connections", &[])
}

/// Two members of room `r`: one publishes, the other must hear it.
struct Members {
    a: WsClient,
    b: WsClient,
    next: u64,
}

impl Members {
    async fn join(node: &TestNode) -> Self {
        let (mut a, _) = WsClient::socket(node, false).await;
        let (mut b, _) = WsClient::socket(node, false).await;
        a.send(r#"421["$join","r"]"#).await;
        a.expect(r#"431[{"ok":true}]"#).await;
        b.send(r#"421["$join","r"]"#).await;
        b.expect(r#"431[{"ok":true}]"#).await;
        Self { a, b, next: 2 }
    }

    /// A `$join` and a `$publish` still work.
    async fn still_served(&mut self) {
        let id = self.next;
        self.next += 2;
        self.a.send(&format!(r#"42{id}["$join","r{id}"]"#)).await;
        self.a.expect(&format!(r#"43{id}[{{"ok":true}}]"#)).await;
        let id = id + 1;
        self.a
            .send(&format!(r#"42{id}["$publish","r","chat",{id}]"#))
            .await;
        self.a.expect(&format!(r#"43{id}[{{"ok":true}}]"#)).await;
        self.b.expect(&format!(r#"42["chat",{id}]"#)).await;
    }
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_head_timeout() {
    let node = start_plain(&config("")).await;
    let mut members = Members::join(&node).await;
    let before = head_timeouts(&node);

    let opened = Instant::now();
    let mut silent = TcpStream::connect(node.addr).await.unwrap();
    eventually("the silent connection is counted", || {
        tcp_open(&node) == 3.0
    })
    .await;
    members.still_served().await;
    let (got, closed) =
        until_closed(&mut silent, Duration::from_millis(HEAD_TIMEOUT_MS) + SLACK).await;
    let after = closed - opened;
    assert!(got.is_empty(), "{got:?}");
    assert!(
        after >= Duration::from_millis(HEAD_TIMEOUT_MS - 50),
        "closed after {after:?}, before its timeout"
    );
    eprintln!("silent connection closed after {after:?}");
    eventually("the head timeout is counted", || {
        head_timeouts(&node) == before + 1.0
    })
    .await;
    eventually("its slot is released", || tcp_open(&node) == 2.0).await;
    members.still_served().await;
}

#[tokio::test]
async fn a_client_sending_its_head_byte_by_byte_is_closed() {
    let node = start_plain(&config("")).await;
    let mut members = Members::join(&node).await;
    let head = format!(
        "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: {}\r\n\
         X-Padding: {}\r\n\r\n",
        node.addr,
        "p".repeat(200)
    );
    let opened = Instant::now();
    let stream = TcpStream::connect(node.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    // One byte every 20 ms: the whole head would take about 5 s.
    let writer = tokio::spawn(async move {
        let mut sent = 0;
        for b in head.as_bytes() {
            if write.write_all(&[*b]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sent
    });
    members.still_served().await;
    let (_, closed) = until_closed(&mut read, Duration::from_millis(HEAD_TIMEOUT_MS) + SLACK).await;
    let sent = writer.await.unwrap();
    eprintln!(
        "slow-header client closed after {:?}, {sent} bytes sent",
        closed - opened
    );
    assert!(sent < 200, "the head was almost whole: {sent} bytes");
    assert_eq!(node.engine.len(), 2, "no session was opened");
    eventually("its slot is released", || tcp_open(&node) == 2.0).await;
    members.still_served().await;
}

#[tokio::test]
async fn a_stalled_post_body_is_cut_and_its_session_closed() {
    let node = start_plain(&config("")).await;
    let mut members = Members::join(&node).await;
    let (poll, _) = PollClient::open(&node).await;
    let session = node.engine.get(&poll.sid).expect("session");

    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    let head = format!(
        "POST /socket.io/?EIO=4&transport=polling&sid={} HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: text/plain\r\nContent-Length: 90000\r\n\r\n",
        poll.sid, node.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // 30 KB of the 90 KB announced, then nothing.
    stream.write_all(&[b'4'; 30_000]).await.unwrap();
    let sent = Instant::now();
    let (got, closed) =
        until_closed(&mut stream, Duration::from_millis(BODY_TIMEOUT_MS) + SLACK).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        closed - sent >= Duration::from_millis(BODY_TIMEOUT_MS - 50),
        "cut after {:?}",
        closed - sent
    );
    eprintln!("stalled body cut after {:?}", closed - sent);
    eventually("the session is closed", || session.is_closed()).await;
    eventually("the session is gone", || {
        node.engine.get(&poll.sid).is_none()
    })
    .await;
    assert_eq!(
        node.metric("gateway_http_timeouts_total", &[("phase", "request_body")]),
        1.0
    );
    drop(poll);
    eventually("only the members' connections are left", || {
        tcp_open(&node) == 2.0
    })
    .await;
    members.still_served().await;
}

#[tokio::test]
async fn a_huge_content_length_is_refused_at_once() {
    let node = start_plain(&config("")).await;
    let mut members = Members::join(&node).await;
    let (poll, _) = PollClient::open(&node).await;
    let session = node.engine.get(&poll.sid).expect("session");

    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    let head = format!(
        "POST /socket.io/?EIO=4&transport=polling&sid={} HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: text/plain\r\nContent-Length: 1000000000000\r\n\r\n",
        poll.sid, node.addr
    );
    let sent = Instant::now();
    stream.write_all(head.as_bytes()).await.unwrap();
    let (got, closed) = until_closed(&mut stream, Duration::from_secs(2)).await;
    let text = String::from_utf8_lossy(&got);
    // 413, not the 408 of a body that never came: nothing was waited for.
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains(r#""message":"Payload too large""#), "{text}");
    eprintln!("10^12 Content-Length refused in {:?}", closed - sent);
    eventually("the session is closed", || session.is_closed()).await;
    members.still_served().await;
}

#[tokio::test]
async fn silent_connections_count_against_the_tcp_bound_until_they_time_out() {
    // Two members and two silent connections fill the bound of four.
    let node = start_plain(&config("max_connections = 3\nmax_tcp_connections = 4")).await;
    let mut members = Members::join(&node).await;
    let refused = || node.metric("gateway_tcp_connections_refused_total", &[]);
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(node.addr).await.unwrap());
    }
    eventually("the bound is reached", || tcp_open(&node) == 4.0).await;

    // One more is closed at accept, before anything is read.
    let mut extra = TcpStream::connect(node.addr).await.unwrap();
    let (got, _) = until_closed(&mut extra, Duration::from_millis(HEAD_TIMEOUT_MS / 2)).await;
    assert!(got.is_empty());
    assert!(
        ws_connect(&node.ws_url("EIO=4&transport=websocket"))
            .await
            .is_err()
    );
    assert!(refused() >= 2.0, "refused {}", refused());
    assert_eq!(tcp_open(&node), 4.0);
    members.still_served().await;

    // The silent ones time out; a client gets in again.
    for s in &mut silent {
        until_closed(s, Duration::from_millis(HEAD_TIMEOUT_MS) + SLACK).await;
    }
    eprintln!("silent connections closed after {:?}", opened.elapsed());
    eventually("their slots are released", || tcp_open(&node) == 2.0).await;
    let (mut client, _) = WsClient::socket(&node, false).await;
    client.send(r#"421["$join","r"]"#).await;
    client.expect(r#"431[{"ok":true}]"#).await;
    members.still_served().await;
    assert_eq!(node.engine.len(), 3);
}

#[tokio::test]
async fn keep_alive_connections_idle_out_between_requests() {
    let node = start_plain(&config("")).await;
    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    let request = format!(
        "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: {}\r\n\r\n",
        node.addr
    );
    // Two requests on one connection, the second after an idle pause
    // shorter than the timeout.
    for i in 0..2 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(HEAD_TIMEOUT_MS / 2)).await;
        }
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = [0u8; 4096];
        let n = within("the handshake answer", stream.read(&mut buf))
            .await
            .unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
    // Then idle: closed at the head timeout after the last response.
    let idle = Instant::now();
    let (_, closed) =
        until_closed(&mut stream, Duration::from_millis(HEAD_TIMEOUT_MS) + SLACK).await;
    let after = closed - idle;
    eprintln!("idle keep-alive connection closed after {after:?}");
    assert!(
        after >= Duration::from_millis(HEAD_TIMEOUT_MS - 100),
        "{after:?}"
    );
    eventually("its slot is released", || tcp_open(&node) == 0.0).await;
}

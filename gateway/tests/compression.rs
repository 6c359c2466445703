//! permessage-deflate (RFC 7692) on a real node, driven by a client written
//! against the RFC on a bare TCP stream, its deflate done with `flate2`
//! directly (not the gateway's own codec): what is negotiated, a broadcast
//! compressed for the clients that negotiated it and plain for the others,
//! compressed messages from clients, and a compression bomb cut off at
//! `max_payload` with 1009, for that connection only.

mod support;

use std::sync::Arc;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use gateway::socketio::{Payload, Target};
use support::conformance::Conformance;
use support::eio::WsClient;
use support::node::{TestNode, start_with};
use support::raw::RawWs;
use support::wait::eventually;

const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// A node with compression on (`compression` lines under
/// `[server.compression]`) and `max_payload`.
async fn node(compression: &str, max_payload: u64) -> TestNode {
    let toml = format!(
        r#"
[server]
ping_interval_ms = 10000
ping_timeout_ms = 10000
max_payload = {max_payload}
[server.compression]
{compression}
[[namespaces]]
name = "/"
join = ["*"]
publish = true
"#
    );
    start_with(&toml, Arc::new(Conformance::default())).await
}

/// `data` as one compressed message: raw deflate, sync flush, the empty
/// block's four bytes removed.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::best(), false);
    let mut out = Vec::with_capacity(data.len() / 100 + 1024);
    loop {
        let at = c.total_in() as usize;
        c.compress_vec(&data[at..], &mut out, FlushCompress::Sync)
            .unwrap();
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity());
    }
    assert!(out.ends_with(&[0, 0, 0xFF, 0xFF]));
    out.truncate(out.len() - 4);
    out
}

/// A compressed message from the server, inflated.
fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xFF, 0xFF]);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    assert_eq!(d.total_in() as usize, input.len(), "inflated whole");
    out
}

/// A raw WebSocket client that offered `offer`, connected to `/`; the
/// answer's head.
async fn client(node: &TestNode, offer: Option<&str>) -> (RawWs, String) {
    let (mut ws, head, _) = RawWs::open_offering(node, offer).await;
    ws.send(0x81, b"40").await;
    let (op, reply) = ws.read_frame().await.expect("connect reply");
    assert_eq!(op, 0x1);
    assert!(reply.starts_with(b"40{\"sid\""), "{reply:?}");
    // The conformance hooks greet every socket with its auth payload.
    assert_eq!(
        next_text(&mut ws).await,
        (r#"42["auth",{}]"#.to_owned(), false)
    );
    (ws, head)
}

/// The next text message: its text and whether it came compressed.
async fn next_text(ws: &mut RawWs) -> (String, bool) {
    loop {
        let (first, body) = ws.read_frame_whole().await.expect("a frame");
        match first & 0x0F {
            0x1 => {
                let compressed = first & 0x40 != 0;
                let text = if compressed { inflate(&body) } else { body };
                return (String::from_utf8(text).unwrap(), compressed);
            }
            0x9 | 0xA => continue,
            op => panic!("unexpected opcode {op:#x}"),
        }
    }
}

#[tokio::test]
async fn the_extension_is_negotiated_only_when_enabled_and_offered() {
    let on = node("enabled = true", 1_000_000).await;
    let (_c, head) = client(&on, Some(OFFER)).await;
    assert!(
        head.contains(
            "sec-websocket-extensions: permessage-deflate; server_no_context_takeover; \
             client_no_context_takeover\r\n"
        ),
        "{head}"
    );
    let (_c, head) = client(&on, Some("permessage-deflate; server_max_window_bits=10")).await;
    assert!(head.contains("; server_max_window_bits=10\r\n"), "{head}");
    // Offers it cannot honour are declined: the connection goes on plain.
    let (_c, head) = client(&on, Some("permessage-deflate; mystery")).await;
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
    let (_c, head) = client(&on, None).await;
    assert!(!head.contains("sec-websocket-extensions"), "{head}");

    let off = node("", 1_000_000).await;
    let (_c, head) = client(&off, Some(OFFER)).await;
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
}

#[tokio::test]
async fn one_broadcast_goes_compressed_to_clients_that_negotiated_and_plain_to_others() {
    let node = node("enabled = true", 1_000_000).await;
    let (mut deflating, _) = client(&node, Some(OFFER)).await;
    let (mut narrow, _) = client(&node, Some("permessage-deflate; server_max_window_bits=9")).await;
    let (mut plain, _) = client(&node, None).await;
    let (mut tungstenite, _) = WsClient::socket(&node, true).await;

    let long = format!(r#"[{{"body":"{}"}}]"#, "all the news ".repeat(200));
    let short = r#"["brief"]"#;
    for args in [&long, short] {
        let payload = Payload {
            args: args.to_string(),
            attachments: Vec::new(),
        };
        let reached = node
            .io
            .emit("/", &Target::default(), "news", &payload)
            .await
            .unwrap();
        assert_eq!(reached, 4);
    }
    let long_text = format!(r#"42["news",{}"#, &long[1..]);
    let short_text = format!(r#"42["news",{}"#, &short[1..]);
    // Long: compressed for the client with the extension and a 32 KiB
    // window; plain for the others (the 512-byte window is too small for
    // it).
    assert_eq!(next_text(&mut deflating).await, (long_text.clone(), true));
    assert_eq!(next_text(&mut narrow).await, (long_text.clone(), false));
    assert_eq!(next_text(&mut plain).await, (long_text.clone(), false));
    tungstenite.expect(&long_text).await;
    // Short (under the 1024-byte threshold): plain for everyone.
    assert_eq!(next_text(&mut deflating).await, (short_text.clone(), false));
    assert_eq!(next_text(&mut narrow).await, (short_text.clone(), false));
    assert_eq!(next_text(&mut plain).await, (short_text.clone(), false));
    tungstenite.expect(&short_text).await;

    let frames = node.metric("gateway_ws_compressed_frames_total", &[]);
    let before = node.metric("gateway_ws_compression_input_bytes_total", &[]);
    let after = node.metric("gateway_ws_compression_output_bytes_total", &[]);
    assert_eq!(frames, 1.0);
    assert_eq!(before, long_text.len() as f64);
    assert!(after > 0.0 && after * 10.0 < before, "{after} of {before}");
}

#[tokio::test]
async fn compressed_messages_from_a_client_are_read_and_long_replies_compressed() {
    let node = node("enabled = true\nthreshold = 100", 1_000_000).await;
    let (mut c, _) = client(&node, Some(OFFER)).await;
    for body in ["short".to_owned(), "long ".repeat(5_000)] {
        let text = format!(r#"42["message","{body}"]"#);
        // Compressed, in two fragments (RSV1 on the first only).
        let packed = deflate(text.as_bytes());
        let (a, b) = packed.split_at(packed.len() / 2);
        c.send(0x41, a).await;
        c.send(0x80, b).await;
        let (reply, compressed) = next_text(&mut c).await;
        assert_eq!(reply, format!(r#"42["message-back","{body}"]"#));
        assert_eq!(compressed, reply.len() >= 100, "{}", reply.len());
        // The same message uncompressed is read as well.
        c.send(0x81, text.as_bytes()).await;
        assert_eq!(next_text(&mut c).await.0, reply);
    }
}

/// The process's peak resident set, KiB (Linux).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_compression_bomb_closes_only_its_connection_and_memory_stays_flat() {
    let node = node("enabled = true", 100_000).await;
    let (mut bystander, _) = client(&node, Some(OFFER)).await;
    // 32 MB of digits in a text message: about 32 KB compressed, under
    // max_payload as sent, a thousand times over it inflated.
    let mut text = br#"42["message",""#.to_vec();
    text.resize(32 * 1024 * 1024, b'0');
    text.extend_from_slice(br#""]"#);
    let bomb = deflate(&text);
    drop(text);
    assert!(bomb.len() < 100_000, "{}", bomb.len());

    let before = peak_rss_kib();
    for _ in 0..3 {
        let (mut c, _) = client(&node, Some(OFFER)).await;
        c.send(0xC1, &bomb).await;
        assert_eq!(c.expect_close().await, 1009);
    }
    let grown = peak_rss_kib() - before;
    assert!(grown < 12 * 1024, "peak RSS grew {grown} KiB");

    bystander.send(0x81, br#"42["message","still here"]"#).await;
    assert_eq!(
        next_text(&mut bystander).await,
        (r#"42["message-back","still here"]"#.to_owned(), false)
    );
    eventually("only the bystander is left", || node.engine.len() == 1).await;
}

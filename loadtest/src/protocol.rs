//! Engine.IO v4 / Socket.IO v5 packets as the load generator needs them:
//! building the few packets a client sends and parsing what servers send
//! back. Pure functions over text: no I/O, unit-tested here.
//!
//! It also owns the *stamp*, the string argument every published message
//! carries so a receiver can compute latency, loss, duplicates and order:
//! `lt:<publisher>:<channel>:<seq>:<sent unix nanos>:<padding>`.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Deserialize;

/// Engine.IO packet types the client acts on (the first character of a
/// text frame); pong `3`, upgrade `5` and noop `6` are ignored.
pub mod eio {
    pub const OPEN: u8 = b'0';
    pub const CLOSE: u8 = b'1';
    pub const PING: u8 = b'2';
    pub const MESSAGE: u8 = b'4';
}

/// Separator of packets inside one HTTP long-polling body.
pub const RECORD_SEPARATOR: char = '\x1e';

/// What a server's Engine.IO OPEN packet tells the client.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OpenInfo {
    pub sid: String,
    #[serde(default)]
    pub ping_interval: u64,
    #[serde(default)]
    pub ping_timeout: u64,
    #[serde(default)]
    pub max_payload: u64,
}

/// Parses the JSON of an OPEN packet (the text after the leading `0`).
pub fn parse_open(json: &str) -> Result<OpenInfo, serde_json::Error> {
    serde_json::from_str(json)
}

/// Socket.IO packet types (the first character after the Engine.IO `4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SioKind {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

impl SioKind {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            b'0' => Self::Connect,
            b'1' => Self::Disconnect,
            b'2' => Self::Event,
            b'3' => Self::Ack,
            b'4' => Self::ConnectError,
            b'5' => Self::BinaryEvent,
            b'6' => Self::BinaryAck,
            _ => return None,
        })
    }
}

/// A Socket.IO packet, borrowed from the frame it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SioPacket<'a> {
    pub kind: SioKind,
    /// Namespace, `/` when the packet carries none.
    pub nsp: &'a str,
    pub ack_id: Option<u64>,
    /// The JSON payload (may be empty).
    pub data: &'a str,
}

/// Parses a Socket.IO packet: the text of an Engine.IO MESSAGE after its `4`.
/// Format: `<type>[<attachments>-][<nsp>,][<ack id>][<json>]`.
pub fn parse_sio(text: &str) -> Option<SioPacket<'_>> {
    let bytes = text.as_bytes();
    let kind = SioKind::from_byte(*bytes.first()?)?;
    let mut rest = &text[1..];
    if matches!(kind, SioKind::BinaryEvent | SioKind::BinaryAck) {
        let dash = rest.find('-')?;
        if dash == 0 || !rest[..dash].bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        rest = &rest[dash + 1..];
    }
    let mut nsp = "/";
    if rest.starts_with('/') {
        match rest.find(',') {
            Some(comma) => {
                nsp = &rest[..comma];
                rest = &rest[comma + 1..];
            }
            None => {
                nsp = rest;
                rest = "";
            }
        }
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ack_id = if digits > 0 && kind != SioKind::Connect && kind != SioKind::ConnectError {
        let id = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        Some(id)
    } else {
        None
    };
    Some(SioPacket {
        kind,
        nsp,
        ack_id,
        data: rest,
    })
}

fn push_nsp(buf: &mut String, nsp: &str) {
    if nsp != "/" && !nsp.is_empty() {
        buf.push_str(nsp);
        buf.push(',');
    }
}

/// The Engine.IO MESSAGE carrying a Socket.IO CONNECT to `nsp`.
pub fn connect_packet(nsp: &str) -> String {
    let mut buf = String::from("40");
    push_nsp(&mut buf, nsp);
    buf
}

/// The Engine.IO MESSAGE carrying a Socket.IO DISCONNECT from `nsp`.
pub fn disconnect_packet(nsp: &str) -> String {
    let mut buf = String::from("41");
    push_nsp(&mut buf, nsp);
    buf
}

/// Appends `s` as a JSON string literal.
pub fn push_json_str(buf: &mut String, s: &str) {
    buf.push('"');
    for c in s.chars() {
        match c {
            '"' => buf.push_str("\\\""),
            '\\' => buf.push_str("\\\\"),
            '\n' => buf.push_str("\\n"),
            '\r' => buf.push_str("\\r"),
            '\t' => buf.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(buf, "\\u{:04x}", c as u32);
            }
            c => buf.push(c),
        }
    }
    buf.push('"');
}

/// The start of an EVENT packet up to and including the `[` of its
/// arguments: `42[<nsp>,][<ack id>][`. Arguments and the closing `]` follow.
pub fn event_head(nsp: &str, ack_id: Option<u64>) -> String {
    let mut buf = String::with_capacity(16);
    buf.push_str("42");
    push_nsp(&mut buf, nsp);
    if let Some(id) = ack_id {
        let _ = write!(buf, "{id}");
    }
    buf.push('[');
    buf
}

/// A complete EVENT packet whose arguments are all strings:
/// `42[nsp,][id]["event","arg1",...]`.
pub fn event_packet(nsp: &str, ack_id: Option<u64>, event: &str, args: &[&str]) -> String {
    let mut buf = event_head(nsp, ack_id);
    push_json_str(&mut buf, event);
    for arg in args {
        buf.push(',');
        push_json_str(&mut buf, arg);
    }
    buf.push(']');
    buf
}

/// The event name of an EVENT packet's data (`["name",...]`). Borrowed when
/// the name has no escapes, which is the fast path for every message.
pub fn event_name(data: &str) -> Option<Cow<'_, str>> {
    let rest = data.strip_prefix("[\"")?;
    let end = rest.find('"')?;
    let name = &rest[..end];
    if !name.contains('\\') {
        return Some(Cow::Borrowed(name));
    }
    let args: Vec<serde_json::Value> = serde_json::from_str(data).ok()?;
    match args.into_iter().next()? {
        serde_json::Value::String(s) => Some(Cow::Owned(s)),
        _ => None,
    }
}

/// Reads an ack's data (`[{"ok":true}]` or `[{"ok":false,"error":"..."}]`).
pub fn ack_result(data: &str) -> Result<(), String> {
    #[derive(Deserialize)]
    struct Reply {
        ok: bool,
        #[serde(default)]
        error: Option<String>,
    }
    let args: Vec<serde_json::Value> =
        serde_json::from_str(data).map_err(|e| format!("ack is not a JSON array: {e}"))?;
    let first = args.into_iter().next().ok_or("ack without arguments")?;
    let reply: Reply =
        serde_json::from_value(first).map_err(|e| format!("ack is not {{\"ok\":..}}: {e}"))?;
    if reply.ok {
        Ok(())
    } else {
        Err(reply.error.unwrap_or_else(|| "ok:false".into()))
    }
}

/// The `sid` of a Socket.IO CONNECT reply's data (`{"sid":"..."}`).
pub fn connect_sid(data: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Reply {
        sid: String,
    }
    serde_json::from_str::<Reply>(data).ok().map(|r| r.sid)
}

/// Splits a long-polling body into its Engine.IO packets.
pub fn split_payload(body: &str) -> impl Iterator<Item = &str> {
    body.split(RECORD_SEPARATOR).filter(|p| !p.is_empty())
}

/// What every published message carries so receivers can check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Publisher number, dense from 0.
    pub publisher: u32,
    /// Channel number (a room, or a target socket), dense from 0.
    pub channel: u32,
    /// Sequence of this publisher in this channel, from 0 without gaps.
    pub seq: u64,
    /// Unix time of sending, in nanoseconds.
    pub sent_ns: u64,
}

const STAMP_TAG: &str = "\"lt:";

impl Stamp {
    /// Appends the stamp as a JSON string padded with `x` so the string's
    /// content is at least `payload_bytes` long.
    pub fn push_json(&self, buf: &mut String, payload_bytes: usize) {
        let start = buf.len();
        let _ = write!(
            buf,
            "\"lt:{}:{}:{}:{}:",
            self.publisher, self.channel, self.seq, self.sent_ns
        );
        let content = buf.len() - start - 1;
        for _ in content..payload_bytes {
            buf.push('x');
        }
        buf.push('"');
    }

    /// Finds and reads the stamp inside an event's JSON data.
    pub fn find(data: &str) -> Option<Stamp> {
        let at = data.find(STAMP_TAG)?;
        let mut fields = data[at + STAMP_TAG.len()..].splitn(5, ':');
        let publisher = fields.next()?.parse().ok()?;
        let channel = fields.next()?.parse().ok()?;
        let seq = fields.next()?.parse().ok()?;
        let sent_ns = fields.next()?.parse().ok()?;
        // The fifth field (padding up to the closing quote) must exist.
        fields.next()?;
        Some(Stamp {
            publisher,
            channel,
            seq,
            sent_ns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_open_packet() {
        let info = parse_open(
            r#"{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#,
        )
        .unwrap();
        assert_eq!(info.sid, "abc");
        assert_eq!(info.ping_interval, 25000);
        assert_eq!(info.ping_timeout, 20000);
        assert_eq!(info.max_payload, 1_000_000);
    }

    #[test]
    fn parses_event_with_and_without_ack_and_namespace() {
        let p = parse_sio(r#"2["m","x"]"#).unwrap();
        assert_eq!(
            (p.kind, p.nsp, p.ack_id, p.data),
            (SioKind::Event, "/", None, r#"["m","x"]"#)
        );

        let p = parse_sio(r#"212["m"]"#).unwrap();
        assert_eq!(
            (p.kind, p.ack_id, p.data),
            (SioKind::Event, Some(12), r#"["m"]"#)
        );

        let p = parse_sio(r#"2/chat,7["m"]"#).unwrap();
        assert_eq!((p.nsp, p.ack_id, p.data), ("/chat", Some(7), r#"["m"]"#));

        let p = parse_sio("1/chat").unwrap();
        assert_eq!((p.kind, p.nsp, p.data), (SioKind::Disconnect, "/chat", ""));
    }

    #[test]
    fn parses_ack_connect_and_errors() {
        let p = parse_sio(r#"31[{"ok":true}]"#).unwrap();
        assert_eq!((p.kind, p.ack_id), (SioKind::Ack, Some(1)));
        assert_eq!(ack_result(p.data), Ok(()));

        let p = parse_sio(r#"30[{"ok":false,"error":"forbidden"}]"#).unwrap();
        assert_eq!(ack_result(p.data), Err("forbidden".to_string()));
        assert!(ack_result("[]").is_err());
        assert!(ack_result("nope").is_err());

        let p = parse_sio(r#"0{"sid":"s1"}"#).unwrap();
        assert_eq!(p.kind, SioKind::Connect);
        assert_eq!(connect_sid(p.data).as_deref(), Some("s1"));

        let p = parse_sio(r#"4/x,{"message":"Invalid namespace"}"#).unwrap();
        assert_eq!((p.kind, p.nsp), (SioKind::ConnectError, "/x"));

        let p = parse_sio(r#"51-["m",{"_placeholder":true,"num":0}]"#).unwrap();
        assert_eq!((p.kind, p.ack_id), (SioKind::BinaryEvent, None));
        assert!(parse_sio("").is_none());
        assert!(parse_sio("9").is_none());
        assert!(parse_sio("5-[]").is_none());
    }

    #[test]
    fn builds_packets() {
        assert_eq!(connect_packet("/"), "40");
        assert_eq!(connect_packet("/chat"), "40/chat,");
        assert_eq!(disconnect_packet("/"), "41");
        assert_eq!(
            event_packet("/", Some(3), "$join", &["room-1"]),
            r#"423["$join","room-1"]"#
        );
        assert_eq!(
            event_packet("/a", None, "e", &["q\"u\\o\nte"]),
            r#"42/a,["e","q\"u\\o\nte"]"#
        );
        let mut buf = String::new();
        push_json_str(&mut buf, "\u{1}");
        assert_eq!(buf, r#""\u0001""#);
        // What we build parses back.
        let built = event_packet("/", Some(9), "$publish", &["r", "m"]);
        let p = parse_sio(&built[1..]).unwrap();
        assert_eq!(p.ack_id, Some(9));
        assert_eq!(event_name(p.data).as_deref(), Some("$publish"));
    }

    #[test]
    fn reads_event_names() {
        assert_eq!(event_name(r#"["m","x"]"#).as_deref(), Some("m"));
        assert_eq!(event_name(r#"["a\"b",1]"#).as_deref(), Some("a\"b"));
        assert_eq!(event_name(r#"[1]"#), None);
        assert_eq!(event_name(""), None);
    }

    #[test]
    fn stamp_round_trips_with_padding() {
        let stamp = Stamp {
            publisher: 3,
            channel: 17,
            seq: 42,
            sent_ns: 1_700_000_000_123_456_789,
        };
        let mut buf = String::from(r#"["m","#);
        stamp.push_json(&mut buf, 100);
        buf.push(']');
        let arg: Vec<String> = serde_json::from_str(&buf).unwrap();
        assert_eq!(arg[1].len(), 100);
        assert_eq!(Stamp::find(&buf), Some(stamp));

        // Shorter than the stamp itself: no padding, still readable.
        let mut short = String::new();
        stamp.push_json(&mut short, 0);
        assert!(short.ends_with(":\""));
        assert_eq!(Stamp::find(&short), Some(stamp));

        assert_eq!(Stamp::find(r#"["m","hello"]"#), None);
        assert_eq!(Stamp::find(r#"["m","lt:1:2:x:4:"]"#), None);
        assert_eq!(Stamp::find(r#"["m","lt:1:2:3:4"]"#), None);
    }

    #[test]
    fn splits_polling_payloads() {
        let parts: Vec<_> = split_payload("2\x1e42[\"m\"]\x1e").collect();
        assert_eq!(parts, vec!["2", "42[\"m\"]"]);
        assert_eq!(split_payload("").count(), 0);
    }
}

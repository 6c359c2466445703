//! Engine.IO protocol revision 4: packet and polling-payload codec.
//!
//! Pure functions, bytes in / packets out: no I/O, no async runtime.
//!
//! Wire format (from the Engine.IO v4 protocol document):
//!
//! * A text packet is `<packet type digit>[<data>]`, e.g. `2probe`, `4hello`, `6`.
//!   Types: `0` open, `1` close, `2` ping, `3` pong, `4` message, `5` upgrade, `6` noop.
//! * Over WebSocket every packet is its own frame; a binary frame is a binary
//!   message and carries the raw bytes with no type prefix.
//! * Over HTTP long-polling several packets are joined with the record
//!   separator `0x1e` (`4hello\x1e2\x1e4world`); binary messages are written as
//!   `b` followed by the standard base64 encoding (`4hello\x1ebAQIDBA==`).
//!
//! Decoding borrows from the input wherever it can: only base64 binary
//! segments allocate. Decoding never panics, whatever the input.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose::STANDARD};
use bytes::Bytes;
use std::fmt::Write as _;

/// An Engine.IO transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Polling,
    Websocket,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Polling => "polling",
            Transport::Websocket => "websocket",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "polling" => Some(Transport::Polling),
            "websocket" => Some(Transport::Websocket),
            _ => None,
        }
    }
}

/// The record separator that joins packets in a polling payload.
pub const SEPARATOR: u8 = 0x1e;

/// Decoder for `b<base64>` segments: standard alphabet, padding optional
/// (absent, partial or complete).
///
/// The reference server (Node.js `Buffer.from(s, "base64")`) accepts unpadded
/// input, so we do too; we always write padding when encoding.
const BASE64_DECODER: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One decoded Engine.IO packet.
///
/// Text variants borrow from the decoded input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// `0` + the handshake JSON (sent by servers; decoded only for completeness, not validated).
    Open(&'a str),
    /// `1`: close the session.
    Close,
    /// `2` + optional payload, e.g. `"probe"` or `""`.
    Ping(&'a str),
    /// `3` + optional payload.
    Pong(&'a str),
    /// `4` + text (the Socket.IO packet text).
    Message(&'a str),
    /// A binary message: a WebSocket binary frame, or a polling `b<base64>` segment.
    Binary(Bytes),
    /// `5`: complete a transport upgrade.
    Upgrade,
    /// `6`: no operation (used to end a pending poll during an upgrade).
    Noop,
}

impl Packet<'_> {
    /// The type digit this packet is written with, or `None` for [`Packet::Binary`].
    pub fn type_char(&self) -> Option<char> {
        match self {
            Packet::Open(_) => Some('0'),
            Packet::Close => Some('1'),
            Packet::Ping(_) => Some('2'),
            Packet::Pong(_) => Some('3'),
            Packet::Message(_) => Some('4'),
            Packet::Upgrade => Some('5'),
            Packet::Noop => Some('6'),
            Packet::Binary(_) => None,
        }
    }

    /// Writes this packet in its text form: `<type>[<data>]`, or `b<base64>` for
    /// [`Packet::Binary`] (the polling form). Appends to `out`.
    pub fn encode_text_into(&self, out: &mut String) {
        match self {
            Packet::Open(s) => push_typed(out, '0', s),
            Packet::Close => out.push('1'),
            Packet::Ping(s) => push_typed(out, '2', s),
            Packet::Pong(s) => push_typed(out, '3', s),
            Packet::Message(s) => push_typed(out, '4', s),
            Packet::Upgrade => out.push('5'),
            Packet::Noop => out.push('6'),
            Packet::Binary(b) => {
                out.push('b');
                STANDARD.encode_string(b, out);
            }
        }
    }

    /// [`Packet::encode_text_into`] into a new string.
    pub fn encode_text(&self) -> String {
        let mut out = String::new();
        self.encode_text_into(&mut out);
        out
    }
}

fn push_typed(out: &mut String, ty: char, data: &str) {
    out.push(ty);
    out.push_str(data);
}

/// Why an Engine.IO packet or payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The packet (or the whole polling body) is empty.
    #[error("empty engine.io packet")]
    Empty,
    /// A polling payload holds an empty segment (e.g. a leading, trailing or doubled `0x1e`).
    #[error("empty packet at position {index} of the polling payload")]
    EmptySegment {
        /// Zero-based index of the empty segment.
        index: usize,
    },
    /// The first character is not a known packet type.
    #[error("unknown engine.io packet type {0:?}")]
    UnknownType(char),
    /// A `b` segment is not valid base64.
    #[error("invalid base64 in binary packet")]
    InvalidBase64,
    /// The polling body is not valid UTF-8.
    #[error("engine.io payload is not valid UTF-8")]
    InvalidUtf8,
}

/// Decodes one text packet (a WebSocket text frame, or one polling segment).
///
/// A packet starting with `b` is a base64 binary message ([`Packet::Binary`]).
/// That form belongs to HTTP long-polling; use [`decode_text_with`] with
/// `allow_base64 = false` to refuse it on WebSocket text frames.
///
/// Close, upgrade and noop packets carry no data; like the reference parser,
/// any trailing text after their type digit is ignored.
pub fn decode_text(s: &str) -> Result<Packet<'_>, DecodeError> {
    decode_text_with(s, true)
}

/// Like [`decode_text`], but the caller says whether a `b<base64>` packet is
/// allowed. When it is not, a leading `b` is reported as
/// [`DecodeError::UnknownType`].
pub fn decode_text_with(s: &str, allow_base64: bool) -> Result<Packet<'_>, DecodeError> {
    let mut chars = s.chars();
    let Some(ty) = chars.next() else {
        return Err(DecodeError::Empty);
    };
    let rest = chars.as_str();
    match ty {
        '0' => Ok(Packet::Open(rest)),
        '1' => Ok(Packet::Close),
        '2' => Ok(Packet::Ping(rest)),
        '3' => Ok(Packet::Pong(rest)),
        '4' => Ok(Packet::Message(rest)),
        '5' => Ok(Packet::Upgrade),
        '6' => Ok(Packet::Noop),
        'b' if allow_base64 => BASE64_DECODER
            .decode(rest)
            .map(|v| Packet::Binary(Bytes::from(v)))
            .map_err(|_| DecodeError::InvalidBase64),
        other => Err(DecodeError::UnknownType(other)),
    }
}

/// Wraps a WebSocket binary frame: in Engine.IO v4 it is a binary message as is.
pub fn decode_binary(frame: Bytes) -> Packet<'static> {
    Packet::Binary(frame)
}

/// Decodes a polling POST body: segments separated by `0x1e`; `b...` segments
/// are base64 (standard alphabet) and become [`Packet::Binary`].
///
/// An empty body or an empty segment is an error, as is a body that is not
/// UTF-8. The first bad segment fails the whole body.
pub fn decode_payload(body: &[u8]) -> Result<Vec<Packet<'_>>, DecodeError> {
    if body.is_empty() {
        return Err(DecodeError::Empty);
    }
    let text = std::str::from_utf8(body).map_err(|_| DecodeError::InvalidUtf8)?;
    text.split(char::from(SEPARATOR))
        .enumerate()
        .map(|(index, segment)| {
            if segment.is_empty() {
                Err(DecodeError::EmptySegment { index })
            } else {
                decode_text_with(segment, true)
            }
        })
        .collect()
}

/// The handshake data of an open packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake<'a> {
    /// The session id.
    pub sid: &'a str,
    /// Transports the client may upgrade to (`["websocket"]` on polling, `[]` on WebSocket).
    pub upgrades: &'a [&'a str],
    /// Heartbeat interval in milliseconds.
    pub ping_interval_ms: u64,
    /// Heartbeat timeout in milliseconds.
    pub ping_timeout_ms: u64,
    /// Maximum number of bytes per polling payload.
    pub max_payload: u64,
}

/// Encodes the open packet:
/// `0{"sid":...,"upgrades":[...],"pingInterval":N,"pingTimeout":N,"maxPayload":N}`
/// with the keys in exactly that order and every string JSON-escaped.
pub fn encode_open(h: &Handshake<'_>) -> String {
    let mut out = String::with_capacity(96 + h.sid.len());
    out.push_str("0{\"sid\":");
    write_json_string(&mut out, h.sid);
    out.push_str(",\"upgrades\":[");
    for (i, upgrade) in h.upgrades.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_string(&mut out, upgrade);
    }
    out.push_str("],\"pingInterval\":");
    push_u64(&mut out, h.ping_interval_ms);
    out.push_str(",\"pingTimeout\":");
    push_u64(&mut out, h.ping_timeout_ms);
    out.push_str(",\"maxPayload\":");
    push_u64(&mut out, h.max_payload);
    out.push('}');
    out
}

/// One packet of a polling GET body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadItem<'a> {
    /// A complete Engine.IO text packet, e.g. `42["a"]` or `2`. It must not
    /// contain the `0x1e` separator (the protocol assumes text never does).
    Text(&'a str),
    /// A binary message, written as `b` + standard base64 (padded).
    Binary(&'a [u8]),
}

/// Encodes a polling GET body: items joined by `0x1e`, binary items as `b` +
/// standard base64 with padding. Appends to `out`; an empty iterator appends
/// nothing.
pub fn encode_payload<'a>(items: impl IntoIterator<Item = PayloadItem<'a>>, out: &mut Vec<u8>) {
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(SEPARATOR);
        }
        match item {
            PayloadItem::Text(text) => out.extend_from_slice(text.as_bytes()),
            PayloadItem::Binary(bytes) => {
                out.push(b'b');
                append_base64(bytes, out);
            }
        }
    }
}

/// Appends the padded standard base64 encoding of `input` to `out`.
fn append_base64(input: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    let Some(len) = base64::encoded_len(input.len(), true) else {
        // Unreachable for any slice that fits in memory; fall back to a string.
        out.extend_from_slice(STANDARD.encode(input).as_bytes());
        return;
    };
    out.resize(start.saturating_add(len), 0);
    let written = out
        .get_mut(start..)
        .and_then(|dst| STANDARD.encode_slice(input, dst).ok());
    if written != Some(len) {
        out.truncate(start);
        out.extend_from_slice(STANDARD.encode(input).as_bytes());
    }
}

/// Appends `s` as a JSON string literal, escaped like `JSON.stringify` does.
pub(crate) fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    let mut plain_start = 0;
    for (i, c) in s.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            '\u{8}' => "\\b",
            '\u{c}' => "\\f",
            c if c < '\u{20}' => "",
            _ => continue,
        };
        out.push_str(s.get(plain_start..i).unwrap_or_default());
        if escape.is_empty() {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push_str(escape);
        }
        plain_start = i + c.len_utf8();
    }
    out.push_str(s.get(plain_start..).unwrap_or_default());
    out.push('"');
}

/// Appends the decimal form of `n`.
pub(crate) fn push_u64(out: &mut String, n: u64) {
    let _ = write!(out, "{n}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(items: &[PayloadItem<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_payload(items.iter().copied(), &mut out);
        out
    }

    // ---- single packets: every example of the v4 protocol document ----

    #[test]
    fn doc_examples_single_packets() {
        assert_eq!(decode_text("2probe"), Ok(Packet::Ping("probe")));
        assert_eq!(decode_text("3probe"), Ok(Packet::Pong("probe")));
        assert_eq!(decode_text("4hello"), Ok(Packet::Message("hello")));
        assert_eq!(decode_text("2"), Ok(Packet::Ping("")));
        assert_eq!(decode_text("3"), Ok(Packet::Pong("")));
        assert_eq!(decode_text("5"), Ok(Packet::Upgrade));
        assert_eq!(decode_text("6"), Ok(Packet::Noop));
        assert_eq!(decode_text("1"), Ok(Packet::Close));
        assert_eq!(
            decode_text("4HelloWorld"),
            Ok(Packet::Message("HelloWorld"))
        );
    }

    #[test]
    fn open_packet_is_decoded_raw() {
        let open = r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        assert_eq!(
            decode_text(open),
            Ok(Packet::Open(
                r#"{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
            ))
        );
        assert_eq!(decode_text("0"), Ok(Packet::Open("")));
    }

    #[test]
    fn socketio_messages_pass_through_verbatim() {
        assert_eq!(decode_text("40"), Ok(Packet::Message("0")));
        assert_eq!(
            decode_text(r#"42["hey","Jude"]"#),
            Ok(Packet::Message(r#"2["hey","Jude"]"#))
        );
        assert_eq!(
            decode_text(r#"40/admin,{"sid":"-G5j-67EZFp-q59rADQM"}"#),
            Ok(Packet::Message(r#"0/admin,{"sid":"-G5j-67EZFp-q59rADQM"}"#))
        );
        assert_eq!(decode_text("4"), Ok(Packet::Message("")));
        assert_eq!(decode_text("4€€€"), Ok(Packet::Message("€€€")));
    }

    #[test]
    fn dataless_types_ignore_trailing_text_like_the_reference_parser() {
        assert_eq!(decode_text("1x"), Ok(Packet::Close));
        assert_eq!(decode_text("5probe"), Ok(Packet::Upgrade));
        assert_eq!(decode_text("6 "), Ok(Packet::Noop));
    }

    #[test]
    fn binary_text_packet() {
        assert_eq!(
            decode_text("bAQIDBA=="),
            Ok(Packet::Binary(Bytes::from_static(&[1, 2, 3, 4])))
        );
        // the engine.io-parser changelog example
        assert_eq!(
            decode_text("bAQID"),
            Ok(Packet::Binary(Bytes::from_static(&[1, 2, 3])))
        );
        assert_eq!(decode_text("b"), Ok(Packet::Binary(Bytes::new())));
        // padding is optional on input, whole or partial (Node's Buffer.from accepts both)
        for lenient in ["bAQIDBA", "bAQIDBA="] {
            assert_eq!(
                decode_text(lenient),
                Ok(Packet::Binary(Bytes::from_static(&[1, 2, 3, 4]))),
                "{lenient}"
            );
        }
    }

    #[test]
    fn base64_can_be_refused() {
        assert_eq!(
            decode_text_with("bAQIDBA==", false),
            Err(DecodeError::UnknownType('b'))
        );
        assert_eq!(
            decode_text_with("4hello", false),
            Ok(Packet::Message("hello"))
        );
    }

    #[test]
    fn websocket_binary_frame() {
        let frame = Bytes::from_static(&[1, 2, 3, 4]);
        assert_eq!(decode_binary(frame.clone()), Packet::Binary(frame));
    }

    // ---- malformed single packets ----

    #[test]
    fn malformed_single_packets() {
        // "closes the session upon invalid packet format": body "abc"
        assert_eq!(decode_text("abc"), Err(DecodeError::UnknownType('a')));
        assert_eq!(decode_text(""), Err(DecodeError::Empty));
        assert_eq!(decode_text("7"), Err(DecodeError::UnknownType('7')));
        assert_eq!(decode_text("9hello"), Err(DecodeError::UnknownType('9')));
        assert_eq!(decode_text("€"), Err(DecodeError::UnknownType('€')));
        assert_eq!(decode_text(" 4a"), Err(DecodeError::UnknownType(' ')));
        assert_eq!(
            decode_text("\u{1e}"),
            Err(DecodeError::UnknownType('\u{1e}'))
        );
        assert_eq!(decode_text("B"), Err(DecodeError::UnknownType('B')));
        // base64 errors
        assert_eq!(decode_text("b!!!!"), Err(DecodeError::InvalidBase64));
        assert_eq!(decode_text("bAQIDBA==="), Err(DecodeError::InvalidBase64));
        assert_eq!(decode_text("bA"), Err(DecodeError::InvalidBase64));
        assert_eq!(decode_text("bAQ-_"), Err(DecodeError::InvalidBase64));
        assert_eq!(decode_text("bAQID BA=="), Err(DecodeError::InvalidBase64));
        // non-canonical trailing bits
        assert_eq!(decode_text("bAR=="), Err(DecodeError::InvalidBase64));
    }

    // ---- polling payloads ----

    #[test]
    fn doc_payload_examples() {
        assert_eq!(
            decode_payload(b"4hello\x1e2\x1e4world"),
            Ok(vec![
                Packet::Message("hello"),
                Packet::Ping(""),
                Packet::Message("world")
            ])
        );
        assert_eq!(
            decode_payload(b"4hello\x1ebAQIDBA=="),
            Ok(vec![
                Packet::Message("hello"),
                Packet::Binary(Bytes::from_static(&[1, 2, 3, 4]))
            ])
        );
        assert_eq!(
            decode_payload("4hello\x1e4€€€".as_bytes()),
            Ok(vec![Packet::Message("hello"), Packet::Message("€€€")])
        );
        assert_eq!(
            decode_payload(b"4hello\x1ebAQID"),
            Ok(vec![
                Packet::Message("hello"),
                Packet::Binary(Bytes::from_static(&[1, 2, 3]))
            ])
        );
    }

    #[test]
    fn test_suite_payloads() {
        assert_eq!(
            decode_payload(b"4hello"),
            Ok(vec![Packet::Message("hello")])
        );
        assert_eq!(
            decode_payload(b"4test1\x1e4test2\x1e4test3"),
            Ok(vec![
                Packet::Message("test1"),
                Packet::Message("test2"),
                Packet::Message("test3")
            ])
        );
        assert_eq!(decode_payload(b"3"), Ok(vec![Packet::Pong("")]));
        assert_eq!(decode_payload(b"1"), Ok(vec![Packet::Close]));
        assert_eq!(decode_payload(b"abc"), Err(DecodeError::UnknownType('a')));
        // socket.io sample session, request 5
        assert_eq!(
            decode_payload(b"42[\"hello\"]\x1e42[\"world\"]"),
            Ok(vec![
                Packet::Message("2[\"hello\"]"),
                Packet::Message("2[\"world\"]")
            ])
        );
        assert_eq!(decode_payload(b"40"), Ok(vec![Packet::Message("0")]));
    }

    #[test]
    fn malformed_payloads() {
        assert_eq!(decode_payload(b""), Err(DecodeError::Empty));
        assert_eq!(
            decode_payload(b"\x1e"),
            Err(DecodeError::EmptySegment { index: 0 })
        );
        assert_eq!(
            decode_payload(b"4a\x1e"),
            Err(DecodeError::EmptySegment { index: 1 })
        );
        assert_eq!(
            decode_payload(b"\x1e4a"),
            Err(DecodeError::EmptySegment { index: 0 })
        );
        assert_eq!(
            decode_payload(b"4a\x1e\x1e4b"),
            Err(DecodeError::EmptySegment { index: 1 })
        );
        assert_eq!(
            decode_payload(b"4a\x1ex"),
            Err(DecodeError::UnknownType('x'))
        );
        assert_eq!(
            decode_payload(b"4a\x1eb@@"),
            Err(DecodeError::InvalidBase64)
        );
        assert_eq!(decode_payload(b"4\xff"), Err(DecodeError::InvalidUtf8));
        assert_eq!(decode_payload(b"\xc3"), Err(DecodeError::InvalidUtf8));
        // EIO v3 length-prefixed framing is not v4
        assert_eq!(decode_payload(b"6:4hello"), Ok(vec![Packet::Noop]));
        assert_eq!(decode_payload(b"1:2"), Ok(vec![Packet::Close]));
        assert_eq!(
            decode_payload(b"9:bAQIDBA=="),
            Err(DecodeError::UnknownType('9'))
        );
    }

    #[test]
    fn encode_payload_examples() {
        assert_eq!(
            payload(&[
                PayloadItem::Text("4hello"),
                PayloadItem::Binary(&[1, 2, 3, 4])
            ]),
            b"4hello\x1ebAQIDBA==".to_vec()
        );
        assert_eq!(
            payload(&[
                PayloadItem::Text("4test1"),
                PayloadItem::Text("4test2"),
                PayloadItem::Text("4test3")
            ]),
            b"4test1\x1e4test2\x1e4test3".to_vec()
        );
        assert_eq!(
            payload(&[PayloadItem::Text("4hello"), PayloadItem::Binary(&[1, 2, 3])]),
            b"4hello\x1ebAQID".to_vec()
        );
        assert_eq!(payload(&[PayloadItem::Text("2")]), b"2".to_vec());
        assert_eq!(payload(&[PayloadItem::Text("6")]), b"6".to_vec());
        assert_eq!(payload(&[]), Vec::<u8>::new());
        assert_eq!(payload(&[PayloadItem::Binary(&[])]), b"b".to_vec());
        assert_eq!(
            payload(&[
                PayloadItem::Binary(&[0xff]),
                PayloadItem::Binary(&[0xfb, 0xef])
            ]),
            b"b/w==\x1eb++8=".to_vec()
        );
    }

    #[test]
    fn encode_payload_appends() {
        let mut out = b"prefix".to_vec();
        encode_payload(
            [PayloadItem::Text("4a"), PayloadItem::Binary(&[1])],
            &mut out,
        );
        assert_eq!(out, b"prefix4a\x1ebAQ==".to_vec());
    }

    #[test]
    fn payload_round_trip() {
        let bin: Vec<u8> = (0..=255u8).collect();
        let body = payload(&[
            PayloadItem::Text("40"),
            PayloadItem::Text(r#"42["message",1,"2",{"3":[true]}]"#),
            PayloadItem::Binary(&bin),
            PayloadItem::Text("3probe"),
            PayloadItem::Binary(&[]),
            PayloadItem::Text("6"),
        ]);
        assert_eq!(
            decode_payload(&body),
            Ok(vec![
                Packet::Message("0"),
                Packet::Message(r#"2["message",1,"2",{"3":[true]}]"#),
                Packet::Binary(Bytes::from(bin.clone())),
                Packet::Pong("probe"),
                Packet::Binary(Bytes::new()),
                Packet::Noop,
            ])
        );
    }

    #[test]
    fn base64_lengths_round_trip() {
        for len in 0..64usize {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            let body = payload(&[PayloadItem::Binary(&data)]);
            assert_eq!(
                decode_payload(&body),
                Ok(vec![Packet::Binary(Bytes::from(data))])
            );
        }
    }

    #[test]
    fn encode_text_round_trip() {
        let packets = [
            Packet::Open("{}"),
            Packet::Close,
            Packet::Ping("probe"),
            Packet::Ping(""),
            Packet::Pong("probe"),
            Packet::Message(r#"2["a"]"#),
            Packet::Binary(Bytes::from_static(&[1, 2, 3, 4])),
            Packet::Upgrade,
            Packet::Noop,
        ];
        for p in packets {
            let text = p.encode_text();
            assert_eq!(decode_text(&text), Ok(p.clone()), "{text}");
        }
        assert_eq!(Packet::Ping("probe").encode_text(), "2probe");
        assert_eq!(
            Packet::Binary(Bytes::from_static(&[1, 2, 3, 4])).encode_text(),
            "bAQIDBA=="
        );
        assert_eq!(Packet::Binary(Bytes::new()).type_char(), None);
        assert_eq!(Packet::Noop.type_char(), Some('6'));
    }

    // ---- handshake ----

    #[test]
    fn encode_open_doc_example() {
        let h = Handshake {
            sid: "lv_VI97HAXpY6yYWAAAC",
            upgrades: &["websocket"],
            ping_interval_ms: 25000,
            ping_timeout_ms: 20000,
            max_payload: 1_000_000,
        };
        assert_eq!(
            encode_open(&h),
            r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
        );
        // socket.io sample session
        let h = Handshake {
            ping_timeout_ms: 5000,
            ..h
        };
        assert_eq!(
            encode_open(&h),
            r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":5000,"maxPayload":1000000}"#
        );
    }

    #[test]
    fn encode_open_matches_test_suite_expectations() {
        // WebSocket handshake: no upgrades; values from the test-suite server config.
        let h = Handshake {
            sid: "abc",
            upgrades: &[],
            ping_interval_ms: 300,
            ping_timeout_ms: 200,
            max_payload: 1_000_000,
        };
        let text = encode_open(&h);
        assert_eq!(
            text,
            r#"0{"sid":"abc","upgrades":[],"pingInterval":300,"pingTimeout":200,"maxPayload":1000000}"#
        );
        let Ok(Packet::Open(json)) = decode_text(&text) else {
            panic!("not an open packet");
        };
        let v: serde_json::Value = serde_json::from_str(json).expect("valid json");
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "sid",
                "upgrades",
                "pingInterval",
                "pingTimeout",
                "maxPayload"
            ]
        );
        let h2 = Handshake {
            upgrades: &["websocket", "webtransport"],
            ..h
        };
        assert!(encode_open(&h2).contains(r#""upgrades":["websocket","webtransport"]"#));
    }

    #[test]
    fn encode_open_escapes_sid() {
        let h = Handshake {
            sid: "a\"b\\c\n\u{1}é/",
            upgrades: &["web\"socket"],
            ping_interval_ms: 1,
            ping_timeout_ms: 2,
            max_payload: u64::MAX,
        };
        let text = encode_open(&h);
        assert_eq!(
            text,
            "0{\"sid\":\"a\\\"b\\\\c\\n\\u0001é/\",\"upgrades\":[\"web\\\"socket\"],\"pingInterval\":1,\"pingTimeout\":2,\"maxPayload\":18446744073709551615}"
        );
        let v: serde_json::Value =
            serde_json::from_str(text.get(1..).expect("has body")).expect("valid json");
        assert_eq!(v["sid"], "a\"b\\c\n\u{1}é/");
        assert_eq!(v["upgrades"][0], "web\"socket");
    }

    #[test]
    fn json_string_escaping_matches_json_stringify() {
        let mut out = String::new();
        write_json_string(&mut out, "\u{8}\u{c}\t\r\n\u{1f}\u{7f}\u{2028}x");
        assert_eq!(out, "\"\\b\\f\\t\\r\\n\\u001f\u{7f}\u{2028}x\"");
        let back: String = serde_json::from_str(&out).expect("valid");
        assert_eq!(back, "\u{8}\u{c}\t\r\n\u{1f}\u{7f}\u{2028}x");
    }

    #[test]
    fn display_messages_are_readable() {
        assert_eq!(DecodeError::Empty.to_string(), "empty engine.io packet");
        assert_eq!(
            DecodeError::UnknownType('a').to_string(),
            "unknown engine.io packet type 'a'"
        );
        assert_eq!(
            DecodeError::EmptySegment { index: 2 }.to_string(),
            "empty packet at position 2 of the polling payload"
        );
    }

    // ---- no input may panic ----

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        const ALPHABET: &[u8] = b"0123456bB=+/AQIDaz\x1e\xff\xc3\xa9 ";
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for round in 0..20_000 {
            let len = (rng.next() % 24) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let r = rng.next();
                    if round % 2 == 0 {
                        ALPHABET
                            .get((r % ALPHABET.len() as u64) as usize)
                            .copied()
                            .unwrap_or(0)
                    } else {
                        r as u8
                    }
                })
                .collect();
            let _ = decode_payload(&bytes);
            if let Ok(s) = std::str::from_utf8(&bytes) {
                let _ = decode_text(s);
                let _ = decode_text_with(s, false);
            }
        }
    }
}

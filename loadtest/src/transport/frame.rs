//! The WebSocket wire format as the `--ws-deflate` client needs it (RFC
//! 6455, RFC 7692): the upgrade request and the check of its answer, the
//! `permessage-deflate` parameters the server agreed to, frame heads, and
//! masked client frames. Pure: bytes in, values out; unit-tested here.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};
use thiserror::Error;

/// The extension's token.
pub const EXTENSION: &str = "permessage-deflate";

/// What the client offers: any server context mode, and it tells the
/// server it may pick the client's window (the client sends uncompressed,
/// so the answer binds nothing on its side).
pub const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// Bound on the server's HTTP answer head.
pub const MAX_HEAD: usize = 8 * 1024;

pub mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("the upgrade answer is not HTTP/1.1 101: {0}")]
    NotSwitching(String),
    #[error("the upgrade answer's head is longer than {MAX_HEAD} bytes")]
    HeadTooLong,
    #[error("the upgrade answer's Sec-WebSocket-Accept is missing or wrong")]
    BadAccept,
    #[error("bad Sec-WebSocket-Extensions answer: {0}")]
    BadExtension(String),
    #[error("frame with reserved bits {0:#x} not agreed on")]
    ReservedBits(u8),
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    #[error("masked frame from the server")]
    MaskedByServer,
    #[error("control frame fragmented or longer than 125 bytes")]
    BadControl,
    #[error("frame of {0} bytes is over the bound")]
    TooLong(u64),
}

/// The upgrade request for `host` and `path_query`, with `key` (the
/// base64 of 16 random bytes).
pub fn upgrade_request(host: &str, path_query: &str, key: &str) -> String {
    format!(
        "GET {path_query} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: {OFFER}\r\n\r\n"
    )
}

/// The `Sec-WebSocket-Accept` a server must answer to `key`.
pub fn accept_for(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    BASE64.encode(h.finalize())
}

/// The key for the upgrade request from 16 bytes.
pub fn key_from(bytes: [u8; 16]) -> String {
    BASE64.encode(bytes)
}

/// Reads the server's answer to the upgrade from the start of `buf`:
/// `Ok(None)` while its head is incomplete, else the head's length and
/// what was agreed (`None`: no compression).
pub fn parse_upgrade_answer(
    buf: &[u8],
    key: &str,
) -> Result<Option<(usize, Option<Deflate>)>, FrameError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err(FrameError::HeadTooLong)
        } else {
            Ok(None)
        };
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 101") {
        return Err(FrameError::NotSwitching(status.to_string()));
    }
    let mut accept_ok = false;
    let mut deflate = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("sec-websocket-accept") {
            accept_ok = value == accept_for(key);
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            if deflate.is_some() {
                return Err(FrameError::BadExtension("agreed twice".into()));
            }
            deflate = Some(Deflate::parse_answer(value)?);
        }
    }
    if !accept_ok {
        return Err(FrameError::BadAccept);
    }
    Ok(Some((end + 4, deflate)))
}

/// What the server agreed to in its `permessage-deflate` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Deflate {
    /// The server starts every message with an empty window: the client
    /// may inflate each on its own (and share one inflater per thread).
    pub server_no_context_takeover: bool,
    /// Binds the client's compression, which this client does not use.
    pub client_no_context_takeover: bool,
    /// The server's window, bits; inflating with 15 covers any.
    pub server_max_window_bits: Option<u8>,
    pub client_max_window_bits: Option<u8>,
}

impl Deflate {
    /// Parses the server's answer (one extension, RFC 7692 section 7.1):
    /// unknown or repeated parameters, bad values, or another extension
    /// fail the connection.
    pub fn parse_answer(value: &str) -> Result<Self, FrameError> {
        let bad = |why: &str| FrameError::BadExtension(format!("{why}: {value}"));
        if value.contains(',') {
            return Err(bad("more than one extension"));
        }
        let mut parts = value.split(';').map(str::trim);
        if parts.next() != Some(EXTENSION) {
            return Err(bad("not permessage-deflate"));
        }
        let mut d = Self::default();
        for param in parts {
            let (name, arg) = match param.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (param, None),
            };
            match (name, arg) {
                ("server_no_context_takeover", None) if !d.server_no_context_takeover => {
                    d.server_no_context_takeover = true;
                }
                ("client_no_context_takeover", None) if !d.client_no_context_takeover => {
                    d.client_no_context_takeover = true;
                }
                ("server_max_window_bits", Some(a)) if d.server_max_window_bits.is_none() => {
                    d.server_max_window_bits = Some(window_bits(a).ok_or_else(|| bad(param))?);
                }
                // The client offered client_max_window_bits, so the server
                // may answer it, with a value.
                ("client_max_window_bits", Some(a)) if d.client_max_window_bits.is_none() => {
                    d.client_max_window_bits = Some(window_bits(a).ok_or_else(|| bad(param))?);
                }
                _ => return Err(bad(param)),
            }
        }
        Ok(d)
    }
}

fn window_bits(arg: &str) -> Option<u8> {
    let bits: u8 = arg.parse().ok()?;
    (8..=15).contains(&bits).then_some(bits)
}

/// The head of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub fin: bool,
    /// Set on the first frame of a compressed message.
    pub rsv1: bool,
    pub opcode: u8,
    /// Bytes of the head (2 to 10, servers do not mask).
    pub head_len: usize,
    pub payload_len: usize,
}

impl Head {
    /// Parses a server frame's head at the start of `buf`: `Ok(None)`
    /// while incomplete. `rsv1_allowed`: compression was agreed;
    /// `max_payload` bounds the frame.
    pub fn parse(
        buf: &[u8],
        rsv1_allowed: bool,
        max_payload: usize,
    ) -> Result<Option<Self>, FrameError> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        let reserved = b0 & 0x70;
        if reserved & !(if rsv1_allowed { 0x40 } else { 0 }) != 0 {
            return Err(FrameError::ReservedBits(reserved));
        }
        let opcode = b0 & 0x0F;
        if b1 & 0x80 != 0 {
            return Err(FrameError::MaskedByServer);
        }
        let fin = b0 & 0x80 != 0;
        let (head_len, len) = match b1 & 0x7F {
            126 => {
                let Some(b) = buf.get(2..4) else {
                    return Ok(None);
                };
                (4, u64::from(u16::from_be_bytes([b[0], b[1]])))
            }
            127 => {
                let Some(b) = buf.get(2..10) else {
                    return Ok(None);
                };
                (10, u64::from_be_bytes(b.try_into().expect("8 bytes")))
            }
            n => (2, u64::from(n)),
        };
        match opcode {
            opcode::CONTINUATION | opcode::TEXT | opcode::BINARY => {}
            opcode::CLOSE | opcode::PING | opcode::PONG => {
                if !fin || len > 125 {
                    return Err(FrameError::BadControl);
                }
                if b0 & 0x40 != 0 {
                    return Err(FrameError::ReservedBits(reserved));
                }
            }
            other => return Err(FrameError::UnknownOpcode(other)),
        }
        if len > max_payload as u64 {
            return Err(FrameError::TooLong(len));
        }
        Ok(Some(Self {
            fin,
            rsv1: b0 & 0x40 != 0,
            opcode,
            head_len,
            payload_len: len as usize,
        }))
    }
}

/// Appends one final, uncompressed client frame to `out`, masked with
/// `mask` (RFC 6455 section 5.3).
pub fn push_client_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_is_the_rfc_example() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let req = upgrade_request("127.0.0.1:3000", "/socket.io/?EIO=4", "k");
        assert!(req.starts_with("GET /socket.io/?EIO=4 HTTP/1.1\r\n"));
        assert!(req.contains(
            "\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        ));
        assert!(req.ends_with("\r\n\r\n"));
    }

    #[test]
    fn parses_the_gateways_and_nodes_answers() {
        let gw = Deflate::parse_answer(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        )
        .unwrap();
        assert!(gw.server_no_context_takeover && gw.client_no_context_takeover);
        // Node's ws with its defaults: context takeover on both sides.
        let node = Deflate::parse_answer("permessage-deflate; client_max_window_bits=15").unwrap();
        assert!(!node.server_no_context_takeover);
        assert_eq!(node.client_max_window_bits, Some(15));
        let quoted =
            Deflate::parse_answer("permessage-deflate;server_max_window_bits=\"10\"").unwrap();
        assert_eq!(quoted.server_max_window_bits, Some(10));
    }

    #[test]
    fn refuses_bad_answers() {
        for bad in [
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; mystery",
            "permessage-deflate, permessage-deflate",
        ] {
            assert!(Deflate::parse_answer(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_the_upgrade_answer_and_what_follows() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let answer = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n";
        let mut buf = answer.as_bytes().to_vec();
        buf.extend_from_slice(&[0x81, 0x01, b'0']);
        assert_eq!(parse_upgrade_answer(&buf[..20], key), Ok(None));
        let (len, deflate) = parse_upgrade_answer(&buf, key).unwrap().unwrap();
        assert_eq!(len, answer.len());
        assert!(deflate.unwrap().server_no_context_takeover);

        let plain = answer.replace(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n",
            "",
        );
        let (_, none) = parse_upgrade_answer(plain.as_bytes(), key)
            .unwrap()
            .unwrap();
        assert_eq!(none, None);
        assert_eq!(
            parse_upgrade_answer(plain.as_bytes(), "other"),
            Err(FrameError::BadAccept)
        );
        assert!(matches!(
            parse_upgrade_answer(b"HTTP/1.1 400 Bad Request\r\n\r\n", key),
            Err(FrameError::NotSwitching(_))
        ));
        assert_eq!(
            parse_upgrade_answer(&[b'x'; MAX_HEAD + 1], key),
            Err(FrameError::HeadTooLong)
        );
    }

    #[test]
    fn parses_frame_heads_and_their_bounds() {
        // A compressed text frame of 5 bytes, not final.
        let h = Head::parse(&[0x41, 0x05], true, 100).unwrap().unwrap();
        assert_eq!(
            h,
            Head {
                fin: false,
                rsv1: true,
                opcode: opcode::TEXT,
                head_len: 2,
                payload_len: 5
            }
        );
        assert_eq!(
            Head::parse(&[0x41, 0x05], false, 100),
            Err(FrameError::ReservedBits(0x40))
        );
        assert_eq!(Head::parse(&[0x81], true, 100), Ok(None));
        // 16-bit and 64-bit lengths, incomplete then complete.
        assert_eq!(Head::parse(&[0x80, 126, 0x01], true, 1000), Ok(None));
        let h = Head::parse(&[0x80, 126, 0x01, 0x00], true, 1000)
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.head_len, h.payload_len),
            (true, 0, 4, 256)
        );
        let long = [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0];
        assert_eq!(
            Head::parse(&long, true, 65_535),
            Err(FrameError::TooLong(65_536))
        );
        assert_eq!(
            Head::parse(&long, true, 65_536).unwrap().unwrap().head_len,
            10
        );
        assert_eq!(
            Head::parse(&[0x81, 0x81], true, 100),
            Err(FrameError::MaskedByServer)
        );
        assert_eq!(
            Head::parse(&[0x09, 0x00], true, 100),
            Err(FrameError::BadControl)
        );
        assert_eq!(
            Head::parse(&[0xC9, 0x00], true, 100),
            Err(FrameError::ReservedBits(0x40))
        );
        assert_eq!(
            Head::parse(&[0x83, 0x00], true, 100),
            Err(FrameError::UnknownOpcode(3))
        );
    }

    #[test]
    fn masks_client_frames() {
        let mut out = Vec::new();
        push_client_frame(&mut out, opcode::TEXT, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
        // RFC 6455 section 5.7: a masked "Hello".
        assert_eq!(
            out,
            [
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
        out.clear();
        push_client_frame(&mut out, opcode::TEXT, &[0; 300], [0; 4]);
        assert_eq!(&out[..4], &[0x81, 0x80 | 126, 0x01, 0x2c]);
        assert_eq!(out.len(), 4 + 4 + 300);
    }
}

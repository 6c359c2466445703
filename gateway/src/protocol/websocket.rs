//! The server side of the WebSocket framing (RFC 6455): the opening
//! handshake's accept key, frame headers for what the server sends, and an
//! incremental decoder of what clients send.
//!
//! The server sends unmasked, unfragmented frames, so a frame is a header of
//! 2 to 10 bytes followed by the payload as it is: the gateway writes the
//! header and the shared payload bytes side by side, never copying the
//! payload. Client frames must be masked; they are unmasked in place and
//! fragmented messages are reassembled up to a size limit. The only
//! extension is permessage-deflate ([`super::deflate`]): once negotiated,
//! RSV1 on the first frame of a message marks it compressed, and the whole
//! message is inflated within the same size limit. Any other reserved bit
//! set is a protocol error.

use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use sha1::{Digest, Sha1};

use super::deflate::{self, InflateError};

/// Frame opcodes.
pub mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// Close status codes the server sends.
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    /// The client broke a policy (rate limit, a bound on what it sends or
    /// makes the node write).
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
}

/// The longest frame header: 2 bytes, an 8-byte extended length.
pub const MAX_HEADER: usize = 10;

/// The `Sec-WebSocket-Accept` value answering `Sec-WebSocket-Key` `key`.
pub fn accept_key(key: &[u8]) -> String {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Is `key` a valid `Sec-WebSocket-Key` (16 bytes, base64)?
pub fn valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|k| k.len() == 16)
}

/// Writes the header of a final, unmasked frame of `opcode` carrying `len`
/// payload bytes into `out`; returns the header's length.
pub fn encode_header(opcode: u8, len: usize, out: &mut [u8; MAX_HEADER]) -> usize {
    out[0] = 0x80 | (opcode & 0x0F);
    if len < 126 {
        out[1] = len as u8;
        2
    } else if len <= usize::from(u16::MAX) {
        out[1] = 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// [`encode_header`] for a message compressed with permessage-deflate
/// (RSV1 set).
pub fn encode_deflated_header(opcode: u8, len: usize, out: &mut [u8; MAX_HEADER]) -> usize {
    let n = encode_header(opcode, len, out);
    out[0] |= 0x40;
    n
}

/// A whole frame (header and payload) as one buffer, for control frames.
pub fn encode_frame(opcode: u8, payload: &[u8]) -> Bytes {
    let mut header = [0u8; MAX_HEADER];
    let n = encode_header(opcode, payload.len(), &mut header);
    let mut out = Vec::with_capacity(n + payload.len());
    out.extend_from_slice(&header[..n]);
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// A close frame with `code` and no reason text.
pub fn close_frame(code: u16) -> Bytes {
    encode_frame(opcode::CLOSE, &code.to_be_bytes())
}

/// A close frame with `code` and a short `reason` (cut to what a control
/// frame holds: 123 bytes, on a character boundary).
pub fn close_frame_with_reason(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode_frame(opcode::CLOSE, &payload)
}

/// A message decoded from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message, valid UTF-8.
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong,
    /// The client closes, with its status code if it sent one.
    Close(Option<u16>),
}

/// Why the client's bytes are not acceptable; the connection closes with
/// [`Error::close_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("reserved bits set that no negotiated extension uses")]
    ReservedBits,
    #[error("client frame not masked")]
    Unmasked,
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    #[error("fragmented or oversized control frame")]
    BadControlFrame,
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    #[error("new data frame inside a fragmented message")]
    InterleavedMessage,
    #[error("message larger than {0} bytes")]
    TooBig(usize),
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    #[error("malformed close frame")]
    BadClose,
    #[error("compressed message is not valid deflate data")]
    BadCompression,
}

impl Error {
    /// The close status the server answers this error with.
    pub fn close_code(self) -> u16 {
        match self {
            Error::TooBig(_) => close_code::TOO_BIG,
            Error::InvalidUtf8 | Error::BadCompression => close_code::INVALID_DATA,
            _ => close_code::PROTOCOL_ERROR,
        }
    }
}

/// Decodes client frames from a growing buffer into messages.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    /// The opcode, whether it is compressed, and the payload so far of a
    /// fragmented message.
    partial: Option<(u8, bool, BytesMut)>,
    /// permessage-deflate was negotiated: RSV1 marks compressed messages.
    deflate: bool,
}

impl Decoder {
    /// A decoder refusing messages (and frames) over `max_message` bytes,
    /// compressed or inflated.
    pub fn new(max_message: usize) -> Self {
        Self {
            max_message,
            partial: None,
            deflate: false,
        }
    }

    /// The same decoder for a connection that negotiated
    /// permessage-deflate.
    pub fn with_deflate(mut self, deflate: bool) -> Self {
        self.deflate = deflate;
        self
    }

    /// Takes the next complete message out of `buf`. `Ok(None)` means more
    /// bytes are needed; what was consumed stays consumed (fragments are
    /// kept inside the decoder), so call again after reading more.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, Error> {
        loop {
            let Some((fin, compressed, op, payload)) = self.frame(buf)? else {
                return Ok(None);
            };
            // RSV1 belongs to the first frame of a data message only.
            if compressed && (op == opcode::CONTINUATION || op >= opcode::CLOSE) {
                return Err(Error::ReservedBits);
            }
            match op {
                opcode::PING => return Ok(Some(Message::Ping(payload))),
                opcode::PONG => return Ok(Some(Message::Pong)),
                opcode::CLOSE => return close_message(&payload).map(Some),
                opcode::CONTINUATION => {
                    let Some((_, _, so_far)) = self.partial.as_mut() else {
                        return Err(Error::UnexpectedContinuation);
                    };
                    if so_far.len() + payload.len() > self.max_message {
                        return Err(Error::TooBig(self.max_message));
                    }
                    so_far.extend_from_slice(&payload);
                    if fin {
                        let (op, compressed, data) = self.partial.take().expect("checked above");
                        return self.message(op, compressed, data.freeze()).map(Some);
                    }
                }
                _ if self.partial.is_some() => return Err(Error::InterleavedMessage),
                _ if fin => return self.message(op, compressed, payload).map(Some),
                _ => self.partial = Some((op, compressed, BytesMut::from(&payload[..]))),
            }
        }
    }

    /// A whole data message, inflated first when it came compressed.
    fn message(&self, op: u8, compressed: bool, data: Bytes) -> Result<Message, Error> {
        if !compressed {
            return data_message(op, data);
        }
        match deflate::inflate(&data, self.max_message) {
            Ok(inflated) => data_message(op, Bytes::from(inflated)),
            Err(InflateError::TooBig(limit)) => Err(Error::TooBig(limit)),
            Err(InflateError::Invalid) => Err(Error::BadCompression),
        }
    }

    /// Takes one whole frame out of `buf`: (fin, RSV1, opcode, unmasked
    /// payload).
    fn frame(&self, buf: &mut BytesMut) -> Result<Option<(bool, bool, u8, Bytes)>, Error> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        let rsv1 = b0 & 0x40 != 0;
        if b0 & 0x30 != 0 || (rsv1 && !self.deflate) {
            return Err(Error::ReservedBits);
        }
        let fin = b0 & 0x80 != 0;
        let op = b0 & 0x0F;
        let control = match op {
            opcode::CONTINUATION | opcode::TEXT | opcode::BINARY => false,
            opcode::CLOSE | opcode::PING | opcode::PONG => true,
            other => return Err(Error::UnknownOpcode(other)),
        };
        if b1 & 0x80 == 0 {
            return Err(Error::Unmasked);
        }
        let (len, at) = match b1 & 0x7F {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let mut n = [0u8; 8];
                n.copy_from_slice(&buf[2..10]);
                (u64::from_be_bytes(n), 10)
            }
            n => (u64::from(n), 2),
        };
        if control && (!fin || len > 125) {
            return Err(Error::BadControlFrame);
        }
        let limit = self.max_message as u64;
        if len > limit {
            return Err(Error::TooBig(self.max_message));
        }
        let len = len as usize;
        let total = at + 4 + len;
        if buf.len() < total {
            // Nothing is reserved for what the header announces: the
            // reader's buffer grows with the bytes that arrive.
            return Ok(None);
        }
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&buf[at..at + 4]);
        buf.advance(at + 4);
        let mut payload = buf.split_to(len);
        unmask(&mut payload, mask);
        Ok(Some((fin, rsv1, op, payload.freeze())))
    }
}

fn data_message(op: u8, data: Bytes) -> Result<Message, Error> {
    if op == opcode::TEXT {
        if std::str::from_utf8(&data).is_err() {
            return Err(Error::InvalidUtf8);
        }
        Ok(Message::Text(data))
    } else {
        Ok(Message::Binary(data))
    }
}

fn close_message(payload: &[u8]) -> Result<Message, Error> {
    match payload {
        [] => Ok(Message::Close(None)),
        [_] => Err(Error::BadClose),
        [a, b, reason @ ..] => {
            if std::str::from_utf8(reason).is_err() {
                return Err(Error::InvalidUtf8);
            }
            let code = u16::from_be_bytes([*a, *b]);
            if !valid_close_code(code) {
                return Err(Error::BadClose);
            }
            Ok(Message::Close(Some(code)))
        }
    }
}

/// Whether a peer may send `code` in a close frame (RFC 6455 section 7.4,
/// and the IANA registry): the defined codes a peer may send (1000-1003,
/// 1007-1014), and the ranges for libraries and applications (3000-4999).
/// 1004-1006 and 1015 are reserved, never sent on the wire.
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The code the server answers a client's close with: the client's own
/// (echoed, as RFC 6455 section 5.5.1 suggests), or 1000 when it sent none.
/// (An invalid code never gets here: the decoder refuses it with 1002.)
pub fn close_reply(code: Option<u16>) -> u16 {
    code.unwrap_or(close_code::NORMAL)
}

fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn client_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![first];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 0xFFFF {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn accept_key_matches_the_rfc_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!valid_key(b"short"));
    }

    #[test]
    fn headers_use_the_shortest_length_form() {
        let mut h = [0u8; MAX_HEADER];
        assert_eq!(encode_header(opcode::TEXT, 5, &mut h), 2);
        assert_eq!(&h[..2], &[0x81, 5]);
        assert_eq!(encode_header(opcode::BINARY, 126, &mut h), 4);
        assert_eq!(&h[..4], &[0x82, 126, 0, 126]);
        assert_eq!(encode_header(opcode::TEXT, 70_000, &mut h), 10);
        assert_eq!(&h[..10], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(&close_frame(1000)[..], &[0x88, 2, 0x03, 0xE8]);
    }

    #[test]
    fn decodes_masked_frames_of_every_length_form_byte_by_byte() {
        let big = vec![b'x'; 70_000];
        let mut wire = client_frame(0x81, b"4hello", [1, 2, 3, 4]);
        wire.extend(client_frame(0x82, &[0u8; 300], [9, 8, 7, 6]));
        wire.extend(client_frame(0x81, &big, [5, 5, 5, 5]));
        let mut dec = Decoder::new(100_000);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire {
            buf.extend_from_slice(&[b]);
            while let Some(m) = dec.decode(&mut buf).unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], Message::Text(Bytes::from_static(b"4hello")));
        assert_eq!(got[1], Message::Binary(Bytes::from(vec![0u8; 300])));
        assert_eq!(got[2], Message::Text(Bytes::from(big)));
        assert!(buf.is_empty());
    }

    #[test]
    fn reassembles_fragments_around_control_frames() {
        let mut wire = client_frame(0x01, b"4he", [1, 1, 1, 1]);
        wire.extend(client_frame(0x89, b"hi", [2, 2, 2, 2]));
        wire.extend(client_frame(0x00, b"ll", [3, 3, 3, 3]));
        wire.extend(client_frame(0x80, b"o", [4, 4, 4, 4]));
        let mut buf = BytesMut::from(&wire[..]);
        let mut dec = Decoder::new(100);
        assert_eq!(
            dec.decode(&mut buf).unwrap(),
            Some(Message::Ping(Bytes::from_static(b"hi")))
        );
        assert_eq!(
            dec.decode(&mut buf).unwrap(),
            Some(Message::Text(Bytes::from_static(b"4hello")))
        );
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn refuses_what_rfc_6455_forbids() {
        let cases: Vec<(Vec<u8>, Error)> = vec![
            (client_frame(0xC1, b"x", [0; 4]), Error::ReservedBits),
            (vec![0x81, 0x01, b'x'], Error::Unmasked),
            (client_frame(0x83, b"x", [0; 4]), Error::UnknownOpcode(3)),
            (client_frame(0x09, b"x", [0; 4]), Error::BadControlFrame),
            (
                client_frame(0x89, &[0; 126], [0; 4]),
                Error::BadControlFrame,
            ),
            (
                client_frame(0x80, b"x", [0; 4]),
                Error::UnexpectedContinuation,
            ),
            (
                client_frame(0x81, &[0xFF, 0xFE], [0; 4]),
                Error::InvalidUtf8,
            ),
            (client_frame(0x81, &[b'a'; 11], [0; 4]), Error::TooBig(10)),
            (client_frame(0x88, &[3], [0; 4]), Error::BadClose),
        ];
        for (wire, want) in cases {
            let mut dec = Decoder::new(10);
            let mut buf = BytesMut::from(&wire[..]);
            assert_eq!(dec.decode(&mut buf), Err(want), "{wire:?}");
        }
        // A frame header announcing more than the limit is refused before
        // its payload arrives.
        let mut dec = Decoder::new(10);
        let mut buf = BytesMut::from(&[0x82u8, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0][..]);
        buf[2] = 0x7F;
        assert_eq!(dec.decode(&mut buf), Err(Error::TooBig(10)));
        // Fragments may not add up past the limit either.
        let mut wire = client_frame(0x01, &[b'a'; 6], [0; 4]);
        wire.extend(client_frame(0x80, &[b'a'; 6], [0; 4]));
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(Decoder::new(10).decode(&mut buf), Err(Error::TooBig(10)));
        // A data frame may not interrupt a fragmented message.
        let mut wire = client_frame(0x01, b"a", [0; 4]);
        wire.extend(client_frame(0x81, b"b", [0; 4]));
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            Decoder::new(10).decode(&mut buf),
            Err(Error::InterleavedMessage)
        );
    }

    #[test]
    fn compressed_messages_inflate_whole_and_within_the_limit() {
        let text = "4".to_owned() + &"compress me ".repeat(100);
        let packed = deflate::compress(text.as_bytes(), 6);
        // RSV1 on the first frame only, the compressed bytes in two frames.
        let (a, b) = packed.split_at(packed.len() / 2);
        let mut wire = client_frame(0x41, a, [1, 2, 3, 4]);
        wire.extend(client_frame(0x80, b, [5, 6, 7, 8]));
        wire.extend(client_frame(0x82, b"plain", [1, 1, 1, 1]));
        let mut buf = BytesMut::from(&wire[..]);
        let mut dec = Decoder::new(2000).with_deflate(true);
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(Message::Text(Bytes::from(text.clone()))))
        );
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(Message::Binary(Bytes::from_static(b"plain"))))
        );
        // Without the extension RSV1 is an error; on a continuation or a
        // control frame it always is; RSV2 and RSV3 too.
        for (deflate, wire) in [
            (false, client_frame(0xC1, &packed, [0; 4])),
            (true, {
                let mut w = client_frame(0x01, b"4", [0; 4]);
                w.extend(client_frame(0xC0, &packed, [0; 4]));
                w
            }),
            (true, client_frame(0xC9, b"", [0; 4])),
            (true, client_frame(0xA1, b"x", [0; 4])),
            (true, client_frame(0x91, b"x", [0; 4])),
        ] {
            let mut buf = BytesMut::from(&wire[..]);
            let got = Decoder::new(2000).with_deflate(deflate).decode(&mut buf);
            assert_eq!(got, Err(Error::ReservedBits), "{wire:?}");
        }
        // Inflating past the limit is too big (1009), garbage invalid (1007).
        let mut buf = BytesMut::from(&client_frame(0xC1, &packed, [0; 4])[..]);
        let err = Decoder::new(1000)
            .with_deflate(true)
            .decode(&mut buf)
            .unwrap_err();
        assert_eq!((err, err.close_code()), (Error::TooBig(1000), 1009));
        let mut buf = BytesMut::from(&client_frame(0xC2, &[0xFF; 8], [0; 4])[..]);
        let err = Decoder::new(1000)
            .with_deflate(true)
            .decode(&mut buf)
            .unwrap_err();
        assert_eq!((err, err.close_code()), (Error::BadCompression, 1007));
        // Inflated text must still be UTF-8.
        let bad = deflate::compress(&[0xFF, 0xFE], 6);
        let mut buf = BytesMut::from(&client_frame(0xC1, &bad, [0; 4])[..]);
        let got = Decoder::new(1000).with_deflate(true).decode(&mut buf);
        assert_eq!(got, Err(Error::InvalidUtf8));
        let mut h = [0u8; MAX_HEADER];
        assert_eq!(encode_deflated_header(opcode::TEXT, 5, &mut h), 2);
        assert_eq!(&h[..2], &[0xC1, 5]);
    }

    #[test]
    fn a_frame_header_reserves_nothing_for_its_payload() {
        // A header announcing 999 KB, then 3 bytes of it.
        let wire = client_frame(0x82, &vec![0u8; 999_000], [1, 2, 3, 4]);
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(&wire[..14 + 3]);
        let mut dec = Decoder::new(1_000_000);
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert!(buf.capacity() <= 64, "reserved {}", buf.capacity());
        // The rest arrives: the message is whole.
        buf.extend_from_slice(&wire[14 + 3..]);
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(Message::Binary(Bytes::from(vec![0u8; 999_000]))))
        );
    }

    #[test]
    fn close_frames_carry_their_code() {
        let mut buf = BytesMut::from(&client_frame(0x88, &[0x03, 0xE9, b'b'], [7; 4])[..]);
        assert_eq!(
            Decoder::new(10).decode(&mut buf),
            Ok(Some(Message::Close(Some(1001))))
        );
        let mut buf = BytesMut::from(&client_frame(0x88, b"", [7; 4])[..]);
        assert_eq!(
            Decoder::new(10).decode(&mut buf),
            Ok(Some(Message::Close(None)))
        );
    }

    #[test]
    fn close_codes_a_peer_may_not_send_are_protocol_errors() {
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            let payload = code.to_be_bytes();
            let mut buf = BytesMut::from(&client_frame(0x88, &payload, [3; 4])[..]);
            let err = Decoder::new(10).decode(&mut buf).unwrap_err();
            assert_eq!((code, err, err.close_code()), (code, Error::BadClose, 1002));
        }
        for code in [
            1000u16, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 3999, 4000, 4999,
        ] {
            let payload = code.to_be_bytes();
            let mut buf = BytesMut::from(&client_frame(0x88, &payload, [3; 4])[..]);
            let got = Decoder::new(10).decode(&mut buf);
            assert_eq!(got, Ok(Some(Message::Close(Some(code)))));
            assert_eq!(close_reply(Some(code)), code, "echoed");
        }
        assert_eq!(close_reply(None), 1000);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..20_000 {
            let len = (seed % 40) as usize;
            let mut bytes = Vec::with_capacity(len);
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                bytes.push(seed as u8);
            }
            let mut buf = BytesMut::from(&bytes[..]);
            let mut dec = Decoder::new(16);
            while let Ok(Some(_)) = dec.decode(&mut buf) {}
        }
    }
}

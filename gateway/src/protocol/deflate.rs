//! permessage-deflate (RFC 7692): the negotiation of the extension, and
//! the compression and inflation of one message.
//!
//! The server never carries its compression context from one message to
//! the next (`server_no_context_takeover`), so a message compresses to the
//! same bytes for every connection: a broadcast is compressed once and the
//! compressed bytes are shared like uncompressed ones. It asks clients for
//! the same (`client_no_context_takeover`, which a server may require), so
//! every client message inflates on its own: no inflater is kept per
//! connection between messages, one per thread serves them all.
//!
//! The server compresses with a 32 KiB window. A client that asks for a
//! smaller one (`server_max_window_bits=N`) is granted it, and gets
//! compressed only the messages no longer than its window, whose back
//! references cannot reach further ([`Agreed::takes`]); longer ones go out
//! uncompressed, as any message may. The client's own window
//! (`client_max_window_bits`) needs no answer: 32 KiB inflates any.
//!
//! Pure: bytes in, bytes out; the compressor and the inflater are reused
//! per thread (each holds tens of KiB of tables).

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension's token in `Sec-WebSocket-Extensions`.
pub const EXTENSION: &str = "permessage-deflate";

/// The empty stored block that ends every compressed message on the wire
/// (RFC 7692 section 7.2.1): the sender removes it, the receiver appends
/// it back.
const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// The widest LZ77 window, bits (32 KiB): the one the server compresses
/// with.
const MAX_WINDOW_BITS: u8 = 15;

/// What was agreed with one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The LZ77 window the client inflates with, bits (8 to 15); the
    /// client's `server_max_window_bits`, 15 when it set none.
    pub window_bits: u8,
    /// Whether the client asked for `server_max_window_bits` (the answer
    /// then names it).
    window_asked: bool,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` value of the server's answer.
    pub fn response(&self) -> String {
        let mut out =
            format!("{EXTENSION}; server_no_context_takeover; client_no_context_takeover");
        if self.window_asked {
            out.push_str(&format!("; server_max_window_bits={}", self.window_bits));
        }
        out
    }

    /// Whether a message of `len` bytes compressed by [`compress`] may go
    /// to this client: always with a 32 KiB window; with a smaller one only
    /// when the message fits in it (a back reference then reaches at most
    /// `len - 1` bytes back).
    pub fn takes(&self, len: usize) -> bool {
        self.window_bits >= MAX_WINDOW_BITS || len <= 1usize << self.window_bits
    }
}

/// The first permessage-deflate offer among the `Sec-WebSocket-Extensions`
/// header `values` that the server can accept; `None` when there is none
/// (the connection goes on uncompressed). An offer with an unknown, a
/// repeated or an invalid parameter is declined (RFC 7692 section 5).
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Agreed> {
    values
        .into_iter()
        .flat_map(|v| v.split(','))
        .filter_map(|offer| {
            let mut parts = offer.split(';');
            let name = parts.next()?.trim();
            name.eq_ignore_ascii_case(EXTENSION).then_some(parts)
        })
        .find_map(accept_offer)
}

/// The parameters of one offer, accepted or declined.
fn accept_offer<'a>(params: impl Iterator<Item = &'a str>) -> Option<Agreed> {
    let mut seen = [false; 4];
    let mut agreed = Agreed {
        window_bits: MAX_WINDOW_BITS,
        window_asked: false,
    };
    for param in params {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquote(v.trim())?)),
            None => (param.trim(), None),
        };
        let index = match name {
            "server_no_context_takeover" => 0,
            "client_no_context_takeover" => 1,
            "server_max_window_bits" => 2,
            "client_max_window_bits" => 3,
            _ => return None,
        };
        if std::mem::replace(&mut seen[index], true) {
            return None;
        }
        match (index, value) {
            (0 | 1, None) => {}
            (2, Some(v)) => {
                agreed.window_bits = window_bits(v)?;
                agreed.window_asked = true;
            }
            (3, None) => {}
            (3, Some(v)) => {
                window_bits(v)?;
            }
            _ => return None,
        }
    }
    Some(agreed)
}

/// A parameter value without the quotes of a quoted string.
fn unquote(v: &str) -> Option<&str> {
    match v.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None => Some(v),
    }
}

/// A window size parameter: a decimal 8 to 15 without leading zeros.
fn window_bits(v: &str) -> Option<u8> {
    if v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

thread_local! {
    static DEFLATER: RefCell<Option<(u32, Compress)>> = const { RefCell::new(None) };
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// `data` compressed as one message (raw deflate, ended by a sync flush
/// whose empty block is removed), at `level` (0 to 9), with nothing taken
/// from earlier messages.
pub fn compress(data: &[u8], level: u32) -> Vec<u8> {
    DEFLATER.with(|cell| {
        let mut cell = cell.borrow_mut();
        let deflater = match &mut *cell {
            Some((l, d)) if *l == level => {
                d.reset();
                d
            }
            slot => {
                &mut slot
                    .insert((level, Compress::new(Compression::new(level), false)))
                    .1
            }
        };
        let start = deflater.total_in();
        // Room for the worst case (stored blocks), so that one call does it
        // all: short of room, the compressor may stop with a block pending
        // although the buffer is not full.
        let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 64);
        loop {
            let consumed = (deflater.total_in() - start) as usize;
            deflater
                .compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
                .expect("deflate of a buffer in memory cannot fail");
            let consumed = (deflater.total_in() - start) as usize;
            // Done once all input is in and the flush finished: its empty
            // block written, with room to spare.
            if consumed == data.len() && out.ends_with(&TAIL) && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity());
        }
        out.truncate(out.len() - TAIL.len());
        // The bytes may be shared and queued for long: no spare room.
        out.shrink_to_fit();
        out
    })
}

/// Why a compressed message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    #[error("inflates to more than {0} bytes")]
    TooBig(usize),
    #[error("not a valid deflate stream")]
    Invalid,
}

/// The message `data` (as on the wire) inflated, refusing it as soon as it
/// would exceed `limit` bytes: what is allocated follows what comes out,
/// never more than `limit` and one step of growth.
pub fn inflate(data: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    INFLATER.with(|cell| {
        let mut cell = cell.borrow_mut();
        let inflater = match &mut *cell {
            Some(d) => {
                d.reset(false);
                d
            }
            slot => slot.insert(Decompress::new(false)),
        };
        let cap = limit.saturating_add(1);
        let mut out = Vec::with_capacity(data.len().saturating_mul(2).max(64).min(cap));
        for input in [data, &TAIL[..]] {
            let mut at = 0;
            loop {
                let (before_in, before_out) = (inflater.total_in(), out.len());
                let status = inflater
                    .decompress_vec(&input[at..], &mut out, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Invalid)?;
                at += (inflater.total_in() - before_in) as usize;
                if out.len() > limit {
                    return Err(InflateError::TooBig(limit));
                }
                if status == Status::StreamEnd {
                    // A final block ended the stream: nothing may follow
                    // but the tail the receiver appends.
                    return if input.len() == at || input == TAIL {
                        Ok(out)
                    } else {
                        Err(InflateError::Invalid)
                    };
                }
                if out.len() == out.capacity() {
                    let grow = out.capacity().min(cap - out.capacity());
                    out.reserve_exact(grow.max(1));
                    continue;
                }
                if at == input.len()
                    || (inflater.total_in() == before_in && out.len() == before_out)
                {
                    break;
                }
            }
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `len` pseudo-random bytes (xorshift from `seed`, which moves on).
    fn noise(seed: &mut u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                *seed as u8
            })
            .collect()
    }

    #[test]
    fn accepts_the_first_offer_it_can_honour() {
        let a = negotiate(["permessage-deflate; client_max_window_bits"]).unwrap();
        assert_eq!(a.window_bits, 15);
        assert_eq!(
            a.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        let a = negotiate([
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits=10, permessage-deflate",
        ])
        .unwrap();
        assert_eq!(a.window_bits, 10);
        assert!(a.response().ends_with("; server_max_window_bits=10"));
        assert!(a.takes(1024) && !a.takes(1025));
        let a = negotiate([r#"permessage-deflate; client_max_window_bits="12"; server_no_context_takeover; client_no_context_takeover"#]).unwrap();
        assert_eq!(a.window_bits, 15);
        assert!(a.takes(usize::MAX));
    }

    #[test]
    fn declines_offers_with_unknown_repeated_or_invalid_parameters() {
        for offer in [
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_max_window_bits=\"9",
            "deflate-frame",
            "",
        ] {
            assert_eq!(negotiate([offer]), None, "{offer}");
        }
        // A declined offer gives way to the next.
        let a =
            negotiate(["permessage-deflate; foo, permessage-deflate; server_max_window_bits=9"]);
        assert_eq!(a.map(|a| a.window_bits), Some(9));
    }

    #[test]
    fn the_rfc_example_compresses_and_inflates() {
        // RFC 7692 section 7.2.3.1: "Hello" as one compressed message.
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflate(&hello, 100).unwrap(), b"Hello");
        assert_eq!(inflate(&compress(b"Hello", 6), 100).unwrap(), b"Hello");
        // A message ended by a final block instead of a sync flush.
        assert_eq!(
            inflate(&[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100).unwrap(),
            b"Hello"
        );
        assert_eq!(inflate(&compress(b"", 6), 100).unwrap(), b"");
    }

    #[test]
    fn messages_compress_alone_the_same_each_time() {
        let text = "42[\"news\",{\"body\":\"the same words, again and again\"}]".repeat(60);
        let first = compress(text.as_bytes(), 6);
        assert!(
            first.len() * 10 < text.len(),
            "{} of {}",
            first.len(),
            text.len()
        );
        assert_eq!(
            compress(text.as_bytes(), 6),
            first,
            "no context carried over"
        );
        let fast = compress(text.as_bytes(), 1);
        assert_eq!(inflate(&fast, text.len()).unwrap(), text.as_bytes());
        assert_eq!(inflate(&first, text.len()).unwrap(), text.as_bytes());
        // Incompressible bytes of every length round-trip.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for len in [1, 100, 5000, 16_384, 65_536, 70_000, 131_072] {
            let data = noise(&mut seed, len);
            for level in [1, 6, 9] {
                assert_eq!(inflate(&compress(&data, level), len).unwrap(), data);
            }
        }
    }

    #[test]
    fn every_flush_completes() {
        // Messages of Autobahn's sizes, random and text-like, at every
        // level. (Slices of a bitmap once left the last block of a 64 KiB
        // message pending, the buffer not full: Autobahn case 12.2.9.)
        let mut seed = 0x0123_4567_89AB_CDEFu64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for len in [64, 256, 1024, 4096, 8192, 16_384, 32_768, 65_536, 131_072] {
            for round in 0..8 {
                let data: Vec<u8> = (0..len)
                    .map(|i| match round % 2 {
                        0 => next() as u8,
                        _ => b"abcdefgh"[(next() % 8) as usize] ^ (i % 3) as u8,
                    })
                    .collect();
                for level in [1, 6, 9] {
                    let packed = compress(&data, level);
                    assert_eq!(
                        inflate(&packed, len).unwrap(),
                        data,
                        "{len} {round} {level}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_bomb_is_cut_off_at_the_limit() {
        let zeros = vec![0u8; 10_000_000];
        let bomb = compress(&zeros, 9);
        assert!(bomb.len() < 20_000, "{}", bomb.len());
        assert_eq!(
            inflate(&bomb, 1_000_000),
            Err(InflateError::TooBig(1_000_000))
        );
        assert_eq!(inflate(&bomb, 10_000_000).unwrap().len(), 10_000_000);
    }

    #[test]
    fn garbage_is_invalid_never_a_panic() {
        assert_eq!(inflate(&[0xff; 16], 100), Err(InflateError::Invalid));
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..5_000 {
            let len = (seed % 40) as usize;
            let bytes = noise(&mut seed, len);
            let _ = inflate(&bytes, 64);
        }
    }
}

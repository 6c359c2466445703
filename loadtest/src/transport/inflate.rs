//! Inflating permessage-deflate messages (RFC 7692 section 7.2.2): raw
//! deflate, with the empty stored block `00 00 ff ff` the sender removed
//! appended back, bounded in output bytes.
//!
//! Memory: one raw inflater (miniz_oxide's state: its 32 KiB window and
//! 9 KiB of Huffman tables, about 42 KiB) is needed per connection only when
//! the server keeps its context from one message to the next (Node's `ws`
//! by default). When it agreed to `server_no_context_takeover` (the
//! gateway), every message inflates on its own, and one inflater per
//! worker thread serves all its connections ([`Inflater::Shared`]).

use std::cell::RefCell;

use flate2::{Decompress, FlushDecompress, Status};
use thiserror::Error;

/// Appended to every compressed message before inflating it.
const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

#[derive(Debug, Error, PartialEq, Eq)]
pub enum InflateError {
    #[error("inflated message over {0} bytes")]
    TooLarge(usize),
    #[error("corrupt deflate data: {0}")]
    Corrupt(String),
}

thread_local! {
    /// The inflater of the connections that need no context: reset before
    /// each message.
    static SHARED: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// How one connection inflates.
pub enum Inflater {
    /// No context between messages: the thread's inflater, reset per message.
    Shared,
    /// The server's context carries over: this connection's own inflater,
    /// made on the first compressed message.
    Own(Option<Box<Decompress>>),
}

impl Inflater {
    pub fn new(server_no_context_takeover: bool) -> Self {
        if server_no_context_takeover {
            Self::Shared
        } else {
            Self::Own(None)
        }
    }

    /// Inflates one whole message (its frames' payloads joined) into
    /// `out`, failing when it would exceed `limit` bytes.
    pub fn inflate(
        &mut self,
        data: &[u8],
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), InflateError> {
        match self {
            Self::Shared => SHARED.with(|d| {
                let mut d = d.borrow_mut();
                d.reset(false);
                inflate_into(&mut d, data, limit, out)
            }),
            Self::Own(d) => {
                let d = d.get_or_insert_with(|| Box::new(Decompress::new(false)));
                inflate_into(d, data, limit, out)
            }
        }
    }
}

/// Feeds `data` then the tail to `d`, appending what comes out to `out`
/// (at most `limit` bytes).
fn inflate_into(
    d: &mut Decompress,
    data: &[u8],
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), InflateError> {
    let start = out.len();
    for mut input in [data, &TAIL[..]] {
        loop {
            // One byte of room beyond the limit tells "over" from "exactly".
            let room = (limit + 1).saturating_sub(out.len() - start);
            if room == 0 {
                return Err(InflateError::TooLarge(limit));
            }
            let step = (input.len() * 4).max(256).min(room);
            let len = out.len();
            out.resize(len + step, 0);
            let (before_in, before_out) = (d.total_in(), d.total_out());
            let status = d.decompress(input, &mut out[len..], FlushDecompress::Sync);
            let produced = (d.total_out() - before_out) as usize;
            out.truncate(len + produced);
            let status = status.map_err(|e| InflateError::Corrupt(e.to_string()))?;
            input = &input[(d.total_in() - before_in) as usize..];
            if out.len() - start > limit {
                return Err(InflateError::TooLarge(limit));
            }
            if status == Status::StreamEnd {
                // A final block: nothing more can come.
                return Ok(());
            }
            if input.is_empty() && produced < step {
                // Everything in, and room left over: all of it is out.
                break;
            }
            if produced == 0 && d.total_in() == before_in {
                return Err(InflateError::Corrupt("no progress".into()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use flate2::{Compress, Compression, FlushCompress};

    use super::*;

    /// Compresses `msg` as a permessage-deflate sender does: a sync flush,
    /// its tail removed; `c` keeps its context when reused.
    fn deflate(c: &mut Compress, msg: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(msg.len() + 64);
        c.compress_vec(msg, &mut out, FlushCompress::Sync).unwrap();
        assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - 4);
        out
    }

    fn message(i: usize) -> Vec<u8> {
        format!("42[\"msg\",{{\"n\":{i},\"text\":\"the same words again and again\"}}]")
            .repeat(10)
            .into_bytes()
    }

    #[test]
    fn inflates_messages_without_context_on_the_shared_inflater() {
        let mut inf = Inflater::new(true);
        assert!(matches!(inf, Inflater::Shared));
        for i in 0..3 {
            // A fresh compressor per message: no context taken over.
            let mut c = Compress::new(Compression::new(1), false);
            let mut out = Vec::new();
            inf.inflate(&deflate(&mut c, &message(i)), 1 << 20, &mut out)
                .unwrap();
            assert_eq!(out, message(i));
        }
    }

    #[test]
    fn inflates_messages_with_context_takeover() {
        let mut c = Compress::new(Compression::new(6), false);
        let mut inf = Inflater::new(false);
        let first = deflate(&mut c, &message(1));
        let second = deflate(&mut c, &message(1));
        // The second refers back into the first.
        assert!(
            second.len() < first.len() / 2,
            "{} {}",
            second.len(),
            first.len()
        );
        for data in [first, second.clone()] {
            let mut out = Vec::new();
            inf.inflate(&data, 1 << 20, &mut out).unwrap();
            assert_eq!(out, message(1));
        }
        // Without the first message's context, the second cannot inflate.
        let mut fresh = Inflater::new(true);
        let mut out = Vec::new();
        let lost = fresh.inflate(&second, 1 << 20, &mut out);
        assert!(lost.is_err() || out != message(1));
    }

    #[test]
    fn refuses_messages_over_the_bound() {
        let big = vec![b'a'; 100_000];
        let mut c = Compress::new(Compression::new(1), false);
        let data = deflate(&mut c, &big);
        assert!(data.len() < 1_000);
        let mut out = Vec::new();
        assert_eq!(
            Inflater::new(true).inflate(&data, 99_999, &mut out),
            Err(InflateError::TooLarge(99_999))
        );
        assert!(out.len() <= 100_000);
        let mut out = Vec::new();
        Inflater::new(true)
            .inflate(&data, 100_000, &mut out)
            .unwrap();
        assert_eq!(out.len(), 100_000);
    }

    #[test]
    fn refuses_corrupt_data() {
        let mut out = Vec::new();
        assert!(
            Inflater::new(true)
                .inflate(&[0xFF, 0xFF, 0xFF], 1000, &mut out)
                .is_err()
        );
    }
}

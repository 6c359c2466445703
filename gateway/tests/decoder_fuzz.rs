//! Randomized inputs for the three decoders that read what clients send:
//! Engine.IO (text packets, polling payloads, binary), Socket.IO packets
//! and WebSocket frames. Each gets `FUZZ_INPUTS` inputs (1,000,000 by
//! default) made from valid samples by mutation (flipped, inserted, deleted
//! and repeated bytes, truncation, splices) and from plain random bytes.
//! Seeded (`FUZZ_SEED`, printed) so a failure is reproduced by running again
//! with the same seed. The decoders must answer every input with a packet or
//! an error, never panic, and keep their bounds.

use bytes::{Bytes, BytesMut};
use gateway::protocol::socketio::DecodeLimits;
use gateway::protocol::websocket::{Decoder, Message};
use gateway::protocol::{engineio, socketio};

/// xorshift64*: small, fast, and the same sequence for the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        // Mostly bytes that mean something to the decoders.
        const SPECIAL: &[u8] = b"0123456789[]{}\",:/-\\\x1eb4-+ \x00\xff\x80\x7e\x7f";
        if self.below(3) == 0 {
            SPECIAL[self.below(SPECIAL.len())]
        } else {
            self.next() as u8
        }
    }
}

fn settings() -> (u64, usize) {
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_2026_1202);
    let inputs = std::env::var("FUZZ_INPUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    (seed.max(1), inputs)
}

/// A mutation of one of `samples` (or random bytes, one time in 16).
fn input(rng: &mut Rng, samples: &[Vec<u8>]) -> Vec<u8> {
    if rng.below(16) == 0 {
        let len = rng.below(64);
        return (0..len).map(|_| rng.byte()).collect();
    }
    let mut v = samples[rng.below(samples.len())].clone();
    for _ in 0..=rng.below(4) {
        match rng.below(7) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.byte();
            }
            1 => {
                let i = rng.below(v.len() + 1);
                v.insert(i, rng.byte());
            }
            2 if !v.is_empty() => {
                let i = rng.below(v.len());
                v.remove(i);
            }
            3 => {
                let keep = rng.below(v.len() + 1);
                v.truncate(keep);
            }
            4 if !v.is_empty() => {
                // Repeat a slice (lengths, nesting, separators).
                let a = rng.below(v.len());
                let b = (a + 1 + rng.below(8)).min(v.len());
                let piece = v[a..b].to_vec();
                let at = rng.below(v.len() + 1);
                v.splice(at..at, piece);
            }
            5 => {
                // Splice in the start of another sample.
                let other = &samples[rng.below(samples.len())];
                let n = rng.below(other.len() + 1);
                let at = rng.below(v.len() + 1);
                v.splice(at..at, other[..n].iter().copied());
            }
            _ => {
                if let Some(b) = v.last_mut() {
                    *b ^= 1 << rng.below(8);
                }
            }
        }
    }
    v
}

fn samples(list: &[&[u8]]) -> Vec<Vec<u8>> {
    list.iter().map(|s| s.to_vec()).collect()
}

#[test]
fn engineio_decoders_answer_every_input() {
    let (seed, inputs) = settings();
    eprintln!("engine.io: FUZZ_SEED={seed} FUZZ_INPUTS={inputs}");
    let corpus = samples(&[
        b"0{\"sid\":\"abc\",\"upgrades\":[],\"pingInterval\":25000}",
        b"1",
        b"2",
        b"3probe",
        b"4hello",
        b"42[\"ev\",{\"a\":1}]",
        b"5",
        b"6",
        b"bAQID",
        b"4a\x1e4b\x1ebAAEC\x1e2",
        b"451-[\"ev\",{\"_placeholder\":true,\"num\":0}]\x1ebAQID",
    ]);
    let mut rng = Rng(seed);
    let (mut ok, mut err) = (0u64, 0u64);
    for _ in 0..inputs {
        let bytes = input(&mut rng, &corpus);
        match engineio::decode_payload(&bytes) {
            Ok(packets) => {
                ok += 1;
                for p in packets {
                    let _ = p.encode_text();
                }
            }
            Err(_) => err += 1,
        }
        let text = String::from_utf8_lossy(&bytes);
        match engineio::decode_text(&text) {
            Ok(p) => {
                let _ = p.encode_text();
            }
            Err(_) => err += 1,
        }
        let _ = engineio::decode_binary(Bytes::from(bytes));
    }
    eprintln!("engine.io: {ok} payloads decoded, {err} errors");
    assert!(ok > 0 && err > 0, "the inputs reach both outcomes");
}

#[test]
fn socketio_decoder_answers_every_input() {
    let (seed, inputs) = settings();
    eprintln!("socket.io: FUZZ_SEED={seed} FUZZ_INPUTS={inputs}");
    let corpus = samples(&[
        b"0",
        b"0/admin,{\"token\":\"x\"}",
        b"1/admin,",
        b"2[\"ev\",1,\"two\",{\"3\":[4]}]",
        b"2/chat,12[\"ev\"]",
        b"312[{\"ok\":true}]",
        b"4{\"message\":\"nope\"}",
        b"51-[\"ev\",{\"_placeholder\":true,\"num\":0}]",
        b"62-/ns,7[{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]",
        b"2[\"$publish\",\"room\",\"ev\",\"\\u00e9\\ud83d\\ude00\"]",
    ]);
    let limits = DecodeLimits::default();
    let mut rng = Rng(seed ^ 0x51);
    let (mut ok, mut err) = (0u64, 0u64);
    for _ in 0..inputs {
        let bytes = input(&mut rng, &corpus);
        let text = String::from_utf8_lossy(&bytes);
        match socketio::decode(&text, &limits) {
            Ok(packet) => {
                ok += 1;
                assert!(packet.attachments <= limits.max_attachments);
                if let Some(data) = packet.data {
                    let _ = socketio::split_event(data);
                    let _ = socketio::check_placeholders(data, packet.attachments);
                }
                let _ = packet.encode();
            }
            Err(_) => err += 1,
        }
    }
    eprintln!("socket.io: {ok} packets decoded, {err} errors");
    assert!(ok > 0 && err > 0, "the inputs reach both outcomes");
}

/// A masked client frame.
fn frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![first];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

#[test]
fn websocket_decoder_answers_every_input() {
    const MAX: usize = 1024;
    let (seed, inputs) = settings();
    eprintln!("websocket: FUZZ_SEED={seed} FUZZ_INPUTS={inputs}");
    let m = [0x11, 0x22, 0x33, 0x44];
    let mut fragmented = frame(0x01, b"42[\"e", m);
    fragmented.extend(frame(0x89, b"ping", m));
    fragmented.extend(frame(0x80, b"v\",1]", m));
    let corpus = vec![
        frame(0x81, b"40", m),
        frame(0x82, &[1, 2, 3, 4, 5], m),
        frame(0x89, b"are you there", m),
        frame(0x8A, b"", m),
        frame(0x88, &1000u16.to_be_bytes(), m),
        frame(0x88, &[0x0F, 0xA0, b'b', b'y', b'e'], m),
        frame(0x81, &[b'x'; 300], m),
        frame(0x81, "\u{e9}\u{1F600}".as_bytes(), m),
        fragmented,
    ];
    let mut rng = Rng(seed ^ 0x77);
    let (mut messages, mut errors) = (0u64, 0u64);
    for _ in 0..inputs {
        let bytes = input(&mut rng, &corpus);
        let mut decoder = Decoder::new(MAX);
        let mut buf = BytesMut::new();
        // Fed in random pieces, as reads deliver them.
        let mut rest = &bytes[..];
        'feed: while !rest.is_empty() {
            let n = 1 + rng.below(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(msg)) => {
                        messages += 1;
                        match msg {
                            Message::Text(d) => {
                                assert!(d.len() <= MAX);
                                assert!(std::str::from_utf8(&d).is_ok());
                            }
                            Message::Binary(d) => assert!(d.len() <= MAX),
                            Message::Ping(d) => assert!(d.len() <= 125),
                            Message::Pong | Message::Close(_) => {}
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        errors += 1;
                        assert!([1002, 1007, 1009].contains(&e.close_code()));
                        break 'feed;
                    }
                }
            }
        }
    }
    eprintln!("websocket: {messages} messages decoded, {errors} errors");
    assert!(messages > 0 && errors > 0, "the inputs reach both outcomes");
}

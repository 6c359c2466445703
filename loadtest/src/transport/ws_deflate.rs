//! Engine.IO over WebSocket with permessage-deflate (`--ws-deflate`). A
//! small client of its own: tungstenite 0.28 cannot negotiate the
//! extension and fails any frame with RSV1 set, so this one does the
//! upgrade over the TCP stream itself, offers [`frame::OFFER`], reads
//! frames, and inflates the messages that arrive compressed (see
//! [`inflate`] for the inflater's memory). It sends its own messages
//! uncompressed, which RFC 7692 allows.
//!
//! One task owns the connection, as with [`super::ws`]. Per connection
//! it keeps a read buffer (`--ws-read-buffer`, grown to the largest frame),
//! the message being assembled, and the bytes not yet written.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow, bail};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::counted::{Counted, WireStats};
use super::frame::{self, Head, opcode};
use super::inflate::Inflater;
use super::{ConnectOpts, Node, Packet, tcp_connect};
use crate::protocol::{self, eio};
use crate::rng::SplitMix;

/// Bound on one message, compressed or inflated (as the plain client's).
const MAX_MESSAGE: usize = 16 << 20;

pub struct DeflateConn {
    stream: Counted<TcpStream>,
    reader: Reader,
    /// Frames to write, written from the front.
    outbuf: Vec<u8>,
    /// Draws the masks of the client's frames.
    masks: SplitMix,
}

/// What the server's frames amount to.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    /// A whole text message; `compressed`: it arrived compressed.
    Text {
        text: Utf8Bytes,
        compressed: bool,
    },
    /// A ping, with its payload for the pong.
    Ping(BytesMut),
    Closed,
}

/// The receiving half, without I/O: bytes read go into `inbuf`, whole
/// messages come out of [`Reader::next`].
struct Reader {
    /// Read and not yet parsed.
    inbuf: BytesMut,
    /// The payloads of the message being received, its fragments joined.
    message: Vec<u8>,
    /// The opcode of the message being received, and whether it is
    /// compressed; `None` between messages.
    receiving: Option<(u8, bool)>,
    /// `None` when the server did not agree to compress.
    inflater: Option<Inflater>,
    /// Bound on one message, compressed and inflated.
    max_message: usize,
}

impl Reader {
    fn new(inbuf: BytesMut, inflater: Option<Inflater>, max_message: usize) -> Self {
        Self {
            inbuf,
            message: Vec::new(),
            receiving: None,
            inflater,
            max_message,
        }
    }

    /// Takes the complete frames from `inbuf` until one ends a text
    /// message, is a ping or a close; `None`: more bytes are needed.
    /// Binary messages and pongs are skipped.
    fn next(&mut self) -> Result<Option<Got>> {
        loop {
            let rsv1_allowed = self.inflater.is_some();
            let Some(head) = Head::parse(&self.inbuf, rsv1_allowed, self.max_message)? else {
                return Ok(None);
            };
            let total = head.head_len + head.payload_len;
            if self.inbuf.len() < total {
                self.inbuf.reserve(total - self.inbuf.len());
                return Ok(None);
            }
            let mut frame = self.inbuf.split_to(total);
            frame.advance(head.head_len);
            match (head.opcode, self.receiving) {
                (opcode::PING, _) => return Ok(Some(Got::Ping(frame))),
                (opcode::PONG, _) => continue,
                (opcode::CLOSE, _) => return Ok(Some(Got::Closed)),
                (opcode::TEXT | opcode::BINARY, None) => {
                    self.receiving = Some((head.opcode, head.rsv1));
                }
                (opcode::CONTINUATION, Some(_)) if !head.rsv1 => {}
                _ => bail!("frame {:#x} out of sequence", head.opcode),
            }
            if self.message.len() + frame.len() > self.max_message {
                bail!("message over {} bytes", self.max_message);
            }
            self.message.extend_from_slice(&frame);
            if !head.fin {
                continue;
            }
            let Some((op, compressed)) = self.receiving.take() else {
                unreachable!("a data frame set what is being received");
            };
            let data = match &mut self.inflater {
                Some(inflater) if compressed => {
                    let mut out = Vec::with_capacity(self.message.len() * 4);
                    inflater.inflate(&self.message, self.max_message, &mut out)?;
                    self.message.clear();
                    out
                }
                _ => std::mem::take(&mut self.message),
            };
            if op == opcode::TEXT {
                let text = String::from_utf8(data).map_err(|_| anyhow!("text not UTF-8"))?;
                return Ok(Some(Got::Text {
                    text: Utf8Bytes::from(text),
                    compressed,
                }));
            }
        }
    }
}

impl DeflateConn {
    /// TCP connect, WebSocket upgrade offering permessage-deflate, and the
    /// Engine.IO OPEN packet.
    pub async fn open(
        node: &Node,
        opts: &ConnectOpts,
        source: Option<Ipv4Addr>,
        wire: &Arc<WireStats>,
    ) -> Result<Self> {
        let mut stream = tcp_connect(node.addr, source, wire).await?;
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(stream.get_ref().local_addr()?.port()) << 48;
        let mut masks = SplitMix::new(seed);
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&masks.next().to_le_bytes());
        key[8..].copy_from_slice(&masks.next().to_le_bytes());
        let key = frame::key_from(key);
        let request =
            frame::upgrade_request(&node.addr.to_string(), &opts.query("websocket", None), &key);
        stream.write_all(request.as_bytes()).await?;
        let mut inbuf = BytesMut::with_capacity(opts.ws_read_buffer);
        let (head_len, deflate) = loop {
            if let Some(answer) = frame::parse_upgrade_answer(&inbuf, &key)? {
                break answer;
            }
            if stream.read_buf(&mut inbuf).await? == 0 {
                bail!("closed during the WebSocket upgrade");
            }
        };
        inbuf.advance(head_len);
        let inflater = deflate.map(|d| Inflater::new(d.server_no_context_takeover));
        let mut conn = Self {
            stream,
            reader: Reader::new(inbuf, inflater, MAX_MESSAGE),
            outbuf: Vec::new(),
            masks,
        };
        match conn.next_text().await? {
            Some(t) if t.as_bytes().first() == Some(&eio::OPEN) => {
                protocol::parse_open(&t[1..])
                    .map_err(|e| anyhow!("bad Engine.IO OPEN packet {t}: {e}"))?;
            }
            Some(t) => bail!("expected the Engine.IO OPEN packet, got {t}"),
            None => bail!("closed before the Engine.IO OPEN packet"),
        }
        Ok(conn)
    }

    pub async fn send(&mut self, text: String) -> Result<()> {
        self.queue(opcode::TEXT, text.as_bytes());
        self.flush().await
    }

    /// The next Socket.IO packet; answers pings. Cancel-safe: what was
    /// read or is still to be written stays in the connection.
    pub async fn recv(&mut self) -> Result<Option<Packet>> {
        loop {
            let Some(text) = self.next_text().await? else {
                return Ok(None);
            };
            match text.as_bytes().first() {
                Some(&eio::MESSAGE) => return Ok(Packet::from_message(text)),
                // The pong echoes the ping's data; written by next_text.
                Some(&eio::PING) => self.queue(opcode::TEXT, format!("3{}", &text[1..]).as_bytes()),
                Some(&eio::CLOSE) => return Ok(None),
                _ => {}
            }
        }
    }

    pub async fn close(mut self, disconnect: String) {
        self.queue(opcode::TEXT, disconnect.as_bytes());
        // Status 1000, normal closure.
        self.queue(opcode::CLOSE, &1000u16.to_be_bytes());
        if self.flush().await.is_ok() {
            let _ = self.stream.shutdown().await;
        }
    }

    fn queue(&mut self, op: u8, payload: &[u8]) {
        let mask = (self.masks.next() as u32).to_le_bytes();
        frame::push_client_frame(&mut self.outbuf, op, payload, mask);
    }

    /// Writes what is queued. Cancel-safe: a write that did not complete
    /// wrote nothing.
    async fn flush(&mut self) -> Result<()> {
        while !self.outbuf.is_empty() {
            let n = self.stream.write(&self.outbuf).await?;
            if n == 0 {
                bail!("connection closed while writing");
            }
            self.outbuf.drain(..n);
        }
        Ok(())
    }

    /// The next text message, `None` once closed; answers WebSocket
    /// pings.
    async fn next_text(&mut self) -> Result<Option<Utf8Bytes>> {
        loop {
            self.flush().await?;
            match self.reader.next()? {
                Some(Got::Text { text, compressed }) => {
                    if compressed {
                        self.stream.stats().add_compressed();
                    }
                    return Ok(Some(text));
                }
                Some(Got::Ping(payload)) => self.queue(opcode::PONG, &payload),
                Some(Got::Closed) => return Ok(None),
                None => {
                    if self.stream.read_buf(&mut self.reader.inbuf).await? == 0 {
                        return Ok(None);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use flate2::{Compress, Compression, FlushCompress};
    use tokio::net::TcpListener;

    use super::*;

    /// A server frame (unmasked) with a length of 7 bits.
    fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() < 126);
        let mut f = vec![b0, payload.len() as u8];
        f.extend_from_slice(payload);
        f
    }

    fn text(s: &str) -> Got {
        Got::Text {
            text: Utf8Bytes::from(s.to_string()),
            compressed: false,
        }
    }

    #[test]
    fn joins_fragments_and_answers_pings_between_them() {
        let mut r = Reader::new(BytesMut::new(), None, 1 << 20);
        let mut bytes = frame(opcode::TEXT, b"42[\"m\",");
        bytes.extend(frame(0x80 | opcode::PING, b"p"));
        bytes.extend(frame(opcode::CONTINUATION, b"\"a"));
        bytes.extend(frame(0x80 | opcode::CONTINUATION, b"b\"]"));
        bytes.extend(frame(0x80 | opcode::BINARY, b"skipped"));
        bytes.extend(frame(0x80 | opcode::TEXT, b"2"));
        // Byte by byte: a frame is only taken once complete.
        let mut got = Vec::new();
        for b in bytes {
            r.inbuf.extend_from_slice(&[b]);
            while let Some(g) = r.next().unwrap() {
                got.push(g);
            }
        }
        assert_eq!(
            got,
            [
                Got::Ping(BytesMut::from(&b"p"[..])),
                text("42[\"m\",\"ab\"]"),
                text("2")
            ]
        );
        r.inbuf
            .extend_from_slice(&frame(0x80 | opcode::CLOSE, &[0x03, 0xe8]));
        assert_eq!(r.next().unwrap(), Some(Got::Closed));
    }

    #[test]
    fn refuses_frames_out_of_sequence_and_over_the_bound() {
        let mut r = Reader::new(BytesMut::new(), None, 8);
        r.inbuf
            .extend_from_slice(&frame(0x80 | opcode::CONTINUATION, b"x"));
        assert!(r.next().is_err());
        let mut r = Reader::new(BytesMut::new(), None, 8);
        r.inbuf.extend_from_slice(&frame(opcode::TEXT, b"12345"));
        r.inbuf
            .extend_from_slice(&frame(0x80 | opcode::CONTINUATION, b"6789"));
        assert!(r.next().is_err());
        // RSV1 without compression agreed.
        let mut r = Reader::new(BytesMut::new(), None, 100);
        r.inbuf.extend_from_slice(&frame(0xC0 | opcode::TEXT, b"x"));
        assert!(r.next().is_err());
    }

    #[test]
    fn inflates_a_compressed_message_sent_in_fragments() {
        let msg = "42[\"msg\",\"hello hello hello hello hello\"]";
        let mut c = Compress::new(Compression::new(6), false);
        let mut data = Vec::with_capacity(256);
        c.compress_vec(msg.as_bytes(), &mut data, FlushCompress::Sync)
            .unwrap();
        data.truncate(data.len() - 4);
        let (a, b) = data.split_at(data.len() / 2);
        let mut r = Reader::new(BytesMut::new(), Some(Inflater::new(true)), 1 << 20);
        // RSV1 on the first frame only.
        r.inbuf.extend_from_slice(&frame(0x40 | opcode::TEXT, a));
        r.inbuf
            .extend_from_slice(&frame(0x80 | opcode::CONTINUATION, b));
        assert_eq!(
            r.next().unwrap(),
            Some(Got::Text {
                text: Utf8Bytes::from(msg.to_string()),
                compressed: true
            })
        );
        // A continuation with RSV1 is refused.
        r.inbuf.extend_from_slice(&frame(0x40 | opcode::TEXT, a));
        r.inbuf
            .extend_from_slice(&frame(0xC0 | opcode::CONTINUATION, b));
        assert!(r.next().is_err());
    }

    #[test]
    fn inflated_messages_are_bounded() {
        let big = "a".repeat(10_000);
        let mut c = Compress::new(Compression::new(1), false);
        let mut data = Vec::with_capacity(1024);
        c.compress_vec(big.as_bytes(), &mut data, FlushCompress::Sync)
            .unwrap();
        data.truncate(data.len() - 4);
        assert!(data.len() < 126);
        let mut r = Reader::new(BytesMut::new(), Some(Inflater::new(true)), 9_999);
        r.inbuf
            .extend_from_slice(&frame(0xC0 | opcode::TEXT, &data));
        assert!(r.next().is_err());
    }

    /// Compresses `msg` with `c` as a permessage-deflate sender does.
    fn deflate(c: &mut Compress, msg: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(msg.len() + 64);
        c.compress_vec(msg.as_bytes(), &mut out, FlushCompress::Sync)
            .unwrap();
        out.truncate(out.len() - 4);
        out
    }

    /// Reads one masked client frame: (opcode, unmasked payload).
    async fn read_client_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
        let mut head = [0u8; 6];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(head[1] & 0x80, 0x80, "client frames are masked");
        let len = usize::from(head[1] & 0x7F);
        assert!(len < 126);
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.unwrap();
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= head[2 + i % 4];
        }
        (head[0] & 0x0F, payload)
    }

    /// A server that keeps its compression context (as Node's `ws`): the
    /// upgrade, the OPEN packet, two compressed messages (the second
    /// refers back into the first), a WebSocket ping and an Engine.IO ping
    /// between them; the client's answers are read back.
    #[tokio::test]
    async fn talks_to_a_server_that_keeps_its_context() {
        let msg = "42[\"msg\",\"the same words, the same words, the same words\"]";
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            while !req.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                s.read_exact(&mut b).await.unwrap();
                req.push(b[0]);
            }
            let req = String::from_utf8(req).unwrap();
            assert!(req.contains(
                "\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
            ));
            let key = req
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap();
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
                frame::accept_for(key)
            );
            let open = r#"0{"sid":"s","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
            let mut out = answer.into_bytes();
            out.extend([0x81, open.len() as u8]);
            out.extend(open.as_bytes());
            let mut c = Compress::new(Compression::new(6), false);
            let first = deflate(&mut c, msg);
            let second = deflate(&mut c, msg);
            assert!(second.len() < first.len() / 2);
            out.extend([0xC1, first.len() as u8]);
            out.extend(&first);
            out.extend([0x89, 1, b'p', 0x81, 1, b'2']);
            out.extend([0xC1, second.len() as u8]);
            out.extend(&second);
            s.write_all(&out).await.unwrap();
            let pong = read_client_frame(&mut s).await;
            let eio_pong = read_client_frame(&mut s).await;
            (pong, eio_pong)
        });

        let node = Node::parse(&format!("http://{addr}")).unwrap();
        let opts = ConnectOpts {
            path: "/socket.io/".into(),
            namespace: "/".into(),
            ws_read_buffer: 4096,
            timeout: Duration::from_secs(5),
            source_ips: 0,
            ws_deflate: true,
        };
        let wire = Arc::new(WireStats::default());
        let mut conn = DeflateConn::open(&node, &opts, None, &wire).await.unwrap();
        for _ in 0..2 {
            let packet = conn.recv().await.unwrap().unwrap();
            assert_eq!(&*packet, &msg[1..]);
        }
        let (pong, eio_pong) = server.await.unwrap();
        assert_eq!(pong, (opcode::PONG, b"p".to_vec()));
        assert_eq!(eio_pong, (opcode::TEXT, b"3".to_vec()));
        let stats = conn.stream.stats();
        assert_eq!(stats.compressed_messages.load(Ordering::Relaxed), 2);
        assert!(stats.bytes_read.load(Ordering::Relaxed) > 150);
    }
}

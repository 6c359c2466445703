//! A client on a bare TCP stream, for what the usual client libraries refuse
//! to do: a WebSocket written against RFC 6455 directly ([`RawWs`]: any
//! frame, masked or not, whether or not it reads what comes back), and
//! reading a connection until the node closes it ([`until_closed`]).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::eio::parse_open;
use super::node::TestNode;
use super::wait::{DEADLINE, within};

/// Reads `stream` until the node closes it (EOF or reset); returns what
/// arrived and when the close came. Fails after `limit`.
pub async fn until_closed(
    stream: &mut (impl AsyncRead + Unpin),
    limit: Duration,
) -> (Vec<u8>, Instant) {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let closed = read.unwrap_or_else(|_| {
        panic!(
            "the node did not close the connection within {limit:?}; got {:?}",
            String::from_utf8_lossy(&got)
        )
    });
    (got, closed)
}

/// A masked client frame with `first` as its first byte (FIN, RSV and
/// opcode), of any length.
pub fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// A WebSocket client on a bare TCP stream.
pub struct RawWs {
    stream: TcpStream,
    /// The Engine.IO session id of the open packet.
    pub sid: String,
}

impl RawWs {
    /// Opens an Engine.IO session over WebSocket: checks the `101` answer
    /// (with the RFC's accept key for its sample key) and reads the open
    /// packet, returned as text.
    pub async fn open(node: &TestNode) -> (Self, String) {
        let (ws, _, open) = Self::open_offering(node, None).await;
        (ws, open)
    }

    /// [`RawWs::open`] sending `Sec-WebSocket-Extensions: <extensions>`
    /// when given; also returns the answer's head (lower case).
    pub async fn open_offering(
        node: &TestNode,
        extensions: Option<&str>,
    ) -> (Self, String, String) {
        let mut stream = TcpStream::connect(node.addr).await.expect("connect");
        let offer = extensions.map_or(String::new(), |e| {
            format!("Sec-WebSocket-Extensions: {e}\r\n")
        });
        let request = format!(
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {}\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\n{offer}\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            node.addr
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write the upgrade request");
        let head = within("the upgrade answer", async {
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                head.push(stream.read_u8().await.expect("the upgrade answer"));
            }
            head
        })
        .await;
        let head = String::from_utf8(head)
            .expect("an HTTP head")
            .to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(
            head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "the RFC's accept key: {head}"
        );
        let mut ws = Self {
            stream,
            sid: String::new(),
        };
        let (op, open) = ws.read_frame().await.expect("open packet");
        assert_eq!(op, 0x1);
        let open = String::from_utf8(open).expect("a text open packet");
        ws.sid = parse_open(&open)["sid"].as_str().expect("sid").to_owned();
        (ws, head, open)
    }

    /// Writes `bytes` as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Writes a [`masked`] frame.
    pub async fn send(&mut self, first: u8, payload: &[u8]) {
        self.send_raw(&masked(first, payload)).await;
    }

    /// Writes `bytes`; false once the node stops taking them (it closed the
    /// connection, or took nothing for a second).
    pub async fn write(&mut self, bytes: &[u8]) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(1), self.stream.write_all(bytes)).await,
            Ok(Ok(()))
        )
    }

    /// The next frame: (opcode, payload), or None at end of stream; checks
    /// that server frames are final and not masked.
    pub async fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let (first, body) = self.read_frame_whole().await?;
        Some((first & 0x0F, body))
    }

    /// [`RawWs::read_frame`] with the frame's whole first byte (FIN, RSV
    /// bits, opcode).
    pub async fn read_frame_whole(&mut self) -> Option<(u8, Vec<u8>)> {
        let read = async {
            let b0 = self.stream.read_u8().await.ok()?;
            let b1 = self.stream.read_u8().await.ok()?;
            assert_eq!(b0 & 0x80, 0x80, "server frames are final");
            assert_eq!(b1 & 0x80, 0, "server frames are not masked");
            let len = match b1 & 0x7F {
                126 => usize::from(self.stream.read_u16().await.ok()?),
                127 => self.stream.read_u64().await.ok()? as usize,
                n => usize::from(n),
            };
            let mut body = vec![0; len];
            self.stream.read_exact(&mut body).await.ok()?;
            Some((b0, body))
        };
        tokio::time::timeout(DEADLINE, read)
            .await
            .expect("a frame or the end of the stream in time")
    }

    /// Reads until the close frame; returns its status code, then expects
    /// the end of the stream.
    pub async fn expect_close(&mut self) -> u16 {
        loop {
            let (op, body) = self.read_frame().await.expect("a close frame");
            if op == 0x8 {
                assert!(self.read_frame().await.is_none(), "closed after");
                return u16::from_be_bytes([body[0], body[1]]);
            }
        }
    }
}

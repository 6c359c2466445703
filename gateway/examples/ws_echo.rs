//! A WebSocket echo server on the gateway's own WebSocket code (the opening
//! handshake's accept key, the frame decoder and encoder of
//! `gateway::protocol::websocket`), for Autobahn|Testsuite's fuzzing client
//! (`.ci/autobahn.sh`): every text or binary message comes back as it
//! came, pings are answered with pongs, closes are answered as the gateway
//! answers them.
//!
//! ```sh
//! cargo run --release -p gateway --example ws_echo -- 127.0.0.1:9001
//! ```

use std::net::SocketAddr;

use bytes::BytesMut;
use gateway::protocol::websocket::{self as ws, Message, opcode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Autobahn sends messages up to 16 MiB (case 9).
const MAX_MESSAGE: usize = 16 * 1024 * 1024 + 1024;
/// Bound on the opening handshake's request head.
const MAX_HEAD: usize = 16 * 1024;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned())
        .parse()
        .expect("an address such as 127.0.0.1:9001");
    let listener = TcpListener::bind(addr).await?;
    println!("ws_echo listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = serve(stream).await;
        });
    }
}

async fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = BytesMut::with_capacity(4096);
    let Some(key) = handshake(&mut stream, &mut buf).await? else {
        stream
            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await?;
        return Ok(());
    };
    let reply = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-accept: {}\r\n\r\n",
        ws::accept_key(key.as_bytes())
    );
    stream.write_all(reply.as_bytes()).await?;
    let mut decoder = ws::Decoder::new(MAX_MESSAGE);
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Message::Text(data))) => {
                    stream
                        .write_all(&ws::encode_frame(opcode::TEXT, &data))
                        .await?
                }
                Ok(Some(Message::Binary(data))) => {
                    stream
                        .write_all(&ws::encode_frame(opcode::BINARY, &data))
                        .await?
                }
                Ok(Some(Message::Ping(data))) => {
                    stream
                        .write_all(&ws::encode_frame(opcode::PONG, &data))
                        .await?
                }
                Ok(Some(Message::Pong)) => {}
                Ok(Some(Message::Close(code))) => {
                    let answer = ws::close_reply(code);
                    stream.write_all(&ws::close_frame(answer)).await?;
                    return stream.shutdown().await;
                }
                Ok(None) => break,
                Err(e) => {
                    stream.write_all(&ws::close_frame(e.close_code())).await?;
                    return stream.shutdown().await;
                }
            }
        }
        buf.reserve(64 * 1024);
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// Reads the opening handshake's request head; the client's
/// `Sec-WebSocket-Key` when it is a valid upgrade request. Bytes after the
/// head stay in `buf`.
async fn handshake(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<Option<String>> {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD || stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    };
    let head = buf.split_to(end);
    let text = String::from_utf8_lossy(&head);
    let mut upgrade = false;
    let mut key = None;
    for line in text.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "upgrade" => upgrade = value.eq_ignore_ascii_case("websocket"),
            "sec-websocket-key" if ws::valid_key(value.as_bytes()) => key = Some(value.to_owned()),
            _ => {}
        }
    }
    Ok(key.filter(|_| upgrade))
}

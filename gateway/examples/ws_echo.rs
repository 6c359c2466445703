//! A WebSocket echo server on the gateway's own WebSocket code (the opening
//! handshake's accept key, the frame decoder and encoder of
//! `gateway::protocol::websocket`), for Autobahn|Testsuite's fuzzing client
//! (`.ci/autobahn.sh`): every text or binary message comes back as it
//! came, pings are answered with pongs, closes are answered as the gateway
//! answers them.
//!
//! With `--deflate`, permessage-deflate is negotiated as the gateway
//! negotiates it (`gateway::protocol::deflate`) and every echoed message the
//! client's window allows is compressed (threshold 0), for Autobahn's cases
//! 12 and 13.
//!
//! ```sh
//! cargo run --release -p gateway --example ws_echo -- 127.0.0.1:9001 [--deflate]
//! ```

use std::net::SocketAddr;

use bytes::BytesMut;
use gateway::protocol::deflate::{self, Agreed};
use gateway::protocol::websocket::{self as ws, Message, opcode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Autobahn sends messages up to 16 MiB (case 9).
const MAX_MESSAGE: usize = 16 * 1024 * 1024 + 1024;
/// Bound on the opening handshake's request head.
const MAX_HEAD: usize = 16 * 1024;
/// Deflate level of the echoed messages.
const LEVEL: u32 = 6;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned())
        .parse()
        .expect("an address such as 127.0.0.1:9001");
    let compression = std::env::args().any(|a| a == "--deflate");
    let listener = TcpListener::bind(addr).await?;
    println!("ws_echo listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = serve(stream, compression).await;
        });
    }
}

/// A data message as the echo sends it: compressed when the client takes
/// it so.
fn data_frame(op: u8, data: &[u8], deflate: Option<Agreed>) -> Vec<u8> {
    if !deflate.is_some_and(|a| a.takes(data.len())) {
        return ws::encode_frame(op, data).to_vec();
    }
    let packed = deflate::compress(data, LEVEL);
    let mut header = [0u8; ws::MAX_HEADER];
    let n = ws::encode_deflated_header(op, packed.len(), &mut header);
    let mut out = Vec::with_capacity(n + packed.len());
    out.extend_from_slice(&header[..n]);
    out.extend_from_slice(&packed);
    out
}

async fn serve(mut stream: TcpStream, compression: bool) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = BytesMut::with_capacity(4096);
    let Some((key, offers)) = handshake(&mut stream, &mut buf).await? else {
        stream
            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await?;
        return Ok(());
    };
    let deflate = if compression {
        deflate::negotiate(offers.iter().map(String::as_str))
    } else {
        None
    };
    let extension = deflate.map_or(String::new(), |a| {
        format!("sec-websocket-extensions: {}\r\n", a.response())
    });
    let reply = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-accept: {}\r\n{extension}\r\n",
        ws::accept_key(key.as_bytes())
    );
    stream.write_all(reply.as_bytes()).await?;
    let mut decoder = ws::Decoder::new(MAX_MESSAGE).with_deflate(deflate.is_some());
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Message::Text(data))) => {
                    stream
                        .write_all(&data_frame(opcode::TEXT, &data, deflate))
                        .await?
                }
                Ok(Some(Message::Binary(data))) => {
                    stream
                        .write_all(&data_frame(opcode::BINARY, &data, deflate))
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
/// `Sec-WebSocket-Key` and `Sec-WebSocket-Extensions` values when it is a
/// valid upgrade request. Bytes after the head stay in `buf`.
async fn handshake(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
) -> std::io::Result<Option<(String, Vec<String>)>> {
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
    let mut offers = Vec::new();
    for line in text.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "upgrade" => upgrade = value.eq_ignore_ascii_case("websocket"),
            "sec-websocket-key" if ws::valid_key(value.as_bytes()) => key = Some(value.to_owned()),
            "sec-websocket-extensions" => offers.push(value.to_owned()),
            _ => {}
        }
    }
    Ok(key.filter(|_| upgrade).map(|k| (k, offers)))
}

//! Engine.IO over HTTP long-polling, with hyper's HTTP/1.1 client on two
//! keep-alive connections: one for the pending GET, one for POSTs. A GET
//! task forwards Socket.IO packets to the owner and answers pings; a POST
//! task sends what is queued, several packets per request, never two
//! requests at once (the protocol allows one GET and one POST at a time).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::counted::WireStats;
use super::{ConnectOpts, Node, Packet, tcp_connect};
use crate::protocol::{self, RECORD_SEPARATOR, eio};

/// Packets buffered towards the owner before the GET loop waits.
const INBOX: usize = 1024;
/// Packets queued for POSTing before `send` waits.
const OUTBOX: usize = 256;

/// One HTTP/1.1 connection to the node.
struct Http {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    driver: JoinHandle<()>,
}

impl Http {
    async fn open(node: &Node, source: Option<Ipv4Addr>, wire: &Arc<WireStats>) -> Result<Self> {
        let stream = tcp_connect(node.addr, source, wire).await?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            sender,
            host: node.addr.to_string(),
            driver,
        })
    }

    async fn request(&mut self, method: Method, uri: &str, body: Bytes) -> Result<Bytes> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(header::HOST, &self.host);
        if method == Method::POST {
            req = req.header(header::CONTENT_TYPE, "text/plain;charset=UTF-8");
        }
        let req = req.body(Full::new(body))?;
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if status != StatusCode::OK {
            bail!(
                "{method} {uri}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(body)
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

pub struct PollingConn {
    inbox: mpsc::Receiver<Packet>,
    outbox: mpsc::Sender<String>,
    get_task: AbortOnDrop,
    post_task: JoinHandle<()>,
}

impl PollingConn {
    /// The Engine.IO handshake (a GET without sid), then the two loops.
    pub async fn open(
        node: &Node,
        opts: &ConnectOpts,
        source: Option<Ipv4Addr>,
        wire: &Arc<WireStats>,
    ) -> Result<Self> {
        let mut get = Http::open(node, source, wire).await?;
        let body = get
            .request(Method::GET, &opts.query("polling", None), Bytes::new())
            .await
            .context("Engine.IO handshake")?;
        let body = std::str::from_utf8(&body).context("handshake body is not UTF-8")?;
        let mut packets = protocol::split_payload(body);
        let open = packets
            .next()
            .and_then(|p| p.strip_prefix('0'))
            .ok_or_else(|| anyhow!("expected the Engine.IO OPEN packet, got {body:?}"))?;
        let info =
            protocol::parse_open(open).map_err(|e| anyhow!("bad OPEN packet {open}: {e}"))?;
        let uri = opts.query("polling", Some(&info.sid));

        let (in_tx, inbox) = mpsc::channel(INBOX);
        let (outbox, out_rx) = mpsc::channel(OUTBOX);
        // Packets that came with the OPEN packet (rare) go first.
        for p in packets {
            if let Some(pkt) = Packet::from_message(Utf8Bytes::from(p.to_string())) {
                let _ = in_tx.try_send(pkt);
            }
        }
        let post = Http::open(node, source, wire).await?;
        let post_task = tokio::spawn(post_loop(post, uri.clone(), out_rx));
        let get_task = AbortOnDrop(tokio::spawn(get_loop(get, uri, in_tx, outbox.clone())));
        Ok(Self {
            inbox,
            outbox,
            get_task,
            post_task,
        })
    }

    pub async fn send(&mut self, text: String) -> Result<()> {
        self.outbox
            .send(text)
            .await
            .map_err(|_| anyhow!("polling session closed"))
    }

    pub async fn recv(&mut self) -> Option<Packet> {
        self.inbox.recv().await
    }

    /// Sends the Socket.IO DISCONNECT and the Engine.IO CLOSE, waits (a
    /// bounded time) for them to be posted, and stops both loops.
    pub async fn close(self, disconnect: String) {
        let Self {
            inbox,
            outbox,
            get_task,
            post_task,
        } = self;
        drop(get_task);
        drop(inbox);
        let _ = outbox.send(disconnect).await;
        let _ = outbox.send(char::from(eio::CLOSE).to_string()).await;
        drop(outbox);
        let abort = post_task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), post_task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

/// Aborts the task when dropped, so a dropped connection stops polling.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Long-polls until the session ends, forwarding Socket.IO packets and
/// answering pings through the POST loop.
async fn get_loop(
    mut http: Http,
    uri: String,
    inbox: mpsc::Sender<Packet>,
    outbox: mpsc::Sender<String>,
) {
    loop {
        let Ok(body) = http.request(Method::GET, &uri, Bytes::new()).await else {
            return;
        };
        let Ok(body) = std::str::from_utf8(&body) else {
            return;
        };
        for p in protocol::split_payload(body) {
            let open = match p.as_bytes()[0] {
                eio::MESSAGE => match Packet::from_message(Utf8Bytes::from(p.to_string())) {
                    Some(pkt) => inbox.send(pkt).await.is_ok(),
                    None => true,
                },
                eio::PING => outbox.send(format!("3{}", &p[1..])).await.is_ok(),
                eio::CLOSE => false,
                _ => true,
            };
            if !open {
                return;
            }
        }
    }
}

/// POSTs queued packets, batching whatever is queued into one request.
async fn post_loop(mut http: Http, uri: String, mut outbox: mpsc::Receiver<String>) {
    while let Some(first) = outbox.recv().await {
        let mut body = first;
        while let Ok(more) = outbox.try_recv() {
            body.push(RECORD_SEPARATOR);
            body.push_str(&more);
        }
        if http
            .request(Method::POST, &uri, Bytes::from(body))
            .await
            .is_err()
        {
            return;
        }
    }
}

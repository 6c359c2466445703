//! Raw Engine.IO clients that exchange packet strings with a node: one over
//! WebSocket ([`WsClient`]) and one over HTTP long-polling
//! ([`PollClient`]), with the Socket.IO packets tests write by hand
//! (CONNECT, EVENT with an ack id, ACK) and the checks of what comes back.
//! Every receive is bounded by [`DEADLINE`].

use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderName;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite};

use super::node::TestNode;
use super::wait::{DEADLINE, within};

// ---------------------------------------------------------------------------
// Packets

/// The open packet's JSON, checked to be an open packet (`0{...}`).
pub fn parse_open(packet: &str) -> Map<String, Value> {
    let json = packet
        .strip_prefix('0')
        .unwrap_or_else(|| panic!("not an open packet: {packet:?}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("open packet JSON {json:?}: {e}"))
}

/// The packets of a polling payload (`\x1e`-separated).
pub fn packets(payload: &str) -> Vec<String> {
    payload.split('\u{1e}').map(str::to_owned).collect()
}

/// Checks an Engine.IO error answer: HTTP `status` and the JSON body
/// `{"code":code,"message":<string>}`.
pub fn assert_engine_error(status: u16, body: &str, expected_status: u16, code: u64) {
    assert_eq!(status, expected_status, "status of {body:?}");
    let value: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("error body {body:?}: {e}"));
    assert_eq!(value["code"], code, "error code in {body}");
    assert!(value["message"].is_string(), "error message in {body}");
}

/// What follows the packet type for namespace `nsp`: nothing for `/`,
/// `/nsp,` otherwise.
pub fn nsp_prefix(nsp: &str) -> String {
    if nsp == "/" {
        String::new()
    } else {
        format!("{nsp},")
    }
}

/// The `sid` of a Socket.IO CONNECT reply (`40{"sid":..}` or
/// `40/nsp,{"sid":..}`) for namespace `nsp`; fails on anything else.
pub fn connect_reply_sid(packet: &str, nsp: &str) -> String {
    let prefix = format!("40{}", nsp_prefix(nsp));
    let json = packet
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("expected a CONNECT reply for {nsp}, got {packet:?}"));
    let value: Map<String, Value> =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("CONNECT reply JSON {json:?}: {e}"));
    assert_eq!(
        value.keys().collect::<Vec<_>>(),
        ["sid"],
        "CONNECT reply keys"
    );
    value["sid"]
        .as_str()
        .expect("the socket id is a string")
        .to_owned()
}

// ---------------------------------------------------------------------------
// WebSocket client

/// One message received over WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Text(String),
    Binary(Vec<u8>),
    /// The server closed the connection (close frame, EOF or reset).
    Closed,
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A raw Engine.IO client over WebSocket: sends and receives packet strings.
pub struct WsClient {
    ws: Ws,
    /// The Engine.IO session id (empty until known).
    pub sid: String,
}

/// Opens a WebSocket (`request`: a URL, or a request with headers); the
/// HTTP status of a refused handshake is in the error.
pub async fn ws_connect(
    request: impl IntoClientRequest + Unpin,
) -> Result<WsClient, tungstenite::Error> {
    let (ws, _) = within(
        "websocket connect",
        tokio_tungstenite::connect_async(request),
    )
    .await?;
    Ok(WsClient {
        ws,
        sid: String::new(),
    })
}

/// The HTTP status and body of a refused WebSocket handshake to `url`.
pub async fn ws_refused(url: &str) -> (u16, String) {
    match ws_connect(url).await {
        Ok(_) => panic!("websocket handshake to {url} was accepted"),
        Err(tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (response.status().as_u16(), body)
        }
        Err(e) => panic!("websocket handshake to {url} failed without an HTTP answer: {e}"),
    }
}

impl WsClient {
    /// Opens an Engine.IO session over WebSocket and reads its open packet.
    pub async fn open(node: &TestNode) -> (Self, Map<String, Value>) {
        Self::open_with(node, "", &[]).await
    }

    /// [`WsClient::open`] with `query` appended to the handshake's query
    /// and `headers` added to its request.
    pub async fn open_with(
        node: &TestNode,
        query: &str,
        headers: &[(&str, &str)],
    ) -> (Self, Map<String, Value>) {
        let url = node.ws_url(&format!("EIO=4&transport=websocket{query}"));
        let mut request = url.into_client_request().expect("a websocket URL");
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("a header name");
            let value = value.parse().expect("a header value");
            request.headers_mut().insert(name, value);
        }
        let mut client = ws_connect(request).await.expect("websocket handshake");
        let open = parse_open(&client.next_text().await);
        client.sid = open["sid"].as_str().expect("sid").to_owned();
        (client, open)
    }

    /// Opens a session and connects namespace `/` (consuming the conformance
    /// `auth` event when `auth_event`); returns the client and its socket id.
    pub async fn socket(node: &TestNode, auth_event: bool) -> (Self, String) {
        let (mut client, _) = Self::open(node).await;
        let id = client.connect_ns("/", None).await;
        if auth_event {
            client.expect(r#"42["auth",{}]"#).await;
        }
        (client, id)
    }

    /// Sends CONNECT for `nsp` with optional auth JSON and returns the socket
    /// id of the reply; fails on a CONNECT_ERROR.
    pub async fn connect_ns(&mut self, nsp: &str, auth: Option<&str>) -> String {
        self.try_connect_ns(nsp, auth)
            .await
            .unwrap_or_else(|e| panic!("CONNECT_ERROR for {nsp}: {e}"))
    }

    /// Sends CONNECT for `nsp` with optional auth JSON: the socket id of the
    /// reply, or the body of the CONNECT_ERROR.
    pub async fn try_connect_ns(
        &mut self,
        nsp: &str,
        auth: Option<&str>,
    ) -> Result<String, String> {
        let prefix = nsp_prefix(nsp);
        self.send(&format!("40{prefix}{}", auth.unwrap_or("")))
            .await;
        let reply = self.recv_text().await;
        match reply.strip_prefix(&format!("44{prefix}")) {
            Some(error) => Err(error.to_owned()),
            None => Ok(connect_reply_sid(&reply, nsp)),
        }
    }

    /// Emits `event(...args)` on `nsp` (`args`: the JSON array text of the
    /// arguments), asking for ack `ack` if given.
    pub async fn emit(&mut self, nsp: &str, event: &str, args: &str, ack: Option<u64>) {
        let id = ack.map(|a| a.to_string()).unwrap_or_default();
        let inner = args
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .expect("args is a JSON array");
        let sep = if inner.is_empty() { "" } else { "," };
        self.send(&format!(
            "42{}{id}[\"{event}\"{sep}{inner}]",
            nsp_prefix(nsp)
        ))
        .await;
    }

    /// The next packet, which must be ack `id` of namespace `nsp`: its
    /// arguments' JSON text.
    pub async fn expect_ack(&mut self, nsp: &str, id: u64) -> String {
        let head = format!("43{}{id}", nsp_prefix(nsp));
        let reply = self.recv_text().await;
        match reply.strip_prefix(&head) {
            Some(args) => args.to_owned(),
            None => panic!("expected the ack {head}, got {reply:?}"),
        }
    }

    /// Leaves namespace `nsp` (`41`).
    pub async fn leave(&mut self, nsp: &str) {
        self.send(&format!("41{}", nsp_prefix(nsp))).await;
    }

    pub async fn send(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .await
            .unwrap_or_else(|e| panic!("send {text:?}: {e}"));
    }

    pub async fn send_binary(&mut self, data: &[u8]) {
        self.ws
            .send(Message::binary(data.to_vec()))
            .await
            .unwrap_or_else(|e| panic!("send binary: {e}"));
    }

    /// Sends without caring whether the server already closed.
    pub async fn send_lossy(&mut self, msg: Msg) {
        let msg = match msg {
            Msg::Text(t) => Message::text(t),
            Msg::Binary(b) => Message::binary(b),
            Msg::Closed => return,
        };
        let _ = self.ws.send(msg).await;
    }

    /// The next message as it arrives (pings included), within [`DEADLINE`].
    pub async fn next_raw(&mut self) -> Msg {
        self.next_raw_within(DEADLINE)
            .await
            .expect("a message within the deadline")
    }

    /// The next message within `limit`, or `None` when nothing came.
    pub async fn next_raw_within(&mut self, limit: std::time::Duration) -> Option<Msg> {
        let deadline = Instant::now() + limit;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            return Some(match next {
                None | Some(Ok(Message::Close(_))) | Some(Err(_)) => Msg::Closed,
                Some(Ok(Message::Text(t))) => Msg::Text(t.as_str().to_owned()),
                Some(Ok(Message::Binary(b))) => Msg::Binary(b.to_vec()),
                Some(Ok(_)) => continue,
            });
        }
    }

    /// The next text message as it arrives (pings included).
    pub async fn next_text(&mut self) -> String {
        match self.next_raw().await {
            Msg::Text(t) => t,
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// The next message that is not an Engine.IO ping or noop; pings are
    /// answered.
    pub async fn recv(&mut self) -> Msg {
        loop {
            match self.next_raw().await {
                Msg::Text(t) if t == "2" => self.send_lossy(Msg::Text("3".into())).await,
                Msg::Text(t) if t == "6" => {}
                other => return other,
            }
        }
    }

    pub async fn recv_text(&mut self) -> String {
        match self.recv().await {
            Msg::Text(t) => t,
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    pub async fn expect(&mut self, text: &str) {
        assert_eq!(self.recv().await, Msg::Text(text.to_owned()));
    }

    pub async fn expect_binary(&mut self, data: &[u8]) {
        assert_eq!(self.recv().await, Msg::Binary(data.to_vec()));
    }

    /// Waits until the server closes the connection, answering pings;
    /// returns the other text messages it sent first.
    pub async fn expect_closed(&mut self) -> Vec<String> {
        let mut before = Vec::new();
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_raw_within(left).await {
                None => panic!("the server did not close the connection; got {before:?}"),
                Some(Msg::Closed) => return before,
                Some(Msg::Text(t)) if t == "2" => {
                    self.send_lossy(Msg::Text("3".into())).await;
                }
                Some(Msg::Text(t)) => before.push(t),
                Some(Msg::Binary(_)) => {}
            }
        }
    }

    /// Asserts that for `window` nothing but pings (answered) and noops
    /// arrives and the connection stays open; returns the pings seen.
    pub async fn expect_only_pings(&mut self, window: std::time::Duration) -> usize {
        let mut pings = 0;
        let deadline = Instant::now() + window;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_raw_within(left).await {
                None => return pings,
                Some(Msg::Text(t)) if t == "2" => {
                    pings += 1;
                    self.send_lossy(Msg::Text("3".into())).await;
                }
                Some(Msg::Text(t)) if t == "6" => {}
                Some(other) => panic!("expected only pings, got {other:?}"),
            }
        }
    }

    /// Closes the WebSocket from the client side.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

// ---------------------------------------------------------------------------
// Polling client

/// A plain HTTP client with the test deadline.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .expect("HTTP client")
}

/// Status and body of a request.
pub async fn send(req: reqwest::RequestBuilder) -> (u16, String) {
    let response = req.send().await.expect("HTTP request");
    let status = response.status().as_u16();
    let body = response.text().await.expect("HTTP body");
    (status, body)
}

/// A raw Engine.IO client over HTTP long-polling.
pub struct PollClient {
    http: reqwest::Client,
    url: String,
    pub sid: String,
}

impl PollClient {
    /// Opens an Engine.IO session over polling; returns the open packet JSON.
    pub async fn open(node: &TestNode) -> (Self, Map<String, Value>) {
        let http = http_client();
        let (status, body) = send(http.get(node.url("EIO=4&transport=polling"))).await;
        assert_eq!(status, 200, "handshake answer {body:?}");
        let open = parse_open(&body);
        let sid = open["sid"].as_str().expect("sid").to_owned();
        let url = node.url(&format!("EIO=4&transport=polling&sid={sid}"));
        (Self { http, url, sid }, open)
    }

    /// Opens a session and connects namespace `/` on a node without
    /// application hooks; returns the client and its socket id.
    pub async fn socket(node: &TestNode) -> (Self, String) {
        let (client, _) = Self::open(node).await;
        client.post_ok("40").await;
        let id = connect_reply_sid(&client.recv_packets(1).await[0], "/");
        (client, id)
    }

    /// A polling client for an existing `sid` (or a made-up one).
    pub fn for_sid(node: &TestNode, sid: &str) -> Self {
        Self {
            http: http_client(),
            url: node.url(&format!("EIO=4&transport=polling&sid={sid}")),
            sid: sid.to_owned(),
        }
    }

    /// A data GET: status and body.
    pub async fn get(&self) -> (u16, String) {
        send(self.http.get(&self.url)).await
    }

    /// A POST of `body`: status and body.
    pub async fn post(&self, body: impl Into<reqwest::Body>) -> (u16, String) {
        send(self.http.post(&self.url).body(body)).await
    }

    /// POSTs `body` and checks the `ok` answer.
    pub async fn post_ok(&self, body: impl Into<reqwest::Body>) {
        let (status, answer) = self.post(body).await;
        assert_eq!((status, answer.as_str()), (200, "ok"), "POST answer");
    }

    /// GETs until `n` packets other than pings arrived (pings are answered
    /// with a POST of `3`); returns exactly those packets, in order.
    pub async fn recv_packets(&self, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        let deadline = Instant::now() + DEADLINE;
        while out.len() < n {
            assert!(Instant::now() < deadline, "got only {out:?}");
            let (status, body) = self.get().await;
            assert_eq!(status, 200, "GET answer {body:?} after {out:?}");
            for packet in packets(&body) {
                if packet == "2" {
                    self.post_ok("3").await;
                } else {
                    out.push(packet);
                }
            }
        }
        assert_eq!(out.len(), n, "more packets than expected: {out:?}");
        out
    }

    /// Polls (answering pings) until the node sends the close packet `1` or
    /// forgets the session; false if neither happens within [`DEADLINE`].
    pub async fn closed(&self) -> bool {
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline {
            let (_, body) = self.get().await;
            if packets(&body).iter().any(|p| p == "1") || body.contains("\"code\":1") {
                return true;
            }
            if packets(&body).iter().any(|p| p == "2") {
                self.post_ok("3").await;
            }
        }
        false
    }
}

//! JWT keys from a JWKS URL, against a real node: a tiny identity provider on
//! `127.0.0.1:0` serves a JSON Web Key Set of ES256 keys made at test time
//! and counts its fetches.
//!
//! - the set is fetched when the node starts, and a rotated key (new `kid`)
//!   is accepted after the refresh an unknown `kid` triggers;
//! - tokens with random `kid`s cause no more fetches than the refresh
//!   interval allows;
//! - a provider that never answers gives a clear CONNECT_ERROR within the
//!   fetch timeout, not a hung connect.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use serde_json::{Value, json};
use support::eio::WsClient;
use support::node::start_plain;
use support::wait::{DEADLINE, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Least time between two fetches in these tests.
const REFRESH_INTERVAL_MS: u64 = 400;

/// An ES256 key pair: its signing key and its public JWK.
struct Key {
    kid: String,
    signing: EncodingKey,
    jwk: Value,
}

impl Key {
    fn new(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        // Uncompressed point: 0x04, then x and y on 32 bytes each.
        let point = pair.public_key_raw();
        assert_eq!((point.len(), point[0]), (65, 4));
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        });
        Self {
            kid: kid.to_owned(),
            signing: EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk,
        }
    }

    /// A token for `sub`, signed with this key and naming `kid`.
    fn token(&self, sub: &str, kid: &str) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 60;
        jsonwebtoken::encode(&header, &json!({"sub": sub, "exp": exp}), &self.signing).unwrap()
    }
}

/// A JWKS endpoint serving `set` (whatever it holds at each request).
struct Idp {
    url: String,
    fetches: Arc<AtomicUsize>,
    set: Arc<Mutex<Value>>,
}

impl Idp {
    async fn start(keys: &[&Key]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let fetches = Arc::new(AtomicUsize::new(0));
        let set = Arc::new(Mutex::new(Value::Null));
        let idp = Self { url, fetches, set };
        idp.serve(keys);
        let (fetches, set) = (idp.fetches.clone(), idp.set.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (fetches, set) = (fetches.clone(), set.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let body = set.lock().to_string();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        idp
    }

    /// Publishes exactly `keys` from now on.
    fn serve(&self, keys: &[&Key]) {
        *self.set.lock() =
            json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

fn config(jwks_url: &str, timeout_ms: u64) -> String {
    format!(
        r#"
[[namespaces]]
name = "/secure"
[namespaces.jwt]
algorithm = "ES256"
jwks_url = "{jwks_url}"
jwks_timeout_ms = {timeout_ms}
jwks_min_refresh_interval_ms = {REFRESH_INTERVAL_MS}
"#
    )
}

/// Sends CONNECT to `/secure` with `token`; the socket id, or the
/// CONNECT_ERROR message.
async fn connect(client: &mut WsClient, token: &str) -> Result<String, String> {
    let auth = format!(r#"{{"token":"{token}"}}"#);
    client
        .try_connect_ns("/secure", Some(&auth))
        .await
        .map_err(|error| {
            let error: Value = serde_json::from_str(&error).unwrap();
            error["message"].as_str().expect("a message").to_owned()
        })
}

#[tokio::test]
async fn keys_are_fetched_at_start_and_a_rotated_key_is_accepted_after_a_refresh() {
    let (old, new) = (Key::new("2024-key"), Key::new("2025-key"));
    let idp = Idp::start(&[&old]).await;
    let node = start_plain(&config(&idp.url, 2000)).await;
    // Fetched at start, before any client asks.
    eventually("the JWKS fetched at start", || idp.fetches() == 1).await;

    let (mut client, _) = WsClient::open(&node).await;
    let id = connect(&mut client, &old.token("alice", &old.kid))
        .await
        .expect("a token signed with the published key");
    let socket = node.io.socket("/secure", &id).expect("admitted");
    assert_eq!(socket.user_id(), Some("alice"));
    assert_eq!(idp.fetches(), 1, "a known kid is served from the cache");

    // The provider rotates: only the new key is published. A token naming it
    // is accepted once the node has refetched the set (at most one refresh
    // interval after the last fetch; until then it answers at once).
    idp.serve(&[&new]);
    let (mut client, _) = WsClient::open(&node).await;
    let started = Instant::now();
    let id = loop {
        match connect(&mut client, &new.token("bob", &new.kid)).await {
            Ok(id) => break id,
            Err(message) => assert_eq!(message, "invalid token: unknown key id"),
        }
        assert!(started.elapsed() < DEADLINE, "rotated key never accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        node.io.socket("/secure", &id).unwrap().user_id(),
        Some("bob")
    );
    assert_eq!(idp.fetches(), 2, "one refresh for the rotation");
    node.stop().await;
}

#[tokio::test]
async fn random_kids_cause_no_more_fetches_than_the_refresh_interval_allows() {
    let key = Key::new("only");
    let idp = Idp::start(&[&key]).await;
    let node = start_plain(&config(&idp.url, 2000)).await;
    eventually("the JWKS fetched at start", || idp.fetches() == 1).await;

    // 60 CONNECTs from 3 connections with random kids, over about a second
    // and a half: each is refused at once; the node refetches at most once per
    // interval.
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(WsClient::open(&node).await.0);
    }
    let started = Instant::now();
    for round in 0..20 {
        for client in &mut clients {
            let kid = format!("random-{}", rand::random::<u64>());
            let refused = connect(client, &key.token("mallory", &kid)).await;
            assert_eq!(
                refused.unwrap_err(),
                "invalid token: unknown key id",
                "round {round}"
            );
        }
        tokio::time::sleep(Duration::from_millis(75)).await;
    }
    let elapsed = started.elapsed().as_millis() as u64;
    let allowed = 1 + 1 + elapsed / REFRESH_INTERVAL_MS;
    let fetched = idp.fetches();
    assert!(
        fetched as u64 <= allowed,
        "{fetched} fetches in {elapsed} ms (at most {allowed})"
    );
    assert!(
        fetched >= 2,
        "unknown kids do trigger refreshes ({fetched})"
    );

    // The real key still works throughout.
    let id = connect(&mut clients[0], &key.token("alice", "only"))
        .await
        .unwrap();
    assert!(node.io.socket("/secure", &id).is_some());
    node.stop().await;
}

#[tokio::test]
async fn an_unresponsive_jwks_url_gives_a_connect_error_not_a_hung_connect() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let node = start_plain(&config(&url, 300)).await;
    let key = Key::new("k");
    let (mut client, _) = WsClient::open(&node).await;
    for attempt in 0..3 {
        let started = Instant::now();
        let refused = connect(&mut client, &key.token("alice", "k")).await;
        assert_eq!(
            refused.unwrap_err(),
            "cannot verify token: signing keys unavailable",
            "attempt {attempt}"
        );
        // The fetch timeout (300 ms), plus scheduling.
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "attempt {attempt} took {:?}",
            started.elapsed()
        );
    }
    // The connection is still usable.
    client.send("2").await;
    node.stop().await;
    held.abort();
}

//! JSON Web Key Sets: the verification keys an identity provider publishes
//! at a URL (`jwks_url`), fetched and cached per namespace.
//!
//! The set is fetched in the background when the node starts, then again
//! when a token names a `kid` the cache does not hold (the provider rotated
//! its keys) or when the cached set is older than `max_age`. Fetches are
//! single-flight and start at least `min_refresh_interval` apart, so clients
//! sending random `kid`s cause at most one fetch per interval; each fetch is
//! bounded by `timeout` (connect, headers and body) and `max_bytes`. A failed
//! fetch keeps the keys already cached; with none cached, clients get a
//! CONNECT_ERROR ("signing keys unavailable") at once, never a hung connect.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::RwLock;
use serde::Deserialize;
use tokio::time::Instant;

use super::{AuthError, KeyError};

/// Bounds of the fetches of one key set.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(crate) timeout: Duration,
    pub(crate) max_bytes: usize,
    pub(crate) min_refresh_interval: Duration,
    pub(crate) max_age: Duration,
}

/// Why one fetch gave no key set.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("not a JSON Web Key Set: {0}")]
    Json(#[from] serde_json::Error),
}

/// Keys with their `kid`, if any.
type Keys = Vec<(Option<String>, Arc<DecodingKey>)>;

/// The keys of one fetch that can verify tokens of the configured algorithm.
#[derive(Default)]
struct KeySet {
    keys: Keys,
    /// When the set was fetched; `None` until a fetch succeeds.
    fetched_at: Option<Instant>,
}

impl KeySet {
    /// The key named `kid`; a token without `kid` uses the only key of a
    /// one-key set.
    fn find(&self, kid: Option<&str>) -> Option<Arc<DecodingKey>> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|(id, _)| id.as_deref() == Some(kid))
                .map(|(_, key)| key.clone()),
            None if self.keys.len() == 1 => Some(self.keys[0].1.clone()),
            None => None,
        }
    }
}

/// The cached key set of one `jwks_url`.
pub(super) struct JwksCache {
    url: reqwest::Url,
    algorithm: Algorithm,
    limits: Limits,
    client: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    /// Held for the length of a fetch (single flight); holds when the last
    /// fetch started.
    fetching: tokio::sync::Mutex<Option<Instant>>,
    /// Fetches finished so far, successful or not.
    fetches: AtomicU64,
}

impl JwksCache {
    /// Checks the URL and limits and builds the HTTP client; fetches nothing.
    pub(super) fn new(url: &str, algorithm: Algorithm, limits: Limits) -> Result<Self, KeyError> {
        let url = reqwest::Url::parse(url).map_err(|source| KeyError::JwksUrl {
            url: url.to_owned(),
            source,
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(KeyError::JwksScheme { url: url.into() });
        }
        if limits.timeout.is_zero() || limits.max_bytes == 0 {
            return Err(KeyError::JwksLimits);
        }
        let client = reqwest::Client::builder()
            .timeout(limits.timeout)
            .connect_timeout(limits.timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("socketio-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(KeyError::JwksClient)?;
        Ok(Self {
            url,
            algorithm,
            limits,
            client,
            keys: RwLock::new(Arc::new(KeySet::default())),
            fetching: tokio::sync::Mutex::new(None),
            fetches: AtomicU64::new(0),
        })
    }

    /// Starts a fetch in the background (inside a Tokio runtime only), unless
    /// one ran less than `min_refresh_interval` ago.
    pub(super) fn prefetch(self: &Arc<Self>) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let cache = self.clone();
            let seen = self.fetches.load(Ordering::Acquire);
            runtime.spawn(async move { cache.refresh(seen).await });
        }
    }

    /// The key a token naming `kid` is checked against. Waits for a fetch
    /// only when the key is unknown and a fetch is in flight or allowed.
    pub(super) async fn key(
        self: &Arc<Self>,
        kid: Option<&str>,
    ) -> Result<Arc<DecodingKey>, AuthError> {
        let seen = self.fetches.load(Ordering::Acquire);
        let set = self.keys.read().clone();
        if let Some(key) = set.find(kid) {
            if set
                .fetched_at
                .is_some_and(|at| at.elapsed() >= self.limits.max_age)
            {
                self.prefetch();
            }
            return Ok(key);
        }
        // A token without `kid` against a fetched set of several keys: a new
        // fetch would not tell which key either.
        if kid.is_some() || set.fetched_at.is_none() {
            // In a task of its own: a client leaving mid-fetch must not cancel
            // the fetch other connects are waiting for.
            let cache = self.clone();
            let _ = tokio::spawn(async move { cache.refresh(seen).await }).await;
        }
        let set = self.keys.read().clone();
        match set.find(kid) {
            Some(key) => Ok(key),
            None if set.fetched_at.is_none() => Err(AuthError::KeysUnavailable),
            None if kid.is_none() => Err(AuthError::Invalid("token names no key (kid)".into())),
            None => Err(AuthError::Invalid("unknown key id".into())),
        }
    }

    /// Fetches the set unless a fetch finished since the caller read
    /// `fetches == seen` (its result is what the caller wants) or the last
    /// one started less than `min_refresh_interval` ago.
    async fn refresh(&self, seen: u64) {
        let mut last = self.fetching.lock().await;
        if self.fetches.load(Ordering::Acquire) != seen {
            return;
        }
        if last.is_some_and(|at| at.elapsed() < self.limits.min_refresh_interval) {
            tracing::debug!(url = %self.url, "JWKS refresh skipped: fetched recently");
            return;
        }
        *last = Some(Instant::now());
        let result = match tokio::time::timeout(self.limits.timeout, self.fetch()).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout(self.limits.timeout)),
        };
        match result {
            Ok(keys) => {
                if keys.is_empty() {
                    tracing::warn!(url = %self.url, algorithm = ?self.algorithm,
                        "JWKS holds no key usable for this algorithm");
                } else {
                    tracing::info!(url = %self.url, keys = keys.len(), "JWKS fetched");
                }
                *self.keys.write() = Arc::new(KeySet {
                    keys,
                    fetched_at: Some(Instant::now()),
                });
            }
            Err(error) => {
                tracing::warn!(url = %self.url, %error, "JWKS fetch failed; keeping cached keys");
            }
        }
        self.fetches.fetch_add(1, Ordering::Release);
    }

    async fn fetch(&self) -> Result<Keys, FetchError> {
        let max = self.limits.max_bytes;
        let mut response = self
            .client
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        if response.content_length().is_some_and(|n| n > max as u64) {
            return Err(FetchError::TooLarge(max));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > max {
                return Err(FetchError::TooLarge(max));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(parse(&body, self.algorithm)?)
    }
}

/// The keys of a JWKS document usable with `algorithm`; keys of other types,
/// curves, uses or algorithms, and keys this library cannot read, are
/// skipped (providers publish encryption and other-algorithm keys too).
fn parse(body: &[u8], algorithm: Algorithm) -> Result<Keys, serde_json::Error> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet = serde_json::from_slice(body)?;
    Ok(raw
        .keys
        .into_iter()
        .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
        .filter(|jwk| usable(jwk, algorithm))
        .filter_map(|jwk| {
            let key = DecodingKey::from_jwk(&jwk).ok()?;
            Some((jwk.common.key_id, Arc::new(key)))
        })
        .collect())
}

fn usable(jwk: &Jwk, algorithm: Algorithm) -> bool {
    let for_signing = matches!(
        jwk.common.public_key_use,
        None | Some(PublicKeyUse::Signature)
    );
    let same_algorithm = match &jwk.common.key_algorithm {
        None => true,
        Some(KeyAlgorithm::RS256) => algorithm == Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => algorithm == Algorithm::ES256,
        Some(_) => false,
    };
    let right_kind = match (&jwk.algorithm, algorithm) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        _ => false,
    };
    for_signing && same_algorithm && right_kind
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const EC_KEY: &str = r#"{"kty":"EC","crv":"P-256","kid":"ec1","use":"sig","alg":"ES256",
        "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

    fn limits(timeout_ms: u64, max_bytes: usize) -> Limits {
        Limits {
            timeout: Duration::from_millis(timeout_ms),
            max_bytes,
            min_refresh_interval: Duration::from_secs(60),
            max_age: Duration::from_secs(600),
        }
    }

    #[test]
    fn keeps_only_keys_for_the_configured_algorithm() {
        let body = format!(
            r#"{{"keys":[
                {EC_KEY},
                {{"kty":"EC","crv":"P-384","kid":"p384","x":"AA","y":"AA"}},
                {{"kty":"RSA","kid":"rsa","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}},
                {{"kty":"EC","crv":"P-256","kid":"enc","use":"enc","x":"AA","y":"AA"}},
                {{"kty":"EC","crv":"P-256","kid":"es384","alg":"ES384","x":"AA","y":"AA"}},
                {{"kty":"weird","kid":"w"}}
            ]}}"#
        );
        let es = parse(body.as_bytes(), Algorithm::ES256).unwrap();
        let kids: Vec<_> = es.iter().map(|(kid, _)| kid.as_deref()).collect();
        assert_eq!(kids, [Some("ec1")]);
        let rs = parse(body.as_bytes(), Algorithm::RS256).unwrap();
        let kids: Vec<_> = rs.iter().map(|(kid, _)| kid.as_deref()).collect();
        assert_eq!(kids, [Some("rsa")]);
        assert!(parse(b"[]", Algorithm::ES256).is_err());
        assert!(parse(b"{\"keys\":3}", Algorithm::ES256).is_err());
    }

    /// Serves `response` (a whole HTTP response, or nothing at all when
    /// `None`) to every connection; returns the URL.
    async fn serve(response: Option<Vec<u8>>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                match &response {
                    Some(bytes) => {
                        let _ = stream.write_all(bytes).await;
                        let _ = stream.shutdown().await;
                    }
                    None => held.push(stream),
                }
            }
        });
        format!("http://{addr}/jwks.json")
    }

    fn http_ok(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn fetches_a_set_and_finds_keys_by_kid() {
        let url = serve(Some(http_ok(&format!(r#"{{"keys":[{EC_KEY}]}}"#)))).await;
        let cache = Arc::new(JwksCache::new(&url, Algorithm::ES256, limits(2000, 4096)).unwrap());
        assert!(cache.key(Some("ec1")).await.is_ok());
        // The only key serves tokens without kid.
        assert!(cache.key(None).await.is_ok());
        assert!(matches!(
            cache.key(Some("other")).await,
            Err(AuthError::Invalid(why)) if why == "unknown key id"
        ));
        assert_eq!(cache.fetches.load(Ordering::Acquire), 1, "rate limited");
    }

    #[tokio::test]
    async fn an_oversized_slow_or_failing_set_means_keys_unavailable() {
        let big = format!(r#"{{"keys":[{EC_KEY}],"pad":"{}"}}"#, "x".repeat(5000));
        let chunked_big = {
            let mut r =
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                    .to_vec();
            r.extend_from_slice(format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len()).as_bytes());
            r
        };
        let cases = [
            ("too large (content-length)", Some(http_ok(&big))),
            ("too large (chunked)", Some(chunked_big)),
            ("never answers", None),
            (
                "HTTP 500",
                Some(b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n".to_vec()),
            ),
            ("not JSON", Some(http_ok("<html>"))),
        ];
        for (what, response) in cases {
            let url = serve(response).await;
            let cache =
                Arc::new(JwksCache::new(&url, Algorithm::ES256, limits(300, 4096)).unwrap());
            let started = std::time::Instant::now();
            let result = cache.key(Some("ec1")).await.map(|_| ());
            assert!(
                matches!(result, Err(AuthError::KeysUnavailable)),
                "{what}: {result:?}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{what}: took {:?}",
                started.elapsed()
            );
        }
    }
}

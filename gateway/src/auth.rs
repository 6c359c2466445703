//! JWT verification of `auth.token` on CONNECT: HS256, RS256 and ES256, with
//! a key from configuration or from a JWKS URL ([`jwks`]).
//!
//! One algorithm per namespace, from configuration (the token's `alg` header
//! never chooses). Claims used: `sub` becomes the socket's user id and an
//! optional `rooms` array names rooms the socket joins on connect. `exp` is
//! required; `exp` and `nbf` are checked with `leeway_secs` of clock skew;
//! `aud` and `iss` are checked against `audience` / `issuer` when those are
//! configured, and ignored when not.

mod jwks;

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::{ConfigError, JwtAlgorithm, JwtConfig, JwtKey, unusable};

/// Why a token was not accepted; the text is what the client reads in its
/// CONNECT_ERROR.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthError {
    #[error("invalid token: missing auth.token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The keys to check the token against could not be obtained (JWKS URL
    /// unreachable, too slow, too large or not a key set).
    #[error("cannot verify token: signing keys unavailable")]
    KeysUnavailable,
}

/// Why a namespace's verifier could not be built: its `[namespaces.jwt]`
/// values, or the key they name. A configuration error of the namespace
/// (see the `From` impl).
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyError {
    /// The values do not fit together ([`JwtConfig::validate`]).
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot read `public_key_file` {path:?}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the {algorithm:?} public key is not a usable PEM key")]
    Pem {
        algorithm: Algorithm,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    #[error("`jwks_url` {url:?} is not a URL")]
    JwksUrl {
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error("`jwks_url` {url:?} must be an http:// or https:// URL")]
    JwksScheme { url: String },
    #[error("`jwks_timeout_ms` and `jwks_max_bytes` must be positive")]
    JwksLimits,
    #[error("the JWKS HTTP client cannot be built")]
    JwksClient(#[source] reqwest::Error),
}

/// The error of the namespace's `jwt` table (to be placed in its namespace
/// with [`ConfigError::in_namespace`]).
impl From<KeyError> for ConfigError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Config(e) => e,
            e => unusable("jwt", "no verification key", e),
        }
    }
}

/// What a valid token grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Grant {
    pub(crate) user_id: Option<String>,
    pub(crate) rooms: Vec<String>,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    rooms: Vec<String>,
}

/// Where the verification key comes from.
enum Keys {
    Fixed(DecodingKey),
    Jwks(Arc<jwks::JwksCache>),
}

/// A verifier built once per namespace policy.
pub(crate) struct JwtVerifier {
    keys: Keys,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .field("jwks", &matches!(self.keys, Keys::Jwks(_)))
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Checks `config` and builds the verifier: reads a key file if one is
    /// named, but fetches nothing (see [`JwtVerifier::start`]).
    pub(crate) fn new(config: &JwtConfig) -> Result<Self, KeyError> {
        let algorithm = match config.algorithm {
            JwtAlgorithm::HS256 => Algorithm::HS256,
            JwtAlgorithm::RS256 => Algorithm::RS256,
            JwtAlgorithm::ES256 => Algorithm::ES256,
        };
        // The configuration decides which key the algorithm takes.
        let keys = match config.key()? {
            JwtKey::Secret(secret) => Keys::Fixed(DecodingKey::from_secret(secret.as_bytes())),
            JwtKey::PublicKey(pem) => Keys::Fixed(key_from_pem(algorithm, pem)?),
            JwtKey::PublicKeyFile(path) => {
                let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Keys::Fixed(key_from_pem(algorithm, &pem)?)
            }
            JwtKey::Jwks(url) => Keys::Jwks(Arc::new(jwks::JwksCache::new(
                url,
                algorithm,
                jwks::Limits {
                    timeout: Duration::from_millis(config.jwks_timeout_ms),
                    max_bytes: config.jwks_max_bytes,
                    min_refresh_interval: Duration::from_millis(
                        config.jwks_min_refresh_interval_ms,
                    ),
                    max_age: Duration::from_millis(config.jwks_max_age_ms),
                },
            )?)),
        };
        let mut validation = Validation::new(algorithm);
        validation.required_spec_claims = ["exp".to_owned()].into_iter().collect();
        validation.leeway = config.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // Without a configured audience a token's `aud` is not ours to judge
        // (jsonwebtoken would refuse any token that has one).
        validation.validate_aud = !config.audience.is_empty();
        if !config.audience.is_empty() {
            validation.set_audience(&config.audience);
            validation.required_spec_claims.insert("aud".to_owned());
        }
        if !config.issuer.is_empty() {
            validation.set_issuer(&config.issuer);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        Ok(Self { keys, validation })
    }

    /// [`JwtVerifier::new`], then, for a JWKS, the first fetch in the
    /// background (when called inside a Tokio runtime; otherwise the first
    /// CONNECT fetches). A node starts even if its identity provider is down.
    pub(crate) fn start(config: &JwtConfig) -> Result<Self, KeyError> {
        let verifier = Self::new(config)?;
        if let Keys::Jwks(cache) = &verifier.keys {
            cache.prefetch();
        }
        Ok(verifier)
    }

    /// Verifies the `token` field of a CONNECT auth object.
    pub(crate) async fn verify_auth(
        &self,
        auth: Option<&serde_json::Value>,
    ) -> Result<Grant, AuthError> {
        let token = auth
            .and_then(|a| a.get("token"))
            .and_then(|t| t.as_str())
            .ok_or(AuthError::Missing)?;
        self.verify(token).await
    }

    /// Verifies `token`. With a JWKS this may wait for a fetch (at most the
    /// configured `jwks_timeout_ms`, and only when the token names a key not
    /// in the cache and the refresh interval allows one).
    pub(crate) async fn verify(&self, token: &str) -> Result<Grant, AuthError> {
        match &self.keys {
            Keys::Fixed(key) => self.decode(token, key),
            Keys::Jwks(cache) => {
                let header = jsonwebtoken::decode_header(token)
                    .map_err(|_| AuthError::Invalid("malformed token".into()))?;
                if header.alg != self.validation.algorithms[0] {
                    return Err(AuthError::Invalid("algorithm not allowed".into()));
                }
                let key = cache.key(header.kid.as_deref()).await?;
                self.decode(token, &key)
            }
        }
    }

    fn decode(&self, token: &str, key: &DecodingKey) -> Result<Grant, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| {
            AuthError::Invalid(match e.kind() {
                ErrorKind::ExpiredSignature => "token expired".to_owned(),
                ErrorKind::ImmatureSignature => "token not valid yet".to_owned(),
                ErrorKind::InvalidSignature => "bad signature".to_owned(),
                ErrorKind::InvalidAlgorithm => "algorithm not allowed".to_owned(),
                ErrorKind::InvalidAudience => "audience not accepted".to_owned(),
                ErrorKind::InvalidIssuer => "issuer not accepted".to_owned(),
                ErrorKind::MissingRequiredClaim(c) => format!("missing claim {c}"),
                _ => "malformed token".to_owned(),
            })
        })?;
        Ok(Grant {
            user_id: data.claims.sub,
            rooms: data.claims.rooms,
        })
    }
}

fn key_from_pem(algorithm: Algorithm, pem: &str) -> Result<DecodingKey, KeyError> {
    let key = match algorithm {
        Algorithm::ES256 => DecodingKey::from_ec_pem(pem.as_bytes()),
        _ => DecodingKey::from_rsa_pem(pem.as_bytes()),
    };
    key.map_err(|source| KeyError::Pem { algorithm, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    fn hs(secret: &str) -> JwtVerifier {
        hs_with(secret, |_| {})
    }

    fn hs_with(secret: &str, tweak: impl FnOnce(&mut JwtConfig)) -> JwtVerifier {
        let mut config = JwtConfig::new(JwtAlgorithm::HS256);
        config.secret = Some(secret.into());
        tweak(&mut config);
        JwtVerifier::new(&config).unwrap()
    }

    fn sign(claims: serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn reason(result: Result<Grant, AuthError>) -> String {
        match result {
            Err(AuthError::Invalid(why)) => why,
            other => panic!("expected an invalid token, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn accepts_a_valid_token_and_reads_claims() {
        let v = hs("k");
        let t = sign(
            json!({"sub":"u1","exp": now() + 60, "rooms":["a","b"]}),
            "k",
        );
        let g = v.verify_auth(Some(&json!({ "token": t }))).await.unwrap();
        assert_eq!(g.user_id.as_deref(), Some("u1"));
        assert_eq!(g.rooms, vec!["a", "b"]);
    }

    #[tokio::test]
    async fn refuses_bad_tokens() {
        let v = hs("k");
        assert!(matches!(v.verify_auth(None).await, Err(AuthError::Missing)));
        assert!(matches!(
            v.verify_auth(Some(&json!({"token": 5}))).await,
            Err(AuthError::Missing)
        ));
        let wrong = sign(json!({"sub":"u","exp": now() + 60}), "other");
        assert_eq!(reason(v.verify(&wrong).await), "bad signature");
        let expired = sign(json!({"sub":"u","exp": now() - 600}), "k");
        assert_eq!(reason(v.verify(&expired).await), "token expired");
        let no_exp = sign(json!({"sub":"u"}), "k");
        assert_eq!(reason(v.verify(&no_exp).await), "missing claim exp");
        assert_eq!(reason(v.verify("garbage").await), "malformed token");
    }

    #[tokio::test]
    async fn exp_and_nbf_are_checked_with_the_leeway() {
        // Default leeway: 60 s.
        let v = hs("k");
        let t = now();
        let late = sign(json!({"exp": t - 30}), "k");
        assert!(v.verify(&late).await.is_ok(), "expired within the leeway");
        let expired = sign(json!({"exp": t - 120}), "k");
        assert_eq!(reason(v.verify(&expired).await), "token expired");
        let early = sign(json!({"exp": t + 600, "nbf": t + 30}), "k");
        assert!(v.verify(&early).await.is_ok(), "nbf within the leeway");
        let future = sign(json!({"exp": t + 600, "nbf": t + 120}), "k");
        assert_eq!(reason(v.verify(&future).await), "token not valid yet");
        let current = sign(json!({"exp": t + 600, "nbf": t - 5}), "k");
        assert!(v.verify(&current).await.is_ok());

        // No leeway at all.
        let strict = hs_with("k", |c| c.leeway_secs = 0);
        let late = sign(json!({"exp": t - 2}), "k");
        assert_eq!(reason(strict.verify(&late).await), "token expired");
        let early = sign(json!({"exp": t + 600, "nbf": t + 5}), "k");
        assert_eq!(reason(strict.verify(&early).await), "token not valid yet");

        let mut config = JwtConfig::new(JwtAlgorithm::HS256);
        config.secret = Some("k".into());
        config.leeway_secs = crate::config::MAX_JWT_LEEWAY_SECS + 1;
        assert!(matches!(
            JwtVerifier::new(&config),
            Err(KeyError::Config(ConfigError::Invalid { .. }))
        ));
    }

    #[tokio::test]
    async fn aud_is_ignored_unless_configured() {
        let v = hs("k");
        let exp = now() + 60;
        for aud in [json!("anything"), json!(["a", "b"])] {
            let t = sign(json!({"exp": exp, "aud": aud}), "k");
            assert!(v.verify(&t).await.is_ok(), "aud {aud} without audience");
        }
    }

    #[tokio::test]
    async fn aud_as_a_string_or_an_array_must_name_a_configured_audience() {
        let v = hs_with("k", |c| c.audience = vec!["api".into(), "other-api".into()]);
        let exp = now() + 60;
        for aud in [json!("api"), json!(["x", "api"]), json!(["other-api"])] {
            let t = sign(json!({"exp": exp, "aud": aud}), "k");
            assert!(v.verify(&t).await.is_ok(), "aud {aud}");
        }
        for aud in [json!("x"), json!(["x", "y"]), json!([])] {
            let t = sign(json!({"exp": exp, "aud": aud}), "k");
            assert_eq!(reason(v.verify(&t).await), "audience not accepted", "{aud}");
        }
        let none = sign(json!({ "exp": exp }), "k");
        assert_eq!(reason(v.verify(&none).await), "missing claim aud");
    }

    #[tokio::test]
    async fn iss_is_checked_when_configured() {
        let exp = now() + 60;
        let from_idp = sign(json!({"exp": exp, "iss": "https://idp.example/"}), "k");
        let from_other = sign(json!({"exp": exp, "iss": "https://evil.example/"}), "k");
        let anonymous = sign(json!({ "exp": exp }), "k");

        let open = hs("k");
        for t in [&from_idp, &from_other, &anonymous] {
            assert!(open.verify(t).await.is_ok());
        }
        let v = hs_with("k", |c| c.issuer = vec!["https://idp.example/".into()]);
        assert!(v.verify(&from_idp).await.is_ok());
        assert_eq!(reason(v.verify(&from_other).await), "issuer not accepted");
        assert_eq!(reason(v.verify(&anonymous).await), "missing claim iss");
    }

    /// A fresh P-256 key pair: (signing key, PEM public key, public point).
    pub(super) fn es256_pair() -> (EncodingKey, String, Vec<u8>) {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let signing = EncodingKey::from_ec_der(&pair.serialize_der());
        (
            signing,
            pair.public_key_pem(),
            pair.public_key_raw().to_vec(),
        )
    }

    #[tokio::test]
    async fn es256_with_a_pem_public_key() {
        let (signing, pem, _) = es256_pair();
        let mut config = JwtConfig::new(JwtAlgorithm::ES256);
        config.public_key = Some(pem);
        let v = JwtVerifier::new(&config).unwrap();
        let claims = json!({"sub": "ec", "exp": now() + 60});
        let t = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &signing).unwrap();
        assert_eq!(v.verify(&t).await.unwrap().user_id.as_deref(), Some("ec"));

        let (other, _, _) = es256_pair();
        let forged = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &other).unwrap();
        assert_eq!(reason(v.verify(&forged).await), "bad signature");
        // An HS256 token is refused outright, whatever its secret.
        let hs = sign(claims, "k");
        assert_eq!(reason(v.verify(&hs).await), "algorithm not allowed");
    }

    #[test]
    fn jwt_settings_read_from_toml() {
        let config = crate::Config::from_toml(
            r#"
            [[namespaces]]
            name = "/a"
            [namespaces.jwt]
            algorithm = "ES256"
            jwks_url = "https://idp.example/jwks"
            audience = "api"
            issuer = ["https://idp.example/", "https://old-idp.example/"]
            leeway_secs = 5
            [[namespaces]]
            name = "/b"
            [namespaces.jwt]
            algorithm = "HS256"
            secret = "s"
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        let a = config.namespaces[0].jwt.as_ref().unwrap();
        assert_eq!(a.algorithm, JwtAlgorithm::ES256);
        assert_eq!(a.audience, ["api"]);
        assert_eq!(a.issuer.len(), 2);
        assert_eq!(a.leeway_secs, 5);
        assert_eq!(a.jwks_timeout_ms, 5_000);
        let b = config.namespaces[1].jwt.as_ref().unwrap();
        assert!(b.audience.is_empty() && b.issuer.is_empty());
        assert_eq!(b.leeway_secs, 60);
        assert_eq!(b.jwks_max_bytes, 256 * 1024);
        assert_eq!(b.jwks_min_refresh_interval_ms, 10_000);
        assert_eq!(b.jwks_max_age_ms, 600_000);
    }

    #[test]
    fn key_configuration_is_checked() {
        let (_, ec_pem, _) = es256_pair();
        let bad = [
            (JwtAlgorithm::HS256, None, None, None),
            (
                JwtAlgorithm::HS256,
                Some("s"),
                None,
                Some("http://idp/jwks"),
            ),
            (JwtAlgorithm::ES256, None, None, None),
            (JwtAlgorithm::ES256, Some("s"), None, None),
            (JwtAlgorithm::ES256, None, Some("not a pem"), None),
            (JwtAlgorithm::RS256, None, Some(ec_pem.as_str()), None),
            (
                JwtAlgorithm::ES256,
                None,
                Some(ec_pem.as_str()),
                Some("http://idp/jwks"),
            ),
            (JwtAlgorithm::ES256, None, None, Some("ftp://idp/jwks")),
            (JwtAlgorithm::ES256, None, None, Some("not a url")),
        ];
        for (algorithm, secret, pem, url) in bad {
            let mut config = JwtConfig::new(algorithm);
            config.secret = secret.map(Into::into);
            config.public_key = pem.map(Into::into);
            config.jwks_url = url.map(Into::into);
            assert!(
                JwtVerifier::new(&config).is_err(),
                "accepted {algorithm:?} secret={secret:?} pem={pem:?} url={url:?}"
            );
        }
        let mut config = JwtConfig::new(JwtAlgorithm::RS256);
        config.jwks_url = Some("https://idp.example/.well-known/jwks.json".into());
        JwtVerifier::new(&config).unwrap();
    }

    /// The configuration decides which key an algorithm takes; the verifier
    /// gives the same answer, never a second opinion.
    #[test]
    fn the_verifier_refuses_what_validation_refuses_with_the_same_error() {
        let mut config = JwtConfig::new(JwtAlgorithm::ES256);
        config.public_key = Some("pem".into());
        config.jwks_url = Some("https://idp.example/jwks".into());
        let validated = config.validate().unwrap_err().to_string();
        let built = JwtVerifier::new(&config).unwrap_err();
        assert!(matches!(built, KeyError::Config(_)), "{built:?}");
        assert_eq!(built.to_string(), validated);
        assert!(validated.contains("needs exactly one of"), "{validated}");
    }

    #[test]
    fn a_key_that_does_not_load_keeps_why_as_its_source() {
        use std::error::Error as _;
        let mut missing = JwtConfig::new(JwtAlgorithm::RS256);
        missing.public_key_file = Some("/nonexistent/key.pem".into());
        let mut not_pem = JwtConfig::new(JwtAlgorithm::ES256);
        not_pem.public_key = Some("not a pem".into());
        let mut not_url = JwtConfig::new(JwtAlgorithm::ES256);
        not_url.jwks_url = Some("not a url".into());
        let cases = [
            (
                missing,
                "cannot read `public_key_file` \"/nonexistent/key.pem\"",
            ),
            (not_pem, "the ES256 public key is not a usable PEM key"),
            (not_url, "`jwks_url` \"not a url\" is not a URL"),
        ];
        for (config, message) in cases {
            let e = JwtVerifier::new(&config).unwrap_err();
            assert_eq!(e.to_string(), message);
            assert!(e.source().is_some(), "{e}: no source");
            // As the namespace's configuration error, under its name.
            let e = ConfigError::from(e).in_namespace("/a");
            assert_eq!(
                e.to_string(),
                "invalid configuration: namespace \"/a\": jwt: no verification key"
            );
            let key_error = e.source().unwrap();
            assert_eq!(key_error.to_string(), message);
            assert!(key_error.source().is_some(), "{message}: no source");
        }
        let mut missing = JwtConfig::new(JwtAlgorithm::RS256);
        missing.public_key_file = Some("/nonexistent/key.pem".into());
        let e = JwtVerifier::new(&missing).unwrap_err();
        assert!(e.source().unwrap().is::<std::io::Error>());
    }
}

//! JWT verification of `auth.token` on CONNECT (HS256 and RS256).
//!
//! Claims used: `sub` becomes the socket's user id, `exp` is enforced, and an
//! optional `rooms` array names rooms the socket joins on connect.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::{JwtAlgorithm, JwtConfig};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid token: missing auth.token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("bad key configuration: {0}")]
    Key(String),
}

/// What a valid token grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    pub user_id: Option<String>,
    pub rooms: Vec<String>,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    rooms: Vec<String>,
}

/// A verifier built once per namespace policy.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    pub fn new(config: &JwtConfig) -> Result<Self, AuthError> {
        let (key, algorithm) = match config.algorithm {
            JwtAlgorithm::HS256 => {
                let secret = config
                    .secret
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| AuthError::Key("HS256 needs `secret`".into()))?;
                (
                    DecodingKey::from_secret(secret.as_bytes()),
                    Algorithm::HS256,
                )
            }
            JwtAlgorithm::RS256 => {
                let pem = match (&config.public_key, &config.public_key_file) {
                    (Some(pem), None) => pem.clone(),
                    (None, Some(path)) => std::fs::read_to_string(path)
                        .map_err(|e| AuthError::Key(format!("{path}: {e}")))?,
                    _ => {
                        return Err(AuthError::Key(
                            "RS256 needs exactly one of `public_key` or `public_key_file`".into(),
                        ));
                    }
                };
                let key = DecodingKey::from_rsa_pem(pem.as_bytes())
                    .map_err(|e| AuthError::Key(e.to_string()))?;
                (key, Algorithm::RS256)
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.required_spec_claims = ["exp".to_owned()].into_iter().collect();
        validation.leeway = 5;
        Ok(Self { key, validation })
    }

    /// Verifies the `token` field of a CONNECT auth object.
    pub fn verify_auth(&self, auth: Option<&serde_json::Value>) -> Result<Grant, AuthError> {
        let token = auth
            .and_then(|a| a.get("token"))
            .and_then(|t| t.as_str())
            .ok_or(AuthError::Missing)?;
        self.verify(token)
    }

    pub fn verify(&self, token: &str) -> Result<Grant, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
                AuthError::Invalid(match e.kind() {
                    ErrorKind::ExpiredSignature => "token expired".to_owned(),
                    ErrorKind::ImmatureSignature => "token not valid yet".to_owned(),
                    ErrorKind::InvalidSignature => "bad signature".to_owned(),
                    ErrorKind::InvalidAlgorithm => "algorithm not allowed".to_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    fn hs(secret: &str) -> JwtVerifier {
        JwtVerifier::new(&JwtConfig {
            algorithm: JwtAlgorithm::HS256,
            secret: Some(secret.into()),
            public_key: None,
            public_key_file: None,
        })
        .unwrap()
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

    #[test]
    fn accepts_a_valid_token_and_reads_claims() {
        let v = hs("k");
        let t = sign(
            json!({"sub":"u1","exp": now() + 60, "rooms":["a","b"]}),
            "k",
        );
        let g = v.verify_auth(Some(&json!({ "token": t }))).unwrap();
        assert_eq!(g.user_id.as_deref(), Some("u1"));
        assert_eq!(g.rooms, vec!["a", "b"]);
    }

    #[test]
    fn refuses_bad_tokens() {
        let v = hs("k");
        assert!(matches!(v.verify_auth(None), Err(AuthError::Missing)));
        assert!(matches!(
            v.verify_auth(Some(&json!({"token": 5}))),
            Err(AuthError::Missing)
        ));
        let wrong = sign(json!({"sub":"u","exp": now() + 60}), "other");
        assert!(matches!(v.verify(&wrong), Err(AuthError::Invalid(_))));
        let expired = sign(json!({"sub":"u","exp": now() - 600}), "k");
        assert!(matches!(v.verify(&expired), Err(AuthError::Invalid(_))));
        let no_exp = sign(json!({"sub":"u"}), "k");
        assert!(matches!(v.verify(&no_exp), Err(AuthError::Invalid(_))));
        assert!(matches!(v.verify("garbage"), Err(AuthError::Invalid(_))));
    }
}

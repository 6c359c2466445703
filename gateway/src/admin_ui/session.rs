//! Logins of the Admin UI: the user name and bcrypt password hash it is
//! configured with, and session ids that let a UI log in again without the
//! password (it keeps the id in the browser's storage).
//!
//! A session id is `<expiry>.<nonce>.<mac>`: the HMAC-SHA256 of expiry and
//! nonce under a key derived from the password hash. Every node with the
//! same configuration accepts it, so a UI reconnecting through another node
//! stays logged in; changing the password invalidates every id.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

/// How long a session id is accepted.
const LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Password checks under way at once: bcrypt is slow on purpose, and a
/// flood of logins must not take every core.
const CONCURRENT_CHECKS: usize = 2;
/// The longest a login waits for its turn at the password check. Past it
/// the login is refused as busy: a flood of logins queues for seconds at
/// most, not for as long as all the checks before it take.
const CHECK_WAIT: Duration = Duration::from_secs(5);

/// What became of a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    Admitted,
    /// Wrong or missing credentials.
    Refused,
    /// Too many password checks were waiting: not judged.
    Busy,
}

pub(super) struct Sessions {
    username: String,
    hash: String,
    key: [u8; 32],
    checks: Semaphore,
}

impl Sessions {
    pub(super) fn new(username: String, hash: String) -> Self {
        let key: [u8; 32] = Sha256::new()
            .chain_update(b"socket.io admin UI session\0")
            .chain_update(hash.as_bytes())
            .finalize()
            .into();
        Self {
            username,
            hash,
            key,
            checks: Semaphore::new(CONCURRENT_CHECKS),
        }
    }

    fn mac(&self, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(body.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// A new session id, valid for a day.
    pub(super) fn issue(&self) -> String {
        self.issue_at(SystemTime::now())
    }

    fn issue_at(&self, now: SystemTime) -> String {
        let expiry = (now + LIFETIME)
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let nonce = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 12]>());
        let body = format!("{expiry}.{nonce}");
        let mac = self.mac(&body);
        format!("{body}.{mac}")
    }

    /// Whether `id` is a session id this configuration issued, not expired.
    fn valid_at(&self, id: &str, now: SystemTime) -> bool {
        let Some((body, mac)) = id.rsplit_once('.') else {
            return false;
        };
        let Some(expiry) = body
            .split_once('.')
            .and_then(|(e, _)| e.parse::<u64>().ok())
        else {
            return false;
        };
        let now = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let expected = self.mac(body);
        now < expiry && bool::from(expected.as_bytes().ct_eq(mac.as_bytes()))
    }

    /// The CONNECT's auth object: `{sessionId}` of a valid session, or the
    /// configured `{username, password}`.
    pub(super) async fn admit(&self, auth: Option<&serde_json::Value>) -> Admission {
        let field = |name: &str| auth.and_then(|a| a.get(name)).and_then(|v| v.as_str());
        if let Some(id) = field("sessionId")
            && self.valid_at(id, SystemTime::now())
        {
            return Admission::Admitted;
        }
        let (Some(user), Some(password)) = (field("username"), field("password")) else {
            return Admission::Refused;
        };
        if !bool::from(user.as_bytes().ct_eq(self.username.as_bytes())) {
            return Admission::Refused;
        }
        let _permit = match tokio::time::timeout(CHECK_WAIT, self.checks.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_closed)) => return Admission::Refused,
            Err(_elapsed) => return Admission::Busy,
        };
        let (password, hash) = (password.to_owned(), self.hash.clone());
        let right =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        if right {
            Admission::Admitted
        } else {
            Admission::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> Sessions {
        // bcrypt.hash("s3cret", 4)
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        Sessions::new("admin".into(), hash)
    }

    #[tokio::test]
    async fn the_password_or_a_session_id_admits() {
        let s = sessions();
        let login = serde_json::json!({ "username": "admin", "password": "s3cret" });
        assert_eq!(s.admit(Some(&login)).await, Admission::Admitted);
        for wrong in [
            serde_json::json!({ "username": "admin", "password": "s3cret " }),
            serde_json::json!({ "username": "root", "password": "s3cret" }),
            serde_json::json!({ "username": "admin" }),
            serde_json::json!({ "sessionId": "1.2.3" }),
            serde_json::json!("admin"),
        ] {
            assert_eq!(s.admit(Some(&wrong)).await, Admission::Refused, "{wrong}");
        }
        assert_eq!(s.admit(None).await, Admission::Refused);
        let id = s.issue();
        assert_eq!(
            s.admit(Some(&serde_json::json!({ "sessionId": id }))).await,
            Admission::Admitted
        );
    }

    // Paused time: the runtime's clock jumps to the next timer when idle.
    #[tokio::test(start_paused = true)]
    async fn a_login_that_waits_too_long_for_its_check_is_busy_not_judged() {
        let s = sessions();
        let login = serde_json::json!({ "username": "admin", "password": "s3cret" });
        // Every check taken (as by a flood of logins under way).
        let taken = s.checks.try_acquire_many(CONCURRENT_CHECKS as u32).unwrap();
        let waited = tokio::time::timeout(2 * CHECK_WAIT, s.admit(Some(&login))).await;
        assert_eq!(waited, Ok(Admission::Busy), "a login waited without bound");
        // A session id needs no check: admitted even now.
        let id = serde_json::json!({ "sessionId": s.issue() });
        assert_eq!(s.admit(Some(&id)).await, Admission::Admitted);
        drop(taken);
        assert_eq!(s.admit(Some(&login)).await, Admission::Admitted);
    }

    #[test]
    fn session_ids_expire_and_cannot_be_forged() {
        let s = sessions();
        let now = SystemTime::now();
        let id = s.issue_at(now);
        assert!(s.valid_at(&id, now));
        assert!(!s.valid_at(&id, now + LIFETIME + Duration::from_secs(1)));
        // Another expiry with the same mac.
        let (expiry, rest) = id.split_once('.').unwrap();
        let later = format!("{}.{rest}", expiry.parse::<u64>().unwrap() + 3600);
        assert!(!s.valid_at(&later, now));
        // Another configuration's id.
        let other = Sessions::new("admin".into(), bcrypt::hash("other", 4).unwrap());
        assert!(!other.valid_at(&id, now));
        assert!(!s.valid_at("", now));
        assert!(!s.valid_at("x.y", now));
    }
}

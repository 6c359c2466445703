//! Bearer-token authentication of every call on the admin port (the admin
//! service and reflection alike), as a tower layer in front of tonic's
//! router.
//!
//! Every call but those of the health service (`grpc.health.v1.Health`)
//! carries `authorization: Bearer <token>`; the token is compared in
//! constant time with every accepted token (only lengths can be told from
//! the timing). A missing or wrong token is answered `UNAUTHENTICATED`
//! without reaching the service, and counted in the admin metrics.
//!
//! The accepted tokens are [`Tokens`]: `admin.token` and the lines of
//! `admin.token_file`, which [`Tokens::reload`] reads again (see
//! [`super::AdminApi::serve`]), so a rotation needs no restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use http::{HeaderMap, Request, Response};
use subtle::ConstantTimeEq;
use tonic::{Code, Status};
use tower::{Layer, Service};

use super::call::method_of_path;
use crate::telemetry::Metrics;

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read admin.token_file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("admin.token_file {}: line {line}: the token {reason}", path.display())]
    Token {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("admin.token_file {} holds no token", path.display())]
    Empty { path: PathBuf },
}

/// Tokens as they are compared: bytes, shared with the calls in flight.
type TokenList = Arc<[Box<[u8]>]>;

/// The accepted admin tokens: `admin.token` and those of `admin.token_file`.
/// Shared by the auth layer (read on every call) and the reloader.
#[derive(Clone)]
pub(crate) struct Tokens {
    fixed: Option<Arc<[u8]>>,
    file: Option<PathBuf>,
    /// The tokens of the file as last loaded.
    from_file: Arc<RwLock<TokenList>>,
}

impl Tokens {
    /// `token` and the tokens of `file`, which is read now.
    pub(crate) fn load(token: Option<&str>, file: Option<&Path>) -> Result<Self, TokenFileError> {
        let from_file = match file {
            Some(path) => read_token_file(path)?,
            None => Arc::from([]),
        };
        Ok(Self {
            fixed: token.map(|t| Arc::from(t.as_bytes())),
            file: file.map(Path::to_owned),
            from_file: Arc::new(RwLock::new(from_file)),
        })
    }

    /// Whether calls need a token at all.
    pub(crate) fn required(&self) -> bool {
        self.fixed.is_some() || self.file.is_some()
    }

    /// The token file, when there is one.
    pub(crate) fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Reads the token file again. `Ok(true)` when its tokens changed (they
    /// are in use from now on), `Ok(false)` when they are the same; an error
    /// keeps the tokens already loaded.
    pub(crate) fn reload(&self) -> Result<bool, TokenFileError> {
        let Some(path) = &self.file else {
            return Ok(false);
        };
        let fresh = read_token_file(path)?;
        let mut current = self.from_file.write().unwrap_or_else(|e| e.into_inner());
        if *current == fresh {
            return Ok(false);
        }
        *current = fresh;
        Ok(true)
    }

    /// Whether `token` is one of the accepted tokens. Every accepted token
    /// is compared, each in constant time.
    fn accepts(&self, token: &[u8]) -> bool {
        let from_file = self
            .from_file
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut found = subtle::Choice::from(0);
        for expected in self
            .fixed
            .iter()
            .map(|t| &**t)
            .chain(from_file.iter().map(|t| &**t))
        {
            found |= token.ct_eq(expected);
        }
        found.into()
    }
}

/// The tokens of the file at `path`, one per line, each checked.
fn read_token_file(path: &Path) -> Result<TokenList, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut tokens = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let token = line.trim();
        if token.is_empty() || token.starts_with('#') {
            continue;
        }
        crate::config::check_admin_token(token).map_err(|reason| TokenFileError::Token {
            path: path.to_owned(),
            line: i + 1,
            reason,
        })?;
        tokens.push(Box::from(token.as_bytes()));
    }
    if tokens.is_empty() {
        return Err(TokenFileError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(tokens.into())
}

/// The layer; without a token it lets every call through.
#[derive(Clone)]
pub(crate) struct AuthLayer {
    tokens: Option<Tokens>,
    metrics: Arc<Metrics>,
}

impl AuthLayer {
    pub(crate) fn new(tokens: Tokens, metrics: Arc<Metrics>) -> Self {
        Self {
            tokens: tokens.required().then_some(tokens),
            metrics,
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            tokens: self.tokens.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around the router.
#[derive(Clone)]
pub(crate) struct Auth<S> {
    inner: S,
    tokens: Option<Tokens>,
    metrics: Arc<Metrics>,
}

/// Why a call is refused (the `UNAUTHENTICATED` message).
fn check(tokens: &Tokens, headers: &HeaderMap) -> Result<(), &'static str> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Err("missing admin token: send the metadata `authorization: Bearer <token>`");
    };
    let value = value.as_bytes();
    // The scheme is case-insensitive (RFC 7235).
    let token = match value.split_at_checked(7) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => rest.trim_ascii(),
        _ => return Err("the authorization metadata must be `Bearer <token>`"),
    };
    if tokens.accepts(token) {
        Ok(())
    } else {
        Err("invalid admin token")
    }
}

impl<S, B> Service<Request<B>> for Auth<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Self::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let Some(tokens) = &self.tokens else {
            return Either::Right(self.inner.call(request));
        };
        // The standard health service answers without a token, as `/readyz`
        // does: load balancers and probes carry none.
        if request
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(super::HEALTH_SERVICE))
            .is_some_and(|rest| rest.starts_with('/'))
        {
            return Either::Right(self.inner.call(request));
        }
        match check(tokens, request.headers()) {
            Ok(()) => Either::Right(self.inner.call(request)),
            Err(message) => {
                if let Some(method) = method_of_path(request.uri().path()) {
                    self.metrics
                        .admin_call(method)
                        .finish(Code::Unauthenticated as i32);
                }
                Either::Left(ready(Ok(Status::unauthenticated(message).into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = value {
            h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn checks_the_bearer_token() {
        let token = &Tokens::load(Some("s3cret-token"), None).unwrap();
        assert!(check(token, &headers(Some("Bearer s3cret-token"))).is_ok());
        assert!(check(token, &headers(Some("bearer  s3cret-token"))).is_ok());
        assert!(check(token, &headers(Some("Bearer s3cret-tokeN"))).is_err());
        assert!(check(token, &headers(Some("Bearer s3cret"))).is_err());
        assert!(check(token, &headers(Some("Basic s3cret-token"))).is_err());
        assert!(check(token, &headers(Some("s3cret-token"))).is_err());
        assert!(check(token, &headers(Some("Bearer"))).is_err());
        assert!(check(token, &headers(None)).is_err());
    }

    #[test]
    fn accepts_every_token_of_the_file_and_reloads_it() {
        let dir = std::env::temp_dir().join(format!("gateway-admin-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens");
        let (old, new) = ("0123456789abcdef-old", "0123456789abcdef-new");
        std::fs::write(&path, format!("# rotation\n{old}\n\n  {new}  \n")).unwrap();
        let tokens = Tokens::load(Some("fixed-token-0123456"), Some(&path)).unwrap();
        for t in [old, new, "fixed-token-0123456"] {
            assert!(
                check(&tokens, &headers(Some(&format!("Bearer {t}")))).is_ok(),
                "{t}"
            );
        }
        assert!(check(&tokens, &headers(Some("Bearer 0123456789abcdef"))).is_err());

        // The old token is retired; an unchanged file changes nothing.
        std::fs::write(&path, format!("{new}\n")).unwrap();
        assert!(tokens.reload().unwrap());
        assert!(!tokens.reload().unwrap());
        assert!(check(&tokens, &headers(Some(&format!("Bearer {old}")))).is_err());
        assert!(check(&tokens, &headers(Some(&format!("Bearer {new}")))).is_ok());

        // A bad file keeps the tokens already loaded.
        std::fs::write(&path, "replace-me-in-the-overlay\n").unwrap();
        let e = tokens.reload().unwrap_err();
        assert!(
            e.to_string().contains("line 1: the token is a placeholder"),
            "{e}"
        );
        std::fs::write(&path, "# nothing\n").unwrap();
        assert!(matches!(tokens.reload(), Err(TokenFileError::Empty { .. })));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(tokens.reload(), Err(TokenFileError::Read { .. })));
        assert!(check(&tokens, &headers(Some(&format!("Bearer {new}")))).is_ok());
        assert!(Tokens::load(None, Some(&path)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

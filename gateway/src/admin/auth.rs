//! Bearer-token authentication of every call on the admin port (the admin
//! service and reflection alike), as a tower layer in front of tonic's
//! router.
//!
//! A call carries `authorization: Bearer <token>`; the token is compared in
//! constant time (only its length can be told from the timing). A missing or
//! wrong token is answered `UNAUTHENTICATED` without reaching the service,
//! and counted in the admin metrics.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use http::{HeaderMap, Request, Response};
use subtle::ConstantTimeEq;
use tonic::{Code, Status};
use tower::{Layer, Service};

use super::call::method_of_path;
use crate::telemetry::Metrics;

/// The layer; without a token it lets every call through.
#[derive(Clone)]
pub(crate) struct AuthLayer {
    token: Option<Arc<[u8]>>,
    metrics: Arc<Metrics>,
}

impl AuthLayer {
    pub(crate) fn new(token: Option<&str>, metrics: Arc<Metrics>) -> Self {
        Self {
            token: token.map(|t| Arc::from(t.as_bytes())),
            metrics,
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            token: self.token.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around the router.
#[derive(Clone)]
pub(crate) struct Auth<S> {
    inner: S,
    token: Option<Arc<[u8]>>,
    metrics: Arc<Metrics>,
}

/// Why a call is refused (the `UNAUTHENTICATED` message).
fn check(expected: &[u8], headers: &HeaderMap) -> Result<(), &'static str> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Err("missing admin token: send the metadata `authorization: Bearer <token>`");
    };
    let value = value.as_bytes();
    // The scheme is case-insensitive (RFC 7235).
    let token = match value.split_at_checked(7) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => rest.trim_ascii(),
        _ => return Err("the authorization metadata must be `Bearer <token>`"),
    };
    if bool::from(token.ct_eq(expected)) {
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
        let Some(expected) = &self.token else {
            return Either::Right(self.inner.call(request));
        };
        match check(expected, request.headers()) {
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
        let token = b"s3cret-token";
        assert!(check(token, &headers(Some("Bearer s3cret-token"))).is_ok());
        assert!(check(token, &headers(Some("bearer  s3cret-token"))).is_ok());
        assert!(check(token, &headers(Some("Bearer s3cret-tokeN"))).is_err());
        assert!(check(token, &headers(Some("Bearer s3cret"))).is_err());
        assert!(check(token, &headers(Some("Basic s3cret-token"))).is_err());
        assert!(check(token, &headers(Some("s3cret-token"))).is_err());
        assert!(check(token, &headers(Some("Bearer"))).is_err());
        assert!(check(token, &headers(None)).is_err());
    }
}

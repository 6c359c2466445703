//! The client's deadline (`grpc-timeout`), and waiting within it.
//!
//! tonic's server already races every call against the client's
//! `grpc-timeout`, but answers `CANCELLED` ("Timeout expired") when it
//! wins. The admin API promises `DEADLINE_EXCEEDED`, so each call caps its
//! own waits a little before tonic's timer ([`MARGIN`]) and answers first.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tonic::Status;
use tonic::metadata::MetadataMap;

/// How much earlier than the client's deadline a call gives up, so that its
/// `DEADLINE_EXCEEDED` reaches the client before the client's own timer
/// fires (a tonic client then reports `CANCELLED`, "Timeout expired"): a
/// tenth of the timeout, between 10 ms and 250 ms.
pub(crate) fn margin(timeout: Duration) -> Duration {
    (timeout / 10).clamp(Duration::from_millis(10), Duration::from_millis(250))
}

/// When a call must have answered, from its `grpc-timeout` metadata.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    at: Option<Instant>,
    timeout: Option<Duration>,
}

impl Deadline {
    /// The deadline of a call whose metadata is `metadata`, counted from now.
    pub(crate) fn from_metadata(metadata: &MetadataMap) -> Self {
        let timeout = metadata
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        Self {
            at: timeout.map(|t| Instant::now() + t.saturating_sub(margin(t))),
            timeout,
        }
    }

    #[cfg(test)]
    /// No deadline.
    pub(crate) fn none() -> Self {
        Self {
            at: None,
            timeout: None,
        }
    }

    /// Runs `work` until the deadline: `DEADLINE_EXCEEDED` when it passes.
    pub(crate) async fn run<T>(
        &self,
        what: &str,
        work: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let Some(at) = self.at else {
            return work.await;
        };
        match tokio::time::timeout_at(at, work).await {
            Ok(result) => result,
            Err(_) => Err(Status::deadline_exceeded(format!(
                "the call's deadline ({} ms) passed before {what}",
                self.timeout.unwrap_or_default().as_millis()
            ))),
        }
    }
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (`H`, `M`, `S`,
/// `m`, `u`, `n`), per the gRPC over HTTP/2 protocol.
pub(crate) fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "m", "123", "123456789m", "12x", "-1m", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn gives_up_at_the_deadline() {
        let mut md = MetadataMap::new();
        md.insert("grpc-timeout", "50m".parse().unwrap());
        let deadline = Deadline::from_metadata(&md);
        let err = deadline
            .run("the answers", async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
        assert!(err.message().contains("50 ms"), "{}", err.message());
        assert_eq!(margin(Duration::from_millis(50)), Duration::from_millis(10));
        assert_eq!(margin(Duration::from_secs(1)), Duration::from_millis(100));
        assert_eq!(margin(Duration::from_secs(60)), Duration::from_millis(250));
        assert_eq!(Deadline::none().run("x", async { Ok(7) }).await.unwrap(), 7);
    }
}

//! Waiting without sleeping: a condition polled until it holds, a future
//! bounded in time, both failing the test loudly at a deadline.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// The longest any single wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// How often a condition is checked again.
const POLL: Duration = Duration::from_millis(10);

/// Polls `check` until it yields a value; fails the test with `what` after
/// `limit`.
pub async fn poll_for<T, Fut>(what: &str, limit: Duration, mut check: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `condition` until it holds; fails the test with `what` after
/// [`DEADLINE`].
pub async fn eventually(what: &str, condition: impl FnMut() -> bool) {
    eventually_within(what, DEADLINE, condition).await;
}

/// Polls `condition` until it holds; fails the test with `what` after
/// `limit`.
pub async fn eventually_within(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    poll_for(what, limit, || {
        std::future::ready(condition().then_some(()))
    })
    .await;
}

/// Polls the async `condition` (a scrape, a `redis-cli` call) until it
/// holds; fails the test with `what` after [`DEADLINE`].
pub async fn eventually_async<Fut>(what: &str, mut condition: impl FnMut() -> Fut)
where
    Fut: Future<Output = bool>,
{
    poll_for(what, DEADLINE, || {
        let holds = condition();
        async move { holds.await.then_some(()) }
    })
    .await;
}

/// Runs `fut` and fails the test with `what` if it takes over [`DEADLINE`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Waits until the session `sid` of `engine` has a long-polling GET parked,
/// to order two requests of one client ("this GET is pending at the node
/// before that request is sent").
pub async fn poll_parked(engine: &gateway::Engine, sid: &str) {
    eventually("a long-polling GET parked at the node", || {
        engine.get(sid).is_some_and(|s| s.has_pending_poll())
    })
    .await;
}

//! The operations port: `GET /metrics` (Prometheus text), `/healthz` (live:
//! the process serves) and `/readyz` (ready: not draining and every
//! readiness check passing), and the [`Readiness`] state behind `/readyz`.
//!
//! Readiness checks are named flags that other parts of the node set, for
//! example the cluster bus: `readiness.set("redis", false)` while Redis is
//! unreachable. Liveness never depends on them, so an orchestrator takes a
//! node out of rotation without restarting it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::telemetry::Metrics;

/// Content type of the Prometheus text exposition format.
pub(crate) const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Default)]
struct ReadinessInner {
    draining: CancellationToken,
    /// Check name -> passing.
    checks: Mutex<BTreeMap<String, bool>>,
}

/// Whether the node should receive new clients (cheap to clone; clones
/// share the state).
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    inner: Arc<ReadinessInner>,
}

/// Why the node is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotReady {
    /// The node is shutting down.
    Draining,
    /// These checks fail.
    Failing(Vec<String>),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Draining => f.write_str("draining"),
            Self::Failing(checks) => write!(f, "failing: {}", checks.join(", ")),
        }
    }
}

impl Readiness {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Registers or updates the check `name` (e.g. `"redis"`).
    pub fn set(&self, name: &str, passing: bool) {
        let mut checks = self.inner.checks.lock();
        match checks.get_mut(name) {
            Some(v) => *v = passing,
            None => {
                checks.insert(name.to_owned(), passing);
            }
        }
    }

    /// Not ready from now on, for good: the node is shutting down.
    pub(crate) fn start_draining(&self) {
        self.inner.draining.cancel();
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.inner.draining.is_cancelled()
    }

    /// Ready, or why not.
    pub(crate) fn check(&self) -> Result<(), NotReady> {
        if self.is_draining() {
            return Err(NotReady::Draining);
        }
        let failing: Vec<String> = self
            .inner
            .checks
            .lock()
            .iter()
            .filter(|(_, passing)| !**passing)
            .map(|(name, _)| name.clone())
            .collect();
        if failing.is_empty() {
            Ok(())
        } else {
            Err(NotReady::Failing(failing))
        }
    }
}

#[derive(Clone)]
struct OpsState {
    metrics: Arc<Metrics>,
    readiness: Readiness,
}

/// The router of the operations port.
pub(crate) fn router(
    metrics: Arc<Metrics>,
    readiness: Readiness,
    admin_ui_files: Option<PathBuf>,
) -> Router {
    let router = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(OpsState { metrics, readiness });
    match admin_ui_files {
        Some(dir) => {
            let dir = Arc::new(dir);
            router
                .route(
                    "/admin-ui",
                    get(|| async { axum::response::Redirect::permanent("/admin-ui/") }),
                )
                .route(
                    "/admin-ui/",
                    get({
                        let dir = dir.clone();
                        move || static_file(dir, "index.html".to_owned())
                    }),
                )
                .route(
                    "/admin-ui/{*path}",
                    get(move |Path(path): Path<String>| static_file(dir, path)),
                )
        }
        None => router,
    }
}

/// A file of the Admin UI's built files under `dir`: only plain relative
/// paths (no `..`, no absolute path), only files.
async fn static_file(dir: Arc<PathBuf>, path: String) -> Response {
    let relative = std::path::Path::new(&path);
    let plain = relative
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain || path.is_empty() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let file = dir.join(relative);
    let content_type = match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("woff") => "font/woff",
        _ => "application/octet-stream",
    };
    match tokio::fs::read(&file).await {
        Ok(body) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn metrics_text(State(state): State<OpsState>) -> Response {
    let mut text = state.metrics.render();
    crate::telemetry::process::render(&mut text);
    ([(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], text).into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<OpsState>) -> Response {
    match state.readiness.check() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_admin_ui_files_are_served_and_nothing_outside_them() {
        let dir = std::env::temp_dir().join(format!("gateway-ui-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("js")).unwrap();
        std::fs::write(dir.join("index.html"), "<html>").unwrap();
        std::fs::write(dir.join("js/app.js"), "1").unwrap();
        let dir = Arc::new(dir);
        let index = static_file(dir.clone(), "index.html".into()).await;
        assert_eq!(index.status(), StatusCode::OK);
        assert_eq!(
            index.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let js = static_file(dir.clone(), "js/app.js".into()).await;
        assert_eq!(js.status(), StatusCode::OK);
        for outside in [
            "../etc/passwd",
            "/etc/passwd",
            "js/../../x",
            "",
            "js",
            "missing.html",
        ] {
            let r = static_file(dir.clone(), outside.into()).await;
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{outside}");
        }
        std::fs::remove_dir_all(&*dir).unwrap();
    }

    #[test]
    fn readiness_names_what_fails() {
        let r = Readiness::new();
        assert_eq!(r.check(), Ok(()));
        r.set("redis", false);
        r.set("hooks", true);
        assert_eq!(r.check(), Err(NotReady::Failing(vec!["redis".into()])));
        assert_eq!(r.check().unwrap_err().to_string(), "failing: redis");
        r.set("redis", true);
        assert_eq!(r.check(), Ok(()));
        let clone = r.clone();
        clone.start_draining();
        assert_eq!(r.check(), Err(NotReady::Draining));
        r.set("redis", true);
        assert_eq!(r.check(), Err(NotReady::Draining), "draining is for good");
    }
}

//! A node's metrics as a test reads them: rendered in process, or scraped
//! from its operations port with `/healthz` and `/readyz` beside them.

use std::time::Duration;

use tokio::time::Instant;

use super::node::TestNode;
use super::wait::{DEADLINE, poll_for};

/// The value of one series in a Prometheus text rendering (0 when absent).
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    super::scrape::value(text, name, labels).unwrap_or(0.0)
}

impl TestNode {
    /// The value of one series of the node's metrics now (0 when absent).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        value(&self.io.metrics().render(), name, labels)
    }

    /// `GET http://<ops><path>`.
    async fn ops_request(&self, path: &str) -> reqwest::Response {
        let http = self
            .ops_http
            .as_ref()
            .expect("the node serves the operations port");
        http.get(format!("http://{}{path}", self.ops_addr()))
            .timeout(DEADLINE)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `GET http://<ops><path>`: status and body.
    pub async fn ops_get(&self, path: &str) -> (u16, String) {
        let resp = self.ops_request(path).await;
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("a body"))
    }

    /// Polls `path` until it answers `status`, at most `limit`; returns the
    /// body.
    pub async fn ops_until(&self, path: &str, status: u16, limit: Duration) -> String {
        poll_for(&format!("{path} answering {status}"), limit, || async {
            let (got, body) = self.ops_get(path).await;
            (got == status).then_some(body)
        })
        .await
    }

    /// A scrape of `/metrics` (a 200 in the Prometheus text format).
    pub async fn scrape(&self) -> String {
        let resp = self.ops_request("/metrics").await;
        assert_eq!(resp.status().as_u16(), 200);
        let ctype = resp.headers()["content-type"]
            .to_str()
            .expect("an ASCII content type")
            .to_owned();
        assert!(ctype.starts_with("text/plain"), "content type {ctype}");
        resp.text().await.expect("a body")
    }

    /// Scrapes until `pred` holds on the text; fails with `what` and the
    /// last scrape after [`DEADLINE`].
    pub async fn scrape_until(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let text = self.scrape().await;
            if pred(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {what}; last scrape:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

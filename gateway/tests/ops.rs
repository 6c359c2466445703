//! The operations port of a running node, scraped over HTTP: the metric
//! names the dashboard and the alert rules use exist from startup, values
//! move with real client traffic, `/healthz` and `/readyz` answer.
//!
//! The traffic test (`metrics_follow_client_traffic`) needs the engine and
//! Socket.IO layers to call the `telemetry::Metrics` API.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gateway::Config;
use gateway::telemetry::names;
use support::eio::{PollClient, WsClient};
use support::metrics::value;
use support::node::TestNode;
use support::redis::Redis;
use support::tools::{note, skip_without_redis};

/// A node with `config` and an operations port.
async fn start(config: Config) -> TestNode {
    TestNode::builder(config).ops().start().await
}

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// The metric names of deploy/metric-names.txt (the exporter's contract).
fn listed_names() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo_root().join("deploy/metric-names.txt")).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// The metric names the Grafana dashboard and the alert rules use, as
/// extracted by deploy/checks.py (what `deploy/check.sh NAMES_FILE` writes).
/// `None` when python3 with PyYAML is not available here.
fn names_used_by_dashboard_and_rules() -> Option<BTreeSet<String>> {
    let root = repo_root();
    let out = std::env::temp_dir().join(format!("gateway-metric-names-{}", std::process::id()));
    let status = Command::new("python3")
        .current_dir(root)
        .args(["deploy/checks.py", "metrics"])
        .args(["--dashboard", "deploy/grafana/gateway-dashboard.json"])
        .args(["--rules", "deploy/prometheus/alerts.yaml"])
        .arg("--out")
        .arg(&out)
        .output()
        .ok()?;
    if !status.status.success() {
        eprintln!(
            "deploy/checks.py metrics unavailable ({}): {}",
            status.status,
            String::from_utf8_lossy(&status.stderr)
        );
        return None;
    }
    let text = std::fs::read_to_string(&out).ok()?;
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(format!("{}.raw", out.display()));
    Some(text.lines().map(str::to_owned).collect())
}

#[tokio::test]
async fn every_metric_of_the_dashboard_and_alerts_is_exported_from_startup() {
    let node = start(Config::default()).await;
    let text = node.scrape().await;
    let exported = support::scrape::names(&text);

    let mut wanted = listed_names();
    match names_used_by_dashboard_and_rules() {
        Some(used) => {
            assert!(!used.is_empty());
            for name in &used {
                assert!(
                    wanted.contains(name),
                    "{name} is used by the dashboard or the rules but not in deploy/metric-names.txt"
                );
            }
            wanted.extend(used);
        }
        None => note("checking deploy/metric-names.txt only (python3 + PyYAML missing)"),
    }
    for name in &wanted {
        if name == names::REDIS_CONNECTED {
            // Only exported when Redis is configured, so that its alert
            // stays silent on single nodes.
            assert!(!exported.contains(name), "{name} exported without Redis");
            continue;
        }
        assert!(
            exported.contains(name),
            "{name} missing from /metrics:\n{text}"
        );
    }

    // Series the dashboard selects on by label.
    assert_eq!(
        value(
            &text,
            names::BUILD_INFO,
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(
        text.contains("gateway_sockets{namespace=\"/\"} 0"),
        "{text}"
    );
    for transport in ["polling", "websocket"] {
        assert!(
            text.contains(&format!(
                "gateway_engine_connections{{transport=\"{transport}\"}} 0"
            )),
            "{text}"
        );
    }
    assert!(text.contains("gateway_disconnects_total{reason=\"shutdown\"} 0"));
    assert!(text.contains("# TYPE gateway_hook_duration_seconds histogram"));
    assert!(text.contains("gateway_hook_requests_total{hook=\"connect\",result=\"ok\"} 0"));
    assert_eq!(value(&text, names::DRAINING, &[]), 0.0);
    assert_eq!(value(&text, names::CLUSTER_NODES, &[]), 1.0);

    // With Redis configured, the cluster code enables the series.
    node.io.metrics().enable_redis();
    let text = node.scrape().await;
    assert!(
        support::scrape::names(&text).contains(names::REDIS_CONNECTED),
        "{text}"
    );
    assert!(text.contains("gateway_redis_connected 0"), "{text}");
}

#[tokio::test]
async fn process_metrics_and_the_connection_limit_are_exported() {
    let node = start(Config::from_toml("[limits]\nmax_connections = 1234").unwrap()).await;
    let text = node.scrape().await;
    assert_eq!(value(&text, "gateway_connections_limit", &[]), 1234.0);
    assert!(
        text.contains("# TYPE process_cpu_seconds_total counter"),
        "{text}"
    );
    let max_fds = value(&text, "process_max_fds", &[]);
    let open_fds = value(&text, "process_open_fds", &[]);
    assert!(
        open_fds >= 3.0 && open_fds <= max_fds,
        "{open_fds} of {max_fds}"
    );
    assert!(value(&text, "process_resident_memory_bytes", &[]) > 1_000_000.0);

    // Descriptors follow connections: each of these holds two here (the
    // client's end and the node's, in this one process).
    let addr = node.url("").split('/').nth(2).unwrap().to_owned();
    let mut held = Vec::new();
    for _ in 0..40 {
        held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    node.scrape_until("40 more descriptors", |text| {
        value(text, "process_open_fds", &[]) >= open_fds + 40.0
    })
    .await;
    drop(held);
}

#[tokio::test]
async fn health_and_readiness() {
    let node = start(Config::default()).await;
    assert_eq!(node.ops_get("/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(node.ops_get("/readyz").await, (200, "ready\n".to_owned()));

    node.readiness.set("redis", false);
    let (status, body) = node.ops_get("/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("redis"), "{body}");
    assert_eq!(
        node.ops_get("/healthz").await.0,
        200,
        "liveness ignores checks"
    );

    node.readiness.set("redis", true);
    assert_eq!(node.ops_get("/readyz").await.0, 200);
    assert_eq!(node.ops_get("/nope").await.0, 404);
}

#[tokio::test]
async fn two_nodes_in_one_process_keep_their_own_metrics() {
    let a = start(Config::default()).await;
    let b = start(Config::default()).await;
    a.io.metrics().set_redis_subscriptions(3);
    assert_eq!(
        value(&a.scrape().await, names::REDIS_SUBSCRIPTIONS, &[]),
        3.0
    );
    assert_eq!(
        value(&b.scrape().await, names::REDIS_SUBSCRIPTIONS, &[]),
        0.0
    );
}

/// Real clients on both transports move the connection, socket, traffic
/// and disconnect series.
#[tokio::test]
async fn metrics_follow_client_traffic() {
    let node = start(Config::default()).await;
    let ws = |t: &str| value(t, names::ENGINE_CONNECTIONS, &[("transport", "websocket")]);
    let polling = |t: &str| value(t, names::ENGINE_CONNECTIONS, &[("transport", "polling")]);
    let sockets = |t: &str| value(t, names::SOCKETS, &[("namespace", "/")]);

    let (mut a, _) = WsClient::socket(&node, false).await;
    let (b, _) = WsClient::socket(&node, false).await;
    let (p, _) = PollClient::socket(&node).await;
    let text = node
        .scrape_until("three connections", |t| ws(t) == 2.0 && polling(t) == 1.0)
        .await;
    assert_eq!(sockets(&text), 3.0);
    assert_eq!(value(&text, names::CONNECTS, &[("namespace", "/")]), 3.0);
    assert!(
        value(
            &text,
            names::PACKETS_RECEIVED,
            &[("transport", "websocket")]
        ) >= 2.0
    );
    assert!(value(&text, names::PACKETS_SENT, &[("transport", "polling")]) >= 1.0);
    assert!(value(&text, names::BYTES_SENT, &[("transport", "websocket")]) > 0.0);

    // A room with both WebSocket clients; a publish reaches the other one.
    a.send("42[\"$join\",\"r\"]").await;
    let mut b = b;
    b.send("421[\"$join\",\"r\"]").await;
    assert!(b.recv_text().await.starts_with("431"));
    a.send("422[\"$publish\",\"r\",\"hello\",1]").await;
    let text = node
        .scrape_until("a broadcast", |t| {
            value(t, "gateway_broadcast_fanout_count", &[]) >= 1.0
        })
        .await;
    assert_eq!(value(&text, names::ROOMS, &[("namespace", "/")]), 1.0);
    assert!(value(&text, names::DELIVERIES, &[]) >= 1.0);

    // Unknown namespace: a connect error without a client-chosen label.
    a.send("40/nope,").await;
    node.scrape_until("the connect error", |t| {
        value(
            t,
            names::CONNECT_ERRORS,
            &[("namespace", "unknown"), ("reason", "invalid_namespace")],
        ) == 1.0
    })
    .await;

    // Goodbyes: a WebSocket close and a polling close packet.
    b.close().await;
    p.post_ok("1").await;
    let text = node
        .scrape_until("two connections closed", |t| {
            ws(t) == 1.0 && polling(t) == 0.0
        })
        .await;
    assert_eq!(sockets(&text), 1.0);
    assert_eq!(
        value(&text, names::DISCONNECTS, &[("reason", "transport_close")])
            + value(&text, names::DISCONNECTS, &[("reason", "client_close")]),
        2.0,
        "{text}"
    );
    drop(a);
}

/// Spans reach an OTLP/gRPC receiver (a local collector stand-in) with the
/// configured service name, and an admin call's span continues the trace
/// its caller's context names (as `traceparent` metadata carries it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp() {
    use gateway::telemetry::trace::{otel_layer, otlp_provider};
    use gateway::telemetry::{AdminMethod, TraceContext, admin_span};
    use tracing_subscriber::layer::SubscriberExt;

    let receiver = support::otlp::Receiver::start().await;
    let provider = otlp_provider(&receiver.endpoint, "gateway-test").unwrap();
    let subscriber = tracing_subscriber::registry().with(otel_layer(&provider));
    let carried = tracing::subscriber::with_default(subscriber, || {
        let caller = tracing::info_span!("caller");
        let cx = {
            let _entered = caller.enter();
            TraceContext::current().expect("traced")
        };
        let admin = admin_span(AdminMethod::Emit);
        assert!(
            cx.set_as_parent_of(&admin),
            "the caller's context is usable"
        );
        drop(admin);
        drop(caller);
        cx
    });
    let flushed = tokio::task::spawn_blocking(move || {
        let flushed = provider.force_flush();
        let _ = provider.shutdown();
        flushed
    })
    .await
    .unwrap();
    flushed.expect("the receiver accepted the spans");

    let spans = receiver.spans();
    for s in &spans {
        assert_eq!(s.service, "gateway-test", "service.name");
    }
    let names: Vec<&str> = spans.iter().map(|s| s.span.name.as_str()).collect();
    assert!(
        names.contains(&"Emit") && names.contains(&"caller"),
        "{names:?}"
    );
    let trace_ids: BTreeSet<String> = spans.iter().map(|s| s.trace_id()).collect();
    assert_eq!(trace_ids.len(), 1, "one trace: {names:?}");
    assert!(carried.traceparent.starts_with("00-"));
}

/// With Redis configured, `gateway_redis_connected` is exported and
/// `/readyz` follows the Redis connection (liveness does not).
#[tokio::test]
async fn readiness_follows_redis() {
    if skip_without_redis() {
        return;
    }
    let mut redis = Redis::start().await;
    let mut config = Config::default();
    config.cluster.redis_url = Some(redis.url());
    let node = start(config).await;
    // Connecting to Redis again may take the client a few attempts.
    let reconnect = Duration::from_secs(10);
    node.ops_until("/readyz", 200, reconnect).await;
    node.scrape_until("redis connected", |t| {
        value(t, names::REDIS_CONNECTED, &[]) == 1.0
    })
    .await;

    redis.stop();
    let body = node.ops_until("/readyz", 503, reconnect).await;
    assert!(body.contains("redis"), "{body}");
    assert_eq!(node.ops_get("/healthz").await.0, 200);
    node.scrape_until("redis disconnected", |t| {
        t.contains("gateway_redis_connected 0")
    })
    .await;

    redis.restart().await;
    node.ops_until("/readyz", 200, reconnect).await;
}

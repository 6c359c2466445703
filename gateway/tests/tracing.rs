//! Traces across processes: two `gateway` binaries over one Redis, each
//! exporting spans over OTLP to a receiver in this test. An admin `Emit`
//! on node 1, made in the test's trace, and its delivery on node 2 form one
//! trace; a hook call carries its `traceparent` to the hooks backend; and
//! a JSON log line written inside a traced span carries the span's ids.

mod hooks_support;
mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gateway_proto::admin::v1 as pb;
use gateway_proto::common::v1::Payload;
use serde_json::json;
use support::otlp::{Received, Receiver, hex};
use support::process::Running;
use support::redis::Redis;
use support::sio::{AckMode, SioClient};
use support::tempdir::TempDir;
use support::tools::skip_without_redis;
use support::wait::{DEADLINE, poll_for};

/// How long the spans may take to arrive: the nodes export in batches
/// every 200 ms (`OTEL_BSP_SCHEDULE_DELAY`), on a machine that may be busy.
const EXPORTED: Duration = Duration::from_secs(20);

/// A node of the cluster as a process: JSON logs, the debug lines of the
/// Socket.IO layer (where a traced delivery logs), spans to `receiver`.
fn start_node(node_id: &str, redis: &Redis, receiver: &Receiver, config: Option<&str>) -> Running {
    let redis_url = redis.url();
    let service = format!("gateway-{node_id}");
    let env = [
        ("GATEWAY_SERVER__LISTEN", "127.0.0.1:0"),
        ("GATEWAY_ADMIN__LISTEN", "127.0.0.1:0"),
        ("GATEWAY_CLUSTER__NODE_ID", node_id),
        ("GATEWAY_CLUSTER__REDIS_URL", redis_url.as_str()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
        ("OTEL_SERVICE_NAME", service.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ("RUST_LOG", "info,gateway::socketio=debug"),
    ];
    let mut args = vec!["--log-format", "json"];
    if let Some(path) = config {
        args.extend(["--config", path]);
    }
    Running::start(&args, &env)
}

/// A trace id of this run (32 hex digits, not all zero).
fn fresh_trace_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:032x}", nanos ^ (u128::from(std::process::id()) << 64))
}

/// The first received span of `service` named `name` in `trace_id`.
async fn exported(receiver: &Receiver, service: &str, name: &str, trace_id: &str) -> Received {
    let what = format!("span {name:?} of {service} in trace {trace_id}");
    poll_for(&what, EXPORTED, || async {
        receiver
            .spans()
            .into_iter()
            .find(|s| s.service == service && s.span.name == name && s.trace_id() == trace_id)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emit_and_its_delivery_on_another_node_are_one_trace() {
    if skip_without_redis() {
        return;
    }
    let redis = Redis::start().await;
    let receiver = Receiver::start().await;
    let backend = hooks_support::Backend::start().await;
    let dir = TempDir::new("tracing");
    let config = dir.path().join("node2.toml");
    std::fs::write(
        &config,
        format!(
            "[[namespaces]]\nname = \"/\"\n[namespaces.hooks]\nurl = \"{}\"\n\
             events = false\ndisconnect = false\n",
            backend.url()
        ),
    )
    .unwrap();
    let node1 = start_node("trcA01", &redis, &receiver, None);
    let node2 = start_node("trcB02", &redis, &receiver, config.to_str());
    let admin_addr = node1.json_line("gateway started", DEADLINE).await["admin"]
        .as_str()
        .unwrap()
        .to_owned();
    let client_addr = node2.json_line("gateway started", DEADLINE).await["client"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // A client of node 2, put in `lobby` by the hooks backend's OnConnect.
    let mut client = SioClient::connect_with(
        client_addr,
        "/",
        AckMode::Echo,
        Some(json!({"name": "ana"})),
    )
    .await;

    // The OnConnect call carried the context of its `hook` span, and that
    // span was exported by node 2.
    let traceparents = backend.state.traceparents();
    assert_eq!(traceparents.len(), 1, "{traceparents:?}");
    let parts: Vec<&str> = traceparents[0].split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparents:?}");
    let hook = exported(&receiver, "gateway-trcB02", "OnConnect", parts[1]).await;
    assert_eq!(hook.span_id(), parts[2], "the hook span is the parent sent");
    assert_eq!(hook.attribute("namespace").as_deref(), Some("/"));

    // An Emit to `lobby` on node 1, in the test's trace, until node 2 is
    // subscribed to the room (the emit then reaches one other node).
    let trace_id = fresh_trace_id();
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{admin_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let admin = pb::admin_client::AdminClient::new(channel);
    let emit = || {
        let mut request = tonic::Request::new(pb::EmitRequest {
            target: Some(pb::Target {
                namespace: "/".to_owned(),
                rooms: vec!["lobby".to_owned()],
                ..Default::default()
            }),
            event: "news".to_owned(),
            payload: Some(Payload {
                json_args: r#"["traced"]"#.to_owned(),
                attachments: vec![],
            }),
            volatile: false,
        });
        request
            .metadata_mut()
            .insert("traceparent", traceparent.parse().unwrap());
        request
    };
    poll_for("an emit that reaches node 2", DEADLINE, || {
        let mut admin = admin.clone();
        let request = emit();
        async move {
            let reached = admin.emit(request).await.expect("emit").into_inner();
            (reached.nodes_reached >= 1).then_some(())
        }
    })
    .await;
    let (event, args, _) = client.event().await;
    assert_eq!((event.as_str(), args), ("news", vec![json!("traced")]));

    // Node 1's admin span and node 2's delivery: one trace, the test's,
    // the delivery a child of the admin call.
    let emitted = exported(&receiver, "gateway-trcA01", "Emit", &trace_id).await;
    assert_eq!(hex(&emitted.span.parent_span_id), "00f067aa0ba902b7");
    let delivered = exported(&receiver, "gateway-trcB02", "deliver", &trace_id).await;
    assert_eq!(hex(&delivered.span.parent_span_id), emitted.span_id());
    assert_eq!(delivered.attribute("namespace").as_deref(), Some("/"));
    assert_eq!(delivered.attribute("recipients").as_deref(), Some("1"));

    // Node 2's log line inside the delivery carries its ids.
    let line = node2
        .json_line("traced broadcast delivered", DEADLINE)
        .await;
    assert_eq!(line["trace_id"], trace_id.as_str(), "{line}");
    assert_eq!(line["span_id"], delivered.span_id().as_str(), "{line}");
    assert_eq!(line["node_id"], "trcB02", "{line}");
    // Lines outside any traced span carry none.
    let started = node2.json_line("gateway started", DEADLINE).await;
    assert!(started.get("trace_id").is_none(), "{started}");
}

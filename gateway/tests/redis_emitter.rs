//! The Socket.IO Redis emitter's messages over Redis Cluster: two nodes on
//! a real three-master Redis Cluster receive what a backend publishes on
//! the emitter's channels (classic `PUBLISH`, which Redis Cluster carries
//! to every shard); a request (`socketsJoin`) is applied on the node that
//! has the sockets. The message bytes are made here in
//! the emitter's format (MessagePack `[uid, packet, opts]`, JSON requests);
//! the real emitter against standalone Redis is tested in
//! `tests/js/test/redis_emitter.test.js`.
//!
//! Needs `redis-server` and `redis-cli` (skipped without them, unless
//! GATEWAY_TESTS_REQUIRE_ALL=1).

mod support;

use fred::interfaces::{ClientLike, PubsubInterface};
use rmpv::Value as Mp;
use support::node::{TestNode, config, until_clustered};
use support::redis::RedisCluster;
use support::sio::{AckMode, SioClient};
use support::tools::skip_without_redis;
use support::wait::DEADLINE;
use tokio::time::Instant;

/// How long a warm-up waits for its event before publishing again.
const STEP: std::time::Duration = std::time::Duration::from_millis(200);

/// An emit as `@socket.io/redis-emitter` 5.x publishes it.
fn emit(event: &str, args: Vec<Mp>, rooms: &[&str], except: &[&str]) -> Vec<u8> {
    let mut data = vec![Mp::from(event)];
    data.extend(args);
    let list = |names: &[&str]| Mp::Array(names.iter().map(|n| Mp::from(*n)).collect());
    let message = Mp::Array(vec![
        Mp::from("emitter"),
        Mp::Map(vec![
            (Mp::from("type"), Mp::from(2)),
            (Mp::from("data"), Mp::Array(data)),
            (Mp::from("nsp"), Mp::from("/")),
        ]),
        Mp::Map(vec![
            (Mp::from("rooms"), list(rooms)),
            (Mp::from("flags"), Mp::Map(vec![])),
            (Mp::from("except"), list(except)),
        ]),
    ]);
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &message).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emitter_messages_reach_both_nodes_over_redis_cluster() {
    if skip_without_redis() {
        return;
    }
    let cluster = RedisCluster::start(3).await;
    let start = || async {
        let mut config = config(
            r#"
            [[namespaces]]
            name = "/"
            join = ["*"]
            "#,
        );
        config.cluster.redis_url = Some(cluster.url());
        TestNode::builder(config).start().await
    };
    let (n1, n2) = (start().await, start().await);
    until_clustered(&[&n1, &n2]).await;
    let mut a = SioClient::connect(n1.addr, "/", AckMode::Echo).await;
    let mut b = SioClient::connect(n2.addr, "/", AckMode::Echo).await;
    let mut c = SioClient::connect(n2.addr, "/", AckMode::Echo).await;
    a.join("r").await;
    b.join("r").await;

    let publisher = fred::types::Builder::from_config(
        fred::types::config::Config::from_url(&cluster.url()).unwrap(),
    )
    .build()
    .unwrap();
    publisher.init().await.unwrap();
    let publish = |channel: &'static str, bytes: Vec<u8>| {
        let publisher = publisher.clone();
        async move {
            let _: i64 = publisher.publish(channel, bytes).await.unwrap();
        }
    };

    // Each node's ingest subscribes on a connection of its own: warm up
    // until both receive.
    let deadline = Instant::now() + DEADLINE * 3;
    let (mut on_a, mut on_b) = (false, false);
    while !(on_a && on_b) {
        assert!(Instant::now() < deadline, "both nodes receive the emitter");
        publish("socket.io#/#", emit("warmup", vec![], &[], &[])).await;
        on_a |= a
            .event_within(STEP)
            .await
            .is_some_and(|(e, _)| e == "warmup");
        on_b |= b
            .event_within(STEP)
            .await
            .is_some_and(|(e, _)| e == "warmup");
    }
    // Warm-ups still on their way are passed over by the marker below.
    publish("socket.io#/#", emit("mark0", vec![], &[], &[])).await;
    for s in [&mut a, &mut b, &mut c] {
        s.events_until("mark0").await;
    }

    // On Redis Cluster each channel's messages keep their order, but two
    // channels may live on two shards: what is published on different
    // channels may arrive in either order (as with Node's adapter). Each
    // step is therefore awaited on its own.
    publish(
        "socket.io#/#r#",
        emit("to-r", vec![Mp::from(1)], &["r"], &[]),
    )
    .await;
    for s in [&mut a, &mut b] {
        let (name, args) = s.event_within(DEADLINE).await.expect("to-r arrives");
        assert_eq!((name.as_str(), args), ("to-r", vec![serde_json::json!(1)]));
    }
    publish("socket.io#/#", emit("not-r", vec![], &[], &["r"])).await;
    publish("socket.io#/#", emit("mark1", vec![], &[], &[])).await;
    assert_eq!(a.events_until("mark1").await, ["mark1"]);
    assert_eq!(b.events_until("mark1").await, ["mark1"]);
    assert_eq!(c.events_until("mark1").await, ["not-r", "mark1"]);

    // socketsJoin (sockets not in r join s), then emits to s until the
    // join, published on another channel, has been applied.
    publish(
        "socket.io-request#/#",
        br#"{"type":2,"opts":{"rooms":[],"except":["r"]},"rooms":["s"]}"#.to_vec(),
    )
    .await;
    let deadline = Instant::now() + DEADLINE * 3;
    loop {
        assert!(Instant::now() < deadline, "the join reaches node 2");
        publish("socket.io#/#s#", emit("to-s", vec![], &["s"], &[])).await;
        if c.event_within(STEP).await.is_some_and(|(e, _)| e == "to-s") {
            break;
        }
    }
    publish("socket.io#/#", emit("mark2", vec![], &[], &[])).await;
    for s in [&mut a, &mut b] {
        let events = s.events_until("mark2").await;
        assert!(!events.iter().any(|e| e == "to-s"), "{events:?}");
    }
    let _ = publisher.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_arguments_arrive_as_attachments() {
    if skip_without_redis() {
        return;
    }
    let (redis, _node, mut a) = node_receiving_the_emitter(
        r#"
        [[namespaces]]
        name = "/"
        "#,
    )
    .await;
    let bytes = emit(
        "bin",
        vec![Mp::Map(vec![(Mp::from("b"), Mp::Binary(vec![1, 2, 3]))])],
        &[],
        &[],
    );
    // Whole: the placeholder and its attachment.
    publish_bytes(&redis, "socket.io#/#", &bytes);
    let (name, args, attachments) = loop {
        let e = a.event().await;
        if e.0 == "bin" {
            break e;
        }
    };
    assert_eq!(name, "bin");
    assert_eq!(
        args,
        [serde_json::json!({ "b": { "_placeholder": true, "num": 0 } })]
    );
    assert_eq!(attachments, [bytes::Bytes::from_static(&[1, 2, 3])]);
}

/// A node configured by `toml` over a standalone Redis of its own, and a
/// client of it that got an emit from the emitter's channel (so the node's
/// subscription is up).
async fn node_receiving_the_emitter(toml: &str) -> (support::redis::Redis, TestNode, SioClient) {
    let redis = support::redis::Redis::start().await;
    let mut config = config(toml);
    config.cluster.redis_url = Some(redis.url());
    let node = TestNode::builder(config).start().await;
    let mut client = SioClient::connect(node.addr, "/", AckMode::Echo).await;
    let warm = emit("warm", vec![], &[], &[]);
    let deadline = Instant::now() + DEADLINE * 3;
    loop {
        assert!(Instant::now() < deadline, "the node receives the emitter");
        publish_bytes(&redis, "socket.io#/#", &warm);
        if client
            .event_within(STEP)
            .await
            .is_some_and(|(e, _)| e == "warm")
        {
            return (redis, node, client);
        }
    }
}

/// PUBLISH of raw bytes through `redis-cli -x` (the message on stdin).
fn publish_bytes(redis: &support::redis::Redis, channel: &str, bytes: &[u8]) {
    use std::io::Write;
    let port = redis.url().rsplit(':').next().unwrap().to_owned();
    let mut child = std::process::Command::new("redis-cli")
        .args(["-p", &port, "-x", "PUBLISH", channel])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_max_payload_is_counted_and_not_delivered() {
    if skip_without_redis() {
        return;
    }
    let (redis, node, mut a) = node_receiving_the_emitter(
        r#"
        [server]
        max_payload = 1000
        [[namespaces]]
        name = "/"
        "#,
    )
    .await;
    let large = emit("large", vec![Mp::from("x".repeat(2000))], &[], &[]);
    publish_bytes(&redis, "socket.io#/#", &large);
    publish_bytes(&redis, "socket.io#/#", &emit("after", vec![], &[], &[]));
    let events = a.events_until("after").await;
    assert!(!events.iter().any(|e| e == "large"), "{events:?}");
    let text = node.io.metrics().render();
    assert!(
        text.contains(r#"gateway_emitter_messages_total{kind="emit",result="malformed"} 1"#),
        "{text}"
    );
}

//! Long-polling without sticky sessions: a polling request for a session
//! another node owns (its session id names the node) is forwarded to that
//! node's internal listener, with the cluster's secret, and answered as if
//! it had reached the owner. Nodes over a real Redis (each test starts its
//! own `redis-server`).

mod support;

use std::time::Duration;

use gateway::socketio::{Payload, Target};
use serde_json::json;
use support::eio::{PollClient, connect_reply_sid, http_client, packets, send};
use support::node::{TestNode, config, until_clustered};
use support::redis::Redis;
use support::tools::skip_without_redis;
use support::wait::eventually_async;

const SECRET: &str = "a-cluster-secret-of-the-test";

/// A node on `redis` with forwarding on (a secret and an internal
/// listener) or off.
async fn node(redis: &Redis, forwarding: bool) -> TestNode {
    let mut config = config(
        r#"
        [server]
        ping_interval_ms = 1000
        ping_timeout_ms = 1000
        max_payload = 10000
        [cluster]
        heartbeat_interval_ms = 200
        node_timeout_ms = 1000
        [limits]
        rate_limit_per_sec = 0
        "#,
    );
    config.cluster.redis_url = Some(redis.url());
    let builder = if forwarding {
        config.cluster.secret = Some(SECRET.into());
        TestNode::builder(config).internal().ops()
    } else {
        TestNode::builder(config).ops()
    };
    builder.start().await
}

/// Waits until `via` forwards requests for `owner`'s sessions (it heard
/// the owner's internal address with a heartbeat).
async fn until_forwarding(via: &TestNode, owner: &TestNode) {
    let (probe, _) = PollClient::open(owner).await;
    let through = PollClient::for_sid(via, &probe.sid);
    eventually_async("the other node to forward", || async {
        through.post("6").await == (200, "ok".to_owned())
    })
    .await;
}

#[tokio::test]
async fn polling_requests_reach_the_owner_through_any_node() {
    if skip_without_redis() {
        return;
    }
    let redis = Redis::start().await;
    let (n1, n2) = (node(&redis, true).await, node(&redis, true).await);
    until_clustered(&[&n1, &n2]).await;
    until_forwarding(&n2, &n1).await;

    // The handshake on n1; every later request through n2.
    let (direct, _) = PollClient::open(&n1).await;
    assert!(direct.sid.starts_with(&n1.node_id()));
    let client = PollClient::for_sid(&n2, &direct.sid);
    client.post_ok("40").await;
    let sid = connect_reply_sid(&client.recv_packets(1).await[0], "/");
    assert!(n1.io.socket("/", &sid).is_some(), "the socket lives on n1");
    assert!(n2.io.socket("/", &sid).is_none());

    // Server to client: a poll through n2 gets what n1 queued.
    n1.io
        .emit(
            "/",
            &Target::socket(sid.clone()),
            "hello",
            &Payload::from_values(&[json!("x")]),
        )
        .await
        .unwrap();
    assert_eq!(client.recv_packets(1).await, ["42[\"hello\",\"x\"]"]);
    // Client to server, with an ack, through n2.
    client.post_ok("420[\"$join\",\"r\"]").await;
    assert_eq!(client.recv_packets(1).await, ["430[{\"ok\":true}]"]);
    assert!(n1.io.socket("/", &sid).unwrap().in_room("r"));
    // A long poll waiting through n2 is answered by n1's emit.
    let waiting = {
        let client = PollClient::for_sid(&n2, &direct.sid);
        tokio::spawn(async move { client.get().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    n2.io
        .emit(
            "/",
            &Target::room("r"),
            "room",
            &Payload::from_values(&[json!(1)]),
        )
        .await
        .unwrap();
    let (status, body) = waiting.await.unwrap();
    assert_eq!(status, 200);
    assert!(
        packets(&body).contains(&"42[\"room\",1]".to_owned()),
        "{body:?}"
    );
    let ok = n2.metric("gateway_forwarded_requests_total", &[("result", "ok")]);
    assert!(ok >= 5.0, "forwarded requests counted: {ok}");

    // Limits hold through forwarding: a body over max_payload is refused by
    // the node that reads it.
    let (status, body) = client.post("4".repeat(20_000)).await;
    assert_eq!(status, 413, "{body}");

    // A session no node has: the answer of a missing session, from either.
    let (status, body) = PollClient::for_sid(&n2, "nobody").get().await;
    assert_eq!((status, body.contains("\"code\":1")), (400, true), "{body}");
    let made_up = format!("{}AAAAAAAAAAAAAA", n1.node_id());
    let (status, _) = PollClient::for_sid(&n2, &made_up).get().await;
    assert_eq!(status, 400);

    // The owner gone: a normal disconnect (the session is unknown).
    n1.stop().await;
    let (status, body) = client.get().await;
    assert!(
        status == 400 || packets(&body).iter().any(|p| p == "1"),
        "{status} {body}"
    );
    n2.stop().await;
}

#[tokio::test]
async fn the_internal_listener_refuses_requests_without_the_secret() {
    if skip_without_redis() {
        return;
    }
    let redis = Redis::start().await;
    let n1 = node(&redis, true).await;
    let (direct, _) = PollClient::open(&n1).await;
    let url = format!(
        "http://{}/socket.io/?EIO=4&transport=polling&sid={}",
        n1.internal_addr(),
        direct.sid
    );
    let http = http_client();
    for forged in [None, Some("wrong"), Some("a-cluster-secret-of-the-tesT")] {
        let mut request = http.get(&url);
        if let Some(secret) = forged {
            request = request.header("x-gateway-forwarded", secret);
        }
        let (status, body) = send(request).await;
        assert_eq!(status, 403, "{forged:?}: {body}");
    }
    // With the secret, it is served.
    let (status, _) = send(
        http.post(&url)
            .header("x-gateway-forwarded", SECRET)
            .body("6"),
    )
    .await;
    assert_eq!(status, 200);
    n1.stop().await;
}

#[tokio::test]
async fn without_forwarding_another_nodes_session_is_unknown() {
    if skip_without_redis() {
        return;
    }
    let redis = Redis::start().await;
    let (n1, n2) = (node(&redis, false).await, node(&redis, false).await);
    until_clustered(&[&n1, &n2]).await;
    let (direct, _) = PollClient::open(&n1).await;
    let (status, body) = PollClient::for_sid(&n2, &direct.sid).get().await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Session ID unknown"), "{body}");
    n1.stop().await;
    n2.stop().await;
}

//! The admin gRPC API, driven by real tonic clients against real nodes whose
//! sockets are real Socket.IO clients over WebSocket.
//!
//! - one node: every call, every error code, the token, TLS, reflection,
//!   deadlines, the call counts;
//! - three nodes on a shared in-process broker, and three nodes on a Redis
//!   server of the test's own: emits across nodes exactly once, acks
//!   gathered across nodes, join/leave/disconnect by selector, fetch and
//!   room lists, the node list, a node that stops answering, and Redis going
//!   down (`UNAVAILABLE`, local delivery kept).

mod admin_support;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use admin_support::{Admin, config};
use gateway::Config;
use gateway::cluster::{LocalBroker, LocalBus};
use gateway_proto::admin::v1 as pb;
use gateway_proto::common::v1::Payload;
use serde_json::{Value, json};
use support::node::{TestNode, until_clustered};
use support::redis::Redis;
use support::sio::{AckMode, Incoming, SioClient};
use support::tempdir::TempDir;
use support::tools::skip_without_redis;
use support::wait::{eventually_within, poll_for};
use tonic::Code;

// ---------------------------------------------------------------- helpers

/// A node with `config` and its admin API, on the bus `config` names.
async fn start(config: Config) -> TestNode {
    TestNode::builder(config).admin().start().await
}

fn target(nsp: &str, rooms: &[&str], ids: &[&str]) -> Option<pb::Target> {
    Some(pb::Target {
        namespace: nsp.to_owned(),
        rooms: rooms.iter().map(|s| s.to_string()).collect(),
        socket_ids: ids.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
}

fn payload(json: &str) -> Option<Payload> {
    Some(Payload {
        json_args: json.to_owned(),
        attachments: vec![],
    })
}

fn emit(t: Option<pb::Target>, event: &str, json: &str) -> pb::EmitRequest {
    pb::EmitRequest {
        target: t,
        event: event.to_owned(),
        payload: payload(json),
        volatile: false,
    }
}

async fn send(admin: &mut Admin, req: pb::EmitRequest) -> u32 {
    admin
        .emit(req)
        .await
        .expect("emit")
        .into_inner()
        .nodes_reached
}

/// Emits `event` then `marker` to the same target.
async fn emit_then_marker(admin: &mut Admin, t: Option<pb::Target>, event: &str) -> u32 {
    let reached = send(admin, emit(t.clone(), event, r#"["x"]"#)).await;
    send(admin, emit(t, "marker", "[]")).await;
    reached
}

/// The events a client gets up to the marker: `expected` exactly, so no
/// duplicate and nothing that was not meant for it.
async fn expect_events(client: &mut SioClient, expected: &[&str]) {
    let last = expected.last().expect("a marker");
    let got = client.events_until(last).await;
    assert_eq!(got, expected, "events of {}", client.id);
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn ids<'a>(clients: impl IntoIterator<Item = &'a SioClient>) -> Vec<String> {
    sorted(clients.into_iter().map(|c| c.id.clone()).collect())
}

async fn fetch(admin: &mut Admin, t: Option<pb::Target>) -> pb::FetchSocketsResponse {
    admin
        .fetch_sockets(pb::FetchSocketsRequest { target: t })
        .await
        .expect("fetch sockets")
        .into_inner()
}

async fn fetch_ids(admin: &mut Admin, t: Option<pb::Target>) -> Vec<String> {
    let r = fetch(admin, t).await;
    assert!(
        r.missing_node_ids.is_empty(),
        "missing {:?}",
        r.missing_node_ids
    );
    sorted(r.sockets.into_iter().map(|s| s.id).collect())
}

async fn rooms_of(admin: &mut Admin, nsp: &str, own: bool) -> Vec<(String, u32)> {
    let r = admin
        .list_rooms(pb::ListRoomsRequest {
            namespace: nsp.to_owned(),
            include_socket_rooms: own,
        })
        .await
        .expect("list rooms")
        .into_inner();
    assert!(r.missing_node_ids.is_empty());
    r.rooms.into_iter().map(|r| (r.name, r.members)).collect()
}

fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> tonic::Status {
    r.expect_err("the call fails")
}

fn assert_code<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, tonic::Status>,
    expected: Code,
    message: &str,
) {
    let status = code(r);
    assert_eq!(status.code(), expected, "{status:?}");
    assert!(
        status.message().contains(message),
        "message {:?} lacks {message:?}",
        status.message()
    );
}

// ------------------------------------------------------------- one node

#[tokio::test]
async fn one_node_serves_every_call() {
    let node = start(config("")).await;
    let mut admin = node.admin().await;
    let mut a = SioClient::connect(node.addr, "/", AckMode::Echo).await;
    let mut b = SioClient::connect(node.addr, "/", AckMode::Manual).await;
    a.join("lobby").await;
    b.join("lobby").await;
    b.join("vip").await;

    // Emit: to a room, to nobody, with an except, to the whole namespace.
    let t = target("", &["lobby"], &[]);
    assert_eq!(emit_then_marker(&mut admin, t, "hello").await, 1);
    expect_events(&mut a, &["hello", "marker"]).await;
    expect_events(&mut b, &["hello", "marker"]).await;
    assert_eq!(
        send(
            &mut admin,
            emit(target("/", &["empty-room"], &[]), "x", "[]")
        )
        .await,
        0,
        "nobody can receive it"
    );
    let mut except = target("/", &["lobby"], &[]).unwrap();
    except.except_socket_ids = vec![b.id.clone()];
    send(&mut admin, emit(Some(except), "not-b", "[]")).await;
    send(&mut admin, emit(target("/", &[], &[]), "everyone", "[]")).await;
    expect_events(&mut a, &["not-b", "everyone"]).await;
    expect_events(&mut b, &["everyone"]).await;
    let mut except = target("/", &[], &[]).unwrap();
    except.except_rooms = vec!["vip".into()];
    send(&mut admin, emit(Some(except), "not-vip", "[]")).await;
    send(&mut admin, emit(None, "unset-target", "[]")).await;
    expect_events(&mut a, &["not-vip", "unset-target"]).await;
    expect_events(&mut b, &["unset-target"]).await;

    // Payloads: key order kept, binary attachments, empty arguments.
    let binary = pb::EmitRequest {
        target: target("/", &[], &[&a.id]),
        event: "file".into(),
        payload: Some(Payload {
            json_args: r#"["a.png",{"_placeholder":true,"num":0},{"z":1,"a":2}]"#.into(),
            attachments: vec![vec![1, 2, 3]],
        }),
        volatile: true,
    };
    assert_eq!(send(&mut admin, binary).await, 1);
    let (name, args, attachments) = a.event().await;
    assert_eq!(name, "file");
    assert_eq!(args[0], "a.png");
    assert_eq!(
        serde_json::to_string(&args[2]).unwrap(),
        r#"{"z":1,"a":2}"#,
        "key order kept"
    );
    assert_eq!(attachments, vec![bytes::Bytes::from_static(&[1, 2, 3])]);
    send(
        &mut admin,
        pb::EmitRequest {
            target: target("/", &[], &[&a.id]),
            event: "bare".into(),
            payload: None,
            volatile: false,
        },
    )
    .await;
    let (name, args, _) = a.event().await;
    assert_eq!((name.as_str(), args.len()), ("bare", 0));

    // EmitWithAck: a answers, b never does.
    let started = Instant::now();
    let r = admin
        .emit_with_ack(pb::EmitWithAckRequest {
            target: target("/", &["lobby"], &[]),
            event: "question".into(),
            payload: payload(r#"["q",{"n":1}]"#),
            timeout_ms: 500,
        })
        .await
        .expect("emit with ack")
        .into_inner();
    assert!(started.elapsed() >= Duration::from_millis(450));
    assert_eq!(r.acks.len(), 1);
    assert_eq!(r.acks[0].socket_id, a.id);
    let answer: Value =
        serde_json::from_str(&r.acks[0].payload.as_ref().unwrap().json_args).unwrap();
    assert_eq!(answer, json!([a.id, "q", {"n": 1}]));
    assert_eq!(r.timed_out_socket_ids, vec![b.id.clone()]);
    assert!(r.missing_node_ids.is_empty());
    for c in [&mut a, &mut b] {
        let (name, _, _) = c.event().await;
        assert_eq!(name, "question");
    }

    // FetchSockets: everything a socket has.
    let r = fetch(&mut admin, target("/", &["vip"], &[])).await;
    assert_eq!(r.sockets.len(), 1);
    let s = &r.sockets[0];
    assert_eq!(s.id, b.id);
    assert_eq!(s.namespace, "/");
    assert_eq!(
        sorted(s.rooms.clone()),
        sorted(vec![b.id.clone(), "lobby".into(), "vip".into()])
    );
    assert_eq!(s.rooms[0], b.id, "own-id room first");
    assert_eq!(s.node_id, node.node_id());
    assert_eq!(s.transport, "websocket");
    assert_eq!((s.user_id.as_str(), s.data.as_str()), ("", ""));
    let since = s.connected_at.expect("connected_at").seconds;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now - 60..=now).contains(&since),
        "connected_at {since} vs now {now}"
    );
    assert_eq!(
        fetch_ids(&mut admin, target("/", &[], &[])).await,
        ids([&a, &b])
    );
    assert_eq!(
        fetch_ids(&mut admin, target("/chat", &[], &[])).await,
        Vec::<String>::new()
    );

    // JoinRooms / LeaveRooms by socket id and by room.
    let r = admin
        .join_rooms(pb::JoinRoomsRequest {
            target: target("/", &[], &[&a.id]),
            rooms: vec!["x".into(), "y".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.matched_sockets, r.missing_node_ids.len()), (1, 0));
    assert_eq!(
        fetch_ids(&mut admin, target("/", &["x"], &[])).await,
        ids([&a])
    );
    let r = admin
        .join_rooms(pb::JoinRoomsRequest {
            target: target("/", &["lobby"], &[]),
            rooms: vec!["x".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.matched_sockets, 2, "one already in the room counts too");
    assert_eq!(
        rooms_of(&mut admin, "", false).await,
        vec![
            ("lobby".into(), 2),
            ("vip".into(), 1),
            ("x".into(), 2),
            ("y".into(), 1)
        ]
    );
    let r = admin
        .leave_rooms(pb::LeaveRoomsRequest {
            target: target("/", &["x"], &[]),
            rooms: vec!["x".into(), "y".into(), a.id.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.matched_sockets, 2);
    assert_eq!(
        fetch_ids(&mut admin, target("/", &["x"], &[])).await,
        Vec::<String>::new()
    );
    assert_eq!(
        fetch_ids(&mut admin, target("/", &[&a.id], &[])).await,
        ids([&a]),
        "own-id room kept"
    );
    let r = admin
        .leave_rooms(pb::LeaveRoomsRequest {
            target: target("/", &[], &[&a.id]),
            rooms: vec![a.id.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.matched_sockets, 1,
        "leaving the own-id room alone is ignored"
    );
    assert_eq!(
        fetch_ids(&mut admin, target("/", &[&a.id], &[])).await,
        ids([&a])
    );

    // ListRooms, with and without the sockets' own rooms.
    assert_eq!(
        rooms_of(&mut admin, "/", false).await,
        vec![("lobby".into(), 2), ("vip".into(), 1)]
    );
    let mut expected = vec![
        (a.id.clone(), 1),
        (b.id.clone(), 1),
        ("lobby".into(), 2),
        ("vip".into(), 1),
    ];
    expected.sort();
    assert_eq!(rooms_of(&mut admin, "/", true).await, expected);
    assert_eq!(rooms_of(&mut admin, "/tenant-7", true).await, vec![]);

    // ClusterInfo: this node alone.
    let r = admin
        .cluster_info(pb::ClusterInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.answering_node_id, node.node_id());
    assert_eq!(r.nodes.len(), 1);
    let n = &r.nodes[0];
    assert_eq!(n.node_id, node.node_id());
    assert_eq!(n.version, env!("CARGO_PKG_VERSION"));
    assert_eq!((n.connections, n.sockets), (2, 2));
    assert!(n.started_at.is_some() && n.last_heartbeat.is_some());

    // DisconnectSockets: leave the namespace (close = false), then close.
    let r = admin
        .disconnect_sockets(pb::DisconnectSocketsRequest {
            target: target("/", &["vip"], &[]),
            close: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.disconnected_sockets, 1);
    assert_eq!(b.disconnected().await, Incoming::Disconnect);
    assert_eq!(
        fetch_ids(&mut admin, target("/", &[], &[])).await,
        ids([&a])
    );
    let r = admin
        .disconnect_sockets(pb::DisconnectSocketsRequest {
            target: None,
            close: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.disconnected_sockets, 1);
    assert_eq!(a.disconnected().await, Incoming::Disconnect);
    eventually_within("the namespace to be empty", Duration::from_secs(5), || {
        node.io.counts() == (1, 0)
    })
    .await;

    // Every call was counted.
    for (method, calls) in [
        ("Emit", 9),
        ("EmitWithAck", 1),
        ("JoinRooms", 2),
        ("LeaveRooms", 2),
        ("DisconnectSockets", 2),
        ("ClusterInfo", 1),
        ("FetchSockets", 8),
    ] {
        assert_eq!(node.admin_calls(method, "OK"), calls, "{method}");
    }
    node.stop().await;
}

#[tokio::test]
async fn bad_requests_are_invalid_argument() {
    let node = start(config("")).await;
    let mut admin = node.admin().await;

    let ok = || emit(target("/", &["r"], &[]), "ev", "[1]");
    // A namespace pattern is fine, and so is an empty (`/`) one.
    admin
        .emit(emit(target("/tenant-42", &[], &[]), "ev", "[]"))
        .await
        .unwrap();
    admin
        .emit(emit(target("", &[], &[]), "ev", ""))
        .await
        .unwrap();

    let cases: Vec<(pb::EmitRequest, &str)> = vec![
        (
            emit(target("chat", &[], &[]), "ev", "[]"),
            "must start with '/'",
        ),
        (emit(target("/nope", &[], &[]), "ev", "[]"), "not declared"),
        (
            pb::EmitRequest {
                event: String::new(),
                ..ok()
            },
            "event must not be empty",
        ),
        (
            pb::EmitRequest {
                event: "connect".into(),
                ..ok()
            },
            "reserved",
        ),
        (
            pb::EmitRequest {
                event: "disconnecting".into(),
                ..ok()
            },
            "reserved",
        ),
        (
            pb::EmitRequest {
                event: "e".repeat(300),
                ..ok()
            },
            "limit of 256",
        ),
        (
            emit(target("/", &["r"], &[]), "ev", r#"{"a":1}"#),
            "JSON array",
        ),
        (emit(target("/", &["r"], &[]), "ev", "[1,"), "JSON array"),
        (
            emit(
                target("/", &["r"], &[]),
                "ev",
                r#"[{"_placeholder":true,"num":0}]"#,
            ),
            "placeholders",
        ),
        (
            pb::EmitRequest {
                payload: Some(Payload {
                    json_args: "[]".into(),
                    attachments: vec![vec![1]],
                }),
                ..ok()
            },
            "placeholders",
        ),
        (
            pb::EmitRequest {
                payload: Some(Payload {
                    json_args: "[]".into(),
                    attachments: vec![vec![1]; 11],
                }),
                ..ok()
            },
            "more than the limit of 10",
        ),
        (
            emit(target("/", &[""], &[]), "ev", "[]"),
            "target.rooms[0] must not be empty",
        ),
        (
            emit(target("/", &[], &["a", ""]), "ev", "[]"),
            "target.socket_ids[1]",
        ),
        (
            emit(target("/", &[&"r".repeat(257)], &[]), "ev", "[]"),
            "more than the limit of 256",
        ),
    ];
    for (req, message) in cases {
        let what = format!("{req:?}");
        let status = admin.emit(req).await.expect_err(&what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(
            status.message().contains(message),
            "{what}: {:?}",
            status.message()
        );
    }
    let mut except = target("/", &[], &[]).unwrap();
    except.except_socket_ids = vec![String::new()];
    assert_code(
        admin.emit(emit(Some(except), "ev", "[]")).await,
        Code::InvalidArgument,
        "target.except_socket_ids[0]",
    );

    let ack = |timeout_ms| pb::EmitWithAckRequest {
        target: None,
        event: "ev".into(),
        payload: None,
        timeout_ms,
    };
    assert_code(
        admin.emit_with_ack(ack(0)).await,
        Code::InvalidArgument,
        "timeout_ms",
    );
    assert_code(
        admin.emit_with_ack(ack(300_001)).await,
        Code::InvalidArgument,
        "timeout_ms",
    );
    assert_code(
        admin
            .emit_with_ack(pb::EmitWithAckRequest {
                event: "connect_error".into(),
                ..ack(10)
            })
            .await,
        Code::InvalidArgument,
        "reserved",
    );
    assert_code(
        admin
            .join_rooms(pb::JoinRoomsRequest {
                target: None,
                rooms: vec![],
            })
            .await,
        Code::InvalidArgument,
        "at least one room",
    );
    assert_code(
        admin
            .join_rooms(pb::JoinRoomsRequest {
                target: None,
                rooms: vec!["a".into(), String::new()],
            })
            .await,
        Code::InvalidArgument,
        "rooms[1] must not be empty",
    );
    assert_code(
        admin
            .join_rooms(pb::JoinRoomsRequest {
                target: None,
                rooms: vec!["abcdef0123456789ABCD".into()],
            })
            .await,
        Code::InvalidArgument,
        "shape of a socket id",
    );
    assert_code(
        admin
            .leave_rooms(pb::LeaveRoomsRequest {
                target: None,
                rooms: vec![],
            })
            .await,
        Code::InvalidArgument,
        "at least one room",
    );
    assert_code(
        admin
            .disconnect_sockets(pb::DisconnectSocketsRequest {
                target: target("/nope", &[], &[]),
                close: false,
            })
            .await,
        Code::InvalidArgument,
        "not declared",
    );
    assert_code(
        admin
            .fetch_sockets(pb::FetchSocketsRequest {
                target: target("nope", &[], &[]),
            })
            .await,
        Code::InvalidArgument,
        "must start with '/'",
    );
    assert_code(
        admin
            .list_rooms(pb::ListRoomsRequest {
                namespace: "/other".into(),
                include_socket_rooms: false,
            })
            .await,
        Code::InvalidArgument,
        "not declared",
    );
    assert_eq!(node.admin_calls("Emit", "INVALID_ARGUMENT"), 15);
    assert_eq!(node.admin_calls("EmitWithAck", "INVALID_ARGUMENT"), 3);
    assert_eq!(node.admin_calls("Emit", "OK"), 2);
    node.stop().await;
}

#[tokio::test]
async fn a_token_is_required_when_configured() {
    let node = start(config("[admin]\ntoken = \"s3cret-admin-token\"")).await;
    let info = || pb::ClusterInfoRequest {};

    let mut anonymous = node.admin_with(None).await;
    assert_code(
        anonymous.cluster_info(info()).await,
        Code::Unauthenticated,
        "missing admin token",
    );
    let mut wrong = node.admin_with(Some("s3cret-admin-tokeN")).await;
    assert_code(
        wrong.cluster_info(info()).await,
        Code::Unauthenticated,
        "invalid admin token",
    );
    assert_code(
        wrong.emit(emit(None, "ev", "[]")).await,
        Code::Unauthenticated,
        "invalid admin token",
    );
    let mut short = node.admin_with(Some("s3cret")).await;
    assert_code(
        short.cluster_info(info()).await,
        Code::Unauthenticated,
        "invalid admin token",
    );

    let mut admin = node.admin().await;
    admin.cluster_info(info()).await.expect("the right token");
    admin
        .emit(emit(None, "ev", "[]"))
        .await
        .expect("the right token");

    // Reflection is behind the token too.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.admin_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_code(
        reflection_services(channel.clone(), None).await,
        Code::Unauthenticated,
        "missing admin token",
    );
    let services = reflection_services(channel, Some("s3cret-admin-token"))
        .await
        .expect("reflection with the token")
        .into_inner();
    assert!(services.contains(&"socketio_gateway.admin.v1.Admin".to_owned()));

    // Refused calls are counted, under the method they named.
    assert_eq!(node.admin_calls("ClusterInfo", "UNAUTHENTICATED"), 3);
    assert_eq!(node.admin_calls("Emit", "UNAUTHENTICATED"), 1);
    assert_eq!(node.admin_calls("ClusterInfo", "OK"), 1);
    assert_eq!(node.admin_calls("Emit", "OK"), 1);
    node.stop().await;
}

#[tokio::test]
async fn the_token_file_rotates_without_a_restart() {
    let dir = TempDir::new("admin-tokens");
    let file = dir.path().join("tokens");
    let (old, new) = ("old-token-0123456789abcdef", "new-token-0123456789abcdef");
    std::fs::write(&file, format!("{old}\n")).unwrap();
    let node = start(config(&format!("[admin]\ntoken_file = {file:?}"))).await;
    let (with_old, with_new) = (
        node.admin_with(Some(old)).await,
        node.admin_with(Some(new)).await,
    );
    let answers = |client: &Admin| {
        let mut client = client.clone();
        async move { client.cluster_info(pb::ClusterInfoRequest {}).await }
    };
    answers(&with_old).await.expect("the token of the file");
    assert_code(
        answers(&with_new).await,
        Code::Unauthenticated,
        "invalid admin token",
    );
    assert_code(
        answers(&node.admin_with(None).await).await,
        Code::Unauthenticated,
        "missing admin token",
    );

    // The rotation: both tokens, then only the new one; each change is
    // picked up without a restart (the file is polled every 10 s).
    std::fs::write(&file, format!("{new}\n{old}\n")).unwrap();
    poll_for(
        "the new token accepted",
        Duration::from_secs(25),
        || async { answers(&with_new).await.ok() },
    )
    .await;
    answers(&with_old)
        .await
        .expect("the old token during the rotation");
    std::fs::write(&file, format!("{new}\n")).unwrap();
    poll_for("the old token refused", Duration::from_secs(25), || async {
        answers(&with_old).await.err()
    })
    .await;
    // A file broken by mistake keeps the tokens in use.
    std::fs::write(&file, "replace-me-in-the-overlay\n").unwrap();
    tokio::time::sleep(Duration::from_secs(11)).await;
    answers(&with_new).await.expect("the last good tokens stay");
    node.stop().await;
}

#[tokio::test]
async fn a_token_file_with_a_placeholder_is_refused_at_start() {
    let dir = TempDir::new("admin-tokens-bad");
    let file = dir.path().join("tokens");
    std::fs::write(&file, "# generated\nreplace-me-in-the-overlay\n").unwrap();
    let err = gateway::Node::builder(config(&format!("[admin]\ntoken_file = {file:?}")))
        .build()
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("line 2: the token is a placeholder"), "{err}");
    let missing = dir.path().join("missing");
    let err = gateway::Node::builder(config(&format!("[admin]\ntoken_file = {missing:?}")))
        .build()
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("cannot read admin.token_file"), "{err}");
}

#[tokio::test]
async fn the_health_service_follows_readiness_without_a_token() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let node = start(config("[admin]\ntoken = \"s3cret-admin-token\"")).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.admin_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = HealthClient::new(channel.clone());
    let status = |service: &'static str| {
        let mut health = health.clone();
        async move {
            let request = HealthCheckRequest {
                service: service.to_owned(),
            };
            health.check(request).await.map(|r| r.into_inner().status())
        }
    };
    for service in ["", "socketio_gateway.admin.v1.Admin"] {
        assert_eq!(status(service).await.unwrap(), ServingStatus::Serving);
    }
    let unknown = status("no.such.Service").await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");

    node.readiness.set("redis", false);
    poll_for("NOT_SERVING", Duration::from_secs(5), || async {
        (status("").await.unwrap() == ServingStatus::NotServing).then_some(())
    })
    .await;
    assert_eq!(
        status("socketio_gateway.admin.v1.Admin").await.unwrap(),
        ServingStatus::NotServing
    );
    node.readiness.set("redis", true);
    poll_for("SERVING again", Duration::from_secs(5), || async {
        (status("").await.unwrap() == ServingStatus::Serving).then_some(())
    })
    .await;

    // The token is still needed for everything else.
    assert_code(
        node.admin_with(None)
            .await
            .cluster_info(pb::ClusterInfoRequest {})
            .await,
        Code::Unauthenticated,
        "missing admin token",
    );
    let services = reflection_services(channel, Some("s3cret-admin-token"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        services.contains(&"grpc.health.v1.Health".to_owned()),
        "{services:?}"
    );
    node.stop().await;
}

/// The services a v1 reflection client lists, sending `token`.
async fn reflection_services(
    channel: tonic::transport::Channel,
    token: Option<&str>,
) -> Result<tonic::Response<Vec<String>>, tonic::Status> {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut client = ServerReflectionClient::new(channel);
    let mut request = tonic::Request::new(futures_util::stream::iter([ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    }]));
    if let Some(t) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let mut answers = client.server_reflection_info(request).await?.into_inner();
    let answer = answers.message().await?.expect("one answer");
    match answer.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => Ok(tonic::Response::new(
            list.service.into_iter().map(|s| s.name).collect(),
        )),
        other => panic!("unexpected answer {other:?}"),
    }
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_describe_the_admin_service() {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let node = start(config("")).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.admin_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let services = reflection_services(channel.clone(), None)
        .await
        .unwrap()
        .into_inner();
    assert!(
        services.contains(&"socketio_gateway.admin.v1.Admin".to_owned()),
        "{services:?}"
    );
    assert!(
        !services.iter().any(|s| s.contains("hooks")),
        "the hooks are not served here"
    );

    let mut alpha = ServerReflectionClient::new(channel);
    let mut answers = alpha
        .server_reflection_info(futures_util::stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "socketio_gateway.admin.v1.Admin".into(),
            )),
        }]))
        .await
        .expect("v1alpha reflection")
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::FileDescriptorResponse(files)) = answer.message_response else {
        panic!("unexpected answer");
    };
    // The first field of a FileDescriptorProto is its name.
    let name = b"socketio_gateway/admin/v1/admin.proto";
    assert!(
        files
            .file_descriptor_proto
            .iter()
            .any(|file| file.windows(name.len()).any(|w| w == name)),
        "admin.proto is served"
    );
    node.stop().await;
}

#[tokio::test]
async fn tls_with_a_self_signed_certificate() {
    let dir = TempDir::new("admin-tls");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = cert.cert.pem();
    let cert_file = dir.path().join("admin.crt");
    let key_file = dir.path().join("admin.key");
    std::fs::write(&cert_file, &cert_pem).unwrap();
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
    let cfg = config(&format!(
        "[admin]\ntoken = \"tls-token-0123456789\"\ntls_cert = {:?}\ntls_key = {:?}",
        cert_file.display().to_string(),
        key_file.display().to_string()
    ));
    cfg.validate().expect("a usable certificate");
    let node = start(cfg).await;

    let mut admin = node
        .admin_tls(&cert_pem, Some("tls-token-0123456789"))
        .await
        .expect("TLS connects");
    let r = admin
        .cluster_info(pb::ClusterInfoRequest {})
        .await
        .expect("over TLS");
    assert_eq!(r.into_inner().answering_node_id, node.node_id());
    let mut anonymous = node.admin_tls(&cert_pem, None).await.unwrap();
    assert_code(
        anonymous.cluster_info(pb::ClusterInfoRequest {}).await,
        Code::Unauthenticated,
        "missing admin token",
    );

    // Plaintext HTTP/2 to a TLS port fails.
    let plain = tokio::time::timeout(Duration::from_secs(5), async {
        let mut plain = node.admin_with(Some("tls-token-0123456789")).await;
        plain.cluster_info(pb::ClusterInfoRequest {}).await
    })
    .await;
    assert!(
        !matches!(plain, Ok(Ok(_))),
        "plaintext must not work: {plain:?}"
    );

    // A key that does not parse stops the node from being built.
    std::fs::write(&key_file, "not a key").unwrap();
    let bad = config(&format!(
        "[admin]\ntls_cert = {:?}\ntls_key = {:?}",
        cert_file.display().to_string(),
        key_file.display().to_string()
    ));
    let err = match gateway::Node::builder(bad).build() {
        Ok(_) => panic!("a node was built with a key that does not parse"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("admin.tls_key"), "{err}");
    node.stop().await;
}

#[tokio::test]
async fn a_short_client_deadline_is_deadline_exceeded() {
    let node = start(config("")).await;
    let mut admin = node.admin().await;
    let _silent = SioClient::connect(node.addr, "/", AckMode::Manual).await;
    let mut req = tonic::Request::new(pb::EmitWithAckRequest {
        target: None,
        event: "question".into(),
        payload: None,
        timeout_ms: 5_000,
    });
    req.set_timeout(Duration::from_millis(1_000));
    let started = Instant::now();
    let status = admin.emit_with_ack(req).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("deadline"), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(node.admin_calls("EmitWithAck", "DEADLINE_EXCEEDED"), 1);
    node.stop().await;
}

#[tokio::test]
async fn a_listener_beyond_localhost_needs_a_token() {
    let open = config("[admin]\nlisten = \"0.0.0.0:50051\"");
    let err = open.validate().unwrap_err().to_string();
    assert!(err.contains("loopback"), "{err}");
    config("[admin]\nlisten = \"0.0.0.0:50051\"\ntoken = \"t0k-0123456789abcdef\"")
        .validate()
        .unwrap();
    config("[admin]\nlisten = \"0.0.0.0:50051\"\ntoken_file = \"/run/tokens\"")
        .validate()
        .unwrap();
    // Known placeholders and short tokens are refused, whatever the listener.
    for token in [
        "replace-me-in-the-overlay",
        "t0k",
        "example-only-not-a-secret-0b7c4e1f",
    ] {
        let err = config(&format!("[admin]\ntoken = {token:?}"))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid configuration: admin.token: "),
            "{err}"
        );
    }
    config("[admin]\nlisten = \"[::1]:50051\"")
        .validate()
        .unwrap();
    assert!(config("[admin]\ntoken = \"\"").validate().is_err());
    assert!(config("[admin]\ntoken = \"has space\"").validate().is_err());
    assert!(config("[admin]\ntls_cert = \"/x.pem\"").validate().is_err());
    // Files that do not exist: the values are well formed, the node that
    // would read them is not built.
    let missing =
        config("[admin]\ntls_cert = \"/nonexistent.pem\"\ntls_key = \"/nonexistent.key\"");
    missing.validate().unwrap();
    assert!(gateway::Node::builder(missing).build().is_err());
    let c = config("");
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:50051");
    assert!(!format!("{:?}", config("[admin]\ntoken = \"hide-me\"").admin).contains("hide-me"));
}

// ---------------------------------------------------------- three nodes

/// Three nodes and their clients:
/// - node 1: `c1` (acks), in `team`;
/// - node 2: `c2` (acks), in `team`, `red`;
/// - node 3: `c3` (acks), in `team`, `blue`; `silent` (never acks), in `blue`.
struct Cluster {
    nodes: [TestNode; 3],
    c1: SioClient,
    c2: SioClient,
    c3: SioClient,
    silent: SioClient,
}

impl Cluster {
    async fn new(nodes: [TestNode; 3]) -> Self {
        until_clustered(&[&nodes[0], &nodes[1], &nodes[2]]).await;
        let c1 = SioClient::connect(nodes[0].addr, "/", AckMode::Echo).await;
        let c2 = SioClient::connect(nodes[1].addr, "/", AckMode::Echo).await;
        let c3 = SioClient::connect(nodes[2].addr, "/", AckMode::Echo).await;
        let silent = SioClient::connect(nodes[2].addr, "/", AckMode::Manual).await;
        for (c, rooms) in [
            (&c1, &["team"][..]),
            (&c2, &["team", "red"][..]),
            (&c3, &["team", "blue"][..]),
            (&silent, &["blue"][..]),
        ] {
            for room in rooms {
                c.join(room).await;
            }
        }
        eventually_within("namespace subscriptions", Duration::from_secs(10), || {
            nodes.iter().all(|n| n.subscribed_to_namespace("/"))
        })
        .await;
        Self {
            nodes,
            c1,
            c2,
            c3,
            silent,
        }
    }

    async fn admin(&self, i: usize) -> Admin {
        self.nodes[i].admin().await
    }

    async fn stop(self) {
        let [n1, n2, n3] = self.nodes;
        n1.stop().await;
        n2.stop().await;
        n3.stop().await;
    }
}

/// Everything a cluster does through node 1's admin API.
async fn cluster_scenario(cl: &mut Cluster) {
    let mut admin = cl.admin(0).await;
    let node_ids: Vec<String> = cl.nodes.iter().map(TestNode::node_id).collect();

    // ClusterInfo: three nodes, sorted, node 1 answering.
    let info = admin
        .cluster_info(pb::ClusterInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.answering_node_id, node_ids[0]);
    let listed: Vec<String> = info.nodes.iter().map(|n| n.node_id.clone()).collect();
    assert_eq!(listed, sorted(node_ids.clone()));

    // A room whose members are on nodes 2 and 3, emitted through node 1
    // which has no member: each receives it once, the others nothing.
    let mut red_blue = target("/", &["red", "blue"], &[]).unwrap();
    assert_eq!(
        emit_then_marker(&mut admin, target("/", &["red"], &[]), "to-red").await,
        1
    );
    assert_eq!(
        emit_then_marker(&mut admin, Some(red_blue.clone()), "to-red-blue").await,
        2
    );
    expect_events(&mut cl.c2, &["to-red", "marker"]).await;
    expect_events(&mut cl.c2, &["to-red-blue", "marker"]).await;
    expect_events(&mut cl.c3, &["to-red-blue", "marker"]).await;
    expect_events(&mut cl.silent, &["to-red-blue", "marker"]).await;

    // Several rooms at once and excepts: c3 is in team and blue, gets one
    // copy; c2 is excepted by room, silent by id, c1 (local) by id.
    red_blue.rooms = vec!["team".into(), "blue".into(), "red".into()];
    red_blue.except_rooms = vec!["red".into()];
    red_blue.except_socket_ids = vec![cl.silent.id.clone(), cl.c1.id.clone()];
    send(&mut admin, emit(Some(red_blue), "multi", "[]")).await;
    send(&mut admin, emit(target("/", &[], &[]), "all", "[]")).await;
    expect_events(&mut cl.c3, &["multi", "all"]).await;
    for c in [&mut cl.c1, &mut cl.c2, &mut cl.silent] {
        expect_events(c, &["all"]).await;
    }

    // A socket id on another node: that node only.
    let to_silent = target("/", &[], &[&cl.silent.id]);
    assert_eq!(
        send(&mut admin, emit(to_silent, "direct", r#"[1]"#)).await,
        1
    );
    send(&mut admin, emit(target("/", &[], &[]), "all", "[]")).await;
    expect_events(&mut cl.silent, &["direct", "all"]).await;
    for c in [&mut cl.c1, &mut cl.c2, &mut cl.c3] {
        expect_events(c, &["all"]).await;
    }
    // The team on all three nodes: node 1 counts itself.
    assert_eq!(
        send(&mut admin, emit(target("/", &["team"], &[]), "team", "[]")).await,
        3
    );
    for c in [&mut cl.c1, &mut cl.c2, &mut cl.c3] {
        expect_events(c, &["team"]).await;
    }

    // EmitWithAck across nodes: every ack, and the silent socket timed out.
    let r = admin
        .emit_with_ack(pb::EmitWithAckRequest {
            target: target("/", &["team", "blue"], &[]),
            event: "poll".into(),
            payload: payload(r#"["yes or no"]"#),
            timeout_ms: 1_000,
        })
        .await
        .expect("emit with ack")
        .into_inner();
    assert!(r.missing_node_ids.is_empty(), "{:?}", r.missing_node_ids);
    assert_eq!(r.timed_out_socket_ids, vec![cl.silent.id.clone()]);
    let acked = sorted(r.acks.iter().map(|a| a.socket_id.clone()).collect());
    assert_eq!(acked, ids([&cl.c1, &cl.c2, &cl.c3]));
    for a in &r.acks {
        let answer: Value = serde_json::from_str(&a.payload.as_ref().unwrap().json_args).unwrap();
        assert_eq!(answer, json!([a.socket_id, "yes or no"]));
    }
    for c in [&mut cl.c1, &mut cl.c2, &mut cl.c3, &mut cl.silent] {
        expect_events(c, &["poll"]).await;
    }

    // FetchSockets across nodes, each socket reported by its own node.
    let r = fetch(&mut admin, target("/", &["blue", "red"], &[])).await;
    assert!(r.missing_node_ids.is_empty());
    let mut seen: Vec<(String, String)> = r
        .sockets
        .iter()
        .map(|s| (s.id.clone(), s.node_id.clone()))
        .collect();
    seen.sort();
    let mut expected = vec![
        (cl.c2.id.clone(), node_ids[1].clone()),
        (cl.c3.id.clone(), node_ids[2].clone()),
        (cl.silent.id.clone(), node_ids[2].clone()),
    ];
    expected.sort();
    assert_eq!(seen, expected);
    assert_eq!(
        fetch_ids(&mut admin, target("/", &[], &[])).await,
        ids([&cl.c1, &cl.c2, &cl.c3, &cl.silent])
    );
    let mut except = target("/", &["team"], &[]).unwrap();
    except.except_rooms = vec!["blue".into()];
    assert_eq!(
        fetch_ids(&mut admin, Some(except)).await,
        ids([&cl.c1, &cl.c2])
    );

    // JoinRooms by selector across nodes; the new room works at once.
    let r = admin
        .join_rooms(pb::JoinRoomsRequest {
            target: target("/", &["blue"], &[&cl.c2.id]),
            rooms: vec!["joined".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.matched_sockets, r.missing_node_ids.len()), (3, 0));
    assert_eq!(
        fetch_ids(&mut admin, target("/", &["joined"], &[])).await,
        ids([&cl.c2, &cl.c3, &cl.silent])
    );
    assert_eq!(
        send(
            &mut admin,
            emit(target("/", &["joined"], &[]), "in-joined", "[]")
        )
        .await,
        2
    );
    send(&mut admin, emit(target("/", &[], &[]), "all", "[]")).await;
    for c in [&mut cl.c2, &mut cl.c3, &mut cl.silent] {
        expect_events(c, &["in-joined", "all"]).await;
    }
    expect_events(&mut cl.c1, &["all"]).await;

    // ListRooms: member counts summed over the nodes.
    let mut expected = vec![
        ("blue".to_owned(), 2),
        ("joined".into(), 3),
        ("red".into(), 1),
        ("team".into(), 3),
    ];
    assert_eq!(rooms_of(&mut admin, "/", false).await, expected);
    for c in [&cl.c1, &cl.c2, &cl.c3, &cl.silent] {
        expected.push((c.id.clone(), 1));
    }
    expected.sort();
    assert_eq!(rooms_of(&mut admin, "/", true).await, expected);

    // LeaveRooms by selector across nodes.
    let r = admin
        .leave_rooms(pb::LeaveRoomsRequest {
            target: target("/", &["joined"], &[]),
            rooms: vec!["joined".into(), "blue".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.matched_sockets, 3);
    assert_eq!(
        fetch_ids(&mut admin, target("/", &["joined"], &[])).await,
        Vec::<String>::new()
    );
    assert_eq!(
        fetch_ids(&mut admin, target("/", &["blue"], &[])).await,
        Vec::<String>::new()
    );
    assert_eq!(
        send(
            &mut admin,
            emit(target("/", &["blue"], &[]), "nobody", "[]")
        )
        .await,
        0
    );

    // The same through another node: any node acts for the cluster.
    let mut admin3 = cl.admin(2).await;
    assert_eq!(
        fetch_ids(&mut admin3, target("/", &["team"], &[])).await,
        ids([&cl.c1, &cl.c2, &cl.c3])
    );

    // DisconnectSockets by selector across nodes: leave the namespace on
    // node 2, close the connection on node 3.
    let r = admin
        .disconnect_sockets(pb::DisconnectSocketsRequest {
            target: target("/", &["red"], &[]),
            close: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.disconnected_sockets, 1);
    assert_eq!(cl.c2.disconnected().await, Incoming::Disconnect);
    let r = admin
        .disconnect_sockets(pb::DisconnectSocketsRequest {
            target: target("/", &[], &[&cl.silent.id]),
            close: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.disconnected_sockets, 1);
    assert_eq!(cl.silent.disconnected().await, Incoming::Disconnect);
    assert_eq!(
        fetch_ids(&mut admin, target("/", &[], &[])).await,
        ids([&cl.c1, &cl.c3])
    );
}

#[tokio::test]
async fn three_nodes_on_the_in_process_broker() {
    let broker = LocalBroker::new();
    let mut buses: Vec<Arc<LocalBus>> = (0..3).map(|_| Arc::new(broker.connect())).collect();
    let mut nodes = Vec::new();
    for bus in &buses {
        nodes.push(
            TestNode::builder(config(""))
                .bus(bus.clone())
                .admin()
                .start()
                .await,
        );
    }
    let nodes: [TestNode; 3] = nodes.try_into().ok().unwrap();
    let mut cl = Cluster::new(nodes).await;
    cluster_scenario(&mut cl).await;
    deadline_across_nodes(&mut cl).await;

    // Node 3 stops answering (its bus is cut): node 1 reports it missing.
    let bus3 = buses.pop().unwrap();
    bus3.set_connected(false);
    let mut admin = cl.admin(0).await;
    let r = fetch(&mut admin, target("/", &[], &[])).await;
    assert_eq!(r.missing_node_ids, vec![cl.nodes[2].node_id()], "{r:?}");
    let got: Vec<String> = r.sockets.iter().map(|s| s.id.clone()).collect();
    assert_eq!(got, vec![cl.c1.id.clone()], "node 3's sockets are left out");
    cl.stop().await;
}

#[tokio::test]
async fn three_nodes_on_redis() {
    if skip_without_redis() {
        return;
    }
    let mut redis = Redis::start().await;
    let extra = format!("redis_url = {:?}", redis.url());
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(start(config(&extra)).await);
    }
    let nodes: [TestNode; 3] = nodes.try_into().ok().unwrap();
    let mut cl = Cluster::new(nodes).await;
    cluster_scenario(&mut cl).await;
    deadline_across_nodes(&mut cl).await;

    // Redis goes down: an emit still reaches node 1's own sockets, and the
    // call says UNAVAILABLE; cluster-wide calls are UNAVAILABLE too.
    let mut admin = cl.admin(0).await;
    redis.stop();
    let mut failed = None;
    for i in 0..200 {
        let event = format!("down-{i}");
        match admin
            .emit(emit(target("/", &["team"], &[]), &event, "[]"))
            .await
        {
            Ok(_) => tokio::time::sleep(Duration::from_millis(25)).await,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(
                    status.message().contains("this node's own sockets"),
                    "{status:?}"
                );
                failed = Some(event);
                break;
            }
        }
    }
    let failed = failed.expect("emits fail once Redis is down");
    loop {
        let (name, _, _) = cl.c1.event().await;
        if name == failed {
            break;
        }
    }
    assert_code(
        admin
            .fetch_sockets(pb::FetchSocketsRequest { target: None })
            .await,
        Code::Unavailable,
        "cluster bus",
    );
    // Still UNAVAILABLE once the peers' heartbeats have expired.
    eventually_within("node 1 to forget its peers", Duration::from_secs(5), || {
        cl.nodes[0].nodes_known() == 1
    })
    .await;
    assert_code(
        admin
            .fetch_sockets(pb::FetchSocketsRequest { target: None })
            .await,
        Code::Unavailable,
        "cluster bus",
    );
    assert_code(
        admin
            .emit(emit(target("/", &["team"], &[]), "still-down", "[]"))
            .await,
        Code::Unavailable,
        "cluster bus",
    );
    assert!(cl.nodes[0].admin_calls("Emit", "UNAVAILABLE") >= 2);
    cl.stop().await;
}

/// EmitWithAck across nodes with a client deadline shorter than the acks'
/// timeout, while a socket on node 3 never answers.
async fn deadline_across_nodes(cl: &mut Cluster) {
    let never = SioClient::connect(cl.nodes[2].addr, "/", AckMode::Manual).await;
    never.join("deadline").await;
    let mut admin = cl.admin(0).await;
    let mut req = tonic::Request::new(pb::EmitWithAckRequest {
        target: target("/", &["deadline"], &[]),
        event: "slow".into(),
        payload: None,
        timeout_ms: 3_000,
    });
    req.set_timeout(Duration::from_millis(1_000));
    let started = Instant::now();
    assert_code(
        admin.emit_with_ack(req).await,
        Code::DeadlineExceeded,
        "deadline",
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    never.close();
}

/// `disconnectSockets(true)` in Node sends DISCONNECT to every namespace of
/// the connection and then closes it, so clients see "io server disconnect"
/// and stay disconnected (as `admin.proto` promises).
#[tokio::test]
async fn disconnect_with_close_says_io_server_disconnect() {
    let node = start(config("")).await;
    let mut admin = node.admin().await;
    let mut client = SioClient::connect(node.addr, "/", AckMode::Echo).await;
    admin
        .disconnect_sockets(pb::DisconnectSocketsRequest {
            target: target("/", &[], &[&client.id]),
            close: true,
        })
        .await
        .unwrap();
    assert_eq!(client.disconnected().await, Incoming::Disconnect);
    node.stop().await;
}

// ------------------------------------------------- the test client itself

#[test]
fn the_socket_io_client_parses_packet_headers() {
    use support::sio::parse;

    let p = parse(r#"42/chat,12["a",1]"#).unwrap();
    assert_eq!((p.kind, p.nsp.as_str(), p.id), (2, "/chat", Some(12)));
    assert_eq!(p.data, r#"["a",1]"#);
    let p = parse(r#"451-["b",{"_placeholder":true,"num":0}]"#).unwrap();
    assert_eq!(
        (p.kind, p.attachments, p.nsp.as_str(), p.id),
        (5, 1, "/", None)
    );
    let p = parse("41/chat,").unwrap();
    assert_eq!((p.kind, p.nsp.as_str(), p.data.as_str()), (1, "/chat", ""));
    assert!(parse("2").is_none());
}

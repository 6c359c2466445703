//! The generated clients and servers work together over a real connection:
//! a tonic server on 127.0.0.1:0 with a trivial in-test implementation, and
//! the generated client calling it.

mod support;

use gateway_proto::{
    admin::v1::{
        ClusterInfoRequest, ClusterInfoResponse, DisconnectSocketsRequest,
        DisconnectSocketsResponse, EmitRequest, EmitResponse, EmitWithAckRequest,
        EmitWithAckResponse, FetchSocketsRequest, FetchSocketsResponse, JoinRoomsRequest,
        JoinRoomsResponse, LeaveRoomsRequest, LeaveRoomsResponse, ListRoomsRequest,
        ListRoomsResponse, SocketInfo, Target,
        admin_client::AdminClient,
        admin_server::{Admin, AdminServer},
    },
    common::v1::Payload,
    hooks::v1::{
        Allow, OnConnectRequest, OnConnectResponse, OnDisconnectRequest, OnDisconnectResponse,
        OnEventRequest, OnEventResponse, Refuse,
        hooks_client::HooksClient,
        hooks_server::{Hooks, HooksServer},
        on_connect_response::Decision,
    },
};
use prost_types::Timestamp;
use support::Running;
use tonic::{Code, Request, Response, Status, transport::Server};

/// Answers `FetchSockets` with one socket per requested id, and `Emit` with
/// the number of targeted rooms; the other rpcs are not needed here.
struct FakeGateway;

#[tonic::async_trait]
impl Admin for FakeGateway {
    async fn emit(&self, request: Request<EmitRequest>) -> Result<Response<EmitResponse>, Status> {
        let request = request.into_inner();
        let target = request.target.unwrap_or_default();
        if request.event.is_empty() {
            return Err(Status::invalid_argument("event must not be empty"));
        }
        Ok(Response::new(EmitResponse {
            nodes_reached: u32::try_from(target.rooms.len()).expect("few rooms"),
        }))
    }

    async fn emit_with_ack(
        &self,
        _: Request<EmitWithAckRequest>,
    ) -> Result<Response<EmitWithAckResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn join_rooms(
        &self,
        _: Request<JoinRoomsRequest>,
    ) -> Result<Response<JoinRoomsResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn leave_rooms(
        &self,
        _: Request<LeaveRoomsRequest>,
    ) -> Result<Response<LeaveRoomsResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn disconnect_sockets(
        &self,
        _: Request<DisconnectSocketsRequest>,
    ) -> Result<Response<DisconnectSocketsResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn fetch_sockets(
        &self,
        request: Request<FetchSocketsRequest>,
    ) -> Result<Response<FetchSocketsResponse>, Status> {
        let target = request.into_inner().target.unwrap_or_default();
        let namespace = if target.namespace.is_empty() {
            "/".to_owned()
        } else {
            target.namespace
        };
        let sockets = target
            .socket_ids
            .into_iter()
            .map(|id| SocketInfo {
                rooms: vec![id.clone(), "lobby".to_owned()],
                id,
                namespace: namespace.clone(),
                user_id: "user-1".to_owned(),
                node_id: "node-a".to_owned(),
                transport: "websocket".to_owned(),
                connected_at: Some(Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 5_000_000,
                }),
                data: r#"{"plan":"pro"}"#.to_owned(),
            })
            .collect();
        Ok(Response::new(FetchSocketsResponse {
            sockets,
            missing_node_ids: vec!["node-b".to_owned()],
        }))
    }

    async fn list_rooms(
        &self,
        _: Request<ListRoomsRequest>,
    ) -> Result<Response<ListRoomsResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn cluster_info(
        &self,
        _: Request<ClusterInfoRequest>,
    ) -> Result<Response<ClusterInfoResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

/// Allows sockets that bring `{"token":"good"}` and refuses the others;
/// acknowledges events with their own arguments.
struct FakeBackend;

#[tonic::async_trait]
impl Hooks for FakeBackend {
    async fn on_connect(
        &self,
        request: Request<OnConnectRequest>,
    ) -> Result<Response<OnConnectResponse>, Status> {
        let request = request.into_inner();
        let decision = if request.auth == r#"{"token":"good"}"# {
            Decision::Allow(Allow {
                user_id: format!("user-of-{}", request.socket_id),
                rooms: vec![format!("tenant:{}", request.query["tenant"])],
                data: String::new(),
            })
        } else {
            Decision::Refuse(Refuse {
                message: "not authorized".to_owned(),
                data: r#"{"retry":false}"#.to_owned(),
            })
        };
        Ok(Response::new(OnConnectResponse {
            decision: Some(decision),
        }))
    }

    async fn on_event(
        &self,
        request: Request<OnEventRequest>,
    ) -> Result<Response<OnEventResponse>, Status> {
        let request = request.into_inner();
        Ok(Response::new(OnEventResponse {
            ack_args: request.args,
        }))
    }

    async fn on_disconnect(
        &self,
        _: Request<OnDisconnectRequest>,
    ) -> Result<Response<OnDisconnectResponse>, Status> {
        Ok(Response::new(OnDisconnectResponse {}))
    }
}

#[tokio::test]
async fn admin_fetch_sockets_and_emit_round_trip() {
    let server = Running::start(Server::builder().add_service(AdminServer::new(FakeGateway))).await;
    let mut client = AdminClient::connect(server.url()).await.expect("connect");

    let fetched = client
        .fetch_sockets(FetchSocketsRequest {
            target: Some(Target {
                namespace: "/chat".to_owned(),
                socket_ids: vec!["s1".to_owned(), "s2".to_owned()],
                ..Default::default()
            }),
        })
        .await
        .expect("fetch_sockets")
        .into_inner();
    let ids: Vec<&str> = fetched.sockets.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["s1", "s2"]);
    let first = &fetched.sockets[0];
    assert_eq!(first.namespace, "/chat");
    assert_eq!(first.rooms, ["s1", "lobby"]);
    assert_eq!(first.transport, "websocket");
    assert_eq!(
        first.connected_at,
        Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 5_000_000
        })
    );
    assert_eq!(first.data, r#"{"plan":"pro"}"#);
    assert_eq!(fetched.missing_node_ids, ["node-b"]);

    let emitted = client
        .emit(EmitRequest {
            target: Some(Target {
                rooms: vec!["a".to_owned(), "b".to_owned()],
                ..Default::default()
            }),
            event: "news".to_owned(),
            payload: Some(Payload {
                json_args: r#"[{"_placeholder":true,"num":0}]"#.to_owned(),
                attachments: vec![vec![0, 1, 255]],
            }),
            volatile: true,
        })
        .await
        .expect("emit")
        .into_inner();
    assert_eq!(emitted.nodes_reached, 2);

    let refused = client
        .emit(EmitRequest::default())
        .await
        .expect_err("an empty event is refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(refused.message(), "event must not be empty");

    server.stop().await;
}

#[tokio::test]
async fn hooks_on_connect_and_on_event_round_trip() {
    let server = Running::start(Server::builder().add_service(HooksServer::new(FakeBackend))).await;
    let mut client = HooksClient::connect(server.url()).await.expect("connect");

    let connect = |auth: &str| OnConnectRequest {
        socket_id: "s1".to_owned(),
        namespace: "/chat".to_owned(),
        auth: auth.to_owned(),
        headers: [("user-agent".to_owned(), "test".to_owned())].into(),
        query: [("tenant".to_owned(), "acme".to_owned())].into(),
        remote_addr: "127.0.0.1:40000".to_owned(),
        node_id: "node-a".to_owned(),
        user_id: String::new(),
    };

    let allowed = client
        .on_connect(connect(r#"{"token":"good"}"#))
        .await
        .expect("on_connect")
        .into_inner();
    assert_eq!(
        allowed.decision,
        Some(Decision::Allow(Allow {
            user_id: "user-of-s1".to_owned(),
            rooms: vec!["tenant:acme".to_owned()],
            data: String::new(),
        }))
    );

    let refused = client
        .on_connect(connect(r#"{"token":"bad"}"#))
        .await
        .expect("on_connect")
        .into_inner();
    assert_eq!(
        refused.decision,
        Some(Decision::Refuse(Refuse {
            message: "not authorized".to_owned(),
            data: r#"{"retry":false}"#.to_owned(),
        }))
    );

    let args = Payload {
        json_args: r#"["hi",{"_placeholder":true,"num":0}]"#.to_owned(),
        attachments: vec![b"\x00binary".to_vec()],
    };
    let acked = client
        .on_event(OnEventRequest {
            socket_id: "s1".to_owned(),
            namespace: "/chat".to_owned(),
            user_id: "user-of-s1".to_owned(),
            event: "message".to_owned(),
            args: Some(args.clone()),
            wants_ack: true,
            sequence: 1,
        })
        .await
        .expect("on_event")
        .into_inner();
    assert_eq!(acked.ack_args, Some(args));

    server.stop().await;
}

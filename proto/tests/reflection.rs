//! `FILE_DESCRIPTOR_SET` is enough for gRPC reflection: a `tonic-reflection`
//! server fed with it lists both services and hands out each file and every
//! file it imports, which is what `grpcurl` needs to call without `.proto`
//! files.

mod support;

use std::collections::BTreeSet;

use gateway_proto::FILE_DESCRIPTOR_SET;
use prost::Message;
use prost_types::FileDescriptorProto;
use support::Running;
use tonic::transport::{Channel, Server};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

/// Sends one reflection request and returns its answer.
async fn ask(
    client: &mut ServerReflectionClient<Channel>,
    request: MessageRequest,
) -> MessageResponse {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection call")
        .into_inner();
    answers
        .message()
        .await
        .expect("reflection answer")
        .expect("one answer")
        .message_response
        .expect("answer has a body")
}

/// The files an answer carries.
fn files_of(answer: MessageResponse) -> Vec<FileDescriptorProto> {
    match answer {
        MessageResponse::FileDescriptorResponse(files) => files
            .file_descriptor_proto
            .iter()
            .map(|bytes| FileDescriptorProto::decode(bytes.as_slice()).expect("file decodes"))
            .collect(),
        other => panic!("unexpected answer {other:?}"),
    }
}

/// Resolves a symbol as `grpcurl` does: the file that defines it, then every
/// file it imports, by name, until nothing is missing. Returns the names of
/// all the files fetched.
async fn resolve(client: &mut ServerReflectionClient<Channel>, symbol: &str) -> BTreeSet<String> {
    let mut fetched = BTreeSet::new();
    let mut pending = files_of(
        ask(
            client,
            MessageRequest::FileContainingSymbol(symbol.to_owned()),
        )
        .await,
    );
    while let Some(file) = pending.pop() {
        for dependency in &file.dependency {
            if !fetched.contains(dependency) && !pending.iter().any(|p| p.name() == dependency) {
                pending.extend(files_of(
                    ask(client, MessageRequest::FileByFilename(dependency.clone())).await,
                ));
            }
        }
        fetched.insert(file.name().to_owned());
    }
    fetched
}

#[tokio::test]
async fn reflection_serves_both_services_and_their_imports() {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .include_reflection_service(false)
        .build_v1()
        .expect("the descriptor set is accepted by tonic-reflection");
    let server = Running::start(Server::builder().add_service(reflection)).await;
    // tonic-reflection's client is built without `connect`: dial a channel.
    let channel = Channel::from_shared(server.url())
        .expect("valid url")
        .connect()
        .await
        .expect("connect");
    let mut client = ServerReflectionClient::new(channel);

    let services = match ask(&mut client, MessageRequest::ListServices(String::new())).await {
        MessageResponse::ListServicesResponse(list) => list
            .service
            .into_iter()
            .map(|service| service.name)
            .collect::<BTreeSet<_>>(),
        other => panic!("unexpected answer {other:?}"),
    };
    assert_eq!(
        services,
        BTreeSet::from([
            "socketio_gateway.admin.v1.Admin".to_owned(),
            "socketio_gateway.hooks.v1.Hooks".to_owned(),
        ])
    );

    let admin = resolve(&mut client, "socketio_gateway.admin.v1.Admin").await;
    for file in [
        "socketio_gateway/admin/v1/admin.proto",
        "socketio_gateway/common/v1/payload.proto",
        "google/protobuf/timestamp.proto",
    ] {
        assert!(admin.contains(file), "{file} missing from {admin:?}");
    }

    let hooks = resolve(&mut client, "socketio_gateway.hooks.v1.OnEventRequest").await;
    for file in [
        "socketio_gateway/hooks/v1/hooks.proto",
        "socketio_gateway/common/v1/payload.proto",
    ] {
        assert!(hooks.contains(file), "{file} missing from {hooks:?}");
    }

    server.stop().await;
}

//! The admin API's Emit over gRPC (`socketio_gateway.admin.v1.Admin`), as
//! an [`AdminSink`] for publishers (`--via grpc`). Built only with the
//! `grpc` feature (the `gateway-proto` crate and tonic).

use gateway_proto::admin::v1::admin_client::AdminClient;
use gateway_proto::admin::v1::{EmitRequest, Target};
use gateway_proto::common::v1::Payload;
use tonic::transport::Channel;

use super::clients::{AdminSink, AdminTarget};
use crate::transport::Node;

pub struct GrpcSink {
    client: AdminClient<Channel>,
}

/// Connects to the admin API at `url` (loopback only).
pub async fn connect(url: &str) -> Result<GrpcSink, String> {
    let node = Node::parse(url).map_err(|e| format!("--admin: {e:#}"))?;
    let client = AdminClient::connect(format!("http://{}", node.addr))
        .await
        .map_err(|e| format!("admin API {url}: {e}"))?;
    Ok(GrpcSink { client })
}

impl AdminSink for GrpcSink {
    async fn emit(
        &mut self,
        namespace: &str,
        target: AdminTarget<'_>,
        event: &str,
        args_json: String,
    ) -> Result<(), String> {
        let mut target_msg = Target {
            namespace: namespace.to_string(),
            ..Default::default()
        };
        match target {
            AdminTarget::Room(room) => target_msg.rooms.push(room.to_string()),
            AdminTarget::Socket(sid) => target_msg.socket_ids.push(sid.to_string()),
        }
        let request = EmitRequest {
            target: Some(target_msg),
            event: event.to_string(),
            payload: Some(Payload {
                json_args: args_json,
                attachments: Vec::new(),
            }),
            volatile: false,
        };
        self.client
            .emit(request)
            .await
            .map(|_| ())
            .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
    }
}

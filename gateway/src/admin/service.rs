//! The admin rpcs over the node's [`SocketIo`]: each checks its request,
//! runs the cluster-wide operation within the client's deadline, and
//! answers; every call is counted and timed in the node's metrics
//! (through [`Call`]).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;

use gateway_proto::admin::v1 as pb;
use gateway_proto::admin::v1::admin_server::Admin;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::call::Call;
use super::convert::{self, op_status, saturate};
use super::deadline::Deadline;
use crate::socketio::{SocketIo, Target};
use crate::telemetry::{self, AdminMethod, Metrics, TraceContext};

/// What a cluster-wide request did when the bus failed: it is published
/// before this node acts, so nobody acted.
const NOTHING_DONE: &str = "no node acted on the request, this one included";

/// The admin service of one node, acting for the whole cluster.
#[derive(Clone)]
pub(crate) struct AdminService {
    io: SocketIo,
    metrics: Arc<Metrics>,
}

/// The caller's trace context, from the `traceparent` and `tracestate`
/// metadata.
fn trace_context(metadata: &MetadataMap) -> Option<TraceContext> {
    let mut carrier = HashMap::new();
    for key in ["traceparent", "tracestate"] {
        if let Some(value) = metadata.get(key).and_then(|v| v.to_str().ok()) {
            carrier.insert(key.to_owned(), value.to_owned());
        }
    }
    TraceContext::from_map(&carrier)
}

impl AdminService {
    pub(crate) fn new(io: SocketIo, metrics: Arc<Metrics>) -> Self {
        Self { io, metrics }
    }

    /// Runs one rpc's `body` in its span (a child of the caller's trace),
    /// counted and timed.
    async fn run<T>(
        &self,
        method: AdminMethod,
        metadata: &MetadataMap,
        body: impl Future<Output = Result<T, Status>>,
    ) -> Result<Response<T>, Status> {
        let call = Call::start(&self.metrics, method);
        let span = telemetry::admin_span(method);
        if let Some(parent) = trace_context(metadata) {
            parent.set_as_parent_of(&span);
        }
        let result = call.finish(body.instrument(span.clone()).await);
        let code = result
            .as_ref()
            .map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        span.record("rpc.grpc.status_code", code as i32);
        result.map(Response::new)
    }

    async fn handle_emit(
        &self,
        deadline: Deadline,
        r: pb::EmitRequest,
    ) -> Result<pb::EmitResponse, Status> {
        let sel = convert::target(&self.io, r.target, r.volatile)?;
        convert::event(&self.io, &r.event)?;
        let payload = convert::payload(&self.io, r.payload)?;
        let report = deadline
            .run("the message was handed to the cluster", async {
                self.io
                    .emit_counted(&sel.nsp, &sel.target, &r.event, &payload)
                    .await
                    .map_err(|e| {
                        op_status(
                            e,
                            "the message may have reached this node's own sockets, and no other node's",
                        )
                    })
            })
            .await?;
        Ok(pb::EmitResponse {
            nodes_reached: saturate(report.nodes_reached),
        })
    }

    async fn handle_emit_with_ack(
        &self,
        deadline: Deadline,
        r: pb::EmitWithAckRequest,
    ) -> Result<pb::EmitWithAckResponse, Status> {
        let sel = convert::target(&self.io, r.target, false)?;
        convert::event(&self.io, &r.event)?;
        let payload = convert::payload(&self.io, r.payload)?;
        let timeout = convert::ack_timeout(r.timeout_ms)?;
        let report = deadline
            .run("every node reported its acknowledgements", async {
                self.io
                    .emit_with_ack(&sel.nsp, &sel.target, &r.event, &payload, timeout)
                    .await
                    .map_err(|e| op_status(e, "no socket was sent the event"))
            })
            .await?;
        Ok(pb::EmitWithAckResponse {
            acks: report.acks.into_iter().map(convert::socket_ack).collect(),
            timed_out_socket_ids: report.timed_out,
            missing_node_ids: convert::node_ids(report.missing_nodes),
        })
    }

    async fn handle_join_rooms(
        &self,
        deadline: Deadline,
        r: pb::JoinRoomsRequest,
    ) -> Result<pb::JoinRoomsResponse, Status> {
        let sel = convert::target(&self.io, r.target, false)?;
        convert::rooms_to_join(&self.io, &r.rooms)?;
        let (matched, missing) = deadline
            .run("every node answered", async {
                self.io
                    .join_rooms(&sel.nsp, &sel.target, r.rooms)
                    .await
                    .map_err(|e| op_status(e, NOTHING_DONE))
            })
            .await?;
        Ok(pb::JoinRoomsResponse {
            matched_sockets: saturate(matched),
            missing_node_ids: convert::node_ids(missing),
        })
    }

    async fn handle_leave_rooms(
        &self,
        deadline: Deadline,
        r: pb::LeaveRoomsRequest,
    ) -> Result<pb::LeaveRoomsResponse, Status> {
        let sel = convert::target(&self.io, r.target, false)?;
        let rooms = convert::rooms_to_leave(&self.io, r.rooms)?;
        let (matched, missing) = deadline
            .run("every node answered", async {
                if rooms.is_empty() {
                    // Only own-id rooms: nothing to leave, only to count.
                    let (sockets, missing) = self
                        .io
                        .fetch_sockets(&sel.nsp, &sel.target)
                        .await
                        .map_err(|e| op_status(e, NOTHING_DONE))?;
                    return Ok((sockets.len() as u64, missing));
                }
                self.io
                    .leave_rooms(&sel.nsp, &sel.target, rooms)
                    .await
                    .map_err(|e| op_status(e, NOTHING_DONE))
            })
            .await?;
        Ok(pb::LeaveRoomsResponse {
            matched_sockets: saturate(matched),
            missing_node_ids: convert::node_ids(missing),
        })
    }

    async fn handle_disconnect_sockets(
        &self,
        deadline: Deadline,
        r: pb::DisconnectSocketsRequest,
    ) -> Result<pb::DisconnectSocketsResponse, Status> {
        let sel = convert::target(&self.io, r.target, false)?;
        let (disconnected, missing) = deadline
            .run("every node answered", async {
                self.io
                    .disconnect_sockets(&sel.nsp, &sel.target, r.close)
                    .await
                    .map_err(|e| op_status(e, NOTHING_DONE))
            })
            .await?;
        Ok(pb::DisconnectSocketsResponse {
            disconnected_sockets: saturate(disconnected),
            missing_node_ids: convert::node_ids(missing),
        })
    }

    async fn handle_fetch_sockets(
        &self,
        deadline: Deadline,
        r: pb::FetchSocketsRequest,
    ) -> Result<pb::FetchSocketsResponse, Status> {
        let sel = convert::target(&self.io, r.target, false)?;
        let (sockets, missing) = deadline
            .run("every node answered", async {
                self.io
                    .fetch_sockets(&sel.nsp, &sel.target)
                    .await
                    .map_err(|e| op_status(e, NOTHING_DONE))
            })
            .await?;
        Ok(pb::FetchSocketsResponse {
            sockets: sockets.into_iter().map(convert::socket_info).collect(),
            missing_node_ids: convert::node_ids(missing),
        })
    }

    /// The nodes list joined rooms only (a socket's own-id room is not
    /// stored); with `include_socket_rooms` those come from a fetch of every
    /// socket of the namespace, asked at the same time.
    async fn handle_list_rooms(
        &self,
        deadline: Deadline,
        r: pb::ListRoomsRequest,
    ) -> Result<pb::ListRoomsResponse, Status> {
        let nsp = convert::namespace(&self.io, &r.namespace)?;
        let (rooms, missing) = deadline
            .run("every node answered", async {
                let rooms = async {
                    self.io
                        .list_rooms(&nsp)
                        .await
                        .map_err(|e| op_status(e, "no node was asked"))
                };
                let sockets = async {
                    if !r.include_socket_rooms {
                        return Ok((Vec::new(), Vec::new()));
                    }
                    self.io
                        .fetch_sockets(&nsp, &Target::default())
                        .await
                        .map_err(|e| op_status(e, "no node was asked"))
                };
                let ((rooms, mut missing), (sockets, missing_sockets)) =
                    tokio::try_join!(rooms, sockets)?;
                let mut merged: BTreeMap<String, u64> = rooms.into_iter().collect();
                for s in sockets {
                    *merged.entry(s.id).or_default() += 1;
                }
                missing.extend(missing_sockets);
                Ok((merged, missing))
            })
            .await?;
        Ok(pb::ListRoomsResponse {
            rooms: rooms
                .into_iter()
                .filter(|(_, members)| *members > 0)
                .map(|(name, members)| pb::RoomInfo {
                    name,
                    members: saturate(members),
                })
                .collect(),
            missing_node_ids: convert::node_ids(missing),
        })
    }

    fn handle_cluster_info(&self) -> pb::ClusterInfoResponse {
        let mut nodes = self.io.nodes();
        nodes.sort_by_key(|n| n.node_id);
        pb::ClusterInfoResponse {
            answering_node_id: self.io.node_id().to_string(),
            nodes: nodes.into_iter().map(convert::node_info).collect(),
        }
    }
}

/// Runs one rpc: hands its body the request and its deadline.
macro_rules! rpc {
    ($self:ident, $method:expr, $request:ident, $body:ident) => {{
        let deadline = Deadline::from_metadata($request.metadata());
        let (metadata, _, message) = $request.into_parts();
        $self
            .run($method, &metadata, $self.$body(deadline, message))
            .await
    }};
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn emit(
        &self,
        request: Request<pb::EmitRequest>,
    ) -> Result<Response<pb::EmitResponse>, Status> {
        rpc!(self, AdminMethod::Emit, request, handle_emit)
    }

    async fn emit_with_ack(
        &self,
        request: Request<pb::EmitWithAckRequest>,
    ) -> Result<Response<pb::EmitWithAckResponse>, Status> {
        rpc!(
            self,
            AdminMethod::EmitWithAck,
            request,
            handle_emit_with_ack
        )
    }

    async fn join_rooms(
        &self,
        request: Request<pb::JoinRoomsRequest>,
    ) -> Result<Response<pb::JoinRoomsResponse>, Status> {
        rpc!(self, AdminMethod::JoinRooms, request, handle_join_rooms)
    }

    async fn leave_rooms(
        &self,
        request: Request<pb::LeaveRoomsRequest>,
    ) -> Result<Response<pb::LeaveRoomsResponse>, Status> {
        rpc!(self, AdminMethod::LeaveRooms, request, handle_leave_rooms)
    }

    async fn disconnect_sockets(
        &self,
        request: Request<pb::DisconnectSocketsRequest>,
    ) -> Result<Response<pb::DisconnectSocketsResponse>, Status> {
        rpc!(
            self,
            AdminMethod::DisconnectSockets,
            request,
            handle_disconnect_sockets
        )
    }

    async fn fetch_sockets(
        &self,
        request: Request<pb::FetchSocketsRequest>,
    ) -> Result<Response<pb::FetchSocketsResponse>, Status> {
        rpc!(
            self,
            AdminMethod::FetchSockets,
            request,
            handle_fetch_sockets
        )
    }

    async fn list_rooms(
        &self,
        request: Request<pb::ListRoomsRequest>,
    ) -> Result<Response<pb::ListRoomsResponse>, Status> {
        rpc!(self, AdminMethod::ListRooms, request, handle_list_rooms)
    }

    async fn cluster_info(
        &self,
        request: Request<pb::ClusterInfoRequest>,
    ) -> Result<Response<pb::ClusterInfoResponse>, Status> {
        let info = async { Ok(self.handle_cluster_info()) };
        self.run(AdminMethod::ClusterInfo, request.metadata(), info)
            .await
    }
}

//! The gRPC contracts of the Socket.IO gateway, as Rust code.
//!
//! Two services, each in a versioned protobuf package whose `.proto` files
//! ship in this crate's `socketio_gateway/` folder:
//!
//! - [`admin::v1`] (`socketio_gateway.admin.v1.Admin`), backend -> gateway:
//!   emit to sockets, rooms and namespaces, make sockets join and leave rooms,
//!   disconnect them, list sockets, rooms and nodes. Every gateway node serves
//!   it and acts for the whole cluster.
//! - [`hooks::v1`] (`socketio_gateway.hooks.v1.Hooks`), gateway -> backend:
//!   what clients do (connect, events, disconnect), implemented by a backend.
//! - [`common::v1`] holds the [`Payload`](common::v1::Payload) both use: a
//!   JSON array of event arguments plus the binary attachments its
//!   placeholders reference.
//!
//! The code is generated at build time from the `.proto` files by `protox`
//! and `tonic-prost-build`; no `protoc` is needed.
//!
//! # Using it from a Rust backend
//!
//! ```toml
//! [dependencies]
//! gateway-proto = { path = "../socketio-gateway/proto" }
//! tonic = "0.14"
//! ```
//!
//! Drive the cluster through any node's admin port:
//!
//! ```no_run
//! use gateway_proto::admin::v1::{EmitRequest, Target, admin_client::AdminClient};
//! use gateway_proto::common::v1::Payload;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut admin = AdminClient::connect("http://127.0.0.1:50051").await?;
//! admin
//!     .emit(EmitRequest {
//!         target: Some(Target {
//!             namespace: "/chat".into(),
//!             rooms: vec!["lobby".into()],
//!             ..Default::default()
//!         }),
//!         event: "announcement".into(),
//!         payload: Some(Payload {
//!             json_args: r#"["maintenance at noon"]"#.into(),
//!             attachments: vec![],
//!         }),
//!         volatile: false,
//!     })
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! Receive what clients do by implementing the hooks and serving them:
//!
//! ```no_run
//! use gateway_proto::hooks::v1::{
//!     Allow, OnConnectRequest, OnConnectResponse, OnDisconnectRequest, OnDisconnectResponse,
//!     OnEventRequest, OnEventResponse, on_connect_response::Decision,
//!     hooks_server::{Hooks, HooksServer},
//! };
//! use tonic::{Request, Response, Status};
//!
//! struct Backend;
//!
//! #[tonic::async_trait]
//! impl Hooks for Backend {
//!     async fn on_connect(
//!         &self,
//!         request: Request<OnConnectRequest>,
//!     ) -> Result<Response<OnConnectResponse>, Status> {
//!         let allow = Allow {
//!             user_id: request.into_inner().user_id,
//!             ..Default::default()
//!         };
//!         Ok(Response::new(OnConnectResponse {
//!             decision: Some(Decision::Allow(allow)),
//!         }))
//!     }
//!
//!     async fn on_event(
//!         &self,
//!         request: Request<OnEventRequest>,
//!     ) -> Result<Response<OnEventResponse>, Status> {
//!         // Echo the arguments back as the acknowledgement.
//!         let event = request.into_inner();
//!         Ok(Response::new(OnEventResponse { ack_args: event.args }))
//!     }
//!
//!     async fn on_disconnect(
//!         &self,
//!         _request: Request<OnDisconnectRequest>,
//!     ) -> Result<Response<OnDisconnectResponse>, Status> {
//!         Ok(Response::new(OnDisconnectResponse {}))
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! tonic::transport::Server::builder()
//!     .add_service(HooksServer::new(Backend))
//!     .serve("127.0.0.1:50061".parse()?)
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Reflection
//!
//! [`FILE_DESCRIPTOR_SET`] is the encoded descriptor set of every file,
//! imports and comments included, for a gRPC reflection service (such as
//! `tonic-reflection`), so that `grpcurl` works without the `.proto` files.
//! The full service names are [`admin::v1::admin_server::SERVICE_NAME`] and
//! [`hooks::v1::hooks_server::SERVICE_NAME`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// The admin API (backend -> gateway).
pub mod admin {
    /// Version 1 of the admin API: package `socketio_gateway.admin.v1`.
    #[allow(clippy::doc_lazy_continuation)] // generated list items wrap unindented
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/socketio_gateway.admin.v1.rs"));
    }
}

/// The hooks (gateway -> backend).
pub mod hooks {
    /// Version 1 of the hooks: package `socketio_gateway.hooks.v1`.
    #[allow(clippy::doc_lazy_continuation)] // generated list items wrap unindented
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/socketio_gateway.hooks.v1.rs"));
    }
}

/// Types shared by the admin API and the hooks.
pub mod common {
    /// Version 1 of the shared types: package `socketio_gateway.common.v1`.
    #[allow(clippy::doc_lazy_continuation)] // generated list items wrap unindented
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/socketio_gateway.common.v1.rs"));
    }
}

/// Encoded `google.protobuf.FileDescriptorSet` of the gateway's `.proto` files
/// and their imports, with source comments: feed it to a gRPC reflection
/// service (`tonic_reflection::server::Builder::register_encoded_file_descriptor_set`).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/socketio_gateway_descriptor.bin"));

//! A small command-line client of the admin API: emit to a room, ask for
//! acknowledgements, list sockets, rooms and nodes of a running gateway.
//!
//! ```sh
//! # A node with an admin token (the admin API on 127.0.0.1:50051):
//! GATEWAY_ADMIN__TOKEN=s3cret-0123456789abcdef cargo run -p gateway
//!
//! # In another terminal:
//! export GATEWAY_ADMIN_TOKEN=s3cret-0123456789abcdef
//! cargo run -p gateway --example admin_client -- emit --room lobby announcement '"maintenance at noon"'
//! cargo run -p gateway --example admin_client -- ask --room lobby --timeout-ms 2000 poll '"yes or no?"'
//! cargo run -p gateway --example admin_client -- fetch --room lobby
//! cargo run -p gateway --example admin_client -- rooms
//! cargo run -p gateway --example admin_client -- nodes
//! ```
//!
//! Event arguments are JSON values, one per command-line argument (so a
//! string needs its quotes). `--addr https://...` with `--ca-cert` speaks TLS.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gateway_proto::admin::v1::admin_client::AdminClient;
use gateway_proto::admin::v1::{
    ClusterInfoRequest, EmitRequest, EmitWithAckRequest, FetchSocketsRequest, ListRoomsRequest,
    Target,
};
use gateway_proto::common::v1::Payload;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// Drives a Socket.IO gateway through its admin API.
#[derive(Parser, Debug)]
#[command(about)]
struct Cli {
    /// Admin API address (`http://` plaintext, `https://` TLS).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// Admin token, sent as `authorization: Bearer <token>`.
    #[arg(long, env = "GATEWAY_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM certificate to trust for TLS (e.g. the gateway's self-signed one).
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// Namespace.
    #[arg(long, short, default_value = "/")]
    namespace: String,
    /// Deadline of the call, ms.
    #[arg(long, default_value_t = 10_000)]
    deadline_ms: u64,
    #[command(subcommand)]
    command: Command,
}

/// Which sockets a command is for: none given means the whole namespace.
#[derive(clap::Args, Debug)]
struct Selector {
    /// Rooms whose members are selected (repeatable).
    #[arg(long = "room")]
    rooms: Vec<String>,
    /// Socket ids to select (repeatable).
    #[arg(long = "socket")]
    socket_ids: Vec<String>,
    /// Rooms whose members are left out (repeatable).
    #[arg(long = "except")]
    except_rooms: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Emit an event: `emit --room lobby chat '"hello"' '{"n":1}'`.
    Emit {
        #[command(flatten)]
        to: Selector,
        /// Drop it for sockets that cannot take it now.
        #[arg(long)]
        volatile: bool,
        event: String,
        /// Arguments, each one JSON value.
        args: Vec<String>,
    },
    /// Emit an event and print every socket's acknowledgement.
    Ask {
        #[command(flatten)]
        to: Selector,
        /// How long each socket has to answer, ms.
        #[arg(long, default_value_t = 5_000)]
        timeout_ms: u32,
        event: String,
        args: Vec<String>,
    },
    /// List the selected sockets.
    Fetch {
        #[command(flatten)]
        of: Selector,
    },
    /// List the rooms of the namespace with their member counts.
    Rooms {
        /// Also list every socket's own-id room.
        #[arg(long)]
        with_socket_rooms: bool,
    },
    /// List the live nodes of the cluster.
    Nodes,
}

/// Adds the bearer token to every call.
#[derive(Clone)]
struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            req.metadata_mut().insert("authorization", token.clone());
        }
        Ok(req)
    }
}

fn target(namespace: &str, s: Selector) -> Option<Target> {
    Some(Target {
        namespace: namespace.to_owned(),
        rooms: s.rooms,
        socket_ids: s.socket_ids,
        except_rooms: s.except_rooms,
        except_socket_ids: Vec::new(),
    })
}

/// One JSON array from arguments that are each a JSON value.
fn json_args(args: &[String]) -> anyhow::Result<Payload> {
    let values = args
        .iter()
        .map(|a| serde_json::from_str(a).with_context(|| format!("{a:?} is not a JSON value")))
        .collect::<anyhow::Result<Vec<serde_json::Value>>>()?;
    Ok(Payload {
        json_args: serde_json::Value::Array(values).to_string(),
        attachments: Vec::new(),
    })
}

/// A request with a deadline (sent as `grpc-timeout`).
fn with_deadline<T>(deadline: Duration, body: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(body);
    request.set_timeout(deadline);
    request
}

fn timestamp(t: Option<prost_types::Timestamp>) -> String {
    t.map_or_else(|| "-".to_owned(), |t| t.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut endpoint = Endpoint::from_shared(cli.addr.clone())?;
    if let Some(path) = &cli.ca_cert {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))?;
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to {}", cli.addr))?;
    let token = cli
        .token
        .as_deref()
        .map(|t| format!("Bearer {t}").parse())
        .transpose()
        .context("the token must be printable ASCII")?;
    let mut admin = AdminClient::with_interceptor(channel, Bearer(token));
    let deadline = Duration::from_millis(cli.deadline_ms);
    let ns = cli.namespace;

    let result = match cli.command {
        Command::Emit {
            to,
            volatile,
            event,
            args,
        } => admin
            .emit(with_deadline(
                deadline,
                EmitRequest {
                    target: target(&ns, to),
                    event,
                    payload: Some(json_args(&args)?),
                    volatile,
                },
            ))
            .await
            .map(|r| println!("handed to {} node(s)", r.into_inner().nodes_reached)),
        Command::Ask {
            to,
            timeout_ms,
            event,
            args,
        } => admin
            .emit_with_ack(with_deadline(
                deadline,
                EmitWithAckRequest {
                    target: target(&ns, to),
                    event,
                    payload: Some(json_args(&args)?),
                    timeout_ms,
                },
            ))
            .await
            .map(|r| {
                let r = r.into_inner();
                for ack in r.acks {
                    let args = ack.payload.map(|p| p.json_args).unwrap_or_default();
                    println!("{}  {args}", ack.socket_id);
                }
                for id in r.timed_out_socket_ids {
                    println!("{id}  (no answer)");
                }
                for node in r.missing_node_ids {
                    println!("node {node} did not report");
                }
            }),
        Command::Fetch { of } => admin
            .fetch_sockets(with_deadline(
                deadline,
                FetchSocketsRequest {
                    target: target(&ns, of),
                },
            ))
            .await
            .map(|r| {
                let r = r.into_inner();
                for s in r.sockets {
                    println!(
                        "{}  node={} transport={} user={} since={} rooms={}",
                        s.id,
                        s.node_id,
                        s.transport,
                        if s.user_id.is_empty() {
                            "-"
                        } else {
                            &s.user_id
                        },
                        timestamp(s.connected_at),
                        s.rooms.join(",")
                    );
                }
                for node in r.missing_node_ids {
                    println!("node {node} did not answer");
                }
            }),
        Command::Rooms { with_socket_rooms } => admin
            .list_rooms(with_deadline(
                deadline,
                ListRoomsRequest {
                    namespace: ns,
                    include_socket_rooms: with_socket_rooms,
                },
            ))
            .await
            .map(|r| {
                for room in r.into_inner().rooms {
                    println!("{}  {}", room.name, room.members);
                }
            }),
        Command::Nodes => admin
            .cluster_info(with_deadline(deadline, ClusterInfoRequest {}))
            .await
            .map(|r| {
                let r = r.into_inner();
                for n in r.nodes {
                    let me = if n.node_id == r.answering_node_id {
                        " (answering)"
                    } else {
                        ""
                    };
                    println!(
                        "{}{me}  version={} connections={} sockets={} started={}",
                        n.node_id,
                        n.version,
                        n.connections,
                        n.sockets,
                        timestamp(n.started_at)
                    );
                }
            }),
    };
    if let Err(status) = result {
        eprintln!("{:?}: {}", status.code(), status.message());
        std::process::exit(1);
    }
    Ok(())
}

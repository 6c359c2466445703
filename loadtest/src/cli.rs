//! Command-line interface: one subcommand per scenario, with the options
//! every scenario shares flattened into each.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::payload::{PayloadKind, PayloadSpec};
use crate::transport::{ConnectOpts, Node};

#[derive(Debug, Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Load generator for Socket.IO servers (Engine.IO v4 / Socket.IO v5), loopback only"
)]
pub struct Cli {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Subscribers in rooms, publishers emitting into the rooms at a fixed
    /// rate: deliveries/s, deliveries per server CPU-second, latency, loss.
    Fanout(FanoutArgs),
    /// Hold N connected sockets and report server memory per connection.
    Idle(IdleArgs),
    /// Connect and disconnect at a fixed rate: connect rate, errors, and
    /// server memory drift.
    Churn(ChurnArgs),
    /// Emit to single socket ids, across nodes: latency and loss.
    Targeted(TargetedArgs),
    /// Many small rooms ("chat"): sockets in rooms of a few members each,
    /// spread over the nodes, every room with its own low rate.
    Chat(ChatArgs),
    /// Print one Markdown table with ratios from a comparison run's JSON
    /// reports (see compare.sh).
    Table(crate::table::TableArgs),
}

impl Scenario {
    /// The shared options; `None` for `table`, which runs no clients.
    pub fn common(&self) -> Option<&Common> {
        match self {
            Self::Fanout(a) => Some(&a.common),
            Self::Idle(a) => Some(&a.common),
            Self::Churn(a) => Some(&a.common),
            Self::Targeted(a) => Some(&a.common),
            Self::Chat(a) => Some(&a.common),
            Self::Table(_) => None,
        }
    }
}

/// Options shared by every scenario.
#[derive(Debug, Clone, Args, Serialize)]
pub struct Common {
    /// Server nodes, comma separated; clients are spread over them round-robin.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub nodes: String,
    /// Engine.IO path.
    #[arg(long, default_value = "/socket.io/")]
    pub path: String,
    /// Socket.IO namespace.
    #[arg(long, default_value = "/")]
    pub namespace: String,
    /// Share of clients using HTTP long-polling instead of WebSocket (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub polling_share: f64,
    /// Worker threads running the clients.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Loopback source addresses to spread clients over (127.0.0.2 and up);
    /// 0 lets the kernel pick.
    #[arg(long, default_value_t = 32)]
    pub source_ips: u8,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Bound on one connection's handshake, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Bound on connecting every client, seconds.
    #[arg(long, default_value_t = 180.0)]
    pub setup_timeout: f64,
    /// Bound on waiting for one ack ($join, $publish), seconds.
    #[arg(long, default_value_t = 10.0)]
    pub ack_timeout: f64,
    /// WebSocket read buffer per connection, bytes.
    #[arg(long, default_value_t = 4096)]
    pub ws_read_buffer: usize,
    /// WebSocket clients offer permessage-deflate (RFC 7692) and inflate
    /// what arrives compressed; they send uncompressed. Off: tungstenite,
    /// which cannot compress.
    #[arg(long)]
    pub ws_deflate: bool,
    /// Server process ids to sample (CPU time, RSS) from /proc, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub server_pids: Vec<u32>,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Exit non-zero when anything was lost (or a client failed).
    #[arg(long)]
    pub assert_zero_loss: bool,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

impl Common {
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.polling_share) {
            bail!("--polling-share must be within 0..1");
        }
        if self.source_ips > 250 {
            bail!("--source-ips must be at most 250 (127.0.0.2 ..= 127.0.0.251)");
        }
        if self.threads == 0 || self.threads > 64 {
            bail!("--threads must be within 1..=64");
        }
        if self.connect_concurrency == 0 {
            bail!("--connect-concurrency must be positive");
        }
        for (name, v) in [
            ("--connect-timeout", self.connect_timeout),
            ("--setup-timeout", self.setup_timeout),
            ("--ack-timeout", self.ack_timeout),
        ] {
            if !(v > 0.0 && v <= 3600.0) {
                bail!("{name} must be within (0, 3600] seconds");
            }
        }
        if !self.path.starts_with('/') || !self.namespace.starts_with('/') {
            bail!("--path and --namespace start with '/'");
        }
        if self.ws_read_buffer < 512 {
            bail!("--ws-read-buffer must be at least 512");
        }
        Ok(())
    }

    pub fn nodes(&self) -> Result<Vec<Node>> {
        Node::parse_list(&self.nodes)
    }

    pub fn connect_opts(&self) -> ConnectOpts {
        ConnectOpts {
            path: self.path.clone(),
            namespace: self.namespace.clone(),
            ws_read_buffer: self.ws_read_buffer,
            timeout: secs(self.connect_timeout),
            source_ips: self.source_ips,
            ws_deflate: self.ws_deflate,
        }
    }
}

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// How publishers emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// Socket.IO clients emitting the publish event (`$publish`).
    Client,
    /// The gateway's gRPC admin API (Emit); needs the `grpc` feature.
    Grpc,
}

/// When each publisher sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Each publisher's gaps drawn from an exponential distribution (a
    /// Poisson process) with its own seed: independent publishers, as real
    /// traffic has.
    Poisson,
    /// Every publisher on one fixed period from one common start: all of
    /// them send together, in bursts.
    Lockstep,
}

/// Where publishers and receivers connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Both spread over every node, round-robin.
    Spread,
    /// Publishers on the first node, receivers on the others: every
    /// delivery crosses the bus (needs two nodes or more).
    Cross,
}

/// Options of the publishing side, shared by `fanout`, `targeted` and `chat`.
#[derive(Debug, Clone, Args, Serialize)]
pub struct PublishArgs {
    /// Publishing connections (clients, or admin API channels).
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// Total messages per second over all publishers.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Length of each message's payload: the string's content (stamp +
    /// padding), or the JSON text (`--payload-kind json`).
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// What fills each message: `padding` (the stamp padded with `x`) or
    /// `json` (a JSON object of varied records, as applications send; use
    /// it to measure compression).
    #[arg(long, value_enum, default_value_t = PayloadKind::Padding)]
    pub payload_kind: PayloadKind,
    /// Event name the receivers get.
    #[arg(long, default_value = "msg")]
    pub event: String,
    /// Client event that publishes: (room, event, payload) with an ack.
    #[arg(long, default_value = "$publish")]
    pub publish_event: String,
    #[arg(long, value_enum, default_value_t = Via::Client)]
    pub via: Via,
    /// Admin API address for `--via grpc`.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub admin: String,
    /// After publishing, stop waiting for missing deliveries once none has
    /// arrived for this many seconds.
    #[arg(long, default_value_t = 5.0)]
    pub drain_timeout: f64,
    /// When publishers send.
    #[arg(long, value_enum, default_value_t = Schedule::Poisson)]
    pub schedule: Schedule,
    /// Seed of the publishers' schedules (publisher p uses seed + p) and of
    /// the chat scenario's room sizes: runs with one seed send alike.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl PublishArgs {
    pub fn payload(&self) -> PayloadSpec {
        PayloadSpec {
            kind: self.payload_kind,
            bytes: self.payload_bytes,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.publishers == 0 {
            bail!("--publishers must be positive");
        }
        if !(self.rate > 0.0 && self.rate <= 1_000_000.0) {
            bail!("--rate must be within (0, 1e6] messages/s");
        }
        if !(self.duration > 0.0 && self.duration <= 3600.0) {
            bail!("--duration must be within (0, 3600] seconds");
        }
        if self.payload_bytes > 1 << 20 {
            bail!("--payload-bytes must be at most 1 MiB");
        }
        if !(self.drain_timeout > 0.0 && self.drain_timeout <= 600.0) {
            bail!("--drain-timeout must be within (0, 600] seconds");
        }
        let total = self.rate * self.duration;
        if total > 50_000_000.0 {
            bail!("--rate x --duration must stay below 50M messages");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub publish: PublishArgs,
    /// Subscribing sockets.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Rooms; subscriber i joins `<room-prefix><i % rooms>`.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    #[arg(long, default_value = "room-")]
    pub room_prefix: String,
    /// Client event that joins a room: (room) with an ack.
    #[arg(long, default_value = "$join")]
    pub join_event: String,
    /// Where publishers and subscribers connect.
    #[arg(long, value_enum, default_value_t = Placement::Spread)]
    pub placement: Placement,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct ChatArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub publish: PublishArgs,
    /// Receiving sockets, each in one room.
    #[arg(long, default_value_t = 20_000)]
    pub sockets: usize,
    /// Fewest and most members of a room (sizes drawn uniformly with
    /// `--seed`; the last room takes what is left).
    #[arg(long, default_value_t = 2)]
    pub min_members: usize,
    #[arg(long, default_value_t = 8)]
    pub max_members: usize,
    #[arg(long, default_value = "chat-")]
    pub room_prefix: String,
    #[arg(long, default_value = "$join")]
    pub join_event: String,
}

impl ChatArgs {
    pub fn validate(&self) -> Result<()> {
        if self.sockets == 0 {
            bail!("--sockets must be positive");
        }
        if self.min_members == 0 || self.min_members > self.max_members {
            bail!("--min-members must be within 1..=--max-members");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct TargetedArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub publish: PublishArgs,
    /// Target sockets; each message goes to one of them by socket id,
    /// preferring targets on another node than the publisher's.
    #[arg(long, default_value_t = 100)]
    pub targets: usize,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Sockets to hold.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Seconds to hold them once all are connected.
    #[arg(long, default_value_t = 10.0)]
    pub hold: f64,
    /// Rooms to join (socket i joins `<room-prefix><i % rooms>`); 0: none.
    #[arg(long, default_value_t = 0)]
    pub rooms: usize,
    #[arg(long, default_value = "idle-")]
    pub room_prefix: String,
    #[arg(long, default_value = "$join")]
    pub join_event: String,
    /// Seconds to wait before the first RSS sample and after closing.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct ChurnArgs {
    #[command(flatten)]
    pub common: Common,
    /// New connections per second.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Seconds of churning.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// How long each connection stays, milliseconds.
    #[arg(long, default_value_t = 200)]
    pub hold_ms: u64,
    /// Rooms to join (connection i joins `<room-prefix><i % rooms>`); 0: none.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    #[arg(long, default_value = "churn-")]
    pub room_prefix: String,
    #[arg(long, default_value = "$join")]
    pub join_event: String,
    /// Connections alive at once at most; beyond it new ones wait.
    #[arg(long, default_value_t = 2000)]
    pub max_inflight: usize,
    /// Seconds to wait before the first and after the last RSS sample.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
}

impl ChurnArgs {
    pub fn validate(&self) -> Result<()> {
        if !(self.rate > 0.0 && self.rate <= 100_000.0) {
            bail!("--rate must be within (0, 100000] connections/s");
        }
        if !(self.duration > 0.0 && self.duration <= 3600.0) {
            bail!("--duration must be within (0, 3600] seconds");
        }
        if self.max_inflight == 0 {
            bail!("--max-inflight must be positive");
        }
        if self.hold_ms > 600_000 {
            bail!("--hold-ms must be at most 600000");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fanout_with_defaults_and_lists() {
        let cli = Cli::try_parse_from([
            "loadtest",
            "fanout",
            "--nodes",
            "http://127.0.0.1:3001,http://127.0.0.1:3002",
            "--subscribers",
            "2000",
            "--server-pids",
            "10,20",
            "--polling-share",
            "0.1",
        ])
        .unwrap();
        let Scenario::Fanout(a) = cli.scenario else {
            panic!("not fanout");
        };
        assert_eq!(a.subscribers, 2000);
        assert_eq!(a.rooms, 10);
        assert_eq!(a.publish.publish_event, "$publish");
        assert_eq!(a.publish.via, Via::Client);
        assert_eq!(a.publish.schedule, Schedule::Poisson);
        assert_eq!(a.placement, Placement::Spread);
        assert_eq!(a.common.server_pids, vec![10, 20]);
        assert_eq!(a.common.nodes().unwrap().len(), 2);
        a.common.validate().unwrap();
        a.publish.validate().unwrap();
    }

    #[test]
    fn rejects_bad_values() {
        let cli = Cli::try_parse_from(["loadtest", "idle", "--polling-share", "2"]).unwrap();
        assert!(cli.scenario.common().unwrap().validate().is_err());
        assert!(Cli::try_parse_from(["loadtest", "churn", "--rate", "x"]).is_err());
        let cli = Cli::try_parse_from(["loadtest", "targeted", "--rate", "0"]).unwrap();
        let Scenario::Targeted(a) = cli.scenario else {
            panic!("not targeted");
        };
        assert!(a.publish.validate().is_err());
    }
}

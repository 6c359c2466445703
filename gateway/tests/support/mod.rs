//! The harness every integration test shares. A test binary says `mod
//! support;` and imports what it uses:
//!
//! - [`node`]: one test node type, built like the binary builds a node and
//!   served on port 0, with hooks, a shared bus, the admin API and the
//!   operations port as options;
//! - [`conformance`]: the server the official Socket.IO test suites expect;
//! - [`eio`]: raw Engine.IO clients over WebSocket and long-polling that
//!   exchange exact packet strings;
//! - [`sio`]: a Socket.IO client for tests about events, rooms and acks;
//! - [`raw`]: a WebSocket client on a bare TCP stream, and reading a
//!   connection until the node closes it;
//! - [`redis`]: Redis servers of the test's own (single, Cluster,
//!   Sentinel);
//! - [`recovery`]: connection state recovery from a client's side;
//! - [`metrics`]: a node's metrics, rendered or scraped;
//! - [`otlp`]: an OTLP/gRPC trace receiver that keeps the spans;
//! - [`process`]: the `gateway` binary run as a process, its output read;
//! - [`wait`]: waits that end when their condition holds, failing at a
//!   deadline (nothing here sleeps to make an assertion);
//! - [`tools`]: what a test does when `redis-server` or Node is missing;
//! - [`tempdir`]: a temporary directory removed on drop.

// Each test binary compiles this whole module and uses only part of it.
#![allow(dead_code)]

pub mod conformance;
pub mod eio;
pub mod metrics;
pub mod node;
pub mod otlp;
pub mod process;
pub mod raw;
pub mod recovery;
pub mod redis;
pub mod scrape;
pub mod sio;
pub mod tempdir;
pub mod tools;
pub mod wait;

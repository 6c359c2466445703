//! The pure Socket.IO v5 / Engine.IO v4 protocol codec: bytes in, packets out.
//!
//! No I/O and no tokio here: [`engineio`] decodes and encodes Engine.IO
//! packets and HTTP long-polling payloads (including the open handshake),
//! [`websocket`] the WebSocket framing (RFC 6455: handshake key, frame
//! headers, the client frame decoder, close codes), [`deflate`] its one
//! extension (permessage-deflate, RFC 7692), and [`socketio`]
//! decodes, validates and encodes the Socket.IO packet text carried inside
//! Engine.IO message packets.
//! Decoding borrows from the input, never panics, and reports every
//! malformed input as a typed error.

pub mod deflate;
pub mod engineio;
pub mod socketio;
pub mod websocket;

//! Between the gateway's types and the hooks service's protobuf messages.

use std::collections::HashMap;

use bytes::Bytes;
use gateway_proto::common::v1 as pb_common;

use crate::reason::DisconnectReason;
use crate::socketio::{Payload, payload};

/// `DisconnectReason` as Socket.IO's server-side disconnect reason text.
pub(crate) fn socketio_reason(reason: DisconnectReason) -> &'static str {
    match reason {
        DisconnectReason::ClientDisconnect => "client namespace disconnect",
        DisconnectReason::ClientClose | DisconnectReason::TransportClose => "transport close",
        DisconnectReason::TransportError => "transport error",
        DisconnectReason::PingTimeout => "ping timeout",
        DisconnectReason::ConnectTimeout => "connect timeout",
        DisconnectReason::ServerDisconnect => "server namespace disconnect",
        DisconnectReason::SlowConsumer => "slow consumer",
        DisconnectReason::ProtocolError => "parse error",
        DisconnectReason::RateLimited => "rate limited",
        DisconnectReason::Shutdown => "server shutting down",
    }
}

/// Query parameters of a raw query string; a repeated name keeps its last value.
pub(super) fn parse_query(query: &str) -> HashMap<String, String> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Request headers, names in lower case, repeated headers joined with `, `.
pub(super) fn headers_map(headers: &[(Box<str>, Box<str>)]) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = HashMap::with_capacity(headers.len());
    for (name, value) in headers {
        out.entry(name.to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(value);
            })
            .or_insert_with(|| value.to_string());
    }
    out
}

pub(super) fn to_proto_payload(payload: Payload) -> pb_common::Payload {
    pb_common::Payload {
        json_args: payload.args,
        attachments: payload.attachments.iter().map(|b| b.to_vec()).collect(),
    }
}

/// A payload from a backend, checked (a JSON array whose placeholders match
/// its attachments) before it can reach a client.
pub(super) fn from_proto_payload(payload: pb_common::Payload) -> Result<Payload, String> {
    let args = if payload.json_args.trim().is_empty() {
        "[]".to_owned()
    } else {
        payload.json_args
    };
    let payload = Payload {
        args,
        attachments: payload.attachments.into_iter().map(Bytes::from).collect(),
    };
    payload::validate(&payload).map_err(|e| format!("invalid ack_args: {e}"))?;
    Ok(payload)
}

/// Optional JSON text: empty is none, anything else must parse.
pub(super) fn json_field(text: &str, field: &str) -> Result<Option<serde_json::Value>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| format!("{field} is not JSON: {e}"))
}

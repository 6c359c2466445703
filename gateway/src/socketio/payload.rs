//! Event payloads in Socket.IO's own shape, and their encoding into frames
//! (once per emit, shared by every recipient).

use bytes::Bytes;

use crate::engine::Frame;
use crate::protocol::socketio::{self, DecodeError, PacketKind};

/// Arguments of an event or an ack: the JSON text of an array, with binary
/// attachments referenced by `{"_placeholder":true,"num":N}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// JSON array text, kept byte for byte (key order included).
    pub args: String,
    pub attachments: Vec<Bytes>,
}

impl Payload {
    /// `[]`, no attachments.
    pub fn empty() -> Self {
        Self {
            args: "[]".to_owned(),
            attachments: Vec::new(),
        }
    }

    /// Arguments from JSON values (no binary).
    pub fn from_values(values: &[serde_json::Value]) -> Self {
        Self {
            args: serde_json::to_string(values).unwrap_or_else(|_| "[]".to_owned()),
            attachments: Vec::new(),
        }
    }
}

/// Errors building a packet from caller-supplied parts.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("arguments must be the JSON text of an array")]
    NotAnArray,
    #[error("placeholders do not match the {0} attachment(s)")]
    Placeholders(usize),
}

/// Checks a payload built by a backend before it is sent anywhere: a JSON
/// array whose placeholders and attachments match one to one.
pub(crate) fn validate(payload: &Payload) -> Result<(), PayloadError> {
    // Valid JSON whose first token is `[` is an array; the placeholder
    // check parses the text (once) and tells whether it is valid.
    let json_whitespace = [' ', '\t', '\n', '\r'];
    if !payload
        .args
        .trim_start_matches(json_whitespace)
        .starts_with('[')
    {
        return Err(PayloadError::NotAnArray);
    }
    let n = payload.attachments.len();
    socketio::check_placeholders_one_to_one(&payload.args, n).map_err(|e| match e {
        DecodeError::InvalidJson => PayloadError::NotAnArray,
        _ => PayloadError::Placeholders(n),
    })
}

fn frames(text: String, attachments: &[Bytes]) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(1 + attachments.len());
    frames.push(Frame::text(text));
    frames.extend(attachments.iter().cloned().map(Frame::Binary));
    frames
}

/// `event(...args)` to namespace `nsp`, with an ack id when one is wanted.
pub(crate) fn encode_event(
    nsp: &str,
    event: &str,
    payload: &Payload,
    ack: Option<u64>,
) -> Result<Vec<Frame>, PayloadError> {
    Ok(frames(
        event_text(nsp, event, payload, ack)?,
        &payload.attachments,
    ))
}

/// The Engine.IO text packet of `event(...args)` (its attachments follow
/// it as binary frames). Its data, the JSON array, ends the text.
pub(crate) fn event_text(
    nsp: &str,
    event: &str,
    payload: &Payload,
    ack: Option<u64>,
) -> Result<String, PayloadError> {
    let mut data = String::with_capacity(payload.args.len() + event.len() + 4);
    socketio::write_event_array(&mut data, event, &payload.args)
        .map_err(|_| PayloadError::NotAnArray)?;
    let kind = if payload.attachments.is_empty() {
        PacketKind::Event
    } else {
        PacketKind::BinaryEvent
    };
    let mut text = String::with_capacity(data.len() + nsp.len() + 24);
    text.push('4');
    socketio::encode_into(
        &mut text,
        kind,
        nsp,
        payload.attachments.len(),
        ack,
        Some(&data),
    );
    Ok(text)
}

/// The frames of a stored event: its text (offset included) and its
/// attachments.
pub(crate) fn logged_frames(packet: &crate::cluster::recovery::LoggedPacket) -> Vec<Frame> {
    frames(packet.packet.text.clone(), &packet.packet.attachments)
}

/// The answer to the client's ack `id`.
pub(crate) fn encode_ack(nsp: &str, id: u64, payload: &Payload) -> Vec<Frame> {
    let kind = if payload.attachments.is_empty() {
        PacketKind::Ack
    } else {
        PacketKind::BinaryAck
    };
    let mut text = String::with_capacity(payload.args.len() + nsp.len() + 24);
    text.push('4');
    socketio::encode_into(
        &mut text,
        kind,
        nsp,
        payload.attachments.len(),
        Some(id),
        Some(&payload.args),
    );
    frames(text, &payload.attachments)
}

/// A control packet (CONNECT reply, CONNECT_ERROR, DISCONNECT) with JSON data.
pub(crate) fn encode_control(kind: PacketKind, nsp: &str, data: Option<&str>) -> Frame {
    let mut text = String::with_capacity(nsp.len() + data.map_or(0, str::len) + 4);
    text.push('4');
    socketio::encode_into(&mut text, kind, nsp, 0, None, data);
    Frame::text(text)
}

/// Bytes of client input (a namespace name, an event name) a reply echoes
/// at most.
pub(crate) const ECHO_MAX: usize = 128;

/// `input` cut to at most [`ECHO_MAX`] bytes on a character boundary, for a
/// reply that echoes it: what the node writes in answer to one client's
/// input stays small whatever that input was.
pub(crate) fn echoed(input: &str) -> &str {
    if input.len() <= ECHO_MAX {
        return input;
    }
    let mut end = ECHO_MAX;
    while !input.is_char_boundary(end) {
        end -= 1;
    }
    &input[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_input_is_cut_on_a_char_boundary() {
        assert_eq!(echoed("/short"), "/short");
        let long = format!("/{}", "n".repeat(900_000));
        assert_eq!(echoed(&long), &long[..ECHO_MAX]);
        // "é" is two bytes: the cut may not split it.
        let accented = format!("/{}", "é".repeat(100));
        let cut = echoed(&accented);
        assert_eq!(cut.len(), ECHO_MAX - 1);
        assert!(accented.starts_with(cut));
    }

    fn text(f: &Frame) -> &str {
        match f {
            Frame::Text(t) => t.as_str(),
            _ => panic!("not text"),
        }
    }

    #[test]
    fn encodes_events_acks_and_control_packets() {
        let p = Payload {
            args: r#"[1,"2",{"3":[true],"a":0}]"#.into(),
            attachments: vec![],
        };
        let f = encode_event("/", "message-back", &p, None).unwrap();
        assert_eq!(
            text(&f[0]),
            r#"42["message-back",1,"2",{"3":[true],"a":0}]"#
        );
        let f = encode_event("/custom", "auth", &Payload::from_values(&[]), Some(7)).unwrap();
        assert_eq!(text(&f[0]), r#"42/custom,7["auth"]"#);
        let bin = Payload {
            args: r#"[{"_placeholder":true,"num":0}]"#.into(),
            attachments: vec![Bytes::from_static(&[1, 2, 3])],
        };
        let f = encode_ack("/", 789, &bin);
        assert_eq!(text(&f[0]), r#"461-789[{"_placeholder":true,"num":0}]"#);
        assert_eq!(f[1], Frame::Binary(Bytes::from_static(&[1, 2, 3])));
        let f = encode_control(
            PacketKind::ConnectError,
            "/random",
            Some(r#"{"message":"Invalid namespace"}"#),
        );
        assert_eq!(text(&f), r#"44/random,{"message":"Invalid namespace"}"#);
        assert!(
            encode_event(
                "/",
                "x",
                &Payload {
                    args: "{}".into(),
                    attachments: vec![]
                },
                None
            )
            .is_err()
        );
    }

    #[test]
    fn validates_backend_payloads() {
        assert!(validate(&Payload::empty()).is_ok());
        assert!(
            validate(&Payload {
                args: "{}".into(),
                attachments: vec![]
            })
            .is_err()
        );
        assert!(
            validate(&Payload {
                args: "[".into(),
                attachments: vec![]
            })
            .is_err()
        );
        let bad = Payload {
            args: r#"[{"_placeholder":true,"num":1}]"#.into(),
            attachments: vec![Bytes::new()],
        };
        assert!(validate(&bad).is_err());
        // An attachment no placeholder points at.
        let unused = Payload {
            args: "[1]".into(),
            attachments: vec![Bytes::new()],
        };
        assert!(matches!(
            validate(&unused),
            Err(PayloadError::Placeholders(1))
        ));
    }
}

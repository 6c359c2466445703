//! The msgpack parser (`server.parser = "msgpack"`), wire-compatible with
//! `socket.io-msgpack-parser`: a whole Socket.IO packet is one msgpack map
//! `{type, data, nsp, id}` in one binary Engine.IO message, binary values
//! in place (no attachments, no binary packet types on the wire).
//!
//! Inside the node every packet keeps the JSON form (JSON text and
//! attachments referenced by placeholders) that the admin API, the hooks,
//! the cluster bus and the recovery logs use: packets are converted at the
//! edge only. A client's packet becomes the JSON-form text (and
//! attachments) a JSON client would have sent, then goes the same way;
//! the frames of an outgoing packet become one msgpack frame, once per
//! packet whatever the number of its recipients.

use bytes::Bytes;
use rmpv::Value;
use serde_json::Value as Json;

use crate::engine::Frame;
use crate::protocol::socketio::{self, DecodeLimits, PacketKind};

/// Nesting a client's packet may have at most.
const MAX_DEPTH: usize = 32;

/// Values (of any kind, containers included) a client's packet may hold at
/// most. A value takes one byte on the wire but tens of bytes decoded, so
/// without this bound a packet of `max_payload` nils would cost a hundred
/// times `max_payload` of memory while it is converted.
const MAX_VALUES: usize = 100_000;

/// Why a client's msgpack packet is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MsgpackError {
    #[error("not one msgpack value")]
    Malformed,
    #[error("not a Socket.IO packet map")]
    NotAPacket,
    #[error("map key that is not a string")]
    NonStringKey,
    #[error("string that is not UTF-8")]
    InvalidUtf8,
    #[error("more than {MAX_VALUES} values")]
    TooManyValues,
}

/// A client's packet in JSON form: the Socket.IO packet text (as after the
/// Engine.IO `4`) and its attachments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decoded {
    pub(crate) text: String,
    pub(crate) attachments: Vec<Bytes>,
}

/// A client's binary message as a packet in JSON form. The text is then
/// decoded and checked like any client's.
pub(crate) fn decode(message: &[u8]) -> Result<Decoded, MsgpackError> {
    if count_values(message)? > MAX_VALUES {
        return Err(MsgpackError::TooManyValues);
    }
    let mut rest = message;
    let value = rmpv::decode::read_value_with_max_depth(&mut rest, MAX_DEPTH)
        .map_err(|_| MsgpackError::Malformed)?;
    if !rest.is_empty() {
        return Err(MsgpackError::Malformed);
    }
    let Value::Map(fields) = value else {
        return Err(MsgpackError::NotAPacket);
    };
    let (mut kind, mut nsp, mut id, mut data) = (None, None, None, None);
    for (k, v) in fields {
        match (k.as_str(), v) {
            (Some("type"), Value::Integer(t)) => kind = t.as_u64(),
            (Some("nsp"), Value::String(s)) => {
                nsp = Some(s.into_str().ok_or(MsgpackError::InvalidUtf8)?)
            }
            (Some("id"), Value::Integer(i)) => {
                id = Some(i.as_u64().ok_or(MsgpackError::NotAPacket)?)
            }
            // notepack.io writes `undefined` as an extension; `null` alike.
            (Some("id" | "data"), Value::Nil | Value::Ext(..)) => {}
            (Some("data"), v) => data = Some(v),
            (Some("type" | "nsp" | "id"), _) => return Err(MsgpackError::NotAPacket),
            _ => {}
        }
    }
    let kind = match kind {
        Some(0) => PacketKind::Connect,
        Some(1) => PacketKind::Disconnect,
        Some(2) => PacketKind::Event,
        Some(3) => PacketKind::Ack,
        Some(4) => PacketKind::ConnectError,
        _ => return Err(MsgpackError::NotAPacket),
    };
    let nsp = nsp.ok_or(MsgpackError::NotAPacket)?;
    let mut attachments = Vec::new();
    let data = data
        .map(|v| to_json(v, &mut attachments).map(|j| j.to_string()))
        .transpose()?;
    let kind = match kind {
        PacketKind::Event if !attachments.is_empty() => PacketKind::BinaryEvent,
        PacketKind::Ack if !attachments.is_empty() => PacketKind::BinaryAck,
        k => k,
    };
    let mut text = String::with_capacity(nsp.len() + data.as_ref().map_or(0, String::len) + 8);
    socketio::encode_into(
        &mut text,
        kind,
        &nsp,
        attachments.len(),
        id,
        data.as_deref(),
    );
    Ok(Decoded { text, attachments })
}

/// How many values the one msgpack value in `data` holds (itself
/// included), read from the markers and lengths alone, stopping past
/// [`MAX_VALUES`]; an error when `data` is not one whole value.
fn count_values(data: &[u8]) -> Result<usize, MsgpackError> {
    let (mut at, mut pending, mut count) = (0usize, 1usize, 0usize);
    let len_at = |at: usize, n: usize| -> Result<usize, MsgpackError> {
        let bytes = data.get(at..at + n).ok_or(MsgpackError::Malformed)?;
        Ok(bytes
            .iter()
            .fold(0usize, |acc, b| acc << 8 | usize::from(*b)))
    };
    while pending > 0 {
        if count > MAX_VALUES {
            return Ok(count);
        }
        let marker = *data.get(at).ok_or(MsgpackError::Malformed)?;
        at += 1;
        pending -= 1;
        count += 1;
        // (children, bytes to skip) of this value.
        let (children, skip) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (2 * usize::from(marker & 0x0f), 0),
            0x90..=0x9f => (usize::from(marker & 0x0f), 0),
            0xa0..=0xbf => (0, usize::from(marker & 0x1f)),
            0xc4 | 0xd9 => (0, len_at(at, 1)? + 1),
            0xc5 | 0xda => (0, len_at(at, 2)? + 2),
            0xc6 | 0xdb => (0, len_at(at, 4)? + 4),
            0xc7 => (0, len_at(at, 1)? + 2),
            0xc8 => (0, len_at(at, 2)? + 3),
            0xc9 => (0, len_at(at, 4)? + 5),
            0xca => (0, 4),
            0xcb => (0, 8),
            0xcc | 0xd0 => (0, 1),
            0xcd | 0xd1 => (0, 2),
            0xce | 0xd2 => (0, 4),
            0xcf | 0xd3 => (0, 8),
            0xd4..=0xd8 => (0, 1 + (1 << (marker - 0xd4))),
            0xdc => (len_at(at, 2)?, 2),
            0xdd => (len_at(at, 4)?, 4),
            0xde => (2 * len_at(at, 2)?, 2),
            0xdf => (2 * len_at(at, 4)?, 4),
            0xc1 => return Err(MsgpackError::Malformed),
        };
        at = at.checked_add(skip).ok_or(MsgpackError::Malformed)?;
        if at > data.len() {
            return Err(MsgpackError::Malformed);
        }
        pending = pending.saturating_add(children);
    }
    if at != data.len() {
        return Err(MsgpackError::Malformed);
    }
    Ok(count)
}

/// A msgpack value as JSON: binary values become placeholders for
/// `attachments`, extensions (`undefined`, dates) null.
fn to_json(value: Value, attachments: &mut Vec<Bytes>) -> Result<Json, MsgpackError> {
    Ok(match value {
        Value::Nil | Value::Ext(..) => Json::Null,
        Value::Boolean(b) => Json::Bool(b),
        Value::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => Json::from(u),
            (None, Some(n)) => Json::from(n),
            _ => Json::Null,
        },
        Value::F32(f) => float(f64::from(f)),
        Value::F64(f) => float(f),
        Value::String(s) => Json::String(s.into_str().ok_or(MsgpackError::InvalidUtf8)?),
        Value::Binary(b) => {
            let mut placeholder = serde_json::Map::new();
            placeholder.insert("_placeholder".into(), Json::Bool(true));
            placeholder.insert("num".into(), Json::from(attachments.len()));
            attachments.push(Bytes::from(b));
            Json::Object(placeholder)
        }
        Value::Array(items) => Json::Array(
            items
                .into_iter()
                .map(|v| to_json(v, attachments))
                .collect::<Result<_, _>>()?,
        ),
        Value::Map(fields) => {
            let mut map = serde_json::Map::with_capacity(fields.len());
            for (k, v) in fields {
                let Value::String(k) = k else {
                    return Err(MsgpackError::NonStringKey);
                };
                let k = k.into_str().ok_or(MsgpackError::InvalidUtf8)?;
                map.insert(k, to_json(v, attachments)?);
            }
            Json::Object(map)
        }
    })
}

fn float(f: f64) -> Json {
    serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)
}

/// The frames of outgoing packets in JSON form (a text packet, then its
/// attachments) as msgpack frames, one per packet. Frames that are not a
/// Socket.IO packet pass as they are.
pub(crate) fn encode(frames: &[Frame]) -> Vec<Frame> {
    let mut out = Vec::with_capacity(frames.len());
    let mut i = 0;
    while i < frames.len() {
        let frame = &frames[i];
        i += 1;
        let Frame::Text(text) = frame else {
            out.push(frame.clone());
            continue;
        };
        let limits = DecodeLimits {
            max_attachments: usize::MAX,
        };
        let Some(packet) = text
            .as_str()
            .strip_prefix('4')
            .and_then(|t| socketio::decode(t, &limits).ok())
        else {
            out.push(frame.clone());
            continue;
        };
        let end = (i + packet.attachments).min(frames.len());
        let attachments: Vec<&[u8]> = frames[i..end]
            .iter()
            .map(|f| match f {
                Frame::Binary(b) => &b[..],
                _ => &[][..],
            })
            .collect();
        i = end;
        let kind = match packet.kind {
            PacketKind::BinaryEvent => PacketKind::Event,
            PacketKind::BinaryAck => PacketKind::Ack,
            k => k,
        };
        let mut fields = vec![(Value::from("type"), Value::from(kind as u8))];
        if let Some(data) = packet.data {
            let json: Json = serde_json::from_str(data).unwrap_or(Json::Null);
            fields.push((Value::from("data"), to_msgpack(json, &attachments)));
        }
        fields.push((Value::from("nsp"), Value::from(packet.nsp)));
        if let Some(id) = packet.id {
            fields.push((Value::from("id"), Value::from(id)));
        }
        let mut bytes = Vec::with_capacity(text.len() + 16);
        rmpv::encode::write_value(&mut bytes, &Value::Map(fields))
            .expect("writing to a Vec cannot fail");
        out.push(Frame::Binary(Bytes::from(bytes)));
    }
    out
}

/// JSON data as msgpack, placeholders replaced by their attachments.
fn to_msgpack(json: Json, attachments: &[&[u8]]) -> Value {
    match json {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Boolean(b),
        Json::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Value::from(u),
            (None, Some(i)) => Value::from(i),
            _ => Value::F64(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => Value::from(s),
        Json::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| to_msgpack(v, attachments))
                .collect(),
        ),
        Json::Object(map) => {
            if let Some(n) = placeholder(&map)
                && let Some(bytes) = attachments.get(n)
            {
                return Value::Binary(bytes.to_vec());
            }
            Value::Map(
                map.into_iter()
                    .map(|(k, v)| (Value::from(k), to_msgpack(v, attachments)))
                    .collect(),
            )
        }
    }
}

/// The attachment number of a placeholder object.
fn placeholder(map: &serde_json::Map<String, Json>) -> Option<usize> {
    if map.len() != 2 || map.get("_placeholder") != Some(&Json::Bool(true)) {
        return None;
    }
    map.get("num")?.as_u64().map(|n| n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(fields: Vec<(&str, Value)>) -> Vec<u8> {
        let map = Value::Map(
            fields
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect(),
        );
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &map).unwrap();
        out
    }

    #[test]
    fn client_packets_become_their_json_form() {
        let event = packed(vec![
            ("type", Value::from(2)),
            (
                "data",
                Value::Array(vec![
                    Value::from("hello"),
                    Value::Binary(vec![1, 2]),
                    Value::Map(vec![(Value::from("n"), Value::F64(1.5))]),
                ]),
            ),
            ("nsp", Value::from("/chat")),
            ("id", Value::from(7)),
            (
                "options",
                Value::Map(vec![(Value::from("compress"), Value::from(true))]),
            ),
        ]);
        let d = decode(&event).unwrap();
        assert_eq!(
            d.text,
            r#"51-/chat,7["hello",{"_placeholder":true,"num":0},{"n":1.5}]"#
        );
        assert_eq!(d.attachments, vec![Bytes::from_static(&[1, 2])]);
        let connect = packed(vec![
            ("type", Value::from(0)),
            ("nsp", Value::from("/")),
            (
                "data",
                Value::Map(vec![(Value::from("token"), Value::from("t"))]),
            ),
        ]);
        assert_eq!(decode(&connect).unwrap().text, r#"0{"token":"t"}"#);
        let bare = packed(vec![("type", Value::from(1)), ("nsp", Value::from("/x"))]);
        assert_eq!(decode(&bare).unwrap().text, "1/x,");
    }

    #[test]
    fn what_is_not_a_packet_is_refused() {
        for bad in [
            vec![0xC1],
            packed(vec![("type", Value::from(9)), ("nsp", Value::from("/"))]),
            packed(vec![("type", Value::from(2))]),
            packed(vec![("type", Value::from("2")), ("nsp", Value::from("/"))]),
            packed(vec![
                ("type", Value::from(2)),
                ("nsp", Value::from("/")),
                ("data", Value::Map(vec![(Value::from(1), Value::Nil)])),
            ]),
            [
                packed(vec![("type", Value::from(1)), ("nsp", Value::from("/"))]),
                vec![0],
            ]
            .concat(),
        ] {
            assert!(decode(&bad).is_err(), "{bad:?}");
        }
        // Deeper than the bound.
        let mut deep = vec![0x91; 100];
        deep.push(0xC0);
        assert!(decode(&deep).is_err());
        // More values than the bound, in a message of 200 KB.
        let mut many = packed(vec![("type", Value::from(2)), ("nsp", Value::from("/"))]);
        many[0] += 1;
        many.extend_from_slice(&[0xA4, b'd', b'a', b't', b'a', 0xDD, 0, 3, 0x0D, 0x40]);
        many.resize(many.len() + 200_000, 0xC0);
        assert_eq!(decode(&many), Err(MsgpackError::TooManyValues));
    }

    #[test]
    fn values_are_counted_from_markers_alone() {
        let event = packed(vec![
            ("type", Value::from(2)),
            (
                "data",
                Value::Array(vec![
                    Value::from("e"),
                    Value::Binary(vec![0; 300]),
                    Value::F64(0.5),
                    Value::from(-70_000),
                    Value::Ext(1, vec![0; 3]),
                ]),
            ),
            ("nsp", Value::from("/")),
        ]);
        // The map, 3 keys, 3 values, 5 items in the array.
        assert_eq!(count_values(&event), Ok(12));
        assert_eq!(
            count_values(&event[..event.len() - 1]),
            Err(MsgpackError::Malformed)
        );
        assert_eq!(
            count_values(&[0xDD, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(MsgpackError::Malformed)
        );
        assert_eq!(count_values(&[0xC0, 0xC0]), Err(MsgpackError::Malformed));
    }

    #[test]
    fn packets_in_json_form_become_one_msgpack_frame_each() {
        let frames = vec![
            Frame::text(r#"451-/chat,3["pic",{"_placeholder":true,"num":0},{"k":-1}]"#),
            Frame::Binary(Bytes::from_static(&[9, 9])),
            Frame::text(r#"40{"sid":"abc"}"#),
        ];
        let out = encode(&frames);
        assert_eq!(out.len(), 2);
        let read = |f: &Frame| match f {
            Frame::Binary(b) => rmpv::decode::read_value(&mut &b[..]).unwrap(),
            other => panic!("{other:?}"),
        };
        let expected = Value::Map(vec![
            (Value::from("type"), Value::from(2)),
            (
                "data".into(),
                Value::Array(vec![
                    Value::from("pic"),
                    Value::Binary(vec![9, 9]),
                    Value::Map(vec![(Value::from("k"), Value::from(-1))]),
                ]),
            ),
            (Value::from("nsp"), Value::from("/chat")),
            (Value::from("id"), Value::from(3)),
        ]);
        assert_eq!(read(&out[0]), expected);
        // And back: the same JSON form.
        let Frame::Binary(b) = &out[0] else {
            unreachable!()
        };
        let back = decode(b).unwrap();
        assert_eq!(
            back.text,
            r#"51-/chat,3["pic",{"_placeholder":true,"num":0},{"k":-1}]"#
        );
        let connect = read(&out[1]);
        assert_eq!(
            connect,
            Value::Map(vec![
                (Value::from("type"), Value::from(0)),
                (
                    Value::from("data"),
                    Value::Map(vec![(Value::from("sid"), Value::from("abc"))])
                ),
                (Value::from("nsp"), Value::from("/")),
            ])
        );
        // Engine.IO frames pass as they are.
        assert_eq!(encode(&[Frame::text("2")]), vec![Frame::text("2")]);
    }
}

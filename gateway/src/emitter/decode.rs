//! The messages `@socket.io/redis-emitter` (5.x) publishes, decoded into
//! the gateway's own terms. Pure: bytes in, values out.
//!
//! - An emit is published on `<key>#<nsp>#` (or `<key>#<nsp>#<room>#` when
//!   it names exactly one room) as MessagePack `[uid, packet, opts]`:
//!   `packet` is `{type: 2, data: [event, ...args], nsp}` and `opts` is
//!   `{rooms: [...], except: [...], flags: {volatile?, compress?}}`. Binary
//!   arguments are MessagePack `bin` values, dates the timestamp extension.
//! - A server-side request is published on `<key>-request#<nsp>#` as JSON:
//!   `{type, opts: {rooms, except}, rooms?, close?}` for `socketsJoin` (2),
//!   `socketsLeave` (3) and `disconnectSockets` (4); `serverSideEmit` (6)
//!   carries `data`.

use bytes::Bytes;
use rmpv::Value;
use serde::Deserialize;
use serde_json::{Map, Number, Value as Json};

use crate::cluster::target::Target;
use crate::socketio::payload::Payload;

/// Deepest nesting of an emitted argument.
const MAX_DEPTH: usize = 64;

/// Socket.IO packet types an emitted packet may have (EVENT, BINARY_EVENT).
const EVENT: u64 = 2;
const BINARY_EVENT: u64 = 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not valid MessagePack")]
    MessagePack,
    #[error("not valid JSON")]
    Json,
    #[error("{0}")]
    Shape(&'static str),
    #[error("unsupported MessagePack extension type {0}")]
    Extension(i8),
    #[error("arguments nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// An emit: `event(...args)` to the sockets `target` selects in `nsp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emit {
    pub nsp: String,
    pub event: String,
    pub args: Payload,
    pub target: Target,
}

/// A server-side request of the emitter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Join {
        target: Target,
        rooms: Vec<String>,
    },
    Leave {
        target: Target,
        rooms: Vec<String>,
    },
    Disconnect {
        target: Target,
        close: bool,
    },
    /// `serverSideEmit(...args)`: for the servers themselves, which the
    /// gateway has no code of its own to run.
    ServerSideEmit,
    /// A request another Socket.IO server sent its peers (fetchSockets and
    /// the like, or a per-socket request): not the emitter's.
    Other(u64),
}

impl Request {
    /// The kind, as the metric's `kind` label names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Join { .. } => "join",
            Request::Leave { .. } => "leave",
            Request::Disconnect { .. } => "disconnect",
            Request::ServerSideEmit => "server_side_emit",
            Request::Other(_) => "other",
        }
    }
}

/// The namespace of a request channel `<key>-request#<nsp>#`.
pub fn request_namespace<'a>(key: &str, channel: &'a str) -> Option<&'a str> {
    channel
        .strip_prefix(key)?
        .strip_prefix("-request#")?
        .strip_suffix('#')
        .filter(|nsp| nsp.starts_with('/'))
}

/// Decodes an emit message.
pub fn emit(bytes: &[u8]) -> Result<Emit, DecodeError> {
    let mut reader = bytes;
    let value = rmpv::decode::read_value_with_max_depth(&mut reader, MAX_DEPTH + 8)
        .map_err(|_| DecodeError::MessagePack)?;
    if !reader.is_empty() {
        return Err(DecodeError::MessagePack);
    }
    let Value::Array(parts) = value else {
        return Err(DecodeError::Shape("message is not an array"));
    };
    let [_uid, packet, opts] = <[Value; 3]>::try_from(parts)
        .map_err(|_| DecodeError::Shape("message is not [uid, packet, opts]"))?;
    let packet = map(packet, "packet is not a map")?;
    let kind = field(&packet, "type").and_then(Value::as_u64);
    if !matches!(kind, Some(EVENT | BINARY_EVENT)) {
        return Err(DecodeError::Shape("packet type is not EVENT"));
    }
    let nsp = match field(&packet, "nsp") {
        None | Some(Value::Nil) => "/".to_owned(),
        Some(v) => v
            .as_str()
            .filter(|n| n.starts_with('/'))
            .ok_or(DecodeError::Shape("packet nsp is not a namespace"))?
            .to_owned(),
    };
    let Some(Value::Array(data)) = field(&packet, "data") else {
        return Err(DecodeError::Shape("packet data is not an array"));
    };
    let (event, rest) = data
        .split_first()
        .ok_or(DecodeError::Shape("packet data is empty"))?;
    let event = event
        .as_str()
        .ok_or(DecodeError::Shape("event name is not a string"))?
        .to_owned();
    let mut attachments = Vec::new();
    let args = rest
        .iter()
        .map(|v| to_json(v, &mut attachments, 0))
        .collect::<Result<Vec<_>, _>>()?;
    let opts = map(opts, "opts is not a map")?;
    let flags = match field(&opts, "flags") {
        None | Some(Value::Nil) => Vec::new(),
        Some(f) => map(f.clone(), "flags is not a map")?,
    };
    let target = Target {
        rooms: names(field(&opts, "rooms"))?,
        socket_ids: Vec::new(),
        except_rooms: names(field(&opts, "except"))?,
        volatile: field(&flags, "volatile").and_then(Value::as_bool) == Some(true),
    };
    Ok(Emit {
        nsp,
        event,
        args: Payload {
            args: Json::Array(args).to_string(),
            attachments,
        },
        target,
    })
}

/// A room name as Node's Socket.IO accepts it: a string or a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum RoomName {
    Text(String),
    Number(serde_json::Number),
}

impl RoomName {
    fn into_string(self) -> String {
        match self {
            RoomName::Text(s) => s,
            RoomName::Number(n) => n.to_string(),
        }
    }
}

#[derive(Deserialize, Default)]
struct RawOpts {
    #[serde(default)]
    rooms: Vec<RoomName>,
    #[serde(default)]
    except: Vec<RoomName>,
}

#[derive(Deserialize)]
struct RawRequest {
    #[serde(rename = "type")]
    kind: u64,
    opts: Option<RawOpts>,
    rooms: Option<Vec<RoomName>>,
    close: Option<bool>,
}

/// Decodes a request message (JSON, as the emitter sends them).
pub fn request(bytes: &[u8]) -> Result<Request, DecodeError> {
    let raw: RawRequest = serde_json::from_slice(bytes).map_err(|_| DecodeError::Json)?;
    let target = |opts: Option<RawOpts>| {
        let opts = opts.unwrap_or_default();
        Target {
            rooms: opts.rooms.into_iter().map(RoomName::into_string).collect(),
            except_rooms: opts.except.into_iter().map(RoomName::into_string).collect(),
            ..Target::default()
        }
    };
    let rooms = |rooms: Option<Vec<RoomName>>| {
        rooms
            .map(|r| r.into_iter().map(RoomName::into_string).collect::<Vec<_>>())
            .filter(|r| !r.is_empty())
            .ok_or(DecodeError::Shape("request has no rooms"))
    };
    // Requests without `opts` name one socket of another server and wait
    // for its answer: not the emitter's.
    Ok(match (raw.kind, raw.opts.is_some()) {
        (2, true) => Request::Join {
            target: target(raw.opts),
            rooms: rooms(raw.rooms)?,
        },
        (3, true) => Request::Leave {
            target: target(raw.opts),
            rooms: rooms(raw.rooms)?,
        },
        (4, true) => Request::Disconnect {
            target: target(raw.opts),
            close: raw.close.unwrap_or(false),
        },
        (6, _) => Request::ServerSideEmit,
        (kind, _) => Request::Other(kind),
    })
}

fn map(v: Value, what: &'static str) -> Result<Vec<(Value, Value)>, DecodeError> {
    match v {
        Value::Map(m) => Ok(m),
        _ => Err(DecodeError::Shape(what)),
    }
}

fn field<'a>(m: &'a [(Value, Value)], name: &str) -> Option<&'a Value> {
    m.iter()
        .find(|(k, _)| k.as_str() == Some(name))
        .map(|(_, v)| v)
}

/// Room names of `opts.rooms` or `opts.except` (absent: none).
fn names(v: Option<&Value>) -> Result<Vec<String>, DecodeError> {
    let list = match v {
        None | Some(Value::Nil) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(DecodeError::Shape("rooms are not an array")),
    };
    list.iter()
        .map(|r| match r {
            Value::String(s) => s
                .as_str()
                .map(str::to_owned)
                .ok_or(DecodeError::Shape("room name is not UTF-8")),
            Value::Integer(i) => Ok(i.to_string()),
            Value::F64(f) => Ok(f.to_string()),
            _ => Err(DecodeError::Shape("room name is not a string")),
        })
        .collect()
}

/// The JSON form of an argument, as Node's Socket.IO would send it: binary
/// values become placeholders for attachments (in depth-first order), dates
/// their ISO 8601 text (`Date.prototype.toJSON`), non-finite numbers null.
fn to_json(v: &Value, attachments: &mut Vec<Bytes>, depth: usize) -> Result<Json, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    Ok(match v {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(n), _) => Json::Number(n.into()),
            (None, Some(n)) => Json::Number(n.into()),
            _ => Json::Null,
        },
        Value::F32(f) => Number::from_f64(f64::from(*f)).map_or(Json::Null, Json::Number),
        Value::F64(f) => Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::String(s) => Json::String(
            s.as_str()
                .ok_or(DecodeError::Shape("string is not UTF-8"))?
                .to_owned(),
        ),
        Value::Binary(b) => {
            let mut placeholder = Map::new();
            placeholder.insert("_placeholder".into(), Json::Bool(true));
            placeholder.insert("num".into(), attachments.len().into());
            attachments.push(Bytes::copy_from_slice(b));
            Json::Object(placeholder)
        }
        Value::Array(items) => Json::Array(
            items
                .iter()
                .map(|i| to_json(i, attachments, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Value::Map(entries) => {
            let mut out = Map::with_capacity(entries.len());
            for (k, v) in entries {
                let key = match k {
                    Value::String(s) => s
                        .as_str()
                        .ok_or(DecodeError::Shape("key is not UTF-8"))?
                        .to_owned(),
                    Value::Integer(i) => i.to_string(),
                    _ => return Err(DecodeError::Shape("map key is not a string")),
                };
                out.insert(key, to_json(v, attachments, depth + 1)?);
            }
            Json::Object(out)
        }
        Value::Ext(-1, data) => Json::String(timestamp(data).ok_or(DecodeError::Extension(-1))?),
        Value::Ext(kind, _) => return Err(DecodeError::Extension(*kind)),
    })
}

/// The MessagePack timestamp extension (32, 64 or 96 bits) as
/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn timestamp(data: &[u8]) -> Option<String> {
    let (secs, nanos): (i64, u32) = match data.len() {
        4 => (i64::from(u32::from_be_bytes(data.try_into().ok()?)), 0),
        8 => {
            let v = u64::from_be_bytes(data.try_into().ok()?);
            ((v & 0x3_ffff_ffff) as i64, (v >> 34) as u32)
        }
        12 => (
            i64::from_be_bytes(data[4..].try_into().ok()?),
            u32::from_be_bytes(data[..4].try_into().ok()?),
        ),
        _ => return None,
    };
    if nanos >= 1_000_000_000 {
        return None;
    }
    crate::clock::iso8601(secs, nanos / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).unwrap();
        out
    }

    fn s(text: &str) -> Value {
        Value::from(text)
    }

    fn message(data: Vec<Value>, opts: Vec<(Value, Value)>) -> Vec<u8> {
        encode(&Value::Array(vec![
            s("emitter"),
            Value::Map(vec![
                (s("type"), Value::from(2)),
                (s("data"), Value::Array(data)),
                (s("nsp"), s("/chat")),
            ]),
            Value::Map(opts),
        ]))
    }

    #[test]
    fn an_emit_with_rooms_except_flags_and_binary() {
        let bytes = message(
            vec![
                s("news"),
                Value::Map(vec![
                    (s("b"), Value::Binary(vec![1, 2, 3])),
                    (s("n"), Value::from(1.5)),
                ]),
                Value::Binary(vec![9]),
                Value::Nil,
            ],
            vec![
                (s("rooms"), Value::Array(vec![s("a"), Value::from(7)])),
                (
                    s("flags"),
                    Value::Map(vec![(s("volatile"), Value::from(true))]),
                ),
                (s("except"), Value::Array(vec![s("x")])),
            ],
        );
        let e = emit(&bytes).unwrap();
        assert_eq!(e.nsp, "/chat");
        assert_eq!(e.event, "news");
        assert_eq!(
            e.args.args,
            r#"[{"b":{"_placeholder":true,"num":0},"n":1.5},{"_placeholder":true,"num":1},null]"#
        );
        assert_eq!(
            e.args.attachments,
            vec![Bytes::from_static(&[1, 2, 3]), Bytes::from_static(&[9])]
        );
        assert_eq!(e.target.rooms, vec!["a", "7"]);
        assert_eq!(e.target.except_rooms, vec!["x"]);
        assert!(e.target.volatile);
    }

    #[test]
    fn dates_read_as_node_writes_them_in_json() {
        // 2021-03-04T05:06:07.089Z as timestamp 64 (ns in the top 30 bits).
        let secs: u64 = 1_614_834_367;
        let ns: u64 = 89_000_000;
        let ts = ((ns << 34) | secs).to_be_bytes().to_vec();
        let bytes = message(vec![s("t"), Value::Ext(-1, ts)], vec![]);
        assert_eq!(
            emit(&bytes).unwrap().args.args,
            r#"["2021-03-04T05:06:07.089Z"]"#
        );
        let t32 = Value::Ext(-1, 0u32.to_be_bytes().to_vec());
        let bytes = message(vec![s("t"), t32], vec![]);
        assert_eq!(
            emit(&bytes).unwrap().args.args,
            r#"["1970-01-01T00:00:00.000Z"]"#
        );
    }

    #[test]
    fn malformed_emits_are_errors() {
        let good = message(vec![s("ev")], vec![]);
        assert!(emit(&good).is_ok());
        // Truncated anywhere.
        for cut in 0..good.len() {
            assert!(emit(&good[..cut]).is_err(), "cut at {cut}");
        }
        // Trailing bytes.
        let mut long = good.clone();
        long.push(0xc0);
        assert_eq!(emit(&long), Err(DecodeError::MessagePack));
        // Wrong types.
        assert!(matches!(emit(&encode(&s("x"))), Err(DecodeError::Shape(_))));
        assert!(matches!(
            emit(&message(vec![Value::from(1)], vec![])),
            Err(DecodeError::Shape("event name is not a string"))
        ));
        assert!(matches!(
            emit(&message(vec![], vec![])),
            Err(DecodeError::Shape("packet data is empty"))
        ));
        assert!(matches!(
            emit(&message(vec![s("e")], vec![(s("rooms"), s("a"))])),
            Err(DecodeError::Shape(_))
        ));
        assert_eq!(
            emit(&message(vec![s("e"), Value::Ext(3, vec![1])], vec![])),
            Err(DecodeError::Extension(3))
        );
        // Nested past the bound.
        let mut deep = Value::Nil;
        for _ in 0..200 {
            deep = Value::Array(vec![deep]);
        }
        assert!(emit(&message(vec![s("e"), deep], vec![])).is_err());
    }

    #[test]
    fn requests_of_the_emitter() {
        let join = br#"{"type":2,"opts":{"rooms":["a"],"except":["b"]},"rooms":["c","d"]}"#;
        match request(join).unwrap() {
            Request::Join { target, rooms } => {
                assert_eq!(target.rooms, vec!["a"]);
                assert_eq!(target.except_rooms, vec!["b"]);
                assert_eq!(rooms, vec!["c", "d"]);
            }
            other => panic!("{other:?}"),
        }
        let leave = br#"{"type":3,"opts":{"rooms":[],"except":[]},"rooms":["c"]}"#;
        assert!(matches!(request(leave).unwrap(), Request::Leave { .. }));
        let disconnect = br#"{"type":4,"opts":{"rooms":[],"except":[]},"close":true}"#;
        assert!(matches!(
            request(disconnect).unwrap(),
            Request::Disconnect { close: true, .. }
        ));
        let sse = br#"{"uid":"emitter","type":6,"data":["hello"]}"#;
        assert_eq!(request(sse).unwrap(), Request::ServerSideEmit);
        // Another server's requests are not the emitter's.
        let fetch = br#"{"uid":"abc","requestId":"x","type":0,"rooms":[]}"#;
        assert_eq!(request(fetch).unwrap(), Request::Other(0));
        let one_socket = br#"{"uid":"abc","requestId":"x","type":2,"sid":"s","room":"r"}"#;
        assert_eq!(request(one_socket).unwrap(), Request::Other(2));
        // Malformed.
        assert_eq!(request(b"{\"type\":2"), Err(DecodeError::Json));
        assert_eq!(request(b"[1]"), Err(DecodeError::Json));
        assert!(request(br#"{"type":2,"opts":{},"rooms":[]}"#).is_err());
        assert!(request(br#"{"type":"2","opts":{}}"#).is_err());
    }

    #[test]
    fn request_channels_name_their_namespace() {
        assert_eq!(
            request_namespace("socket.io", "socket.io-request#/#"),
            Some("/")
        );
        assert_eq!(
            request_namespace("socket.io", "socket.io-request#/chat#"),
            Some("/chat")
        );
        assert_eq!(
            request_namespace("socket.io", "socket.io-request#chat#"),
            None
        );
        assert_eq!(request_namespace("socket.io", "other-request#/#"), None);
    }
}

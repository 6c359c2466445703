//! Socket.IO protocol v5 packet codec (the default `socket.io-parser` text format).
//!
//! Pure functions, text in / packets out: no I/O, no async runtime.
//!
//! A Socket.IO packet travels as the text of an Engine.IO message packet
//! (`4` + the text below), followed, for the binary kinds, by its
//! attachments as separate binary messages:
//!
//! ```text
//! <packet type>[<# of binary attachments>-][<namespace>,][<acknowledgment id>][JSON payload]
//! ```
//!
//! e.g. `0`, `0/admin,{"token":"123"}`, `2["foo"]`, `212["foo"]`, `312[]`,
//! `51-["baz",{"_placeholder":true,"num":0}]`, `1/admin,`.
//!
//! Decoding follows `socket.io-parser` v4: the namespace is present when the
//! text after the type (and attachment count) starts with `/` and runs up to
//! the first `,` (or the end), the ack id is the run of digits that follows,
//! and whatever remains is the JSON payload, which must be valid JSON of the
//! shape the packet kind allows. The payload is kept as the raw JSON text,
//! byte for byte, so relaying a packet never reorders keys or reformats
//! numbers. Decoding never panics, whatever the input.

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

use super::engineio::{push_u64, write_json_string};

/// Event names that must not be used by applications (`socket.io-parser`
/// rejects EVENT packets carrying them).
pub const RESERVED_EVENTS: &[&str] = &[
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// The Socket.IO packet type.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// `0`: connect to a namespace (client: optional auth object; server: `{"sid":...}`).
    Connect = 0,
    /// `1`: disconnect from a namespace.
    Disconnect = 1,
    /// `2`: an event, `["name", ...args]`.
    Event = 2,
    /// `3`: an acknowledgement, `[...args]`, with the id of the event it answers.
    Ack = 3,
    /// `4`: the connection to a namespace was refused.
    ConnectError = 4,
    /// `5`: an event with binary attachments.
    BinaryEvent = 5,
    /// `6`: an acknowledgement with binary attachments.
    BinaryAck = 6,
}

impl PacketKind {
    /// Whether this kind carries binary attachments (`<n>-` on the wire).
    pub fn is_binary(self) -> bool {
        matches!(self, PacketKind::BinaryEvent | PacketKind::BinaryAck)
    }

    /// The type digit written on the wire.
    pub fn as_char(self) -> char {
        char::from(b'0' + self as u8)
    }

    /// The kind for a type digit, if it is one.
    pub fn from_char(c: char) -> Option<Self> {
        Some(match c {
            '0' => PacketKind::Connect,
            '1' => PacketKind::Disconnect,
            '2' => PacketKind::Event,
            '3' => PacketKind::Ack,
            '4' => PacketKind::ConnectError,
            '5' => PacketKind::BinaryEvent,
            '6' => PacketKind::BinaryAck,
            _ => return None,
        })
    }

    /// Whether packets of this kind may (ACK kinds: must) carry an ack id.
    pub fn allows_ack_id(self) -> bool {
        !matches!(
            self,
            PacketKind::Connect | PacketKind::Disconnect | PacketKind::ConnectError
        )
    }
}

impl fmt::Display for PacketKind {
    /// The protocol document's name: `CONNECT`, `BINARY_EVENT`, ...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PacketKind::Connect => "CONNECT",
            PacketKind::Disconnect => "DISCONNECT",
            PacketKind::Event => "EVENT",
            PacketKind::Ack => "ACK",
            PacketKind::ConnectError => "CONNECT_ERROR",
            PacketKind::BinaryEvent => "BINARY_EVENT",
            PacketKind::BinaryAck => "BINARY_ACK",
        })
    }
}

/// A decoded Socket.IO packet, borrowing from the decoded text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The packet type.
    pub kind: PacketKind,
    /// The namespace; `"/"` when absent.
    pub nsp: &'a str,
    /// Number of binary attachments that follow; 0 unless a binary kind.
    pub attachments: usize,
    /// The acknowledgement id.
    pub id: Option<u64>,
    /// The raw JSON payload, validated, byte for byte as received.
    pub data: Option<&'a str>,
}

impl Packet<'_> {
    /// Appends the wire text of this packet to `out` (see [`encode_into`]).
    pub fn encode_into(&self, out: &mut String) {
        encode_into(
            out,
            self.kind,
            self.nsp,
            self.attachments,
            self.id,
            self.data,
        );
    }

    /// The wire text of this packet (see [`encode_into`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        self.encode_into(&mut out);
        out
    }
}

/// Limits applied while decoding untrusted input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest attachment count a binary packet may announce.
    pub max_attachments: usize,
}

impl Default for DecodeLimits {
    /// `max_attachments: 10`.
    fn default() -> Self {
        DecodeLimits {
            max_attachments: 10,
        }
    }
}

/// Why a Socket.IO packet could not be decoded (or a payload check failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The packet text is empty.
    #[error("empty socket.io packet")]
    Empty,
    /// The first character is not a packet type digit `0`..=`6`.
    #[error("unknown socket.io packet type {0:?}")]
    UnknownType(char),
    /// A binary packet does not start with `<digits>-`, or the count overflows.
    #[error("invalid attachment count (expected <digits>- after a binary packet type)")]
    InvalidAttachments,
    /// A binary packet announces more attachments than allowed.
    #[error("too many attachments: {count} (at most {max} allowed)")]
    TooManyAttachments {
        /// Announced count.
        count: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The namespace contains control characters.
    #[error("invalid namespace")]
    InvalidNamespace,
    /// The ack id does not fit in a `u64`.
    #[error("invalid ack id")]
    InvalidAckId,
    /// An ack id on a packet kind that cannot carry one.
    #[error("ack id not allowed on packet type {kind}")]
    UnexpectedAckId {
        /// The packet kind.
        kind: PacketKind,
    },
    /// An ACK or BINARY_ACK packet without an ack id.
    #[error("packet type {kind} requires an ack id")]
    MissingAckId {
        /// The packet kind.
        kind: PacketKind,
    },
    /// The payload is not valid JSON.
    #[error("payload is not valid JSON")]
    InvalidJson,
    /// The payload is valid JSON but not what the packet kind requires (or it is missing).
    #[error("invalid payload for packet type {kind}")]
    InvalidPayload {
        /// The packet kind.
        kind: PacketKind,
    },
    /// A `{"_placeholder":true,"num":N}` object whose `num` is not an integer below the attachment count.
    #[error("invalid attachment placeholder")]
    InvalidPlaceholder,
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The arguments are not the JSON text of an array.
    #[error("event arguments must be the JSON text of an array")]
    ArgsNotAnArray,
}

/// Decodes one Socket.IO packet text (the payload of an Engine.IO message).
///
/// Validation (following `socket.io-parser` v4, and the protocol document where
/// the parser is more lenient):
///
/// * CONNECT: payload absent or a JSON object; DISCONNECT: no payload;
///   CONNECT_ERROR: a JSON object or string.
/// * EVENT / BINARY_EVENT: a JSON array whose first element is a string that
///   is not in [`RESERVED_EVENTS`], or a number (the parser accepts numeric
///   event names).
/// * ACK / BINARY_ACK: a JSON array, and an ack id is required.
/// * Binary kinds start with `<digits>-`; the count must not exceed
///   `limits.max_attachments`.
/// * An ack id is a run of ASCII digits fitting in a `u64`; it is refused on
///   CONNECT, DISCONNECT and CONNECT_ERROR.
pub fn decode<'a>(text: &'a str, limits: &DecodeLimits) -> Result<Packet<'a>, DecodeError> {
    let mut chars = text.chars();
    let first = chars.next().ok_or(DecodeError::Empty)?;
    let kind = PacketKind::from_char(first).ok_or(DecodeError::UnknownType(first))?;
    let mut rest = chars.as_str();

    let mut attachments = 0;
    if kind.is_binary() {
        let digits = leading_digits(rest);
        if digits == 0 || rest.as_bytes().get(digits) != Some(&b'-') {
            return Err(DecodeError::InvalidAttachments);
        }
        let count = rest
            .get(..digits)
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or(DecodeError::InvalidAttachments)?;
        if count > limits.max_attachments {
            return Err(DecodeError::TooManyAttachments {
                count,
                max: limits.max_attachments,
            });
        }
        attachments = count;
        rest = rest.get(digits + 1..).unwrap_or_default();
    }

    let mut nsp = "/";
    if rest.starts_with('/') {
        let (name, after) = match rest.split_once(',') {
            Some((name, after)) => (name, after),
            None => (rest, ""),
        };
        if name.chars().any(char::is_control) {
            return Err(DecodeError::InvalidNamespace);
        }
        nsp = name;
        rest = after;
    }

    let digits = leading_digits(rest);
    let mut id = None;
    if digits > 0 {
        if !kind.allows_ack_id() {
            return Err(DecodeError::UnexpectedAckId { kind });
        }
        let parsed = rest
            .get(..digits)
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(DecodeError::InvalidAckId)?;
        id = Some(parsed);
        rest = rest.get(digits..).unwrap_or_default();
    }

    let data = (!rest.is_empty()).then_some(rest);
    check_payload(kind, data)?;
    if matches!(kind, PacketKind::Ack | PacketKind::BinaryAck) && id.is_none() {
        return Err(DecodeError::MissingAckId { kind });
    }

    Ok(Packet {
        kind,
        nsp,
        attachments,
        id,
        data,
    })
}

fn leading_digits(s: &str) -> usize {
    s.bytes().take_while(u8::is_ascii_digit).count()
}

/// Checks that `data` is present (or absent) and of the JSON shape `kind` requires.
fn check_payload(kind: PacketKind, data: Option<&str>) -> Result<(), DecodeError> {
    let invalid = DecodeError::InvalidPayload { kind };
    let Some(data) = data else {
        return match kind {
            PacketKind::Connect | PacketKind::Disconnect => Ok(()),
            _ => Err(invalid),
        };
    };
    if kind == PacketKind::Disconnect {
        return Err(invalid);
    }
    let shape: Shape = serde_json::from_str(data).map_err(|_| DecodeError::InvalidJson)?;
    let ok = match kind {
        PacketKind::Connect => shape == Shape::Object,
        PacketKind::Disconnect => false,
        PacketKind::ConnectError => matches!(shape, Shape::Object | Shape::String),
        PacketKind::Event | PacketKind::BinaryEvent => {
            matches!(shape, Shape::Array(First::EventName | First::Number))
        }
        PacketKind::Ack | PacketKind::BinaryAck => matches!(shape, Shape::Array(_)),
    };
    if ok { Ok(()) } else { Err(invalid) }
}

/// The top-level shape of a JSON payload, found in one validating pass
/// without building the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Object,
    Array(First),
    String,
    Other,
}

/// The first element of a JSON array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum First {
    /// The array is empty.
    Missing,
    /// A string that is a usable event name.
    EventName,
    /// A string in [`RESERVED_EVENTS`].
    ReservedName,
    Number,
    Other,
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ShapeVisitor)
    }
}

struct ShapeVisitor;

impl<'de> Visitor<'de> for ShapeVisitor {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::String)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Shape::Object)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        let first = seq.next_element::<First>()?.unwrap_or(First::Missing);
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Shape::Array(first))
    }
}

impl<'de> Deserialize<'de> for First {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FirstVisitor)
    }
}

struct FirstVisitor;

impl<'de> Visitor<'de> for FirstVisitor {
    type Value = First;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<First, E> {
        Ok(First::Other)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<First, E> {
        Ok(First::Number)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<First, E> {
        Ok(First::Number)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<First, E> {
        Ok(First::Number)
    }
    fn visit_unit<E: de::Error>(self) -> Result<First, E> {
        Ok(First::Other)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<First, E> {
        Ok(if RESERVED_EVENTS.contains(&v) {
            First::ReservedName
        } else {
            First::EventName
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<First, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(First::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<First, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(First::Other)
    }
}

/// Appends `"<kind>[<n>-][<nsp>,][<id>][<data>]"` to `out`.
///
/// The attachment count is written (even when 0) for the binary kinds only.
/// The namespace is written, followed by `,`, only when it is neither `"/"`
/// nor empty; it must start with `/` and must not contain `,` for the text
/// to decode back to the same namespace. `data` is copied verbatim.
pub fn encode_into(
    out: &mut String,
    kind: PacketKind,
    nsp: &str,
    attachments: usize,
    id: Option<u64>,
    data: Option<&str>,
) {
    out.push(kind.as_char());
    if kind.is_binary() {
        push_u64(out, attachments as u64);
        out.push('-');
    }
    if !nsp.is_empty() && nsp != "/" {
        out.push_str(nsp);
        out.push(',');
    }
    if let Some(id) = id {
        push_u64(out, id);
    }
    if let Some(data) = data {
        out.push_str(data);
    }
}

/// Appends the JSON array `[<event as a JSON string>, ...args]` to `out`,
/// given `args_json`, the JSON text of an array (`[]` or `[1,"a"]`).
///
/// The elements are spliced in as text, not reparsed, so key order and
/// formatting are kept. Only the brackets are checked: after trimming JSON
/// whitespace, `args_json` must start with `[` and end with `]` (otherwise
/// `out` is left untouched); the text in between must be valid JSON
/// elements, e.g. as produced by [`split_event`] or `serde_json`.
pub fn write_event_array(
    out: &mut String,
    event: &str,
    args_json: &str,
) -> Result<(), EncodeError> {
    let inner = trim_json_ws(args_json)
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or(EncodeError::ArgsNotAnArray)?;
    out.push('[');
    write_json_string(out, event);
    if !trim_json_ws(inner).is_empty() {
        out.push(',');
        out.push_str(inner);
    }
    out.push(']');
    Ok(())
}

fn trim_json_ws(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'))
}

/// Splits an event payload (`["name", ...args]`) into the event name and the
/// arguments array text `[...]`: the inverse of [`write_event_array`].
///
/// The text is parsed once; the arguments are rebuilt from the raw element
/// texts joined by `,`, so nothing inside an element is reformatted (only the
/// whitespace between top-level elements is dropped). A numeric event name
/// (accepted by `socket.io-parser`) is returned as JavaScript would turn it
/// into a string, since that is the name listeners see. Errors:
/// [`DecodeError::InvalidJson`] for invalid JSON,
/// [`DecodeError::InvalidPayload`] when it is not a non-empty array whose
/// first element is a string or a number.
pub fn split_event(data: &str) -> Result<(String, String), DecodeError> {
    let invalid = DecodeError::InvalidPayload {
        kind: PacketKind::Event,
    };
    let elements: Vec<&RawValue> = serde_json::from_str(data).map_err(|e| {
        if e.is_data() {
            invalid.clone()
        } else {
            DecodeError::InvalidJson
        }
    })?;
    let (first, args) = elements.split_first().ok_or_else(|| invalid.clone())?;
    let first = first.get();
    let name = if first.starts_with('"') {
        serde_json::from_str::<String>(first).map_err(|_| DecodeError::InvalidJson)?
    } else {
        js_number_to_string(first).ok_or(invalid)?
    };
    let capacity = args.iter().map(|a| a.get().len() + 1).sum::<usize>() + 2;
    let mut out = String::with_capacity(capacity);
    out.push('[');
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(arg.get());
    }
    out.push(']');
    Ok((name, out))
}

/// `String(n)` in JavaScript for the JSON number text `raw`, or `None` when
/// `raw` is not a finite number.
fn js_number_to_string(raw: &str) -> Option<String> {
    let first = raw.chars().next()?;
    if !(first == '-' || first.is_ascii_digit()) {
        return None;
    }
    let value: f64 = raw.parse().ok()?;
    if !value.is_finite() {
        return None;
    }
    if value == 0.0 {
        return Some("0".to_owned());
    }
    let magnitude = value.abs();
    if (1e-6..1e21).contains(&magnitude) {
        // Rust's Display prints the shortest round-tripping digits without an
        // exponent, which is what JavaScript does in this range.
        return Some(format!("{value}"));
    }
    // JavaScript switches to exponent form, with an explicit '+' sign.
    let exp = format!("{value:e}");
    Some(match exp.split_once('e') {
        Some((mantissa, e)) if !e.starts_with('-') => format!("{mantissa}e+{e}"),
        _ => exp,
    })
}

/// Checks the binary placeholders of a payload: every object of the form
/// `{"_placeholder":true,"num":N}` must have an integer `num` with
/// `0 <= num < attachments` (as `socket.io-parser` requires when it puts the
/// attachments back). Objects whose `_placeholder` is not `true` are ordinary
/// data. Returns [`DecodeError::InvalidJson`] if `data` is not valid JSON and
/// [`DecodeError::InvalidPlaceholder`] on the first bad placeholder.
pub fn check_placeholders(data: &str, attachments: usize) -> Result<(), DecodeError> {
    for_each_placeholder(data, |num| match num {
        Some(n) if n < attachments as u64 => Ok(()),
        _ => Err(DecodeError::InvalidPlaceholder),
    })
}

/// The stricter rule for payloads built by a backend (admin emits, hook
/// answers): as [`check_placeholders`], and every attachment is referenced
/// by exactly one placeholder, so none is sent for nothing or twice over.
pub fn check_placeholders_one_to_one(data: &str, attachments: usize) -> Result<(), DecodeError> {
    let mut used = vec![false; attachments];
    for_each_placeholder(data, |num| {
        match num.and_then(|n| used.get_mut(usize::try_from(n).ok()?)) {
            Some(seen) if !*seen => {
                *seen = true;
                Ok(())
            }
            _ => Err(DecodeError::InvalidPlaceholder),
        }
    })?;
    if used.contains(&false) {
        return Err(DecodeError::InvalidPlaceholder);
    }
    Ok(())
}

/// Calls `each` with the `num` of every placeholder in the JSON text
/// `data` (`None` when it is not a non-negative integer), stopping at its
/// first error.
fn for_each_placeholder(
    data: &str,
    mut each: impl FnMut(Option<u64>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    use serde_json::Value;

    let value: Value = serde_json::from_str(data).map_err(|_| DecodeError::InvalidJson)?;
    let mut stack = vec![&value];
    while let Some(value) = stack.pop() {
        match value {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                if map.get("_placeholder") == Some(&Value::Bool(true)) {
                    each(map.get("num").and_then(placeholder_index))?;
                } else {
                    stack.extend(map.values());
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A placeholder `num` as a non-negative integer (`1.0` counts, `1.5` does not).
fn placeholder_index(num: &serde_json::Value) -> Option<u64> {
    let num = num.as_number()?;
    if let Some(n) = num.as_u64() {
        return Some(n);
    }
    let f = num.as_f64()?;
    (f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64).then_some(f as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DecodeLimits = DecodeLimits {
        max_attachments: 10,
    };

    fn dec(text: &str) -> Result<Packet<'_>, DecodeError> {
        decode(text, &LIMITS)
    }

    fn pkt<'a>(
        kind: PacketKind,
        nsp: &'a str,
        attachments: usize,
        id: Option<u64>,
        data: Option<&'a str>,
    ) -> Packet<'a> {
        Packet {
            kind,
            nsp,
            attachments,
            id,
            data,
        }
    }

    fn enc(
        kind: PacketKind,
        nsp: &str,
        attachments: usize,
        id: Option<u64>,
        data: Option<&str>,
    ) -> String {
        let mut out = String::new();
        encode_into(&mut out, kind, nsp, attachments, id, data);
        out
    }

    /// Asserts that `text` decodes to `expected` and that encoding it gives `text` back.
    fn both_ways(text: &str, expected: Packet<'_>) {
        assert_eq!(dec(text), Ok(expected.clone()), "decoding {text}");
        assert_eq!(expected.encode(), text, "encoding {expected:?}");
    }

    use PacketKind::*;

    const PH0: &str = r#"{"_placeholder":true,"num":0}"#;

    // ---- the encoding tables of the v5 protocol document ----

    #[test]
    fn doc_connection_examples() {
        both_ways("0", pkt(Connect, "/", 0, None, None));
        both_ways(
            r#"0{"sid":"wZX3oN0bSVIhsaknAAAI"}"#,
            pkt(
                Connect,
                "/",
                0,
                None,
                Some(r#"{"sid":"wZX3oN0bSVIhsaknAAAI"}"#),
            ),
        );
        both_ways("0/admin,", pkt(Connect, "/admin", 0, None, None));
        both_ways(
            r#"0/admin,{"sid":"oSO0OpakMV_3jnilAAAA"}"#,
            pkt(
                Connect,
                "/admin",
                0,
                None,
                Some(r#"{"sid":"oSO0OpakMV_3jnilAAAA"}"#),
            ),
        );
        both_ways(
            r#"4{"message":"Not authorized"}"#,
            pkt(
                ConnectError,
                "/",
                0,
                None,
                Some(r#"{"message":"Not authorized"}"#),
            ),
        );
        // v5 history section: CONNECT with an auth payload, and the answer
        both_ways(
            r#"0/admin,{"token":"123"}"#,
            pkt(Connect, "/admin", 0, None, Some(r#"{"token":"123"}"#)),
        );
        both_ways(
            r#"0/admin,{"sid":"CjdVH4TQvovi1VvgAC5Z"}"#,
            pkt(
                Connect,
                "/admin",
                0,
                None,
                Some(r#"{"sid":"CjdVH4TQvovi1VvgAC5Z"}"#),
            ),
        );
        // the parser still accepts the v4-style string CONNECT_ERROR payload
        both_ways(
            r#"4"Not authorized""#,
            pkt(ConnectError, "/", 0, None, Some(r#""Not authorized""#)),
        );
    }

    #[test]
    fn doc_data_examples() {
        both_ways(r#"2["foo"]"#, pkt(Event, "/", 0, None, Some(r#"["foo"]"#)));
        both_ways(
            r#"2/admin,["bar"]"#,
            pkt(Event, "/admin", 0, None, Some(r#"["bar"]"#)),
        );
        let one = r#"["baz",{"_placeholder":true,"num":0}]"#;
        both_ways(
            &format!("51-{one}"),
            pkt(BinaryEvent, "/", 1, None, Some(one)),
        );
        let two = r#"["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
        both_ways(
            &format!("52-/admin,{two}"),
            pkt(BinaryEvent, "/admin", 2, None, Some(two)),
        );
        assert_eq!(check_placeholders(one, 1), Ok(()));
        assert_eq!(check_placeholders(two, 2), Ok(()));
    }

    #[test]
    fn doc_ack_examples() {
        both_ways(
            r#"212["foo"]"#,
            pkt(Event, "/", 0, Some(12), Some(r#"["foo"]"#)),
        );
        both_ways("312[]", pkt(Ack, "/", 0, Some(12), Some("[]")));
        both_ways(
            r#"2/admin,13["foo"]"#,
            pkt(Event, "/admin", 0, Some(13), Some(r#"["foo"]"#)),
        );
        both_ways(
            r#"3/admin,13["bar"]"#,
            pkt(Ack, "/admin", 0, Some(13), Some(r#"["bar"]"#)),
        );
        let foo = r#"["foo",{"_placeholder":true,"num":0}]"#;
        both_ways(
            &format!("51-14{foo}"),
            pkt(BinaryEvent, "/", 1, Some(14), Some(foo)),
        );
        both_ways(
            r#"314["bar"]"#,
            pkt(Ack, "/", 0, Some(14), Some(r#"["bar"]"#)),
        );
        both_ways(
            r#"215["foo"]"#,
            pkt(Event, "/", 0, Some(15), Some(r#"["foo"]"#)),
        );
        let bar = r#"["bar",{"_placeholder":true,"num":0}]"#;
        both_ways(
            &format!("61-15{bar}"),
            pkt(BinaryAck, "/", 1, Some(15), Some(bar)),
        );
    }

    #[test]
    fn doc_disconnect_examples() {
        both_ways("1", pkt(Disconnect, "/", 0, None, None));
        both_ways("1/admin,", pkt(Disconnect, "/admin", 0, None, None));
    }

    #[test]
    fn doc_sample_session() {
        // Engine.IO prefix "4" already stripped.
        both_ways("0", pkt(Connect, "/", 0, None, None));
        both_ways(
            r#"0{"sid":"wZX3oN0bSVIhsaknAAAI"}"#,
            pkt(
                Connect,
                "/",
                0,
                None,
                Some(r#"{"sid":"wZX3oN0bSVIhsaknAAAI"}"#),
            ),
        );
        both_ways(
            r#"2["hey","Jude"]"#,
            pkt(Event, "/", 0, None, Some(r#"["hey","Jude"]"#)),
        );
        both_ways(
            r#"2["hello"]"#,
            pkt(Event, "/", 0, None, Some(r#"["hello"]"#)),
        );
        both_ways(
            r#"2["world"]"#,
            pkt(Event, "/", 0, None, Some(r#"["world"]"#)),
        );
        both_ways("0/admin,", pkt(Connect, "/admin", 0, None, None));
        both_ways(
            r#"0/admin,{"sid":"-G5j-67EZFp-q59rADQM"}"#,
            pkt(
                Connect,
                "/admin",
                0,
                None,
                Some(r#"{"sid":"-G5j-67EZFp-q59rADQM"}"#),
            ),
        );
        both_ways(
            r#"2/admin,1["tellme"]"#,
            pkt(Event, "/admin", 0, Some(1), Some(r#"["tellme"]"#)),
        );
        let data = format!("[{PH0}]");
        both_ways(
            &format!("61-/admin,1{data}"),
            pkt(BinaryAck, "/admin", 1, Some(1), Some(&data)),
        );
    }

    // ---- the v5 test suite (Engine.IO "4" prefix stripped) ----

    #[test]
    fn test_suite_client_packets() {
        assert_eq!(dec("0"), Ok(pkt(Connect, "/", 0, None, None)));
        assert_eq!(
            dec(r#"0{"token":"123"}"#),
            Ok(pkt(Connect, "/", 0, None, Some(r#"{"token":"123"}"#)))
        );
        assert_eq!(dec("0/custom,"), Ok(pkt(Connect, "/custom", 0, None, None)));
        assert_eq!(
            dec(r#"0/custom,{"token":"abc"}"#),
            Ok(pkt(Connect, "/custom", 0, None, Some(r#"{"token":"abc"}"#)))
        );
        // without the trailing comma the namespace runs to the end
        assert_eq!(dec("0/random"), Ok(pkt(Connect, "/random", 0, None, None)));
        assert_eq!(dec("0/custom"), Ok(pkt(Connect, "/custom", 0, None, None)));
        assert_eq!(dec("1"), Ok(pkt(Disconnect, "/", 0, None, None)));
        assert_eq!(
            dec("1/custom"),
            Ok(pkt(Disconnect, "/custom", 0, None, None))
        );
        assert_eq!(
            dec(r#"2["message","message to main namespace"]"#),
            Ok(pkt(
                Event,
                "/",
                0,
                None,
                Some(r#"["message","message to main namespace"]"#)
            ))
        );
        assert_eq!(
            dec(r#"2["message",1,"2",{"3":[true]}]"#),
            Ok(pkt(
                Event,
                "/",
                0,
                None,
                Some(r#"["message",1,"2",{"3":[true]}]"#)
            ))
        );
        let two = r#"["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
        assert_eq!(
            dec(&format!("52-{two}")),
            Ok(pkt(BinaryEvent, "/", 2, None, Some(two)))
        );
        assert_eq!(
            dec(r#"2456["message-with-ack",1,"2",{"3":[false]}]"#),
            Ok(pkt(
                Event,
                "/",
                0,
                Some(456),
                Some(r#"["message-with-ack",1,"2",{"3":[false]}]"#)
            ))
        );
        let two_ack =
            r#"["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
        assert_eq!(
            dec(&format!("52-789{two_ack}")),
            Ok(pkt(BinaryEvent, "/", 2, Some(789), Some(two_ack)))
        );
    }

    #[test]
    fn test_suite_invalid_client_packets() {
        // "4abc": unknown packet type
        assert_eq!(dec("abc"), Err(DecodeError::UnknownType('a')));
        // "42{}": invalid payload format
        assert_eq!(dec("2{}"), Err(DecodeError::InvalidPayload { kind: Event }));
        // "42abc[...]": invalid ack id
        assert_eq!(
            dec(r#"2abc["message-with-ack",1,"2",{"3":[false]}]"#),
            Err(DecodeError::InvalidJson)
        );
    }

    #[test]
    fn test_suite_server_packets() {
        assert_eq!(
            enc(Connect, "/", 0, None, Some(r#"{"sid":"abc"}"#)),
            r#"0{"sid":"abc"}"#
        );
        assert_eq!(
            enc(Connect, "/custom", 0, None, Some(r#"{"sid":"abc"}"#)),
            r#"0/custom,{"sid":"abc"}"#
        );
        assert_eq!(
            enc(
                ConnectError,
                "/random",
                0,
                None,
                Some(r#"{"message":"Invalid namespace"}"#)
            ),
            r#"4/random,{"message":"Invalid namespace"}"#
        );

        // socket.emit("auth", socket.handshake.auth)
        let mut data = String::new();
        write_event_array(&mut data, "auth", "[{}]").expect("array");
        assert_eq!(enc(Event, "/", 0, None, Some(&data)), r#"2["auth",{}]"#);
        data.clear();
        write_event_array(&mut data, "auth", r#"[{"token":"abc"}]"#).expect("array");
        assert_eq!(
            enc(Event, "/custom", 0, None, Some(&data)),
            r#"2/custom,["auth",{"token":"abc"}]"#
        );
    }

    #[test]
    fn test_suite_echo_flows() {
        // "message" -> "message-back" with the same args
        let (name, args) = split_event(r#"["message",1,"2",{"3":[true]}]"#).expect("event");
        assert_eq!(name, "message");
        assert_eq!(args, r#"[1,"2",{"3":[true]}]"#);
        let mut data = String::new();
        write_event_array(&mut data, "message-back", &args).expect("array");
        assert_eq!(
            enc(Event, "/", 0, None, Some(&data)),
            r#"2["message-back",1,"2",{"3":[true]}]"#
        );

        let (_, args) = split_event(r#"["message","message to main namespace"]"#).expect("event");
        data.clear();
        write_event_array(&mut data, "message-back", &args).expect("array");
        assert_eq!(data, r#"["message-back","message to main namespace"]"#);

        // binary echo
        let p =
            dec(r#"52-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
                .expect("valid");
        let (name, args) = split_event(p.data.expect("data")).expect("event");
        assert_eq!(name, "message");
        data.clear();
        write_event_array(&mut data, "message-back", &args).expect("array");
        assert_eq!(
            enc(BinaryEvent, "/", p.attachments, None, Some(&data)),
            r#"52-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
        );

        // ack: "message-with-ack" answered with its args
        let p = dec(r#"2456["message-with-ack",1,"2",{"3":[false]}]"#).expect("valid");
        let (_, args) = split_event(p.data.expect("data")).expect("event");
        assert_eq!(
            enc(Ack, p.nsp, 0, p.id, Some(&args)),
            r#"3456[1,"2",{"3":[false]}]"#
        );

        // binary ack
        let p = dec(
            r#"52-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
        )
        .expect("valid");
        let data = p.data.expect("data");
        assert_eq!(check_placeholders(data, p.attachments), Ok(()));
        let (_, args) = split_event(data).expect("event");
        assert_eq!(
            enc(BinaryAck, p.nsp, p.attachments, p.id, Some(&args)),
            r#"62-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
        );
        assert_eq!(
            enc(
                BinaryEvent,
                "/",
                1,
                None,
                Some(&format!(r#"["message",{PH0}]"#))
            ),
            r#"51-["message",{"_placeholder":true,"num":0}]"#
        );
    }

    // ---- validation rules ----

    #[test]
    fn malformed_type_and_empty() {
        assert_eq!(dec(""), Err(DecodeError::Empty));
        assert_eq!(dec("9"), Err(DecodeError::UnknownType('9')));
        assert_eq!(dec("7[\"a\"]"), Err(DecodeError::UnknownType('7')));
        assert_eq!(dec("-1"), Err(DecodeError::UnknownType('-')));
        assert_eq!(dec("é"), Err(DecodeError::UnknownType('é')));
        assert_eq!(dec(" 0"), Err(DecodeError::UnknownType(' ')));
        assert_eq!(dec("[\"a\"]"), Err(DecodeError::UnknownType('[')));
    }

    #[test]
    fn connect_payload_rules() {
        assert_eq!(
            dec("0/nsp,[]"),
            Err(DecodeError::InvalidPayload { kind: Connect })
        );
        assert_eq!(
            dec("0[]"),
            Err(DecodeError::InvalidPayload { kind: Connect })
        );
        assert_eq!(
            dec(r#"0"x""#),
            Err(DecodeError::InvalidPayload { kind: Connect })
        );
        assert_eq!(
            dec("0null"),
            Err(DecodeError::InvalidPayload { kind: Connect })
        );
        assert_eq!(
            dec("0true"),
            Err(DecodeError::InvalidPayload { kind: Connect })
        );
        assert_eq!(dec("0{"), Err(DecodeError::InvalidJson));
        assert_eq!(dec("0{}x"), Err(DecodeError::InvalidJson));
        assert_eq!(dec("0 "), Err(DecodeError::InvalidJson));
        assert_eq!(dec("0{'a':1}"), Err(DecodeError::InvalidJson));
        // JSON whitespace around the value is fine, as with JSON.parse
        assert_eq!(dec("0 {} "), Ok(pkt(Connect, "/", 0, None, Some(" {} "))));
        assert_eq!(dec("0{}"), Ok(pkt(Connect, "/", 0, None, Some("{}"))));
        // an ack id on CONNECT
        assert_eq!(
            dec("012{}"),
            Err(DecodeError::UnexpectedAckId { kind: Connect })
        );
        assert_eq!(
            dec("0/a,1"),
            Err(DecodeError::UnexpectedAckId { kind: Connect })
        );
    }

    #[test]
    fn disconnect_payload_rules() {
        assert_eq!(
            dec("1{}"),
            Err(DecodeError::InvalidPayload { kind: Disconnect })
        );
        assert_eq!(
            dec("1/admin,{}"),
            Err(DecodeError::InvalidPayload { kind: Disconnect })
        );
        assert_eq!(
            dec("1[]"),
            Err(DecodeError::InvalidPayload { kind: Disconnect })
        );
        assert_eq!(
            dec("1 "),
            Err(DecodeError::InvalidPayload { kind: Disconnect })
        );
        assert_eq!(
            dec("112"),
            Err(DecodeError::UnexpectedAckId { kind: Disconnect })
        );
    }

    #[test]
    fn connect_error_payload_rules() {
        assert_eq!(
            dec("4"),
            Err(DecodeError::InvalidPayload { kind: ConnectError })
        );
        assert_eq!(
            dec("4[]"),
            Err(DecodeError::InvalidPayload { kind: ConnectError })
        );
        assert_eq!(
            dec("4null"),
            Err(DecodeError::InvalidPayload { kind: ConnectError })
        );
        assert_eq!(
            dec("41"),
            Err(DecodeError::UnexpectedAckId { kind: ConnectError })
        );
        assert_eq!(
            dec(r#"4/a,"x""#),
            Ok(pkt(ConnectError, "/a", 0, None, Some(r#""x""#)))
        );
    }

    #[test]
    fn event_payload_rules() {
        let invalid = Err(DecodeError::InvalidPayload { kind: Event });
        assert_eq!(dec("2"), invalid);
        assert_eq!(dec("2/admin,"), invalid);
        assert_eq!(dec("212"), invalid);
        assert_eq!(dec("2[]"), invalid);
        assert_eq!(dec("2{}"), invalid);
        assert_eq!(dec(r#"2"a""#), invalid);
        assert_eq!(dec("2[null]"), invalid);
        assert_eq!(dec("2[true]"), invalid);
        assert_eq!(dec(r#"2[["a"]]"#), invalid);
        assert_eq!(dec(r#"2[{"a":1}]"#), invalid);
        // reserved event names, also when escaped
        for name in RESERVED_EVENTS {
            let text = format!(r#"2["{name}",1]"#);
            assert_eq!(dec(&text), invalid, "{text}");
        }
        assert_eq!(dec(r#"2["\u0063onnect"]"#), invalid);
        assert_eq!(
            dec(r#"5/x,0-["disconnect"]"#),
            Err(DecodeError::InvalidAttachments)
        );
        assert_eq!(
            dec(r#"50-["disconnect"]"#),
            Err(DecodeError::InvalidPayload { kind: BinaryEvent })
        );
        // the parser accepts numeric event names
        assert_eq!(dec("2[1]"), Ok(pkt(Event, "/", 0, None, Some("[1]"))));
        assert_eq!(
            dec("2[-1.5,2]"),
            Ok(pkt(Event, "/", 0, None, Some("[-1.5,2]")))
        );
        // names that merely resemble reserved ones are fine
        assert!(dec(r#"2["Connect"]"#).is_ok());
        assert!(dec(r#"2["connection"]"#).is_ok());
        assert!(dec(r#"2[""]"#).is_ok());
        // whitespace and nesting are kept verbatim
        assert_eq!(
            dec("2 [ \"a\" , {\"b\" : [1, 2]} ]\n"),
            Ok(pkt(
                Event,
                "/",
                0,
                None,
                Some(" [ \"a\" , {\"b\" : [1, 2]} ]\n")
            ))
        );
    }

    #[test]
    fn event_json_errors() {
        assert_eq!(dec(r#"2abc["message",1]"#), Err(DecodeError::InvalidJson));
        assert_eq!(dec(r#"2["a""#), Err(DecodeError::InvalidJson));
        assert_eq!(dec(r#"2["a",]"#), Err(DecodeError::InvalidJson));
        assert_eq!(dec(r#"2["a"]]"#), Err(DecodeError::InvalidJson));
        assert_eq!(dec(r#"2["a"] x"#), Err(DecodeError::InvalidJson));
        assert_eq!(dec(r#"2["a",01]"#), Err(DecodeError::InvalidJson));
        assert_eq!(dec(r#"2["a",NaN]"#), Err(DecodeError::InvalidJson));
        assert_eq!(dec("2[\"a\u{1}\"]"), Err(DecodeError::InvalidJson));
        assert_eq!(dec(r#"2["a\x"]"#), Err(DecodeError::InvalidJson));
        assert_eq!(dec(r#"2["a",{"b"}]"#), Err(DecodeError::InvalidJson));
        assert_eq!(dec(r#"2 1["a"]"#), Err(DecodeError::InvalidJson));
        // a namespace without its comma swallows the payload
        assert_eq!(
            dec(r#"2/admin["a"]"#),
            Err(DecodeError::InvalidPayload { kind: Event })
        );
    }

    #[test]
    fn ack_rules() {
        assert_eq!(dec("3[1]"), Err(DecodeError::MissingAckId { kind: Ack }));
        assert_eq!(dec("3[]"), Err(DecodeError::MissingAckId { kind: Ack }));
        assert_eq!(
            dec("3/admin,[]"),
            Err(DecodeError::MissingAckId { kind: Ack })
        );
        assert_eq!(dec("3"), Err(DecodeError::InvalidPayload { kind: Ack }));
        assert_eq!(dec("312"), Err(DecodeError::InvalidPayload { kind: Ack }));
        assert_eq!(dec("312{}"), Err(DecodeError::InvalidPayload { kind: Ack }));
        assert_eq!(
            dec(r#"312"a""#),
            Err(DecodeError::InvalidPayload { kind: Ack })
        );
        assert_eq!(
            dec("61-[{\"_placeholder\":true,\"num\":0}]"),
            Err(DecodeError::MissingAckId { kind: BinaryAck })
        );
        // an ACK may carry anything in its array, also an empty one
        assert_eq!(
            dec("30[null]"),
            Ok(pkt(Ack, "/", 0, Some(0), Some("[null]")))
        );
        assert_eq!(
            dec("37[[],{}]"),
            Ok(pkt(Ack, "/", 0, Some(7), Some("[[],{}]")))
        );
    }

    #[test]
    fn ack_id_rules() {
        assert_eq!(
            dec(r#"218446744073709551615["a"]"#),
            Ok(pkt(Event, "/", 0, Some(u64::MAX), Some(r#"["a"]"#)))
        );
        assert_eq!(
            dec(r#"218446744073709551616["a"]"#),
            Err(DecodeError::InvalidAckId)
        );
        assert_eq!(
            dec(&format!("2{}[\"a\"]", "9".repeat(200))),
            Err(DecodeError::InvalidAckId)
        );
        // leading zeros are accepted, as by the parser
        assert_eq!(
            dec(r#"2007["a"]"#),
            Ok(pkt(Event, "/", 0, Some(7), Some(r#"["a"]"#)))
        );
        // non-ASCII digits are not digits
        assert_eq!(dec("2١[\"a\"]"), Err(DecodeError::InvalidJson));
    }

    #[test]
    fn attachment_rules() {
        assert_eq!(dec(r#"5["a"]"#), Err(DecodeError::InvalidAttachments));
        assert_eq!(dec(r#"5-["a"]"#), Err(DecodeError::InvalidAttachments));
        assert_eq!(dec(r#"51["a"]"#), Err(DecodeError::InvalidAttachments));
        assert_eq!(dec(r#"5a-["a"]"#), Err(DecodeError::InvalidAttachments));
        assert_eq!(dec(r#"5 1-["a"]"#), Err(DecodeError::InvalidAttachments));
        assert_eq!(dec("5"), Err(DecodeError::InvalidAttachments));
        assert_eq!(dec("6"), Err(DecodeError::InvalidAttachments));
        assert_eq!(dec("61"), Err(DecodeError::InvalidAttachments));
        assert_eq!(
            dec(&format!("5{}-[\"a\"]", "9".repeat(40))),
            Err(DecodeError::InvalidAttachments)
        );
        assert_eq!(
            dec("51-"),
            Err(DecodeError::InvalidPayload { kind: BinaryEvent })
        );
        assert_eq!(
            dec("61-1"),
            Err(DecodeError::InvalidPayload { kind: BinaryAck })
        );
        assert_eq!(
            decode(r#"51-["a"]"#, &DecodeLimits { max_attachments: 0 }),
            Err(DecodeError::TooManyAttachments { count: 1, max: 0 })
        );
        assert_eq!(
            dec(r#"511-["a"]"#),
            Err(DecodeError::TooManyAttachments { count: 11, max: 10 })
        );
        assert_eq!(
            dec(r#"510-["a"]"#),
            Ok(pkt(BinaryEvent, "/", 10, None, Some(r#"["a"]"#)))
        );
        // zero attachments is a valid (if odd) binary packet
        assert_eq!(
            decode(r#"50-["a"]"#, &DecodeLimits { max_attachments: 0 }),
            Ok(pkt(BinaryEvent, "/", 0, None, Some(r#"["a"]"#)))
        );
        // only binary kinds have a count; "2" then "1-" is JSON garbage
        assert_eq!(dec(r#"21-["a"]"#), Err(DecodeError::InvalidJson));
    }

    #[test]
    fn namespace_rules() {
        assert_eq!(
            dec(r#"2/,["a"]"#),
            Ok(pkt(Event, "/", 0, None, Some(r#"["a"]"#)))
        );
        assert_eq!(
            dec(r#"2/a/b c,["a"]"#),
            Ok(pkt(Event, "/a/b c", 0, None, Some(r#"["a"]"#)))
        );
        assert_eq!(
            dec(r#"2/é,1["a"]"#),
            Ok(pkt(Event, "/é", 0, Some(1), Some(r#"["a"]"#)))
        );
        assert_eq!(dec("0/ad\nmin,"), Err(DecodeError::InvalidNamespace));
        assert_eq!(dec("0/\u{0},"), Err(DecodeError::InvalidNamespace));
        assert_eq!(dec("0/\u{7f}"), Err(DecodeError::InvalidNamespace));
        // a namespace must start right after the type
        assert_eq!(dec(r#"2admin,["a"]"#), Err(DecodeError::InvalidJson));
        // the namespace ends at the first comma
        assert_eq!(dec(r#"2/a,/b,["a"]"#), Err(DecodeError::InvalidJson));
    }

    // ---- encoding ----

    #[test]
    fn encode_rules() {
        assert_eq!(enc(Connect, "", 0, None, None), "0");
        assert_eq!(
            enc(Connect, "/", 3, None, None),
            "0",
            "count only for binary kinds"
        );
        assert_eq!(
            enc(BinaryEvent, "/", 0, None, Some(r#"["a"]"#)),
            r#"50-["a"]"#
        );
        assert_eq!(enc(BinaryAck, "/x", 12, Some(0), Some("[]")), "612-/x,0[]");
        assert_eq!(
            enc(Ack, "/", 0, Some(u64::MAX), Some("[]")),
            "318446744073709551615[]"
        );
        let mut out = String::from("4");
        encode_into(&mut out, Event, "/", 0, None, Some(r#"["foo"]"#));
        assert_eq!(out, r#"42["foo"]"#, "appends");
    }

    #[test]
    fn packet_kind_helpers() {
        let all = [
            Connect,
            Disconnect,
            Event,
            Ack,
            ConnectError,
            BinaryEvent,
            BinaryAck,
        ];
        for (i, kind) in all.into_iter().enumerate() {
            assert_eq!(kind as u8 as usize, i);
            assert_eq!(kind.as_char(), char::from(b'0' + i as u8));
            assert_eq!(PacketKind::from_char(kind.as_char()), Some(kind));
            assert_eq!(kind.is_binary(), i >= 5);
        }
        assert_eq!(PacketKind::from_char('7'), None);
    }

    // ---- event arrays ----

    #[test]
    fn write_event_array_rules() {
        let mut out = String::new();
        write_event_array(&mut out, "hello", "[]").expect("array");
        assert_eq!(out, r#"["hello"]"#);
        out.clear();
        write_event_array(&mut out, "a", r#"[1,"a"]"#).expect("array");
        assert_eq!(out, r#"["a",1,"a"]"#);
        out.clear();
        write_event_array(&mut out, "a", " [ ] ").expect("array");
        assert_eq!(out, r#"["a"]"#);
        out.clear();
        write_event_array(&mut out, "a\"b\n", "\n[ {\"z\":1, \"a\":2} ]\t").expect("array");
        assert_eq!(out, "[\"a\\\"b\\n\", {\"z\":1, \"a\":2} ]");
        let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(v[0], "a\"b\n");

        let mut out = String::from("keep");
        for bad in ["", "{}", "[", "]", "1", "\"[]\"", "[1", "1]", "null"] {
            assert_eq!(
                write_event_array(&mut out, "a", bad),
                Err(EncodeError::ArgsNotAnArray),
                "{bad:?}"
            );
        }
        assert_eq!(out, "keep", "untouched on error");
    }

    #[test]
    fn split_event_rules() {
        assert_eq!(
            split_event(r#"["foo"]"#),
            Ok(("foo".to_owned(), "[]".to_owned()))
        );
        assert_eq!(
            split_event(r#" [ "a\u00e9\"" , 1 , {"z" : 1,"a":[ 2 ]} ] "#),
            Ok(("aé\"".to_owned(), r#"[1,{"z" : 1,"a":[ 2 ]}]"#.to_owned()))
        );
        // key order and number formatting survive
        let data = r#"["ev",{"z":1,"y":{"b":1.50,"a":1e2}},"x",[3,2,1],null]"#;
        let (name, args) = split_event(data).expect("event");
        assert_eq!(name, "ev");
        assert_eq!(args, r#"[{"z":1,"y":{"b":1.50,"a":1e2}},"x",[3,2,1],null]"#);
        let mut back = String::new();
        write_event_array(&mut back, &name, &args).expect("array");
        assert_eq!(back, data);

        let invalid = Err(DecodeError::InvalidPayload { kind: Event });
        assert_eq!(split_event("[]"), invalid);
        assert_eq!(split_event("{}"), invalid);
        assert_eq!(split_event(r#""a""#), invalid);
        assert_eq!(split_event("[null]"), invalid);
        assert_eq!(split_event("[[]]"), invalid);
        assert_eq!(split_event("[{}]"), invalid);
        assert_eq!(split_event("[true]"), invalid);
        assert_eq!(split_event("[1e400]"), invalid);
        assert_eq!(split_event("["), Err(DecodeError::InvalidJson));
        assert_eq!(split_event(r#"["a",]"#), Err(DecodeError::InvalidJson));
        assert_eq!(split_event(""), Err(DecodeError::InvalidJson));
        assert_eq!(split_event(r#"["a"] ["b"]"#), Err(DecodeError::InvalidJson));
    }

    #[test]
    fn split_event_numeric_names_follow_javascript() {
        let name = |data: &str| split_event(data).map(|(n, _)| n);
        assert_eq!(name("[1]"), Ok("1".to_owned()));
        assert_eq!(name("[1.0]"), Ok("1".to_owned()));
        assert_eq!(name("[-0]"), Ok("0".to_owned()));
        assert_eq!(name("[0.5]"), Ok("0.5".to_owned()));
        assert_eq!(name("[-1.25]"), Ok("-1.25".to_owned()));
        assert_eq!(name("[1e2]"), Ok("100".to_owned()));
        assert_eq!(name("[1e20]"), Ok("100000000000000000000".to_owned()));
        assert_eq!(name("[1e21]"), Ok("1e+21".to_owned()));
        assert_eq!(name("[1.5e300]"), Ok("1.5e+300".to_owned()));
        assert_eq!(name("[0.000001]"), Ok("0.000001".to_owned()));
        assert_eq!(name("[1e-7]"), Ok("1e-7".to_owned()));
        assert_eq!(
            name("[12345678901234567890]"),
            Ok("12345678901234567000".to_owned())
        );
    }

    #[test]
    fn key_order_survives_decode_split_write_encode() {
        let text = r#"2/chat,7["msg",{"zeta":1,"alpha":{"b":true,"a":false},"mid":[{"y":1,"x":2}]},"\u00e9"]"#;
        let p = dec(text).expect("valid");
        let (name, args) = split_event(p.data.expect("data")).expect("event");
        let mut data = String::new();
        write_event_array(&mut data, &name, &args).expect("array");
        let mut out = String::new();
        encode_into(&mut out, p.kind, p.nsp, p.attachments, p.id, Some(&data));
        assert_eq!(out, text);
    }

    // ---- placeholders ----

    #[test]
    fn placeholder_rules() {
        let two = r#"["m",{"_placeholder":true,"num":0},{"a":[{"_placeholder":true,"num":1}]}]"#;
        assert_eq!(check_placeholders(two, 2), Ok(()));
        assert_eq!(
            check_placeholders(two, 1),
            Err(DecodeError::InvalidPlaceholder)
        );
        assert_eq!(
            check_placeholders(two, 0),
            Err(DecodeError::InvalidPlaceholder)
        );
        assert_eq!(check_placeholders(r#"["m"]"#, 0), Ok(()));
        assert_eq!(check_placeholders(r#"["m"]"#, 3), Ok(()));
        for bad in [
            r#"[{"_placeholder":true,"num":-1}]"#,
            r#"[{"_placeholder":true,"num":0.5}]"#,
            r#"[{"_placeholder":true,"num":"0"}]"#,
            r#"[{"_placeholder":true,"num":null}]"#,
            r#"[{"_placeholder":true}]"#,
            r#"[{"_placeholder":true,"num":18446744073709551616}]"#,
            r#"{"x":{"y":[[{"num":5,"_placeholder":true}]]}}"#,
        ] {
            assert_eq!(
                check_placeholders(bad, 2),
                Err(DecodeError::InvalidPlaceholder),
                "{bad}"
            );
        }
        // 1.0 is the integer 1 in JavaScript
        assert_eq!(
            check_placeholders(r#"[{"_placeholder":true,"num":1.0}]"#, 2),
            Ok(())
        );
        // not placeholders: ordinary data
        for ok in [
            r#"[{"_placeholder":false,"num":9}]"#,
            r#"[{"_placeholder":"true","num":9}]"#,
            r#"[{"_placeholder":1,"num":9}]"#,
            r#"[{"num":9}]"#,
            r#""_placeholder""#,
        ] {
            assert_eq!(check_placeholders(ok, 1), Ok(()), "{ok}");
        }
        // duplicate keys: the last one wins, as with JSON.parse
        assert_eq!(
            check_placeholders(r#"[{"_placeholder":true,"num":0,"num":7}]"#, 2),
            Err(DecodeError::InvalidPlaceholder)
        );
        assert_eq!(check_placeholders("[", 1), Err(DecodeError::InvalidJson));
    }

    #[test]
    fn backend_payloads_reference_each_attachment_once() {
        let two = r#"["m",{"_placeholder":true,"num":1},{"a":[{"_placeholder":true,"num":0}]}]"#;
        assert_eq!(check_placeholders_one_to_one(two, 2), Ok(()));
        assert_eq!(check_placeholders_one_to_one(r#"["m"]"#, 0), Ok(()));
        for (bad, n) in [
            // an attachment nobody references
            (r#"["m"]"#, 1),
            (r#"[{"_placeholder":true,"num":0}]"#, 2),
            // one attachment twice
            (
                r#"[{"_placeholder":true,"num":0},{"_placeholder":true,"num":0}]"#,
                2,
            ),
            // out of range, or no integer
            (r#"[{"_placeholder":true,"num":1}]"#, 1),
            (r#"[{"_placeholder":true,"num":18446744073709551615}]"#, 1),
            (r#"[{"_placeholder":true,"num":"0"}]"#, 1),
        ] {
            assert_eq!(
                check_placeholders_one_to_one(bad, n),
                Err(DecodeError::InvalidPlaceholder),
                "{bad} with {n}"
            );
        }
        assert_eq!(
            check_placeholders_one_to_one("[", 0),
            Err(DecodeError::InvalidJson)
        );
    }

    // ---- robustness ----

    #[test]
    fn deep_nesting_does_not_overflow() {
        for depth in [100, 127, 128, 129, 10_000, 100_000] {
            let text = format!("2[\"a\",{}{}]", "[".repeat(depth), "]".repeat(depth));
            let _ = dec(&text);
            let data = text.get(1..).unwrap_or_default();
            let _ = split_event(data);
            let _ = check_placeholders(data, 1);
            let obj = format!("0{}", "{\"a\":".repeat(depth) + "1" + &"}".repeat(depth));
            let _ = dec(&obj);
        }
    }

    #[test]
    fn display_messages_are_readable() {
        assert_eq!(
            DecodeError::TooManyAttachments { count: 11, max: 10 }.to_string(),
            "too many attachments: 11 (at most 10 allowed)"
        );
        assert_eq!(
            DecodeError::InvalidPayload { kind: Event }.to_string(),
            "invalid payload for packet type EVENT"
        );
        assert_eq!(
            DecodeError::UnknownType('9').to_string(),
            "unknown socket.io packet type '9'"
        );
        assert_eq!(
            DecodeError::MissingAckId { kind: BinaryAck }.to_string(),
            "packet type BINARY_ACK requires an ack id"
        );
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            let i = (self.next() % items.len() as u64) as usize;
            items.get(i).copied().unwrap_or_default()
        }
    }

    /// Random texts built from protocol-shaped tokens: decoding never panics,
    /// and whatever decodes re-encodes to text that decodes to the same packet.
    #[test]
    fn random_texts_never_panic_and_round_trip() {
        const TOKENS: &[&str] = &[
            "0",
            "1",
            "2",
            "3",
            "4",
            "5",
            "6",
            "7",
            "9",
            "-",
            ",",
            "/",
            "/admin",
            "12",
            "18446744073709551616",
            "[",
            "]",
            "{",
            "}",
            "\"",
            "\"a\"",
            "\"connect\"",
            ":",
            "null",
            "true",
            "1.5",
            "-0",
            "e",
            " ",
            "\n",
            "\\",
            "\\u00e9",
            "é",
            "\u{1}",
            "[\"ev\"",
            "{\"_placeholder\":true,\"num\":0}",
            "[]",
            "{}",
            "abc",
        ];
        let limits = DecodeLimits { max_attachments: 3 };
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let mut decoded = 0;
        for _ in 0..60_000 {
            let n = (rng.next() % 10) as usize;
            let text: String = (0..n).map(|_| rng.pick(TOKENS)).collect();
            if let Ok(p) = decode(&text, &limits) {
                decoded += 1;
                let again = p.encode();
                assert_eq!(
                    decode(&again, &limits),
                    Ok(p.clone()),
                    "{text:?} -> {again:?}"
                );
                if let Some(data) = p.data {
                    let _ = check_placeholders(data, p.attachments);
                    if matches!(p.kind, Event | BinaryEvent) {
                        let (name, args) = split_event(data).expect("valid event splits");
                        let mut out = String::new();
                        write_event_array(&mut out, &name, &args).expect("args are an array");
                        assert!(split_event(&out).is_ok(), "{out}");
                    }
                }
            }
        }
        assert!(decoded > 100, "only {decoded} random texts decoded");
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..30_000 {
            let len = (rng.next() % 32) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let text = String::from_utf8_lossy(&bytes);
            let _ = dec(&text);
            let _ = split_event(&text);
            let _ = check_placeholders(&text, 2);
            let mut out = String::new();
            let _ = write_event_array(&mut out, &text, &text);
            // also with a valid type digit in front, to reach the deeper paths
            for prefix in ["0", "2", "3", "51-", "62-1"] {
                let _ = dec(&format!("{prefix}{text}"));
            }
        }
    }
}

//! The payload of a published message: the stamp (see [`Stamp`]) and
//! what makes the message as long as asked. Pure; unit-tested here.
//!
//! - `padding` (the default): the stamp string padded with `x` to
//!   `--payload-bytes`. It compresses to almost nothing, so it says
//!   nothing about compression.
//! - `json`: a JSON object of about `--payload-bytes` bytes, the stamp its
//!   first field, then records made of repeated keys, words from a small
//!   vocabulary, numbers and timestamps, drawn from a seeded generator so
//!   every message differs. It shrinks about as much as typical
//!   application JSON of that size, at the low end of the usual 3-6x: at
//!   2 KiB about 3.0x with deflate level 1, 3.4x with level 6 (the tests
//!   hold it near that).

use std::fmt::Write as _;

use clap::ValueEnum;
use serde::Serialize;

use crate::protocol::Stamp;
use crate::rng::SplitMix;

/// What fills a message beyond its stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadKind {
    /// The stamp string padded with `x`.
    #[default]
    Padding,
    /// A JSON object of records, as an application would send.
    Json,
}

/// The payload every publisher of a run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadSpec {
    pub kind: PayloadKind,
    /// Length to reach: of the string's content (`padding`), of the JSON
    /// text (`json`, which may exceed it by the part of one record).
    pub bytes: usize,
}

impl PayloadSpec {
    /// Appends the payload (one JSON value) carrying `stamp` to `buf`;
    /// `rng` varies the `json` documents.
    pub fn push(&self, buf: &mut String, stamp: &Stamp, rng: &mut SplitMix) {
        match self.kind {
            PayloadKind::Padding => stamp.push_json(buf, self.bytes),
            PayloadKind::Json => push_document(buf, stamp, self.bytes, rng),
        }
    }
}

const WORDS: &[&str] = &[
    "amber", "anchor", "autumn", "basil", "birch", "blue", "bridge", "canyon", "cedar", "cloud",
    "copper", "coral", "delta", "ember", "falcon", "fern", "field", "forest", "garnet", "glacier",
    "harbor", "hazel", "indigo", "island", "jasper", "juniper", "lagoon", "lantern", "maple",
    "meadow", "mist", "north", "ocean", "olive", "orchid", "pebble", "pine", "quartz", "raven",
    "ridge", "river", "sage", "shadow", "silver", "spruce", "stone", "summit", "thistle", "tide",
    "valley", "willow", "winter",
];

const COUNTRIES: &[&str] = &["DE", "FR", "NL", "SE", "ES", "IT", "PL", "PT"];

/// Shop prices end like this.
const CENTS: &[&str] = &["00", "49", "50", "95", "99"];

const STATUSES: &[&str] = &[
    "pending",
    "active",
    "shipped",
    "delivered",
    "cancelled",
    "on_hold",
];

/// A word, the first ones more often (as in real text, a few words make
/// most of it).
fn word(rng: &mut SplitMix) -> &'static str {
    let n = WORDS.len() as u64;
    WORDS[(below(rng, n) * below(rng, n) / n) as usize]
}

fn below(rng: &mut SplitMix, n: u64) -> u64 {
    rng.next() % n
}

/// `{"stamp":"lt:..","type":"..","page":..,"records":[..],"events":[..],"note":".."}`:
/// the records that fit in `target` bytes (at least one), the short events
/// that fit after them, then a note of words up to `target` (within a
/// word).
fn push_document(buf: &mut String, stamp: &Stamp, target: usize, rng: &mut SplitMix) {
    let start = buf.len();
    buf.push_str("{\"stamp\":");
    stamp.push_json(buf, 0);
    let _ = write!(
        buf,
        ",\"type\":\"{}.{}\",\"page\":{},\"records\":[",
        word(rng),
        STATUSES[below(rng, STATUSES.len() as u64) as usize],
        below(rng, 500)
    );
    // One day per document, as a page of recent records has.
    let day = format!("2026-{:02}-{:02}", 1 + below(rng, 12), 1 + below(rng, 28));
    let mut id = 100_000 + below(rng, 900_000);
    let mut record = String::new();
    let mut first = true;
    loop {
        record.clear();
        push_record(&mut record, id, &day, rng);
        let sep = usize::from(!first);
        // `]}` close the document.
        if !first && buf.len() - start + sep + record.len() + 2 > target {
            break;
        }
        if !first {
            buf.push(',');
        }
        buf.push_str(&record);
        first = false;
        id += 1 + below(rng, 3);
    }
    buf.push(']');
    // Then short events while they fit (`]}` close them and the document).
    buf.push_str(",\"events\":[");
    let mut first = true;
    let mut minute = below(rng, 600);
    loop {
        record.clear();
        minute += 1 + below(rng, 20);
        let _ = write!(
            record,
            "{{\"at\":\"{day}T{:02}:{:02}:00Z\",\"event\":\"status.changed\",\"to\":\"{}\"}}",
            minute / 60 % 24,
            minute % 60,
            STATUSES[below(rng, STATUSES.len() as u64) as usize],
        );
        let sep = usize::from(!first);
        if buf.len() - start + sep + record.len() + 2 > target {
            break;
        }
        if !first {
            buf.push(',');
        }
        buf.push_str(&record);
        first = false;
    }
    buf.push(']');
    const NOTE: &str = ",\"note\":\"";
    if buf.len() - start + NOTE.len() + 2 < target {
        buf.push_str(NOTE);
        let mut sep = "";
        while buf.len() - start + 2 < target {
            buf.push_str(sep);
            buf.push_str(word(rng));
            sep = " ";
        }
        buf.push('"');
    }
    buf.push('}');
}

fn push_record(buf: &mut String, id: u64, day: &str, rng: &mut SplitMix) {
    let handle = format!("{}{}", word(rng), below(rng, 100));
    let _ = write!(
        buf,
        "{{\"id\":{id},\"user\":{{\"name\":\"{} {}\",\"handle\":\"{handle}\",\
         \"avatar\":\"https://cdn.example.com/avatars/{handle}.png\",\"country\":\"{}\"}},\
         \"title\":\"{} {} {}\",\"status\":\"{}\",\
         \"price\":{{\"amount\":{}.{},\"currency\":\"EUR\"}},\"quantity\":{},\"active\":{},\
         \"tags\":[\"{}\",\"{}\"],\"updated_at\":\"{day}T{:02}:{:02}:00Z\",\
         \"links\":{{\"self\":\"https://api.example.com/v1/orders/{id}\",\
         \"owner\":\"https://api.example.com/v1/users/{handle}\"}},\
         \"meta\":{{\"source\":\"web\",\"version\":3,\"deleted\":false}}}}",
        word(rng),
        word(rng),
        COUNTRIES[below(rng, COUNTRIES.len() as u64) as usize],
        word(rng),
        word(rng),
        word(rng),
        STATUSES[below(rng, STATUSES.len() as u64) as usize],
        below(rng, 200),
        CENTS[below(rng, CENTS.len() as u64) as usize],
        1 + below(rng, 5),
        below(rng, 2) == 0,
        word(rng),
        word(rng),
        below(rng, 24),
        below(rng, 60),
    );
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use flate2::Compression;
    use flate2::write::DeflateEncoder;

    use super::*;

    fn stamp(seq: u64) -> Stamp {
        Stamp {
            publisher: 2,
            channel: 5,
            seq,
            sent_ns: 1_700_000_000_123_456_789,
        }
    }

    fn document(seq: u64, bytes: usize, rng: &mut SplitMix) -> String {
        let spec = PayloadSpec {
            kind: PayloadKind::Json,
            bytes,
        };
        let mut buf = String::new();
        spec.push(&mut buf, &stamp(seq), rng);
        buf
    }

    #[test]
    fn json_documents_parse_carry_the_stamp_and_have_about_the_size() {
        let mut rng = SplitMix::new(1);
        for (seq, bytes) in [(0, 2048), (1, 2048), (2, 100), (3, 10_000)] {
            let doc = document(seq, bytes, &mut rng);
            let value: serde_json::Value = serde_json::from_str(&doc).unwrap();
            assert!(value["records"].as_array().is_some_and(|r| !r.is_empty()));
            // Within a word of the size asked, unless one record is longer.
            assert!(doc.len() >= bytes, "{}", doc.len());
            assert!(doc.len() < bytes + 16 || bytes < 700, "{}", doc.len());
            // As the receivers see it: inside the event's arguments.
            let data = format!("[\"msg\",{doc}]");
            assert_eq!(Stamp::find(&data), Some(stamp(seq)));
        }
    }

    #[test]
    fn json_documents_differ_and_compress_like_real_json() {
        let mut rng = SplitMix::new(7);
        let docs: Vec<String> = (0..20).map(|seq| document(seq, 2048, &mut rng)).collect();
        assert_ne!(docs[0], docs[1]);
        let plain: usize = docs.iter().map(String::len).sum();
        // Measured: about 3.0x at level 1 (the gateway's default), 3.4x
        // at level 6 (zlib's default, Node's).
        for level in [1, 6] {
            let compressed: usize = docs
                .iter()
                .map(|d| {
                    let mut enc = DeflateEncoder::new(Vec::new(), Compression::new(level));
                    enc.write_all(d.as_bytes()).unwrap();
                    enc.finish().unwrap().len()
                })
                .sum();
            let ratio = plain as f64 / compressed as f64;
            assert!((2.8..=6.0).contains(&ratio), "level {level}: {ratio:.2}x");
        }
    }

    #[test]
    fn padding_keeps_the_stamp_string() {
        let spec = PayloadSpec {
            kind: PayloadKind::Padding,
            bytes: 64,
        };
        let mut buf = String::new();
        spec.push(&mut buf, &stamp(9), &mut SplitMix::new(1));
        assert_eq!(buf.len(), 66);
        assert_eq!(Stamp::find(&buf), Some(stamp(9)));
    }
}

//! The accounting behind the figures: per-receiver sequence tracking (loss,
//! duplicates, order), latency histograms and their percentiles, and the
//! comparison of what publishers sent with what receivers got. Pure code,
//! unit-tested here.

use std::collections::HashMap;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, up to this bound (larger values
/// are clamped to it, so a stuck message still shows as a huge max).
const MAX_LATENCY_US: u64 = 600_000_000;

/// An HDR histogram of durations in microseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds"),
        }
    }

    /// Records one duration in microseconds (0 counts as 1, clamped above).
    pub fn record_us(&mut self, us: u64) {
        self.hist.saturating_record(us.clamp(1, MAX_LATENCY_US));
    }

    /// Records the delay from `sent_ns` to `now_ns` (unix nanoseconds).
    pub fn record_since(&mut self, sent_ns: u64, now_ns: u64) {
        self.record_us(now_ns.saturating_sub(sent_ns) / 1_000);
    }

    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    pub fn percentiles(&self) -> Percentiles {
        let ms = |us: u64| us as f64 / 1_000.0;
        if self.hist.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: self.hist.len(),
            p50: ms(self.hist.value_at_quantile(0.50)),
            p90: ms(self.hist.value_at_quantile(0.90)),
            p99: ms(self.hist.value_at_quantile(0.99)),
            p999: ms(self.hist.value_at_quantile(0.999)),
            max: ms(self.hist.max()),
            mean: self.hist.mean() / 1_000.0,
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// Which sequence numbers of one publisher one receiver has seen.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    seen: Vec<u64>,
    unique: u64,
    duplicates: u64,
    out_of_order: u64,
    /// One past the highest sequence seen.
    next: u64,
}

impl SeqTracker {
    /// Largest sequence accepted; beyond it a sequence is counted as
    /// invalid instead of growing the bit set without bound.
    pub const MAX_SEQ: u64 = 1 << 28;

    /// Records `seq`; returns false when it is out of the accepted range.
    pub fn record(&mut self, seq: u64) -> bool {
        if seq >= Self::MAX_SEQ {
            return false;
        }
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        let mask = 1u64 << bit;
        if self.seen[word] & mask != 0 {
            self.duplicates += 1;
            return true;
        }
        self.seen[word] |= mask;
        self.unique += 1;
        if seq + 1 < self.next {
            self.out_of_order += 1;
        }
        self.next = self.next.max(seq + 1);
        true
    }

    pub fn unique(&self) -> u64 {
        self.unique
    }

    /// Distinct sequences seen that are below `sent` (the publisher's count).
    pub fn unique_below(&self, sent: u64) -> u64 {
        if sent >= self.next {
            return self.unique;
        }
        let full_words = (sent / 64) as usize;
        let mut n: u64 = self.seen[..full_words]
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum();
        let rem = sent % 64;
        if rem > 0 {
            n += u64::from((self.seen[full_words] & ((1u64 << rem) - 1)).count_ones());
        }
        n
    }
}

/// What one receiver (a subscriber of a room, or a targeted socket) saw.
#[derive(Debug, Clone, Default)]
pub struct ReceiverTally {
    /// The channel this receiver listens on.
    pub channel: u32,
    pub per_publisher: HashMap<u32, SeqTracker>,
    /// Messages stamped for another channel than this receiver's.
    pub misrouted: u64,
    /// Messages whose sequence was out of range.
    pub invalid: u64,
    /// Deliveries counted (every copy, duplicates included).
    pub received: u64,
}

impl ReceiverTally {
    pub fn new(channel: u32) -> Self {
        Self {
            channel,
            ..Self::default()
        }
    }

    pub fn record(&mut self, publisher: u32, channel: u32, seq: u64) {
        self.received += 1;
        if channel != self.channel {
            self.misrouted += 1;
            return;
        }
        if !self.per_publisher.entry(publisher).or_default().record(seq) {
            self.invalid += 1;
        }
    }
}

/// How many messages each publisher sent to each channel.
#[derive(Debug, Clone, Default)]
pub struct SentLedger {
    /// `(publisher, channel) -> count`.
    sent: HashMap<(u32, u32), u64>,
}

impl SentLedger {
    pub fn add(&mut self, publisher: u32, channel: u32, count: u64) {
        if count > 0 {
            *self.sent.entry((publisher, channel)).or_default() += count;
        }
    }

    pub fn total(&self) -> u64 {
        self.sent.values().sum()
    }

    /// Messages sent into `channel` by all publishers.
    pub fn channel_total(&self, channel: u32) -> u64 {
        self.sent
            .iter()
            .filter(|((_, c), _)| *c == channel)
            .map(|(_, n)| n)
            .sum()
    }

    fn by_channel(&self) -> HashMap<u32, Vec<(u32, u64)>> {
        let mut map: HashMap<u32, Vec<(u32, u64)>> = HashMap::new();
        for (&(p, c), &n) in &self.sent {
            map.entry(c).or_default().push((p, n));
        }
        map
    }
}

/// The delivery outcome of a run, summed over receivers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryTotals {
    /// Receivers accounted for.
    pub receivers: u64,
    /// Deliveries expected: for each receiver, what was sent to its channel.
    pub expected: u64,
    /// Deliveries that arrived, duplicates included.
    pub received: u64,
    /// Distinct expected messages that arrived.
    pub unique: u64,
    /// Expected messages that never arrived.
    pub lost: u64,
    pub duplicates: u64,
    /// Messages that arrived after one with a higher sequence (same
    /// publisher and channel).
    pub out_of_order: u64,
    /// Messages that reached a receiver of another channel, or carried a
    /// sequence the publisher never sent.
    pub misrouted: u64,
}

impl DeliveryTotals {
    /// Compares what every receiver saw with what was sent to its channel.
    pub fn account(ledger: &SentLedger, receivers: &[ReceiverTally]) -> Self {
        let by_channel = ledger.by_channel();
        let mut t = DeliveryTotals::default();
        for r in receivers {
            t.receivers += 1;
            t.received += r.received;
            t.misrouted += r.misrouted + r.invalid;
            let sent = by_channel.get(&r.channel).map(Vec::as_slice).unwrap_or(&[]);
            for &(publisher, n) in sent {
                t.expected += n;
                let got = r
                    .per_publisher
                    .get(&publisher)
                    .map_or(0, |s| s.unique_below(n));
                t.unique += got;
                t.lost += n - got;
            }
            for (publisher, seqs) in &r.per_publisher {
                t.duplicates += seqs.duplicates;
                t.out_of_order += seqs.out_of_order;
                let n = sent
                    .iter()
                    .find(|(p, _)| p == publisher)
                    .map_or(0, |(_, n)| *n);
                // Distinct sequences the publisher never sent.
                t.misrouted += seqs.unique() - seqs.unique_below(n);
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_values() {
        let mut l = Latency::new();
        for us in 1..=1000 {
            l.record_us(us * 1000); // 1..=1000 ms
        }
        let p = l.percentiles();
        assert_eq!(p.count, 1000);
        assert!((p.p50 - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.p90 - 900.0).abs() < 1.0, "{p:?}");
        assert!((p.p99 - 990.0).abs() < 1.0, "{p:?}");
        assert!((p.max - 1000.0).abs() < 1.0, "{p:?}");
        assert_eq!(Latency::new().percentiles(), Percentiles::default());
    }

    #[test]
    fn latency_clamps_and_merges() {
        let mut a = Latency::new();
        a.record_since(10_000, 5_000); // clock skew: counts as the minimum
        a.record_us(u64::MAX);
        let mut b = Latency::new();
        b.record_since(0, 2_000_000); // 2 ms
        a.merge(&b);
        assert_eq!(a.percentiles().count, 3);
        assert!(a.percentiles().max >= 599_000.0);
    }

    #[test]
    fn seq_tracker_counts_duplicates_and_reordering() {
        let mut s = SeqTracker::default();
        for seq in [0, 1, 3, 2, 3, 5] {
            assert!(s.record(seq));
        }
        assert_eq!(s.unique(), 5);
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.out_of_order, 1); // 2 after 3
        assert_eq!(s.unique_below(4), 4);
        assert_eq!(s.unique_below(3), 3);
        assert_eq!(s.unique_below(100), 5);
        assert_eq!(s.unique_below(0), 0);
        assert!(!s.record(SeqTracker::MAX_SEQ));
    }

    #[test]
    fn seq_tracker_across_words() {
        let mut s = SeqTracker::default();
        for seq in (0..200).rev() {
            s.record(seq);
        }
        assert_eq!(s.unique_below(64), 64);
        assert_eq!(s.unique_below(130), 130);
        assert_eq!(s.out_of_order, 199);
    }

    #[test]
    fn accounting_finds_loss_duplicates_and_misroutes() {
        let mut ledger = SentLedger::default();
        ledger.add(0, 0, 3); // publisher 0 sent seq 0..3 to channel 0
        ledger.add(1, 0, 2);
        ledger.add(0, 1, 1);
        assert_eq!(ledger.total(), 6);
        assert_eq!(ledger.channel_total(0), 5);

        // Receiver A on channel 0 got everything, one duplicate.
        let mut a = ReceiverTally::new(0);
        for (p, s) in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 1)] {
            a.record(p, 0, s);
        }
        // Receiver B on channel 0 lost publisher 1's seq 1 and got a message
        // of channel 1 and a sequence that was never sent.
        let mut b = ReceiverTally::new(0);
        for (p, s) in [(0, 0), (0, 1), (0, 2), (1, 0), (0, 9)] {
            b.record(p, 0, s);
        }
        b.record(0, 1, 0);
        // Receiver C on channel 1 got nothing.
        let c = ReceiverTally::new(1);

        let t = DeliveryTotals::account(&ledger, &[a, b, c]);
        assert_eq!(t.receivers, 3);
        assert_eq!(t.expected, 5 + 5 + 1);
        assert_eq!(t.unique, 5 + 4);
        assert_eq!(t.lost, 1 + 1);
        assert_eq!(t.duplicates, 1);
        assert_eq!(t.misrouted, 2);
        assert_eq!(t.received, 6 + 6);
    }

    #[test]
    fn nothing_sent_nothing_expected() {
        let t = DeliveryTotals::account(&SentLedger::default(), &[ReceiverTally::new(0)]);
        assert_eq!(t.expected, 0);
        assert_eq!(t.lost, 0);
    }
}

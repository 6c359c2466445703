//! The WebSocket writers of a node: a few tasks that write the frames queued
//! for many connections.
//!
//! A producer appends frames to a connection's queue and, when the queue
//! had nothing pending, schedules it on one of the shards here. A shard's
//! task wakes once for everything scheduled since it last ran and writes
//! each connection's pending frames with one vectored write.
//!
//! When a connection is written depends on its traffic and the shard's,
//! not on a schedule. A shard passes at most once per window
//! (`server.write_coalesce_ms`, longer while its passes are long), so on a
//! busy node the messages that reach a connection within a window leave in
//! one write (one system call, one TCP segment on loopback); a shard woken
//! after a pause passes at once, so a quiet node adds no latency. A
//! broadcast with only a few quiet recipients (connections that got no
//! other broadcast for two windows: small rooms, chats, targeted emits) is
//! written by the producer itself, at once: such a connection has nothing
//! to gather, and the hand-over to the writer task would cost more than the
//! writes. A socket that does not take everything is handed to the
//! session's driver, which waits until it is writable.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::queue::OutboundQueue;
use crate::protocol::engineio::Transport;
use crate::telemetry::Metrics;

/// Milliseconds on the node's write clock, which records when each
/// connection got its last broadcast. It wraps after 49 days: spans on it are
/// taken with wrapping arithmetic and matter only up to a window (at most a
/// second), so a wrap costs at most one connection one window once.
pub(crate) fn clock_ms() -> u32 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    // Truncation is the wrap described above.
    epoch.elapsed().as_millis() as u32
}

/// A time on [`clock_ms`] longer ago than any window: that of a
/// connection that got no broadcast yet.
pub(crate) fn long_ago() -> u32 {
    clock_ms().wrapping_sub(1 << 16)
}

/// Frames, bytes and write calls, counted once per pass.
#[derive(Debug, Default)]
pub(crate) struct Sent {
    pub(crate) frames: u64,
    /// Engine.IO payload bytes, uncompressed.
    pub(crate) bytes: u64,
    pub(crate) writes: u64,
    /// Frames written compressed (permessage-deflate).
    pub(crate) deflated: u64,
    /// Their payload bytes before and after compression.
    pub(crate) deflate_in: u64,
    pub(crate) deflate_out: u64,
}

impl Sent {
    /// Counts what was written on WebSockets into `metrics`.
    pub(crate) fn count(&self, metrics: &Metrics) {
        metrics
            .transport(Transport::Websocket)
            .sent(self.frames, self.bytes, self.writes);
        if self.deflated > 0 {
            metrics.ws_deflated(self.deflated, self.deflate_in, self.deflate_out);
        }
    }
}

/// Quiet recipients of one broadcast that the producer writes itself, at
/// most. A broadcast to a few quiet connections (small rooms, targeted
/// emits) is written at once, without a hand-over to the writer task (a
/// wake-up, often of another thread); one to many goes to the shards,
/// whose passes gather each connection's messages.
const INLINE_WRITES: usize = 8;

/// A connection is busy while broadcasts reach it less than this many
/// write windows apart.
const BUSY_GAP_WINDOWS: u32 = 2;

/// Queues that became pending during one broadcast, scheduled together
/// (one lock of each shard per broadcast instead of one per recipient).
#[derive(Default)]
pub(crate) struct ScheduleBatch {
    /// Each queue, and whether its connection is busy.
    queues: Vec<(Arc<Shard>, Arc<OutboundQueue>, bool)>,
    /// The clock ([`clock_ms`]), read once per batch.
    now_ms: Option<u32>,
}

impl ScheduleBatch {
    /// The time of this broadcast on [`clock_ms`].
    pub(crate) fn now_ms(&mut self) -> u32 {
        *self.now_ms.get_or_insert_with(clock_ms)
    }

    /// Schedules `queue`, whose connection got its previous broadcast at
    /// `previous` (on [`clock_ms`]).
    pub(crate) fn add(&mut self, shard: &Arc<Shard>, queue: Arc<OutboundQueue>, previous: u32) {
        let busy = is_busy(shard.coalesce, previous, self.now_ms());
        self.queues.push((shard.clone(), queue, busy));
    }

    /// Writes the quiet connections here when they are few, and hands the
    /// rest to their shards.
    pub(crate) fn submit(mut self) {
        let quiet = self.queues.iter().filter(|(_, _, busy)| !busy).count();
        if quiet > 0 && quiet <= INLINE_WRITES {
            flush_each(
                self.queues
                    .iter()
                    .filter(|(_, _, busy)| !busy)
                    .map(|(_, queue, _)| queue),
            );
            self.queues.retain(|(_, _, busy)| *busy);
        }
        while let Some((shard, _, _)) = self.queues.first() {
            let shard = shard.clone();
            let (mine, rest): (Vec<_>, Vec<_>) = self
                .queues
                .into_iter()
                .partition(|(s, _, _)| Arc::ptr_eq(s, &shard));
            shard.schedule_all(mine.into_iter().map(|(_, q, _)| q));
            self.queues = rest;
        }
    }
}

/// Writes each of `queues` (as far as its socket takes) and counts what
/// was written into the node's metrics once.
fn flush_each<'a>(queues: impl Iterator<Item = &'a Arc<OutboundQueue>>) {
    let mut sent = Sent::default();
    let mut metrics = None;
    for queue in queues {
        if let Some(m) = queue.flush_scheduled(&mut sent) {
            metrics = Some(m);
        }
    }
    if let Some(m) = metrics {
        sent.count(&m);
    }
}

/// Whether a connection whose previous broadcast came at `previous` (ms on
/// [`clock_ms`], now `now_ms`) is busy: that was less than
/// [`BUSY_GAP_WINDOWS`] windows ago, so its next message is likely to come
/// within a window and share the write. Never with no window.
fn is_busy(window: Duration, previous: u32, now_ms: u32) -> bool {
    let window_ms = u32::try_from(window.as_millis()).unwrap_or(u32::MAX);
    now_ms.wrapping_sub(previous) < window_ms.saturating_mul(BUSY_GAP_WINDOWS)
}

/// One writer task and the queues scheduled on it.
pub(crate) struct Shard {
    dirty: Mutex<Vec<Arc<OutboundQueue>>>,
    /// The write window (`server.write_coalesce_ms`): the shortest time
    /// between two passes.
    coalesce: Duration,
    notify: Notify,
    stopped: AtomicBool,
}

impl Shard {
    /// Schedules `queues` for the next pass of this shard's task.
    fn schedule_all(&self, queues: impl Iterator<Item = Arc<OutboundQueue>>) {
        let mut dirty = self.dirty.lock();
        let wake = dirty.is_empty();
        dirty.extend(queues);
        drop(dirty);
        if wake {
            self.notify.notify_one();
        }
    }

    async fn run(self: Arc<Self>) {
        let mut batch = Vec::new();
        // The first pass may come at once.
        let mut next_pass = Instant::now();
        loop {
            self.notify.notified().await;
            if self.stopped.load(Ordering::Acquire) {
                return;
            }
            // A window after the last pass; at once after a pause.
            tokio::time::sleep_until(next_pass).await;
            // Let the tasks that are ready (more of the same burst) queue
            // their frames first.
            tokio::task::yield_now().await;
            let started = Instant::now();
            std::mem::swap(&mut batch, &mut *self.dirty.lock());
            flush_each(batch.iter());
            batch.clear();
            next_pass = started + next_window(self.coalesce, started.elapsed());
        }
    }
}

/// After a pass a shard waits this many times as long as the pass took
/// (when that is longer than the window): it spends at most a fifth of its
/// time writing.
const WAIT_PER_PASS: u32 = 4;
/// The longest wait between two passes, in windows.
const MAX_WINDOWS: u32 = 8;

/// The shortest time from one pass of a shard to the next: `base`, or
/// [`WAIT_PER_PASS`] times as long as the pass took when that is longer, up
/// to [`MAX_WINDOWS`] times `base`. A shard whose passes are long (many
/// recipients per message, a loaded machine) waits longer, so that each
/// connection's messages share writes: on a busy node the writes it saves
/// are CPU the node gets back (measured in `docs/benchmarks.md`: a room of
/// 8000 at 25 messages a second went from 2.2 to 3.1-3.4 messages per
/// write, and its p99 latency down, not up).
fn next_window(base: Duration, last_pass: Duration) -> Duration {
    if base.is_zero() {
        return base;
    }
    (last_pass * WAIT_PER_PASS).clamp(base, base * MAX_WINDOWS)
}

/// The shards of a node; tasks start on first use.
pub(crate) struct Flusher {
    shards: Box<[Arc<Shard>]>,
    next: AtomicUsize,
    started: OnceLock<()>,
}

impl Flusher {
    /// `shards` writer tasks (at least one), each passing at most once per
    /// `coalesce` (longer while passes are long, see [`next_window`]).
    pub(crate) fn new(shards: usize, coalesce: Duration) -> Self {
        Self {
            shards: (0..shards.max(1))
                .map(|_| {
                    Arc::new(Shard {
                        dirty: Mutex::new(Vec::new()),
                        coalesce,
                        notify: Notify::new(),
                        stopped: AtomicBool::new(false),
                    })
                })
                .collect(),
            next: AtomicUsize::new(0),
            started: OnceLock::new(),
        }
    }

    /// The shard of a new connection (round robin). Starts the tasks on the
    /// first call, which must come from inside the runtime.
    pub(crate) fn shard(&self) -> Arc<Shard> {
        self.started.get_or_init(|| {
            for shard in self.shards.iter() {
                tokio::spawn(shard.clone().run());
            }
        });
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len();
        self.shards[i].clone()
    }

    /// Ends the tasks (the node is gone).
    pub(crate) fn stop(&self) {
        for shard in self.shards.iter() {
            shard.stopped.store(true, Ordering::Release);
            shard.notify.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_grows_with_the_work_of_a_pass_within_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(next_window(ms(20), ms(1)), ms(20));
        assert_eq!(next_window(ms(20), ms(5)), ms(20));
        assert_eq!(next_window(ms(20), ms(15)), ms(60));
        assert_eq!(next_window(ms(20), ms(500)), ms(160));
        assert_eq!(next_window(Duration::ZERO, ms(500)), Duration::ZERO);
    }

    #[test]
    fn a_connection_is_busy_while_its_broadcasts_come_less_than_two_windows_apart() {
        let ms = Duration::from_millis;
        let at = 50_000u32;
        assert!(is_busy(ms(20), at - 5, at));
        assert!(is_busy(ms(20), at - 39, at));
        assert!(!is_busy(ms(20), at - 40, at));
        // Never reached, or long ago: quiet.
        assert!(!is_busy(ms(20), at.wrapping_sub(1 << 16), at));
        // Across the clock's wrap.
        assert!(is_busy(ms(20), u32::MAX - 1, 3));
        // No window: never busy.
        assert!(!is_busy(Duration::ZERO, at, at));
    }
}

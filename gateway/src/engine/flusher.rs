//! The WebSocket writers of a node: a few tasks that write the frames queued
//! for many connections.
//!
//! A producer appends frames to a connection's queue and, when the queue
//! had nothing pending, schedules it on one of the shards here. A shard's
//! task wakes once for everything scheduled since it last ran and writes
//! each connection's pending frames with one vectored write.
//!
//! When a connection is written depends on its own traffic, not on a
//! schedule. A connection that was written less than a window
//! (`server.write_coalesce_ms`) ago waits until that window is over, and
//! whatever reaches it meanwhile leaves in one write (one system call, one
//! TCP segment on loopback): a busy connection costs at most one write per
//! window. Any other connection (a quiet one, the common case in small
//! rooms and on a quiet node) is written in the shard's next pass, right
//! after the broadcast that woke it: it waits for nothing. A socket that
//! does not take everything is handed to the session's driver, which waits
//! until it is writable.

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
/// connection was last written. It wraps after 49 days: spans on it are
/// taken with wrapping arithmetic and matter only up to a window (at most a
/// second), so a wrap costs at most one connection one window once.
pub(crate) fn clock_ms() -> u32 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    // Truncation is the wrap described above.
    epoch.elapsed().as_millis() as u32
}

/// A write time on [`clock_ms`] longer ago than any window: that of a
/// connection not written yet.
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

/// Queues that became pending during one broadcast, scheduled together
/// (one lock of each shard per broadcast instead of one per recipient).
#[derive(Default)]
pub(crate) struct ScheduleBatch {
    /// Each queue with the time its pass is due (`None`: the next pass).
    queues: Vec<(Arc<Shard>, Arc<OutboundQueue>, Option<Instant>)>,
    /// The clock, read once per batch.
    now: Option<(Instant, u32)>,
}

impl ScheduleBatch {
    /// Schedules `queue`, whose connection was last written at
    /// `last_write` (on [`clock_ms`]).
    pub(crate) fn add(&mut self, shard: &Arc<Shard>, queue: Arc<OutboundQueue>, last_write: u32) {
        let (now, now_ms) = *self.now.get_or_insert_with(|| (Instant::now(), clock_ms()));
        let due = write_due(shard.coalesce, last_write, now, now_ms);
        self.queues.push((shard.clone(), queue, due));
    }

    /// Hands every queue to its shard.
    pub(crate) fn submit(mut self) {
        while let Some((shard, _, _)) = self.queues.first() {
            let shard = shard.clone();
            let (mine, rest): (Vec<_>, Vec<_>) = self
                .queues
                .into_iter()
                .partition(|(s, _, _)| Arc::ptr_eq(s, &shard));
            shard.schedule_all(mine.into_iter().map(|(_, q, due)| (q, due)));
            self.queues = rest;
        }
    }
}

/// When a connection last written at `last_write` (ms on [`clock_ms`], now
/// `now_ms`, which is `now`) may be written again: `None` when a window
/// has passed (at once, in the next pass), else when it ends.
fn write_due(window: Duration, last_write: u32, now: Instant, now_ms: u32) -> Option<Instant> {
    let window_ms = u32::try_from(window.as_millis()).unwrap_or(u32::MAX);
    let since = now_ms.wrapping_sub(last_write);
    (since < window_ms).then(|| now + Duration::from_millis(u64::from(window_ms - since)))
}

/// What waits for a shard's passes.
#[derive(Default)]
struct Pending {
    /// Queues of quiet connections: written in the next pass.
    now: Vec<Arc<OutboundQueue>>,
    /// Queues of connections written less than a window ago: written in
    /// the first pass after the earliest of their windows ends (`due`).
    later: Vec<Arc<OutboundQueue>>,
    due: Option<Instant>,
}

/// One writer task and the queues scheduled on it.
pub(crate) struct Shard {
    pending: Mutex<Pending>,
    /// The write window (`server.write_coalesce_ms`).
    coalesce: Duration,
    notify: Notify,
    stopped: AtomicBool,
}

impl Shard {
    /// Schedules each queue for the pass it is due in.
    fn schedule_all(&self, queues: impl Iterator<Item = (Arc<OutboundQueue>, Option<Instant>)>) {
        let mut pending = self.pending.lock();
        let mut wake = false;
        for (queue, due) in queues {
            match due {
                None => {
                    wake |= pending.now.is_empty();
                    pending.now.push(queue);
                }
                Some(due) => {
                    // An earlier end than the task sleeps for wakes it.
                    if pending.due.is_none_or(|d| due < d) {
                        pending.due = Some(due);
                        wake = true;
                    }
                    pending.later.push(queue);
                }
            }
        }
        drop(pending);
        if wake {
            self.notify.notify_one();
        }
    }

    async fn run(self: Arc<Self>) {
        let mut batch = Vec::new();
        // Windowed passes are at least this far apart (see next_window).
        let mut next_windowed = Instant::now();
        loop {
            let due = self.pending.lock().due.map(|d| d.max(next_windowed));
            match due {
                Some(due) => tokio::select! {
                    () = self.notify.notified() => {}
                    () = tokio::time::sleep_until(due) => {}
                },
                None => self.notify.notified().await,
            }
            if self.stopped.load(Ordering::Acquire) {
                return;
            }
            // Let the tasks that are ready (more of the same burst) queue
            // their frames first.
            tokio::task::yield_now().await;
            let started = Instant::now();
            let windowed = {
                let mut pending = self.pending.lock();
                batch.append(&mut pending.now);
                let ripe = pending.due.is_some_and(|d| d.max(next_windowed) <= started);
                if ripe {
                    batch.append(&mut pending.later);
                    pending.due = None;
                }
                ripe
            };
            let mut sent = Sent::default();
            let mut metrics = None;
            for queue in batch.drain(..) {
                if let Some(m) = queue.flush_scheduled(&mut sent) {
                    metrics = Some(m);
                }
            }
            if let Some(m) = metrics {
                sent.count(&m);
            }
            if windowed {
                next_windowed = started + next_window(self.coalesce, started.elapsed());
            }
        }
    }
}

/// The shortest time from one windowed pass (the one that writes the
/// connections that waited for their window) to the next: `base`, or twice
/// as long as the pass took when that is longer, up to four times `base`.
/// A shard whose passes are long (many recipients per message, a loaded
/// machine) waits longer, so that each connection's messages share writes.
fn next_window(base: Duration, last_pass: Duration) -> Duration {
    if base.is_zero() {
        return base;
    }
    (last_pass * 2).clamp(base, base * 4)
}

/// The shards of a node; tasks start on first use.
pub(crate) struct Flusher {
    shards: Box<[Arc<Shard>]>,
    next: AtomicUsize,
    started: OnceLock<()>,
}

impl Flusher {
    /// `shards` writer tasks (at least one), writing each connection at
    /// most about once per `coalesce` (the write window; longer while passes
    /// are long, see [`next_window`]).
    pub(crate) fn new(shards: usize, coalesce: Duration) -> Self {
        Self {
            shards: (0..shards.max(1))
                .map(|_| {
                    Arc::new(Shard {
                        pending: Mutex::new(Pending::default()),
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
        assert_eq!(next_window(ms(20), ms(15)), ms(30));
        assert_eq!(next_window(ms(20), ms(500)), ms(80));
        assert_eq!(next_window(Duration::ZERO, ms(500)), Duration::ZERO);
    }

    #[test]
    fn a_connection_written_within_the_window_waits_for_its_end() {
        let ms = Duration::from_millis;
        let now = Instant::now();
        let at = 50_000u32;
        // Written 5 ms ago: due when its 20 ms window ends.
        assert_eq!(write_due(ms(20), at - 5, now, at), Some(now + ms(15)));
        // Written just now: a whole window.
        assert_eq!(write_due(ms(20), at, now, at), Some(now + ms(20)));
        // Written a window ago or longer, or never: at once.
        assert_eq!(write_due(ms(20), at - 20, now, at), None);
        assert_eq!(write_due(ms(20), at.wrapping_sub(1 << 16), now, at), None);
        // Across the clock's wrap.
        assert_eq!(write_due(ms(20), u32::MAX - 1, now, 3), Some(now + ms(15)));
        // No window: always at once.
        assert_eq!(write_due(Duration::ZERO, at, now, at), None);
    }
}

//! The WebSocket writers of a node: a few tasks that write the frames queued
//! for many connections.
//!
//! A producer appends frames to a connection's queue and, when the queue
//! had nothing pending, schedules it on one of the shards here. A shard's
//! task wakes once for everything scheduled since it last ran and writes
//! each connection's pending frames with one vectored write. Passes are at
//! least a window (`server.write_coalesce_ms`) apart, so while the node is
//! busy, frames for the same connection gather before its shard runs and
//! one write (one system call, one TCP segment on loopback) carries several
//! messages. A shard woken after a pause waits only a quarter window, long
//! enough for the rest of a burst to join. A socket that does not take
//! everything is handed to the session's driver, which waits until it
//! is writable.

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
    queues: Vec<(Arc<Shard>, Arc<OutboundQueue>)>,
}

impl ScheduleBatch {
    pub(crate) fn add(&mut self, shard: &Arc<Shard>, queue: Arc<OutboundQueue>) {
        self.queues.push((shard.clone(), queue));
    }

    /// Hands every queue to its shard.
    pub(crate) fn submit(mut self) {
        while let Some((shard, _)) = self.queues.first() {
            let shard = shard.clone();
            let (mine, rest): (Vec<_>, Vec<_>) = self
                .queues
                .into_iter()
                .partition(|(s, _)| Arc::ptr_eq(s, &shard));
            shard.schedule_all(mine.into_iter().map(|(_, q)| q));
            self.queues = rest;
        }
    }
}

/// One writer task and the queues scheduled on it.
pub(crate) struct Shard {
    dirty: Mutex<Vec<Arc<OutboundQueue>>>,
    /// Shortest time between two passes.
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
        let mut last_pass = Instant::now();
        let mut window = self.coalesce;
        loop {
            self.notify.notified().await;
            if self.stopped.load(Ordering::Acquire) {
                return;
            }
            if !self.coalesce.is_zero() {
                let due = pass_due(self.coalesce, last_pass + window, Instant::now());
                tokio::time::sleep_until(due).await;
            }
            // Let the tasks that are ready (more of the same burst) queue
            // their frames first.
            tokio::task::yield_now().await;
            last_pass = Instant::now();
            std::mem::swap(&mut batch, &mut *self.dirty.lock());
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
            window = next_window(self.coalesce, last_pass.elapsed());
        }
    }
}

/// When a shard woken at `woken` passes: at `window_end` (its last pass
/// plus [`next_window`]), and not before a quarter of `base` after it was
/// woken. The second rule matters after a pause, when the first frame of a
/// burst wakes the shard: the rest of the burst (one event published on
/// several nodes at once, the other nodes' copies arriving over Redis a
/// millisecond later) then shares that pass, so each connection gets the
/// burst in one write instead of two or three.
fn pass_due(base: Duration, window_end: Instant, woken: Instant) -> Instant {
    window_end.max(woken + base / 4)
}

/// The wait before a shard's next pass: `base`, or twice as long as the
/// last pass took when that is longer, up to four times `base`. A shard
/// whose passes are long (many recipients per message, a loaded machine)
/// waits longer, so that each connection's messages share writes.
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
        assert_eq!(next_window(ms(20), ms(15)), ms(30));
        assert_eq!(next_window(ms(20), ms(500)), ms(80));
        assert_eq!(next_window(Duration::ZERO, ms(500)), Duration::ZERO);
    }

    #[test]
    fn a_shard_woken_after_a_pause_lingers_a_quarter_window() {
        let ms = Duration::from_millis;
        let now = Instant::now();
        // Idle for long: the window ended long ago, the pass waits 5 ms.
        assert_eq!(pass_due(ms(20), now - ms(500), now), now + ms(5));
        // Busy: the window ends later than the linger, the window decides.
        assert_eq!(pass_due(ms(20), now + ms(12), now), now + ms(12));
        // The window ends within the linger: the linger decides.
        assert_eq!(pass_due(ms(20), now + ms(2), now), now + ms(5));
    }
}

//! Worker threads ("shards"), each a single-threaded tokio runtime. Client
//! tasks are spread over shards and record into their shard's histograms
//! and counters without locks; the coordinator reads the counters for the
//! progress line and collects the histograms at the end.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use anyhow::{Context, Result};
use tokio::sync::{mpsc, oneshot};

use crate::stats::Latency;
use crate::transport::counted::WireStats;

/// Counters of one shard, read by the coordinator while the run goes on.
#[derive(Debug, Default)]
pub struct Counters {
    pub connected: AtomicU64,
    pub connect_errors: AtomicU64,
    pub joined: AtomicU64,
    pub join_errors: AtomicU64,
    /// Connections that ended before the scenario closed them.
    pub dropped: AtomicU64,
    pub closed: AtomicU64,
    pub published: AtomicU64,
    pub publish_acks: AtomicU64,
    pub publish_errors: AtomicU64,
    pub delivered: AtomicU64,
    /// What this shard's receivers (and churn clients) read from TCP.
    pub wire: Arc<WireStats>,
    /// What its publishers read: their acks, and the other publishers'
    /// messages in the rooms they joined (not deliveries), kept out of
    /// the wire figures.
    pub publisher_wire: Arc<WireStats>,
}

/// A snapshot of counters, summed over shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterTotals {
    pub connected: u64,
    pub connect_errors: u64,
    pub joined: u64,
    pub join_errors: u64,
    pub dropped: u64,
    pub closed: u64,
    pub published: u64,
    pub publish_acks: u64,
    pub publish_errors: u64,
    pub delivered: u64,
    pub wire_bytes_read: u64,
    pub compressed_messages: u64,
}

impl Counters {
    pub fn inc(field: &AtomicU64) {
        field.fetch_add(1, Ordering::Relaxed);
    }

    fn add_to(&self, t: &mut CounterTotals) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        t.connected += get(&self.connected);
        t.connect_errors += get(&self.connect_errors);
        t.joined += get(&self.joined);
        t.join_errors += get(&self.join_errors);
        t.dropped += get(&self.dropped);
        t.closed += get(&self.closed);
        t.published += get(&self.published);
        t.publish_acks += get(&self.publish_acks);
        t.publish_errors += get(&self.publish_errors);
        t.delivered += get(&self.delivered);
        t.wire_bytes_read += get(&self.wire.bytes_read);
        t.compressed_messages += get(&self.wire.compressed_messages);
    }
}

/// What a task on a shard can use: its shard's counters and histograms.
#[derive(Clone)]
pub struct ShardCtx {
    pub counters: Arc<Counters>,
    /// End-to-end delivery latency.
    pub delivery: Rc<RefCell<Latency>>,
    /// Time to connect (TCP, Engine.IO, Socket.IO CONNECT).
    pub connect: Rc<RefCell<Latency>>,
    /// Time from sending a request with an ack to its ack.
    pub ack: Rc<RefCell<Latency>>,
}

/// The histograms of one shard, moved out at the end of a run.
#[derive(Debug, Default)]
pub struct ShardHistograms {
    pub delivery: Latency,
    pub connect: Latency,
    pub ack: Latency,
}

impl ShardHistograms {
    pub fn merge(&mut self, other: &ShardHistograms) {
        self.delivery.merge(&other.delivery);
        self.connect.merge(&other.connect);
        self.ack.merge(&other.ack);
    }
}

type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;
type Job = Box<dyn FnOnce(ShardCtx) -> LocalFuture + Send>;

struct Shard {
    jobs: mpsc::UnboundedSender<Job>,
    counters: Arc<Counters>,
    thread: Option<thread::JoinHandle<()>>,
}

pub struct Shards {
    shards: Vec<Shard>,
}

impl Shards {
    pub fn start(count: usize) -> Result<Self> {
        let shards = (0..count.max(1))
            .map(|index| {
                let (jobs, rx) = mpsc::unbounded_channel::<Job>();
                let counters = Arc::new(Counters::default());
                let c = counters.clone();
                let thread = thread::Builder::new()
                    .name(format!("shard-{index}"))
                    .spawn(move || run_shard(index, c, rx))
                    .context("spawn shard thread")?;
                Ok(Shard {
                    jobs,
                    counters,
                    thread: Some(thread),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { shards })
    }

    /// Runs a task on shard `i % len`. `make` runs on the shard and builds
    /// the (non-`Send`) future there.
    pub fn spawn<F, Fut>(&self, i: usize, make: F)
    where
        F: FnOnce(ShardCtx) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let job: Job = Box::new(move |ctx| Box::pin(make(ctx)));
        let shard = &self.shards[i % self.shards.len()];
        // A shard only stops when `Shards` is dropped.
        let _ = shard.jobs.send(job);
    }

    pub fn totals(&self) -> CounterTotals {
        let mut t = CounterTotals::default();
        for s in &self.shards {
            s.counters.add_to(&mut t);
        }
        t
    }

    /// Moves every shard's histograms out (leaving them empty) and merges them.
    pub async fn take_histograms(&self) -> ShardHistograms {
        let mut waits = Vec::new();
        for i in 0..self.shards.len() {
            let (tx, rx) = oneshot::channel();
            self.spawn(i, move |ctx| async move {
                let h = ShardHistograms {
                    delivery: ctx.delivery.take(),
                    connect: ctx.connect.take(),
                    ack: ctx.ack.take(),
                };
                let _ = tx.send(h);
            });
            waits.push(rx);
        }
        let mut all = ShardHistograms::default();
        for rx in waits {
            if let Ok(h) = rx.await {
                all.merge(&h);
            }
        }
        all
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        for s in &mut self.shards {
            // Closing the job channel ends the shard's runtime, dropping
            // whatever tasks are left.
            let (closed, _) = mpsc::unbounded_channel();
            s.jobs = closed;
        }
        for s in &mut self.shards {
            if let Some(t) = s.thread.take() {
                let _ = t.join();
            }
        }
    }
}

fn run_shard(index: usize, counters: Arc<Counters>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shard {index}: cannot start a runtime: {e}");
            return;
        }
    };
    let ctx = ShardCtx {
        counters,
        delivery: Rc::default(),
        connect: Rc::default(),
        ack: Rc::default(),
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        while let Some(job) = jobs.recv().await {
            tokio::task::spawn_local(job(ctx.clone()));
        }
    });
}

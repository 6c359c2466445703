//! Connection state recovery's store in Redis, shared by every node of a
//! cluster, so that a client recovers on whichever node it reaches after
//! its own was drained or killed.
//!
//! Per namespace (all keys of a namespace share one hash tag, so that on
//! Redis Cluster they live in one slot and one script can touch them all):
//!
//! - `B:log`, a stream: the namespace's stored events; an entry's id is the
//!   event's offset. One script appends (`XADD`), trims by age, count and
//!   bytes, and publishes the entry with its id on `B:ch`: Redis runs
//!   scripts one at a time, so every node receives a namespace's events in
//!   log order, and delivers them only as they come off that channel (the
//!   publishing node too).
//! - `B:meta`, a hash: the last id (`last`), the newest trimmed id
//!   (`trimmed`) and the log's bytes (`bytes`). An offset is valid when it
//!   is at most `last` and at least `trimmed`: nothing after it was lost.
//! - `B:sess`, a hash of every socket's record by pid, written from its
//!   CONNECT (not only when it is lost: a killed node saves nothing), as
//!   `holder|state|at_ms|json` (`c`: connected on node `holder`; `d`: lost
//!   at `at_ms`). A record is changed only by its holder; taking it for
//!   recovery makes the taker its holder.
//! - `B:held:<holder>`, a set: the pids a holder holds connected;
//!   `B:holders`, a hash: each holder's last keepalive. A holder is a node
//!   id and a random incarnation (`abcdef.Xy12Zq`), so that a node
//!   restarted under the same id does not hold its predecessor's sockets. A
//!   holder not heard from within the node timeout is dead: the next
//!   keepalive of any node marks its sockets lost (at that moment), so that
//!   they expire.
//! - `B:exp`, a sorted set: lost sessions by expiry time, swept at every
//!   keepalive.
//!
//! `B` is `<prefix>:rec:{<len>:<nsp>}`. Every key has a time to live that
//! live nodes with sockets in the namespace renew at each heartbeat: when
//! the whole cluster is gone, Redis forgets the namespace.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::clients::{Client, Pipeline};
use fred::interfaces::{ClientLike, LuaInterface};
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand, Value};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::recovery::{
    AppendDone, Appended, Attach, LogSink, LoggedPacket, RecoveryLimits, RecoveryStore, Refusal,
    SessionRecord, Sinks, StoreStats, StoredPacket, Taken, Track,
};
use super::target::Target;
use super::{BusError, Channels};
use crate::ids::NodeId;
use crate::telemetry::ErrorChain;

/// The first byte of a log entry on the bus (a bus message's first byte is
/// its kind's index, a small number: never this).
pub(crate) const LOG_MARKER: u8 = b'L';

/// Calls waiting to be sent to Redis (appends and record changes).
const QUEUE: usize = 65_536;
/// Most calls sent in one pipeline.
const BATCH: usize = 256;
/// Most dead holders' sockets or expired sessions one keepalive handles.
const SWEEP_BATCH: usize = 1_000;

/// Lua shared by the scripts: Redis's clock in milliseconds, and stream ids.
const PRELUDE: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function id(s)
  local a, b = string.match(s or '', '^(%d+)-(%d+)$')
  if not a then return nil end
  return {tonumber(a), tonumber(b)}
end
local function before(x, y)
  return x[1] < y[1] or (x[1] == y[1] and x[2] < y[2])
end
"#;

/// KEYS: log, meta. ARGV: channel, entry, max packets, max bytes, max
/// disconnection ms, '1' for sharded pub/sub, time to live ms.
const APPEND: &str = r#"
local fresh = redis.call('EXISTS', KEYS[1]) == 0
if fresh then
  -- The log expired whole: everything up to its last id is gone.
  local last = redis.call('HGET', KEYS[2], 'last')
  if last then redis.call('HSET', KEYS[2], 'trimmed', last) end
  redis.call('HSET', KEYS[2], 'bytes', 0)
end
local new = redis.call('XADD', KEYS[1], '*', 'd', ARGV[2])
local bytes = redis.call('HINCRBY', KEYS[2], 'bytes', #ARGV[2])
redis.call('HSET', KEYS[2], 'last', new)
local oldest = now_ms() - tonumber(ARGV[5])
local max_n, max_b = tonumber(ARGV[3]), tonumber(ARGV[4])
local n = redis.call('XLEN', KEYS[1])
while n > 0 do
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
  if n <= max_n and bytes <= max_b and id(first[1])[1] >= oldest then break end
  redis.call('XDEL', KEYS[1], first[1])
  bytes = redis.call('HINCRBY', KEYS[2], 'bytes', -#first[2][2])
  redis.call('HSET', KEYS[2], 'trimmed', first[1])
  n = n - 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
local publish = 'PUBLISH'
if ARGV[6] == '1' then publish = 'SPUBLISH' end
local receivers = redis.call(publish, ARGV[1], 'L' .. new .. '\n' .. ARGV[2])
return {new, receivers}
"#;

/// KEYS: sessions, expiries, holders. ARGV: what (`open`, `rooms`,
/// `lost`, `closed`), pid, this node, record json, max disconnection ms,
/// held-set key prefix, time to live ms, most lost sessions kept.
const SESSION: &str = r#"
local held = ARGV[6] .. ARGV[3]
local now = now_ms()
if ARGV[1] == 'open' then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3] .. '|c|' .. now .. '|' .. ARGV[4])
  redis.call('SADD', held, ARGV[2])
  redis.call('HSET', KEYS[3], ARGV[3], now)
  for _, k in ipairs({KEYS[1], KEYS[3], held}) do redis.call('PEXPIRE', k, ARGV[7]) end
  return 1
end
local cur = redis.call('HGET', KEYS[1], ARGV[2])
if not cur or string.sub(cur, 1, #ARGV[3] + 3) ~= ARGV[3] .. '|c|' then
  -- Not this node's any more (taken by another), or already gone.
  return 0
end
if ARGV[1] == 'rooms' then
  local at = string.match(cur, '^[^|]*|c|(%d+)|')
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3] .. '|c|' .. at .. '|' .. ARGV[4])
elseif ARGV[1] == 'lost' then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3] .. '|d|' .. now .. '|' .. ARGV[4])
  redis.call('SREM', held, ARGV[2])
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
  -- Beyond the cap, the lost sessions that expire first go.
  local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[8])
  if over > 0 then
    local oldest = redis.call('ZPOPMIN', KEYS[2], over)
    for i = 1, #oldest, 2 do
      local rec = redis.call('HGET', KEYS[1], oldest[i])
      if rec and string.match(rec, '^[^|]*|d|') then redis.call('HDEL', KEYS[1], oldest[i]) end
    end
  end
else
  redis.call('HDEL', KEYS[1], ARGV[2])
  redis.call('SREM', held, ARGV[2])
end
return 1
"#;

/// KEYS: sessions, meta, log, expiries. ARGV: pid, offset, taker, max
/// disconnection ms, held-set key prefix.
/// Returns {0} (no session), {1} (bad offset) or {2, json, holder, state}.
const TAKE: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return {0} end
local holder, state, at, json = string.match(cur, '^([^|]*)|(%a)|(%d+)|(.*)$')
if not holder then return {0} end
local now = now_ms()
if state == 'd' and tonumber(at) + tonumber(ARGV[4]) <= now then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
  return {0}
end
local offset = id(ARGV[2])
local last = id(redis.call('HGET', KEYS[2], 'last'))
local trimmed = id(redis.call('HGET', KEYS[2], 'trimmed'))
if not offset or not last or before(last, offset) or (trimmed and before(offset, trimmed)) then
  return {1}
end
if redis.call('EXISTS', KEYS[3]) == 0 and before(offset, last) then return {1} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3] .. '|c|' .. now .. '|' .. json)
redis.call('SREM', ARGV[5] .. holder, ARGV[1])
redis.call('SADD', ARGV[5] .. ARGV[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return {2, json, holder, state}
"#;

/// KEYS: log, meta. ARGV: offset. Returns {0} (events after the offset
/// were trimmed) or {1, entries after it}.
const READ: &str = r#"
local after = id(ARGV[1])
local trimmed = id(redis.call('HGET', KEYS[2], 'trimmed'))
if not after or (trimmed and before(after, trimmed)) then return {0} end
return {1, redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+')}
"#;

/// KEYS: sessions, meta, expiries, holders, log. ARGV: this node, time to
/// live ms, node timeout ms, max disconnection ms, held-set key prefix,
/// batch. Returns {sessions, packets, bytes}.
const KEEPALIVE: &str = r#"
local me, ttl = ARGV[1], ARGV[2]
local now = now_ms()
redis.call('HSET', KEYS[4], me, now)
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ttl) end
redis.call('PEXPIRE', ARGV[5] .. me, ttl)
local budget = tonumber(ARGV[6])
local holders = redis.call('HGETALL', KEYS[4])
for i = 1, #holders, 2 do
  local h, seen = holders[i], tonumber(holders[i + 1])
  if h ~= me and seen + tonumber(ARGV[3]) < now and budget > 0 then
    local pids = redis.call('SPOP', ARGV[5] .. h, budget)
    budget = budget - #pids
    for _, pid in ipairs(pids) do
      local cur = redis.call('HGET', KEYS[1], pid)
      if cur and string.sub(cur, 1, #h + 3) == h .. '|c|' then
        local rest = string.sub(cur, string.find(cur, '|', #h + 4, true))
        redis.call('HSET', KEYS[1], pid, h .. '|d|' .. now .. rest)
        redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), pid)
      end
    end
    if redis.call('SCARD', ARGV[5] .. h) == 0 then redis.call('HDEL', KEYS[4], h) end
  end
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, tonumber(ARGV[6]))
for _, pid in ipairs(expired) do
  local cur = redis.call('HGET', KEYS[1], pid)
  if cur and string.match(cur, '^[^|]*|d|') then redis.call('HDEL', KEYS[1], pid) end
  redis.call('ZREM', KEYS[3], pid)
end
return {redis.call('HLEN', KEYS[1]), redis.call('XLEN', KEYS[5]),
        tonumber(redis.call('HGET', KEYS[2], 'bytes') or '0')}
"#;

/// KEYS: meta. Returns the log's last id, or nil.
const LAST: &str = "return redis.call('HGET', KEYS[1], 'last')";

/// The scripts, each with its SHA-1 (sent as `EVALSHA`; `EVAL` when Redis
/// does not know it yet).
struct Scripts {
    append: Script,
    session: Script,
    take: Script,
    read: Script,
    keepalive: Script,
    last: Script,
}

impl Scripts {
    fn new() -> Self {
        let with_prelude = |body: &str| Script::from_lua(format!("{PRELUDE}{body}"));
        Self {
            append: with_prelude(APPEND),
            session: with_prelude(SESSION),
            take: with_prelude(TAKE),
            read: with_prelude(READ),
            keepalive: with_prelude(KEEPALIVE),
            last: Script::from_lua(LAST),
        }
    }
}

/// What a log entry carries (postcard; its id travels beside it).
#[derive(Debug, Serialize, Deserialize)]
struct LogEntry {
    nsp: String,
    target: Target,
    /// The Engine.IO text packet without its offset.
    text: String,
    attachments: Vec<Bytes>,
}

/// A stream id, ordered as Redis orders them.
fn stream_id(s: &str) -> Option<(u64, u64)> {
    let (ms, seq) = s.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// What a client may send as an offset: a stream id, and nothing longer.
fn is_offset(s: &str) -> bool {
    s.len() <= 41 && stream_id(s).is_some()
}

/// The name of a call that runs no script: answered once every call
/// queued before it was answered.
const FLUSH: &str = "flush";

/// Told a script call's result.
type CallDone = Box<dyn FnOnce(Result<Value, BusError>) + Send>;

/// A script call waiting to be sent, and whom to tell its result.
struct Call {
    script: &'static str,
    keys: Vec<String>,
    args: Vec<Value>,
    done: Option<CallDone>,
}

/// One namespace's delivery state on this node.
#[derive(Default)]
struct Delivery {
    /// The id of the last event handed to this node's sockets.
    last: Option<(u64, u64)>,
    /// Recoveries under way: the events that arrived since each began.
    waiting: HashMap<u64, Vec<Arc<LoggedPacket>>>,
    /// Recovered sockets and the id up to which they have every event (the
    /// replay's last, or their offset). An event appended before the
    /// replay was read may still be on its way to this node (the log is
    /// read on one connection, its channel arrives on another): when it
    /// comes, those sockets must not get it again. A mark is dropped once
    /// an event after it arrived (they come in log order), or after
    /// [`MARK_FOR`] in a quiet namespace.
    marks: Vec<Mark>,
}

struct Mark {
    sid: String,
    upto: (u64, u64),
    at: Instant,
}

/// How long a recovered socket's mark is kept at most.
const MARK_FOR: Duration = Duration::from_secs(60);

pub(crate) struct RedisRecovery {
    client: Client,
    sharded: bool,
    prefix: String,
    scripts: Arc<Scripts>,
    queue: mpsc::Sender<Call>,
    sinks: Sinks,
    /// What this store's records name as their holder: the node id and a
    /// random incarnation (a node restarted under the same id does not
    /// hold its predecessor's sockets, which expire as a dead holder's).
    holder: OnceLock<String>,
    /// Per namespace; also the lock that orders delivery and recoveries.
    delivery: Mutex<HashMap<String, Delivery>>,
    next_waiter: AtomicU64,
    node_timeout: Duration,
    heartbeat: Duration,
    stats: Mutex<HashMap<String, StoreStats>>,
    sender: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RedisRecovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRecovery")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisRecovery {
    fn drop(&mut self) {
        self.sender.abort();
    }
}

impl RedisRecovery {
    /// A store on `client` (the bus's publishing connection); `sharded`
    /// for Redis Cluster's sharded pub/sub.
    pub(crate) fn new(
        client: Client,
        sharded: bool,
        channels: &Channels,
        node_timeout: Duration,
        heartbeat: Duration,
    ) -> Self {
        let scripts = Arc::new(Scripts::new());
        let (queue, calls) = mpsc::channel(QUEUE);
        let sender = tokio::spawn(send_calls(client.clone(), scripts.clone(), calls));
        Self {
            client,
            sharded,
            prefix: channels.prefix().to_owned(),
            scripts,
            queue,
            sinks: Sinks::default(),
            holder: OnceLock::new(),
            delivery: Mutex::new(HashMap::new()),
            next_waiter: AtomicU64::new(0),
            node_timeout,
            heartbeat,
            stats: Mutex::new(HashMap::new()),
            sender,
        }
    }

    /// The namespace's key prefix (one hash tag for all its keys).
    fn base(&self, nsp: &str) -> String {
        format!("{}:rec:{{{}:{}}}", self.prefix, nsp.len(), nsp)
    }

    fn key(&self, nsp: &str, what: &str) -> String {
        format!("{}:{what}", self.base(nsp))
    }

    /// How long a namespace's keys outlive the last node that renews them:
    /// long enough for a lost session to be recovered after the whole
    /// cluster restarted, and for several missed heartbeats.
    fn ttl(&self, limits: &RecoveryLimits) -> u64 {
        (limits.max_disconnection + self.node_timeout + 4 * self.heartbeat).as_millis() as u64
    }

    fn enqueue(&self, call: Call) -> Result<(), BusError> {
        if !self.client.is_connected() {
            return Err(BusError::NotConnected { bus: "redis" });
        }
        self.queue.try_send(call).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => BusError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => BusError::NotConnected { bus: "redis" },
        })
    }

    async fn call(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<Value, BusError> {
        if !self.client.is_connected() {
            return Err(BusError::NotConnected { bus: "redis" });
        }
        eval(&self.client, script, keys, args).await
    }

    fn entry(&self, id: &str, data: &[u8]) -> Option<(String, Arc<LoggedPacket>)> {
        let entry: LogEntry = postcard::from_bytes(data).ok()?;
        let packet = StoredPacket {
            target: entry.target,
            text: entry.text,
            attachments: entry.attachments,
        };
        Some((
            entry.nsp,
            Arc::new(LoggedPacket::from_log(id.to_owned(), packet)),
        ))
    }

    /// Entries as `XRANGE` returns them: `[[id, ["d", data]], ...]`.
    fn entries(&self, value: Value) -> Vec<Arc<LoggedPacket>> {
        value
            .into_array()
            .into_iter()
            .filter_map(|e| {
                let mut parts = e.into_array().into_iter();
                let id = parts.next()?.as_string()?;
                let fields = parts.next()?.into_array();
                let data = fields.get(1)?.as_bytes()?;
                self.entry(&id, data).map(|(_, p)| p)
            })
            .collect()
    }

    /// This node's holder token (see `holder`).
    fn holder(&self) -> String {
        self.holder.get().cloned().unwrap_or_default()
    }

    fn track_call(&self, what: &str, record: &SessionRecord, limits: &RecoveryLimits) -> Call {
        let nsp = &record.nsp;
        let json = if what == "closed" {
            String::new()
        } else {
            serde_json::to_string(record).unwrap_or_default()
        };
        Call {
            script: "session",
            keys: vec![
                self.key(nsp, "sess"),
                self.key(nsp, "exp"),
                self.key(nsp, "holders"),
            ],
            args: vec![
                what.into(),
                record.pid.as_str().into(),
                self.holder().into(),
                json.into(),
                (limits.max_disconnection.as_millis() as i64).into(),
                self.key(nsp, "held:").into(),
                (self.ttl(limits) as i64).into(),
                (limits.max_sessions as i64).into(),
            ],
            done: None,
        }
    }
}

/// Runs one script: `EVALSHA`, or `EVAL` when Redis does not have it.
async fn eval(
    client: &Client,
    script: &Script,
    keys: Vec<String>,
    args: Vec<Value>,
) -> Result<Value, BusError> {
    let options = super::redis::one_attempt();
    let client = client.with_options(&options);
    match client
        .evalsha::<Value, _, _, _>(script.sha1().clone(), keys.clone(), args.clone())
        .await
    {
        Err(e) if e.details().starts_with("NOSCRIPT") => {
            let lua = script.lua().cloned().unwrap_or_default();
            client
                .eval::<Value, _, _, _>(lua, keys, args)
                .await
                .map_err(super::redis::failed("eval"))
        }
        other => other.map_err(super::redis::failed("eval")),
    }
}

/// Sends queued calls in order, pipelined; a call Redis did not know the
/// script of (it was not run) is sent again with its text.
async fn send_calls(client: Client, scripts: Arc<Scripts>, mut calls: mpsc::Receiver<Call>) {
    let script = |name: &str| match name {
        "append" => &scripts.append,
        "take" => &scripts.take,
        _ => &scripts.session,
    };
    let mut batch = Vec::with_capacity(BATCH);
    while calls.recv_many(&mut batch, BATCH).await > 0 {
        let pipeline = Pipeline::from(client.with_options(&super::redis::one_attempt()));
        // EVALSHA sha numkeys keys... args..., routed to the slot of its
        // keys (the client would hash its first string, the SHA). A flush
        // marker is not sent: it is answered in its turn.
        let commands: Vec<(CustomCommand, Vec<Value>)> = batch
            .iter()
            .filter(|call| call.script != FLUSH)
            .map(|call| {
                let slot = ClusterHash::from(call.keys.first().map_or("", String::as_str));
                let mut args = Vec::with_capacity(2 + call.keys.len() + call.args.len());
                args.push(Value::from(script(call.script).sha1().clone()));
                args.push(Value::from(call.keys.len() as i64));
                args.extend(call.keys.iter().map(|k| Value::from(k.as_str())));
                args.extend(call.args.iter().cloned());
                (CustomCommand::new_static("EVALSHA", slot, false), args)
            })
            .collect();
        let sent = commands.len();
        let mut queued = Ok(());
        for (evalsha, args) in commands {
            if queued.is_ok() {
                queued = pipeline.custom::<(), Value>(evalsha, args).await;
            }
        }
        let results: Vec<Result<Value, fred::error::Error>> = match queued {
            _ if sent == 0 => Vec::new(),
            Ok(()) => pipeline.try_all::<Value>().await,
            Err(e) => (0..sent).map(|_| Err(e.clone())).collect(),
        };
        let mut results = results.into_iter();
        for call in batch.drain(..) {
            if call.script == FLUSH {
                if let Some(done) = call.done {
                    done(Ok(Value::Null));
                }
                continue;
            }
            let result = match results.next() {
                Some(Err(e)) if e.details().starts_with("NOSCRIPT") => {
                    eval(&client, script(call.script), call.keys, call.args).await
                }
                Some(r) => r.map_err(super::redis::failed("eval")),
                None => Err(BusError::NotConnected { bus: "redis" }),
            };
            if let Err(e) = &result {
                tracing::warn!(error = %ErrorChain(e), "recovery store call failed");
            }
            if let Some(done) = call.done {
                done(result);
            }
        }
    }
}

/// Takes a recovery's buffer away when the recovery ends, however it ends.
struct Waiter<'a> {
    store: &'a RedisRecovery,
    nsp: &'a str,
    id: u64,
}

impl Waiter<'_> {
    fn take(&self, delivery: &mut HashMap<String, Delivery>) -> Vec<Arc<LoggedPacket>> {
        delivery
            .get_mut(self.nsp)
            .and_then(|d| d.waiting.remove(&self.id))
            .unwrap_or_default()
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut delivery = self.store.delivery.lock();
        self.take(&mut delivery);
    }
}

#[async_trait::async_trait]
impl RecoveryStore for RedisRecovery {
    fn register(&self, node_id: NodeId, sink: Weak<dyn LogSink>) {
        let incarnation: String = crate::ids::new_pid().chars().take(6).collect();
        let _ = self.holder.set(format!("{node_id}.{incarnation}"));
        self.sinks.register(node_id, sink);
    }

    fn append(
        &self,
        _origin: NodeId,
        nsp: &str,
        packet: StoredPacket,
        limits: &RecoveryLimits,
        done: Option<AppendDone>,
    ) -> Result<(), BusError> {
        let entry = LogEntry {
            nsp: nsp.to_owned(),
            target: packet.target,
            text: packet.text,
            attachments: packet.attachments,
        };
        let data = postcard::to_stdvec(&entry).map_err(BusError::Encode)?;
        let done = done.map(|done| {
            Box::new(move |result: Result<Value, BusError>| {
                done(result.map(|v| {
                    let mut parts = v.into_array().into_iter();
                    let offset = parts.next().and_then(|v| v.as_string()).unwrap_or_default();
                    let receivers = parts.next().and_then(|v| v.as_i64()).unwrap_or(0);
                    Appended {
                        offset,
                        // Delivered when the entry comes back from Redis.
                        local: 0,
                        nodes_reached: receivers.max(0) as u64,
                    }
                }))
            }) as CallDone
        });
        self.enqueue(Call {
            script: "append",
            keys: vec![self.key(nsp, "log"), self.key(nsp, "meta")],
            args: vec![
                self.key(nsp, "ch").into(),
                Value::Bytes(Bytes::from(data)),
                (limits.max_packets as i64).into(),
                (limits.max_bytes as i64).into(),
                (limits.max_disconnection.as_millis() as i64).into(),
                if self.sharded { "1" } else { "0" }.into(),
                (self.ttl(limits) as i64).into(),
            ],
            done,
        })
    }

    fn keeps_records(&self) -> bool {
        true
    }

    fn track(&self, change: Track, limits: &RecoveryLimits) {
        let call = match &change {
            Track::Opened(r) => self.track_call("open", r, limits),
            Track::Rooms(r) => self.track_call("rooms", r, limits),
            Track::Lost(r) => self.track_call("lost", r, limits),
            Track::Closed { nsp, pid } => {
                let r = SessionRecord {
                    sid: String::new(),
                    pid: pid.clone(),
                    nsp: nsp.clone(),
                    rooms: Vec::new(),
                    user_id: None,
                    data: None,
                    disconnected_at_ms: 0,
                };
                self.track_call("closed", &r, limits)
            }
        };
        if let Err(e) = self.enqueue(call) {
            // The record stays as it was: a lost socket whose record says
            // connected is handed to expiry when this node stops renewing
            // it; a closed one expires likewise.
            tracing::debug!(error = %ErrorChain(&e), "recovery record not updated");
        }
    }

    async fn take(
        &self,
        _taker: NodeId,
        pid: &str,
        nsp: &str,
        offset: &str,
        limits: &RecoveryLimits,
    ) -> Result<Taken, Refusal> {
        if !is_offset(offset) {
            return Err(Refusal::BadOffset);
        }
        let keys = vec![
            self.key(nsp, "sess"),
            self.key(nsp, "meta"),
            self.key(nsp, "log"),
            self.key(nsp, "exp"),
        ];
        let args: Vec<Value> = vec![
            pid.into(),
            offset.into(),
            self.holder().into(),
            (limits.max_disconnection.as_millis() as i64).into(),
            self.key(nsp, "held:").into(),
        ];
        // Through the queue, after this node's earlier record changes (a
        // socket lost here a moment ago is recorded lost before it is
        // taken back).
        let (tx, rx) = tokio::sync::oneshot::channel();
        let queued = self.enqueue(Call {
            script: "take",
            keys,
            args,
            done: Some(Box::new(move |result| {
                let _ = tx.send(result);
            })),
        });
        let reply = match queued {
            Ok(()) => rx
                .await
                .unwrap_or(Err(BusError::NotConnected { bus: "redis" })),
            Err(e) => Err(e),
        }
        .map_err(|e| {
            tracing::warn!(error = %ErrorChain(&e), "recovery: session not read");
            Refusal::Unavailable
        })?;
        let mut parts = reply.into_array().into_iter();
        match parts.next().and_then(|v| v.as_i64()) {
            Some(2) => {}
            Some(1) => return Err(Refusal::BadOffset),
            _ => return Err(Refusal::NoSession),
        }
        let json = parts.next().and_then(|v| v.as_string()).unwrap_or_default();
        let holder = parts.next().and_then(|v| v.as_string());
        let state = parts.next().and_then(|v| v.as_string());
        let record: SessionRecord = serde_json::from_str(&json).map_err(|e| {
            tracing::warn!(error = %e, "recovery: unreadable session record");
            Refusal::NoSession
        })?;
        if record.nsp != nsp {
            return Err(Refusal::NoSession);
        }
        // A holder token is `<node id>.<incarnation>`.
        let held_by = match (holder, state.as_deref()) {
            (Some(h), Some("c")) => h.split('.').next().and_then(NodeId::parse),
            _ => None,
        };
        Ok(Taken {
            record,
            missed: Vec::new(),
            held_by,
        })
    }

    async fn attach(
        &self,
        nsp: &str,
        sid: &str,
        after: &str,
        rooms: &[String],
        f: Attach<'_>,
    ) -> Result<(), Refusal> {
        let after_id = stream_id(after).ok_or(Refusal::BadOffset)?;
        // Events that arrive while the log is read are kept for this
        // recovery; the read and these are joined under the delivery lock.
        let waiter = Waiter {
            store: self,
            nsp,
            id: self.next_waiter.fetch_add(1, Ordering::Relaxed),
        };
        self.delivery
            .lock()
            .entry(nsp.to_owned())
            .or_default()
            .waiting
            .insert(waiter.id, Vec::new());
        let keys = vec![self.key(nsp, "log"), self.key(nsp, "meta")];
        let reply = self
            .call(&self.scripts.read, keys, vec![after.into()])
            .await
            .map_err(|e| {
                tracing::warn!(error = %ErrorChain(&e), "recovery: log not read");
                Refusal::Unavailable
            })?;
        let mut parts = reply.into_array().into_iter();
        if parts.next().and_then(|v| v.as_i64()) != Some(1) {
            return Err(Refusal::BadOffset);
        }
        let mut events = self.entries(parts.next().unwrap_or(Value::Null));
        let mut delivery = self.delivery.lock();
        let arrived = waiter.take(&mut delivery);
        let last = events
            .last()
            .and_then(|p| stream_id(&p.offset))
            .unwrap_or(after_id);
        events.extend(
            arrived
                .into_iter()
                .filter(|p| stream_id(&p.offset).is_some_and(|id| id > last)),
        );
        events.retain(|p| p.packet.reaches(rooms));
        let state = delivery.entry(nsp.to_owned()).or_default();
        state.marks.retain(|m| m.at.elapsed() < MARK_FOR);
        state.marks.push(Mark {
            sid: sid.to_owned(),
            upto: last,
            at: Instant::now(),
        });
        f(&events);
        Ok(())
    }

    fn log_channel(&self, nsp: &str) -> Option<String> {
        Some(self.key(nsp, "ch"))
    }

    fn received(&self, payload: &[u8]) {
        let Some(rest) = payload.strip_prefix(&[LOG_MARKER]) else {
            return;
        };
        let Some(split) = rest.iter().position(|&b| b == b'\n') else {
            tracing::warn!("recovery: unreadable log entry");
            return;
        };
        let id = String::from_utf8_lossy(&rest[..split]);
        let Some((nsp, packet)) = self.entry(&id, &rest[split + 1..]) else {
            tracing::warn!("recovery: unreadable log entry");
            return;
        };
        let mut delivery = self.delivery.lock();
        let state = delivery.entry(nsp.clone()).or_default();
        let this = stream_id(&id);
        state.last = this;
        for waiting in state.waiting.values_mut() {
            waiting.push(packet.clone());
        }
        // Sockets recovered with this event already in their replay.
        let mut had = Vec::new();
        if let Some(this) = this {
            state.marks.retain(|m| {
                if this <= m.upto {
                    had.push(m.sid.clone());
                }
                this < m.upto && m.at.elapsed() < MARK_FOR
            });
        }
        let packet = match had.is_empty() {
            true => packet,
            false => Arc::new(packet.except(&had)),
        };
        self.sinks.deliver(&nsp, &packet, |_, _| {});
    }

    async fn keepalive(&self, _node_id: NodeId, nsp: &str, limits: &RecoveryLimits) {
        let keys = vec![
            self.key(nsp, "sess"),
            self.key(nsp, "meta"),
            self.key(nsp, "exp"),
            self.key(nsp, "holders"),
            self.key(nsp, "log"),
        ];
        let args: Vec<Value> = vec![
            self.holder().into(),
            (self.ttl(limits) as i64).into(),
            (self.node_timeout.as_millis() as i64).into(),
            (limits.max_disconnection.as_millis() as i64).into(),
            self.key(nsp, "held:").into(),
            (SWEEP_BATCH as i64).into(),
        ];
        match self.call(&self.scripts.keepalive, keys, args).await {
            Ok(v) => {
                let n: Vec<u64> = v
                    .into_array()
                    .into_iter()
                    .map(|v| v.as_i64().unwrap_or(0).max(0) as u64)
                    .collect();
                if let [sessions, packets, bytes] = n[..] {
                    self.stats.lock().insert(
                        nsp.to_owned(),
                        StoreStats {
                            sessions,
                            packets,
                            bytes,
                        },
                    );
                }
            }
            Err(e) => tracing::debug!(error = %ErrorChain(&e), "recovery keepalive failed"),
        }
    }

    async fn gap(&self, nsp: &str) -> Option<bool> {
        let reply = self
            .call(&self.scripts.last, vec![self.key(nsp, "meta")], Vec::new())
            .await
            .ok()?;
        let last = reply.as_string().as_deref().and_then(stream_id);
        let seen = self.delivery.lock().get(nsp).and_then(|d| d.last);
        Some(last.is_some() && last != seen)
    }

    async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let queued = self.queue.try_send(Call {
            script: FLUSH,
            keys: Vec::new(),
            args: Vec::new(),
            done: Some(Box::new(move |_| {
                let _ = tx.send(());
            })),
        });
        if queued.is_ok() {
            let _ = rx.await;
        }
    }

    fn stats(&self) -> StoreStats {
        self.stats
            .lock()
            .values()
            .fold(StoreStats::default(), |a, s| StoreStats {
                sessions: a.sessions + s.sessions,
                packets: a.packets + s.packets,
                bytes: a.bytes + s.bytes,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_stream_ids_and_nothing_else() {
        assert!(is_offset("1733179123456-0"));
        assert!(is_offset("0-0"));
        assert!(!is_offset(""));
        assert!(!is_offset("12"));
        assert!(!is_offset("a-1"));
        assert!(!is_offset("1-2-3"));
        assert!(!is_offset(&format!("{}-1", "9".repeat(40))));
        assert!(stream_id("5-1") < stream_id("5-2"));
        assert!(stream_id("5-9") < stream_id("6-0"));
    }

    #[test]
    fn a_namespace_keys_share_one_hash_tag() {
        let store_base = |prefix: &str, nsp: &str| format!("{prefix}:rec:{{{}:{nsp}}}", nsp.len());
        // The tag is what lies between the first `{` and the next `}`.
        let tag = |key: &str| {
            let open = key.find('{').unwrap();
            let close = open + key[open..].find('}').unwrap();
            key[open + 1..close].to_owned()
        };
        for nsp in ["/", "/chat", "/a}b", "/{x}"] {
            let base = store_base("sio-gw", nsp);
            let keys = ["log", "meta", "sess", "ch", "held:abcdef"].map(|k| format!("{base}:{k}"));
            assert!(keys.iter().all(|k| tag(k) == tag(&keys[0])), "{nsp}");
        }
    }
}

//! Support for the cluster tests: nodes on a shared in-process broker or on
//! a real `redis-server` started for the test, and a small raw Socket.IO
//! client over WebSocket.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gateway::cluster::{ClusterBus, LocalBroker, LocalBus};
use gateway::hooks::NoHooks;
use gateway::{Config, Listeners, Node, SocketIo};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const WAIT: Duration = Duration::from_secs(5);

/// Polls `f` until it is true or `WAIT` passes.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// The `process_id` the Redis server on `port` reports, if one answers.
pub async fn server_pid(port: u16) -> Option<u32> {
    let out = tokio::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", "server"])
        .output()
        .await
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Stalls the Redis servers on `ports` again and again (`DEBUG SLEEP` of a
/// few milliseconds) until `stop`, as a busy or descheduled server would
/// stall: commands from several connections then wait and are taken
/// together. Bounded by `stop` and by `limit`.
pub fn stall_redis(ports: Vec<u16>, stop: tokio_util::sync::CancellationToken, limit: Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for port in ports {
        let stop = stop.clone();
        tokio::spawn(async move {
            let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)).await else {
                return;
            };
            let cmd = b"*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n$5\r\n0.003\r\n";
            let mut reply = [0u8; 64];
            let deadline = Instant::now() + limit;
            while !stop.is_cancelled() && Instant::now() < deadline {
                if conn.write_all(cmd).await.is_err() || conn.read(&mut reply).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }
}

/// A `redis-server` of the test's own, on a free port.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

/// A free port below the kernel's ephemeral range (and, for Redis
/// Cluster, with port + 10000 free too), for a server a test starts later:
/// a client retrying a port with no listener in the ephemeral range can end
/// up connected to itself (its source port the same as the port it dials),
/// taking the port before the server binds it.
pub fn free_server_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u16>().ok())
        })
        .unwrap_or(32768);
    let span = low.saturating_sub(10_000).max(1);
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ (u64::from(std::process::id()) << 32);
    loop {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let p = 10_000 + (x % u64::from(span)) as u16;
        let bus_free = std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok();
        if bus_free && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Redis {
    pub async fn start() -> Self {
        let mut r = Redis {
            port: free_server_port(),
            child: None,
        };
        r.restart().await;
        r
    }

    /// A free port where a server will be started later (`restart`).
    pub fn unstarted() -> Self {
        Redis {
            port: free_server_port(),
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn restart(&mut self) {
        self.start_with(&[]).await;
    }

    /// (Re)starts the server with `extra` arguments.
    pub async fn start_with(&mut self, extra: &[&str]) {
        self.stop();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                // Tests stall the server on purpose (`DEBUG SLEEP`).
                "--enable-debug-command",
                "local",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        let pid = child.id();
        self.child = Some(child);
        let port = self.port;
        // Accepting is not enough: the port was free when chosen, not
        // necessarily when the server bound it, and another test's server
        // (or any listener) may answer there. The answer must come from ours.
        eventually("redis-server accepting", || async move {
            server_pid(port).await == Some(pid)
        })
        .await;
    }

    /// Kills the server (SIGKILL): connections drop without a goodbye.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `SHUTDOWN NOSAVE`: the server closes its connections and exits.
    pub async fn shutdown(&mut self) {
        let _ = tokio::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "SHUTDOWN", "NOSAVE"])
            .output()
            .await;
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// `PUBSUB NUMSUB channel` through redis-cli.
    pub fn numsub(&self, channel: &str) -> i64 {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "PUBSUB", "NUMSUB", channel])
            .output()
            .expect("redis-cli");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(-1)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Which bus the nodes of a test share.
#[derive(Clone)]
pub enum Backend {
    Local(LocalBroker),
    Redis(String),
}

pub fn test_config() -> Config {
    Config::from_toml(
        r#"
        [cluster]
        heartbeat_interval_ms = 200
        node_timeout_ms = 1000
        request_timeout_ms = 3000
        [limits]
        rate_limit_per_sec = 0
        "#,
    )
    .unwrap()
}

/// A node serving on 127.0.0.1:0.
pub struct TestNode {
    pub addr: SocketAddr,
    pub io: SocketIo,
    local_bus: Option<Arc<LocalBus>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestNode {
    pub async fn start(backend: &Backend) -> Self {
        let mut config = test_config();
        let mut local_bus = None;
        let node = match backend {
            Backend::Local(b) => {
                let member = Arc::new(b.connect());
                local_bus = Some(member.clone());
                let bus: Arc<dyn ClusterBus> = member;
                Node::with_bus(config, Arc::new(NoHooks), bus).unwrap()
            }
            Backend::Redis(url) => {
                config.cluster.redis_url = Some(url.clone());
                Node::connect(config, Arc::new(NoHooks)).await.unwrap()
            }
        };
        let io = node.io().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            node.serve(Listeners::new(listener), async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        TestNode {
            addr,
            io,
            local_bus,
            stop: Some(tx),
            task,
        }
    }

    /// Graceful stop (the node says goodbye).
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = timeout(Duration::from_secs(15), &mut self.task).await;
    }

    /// Abrupt stop (in-process broker only): the node vanishes from the
    /// bus without a goodbye, as a crashed process would.
    pub fn kill(self) {
        if let Some(bus) = &self.local_bus {
            bus.set_connected(false);
        }
        self.task.abort();
    }
}

/// Waits until every node sees `n - 1` peers.
pub async fn wait_mesh(nodes: &[&TestNode]) {
    let n = nodes.len();
    for node in nodes {
        let io = node.io.clone();
        eventually("nodes see each other", move || {
            let io = io.clone();
            async move { io.nodes().len() == n }
        })
        .await;
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A raw Socket.IO client on one namespace ("/") over WebSocket.
pub struct Client {
    ws: Ws,
    pub id: String,
    next_ack: u64,
    pending: Vec<String>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let open = next_text(&mut ws).await;
        assert!(open.starts_with("0{"), "open packet: {open}");
        ws.send(Message::text("40")).await.unwrap();
        let reply = next_text(&mut ws).await;
        let body = reply.strip_prefix("40").expect("connect reply");
        let v: Value = serde_json::from_str(body).unwrap();
        let id = v["sid"].as_str().unwrap().to_owned();
        Client {
            ws,
            id,
            next_ack: 0,
            pending: Vec::new(),
        }
    }

    /// Reads the next Socket.IO text packet, answering pings.
    async fn next_packet(&mut self, within: Duration) -> Option<String> {
        if !self.pending.is_empty() {
            return Some(self.pending.remove(0));
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = timeout(left, self.ws.next()).await.ok()??.ok()?;
            match msg {
                Message::Text(t) if t.as_str() == "2" => {
                    self.ws.send(Message::text("3")).await.ok()?;
                }
                Message::Text(t) => {
                    if let Some(p) = t.as_str().strip_prefix('4') {
                        return Some(p.to_owned());
                    }
                }
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// Emits `event` with `args` and waits for the ack's first argument.
    pub async fn ack(&mut self, event: &str, args: Value) -> Value {
        let id = self.next_ack;
        self.next_ack += 1;
        let mut arr = vec![Value::from(event)];
        arr.extend(args.as_array().cloned().unwrap_or_default());
        let text = format!("42{id}{}", Value::Array(arr));
        self.ws.send(Message::text(text)).await.unwrap();
        let prefix = format!("3{id}");
        let deadline = Instant::now() + WAIT;
        let mut others = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let p = self.next_packet(left).await.expect("ack");
            if let Some(body) = p.strip_prefix(&prefix) {
                self.pending.extend(others);
                let v: Value = serde_json::from_str(body).unwrap();
                return v[0].clone();
            }
            others.push(p);
        }
    }

    pub async fn join(&mut self, room: &str) {
        let r = self.ack("$join", serde_json::json!([room])).await;
        assert_eq!(r, serde_json::json!({"ok": true}), "join {room}");
    }

    pub async fn leave(&mut self, room: &str) {
        let r = self.ack("$leave", serde_json::json!([room])).await;
        assert_eq!(r, serde_json::json!({"ok": true}), "leave {room}");
    }

    /// The next event `(name, args)` within `within`, skipping other packets.
    pub async fn event(&mut self, within: Duration) -> Option<(String, Vec<Value>)> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let p = self.next_packet(left).await?;
            if let Some(body) = p.strip_prefix('2') {
                let v: Vec<Value> = serde_json::from_str(body).ok()?;
                let name = v.first()?.as_str()?.to_owned();
                return Some((name, v[1..].to_vec()));
            }
        }
    }

    /// The next raw Socket.IO packet (for example `1` for a disconnect).
    pub async fn packet(&mut self, within: Duration) -> Option<String> {
        self.next_packet(within).await
    }

    /// Answers the next event that asks for an ack with `answer`.
    pub async fn answer_next_ack(&mut self, answer: Value) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let p = self.next_packet(left).await.expect("an event with ack");
            let Some(rest) = p.strip_prefix('2') else {
                continue;
            };
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            if digits.is_empty() {
                continue;
            }
            let text = format!("43{digits}{}", Value::Array(vec![answer]));
            self.ws.send(Message::text(text)).await.unwrap();
            return rest[digits.len()..].to_owned();
        }
    }

    /// Asserts no event arrives within `within`.
    pub async fn no_event(&mut self, within: Duration) {
        if let Some(e) = self.event(within).await {
            panic!("unexpected event {e:?}");
        }
    }
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        match timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return t.as_str().to_owned(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("websocket closed: {other:?}"),
        }
    }
}

/// A Redis Cluster of `n` masters, made with `redis-server --cluster-enabled
/// yes` and `redis-cli --cluster create`, in a temporary directory.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    /// Replicas per master.
    replicas: usize,
    children: Vec<Child>,
    dir: std::path::PathBuf,
}

impl RedisCluster {
    pub async fn start(n: usize) -> Self {
        Self::start_retrying(n, 0).await
    }

    /// Starts `n` servers with `replicas` per master; a server that cannot
    /// start (its port, or its bus port, taken meanwhile by another
    /// process) means new ports and another try, at most three.
    async fn start_retrying(n: usize, replicas: usize) -> Self {
        let mut last = String::new();
        for _ in 0..3 {
            let mut cluster = Self::unstarted(n);
            cluster.replicas = replicas;
            match cluster.try_launch().await {
                Ok(()) => return cluster,
                // Dropping the cluster kills what did start.
                Err(e) => last = e,
            }
        }
        panic!("redis cluster did not start: {last}");
    }

    /// Free ports for `n` masters, started later (`launch`).
    pub fn unstarted(n: usize) -> Self {
        let dir = std::env::temp_dir().join(format!("gw-redis-cluster-{}", free_port()));
        let ports = (0..n).map(|_| free_server_port()).collect();
        RedisCluster {
            ports,
            replicas: 0,
            children: Vec::new(),
            dir,
        }
    }

    /// `masters` masters with one replica each (`2 * masters` servers) and
    /// a short node timeout, so a killed master is replaced within seconds.
    pub async fn start_with_replicas(masters: usize) -> Self {
        Self::start_retrying(2 * masters, 1).await
    }

    /// The port of the master serving `key`'s slot now, as `port` sees it.
    pub async fn master_of(&self, key: &str, port: u16) -> Option<u16> {
        let cli = |args: Vec<String>| async move {
            tokio::process::Command::new("redis-cli")
                .args(args)
                .output()
                .await
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        };
        let p = port.to_string();
        let slot: u16 = cli(vec![
            "-p".into(),
            p.clone(),
            "CLUSTER".into(),
            "KEYSLOT".into(),
            key.into(),
        ])
        .await?
        .trim()
        .parse()
        .ok()?;
        let nodes = cli(vec!["-p".into(), p, "CLUSTER".into(), "NODES".into()]).await?;
        nodes.lines().find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                return None;
            }
            let serves = f[8..].iter().any(|r| {
                let mut it = r.split('-');
                let lo: u16 = it.next().and_then(|v| v.parse().ok()).unwrap_or(u16::MAX);
                let hi: u16 = it.next().and_then(|v| v.parse().ok()).unwrap_or(lo);
                (lo..=hi).contains(&slot)
            });
            if !serves {
                return None;
            }
            f[1].split('@').next()?.rsplit(':').next()?.parse().ok()
        })
    }

    /// Kills (SIGKILL) the server on `port`.
    pub fn kill(&mut self, port: u16) {
        if let Some(i) = self.ports.iter().position(|&p| p == port)
            && let Some(c) = self.children.get_mut(i)
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the masters and makes them one cluster.
    pub async fn launch(&mut self) {
        if let Err(e) = self.try_launch().await {
            panic!("redis cluster did not start: {e}");
        }
    }

    async fn try_launch(&mut self) -> Result<(), String> {
        let dir = self.dir.clone();
        std::fs::create_dir_all(&dir).unwrap();
        let ports = self.ports.clone();
        for &port in &ports {
            let child = Command::new("redis-server")
                .current_dir(&dir)
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &format!("nodes-{port}.conf"),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--enable-debug-command",
                    "local",
                    "--cluster-node-timeout",
                    "2000",
                    // Replicas sync at once (the default waits 5 s).
                    "--repl-diskless-sync-delay",
                    "0",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server");
            let pid = child.id();
            // Kept at once, so that dropping the cluster kills it.
            self.children.push(child);
            let deadline = Instant::now() + WAIT;
            while server_pid(port).await != Some(pid) {
                let exited = self
                    .children
                    .last_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                if let Some(status) = exited {
                    return Err(format!("redis-server on port {port} exited ({status})"));
                }
                if Instant::now() > deadline {
                    return Err(format!("redis-server on port {port} not answering"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let mut args = vec!["--cluster".to_owned(), "create".to_owned()];
        args.extend(ports.iter().map(|p| format!("127.0.0.1:{p}")));
        args.push("--cluster-replicas".to_owned());
        args.push(self.replicas.to_string());
        args.push("--cluster-yes".to_owned());
        let out = Command::new("redis-cli")
            .args(&args)
            .output()
            .expect("redis-cli");
        if !out.status.success() {
            return Err(format!(
                "cluster create: {}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        let first = ports[0];
        eventually("cluster state ok", || async move {
            let out = Command::new("redis-cli")
                .args(["-p", &first.to_string(), "CLUSTER", "INFO"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok")
        })
        .await;
        Ok(())
    }

    pub fn url(&self) -> String {
        let mut url = format!("redis-cluster://127.0.0.1:{}", self.ports[0]);
        for (i, p) in self.ports.iter().enumerate().skip(1) {
            url.push(if i == 1 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{p}"));
        }
        url
    }

    /// The hash slot of `key`, divided into thirds (a stand-in for the shard).
    pub fn shard_of(&self, key: &str) -> u16 {
        let out = Command::new("redis-cli")
            .args(["-p", &self.ports[0].to_string(), "CLUSTER", "KEYSLOT", key])
            .output()
            .unwrap();
        let slot: u16 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        slot / (16384 / self.ports.len() as u16 + 1)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Threads that spin on every core given, so the nodes, Redis and the
/// clients compete for CPU. They stop when dropped or after `limit`.
pub struct BusyCores {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BusyCores {
    pub fn start(n: usize, limit: Duration) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let deadline = std::time::Instant::now() + limit;
                    let mut x = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed)
                        && std::time::Instant::now() < deadline
                    {
                        for _ in 0..10_000 {
                            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                        }
                    }
                })
            })
            .collect();
        BusyCores { stop, threads }
    }
}

impl Drop for BusyCores {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A Redis master, one replica and three sentinels watching them (service
/// `mymaster`, quorum 2), in a temporary directory, as a Sentinel
/// deployment runs.
pub struct RedisSentinel {
    pub master: Redis,
    pub replica: Redis,
    pub sentinels: Vec<u16>,
    children: Vec<Child>,
    dir: std::path::PathBuf,
}

impl RedisSentinel {
    pub async fn start() -> Self {
        let mut s = Self::unstarted();
        s.launch().await;
        s
    }

    /// Free ports for everything, started later (`launch`).
    pub fn unstarted() -> Self {
        RedisSentinel {
            master: Redis::unstarted(),
            replica: Redis::unstarted(),
            sentinels: (0..3).map(|_| free_server_port()).collect(),
            children: Vec::new(),
            dir: std::env::temp_dir().join(format!("gw-redis-sentinel-{}", free_port())),
        }
    }

    /// Starts the master, the replica and the sentinels.
    pub async fn launch(&mut self) {
        self.master.restart().await;
        let master = self.master.port;
        self.replica
            .start_with(&["--replicaof", "127.0.0.1", &master.to_string()])
            .await;
        let dir = self.dir.clone();
        std::fs::create_dir_all(&dir).unwrap();
        for &port in &self.sentinels {
            let conf = dir.join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor mymaster 127.0.0.1 {master} 2\n\
                     sentinel down-after-milliseconds mymaster 1000\n\
                     sentinel failover-timeout mymaster 4000\n\
                     sentinel parallel-syncs mymaster 1\n",
                    dir = dir.display(),
                ),
            )
            .unwrap();
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server --sentinel");
            let pid = child.id();
            self.children.push(child);
            eventually("sentinel accepting", || async move {
                server_pid(port).await == Some(pid)
            })
            .await;
        }
        let replica_port = self.replica.port;
        let first = self.sentinels[0];
        eventually("sentinels see the replica", || async move {
            sentinel_replicas(first).await.contains(&replica_port)
        })
        .await;
    }

    pub fn url(&self) -> String {
        format!(
            "redis-sentinel://127.0.0.1:{}?sentinelServiceName=mymaster&node=127.0.0.1:{}&node=127.0.0.1:{}",
            self.sentinels[0], self.sentinels[1], self.sentinels[2]
        )
    }

    /// The master's port as the first sentinel tells it.
    pub async fn master_port(&self) -> Option<u16> {
        let out = tokio::process::Command::new("redis-cli")
            .args([
                "-p",
                &self.sentinels[0].to_string(),
                "SENTINEL",
                "get-master-addr-by-name",
                "mymaster",
            ])
            .output()
            .await
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)?
            .trim()
            .parse()
            .ok()
    }
}

pub async fn sentinel_replicas(sentinel: u16) -> Vec<u16> {
    let Ok(out) = tokio::process::Command::new("redis-cli")
        .args([
            "-p",
            &sentinel.to_string(),
            "SENTINEL",
            "replicas",
            "mymaster",
        ])
        .output()
        .await
    else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[0] == "port")
        .filter_map(|w| w[1].trim().parse().ok())
        .collect()
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

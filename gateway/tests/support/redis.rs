//! Redis servers of the test's own: a single `redis-server`, a Redis Cluster
//! and a Sentinel deployment, each on free ports below the ephemeral range,
//! killed when dropped. A test that uses them starts with
//! `if skip_without_redis() { return; }` (see [`super::tools`]).

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::tempdir::TempDir;
use super::wait::{DEADLINE, eventually_async};

/// Runs `redis-cli` with `args`: what it printed, if it ran.
async fn cli(args: &[&str]) -> Option<String> {
    let out = tokio::process::Command::new("redis-cli")
        .args(args)
        .output()
        .await
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `process_id` the Redis server on `port` reports, if one answers.
pub async fn server_pid(port: u16) -> Option<u32> {
    cli(&["-p", &port.to_string(), "INFO", "server"])
        .await?
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits until the server on `port` answers as process `pid`: accepting is
/// not enough, since the port was free when chosen, not necessarily when
/// the server bound it, and another test's server (or any listener) may
/// answer there.
async fn until_serving(what: &str, port: u16, pid: u32) {
    eventually_async(what, || async move { server_pid(port).await == Some(pid) }).await;
}

/// A server process of the test's own; killed (SIGKILL) when dropped.
struct Process(Child);

/// `redis-server` on `port` as every test server runs: on loopback, without
/// persistence, with `DEBUG` allowed (tests stall servers with
/// `DEBUG SLEEP`).
fn redis_server(port: u16) -> Command {
    let mut command = Command::new("redis-server");
    command.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--enable-debug-command",
        "local",
    ]);
    command
}

impl Process {
    /// Starts `command` (a `redis-server`), its output discarded.
    fn spawn(command: &mut Command) -> Self {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        Self(child)
    }

    fn id(&self) -> u32 {
        self.0.id()
    }

    /// Its exit status, if it has exited.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.0.try_wait().ok().flatten()
    }

    /// Waits until it exits on its own.
    fn wait(&mut self) {
        let _ = self.0.wait();
    }

    /// Kills it now: its connections drop without a goodbye.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
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

// ---------------------------------------------------------------------------
// One server

/// A `redis-server` of the test's own, on a free port, without persistence.
pub struct Redis {
    pub port: u16,
    process: Option<Process>,
}

impl Redis {
    pub async fn start() -> Self {
        let mut r = Self::unstarted();
        r.restart().await;
        r
    }

    /// A free port where a server will be started later (`restart`).
    pub fn unstarted() -> Self {
        Redis {
            port: free_server_port(),
            process: None,
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
        let process = Process::spawn(redis_server(self.port).args(extra));
        let pid = process.id();
        self.process = Some(process);
        until_serving("redis-server accepting", self.port, pid).await;
    }

    /// Kills the server (SIGKILL): connections drop without a goodbye.
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// `SHUTDOWN NOSAVE`: the server closes its connections and exits.
    pub async fn shutdown(&mut self) {
        let _ = cli(&["-p", &self.port.to_string(), "SHUTDOWN", "NOSAVE"]).await;
        if let Some(mut process) = self.process.take() {
            process.wait();
        }
    }

    /// Runs `redis-cli` with `args` against this server: what it printed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-p")
            .arg(self.port.to_string())
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
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

// ---------------------------------------------------------------------------
// Redis Cluster

/// A Redis Cluster of `n` masters, made with `redis-server --cluster-enabled
/// yes` and `redis-cli --cluster create`, in a temporary directory.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    /// Replicas per master.
    replicas: usize,
    servers: Vec<Process>,
    // Dropped after the servers are killed (fields drop in order).
    dir: TempDir,
}

impl RedisCluster {
    pub async fn start(n: usize) -> Self {
        Self::start_retrying(n, 0).await
    }

    /// `masters` masters with one replica each (`2 * masters` servers) and
    /// a short node timeout, so a killed master is replaced within seconds.
    pub async fn start_with_replicas(masters: usize) -> Self {
        Self::start_retrying(2 * masters, 1).await
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
        RedisCluster {
            ports: (0..n).map(|_| free_server_port()).collect(),
            replicas: 0,
            servers: Vec::new(),
            dir: TempDir::new("redis-cluster"),
        }
    }

    /// Starts the masters and makes them one cluster.
    pub async fn launch(&mut self) {
        if let Err(e) = self.try_launch().await {
            panic!("redis cluster did not start: {e}");
        }
    }

    async fn try_launch(&mut self) -> Result<(), String> {
        let ports = self.ports.clone();
        for &port in &ports {
            let server = Process::spawn(
                redis_server(port)
                    .current_dir(self.dir.path())
                    .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                    .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                    // Replicas sync at once (the default waits 5 s).
                    .args(["--repl-diskless-sync-delay", "0"]),
            );
            let pid = server.id();
            // Kept at once, so that dropping the cluster kills it.
            self.servers.push(server);
            let deadline = Instant::now() + DEADLINE;
            while server_pid(port).await != Some(pid) {
                let exited = self.servers.last_mut().and_then(Process::exited);
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
        let first = ports[0].to_string();
        eventually_async("cluster state ok", || {
            let first = first.clone();
            async move {
                cli(&["-p", &first, "CLUSTER", "INFO"])
                    .await
                    .is_some_and(|info| info.contains("cluster_state:ok"))
            }
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

    /// The port of the master serving `key`'s slot now, as `port` sees it.
    pub async fn master_of(&self, key: &str, port: u16) -> Option<u16> {
        let p = port.to_string();
        let slot: u16 = cli(&["-p", &p, "CLUSTER", "KEYSLOT", key])
            .await?
            .trim()
            .parse()
            .ok()?;
        let nodes = cli(&["-p", &p, "CLUSTER", "NODES"]).await?;
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

    /// Whether the master on `port` has its replica connected and in sync.
    pub async fn replica_in_sync(port: u16) -> bool {
        cli(&["-p", &port.to_string(), "INFO", "replication"])
            .await
            .is_some_and(|text| {
                text.contains("connected_slaves:1") && text.contains("state=online")
            })
    }

    /// The hash slot of `key`, divided into thirds (a stand-in for the shard).
    pub fn shard_of(&self, key: &str) -> u16 {
        let out = Command::new("redis-cli")
            .args(["-p", &self.ports[0].to_string(), "CLUSTER", "KEYSLOT", key])
            .output()
            .expect("redis-cli");
        let slot: u16 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a slot number");
        slot / (16384 / self.ports.len() as u16 + 1)
    }

    /// Kills (SIGKILL) the server on `port`.
    pub fn kill(&mut self, port: u16) {
        if let Some(i) = self.ports.iter().position(|&p| p == port)
            && let Some(server) = self.servers.get_mut(i)
        {
            server.kill();
        }
    }
}

// ---------------------------------------------------------------------------
// Redis Sentinel

/// A Redis master, one replica and three sentinels watching them (service
/// `mymaster`, quorum 2), in a temporary directory, as a Sentinel
/// deployment runs.
pub struct RedisSentinel {
    pub master: Redis,
    pub replica: Redis,
    pub sentinels: Vec<u16>,
    processes: Vec<Process>,
    // Dropped after the sentinels are killed (fields drop in order).
    dir: TempDir,
}

impl RedisSentinel {
    /// Free ports for everything, started by `launch`.
    pub fn unstarted() -> Self {
        RedisSentinel {
            master: Redis::unstarted(),
            replica: Redis::unstarted(),
            sentinels: (0..3).map(|_| free_server_port()).collect(),
            processes: Vec::new(),
            dir: TempDir::new("redis-sentinel"),
        }
    }

    /// Starts the master, the replica and the sentinels.
    pub async fn launch(&mut self) {
        self.master.restart().await;
        let master = self.master.port;
        self.replica
            .start_with(&["--replicaof", "127.0.0.1", &master.to_string()])
            .await;
        let dir = self.dir.path().to_owned();
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
            .expect("sentinel configuration written");
            let sentinel =
                Process::spawn(Command::new("redis-server").arg(&conf).arg("--sentinel"));
            let pid = sentinel.id();
            self.processes.push(sentinel);
            until_serving("sentinel accepting", port, pid).await;
        }
        let replica_port = self.replica.port;
        let first = self.sentinels[0];
        eventually_async("sentinels see the replica", || async move {
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
        let sentinel = self.sentinels[0].to_string();
        cli(&[
            "-p",
            &sentinel,
            "SENTINEL",
            "get-master-addr-by-name",
            "mymaster",
        ])
        .await?
        .lines()
        .nth(1)?
        .trim()
        .parse()
        .ok()
    }
}

/// The replicas' ports as the sentinel on `sentinel` lists them.
pub async fn sentinel_replicas(sentinel: u16) -> Vec<u16> {
    let sentinel = sentinel.to_string();
    let Some(text) = cli(&["-p", &sentinel, "SENTINEL", "replicas", "mymaster"]).await else {
        return Vec::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[0] == "port")
        .filter_map(|w| w[1].trim().parse().ok())
        .collect()
}

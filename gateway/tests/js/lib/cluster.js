// Helpers for tests that run several gateway processes sharing a Redis server
// of the test's own: the Redis server, a cluster of gateway processes with the
// admin gRPC API on, a gRPC client of that API, and a TCP proxy standing in
// for the load balancer in front of the nodes. Everything listens on
// loopback; every wait has a deadline.

import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import { GATEWAY_BIN, startNode, until, withTimeout } from "./harness.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const PROTO_ROOT = path.resolve(here, "../../../../proto");

// ---------------------------------------------------------------------------
// Programs the tests need besides the gateway

/** Set to `1` to make a missing program fail the tests that need it (as CI does). */
export const REQUIRE_ALL = "GATEWAY_TESTS_REQUIRE_ALL";

/** Why `redis-server` cannot run here, or null when it can. */
export function missingRedis() {
  const out = spawnSync("redis-server", ["--version"], { encoding: "utf8" });
  if (out.error) return `redis-server: cannot run it (${out.error.message}); install it and put it on PATH`;
  if (out.status !== 0) return `redis-server: \`redis-server --version\` failed with status ${out.status}`;
  return null;
}

/**
 * The `skip` option of a suite that starts its own Redis server: a message
 * when redis-server is missing, false when it is there. Under
 * GATEWAY_TESTS_REQUIRE_ALL=1 it is always false, and `startRedis` then fails
 * saying what is missing (as the Rust tests' `skip_without_redis` does).
 */
export function skipWithoutRedis() {
  const missing = missingRedis();
  if (!missing || process.env[REQUIRE_ALL] === "1") return false;
  const why = `needs ${missing} (set ${REQUIRE_ALL}=1 to fail instead)`;
  process.stderr.write(`note: skipped: ${why}\n`);
  return why;
}

// ---------------------------------------------------------------------------
// Redis

const children = new Set();
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

/**
 * A free port below the kernel's ephemeral range, for a server started right
 * after: a client retrying a port in the ephemeral range can end up
 * connected to itself.
 */
export async function freeServerPort() {
  let low = 32768;
  try {
    low = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]) || low;
  } catch {
    // not Linux: keep the usual default
  }
  const span = Math.max(1, low - 10_000);
  for (let i = 0; i < 200; i++) {
    const port = 10_000 + (randomBytes(4).readUInt32BE() % span);
    const free = await new Promise((resolve) => {
      const server = net.createServer();
      server.once("error", () => resolve(false));
      server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error("no free port found below the ephemeral range in 200 tries");
}

/** Sends one command to the Redis server on `port`; resolves with the raw reply text, or null. */
function redisCommand(port, args, timeoutMs = 1_000) {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    let reply = "";
    const done = (value) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(value);
    };
    const timer = setTimeout(() => done(null), timeoutMs);
    socket.on("connect", () => {
      socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`);
    });
    socket.setEncoding("utf8");
    socket.on("data", (chunk) => {
      reply += chunk;
      // A bulk string reply is complete once its announced length arrived.
      const m = /^\$(\d+)\r\n/.exec(reply);
      if (!m || Buffer.byteLength(reply) >= m[0].length + Number(m[1]) + 2) done(reply);
    });
    socket.on("error", () => done(null));
  });
}

/**
 * Starts `redis-server` on a free port, on loopback, without persistence;
 * resolves once it answers as that very process.
 */
export async function startRedis({ startTimeoutMs = 10_000 } = {}) {
  const missing = missingRedis();
  if (missing) throw new Error(`this test needs ${missing} (${REQUIRE_ALL}=1 makes that an error)`);
  const port = await freeServerPort();
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
  const child = spawn("redis-server", args, { stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let logs = "";
  child.stdout.setEncoding("utf8").on("data", (c) => (logs = (logs + c).slice(-16_384)));
  child.stderr.setEncoding("utf8").on("data", (c) => (logs = (logs + c).slice(-16_384)));
  const exited = new Promise((resolve) =>
    child.on("exit", (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    }),
  );
  let gone = false;
  exited.then(() => (gone = true));
  // Accepting is not enough: the port was free when chosen, not necessarily
  // when the server bound it.
  await until(
    async () => {
      if (gone) throw new Error(`redis-server ${args.join(" ")} exited:\n${logs}`);
      const info = await redisCommand(port, ["INFO", "server"]);
      return info !== null && new RegExp(`process_id:${child.pid}\\r`).test(info);
    },
    { timeoutMs: startTimeoutMs, intervalMs: 50, what: `redis-server answers on port ${port}` },
  );
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    command: (...cmd) => redisCommand(port, cmd),
    async stop() {
      if (!gone) child.kill("SIGKILL");
      await exited;
    },
  };
}

// ---------------------------------------------------------------------------
// The admin gRPC API

let adminService;

/** The `Admin` service constructor, loaded once from proto/socketio_gateway. */
function adminServiceClient() {
  if (!adminService) {
    const definition = protoLoader.loadSync("socketio_gateway/admin/v1/admin.proto", {
      includeDirs: [PROTO_ROOT],
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
    });
    adminService = grpc.loadPackageDefinition(definition).socketio_gateway.admin.v1.Admin;
  }
  return adminService;
}

/**
 * A client of one node's admin API (`gateway admin listening on <addr>`),
 * sending the bearer token as `authorization` metadata. Every call has a
 * gRPC deadline.
 */
export class AdminClient {
  #client;
  #metadata;

  constructor(addr, token) {
    const Admin = adminServiceClient();
    this.addr = addr;
    this.#client = new Admin(addr, grpc.credentials.createInsecure());
    this.#metadata = new grpc.Metadata();
    if (token !== undefined) this.#metadata.set("authorization", `Bearer ${token}`);
  }

  /** Calls `method` with `request`; rejects with the gRPC error (its `code` and `details`). */
  call(method, request, { deadlineMs = 5_000 } = {}) {
    return new Promise((resolve, reject) => {
      const deadline = new Date(Date.now() + deadlineMs);
      this.#client[method](request, this.#metadata, { deadline }, (err, response) => {
        if (err) {
          err.message = `Admin.${method} on ${this.addr}: ${err.message}`;
          reject(err);
        } else {
          resolve(response);
        }
      });
    });
  }

  /**
   * `io.of(target.namespace).to(target.rooms)...emit(event, ...args)`:
   * `args` are JSON values, sent as the payload's JSON array text.
   */
  emit(target, event, ...args) {
    return this.call("Emit", { target, event, payload: { json_args: JSON.stringify(args), attachments: [] } });
  }

  /** The sockets selected by `target`, cluster-wide (with `missing_node_ids`). */
  fetchSockets(target) {
    return this.call("FetchSockets", { target });
  }

  /** The rooms of `namespace` with their member counts, cluster-wide. */
  listRooms(namespace = "/") {
    return this.call("ListRooms", { namespace, include_socket_rooms: false });
  }

  clusterInfo() {
    return this.call("ClusterInfo", {});
  }

  close() {
    this.#client.close();
  }
}

// ---------------------------------------------------------------------------
// Gateway nodes over Redis

const ADMIN_LINE = /^gateway admin listening on (\S+)\s*$/m;

/** A fresh node id: 6 characters of `[A-Za-z0-9_-]`, the prefix of its socket ids. */
export function nodeId() {
  return randomBytes(6).toString("base64url").slice(0, 6);
}

/**
 * Gateway processes sharing `redisUrl`, each with the admin API on
 * 127.0.0.1:0 behind `token`. `config` is the rest of the TOML (namespaces,
 * limits...), the same for every node; `[cluster]`, `[admin]` and
 * `[shutdown]` are written here.
 */
export class Cluster {
  /** Every node started, in order, the stopped ones included. */
  nodes = [];

  constructor({
    redisUrl,
    config = "",
    token = randomBytes(12).toString("hex"),
    channelPrefix = `sio-gw-${randomBytes(4).toString("hex")}`,
    graceMs = 10_000,
    disconnectSpreadMs = 0,
    bin = GATEWAY_BIN,
  }) {
    this.redisUrl = redisUrl;
    this.token = token;
    this.bin = bin;
    this.graceMs = graceMs;
    // The registry's default timings (a node is gone after 6 s of silence),
    // tolerant of a loaded machine; cluster-wide requests wait at most 3 s
    // for a node killed without a goodbye.
    this.configFor = (id) => `
[cluster]
node_id = "${id}"
redis_url = "${redisUrl}"
channel_prefix = "${channelPrefix}"
request_timeout_ms = 3000

[admin]
listen = "127.0.0.1:0"
token = "${token}"

[shutdown]
grace_period_ms = ${graceMs}
disconnect_spread_ms = ${disconnectSpreadMs}

${config}
`;
  }

  /** Starts one more node; resolves once both its listeners are up. */
  async start() {
    const id = nodeId();
    const node = await startNode({ bin: this.bin, config: this.configFor(id) });
    const m = await until(() => ADMIN_LINE.exec(node.logs()), { what: "the admin listening line" });
    node.nodeId = id;
    node.adminAddr = m[1];
    node.admin = new AdminClient(node.adminAddr, this.token);
    this.nodes.push(node);
    return node;
  }

  /** Nodes whose process has not been signalled to stop. */
  get live() {
    return this.nodes.filter((n) => n.proc.exitCode === null && n.proc.signalCode === null && !n.signalled);
  }

  /** SIGKILL: the node's connections break without a goodbye. */
  async kill(node) {
    node.signalled = true;
    node.admin.close();
    return node.kill();
  }

  /** SIGTERM: the node drains (spreading its disconnects) and exits; resolves with its exit status. */
  async terminate(node) {
    node.signalled = true;
    node.admin.close();
    return node.stop(this.graceMs + 5_000);
  }

  /** Waits until every live node sees `count` live nodes in the registry. */
  async settled(count = this.live.length, timeoutMs = 10_000) {
    await until(
      async () => {
        const infos = await Promise.all(this.live.map((n) => n.admin.clusterInfo().catch(() => null)));
        return infos.every((info) => info && info.nodes.length === count);
      },
      { timeoutMs, intervalMs: 100, what: `every node sees ${count} nodes` },
    );
  }

  async stop() {
    await Promise.all(
      this.nodes.map(async (n) => {
        n.admin.close();
        await withTimeout(n.stop(2_000), 10_000, `node ${n.nodeId} stops`);
      }),
    );
  }
}

// ---------------------------------------------------------------------------
// The load balancer

/**
 * A TCP proxy on 127.0.0.1:0 standing in for the load balancer: each new
 * connection goes to the next backend of its list (round-robin; with one
 * backend, always that one) and stays there. Changing the list moves only
 * new connections, as taking a node out of rotation does; connections to a
 * node that dies break with it. With no backend, connections are refused
 * (closed at once).
 */
export class TcpProxy {
  #server;
  #backends = [];
  #next = 0;
  #sockets = new Set();
  /** Connections forwarded, by backend port. */
  forwarded = new Map();

  static async start(backends = []) {
    const proxy = new TcpProxy();
    proxy.setBackends(backends);
    await proxy.#listen();
    return proxy;
  }

  #listen() {
    this.#server = net.createServer((client) => this.#forward(client));
    // Room for a thousand clients reconnecting at once.
    return new Promise((resolve, reject) => {
      this.#server.once("error", reject);
      this.#server.listen({ port: 0, host: "127.0.0.1", backlog: 4096 }, () => {
        this.port = this.#server.address().port;
        this.url = `http://127.0.0.1:${this.port}`;
        resolve();
      });
    });
  }

  /** Where new connections go from now on: ports (or nodes with a `port`). */
  setBackends(backends) {
    this.#backends = backends.map((b) => (typeof b === "number" ? b : b.port));
    this.#next = 0;
  }

  #forward(client) {
    this.#sockets.add(client);
    client.on("close", () => this.#sockets.delete(client));
    client.on("error", () => {});
    if (this.#backends.length === 0) {
      client.destroy();
      return;
    }
    const port = this.#backends[this.#next % this.#backends.length];
    this.#next = (this.#next + 1) % this.#backends.length;
    this.forwarded.set(port, (this.forwarded.get(port) ?? 0) + 1);
    const upstream = net.connect(port, "127.0.0.1");
    this.#sockets.add(upstream);
    upstream.on("close", () => this.#sockets.delete(upstream));
    upstream.on("error", () => {});
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    // Either side closing or failing closes the other: a dead node's clients
    // see their connection break.
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
  }

  /** Open connections, both sides counted. */
  get openSockets() {
    return this.#sockets.size;
  }

  async close() {
    for (const s of this.#sockets) s.destroy();
    this.#sockets.clear();
    if (this.#server) await new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

/**
 * An HTTP proxy on 127.0.0.1:0 standing in for a load balancer without
 * affinity: each HTTP request goes to the next backend (round-robin), and
 * each WebSocket upgrade too (its connection then stays there), as nginx's
 * default upstream balancing does. Counts the answers of each status and
 * those saying `Session ID unknown`.
 */
export class RoundRobinProxy {
  #server;
  #backends = [];
  #next = 0;
  #sockets = new Set();
  #agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  /** Answers by HTTP status. */
  statuses = new Map();
  /** Answers with Engine.IO's `Session ID unknown` (code 1). */
  unknownSid = 0;
  /** Requests and upgrades sent, by backend port. */
  sent = new Map();

  static async start(backends) {
    const proxy = new RoundRobinProxy();
    proxy.#backends = backends.map((b) => (typeof b === "number" ? b : b.port));
    proxy.#server = http.createServer((req, res) => proxy.#request(req, res));
    proxy.#server.on("upgrade", (req, socket, head) => proxy.#upgrade(req, socket, head));
    proxy.#server.on("connection", (s) => {
      proxy.#sockets.add(s);
      s.on("close", () => proxy.#sockets.delete(s));
    });
    await new Promise((resolve, reject) => {
      proxy.#server.once("error", reject);
      proxy.#server.listen({ port: 0, host: "127.0.0.1", backlog: 4096 }, resolve);
    });
    proxy.port = proxy.#server.address().port;
    proxy.url = `http://127.0.0.1:${proxy.port}`;
    return proxy;
  }

  /** Where requests go from now on (a load balancer's health checks took a node out). */
  setBackends(backends) {
    this.#backends = backends.map((b) => (typeof b === "number" ? b : b.port));
    this.#next = 0;
  }

  #pick() {
    const port = this.#backends[this.#next % this.#backends.length];
    this.#next = (this.#next + 1) % this.#backends.length;
    this.sent.set(port, (this.sent.get(port) ?? 0) + 1);
    return port;
  }

  #request(req, res) {
    const port = this.#pick();
    const upstream = http.request(
      { host: "127.0.0.1", port, method: req.method, path: req.url, headers: req.headers, agent: this.#agent },
      (answer) => {
        this.statuses.set(answer.statusCode, (this.statuses.get(answer.statusCode) ?? 0) + 1);
        const chunks = [];
        answer.on("data", (c) => chunks.push(c));
        answer.on("end", () => {
          const body = Buffer.concat(chunks);
          if (answer.statusCode === 400 && /"code":1\b/.test(body.toString())) this.unknownSid += 1;
          res.writeHead(answer.statusCode, answer.headers);
          res.end(body);
        });
      },
    );
    upstream.on("error", () => {
      this.statuses.set(502, (this.statuses.get(502) ?? 0) + 1);
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    req.pipe(upstream);
  }

  #upgrade(req, socket, head) {
    const port = this.#pick();
    const upstream = net.connect(port, "127.0.0.1", () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      upstream.write(lines.join("\r\n") + "\r\n\r\n");
      if (head?.length) upstream.write(head);
      socket.pipe(upstream);
      upstream.pipe(socket);
    });
    for (const s of [socket, upstream]) {
      this.#sockets.add(s);
      s.on("close", () => this.#sockets.delete(s));
      s.on("error", () => {});
    }
    socket.on("close", () => upstream.destroy());
    upstream.on("close", () => socket.destroy());
  }

  async close() {
    for (const s of this.#sockets) s.destroy();
    this.#agent.destroy();
    await new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

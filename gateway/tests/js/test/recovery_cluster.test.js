// Connection state recovery across a cluster of gateway processes over a real
// Redis server, with the official client (`socket.recovered`), a TCP proxy
// standing in for the load balancer, and a backend emitting through the admin
// gRPC API of another node.
//
// - A client's node dies (SIGKILL) or drains (SIGTERM); the load balancer
//   sends the client's reconnection to another node; the backend emits while
//   it is away (to its room, its socket id, the namespace, with excepts). It
//   comes back recovered, with its id and rooms, and exactly the missed
//   messages in order, each with its offset.
// - Refusals: a session that expired, a forged pid, a pid of another
//   namespace, an offset never issued: a new session, and a refused claim
//   does not use the real one up. A later claim with the pid moves the
//   socket again (one connection holds it at a time).
// - A rolling restart of three nodes under a steady publish load: a thousand
//   clients lose nothing, and the drain spreads their reconnections.
//
// Needs `redis-server` (skipped without it, unless GATEWAY_TESTS_REQUIRE_ALL=1).

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import { Cluster, TcpProxy, skipWithoutRedis, startRedis } from "../lib/cluster.js";
import { Clients, ack, connected, once, record, unique, until, withTimeout } from "../lib/harness.js";
import { RawClient } from "../lib/raw.js";

const SKIP = skipWithoutRedis();

/** `max_disconnection_ms` of `/short`: a session there expires before the client is back. */
const SHORT_MS = 1_000;

const CONFIG = `
[[namespaces]]
name = "/"
join = ["*"]
publish = true
[namespaces.recovery]
enabled = true
max_disconnection_ms = 30000

[[namespaces]]
name = "/other"
join = ["*"]
[namespaces.recovery]
enabled = true
max_disconnection_ms = 30000

[[namespaces]]
name = "/short"
join = ["*"]
[namespaces.recovery]
enabled = true
max_disconnection_ms = ${SHORT_MS}
`;

/**
 * The official client's reconnection, slow enough that the backend's emits
 * happen while it is away.
 */
const AWAY_1S = {
  reconnection: true,
  reconnectionDelay: 1_000,
  reconnectionDelayMax: 1_000,
  randomizationFactor: 0,
  timeout: 2_000,
};

/** The first argument of each recorded event (the message label). */
const labels = (recorded) => recorded.items.map(([label]) => label);

describe("connection state recovery across nodes over Redis (official client)", { skip: SKIP, timeout: 120_000 }, () => {
  let redis;
  let cluster;
  let proxy;
  const clients = new Clients();
  const raws = [];

  before(async () => {
    redis = await startRedis();
  });
  afterEach(async () => {
    clients.closeAll();
    for (const raw of raws.splice(0)) raw.close();
    await proxy?.close();
    proxy = undefined;
    await cluster?.stop();
    cluster = undefined;
  });
  after(() => redis?.stop());

  /** A cluster of `count` nodes on the test's Redis, every node seeing the others. */
  async function startCluster(count) {
    cluster = new Cluster({ redisUrl: redis.url, config: CONFIG });
    const nodes = [];
    for (let i = 0; i < count; i++) nodes.push(await cluster.start());
    await cluster.settled(count);
    return nodes;
  }

  for (const transports of [["websocket"], ["polling"]]) {
    for (const signal of ["SIGKILL", "SIGTERM"]) {
      test(`transports ${JSON.stringify(transports)}: node lost (${signal}), recovered on another node with every missed message`, async () => {
        const [n1, n2, n3] = await startCluster(3);
        proxy = await TcpProxy.start([n1]);
        const room = unique("room");
        const second = unique("second");
        const elsewhere = unique("elsewhere");

        const client = clients.socket(proxy.url, { transports, ...AWAY_1S });
        await connected(client);
        assert.equal(client.recovered, false, "a first connection is not a recovery");
        const id = client.id;
        assert.ok(id.startsWith(n1.nodeId), `${id} was handed out by node 1 (${n1.nodeId})`);
        assert.deepEqual(await ack(client, "$join", room), { ok: true });
        assert.deepEqual(await ack(client, "$join", second), { ok: true });
        const messages = record(client, "msg");

        // The backend talks to node 3 only.
        const admin = n3.admin;
        const emit = (target, label) => admin.emit({ namespace: "/", ...target }, "msg", label);
        await emit({ rooms: [room] }, "m0");
        await messages.atLeast(1);
        const [m0, offset0] = messages.items[0];
        assert.equal(m0, "m0");
        assert.equal(typeof offset0, "string", "the offset is the last argument");

        // The load balancer takes node 1 out of rotation; then it goes.
        const disconnected = once(client, "disconnect", { timeoutMs: 15_000 });
        const reconnected = once(client, "connect", { timeoutMs: 20_000 });
        proxy.setBackends([n2]);
        const exit = signal === "SIGKILL" ? cluster.kill(n1) : cluster.terminate(n1);
        const [reason] = await disconnected;
        assert.match(reason, /^transport (close|error)$/, `disconnect reason: ${reason}`);

        // While it is away (its reconnection waits 1 s), through node 3.
        const missed = [];
        const away = async (target, label) => {
          await emit(target, label);
          if (label !== null) missed.push(label);
        };
        await away({ rooms: [room] }, "to its room");
        await away({ socket_ids: [id] }, "to its socket id");
        await away({}, "to the namespace");
        await away({ rooms: [room], except_rooms: [elsewhere] }, "to its room except a room it is not in");
        await away({ rooms: [room], except_rooms: [second] }, null); // except a room it is in
        await away({ rooms: [elsewhere] }, null); // a room it is not in
        await away({ rooms: [room, second] }, "to both its rooms (once)");
        await away({ rooms: [elsewhere], socket_ids: [id] }, "to another room and its socket id");
        await away({ rooms: [second], except_socket_ids: [id] }, null);
        await away({ rooms: [second] }, "to its second room");
        assert.equal(client.connected, false, "every message above was emitted while the client was away");

        await reconnected;
        assert.equal(client.recovered, true, "recovered");
        assert.equal(client.id, id, "the same socket id");
        assert.equal(client.io.engine.transport.name, transports[0]);

        // Live traffic after the replay, through its rooms and its id.
        await emit({ rooms: [room] }, "live to its room");
        await emit({ rooms: [second] }, "live to its second room");
        await emit({ socket_ids: [id] }, "live to its socket id");
        await until(() => labels(messages).includes("live to its socket id"), {
          timeoutMs: 5_000,
          what: () => `the live messages (got ${JSON.stringify(labels(messages))})`,
        });
        assert.deepEqual(labels(messages), [
          "m0",
          ...missed,
          "live to its room",
          "live to its second room",
          "live to its socket id",
        ]);
        for (const args of messages.items) {
          assert.equal(args.length, 2, `one argument and the offset: ${JSON.stringify(args)}`);
          assert.equal(typeof args[1], "string", `offset of ${args[0]}`);
        }
        const offsets = messages.items.map(([, offset]) => offset);
        assert.equal(new Set(offsets).size, offsets.length, `one offset per message: ${offsets}`);

        // The cluster sees it on node 2, in its rooms.
        const { sockets } = await admin.fetchSockets({ namespace: "/", socket_ids: [id] });
        assert.equal(sockets.length, 1, JSON.stringify(sockets));
        assert.equal(sockets[0].node_id, n2.nodeId, "now held by node 2");
        assert.deepEqual([...sockets[0].rooms].sort(), [id, room, second].sort());

        const status = await withTimeout(exit, 20_000, "node 1 exits");
        if (signal === "SIGTERM") assert.equal(status.code, 0, `node 1 drained and exited: ${JSON.stringify(status)}`);
      });
    }

    test(`transports ${JSON.stringify(transports)}: a session that expired is not recovered`, async () => {
      const [n1, n2] = await startCluster(2);
      proxy = await TcpProxy.start([n1]);
      const client = clients.socket(`${proxy.url}/short`, {
        transports,
        ...AWAY_1S,
        // Back well after the session expired.
        reconnectionDelay: SHORT_MS + 1_500,
        reconnectionDelayMax: SHORT_MS + 1_500,
      });
      await connected(client);
      const id = client.id;
      const messages = record(client, "msg");
      await n2.admin.emit({ namespace: "/short", socket_ids: [id] }, "msg", "m0");
      await messages.atLeast(1);
      assert.equal(typeof messages.items[0][1], "string", "the offset is the last argument");

      const disconnected = once(client, "disconnect", { timeoutMs: 10_000 });
      const reconnected = once(client, "connect", { timeoutMs: SHORT_MS + 10_000 });
      proxy.setBackends([n2]);
      await cluster.kill(n1);
      await disconnected;
      await n2.admin.emit({ namespace: "/short", socket_ids: [id] }, "msg", "while away");
      await reconnected;
      assert.equal(client.recovered, false, "not recovered");
      assert.notEqual(client.id, id, "a new socket id");

      // A working new session: its messages carry offsets; the one sent to
      // the old id while it was away never arrives.
      await n2.admin.emit({ namespace: "/short", socket_ids: [client.id] }, "msg", "new session");
      await messages.atLeast(2);
      assert.deepEqual(labels(messages), ["m0", "new session"]);
      assert.equal(typeof messages.items[1][1], "string");
    });
  }

  /**
   * A raw WebSocket client through the proxy that sends CONNECT to `nsp`
   * with `auth`; resolves with its CONNECT reply (`sid`, `pid`) and the
   * frames that came before it (a replay).
   */
  async function rawConnect(nsp, auth) {
    const { client } = await RawClient.connect(proxy.port);
    raws.push(client);
    const prefix = nsp === "/" ? "" : `${nsp},`;
    client.send(`40${prefix}${auth === undefined ? "" : JSON.stringify(auth)}`);
    const replay = [];
    for (let i = 0; i < 1_000; i++) {
      const frame = await client.next(5_000);
      if (frame.startsWith(`40${prefix}{`)) {
        const reply = JSON.parse(frame.slice(2 + prefix.length));
        return { client, sid: reply.sid, pid: reply.pid, replay };
      }
      assert.ok(!frame.startsWith(`44${prefix}`), `CONNECT refused: ${frame}`);
      replay.push(frame);
    }
    throw new Error("no CONNECT reply within 1000 frames");
  }

  /** The arguments of an EVENT frame of `nsp` (`42["ev",...]`). */
  function eventArgs(nsp, frame) {
    const prefix = `42${nsp === "/" ? "" : `${nsp},`}`;
    assert.ok(frame.startsWith(prefix), `an event of ${nsp}: ${frame}`);
    return JSON.parse(frame.slice(prefix.length));
  }

  /**
   * A socket of `nsp` that received one event (so it has an offset) and then
   * lost its connection: its id, pid and offset, once the cluster no longer
   * lists it.
   */
  async function lostSocket(nsp, admin) {
    const s = await rawConnect(nsp);
    assert.equal(typeof s.pid, "string", "recovery is on: the CONNECT reply has a pid");
    await admin.emit({ namespace: nsp, socket_ids: [s.sid] }, "msg", "first");
    const [event, label, offset] = eventArgs(nsp, await s.client.next(5_000));
    assert.deepEqual([event, label], ["msg", "first"]);
    assert.equal(typeof offset, "string");
    s.client.close();
    await until(async () => (await admin.fetchSockets({ namespace: nsp, socket_ids: [s.sid] })).sockets.length === 0, {
      timeoutMs: 5_000,
      what: `${s.sid} is gone from the cluster`,
    });
    return { sid: s.sid, pid: s.pid, offset };
  }

  /**
   * Claims the session `pid` on `nsp`: the node that lost the socket may
   * still be saving it when the cluster stops listing it, so a claim that
   * gets a new session is retried a few times (a claim that is refused
   * leaves the session in place).
   */
  async function claim(nsp, lost) {
    for (let attempt = 1; ; attempt++) {
      const s = await rawConnect(nsp, { pid: lost.pid, offset: lost.offset });
      if (s.sid === lost.sid || attempt === 10) return s;
      s.client.close();
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  test("a forged pid or an offset never issued gets a new session; the real claim recovers, and a later one moves the socket", async () => {
    const [n1, n2] = await startCluster(2);
    proxy = await TcpProxy.start([n1]);
    const lost = await lostSocket("/", n2.admin);
    proxy.setBackends([n2]);
    await n2.admin.emit({ namespace: "/", socket_ids: [lost.sid] }, "msg", "while away");

    const forged = await rawConnect("/", { pid: "AAAAAAAAAAAAAAAAAAAA", offset: lost.offset });
    assert.notEqual(forged.sid, lost.sid, "a forged pid gets a new socket id");
    assert.ok(![lost.pid, "AAAAAAAAAAAAAAAAAAAA"].includes(forged.pid), "and a new pid");
    assert.deepEqual(forged.replay, [], "and no replay");

    const badOffset = await rawConnect("/", { pid: lost.pid, offset: "not-an-offset" });
    assert.notEqual(badOffset.sid, lost.sid, "an offset never issued gets a new session");
    assert.notEqual(badOffset.pid, lost.pid);
    assert.deepEqual(badOffset.replay, []);

    const noOffset = await rawConnect("/", { pid: lost.pid });
    assert.notEqual(noOffset.sid, lost.sid, "a pid without an offset gets a new session");

    // Those refusals left the session in place: the real claim, on the
    // other node, recovers it with what it missed.
    const recovered = await claim("/", lost);
    assert.equal(recovered.sid, lost.sid, "recovered with its socket id");
    assert.equal(recovered.pid, lost.pid);
    assert.equal(recovered.replay.length, 1, JSON.stringify(recovered.replay));
    const [event, label, offset] = eventArgs("/", recovered.replay[0]);
    assert.deepEqual([event, label], ["msg", "while away"]);
    assert.notEqual(offset, lost.offset);

    // A session is held by one connection at a time: a later claim with
    // the pid (the client came back once more, through node 1) moves the
    // socket again, with the events after the offset it sends, and the
    // connection that held it is closed.
    proxy.setBackends([n1]);
    const again = await rawConnect("/", { pid: lost.pid, offset: offset });
    assert.equal(again.sid, lost.sid, "a later claim moves the socket");
    assert.deepEqual(again.replay, []);
    await recovered.client.closed(5_000);
    const { sockets } = await n2.admin.fetchSockets({ namespace: "/", socket_ids: [lost.sid] });
    assert.deepEqual(
      sockets.map((s) => s.node_id),
      [n1.nodeId],
      "held by node 1 only",
    );
  });

  test("a pid of another namespace gets a new session, and stays valid in its own", async () => {
    const [n1, n2] = await startCluster(2);
    proxy = await TcpProxy.start([n1]);
    const lost = await lostSocket("/other", n2.admin);
    proxy.setBackends([n2]);

    const foreign = await rawConnect("/", { pid: lost.pid, offset: lost.offset });
    assert.notEqual(foreign.sid, lost.sid, "a pid of /other does not recover a socket of /");
    assert.notEqual(foreign.pid, lost.pid);
    assert.deepEqual(foreign.replay, []);

    const recovered = await claim("/other", lost);
    assert.equal(recovered.sid, lost.sid, "recovered in /other");
    assert.equal(recovered.pid, lost.pid);
    assert.deepEqual(recovered.replay, []);
  });
});

// ---------------------------------------------------------------------------
// Rolling restart

const ROLLING = {
  clients: 1_000,
  rooms: 10,
  publishers: 4,
  /** Mean emits per second of each publisher (exponential gaps: independent, not in lock-step). */
  ratePerSec: 10,
  /** `shutdown.disconnect_spread_ms` of every node. */
  spreadMs: 4_000,
  /** Clients connecting at once while the test sets up. */
  connectBatch: 100,
};

const ROLLING_CONFIG = `
[[namespaces]]
name = "/"
join = ["*"]
[namespaces.recovery]
enabled = true
max_disconnection_ms = 30000
`;

/** The warning and error lines of every node's log (the last few of each). */
function nodeWarnings(cluster) {
  return cluster.nodes
    .map((n) => {
      const lines = n
        .logs()
        .split("\n")
        .filter((l) => /\b(WARN|ERROR)\b/.test(l))
        .slice(-10);
      return `${n.nodeId}:\n${lines.join("\n")}`;
    })
    .join("\n");
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Counts of `times` (ms) per whole second since `start`. */
function perSecond(times, start) {
  const buckets = [];
  for (const t of times) {
    const s = Math.max(0, Math.floor((t - start) / 1_000));
    buckets[s] = (buckets[s] ?? 0) + 1;
  }
  return Array.from(buckets, (n) => n ?? 0);
}

/** What is wrong with `got` (sequence numbers received, in order) against `want`: null when equal. */
function seqDiff(got, want) {
  if (got.length === want.length && got.every((s, i) => s === want[i])) return null;
  const wanted = new Set(want);
  const seen = new Set();
  let duplicates = 0;
  let unexpected = 0;
  for (const s of got) {
    if (seen.has(s)) duplicates += 1;
    seen.add(s);
    if (!wanted.has(s)) unexpected += 1;
  }
  const missing = want.filter((s) => !seen.has(s));
  const ordered = got.every((s, i) => i === 0 || got[i - 1] <= s);
  return (
    `${got.length}/${want.length} received, ${missing.length} missing (first ${missing.slice(0, 5)}), ` +
    `${duplicates} duplicates, ${unexpected} unexpected, ${ordered ? "otherwise in order" : "OUT OF ORDER"}`
  );
}

describe("rolling restart under load with recovery over Redis (official client)", { skip: SKIP, timeout: 150_000 }, () => {
  let redis;
  let cluster;
  let proxy;
  const clients = new Clients();

  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    clients.closeAll();
    await proxy?.close();
    await cluster?.stop();
    await redis?.stop();
  });

  test(`${ROLLING.clients} clients in ${ROLLING.rooms} rooms: every message of their room once and in order, reconnections spread over the drain`, async (t) => {
    const began = Date.now();
    cluster = new Cluster({
      redisUrl: redis.url,
      config: ROLLING_CONFIG,
      disconnectSpreadMs: ROLLING.spreadMs,
      graceMs: ROLLING.spreadMs + 10_000,
    });
    const originals = [];
    for (let i = 0; i < 3; i++) originals.push(await cluster.start());
    await cluster.settled(3);
    proxy = await TcpProxy.start(originals);
    const rooms = Array.from({ length: ROLLING.rooms }, (_, i) => unique(`rolling-${i}`));

    // The clients, spread round-robin over the three nodes, each in one room.
    /** The restart in progress: its disconnects and reconnections are recorded there. */
    let phase = null;
    let stray = 0;
    const members = [];
    const join = async (k) => {
      const socket = clients.socket(proxy.url, {
        transports: ["websocket"],
        reconnection: true,
        reconnectionDelay: 500,
        reconnectionDelayMax: 2_000,
        randomizationFactor: 0.5,
        timeout: 5_000,
      });
      const member = {
        socket,
        id: null,
        room: rooms[k % rooms.length],
        got: Array.from({ length: ROLLING.publishers }, () => []),
        reasons: [],
        notRecovered: 0,
        /** Every event and (re)connection in arrival order, to explain a failure. */
        log: [],
      };
      socket.on("tick", (p, seq, offset) => {
        member.got[p].push(seq);
        member.log.push(`${p}:${seq}@${offset}`);
      });
      socket.on("disconnect", (reason) => {
        member.reasons.push(reason);
        const during = phase ? `restart of ${phase.node}` : "no restart";
        member.log.push(`disconnect(${reason}, +${Date.now() - began} ms, ${during})`);
        if (phase) phase.disconnects.push(Date.now());
        else stray += 1;
      });
      socket.on("connect", () => {
        if (member.id === null) return; // the first connection
        member.log.push(`connect(recovered=${socket.recovered}, ${socket.id}, +${Date.now() - began} ms)`);
        if (socket.recovered !== true || socket.id !== member.id) member.notRecovered += 1;
        if (phase) phase.reconnects.push(Date.now());
        else stray += 1;
      });
      await connected(socket, 20_000);
      member.id = socket.id;
      assert.deepEqual(await ack(socket, "$join", member.room), { ok: true });
      members.push(member);
    };
    for (let k = 0; k < ROLLING.clients; k += ROLLING.connectBatch) {
      const batch = [];
      for (let i = k; i < Math.min(k + ROLLING.connectBatch, ROLLING.clients); i++) batch.push(join(i));
      await Promise.all(batch);
    }
    // One event for everyone first: a client recovers only with the offset
    // of an event it received (without one it sends no offset).
    const welcomed = members.map((m) => once(m.socket, "welcome", { timeoutMs: 10_000 }));
    await originals[0].admin.emit({ namespace: "/" }, "welcome");
    await Promise.all(welcomed);
    const setUp = Date.now();
    const publishingFrom = () => `publishing from +${setUp - began} ms`;
    const perNode = [...proxy.forwarded.values()];
    t.diagnostic(`${members.length} clients connected and joined in ${setUp - began} ms (proxy: ${perNode})`);

    // The publishers: each emits through the admin API of a live node that
    // is not draining, one emit at a time, to a random room.
    const expected = Array.from({ length: ROLLING.publishers }, () => new Map(rooms.map((r) => [r, []])));
    const failures = [];
    const inflight = [];
    const draining = new Set();
    let publishing = true;
    const publisher = async (p) => {
      let seq = 0;
      const deadline = Date.now() + 90_000;
      while (publishing && Date.now() < deadline) {
        const nodes = cluster.live.filter((n) => !draining.has(n));
        const node = nodes[p % nodes.length];
        const room = rooms[Math.floor(Math.random() * rooms.length)];
        seq += 1;
        expected[p].get(room).push(seq);
        inflight[p] = node.admin.emit({ namespace: "/", rooms: [room] }, "tick", p, seq);
        try {
          await inflight[p];
        } catch (err) {
          failures.push(`publisher ${p}, seq ${seq}, through ${node.nodeId}: ${err.message}`);
        }
        const mean = 1_000 / ROLLING.ratePerSec;
        await sleep(Math.min(-Math.log(1 - Math.random()) * mean, 5 * mean));
      }
    };
    const publishers = Array.from({ length: ROLLING.publishers }, (_, p) => publisher(p));
    await sleep(1_000);

    // Node by node: a replacement joins the rotation, the old node leaves it
    // and drains.
    const phases = [];
    try {
      for (const old of originals) {
        const fresh = await cluster.start();
        draining.add(old);
        await Promise.allSettled(inflight);
        proxy.setBackends(cluster.live.filter((n) => n !== old));
        phase = { node: old.nodeId, replacement: fresh.nodeId, start: Date.now(), disconnects: [], reconnects: [] };
        phases.push(phase);
        const status = await cluster.terminate(old);
        phase.exited = Date.now();
        assert.equal(status.code, 0, `node ${old.nodeId} drained and exited: ${JSON.stringify(status)}`);
        const current = phase;
        const allBack = () =>
          current.reconnects.length >= current.disconnects.length && members.every((m) => m.socket.connected);
        await until(allBack, {
          timeoutMs: 20_000,
          intervalMs: 50,
          what: () =>
            `every client of ${current.node} is back (${current.reconnects.length}/${current.disconnects.length} reconnected, ` +
            `${members.filter((m) => !m.socket.connected).length} not connected)`,
        });
        phase.end = Date.now();
        phase = null;
      }
      await sleep(1_000);
    } finally {
      phase = null;
      publishing = false;
      await Promise.all(publishers);
    }
    const published = Date.now();

    // Every client has every message of its room: wait for the counts, then
    // compare the sequences.
    const want = (m) => expected.reduce((n, e) => n + e.get(m.room).length, 0);
    const have = (m) => m.got.reduce((n, g) => n + g.length, 0);
    await until(() => members.every((m) => have(m) >= want(m)), {
      timeoutMs: 15_000,
      intervalMs: 100,
      what: () => `every client has its messages (${members.filter((m) => have(m) < want(m)).length} behind)`,
    }).catch(() => {}); // the comparison below says what is missing
    const emitted = expected.reduce((n, e) => n + [...e.values()].reduce((k, l) => k + l.length, 0), 0);
    const deliveries = members.reduce((n, m) => n + have(m), 0);
    t.diagnostic(
      `${emitted} messages emitted by ${ROLLING.publishers} publishers over ${published - setUp} ms; ` +
        `${deliveries} deliveries; done ${Date.now() - began} ms after the start`,
    );
    for (const p of phases) {
      t.diagnostic(
        `restart of ${p.node} (replaced by ${p.replacement}): exited after ${p.exited - p.start} ms, ` +
          `${p.disconnects.length} disconnects per second ${JSON.stringify(perSecond(p.disconnects, p.start))}, ` +
          `reconnects per second ${JSON.stringify(perSecond(p.reconnects, p.start))}, all back after ${p.end - p.start} ms`,
      );
    }

    // The cluster agrees: every room still has all its members, on the
    // replacement nodes.
    const listed = await cluster.live[0].admin.listRooms("/");
    assert.deepEqual(
      listed.rooms.map((r) => [r.name, r.members]),
      [...rooms].sort().map((r) => [r, ROLLING.clients / ROLLING.rooms]),
      `rooms listed by the replacements (missing nodes: ${listed.missing_node_ids})`,
    );

    assert.deepEqual(failures, [], "every emit was accepted");
    const wrong = [];
    for (const m of members) {
      for (let p = 0; p < ROLLING.publishers; p++) {
        const diff = seqDiff(m.got[p], expected[p].get(m.room));
        if (diff) {
          wrong.push(
            `${m.id} (${m.room}), publisher ${p}: ${diff}\n  received ${m.got[p]}\n  expected ${expected[p].get(m.room)}` +
              `\n  its events and connections: ${m.log.join(" ")}`,
          );
        }
      }
    }
    assert.equal(
      wrong.length,
      0,
      `${wrong.length} client/publisher pairs are wrong (${publishingFrom()}), e.g.:\n${wrong.slice(0, 10).join("\n")}` +
        `\nwarnings of the nodes:\n${nodeWarnings(cluster)}`,
    );

    const notRecovered = members.filter((m) => m.notRecovered > 0);
    assert.equal(notRecovered.length, 0, `${notRecovered.length} reconnections were not recoveries`);
    assert.ok(members.every((m) => m.socket.id === m.id), "every client kept its socket id");
    assert.equal(stray, 0, "no client lost its connection outside a restart");
    const reasons = new Set(members.flatMap((m) => m.reasons));
    for (const reason of reasons) assert.match(reason, /^transport (close|error)$/, `disconnect reason ${reason}`);

    // Each node's clients came back spread over its drain, not all at once.
    assert.equal(phases.length, 3);
    for (const p of phases) {
      assert.ok(p.disconnects.length >= ROLLING.clients / 5, `${p.node} had ${p.disconnects.length} clients`);
      assert.equal(p.reconnects.length, p.disconnects.length, `every client of ${p.node} reconnected once`);
      const busiest = Math.max(...perSecond(p.reconnects, p.start));
      assert.ok(
        busiest <= p.disconnects.length / 2,
        `${busiest} of ${p.node}'s ${p.disconnects.length} clients reconnected within one second`,
      );
    }
    assert.ok(Date.now() - began < 120_000, `the test took ${Date.now() - began} ms`);
  });
});

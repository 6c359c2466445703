// Long-polling without sticky sessions: three gateway processes over a real
// Redis server behind a round-robin HTTP load balancer with no affinity
// (every request goes to the next node, as nginx's default balancing does).
// A polling request for a session another node owns is forwarded to that
// node's internal listener (`cluster.internal_listen`, `cluster.secret`).
// Official clients, polling only and with the default polling-then-WebSocket
// upgrade (which lands on any node too: it is made on the owner and the two
// connections are spliced), join rooms and publish for a while: every member
// gets every message of its room once and in order, and no request is
// answered `Session ID unknown`.
//
// The load balancer is the test's own small HTTP proxy (lib/cluster.js,
// RoundRobinProxy): each request goes to the next node, as nginx's default
// upstream balancing does, and it counts the answers, which is what the test
// asserts on (nginx is not on this machine's package set by default).
//
// FORWARDING_SECONDS sets how long the clients publish (default 30).
// Needs `redis-server` (skipped without it, unless GATEWAY_TESTS_REQUIRE_ALL=1).

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, afterEach, before, describe, test } from "node:test";
import { Cluster, RoundRobinProxy, skipWithoutRedis, startRedis } from "../lib/cluster.js";
import { Clients, ack, until } from "../lib/harness.js";

const SKIP = skipWithoutRedis();
const SECONDS = Number(process.env.FORWARDING_SECONDS ?? 30);

const CONFIG = `
[[namespaces]]
name = "/"
join = ["*"]
publish = true
`;

describe("long-polling through any node (official client, round-robin load balancer)", { skip: SKIP, timeout: 300_000 }, () => {
  let redis;
  let cluster;
  let proxy;
  const clients = new Clients();
  const saved = {};

  before(async () => {
    // Every node forwards, and serves forwarded requests on a port of its own.
    for (const [key, value] of Object.entries({
      GATEWAY_CLUSTER__INTERNAL_LISTEN: "127.0.0.1:0",
      GATEWAY_CLUSTER__SECRET: randomBytes(16).toString("hex"),
    })) {
      saved[key] = process.env[key];
      process.env[key] = value;
    }
    redis = await startRedis();
    cluster = new Cluster({ redisUrl: redis.url, config: CONFIG });
    for (let i = 0; i < 3; i += 1) await cluster.start();
    await cluster.settled(3);
    proxy = await RoundRobinProxy.start(cluster.live);
    // Each node must know the others' internal addresses (sent with their
    // heartbeats) before the first session is spread over them.
    await until(
      async () => {
        const probe = clients.socket(proxy.url, { transports: ["polling"] });
        try {
          await until(() => probe.connected, { timeoutMs: 3_000, what: "a probe connects" });
          return true;
        } catch {
          return false;
        } finally {
          probe.disconnect();
        }
      },
      { timeoutMs: 15_000, intervalMs: 200, what: "forwarding works through every node" },
    );
  });
  afterEach(() => clients.closeAll());
  after(async () => {
    await proxy?.close();
    await cluster?.stop();
    await redis?.stop();
    for (const [key, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  });

  for (const [label, transports, count] of [
    ["polling only", ["polling"], 200],
    ["polling, then the WebSocket upgrade", ["polling", "websocket"], 60],
  ]) {
    test(`${label}: ${count} clients publish and receive for ${SECONDS} s with no "Session ID unknown"`, async () => {
      const unknownBefore = proxy.unknownSid;
      const rooms = 10;
      const sockets = await Promise.all(
        Array.from({ length: count }, () => clients.connect(proxy.url, { transports, timeout: 10_000 })),
      );
      // Per receiver and publisher, the sequence numbers received.
      const got = sockets.map(() => new Map());
      sockets.forEach((s, i) =>
        s.on("msg", (from, seq) => {
          const seen = got[i].get(from) ?? [];
          seen.push(seq);
          got[i].set(from, seen);
        }),
      );
      if (transports.includes("websocket")) {
        // The upgrade lands on any node too: it is made on the owner, and
        // the two connections are spliced.
        await until(() => sockets.every((s) => s.io.engine.transport.name === "websocket"), {
          timeoutMs: 10_000,
          what: () =>
            `every client upgraded (${sockets.filter((s) => s.io.engine.transport.name === "websocket").length} of ${count})`,
        });
      }
      const roomOf = (i) => `fw-${label.length}-${i % rooms}`;
      await Promise.all(sockets.map(async (s, i) => assert.deepEqual(await ack(s, "$join", roomOf(i)), { ok: true })));

      // Each client publishes to its room at its own pace until the end.
      const ends = Date.now() + SECONDS * 1000;
      const published = sockets.map(() => 0);
      await Promise.all(
        sockets.map(async (s, i) => {
          const gap = 150 + (i % 7) * 40;
          await new Promise((r) => setTimeout(r, (i * 37) % gap));
          while (Date.now() < ends) {
            assert.deepEqual(await ack(s, "$publish", roomOf(i), "msg", s.id, published[i]), { ok: true });
            published[i] += 1;
            await new Promise((r) => setTimeout(r, gap));
          }
        }),
      );

      // Every member has every message of the others in its room, once and in order.
      const expected = (i) =>
        sockets
          .map((s, j) => [s.id, j])
          .filter(([, j]) => j !== i && roomOf(j) === roomOf(i))
          .map(([id, j]) => [id, Array.from({ length: published[j] }, (_, k) => k)]);
      await until(
        () =>
          sockets.every((_, i) =>
            expected(i).every(([id, seqs]) => (got[i].get(id)?.length ?? 0) >= seqs.length),
          ),
        { timeoutMs: 15_000, what: "every message delivered" },
      );
      for (let i = 0; i < sockets.length; i += 1) {
        for (const [id, seqs] of expected(i)) {
          assert.deepEqual(got[i].get(id), seqs, `client ${i}: the messages of ${id}`);
        }
      }
      assert.equal(proxy.unknownSid - unknownBefore, 0, "no request answered Session ID unknown");
      const total = published.reduce((a, b) => a + b, 0);
      assert.ok(total > count, `published ${total}`);
      // The load balancer spread the requests over every node.
      for (const node of cluster.live) assert.ok((proxy.sent.get(node.port) ?? 0) > 0, `node ${node.nodeId} got requests`);
    });
  }

  // Last: it kills a node.
  test("the owner killed: its clients see a disconnect and reconnect through the others", async () => {
    const sockets = await Promise.all(
      Array.from({ length: 12 }, () =>
        clients.connect(proxy.url, {
          transports: ["polling"],
          reconnection: true,
          reconnectionDelay: 200,
          reconnectionDelayMax: 500,
          timeout: 5_000,
        }),
      ),
    );
    // The session ids name their owners.
    const owner = cluster.live.find((n) => sockets.some((s) => s.io.engine.id.startsWith(n.nodeId)));
    assert.ok(owner, "some session is on a node of the cluster");
    const owned = sockets.filter((s) => s.io.engine.id.startsWith(owner.nodeId));
    const others = sockets.filter((s) => !owned.includes(s));
    const disconnects = owned.map((s) => new Promise((resolve) => s.once("disconnect", resolve)));
    await cluster.kill(owner);
    // The load balancer's health check takes the node out.
    proxy.setBackends(cluster.live);
    await Promise.all(disconnects);
    // Every client is connected again, to a live node. (A client of another
    // node whose long poll was parked on the killed node, which was
    // forwarding it, loses that request and reconnects too, as behind any
    // load balancer when a pod dies with requests in flight.)
    await until(() => sockets.every((s) => s.connected && !s.io.engine.id.startsWith(owner.nodeId)), {
      timeoutMs: 15_000,
      what: "every client connected again through the live nodes",
    });
    assert.ok(owned.length > 0 && others.length > 0);
  });
});

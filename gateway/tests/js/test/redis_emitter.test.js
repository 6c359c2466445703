// The real `@socket.io/redis-emitter` (5.x, with the `redis` client) against
// two gateway processes over a real Redis server: what a Node backend
// publishes with it reaches exactly the right official `socket.io-client`
// sockets on both nodes, each once (rooms, except, socket ids, namespaces,
// flags, binary and date arguments); `socketsJoin` then an emit to the new
// room reaches the joined sockets; `socketsLeave`; `disconnectSockets`.
// Malformed messages published on the emitter's channels are counted and
// change nothing.
//
// "Exactly once" is checked without sleeping: after the emits under test,
// a last emit goes to every socket; each node applies the emitter's
// messages in order and each socket's packets stay in order, so once every
// socket has that last event, it has everything it will ever get.
//
// Needs `redis-server` (skipped without it, unless GATEWAY_TESTS_REQUIRE_ALL=1).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Emitter } from "@socket.io/redis-emitter";
import { createClient } from "redis";
import { Cluster, skipWithoutRedis, startRedis } from "../lib/cluster.js";
import { Clients, ack, once, until } from "../lib/harness.js";

const SKIP = skipWithoutRedis();

const CONFIG = `
[[namespaces]]
name = "/"
join = ["*"]
publish = true

[[namespaces]]
name = "/chat"
join = ["*"]
`;

const OPS_LINE = /^gateway ops listening on (\S+)\s*$/m;

describe("the Socket.IO Redis emitter against a two-node cluster", { skip: SKIP, timeout: 120_000 }, () => {
  let redis;
  let cluster;
  let publisher;
  let emitter;
  const clients = new Clients();
  /** name -> { socket, events: [[event, ...args]] } */
  const sockets = {};
  let sentinel = 0;
  let savedOps;

  const join = async (name, room) => {
    assert.deepEqual(await ack(sockets[name].socket, "$join", room), { ok: true });
  };

  /** Connects a recorded socket `name` to node `node` in namespace `nsp`. */
  const open = async (name, node, nsp = "/") => {
    const socket = await clients.connect(node.url + nsp, { transports: ["websocket"] });
    const entry = { socket, events: [] };
    socket.onAny((event, ...args) => entry.events.push([event, ...args]));
    sockets[name] = entry;
    return entry;
  };

  /**
   * Emits one last event to every socket of "/" and "/chat" and waits until
   * each connected one has it; returns, for each socket, the events of
   * `event` it got since `from` (marks), then clears nothing.
   */
  const settle = async () => {
    sentinel += 1;
    const mark = `sentinel-${sentinel}`;
    emitter.emit("sentinel", mark);
    emitter.of("/chat").emit("sentinel", mark);
    await until(
      () =>
        Object.values(sockets)
          .filter((e) => e.socket.connected)
          .every((e) => e.events.some(([ev, m]) => ev === "sentinel" && m === mark)),
      { timeoutMs: 10_000, what: `every socket has ${mark}` },
    );
  };

  /** The names of the sockets that got `event`, sorted, one entry per delivery. */
  const receivers = (event) =>
    Object.entries(sockets)
      .flatMap(([name, e]) => e.events.filter(([ev]) => ev === event).map(() => name))
      .sort();

  const argsOf = (name, event) => sockets[name].events.filter(([ev]) => ev === event).map(([, ...args]) => args);

  before(async () => {
    savedOps = process.env.GATEWAY_OPS__LISTEN;
    process.env.GATEWAY_OPS__LISTEN = "127.0.0.1:0";
    redis = await startRedis();
    cluster = new Cluster({ redisUrl: redis.url, config: CONFIG });
    await cluster.start();
    await cluster.start();
    await cluster.settled(2);
    const [a, b] = cluster.live;
    // a1 in r1; a2 in r1 and r2; a3 in none; the same on node b.
    await open("a1", a);
    await open("a2", a);
    await open("a3", a);
    await open("b1", b);
    await open("b2", b);
    await open("b3", b);
    await open("ca", a, "/chat");
    await open("cb", b, "/chat");
    await join("a1", "r1");
    await join("a2", "r1");
    await join("a2", "r2");
    await join("b1", "r1");
    await join("b2", "r2");
    publisher = createClient({ url: redis.url });
    await publisher.connect();
    emitter = new Emitter(publisher);
    // The ingest subscribes once its own connection is up: a first emit
    // that everyone gets says it is.
    await until(
      async () => {
        emitter.emit("warmup");
        await new Promise((r) => setTimeout(r, 50));
        return Object.values(sockets).every((e) => e.socket.nsp === "/chat" || e.events.some(([ev]) => ev === "warmup"));
      },
      { timeoutMs: 10_000, what: "both nodes receive the emitter" },
    );
    await settle();
    for (const e of Object.values(sockets)) e.events.length = 0;
  });

  after(async () => {
    clients.closeAll();
    await publisher?.quit().catch(() => {});
    await cluster?.stop();
    await redis?.stop();
    if (savedOps === undefined) delete process.env.GATEWAY_OPS__LISTEN;
    else process.env.GATEWAY_OPS__LISTEN = savedOps;
  });

  test("emits reach exactly the selected sockets of both nodes, each once", async () => {
    emitter.emit("everyone", 1, "two", { three: [3] });
    emitter.to("r1").emit("to-r1", "x");
    emitter.to(["r1", "r2"]).emit("to-r1-r2");
    emitter.to("r1").except("r2").emit("r1-except-r2");
    emitter.except("r1").emit("except-r1");
    emitter.to(sockets.b1.socket.id).emit("to-b1");
    emitter.to(sockets.a3.socket.id).to("r2").emit("to-a3-and-r2");
    emitter.except(sockets.a1.socket.id).to("r1").emit("r1-except-a1");
    emitter.volatile.emit("volatile");
    emitter.compress(false).emit("uncompressed");
    emitter.of("/chat").emit("chat-only", "hi");
    await settle();

    const root = ["a1", "a2", "a3", "b1", "b2", "b3"];
    assert.deepEqual(receivers("everyone"), root);
    assert.deepEqual(argsOf("b3", "everyone"), [[1, "two", { three: [3] }]]);
    assert.deepEqual(receivers("to-r1"), ["a1", "a2", "b1"]);
    assert.deepEqual(receivers("to-r1-r2"), ["a1", "a2", "b1", "b2"]);
    assert.deepEqual(receivers("r1-except-r2"), ["a1", "b1"]);
    assert.deepEqual(receivers("except-r1"), ["a3", "b2", "b3"]);
    assert.deepEqual(receivers("to-b1"), ["b1"]);
    assert.deepEqual(receivers("to-a3-and-r2"), ["a2", "a3", "b2"]);
    assert.deepEqual(receivers("r1-except-a1"), ["a2", "b1"]);
    assert.deepEqual(receivers("volatile"), root);
    assert.deepEqual(receivers("uncompressed"), root);
    assert.deepEqual(receivers("chat-only"), ["ca", "cb"]);
    assert.deepEqual(argsOf("cb", "chat-only"), [["hi"]]);
  });

  test("binary and date arguments arrive as Node's Socket.IO sends them", async () => {
    emitter.emit("binary", Buffer.from([1, 2, 3]), { nested: Buffer.from([4, 5]), n: 6 }, "text");
    emitter.emit("date", new Date(Date.UTC(2021, 2, 4, 5, 6, 7, 89)));
    await settle();
    for (const name of ["a1", "b2"]) {
      const [[bin, obj, text]] = argsOf(name, "binary");
      assert.deepEqual([...Buffer.from(bin)], [1, 2, 3]);
      assert.deepEqual([...Buffer.from(obj.nested)], [4, 5]);
      assert.equal(obj.n, 6);
      assert.equal(text, "text");
      assert.deepEqual(argsOf(name, "date"), [["2021-03-04T05:06:07.089Z"]]);
    }
  });

  test("socketsJoin then an emit to the new room; socketsLeave", async () => {
    emitter.in("r2").socketsJoin(["r3", "r4"]);
    emitter.to("r3").emit("to-r3");
    emitter.except("r1").socketsJoin("r5");
    emitter.to("r5").emit("to-r5");
    emitter.socketsLeave("r3");
    emitter.to("r3").emit("to-r3-after-leave");
    emitter.to("r4").emit("to-r4");
    await settle();
    assert.deepEqual(receivers("to-r3"), ["a2", "b2"]);
    assert.deepEqual(receivers("to-r5"), ["a3", "b2", "b3"]);
    assert.deepEqual(receivers("to-r3-after-leave"), []);
    assert.deepEqual(receivers("to-r4"), ["a2", "b2"]);
  });

  test("malformed messages are counted and change nothing", async () => {
    const garbage = [
      ["socket.io#/#", Buffer.from([0x93, 0xa7])], // truncated MessagePack
      ["socket.io#/#", Buffer.from([0xc1])], // never used byte
      ["socket.io#/#", Buffer.from([0x93, 0x01, 0x02, 0x03])], // wrong types
      ["socket.io#/#r1#", Buffer.from("not msgpack at all")],
      ["socket.io-request#/#", Buffer.from('{"type":2,"opts":{"rooms":[]},')], // truncated JSON
      ["socket.io-request#/#", Buffer.from('{"type":"join"}')], // wrong type
      ["socket.io-request#/#", Buffer.from('{"type":4,"opts":{"rooms":5}}')], // wrong rooms
    ];
    for (const [channel, payload] of garbage) await publisher.publish(channel, payload);
    emitter.emit("after-garbage");
    await settle();
    assert.deepEqual(receivers("after-garbage"), ["a1", "a2", "a3", "b1", "b2", "b3"]);
    for (const node of cluster.live) {
      assert.equal(node.proc.exitCode, null, "the node is still running");
      const ops = OPS_LINE.exec(node.logs());
      assert.ok(ops, "the ops listener line");
      const text = await (await fetch(`http://${ops[1]}/metrics`)).text();
      const count = (kind, result) => {
        const m = new RegExp(`^gateway_emitter_messages_total\\{kind="${kind}",result="${result}"\\} (\\d+)`, "m").exec(text);
        return m ? Number(m[1]) : NaN;
      };
      assert.equal(count("emit", "malformed"), 4, text);
      assert.equal(count("other", "malformed"), 3, text);
      assert.ok(count("emit", "ok") >= 10, text);
      assert.ok(count("join", "ok") >= 2, text);
      assert.ok(node.logs().includes("malformed redis emitter message ignored"));
    }
  });

  test("serverSideEmit is counted as unsupported and delivers nothing", async () => {
    emitter.serverSideEmit("hello", 1);
    await settle();
    assert.deepEqual(receivers("hello"), []);
  });

  test("disconnectSockets disconnects exactly the selected sockets", async () => {
    const gone = ["a1", "a2", "b1"].map((name) => once(sockets[name].socket, "disconnect", { timeoutMs: 10_000 }));
    emitter.in("r1").disconnectSockets();
    const reasons = (await Promise.all(gone)).map(([reason]) => reason);
    assert.deepEqual(reasons, ["io server disconnect", "io server disconnect", "io server disconnect"]);
    await settle();
    for (const name of ["a3", "b2", "b3", "ca", "cb"]) assert.ok(sockets[name].socket.connected, name);
    for (const name of ["a1", "a2", "b1"]) assert.ok(!sockets[name].socket.connected, name);
  });
});

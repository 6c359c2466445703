// Transports: WebSocket only, HTTP long-polling only, and polling upgraded to
// WebSocket, each with the official client, against the conformance server
// (pingInterval 300 ms, pingTimeout 200 ms) and against the gateway binary.

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import { NodeWebSocket, NodeXHR } from "engine.io-client";
import {
  CONFORMANCE_BIN,
  Clients,
  GATEWAY_BIN,
  ack,
  connected,
  once,
  startNode,
  unique,
  until,
} from "../lib/harness.js";
import { RawClient } from "../lib/raw.js";

/**
 * A WebSocket transport whose opening waits for `open()`, so the test decides
 * when the upgrade probe starts and messages provably flow over polling first.
 */
function gatedWebSocket() {
  let open;
  const gate = new Promise((resolve) => (open = resolve));
  class GatedWebSocket extends NodeWebSocket {
    doOpen() {
      gate.then(() => {
        if (this.readyState === "opening") super.doOpen();
      });
    }
  }
  return { GatedWebSocket, open };
}

/** One `message` -> `message-back` round trip; returns the echoed arguments. */
async function echo(socket, ...args) {
  const back = once(socket, "message-back");
  socket.emit("message", ...args);
  return back;
}

describe("transports (conformance server)", { timeout: 60_000 }, () => {
  let node;
  const clients = new Clients();
  before(async () => {
    node = await startNode({ bin: CONFORMANCE_BIN });
  });
  afterEach(() => clients.closeAll());
  after(() => node?.stop());

  for (const transport of ["websocket", "polling"]) {
    test(`${transport} only: connect with auth, echo, heartbeat keeps the session`, async () => {
      const socket = clients.socket(node.url, { transports: [transport], auth: { user: "alice", n: 1 } });
      const auth = once(socket, "auth");
      await connected(socket);
      assert.equal(socket.io.engine.transport.name, transport);
      assert.deepEqual(await auth, [{ user: "alice", n: 1 }], "the server echoes the CONNECT auth object");

      assert.deepEqual(await echo(socket, 1, "two", { three: [3, null, true] }, null), [
        1,
        "two",
        { three: [3, null, true] },
        null,
      ]);

      // pingInterval is 300 ms: three pings answered means the heartbeat works
      // and the session outlives several pingInterval + pingTimeout periods.
      const sid = socket.io.engine.id;
      let pings = 0;
      socket.io.on("ping", () => pings++);
      await until(() => pings >= 3, { timeoutMs: 5_000, what: "3 heartbeats" });
      assert.ok(socket.connected, "still connected after 3 heartbeats");
      assert.equal(socket.io.engine.id, sid, "same Engine.IO session");
      assert.deepEqual(await echo(socket, "after-heartbeats"), ["after-heartbeats"]);
    });

    test(`${transport} only: 50 messages in a burst arrive complete and in order`, async () => {
      const socket = await clients.connect(node.url, { transports: [transport] });
      const got = [];
      socket.on("message-back", (i, text) => got.push([i, text]));
      const big = "é".repeat(50_000); // multi-byte UTF-8, 100 KB
      for (let i = 0; i < 50; i++) socket.emit("message", i, i % 10 === 0 ? big : `m${i}`);
      await until(() => got.length >= 50, { timeoutMs: 10_000, what: "50 echoes" });
      assert.deepEqual(
        got.map(([i]) => i),
        [...Array(50).keys()],
      );
      for (const [i, text] of got) assert.equal(text, i % 10 === 0 ? big : `m${i}`);
    });
  }

  test("polling upgrades to websocket; messages flow before and after", async () => {
    const { GatedWebSocket, open } = gatedWebSocket();
    const socket = clients.socket(node.url, { transports: [NodeXHR, GatedWebSocket] });
    await connected(socket);
    const engine = socket.io.engine;
    const sid = engine.id;
    assert.equal(engine.transport.name, "polling");
    assert.deepEqual(await echo(socket, "over polling", 1), ["over polling", 1]);
    assert.equal(engine.transport.name, "polling", "no upgrade before the probe is let through");

    const upgraded = once(engine, "upgrade", { timeoutMs: 5_000, rejectOn: "upgradeError" });
    open();
    await upgraded;
    assert.equal(engine.transport.name, "websocket");
    assert.equal(engine.id, sid, "the upgrade keeps the session id");
    assert.ok(socket.connected);
    assert.deepEqual(await echo(socket, "over websocket", 2), ["over websocket", 2]);

    let pings = 0;
    socket.io.on("ping", () => pings++);
    await until(() => pings >= 2, { timeoutMs: 5_000, what: "2 heartbeats after the upgrade" });
    assert.deepEqual(await echo(socket, "still there"), ["still there"]);
  });

  test("messages in flight both ways while the upgrade happens are neither lost nor reordered", async () => {
    const { GatedWebSocket, open } = gatedWebSocket();
    const socket = clients.socket(node.url, { transports: [NodeXHR, GatedWebSocket] });
    await connected(socket);
    const engine = socket.io.engine;
    const got = [];
    socket.on("message-back", (i) => got.push(i));
    const upgraded = once(engine, "upgrade", { timeoutMs: 10_000, rejectOn: "upgradeError" });
    const total = 300;
    for (let i = 0; i < total; i++) {
      if (i === 50) open();
      socket.emit("message", i);
      if (i % 5 === 4) await new Promise((r) => setTimeout(r, 1)); // spread over the upgrade
    }
    await upgraded;
    await until(() => got.length >= total, { timeoutMs: 10_000, what: () => `${total} echoes (got ${got.length})` });
    assert.deepEqual(got, [...Array(total).keys()]);
    assert.equal(engine.transport.name, "websocket");
  });

  test("multi-byte UTF-8 (accents, CJK, emoji) survives both transports", async () => {
    for (const transport of ["polling", "websocket"]) {
      const socket = await clients.connect(node.url, { transports: [transport] });
      const text = "é中文😀\u2028\u0000 \"quoted\" \\ back\nslash";
      const payload = { [text]: text, list: [text, "😀".repeat(1000)] };
      assert.deepEqual(await echo(socket, text, payload), [text, payload], transport);
    }
  });

  test("default options (polling then upgrade) end on websocket", async () => {
    const socket = await clients.connect(node.url);
    await until(() => socket.io.engine.transport.name === "websocket", {
      timeoutMs: 5_000,
      what: "the transport becomes websocket",
    });
    assert.deepEqual(await echo(socket, "hello"), ["hello"]);
  });
});

describe("transports (gateway binary, default config)", { timeout: 60_000 }, () => {
  let node;
  const clients = new Clients();
  before(async () => {
    node = await startNode({ bin: GATEWAY_BIN });
  });
  afterEach(() => clients.closeAll());
  after(() => node?.stop());

  for (const transports of [["websocket"], ["polling"], undefined]) {
    const label = transports ? `${transports[0]} only` : "polling with upgrade";
    test(`${label}: connect, $join ack, room delivery`, async () => {
      const a = await clients.connect(node.url, transports ? { transports } : {});
      const b = await clients.connect(node.url, transports ? { transports } : {});
      if (!transports) {
        await until(() => a.io.engine.transport.name === "websocket", { what: "a upgraded" });
      } else {
        assert.equal(a.io.engine.transport.name, transports[0]);
      }
      const room = unique("t");
      assert.deepEqual(await ack(a, "$join", room), { ok: true });
      assert.deepEqual(await ack(b, "$join", room), { ok: true });
      const got = once(a, "hello");
      assert.deepEqual(await ack(b, "$publish", room, "hello", { from: "b" }, [1, 2]), { ok: true });
      assert.deepEqual(await got, [{ from: "b" }, [1, 2]]);
    });
  }
});

describe("upgrade under load (gateway binary)", { timeout: 60_000 }, () => {
  let node;
  const clients = new Clients();
  before(async () => {
    node = await startNode({ bin: GATEWAY_BIN });
  });
  afterEach(() => clients.closeAll());
  after(() => node?.stop());

  test("room messages sent while a member upgrades all arrive, in order", async () => {
    const room = unique("upg");
    const { GatedWebSocket, open } = gatedWebSocket();
    const member = await clients.connect(node.url, { transports: [NodeXHR, GatedWebSocket] });
    const publisher = await clients.connect(node.url, { transports: ["websocket"] });
    assert.deepEqual(await ack(member, "$join", room), { ok: true });
    assert.deepEqual(await ack(publisher, "$join", room), { ok: true });
    const got = [];
    member.on("seq", (i) => got.push(i));
    const upgraded = once(member.io.engine, "upgrade", { timeoutMs: 10_000, rejectOn: "upgradeError" });
    const total = 300;
    for (let i = 0; i < total; i++) {
      if (i === 50) open();
      const reply = ack(publisher, "$publish", room, "seq", i);
      if (i % 5 === 4) assert.deepEqual(await reply, { ok: true });
    }
    await upgraded;
    await until(() => got.length >= total, { timeoutMs: 10_000, what: () => `${total} messages (got ${got.length})` });
    assert.deepEqual(got, [...Array(total).keys()]);
    assert.equal(member.io.engine.transport.name, "websocket");
  });

  test("many clients over both transports all get a room broadcast", async () => {
    const room = unique("many");
    const members = await Promise.all(
      [...Array(60).keys()].map((i) => clients.connect(node.url, { transports: [i % 2 ? "polling" : "websocket"] })),
    );
    for (const m of members) assert.deepEqual(await ack(m, "$join", room), { ok: true });
    const received = members.slice(1).map((m) => once(m, "hello", { timeoutMs: 10_000 }));
    assert.deepEqual(await ack(members[0], "$publish", room, "hello", "all"), { ok: true });
    for (const r of await Promise.all(received)) assert.deepEqual(r, ["all"]);
  });
});

describe("heartbeat and connect timeout (gateway binary, short timers)", { timeout: 60_000 }, () => {
  let node;
  let raw;
  const clients = new Clients();
  before(async () => {
    node = await startNode({
      bin: GATEWAY_BIN,
      config: `
[server]
ping_interval_ms = 300
ping_timeout_ms = 200
connect_timeout_ms = 500
`,
    });
  });
  afterEach(() => {
    clients.closeAll();
    raw?.close();
  });
  after(() => node?.stop());

  for (const transport of ["websocket", "polling"]) {
    test(`${transport}: the official client answers pings and keeps its session`, async () => {
      const socket = await clients.connect(node.url, { transports: [transport] });
      const sid = socket.io.engine.id;
      let pings = 0;
      socket.io.on("ping", () => pings++);
      await until(() => pings >= 4, { timeoutMs: 5_000, what: "4 heartbeats" });
      assert.ok(socket.connected);
      assert.equal(socket.io.engine.id, sid);
      assert.deepEqual(await ack(socket, "$join", unique("hb")), { ok: true });
    });
  }

  test("the open packet announces the configured timers", async () => {
    const { client, open } = await RawClient.connect(node.port);
    raw = client;
    assert.equal(open.pingInterval, 300);
    assert.equal(open.pingTimeout, 200);
    assert.equal(open.maxPayload, 1000000);
    assert.deepEqual(open.upgrades, []);
    assert.equal(typeof open.sid, "string");
  });

  test("a client that stops answering pings is closed", async () => {
    const { client } = await RawClient.connect(node.port, { autoPong: false });
    raw = client;
    client.send("40");
    assert.match(await client.next(), /^40\{"sid":"[^"]+"/);
    // pingInterval + pingTimeout = 500 ms; allow generous scheduling slack.
    await client.closed(5_000);
    assert.ok(client.log.includes("2"), "the server pinged before closing");
  });

  test("an Engine.IO connection that never sends CONNECT is closed after connect_timeout", async () => {
    const { client } = await RawClient.connect(node.port); // answers pings, never sends 40
    raw = client;
    await client.closed(5_000);
  });
});

describe("polling on the wire (raw HTTP, conformance server)", { timeout: 30_000 }, () => {
  let node;
  before(async () => {
    node = await startNode({ bin: CONFORMANCE_BIN });
  });
  after(() => node?.stop());

  const get = (query, headers = {}) =>
    fetch(`${node.url}/socket.io/?${query}`, { headers, signal: AbortSignal.timeout(5_000) });

  test("handshake: open packet as text/plain, CORS headers for a cross-origin request", async () => {
    const res = await get("EIO=4&transport=polling", { Origin: "http://app.example" });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^text\/plain/);
    const allowed = res.headers.get("access-control-allow-origin");
    assert.ok(allowed === "*" || allowed === "http://app.example", `access-control-allow-origin: ${allowed}`);
    const body = await res.text();
    assert.equal(body[0], "0");
    const open = JSON.parse(body.slice(1));
    assert.deepEqual(open.upgrades, ["websocket"]);
    assert.equal(open.pingInterval, 300);
    assert.equal(open.pingTimeout, 200);
    assert.equal(open.maxPayload, 1000000);
  });

  const errors = [
    ["an unknown session id", "EIO=4&transport=polling&sid=unknown", 1, "Session ID unknown"],
    ["an unknown transport", "EIO=4&transport=carrier-pigeon", 0, "Transport unknown"],
    ["protocol version 3", "EIO=3&transport=polling", 5, "Unsupported protocol version"],
  ];
  for (const [what, query, code, message] of errors) {
    test(`${what}: HTTP 400 {"code":${code},"message":"${message}"}`, async () => {
      const res = await get(query);
      assert.equal(res.status, 400);
      assert.deepEqual(await res.json(), { code, message });
    });
  }
});

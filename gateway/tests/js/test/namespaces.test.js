// Namespaces: several namespaces multiplexed over one Engine.IO connection,
// leaving one namespace (`41`) without closing the others, and an unknown
// namespace refused with CONNECT_ERROR "Invalid namespace" while the
// connection and its other namespaces keep working.

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import {
  CONFORMANCE_BIN,
  Clients,
  GATEWAY_BIN,
  ack,
  connectError,
  connected,
  once,
  startNode,
  unique,
  until,
} from "../lib/harness.js";
import { RawClient } from "../lib/raw.js";

async function echo(socket, ...args) {
  const back = once(socket, "message-back");
  socket.emit("message", ...args);
  return back;
}

for (const transport of ["websocket", "polling"]) {
  describe(`namespaces over ${transport} (conformance server)`, { timeout: 60_000 }, () => {
    let node;
    const clients = new Clients();
    before(async () => {
      node = await startNode({ bin: CONFORMANCE_BIN });
    });
    afterEach(() => clients.closeAll());
    after(() => node?.stop());

    test("/ and /custom share one Engine.IO connection", async () => {
      const manager = clients.manager(node.url, { transports: [transport] });
      const main = manager.socket("/");
      const custom = manager.socket("/custom", { auth: { ns: "custom" } });
      const mainAuth = once(main, "auth");
      const customAuth = once(custom, "auth");
      await Promise.all([connected(main), connected(custom)]);

      assert.equal(main.io, custom.io);
      assert.ok(manager.engine.id, "an Engine.IO session id");
      assert.notEqual(main.id, custom.id, "each namespace has its own socket id");
      assert.deepEqual(await mainAuth, [{}], "no auth given on / -> {}");
      assert.deepEqual(await customAuth, [{ ns: "custom" }], "each CONNECT carries its own auth");

      // No cross-talk: each namespace only gets its own echoes.
      const mainGot = [];
      const customGot = [];
      main.on("message-back", (v) => mainGot.push(v));
      custom.on("message-back", (v) => customGot.push(v));
      main.emit("message", "to-main");
      custom.emit("message", "to-custom");
      main.emit("message", "to-main-2");
      await until(() => mainGot.length >= 2 && customGot.length >= 1, { what: "echoes on both namespaces" });
      assert.deepEqual(mainGot, ["to-main", "to-main-2"]);
      assert.deepEqual(customGot, ["to-custom"]);
    });

    test("leaving /custom (41) keeps / and the connection open; /custom can connect again", async () => {
      const manager = clients.manager(node.url, { transports: [transport] });
      const main = manager.socket("/");
      const custom = manager.socket("/custom");
      await Promise.all([connected(main), connected(custom)]);
      const sid = manager.engine.id;

      const left = once(custom, "disconnect");
      custom.disconnect(); // sends 41/custom,
      assert.deepEqual(await left, ["io client disconnect", undefined]);

      assert.deepEqual(await echo(main, "main still works"), ["main still works"]);
      assert.ok(main.connected);
      assert.equal(manager.engine.id, sid, "same Engine.IO session");
      assert.equal(manager.engine.readyState, "open");

      // The server forgot /custom for this connection, so it accepts a new CONNECT.
      const auth = once(custom, "auth");
      custom.connect();
      await connected(custom);
      await auth;
      assert.equal(manager.engine.id, sid, "reconnected /custom over the same session");
      assert.deepEqual(await echo(custom, "custom again"), ["custom again"]);
      assert.deepEqual(await echo(main, "main too"), ["main too"]);
    });

    test("leaving / (41) keeps /custom working", async () => {
      const manager = clients.manager(node.url, { transports: [transport] });
      const main = manager.socket("/");
      const custom = manager.socket("/custom");
      await Promise.all([connected(main), connected(custom)]);
      const sid = manager.engine.id;
      main.disconnect();
      assert.deepEqual(await echo(custom, "custom alone"), ["custom alone"]);
      assert.equal(manager.engine.id, sid);
    });

    test('unknown namespace: connect_error "Invalid namespace", / keeps working', async () => {
      const manager = clients.manager(node.url, { transports: [transport] });
      const main = manager.socket("/");
      await connected(main);
      const sid = manager.engine.id;

      const bad = manager.socket("/does-not-exist");
      const err = await connectError(bad);
      assert.equal(err.message, "Invalid namespace");
      assert.equal(bad.connected, false);

      assert.ok(main.connected, "/ is still connected");
      assert.equal(manager.engine.id, sid, "the Engine.IO connection was kept");
      assert.deepEqual(await echo(main, "after refusal"), ["after refusal"]);
    });

    test("CONNECT to an unknown namespace sent first, then / on the same connection", async () => {
      // Both sockets are created before the connection opens, so the CONNECT for
      // /nope goes out first; / staying active keeps the client from closing
      // the connection itself when /nope is refused.
      const manager = clients.manager(node.url, { transports: [transport] });
      const bad = manager.socket("/nope");
      const main = manager.socket("/");
      const [err] = await Promise.all([connectError(bad), connected(main)]);
      assert.equal(err.message, "Invalid namespace");
      assert.deepEqual(await echo(main, "hi"), ["hi"]);
    });
  });
}

describe("namespaces (gateway binary, default config)", { timeout: 60_000 }, () => {
  let node;
  const clients = new Clients();
  before(async () => {
    node = await startNode({ bin: GATEWAY_BIN });
  });
  afterEach(() => clients.closeAll());
  after(() => node?.stop());

  for (const transport of ["websocket", "polling"]) {
    test(`${transport}: unknown namespace refused, / on the same connection works`, async () => {
      const manager = clients.manager(node.url, { transports: [transport] });
      const main = manager.socket("/");
      await connected(main);
      const sid = manager.engine.id;
      const err = await connectError(manager.socket("/custom"));
      assert.equal(err.message, "Invalid namespace");
      assert.ok(main.connected);
      assert.equal(manager.engine.id, sid);
      assert.deepEqual(await ack(main, "$join", unique("ns")), { ok: true });
    });
  }
});

describe("namespaces on the wire (raw WebSocket, conformance server)", { timeout: 30_000 }, () => {
  let node;
  let raw;
  before(async () => {
    node = await startNode({ bin: CONFORMANCE_BIN });
  });
  afterEach(() => raw?.close());
  after(() => node?.stop());

  test("open packet, 44 for an unknown namespace, then 40 on the same connection", async () => {
    const { client, open } = await RawClient.connect(node.port);
    raw = client;
    assert.equal(typeof open.sid, "string");
    assert.deepEqual(open.upgrades, [], "no upgrade offered on a websocket connection");
    assert.equal(open.pingInterval, 300);
    assert.equal(open.pingTimeout, 200);
    assert.equal(open.maxPayload, 1000000);

    client.send("40/nope,");
    assert.equal(await client.next(), '44/nope,{"message":"Invalid namespace"}');

    client.send('40{"token":"abc"}');
    const connect = await client.next();
    assert.match(connect, /^40\{"sid":"[^"]+"/);
    assert.equal(await client.next(), '42["auth",{"token":"abc"}]');

    client.send('42["message",1,"a"]');
    assert.equal(await client.next(), '42["message-back",1,"a"]');
    assert.equal(client.closeInfo, null, "the connection is still open");
  });
});

describe("namespace patterns (gateway binary, \"/\" and \"/tenant-*\")", { timeout: 60_000 }, () => {
  let node;
  const clients = new Clients();
  before(async () => {
    node = await startNode({
      bin: GATEWAY_BIN,
      config: `
[[namespaces]]
name = "/"
join = ["*"]
publish = true

[[namespaces]]
name = "/tenant-*"
join = ["*"]
publish = true
`,
    });
  });
  afterEach(() => clients.closeAll());
  after(() => node?.stop());

  test("/, /tenant-a and /tenant-b over one connection; rooms are per namespace", async () => {
    const manager = clients.manager(node.url, { transports: ["websocket"] });
    const main = manager.socket("/");
    const a1 = manager.socket("/tenant-a");
    const b1 = manager.socket("/tenant-b");
    await Promise.all([connected(main), connected(a1), connected(b1)]);
    assert.equal(a1.io, b1.io);
    const other = clients.manager(node.url, { transports: ["polling"] });
    const a2 = other.socket("/tenant-a");
    const b2 = other.socket("/tenant-b");
    await Promise.all([connected(a2), connected(b2)]);

    const room = unique("shared-name");
    for (const s of [main, a1, b1, a2, b2]) assert.deepEqual(await ack(s, "$join", room), { ok: true });
    const atMain = [];
    const atB1 = [];
    main.on("news", (v) => atMain.push(v));
    b1.on("news", (v) => atB1.push(v));

    const atA1 = once(a1, "news");
    assert.deepEqual(await ack(a2, "$publish", room, "news", "tenant-a only"), { ok: true });
    assert.deepEqual(await atA1, ["tenant-a only"]);

    // Barriers: later messages in /tenant-b and / reach b1 and main.
    const markB = once(b1, "mark");
    assert.deepEqual(await ack(b2, "$publish", room, "mark"), { ok: true });
    await markB;
    const markMain = once(main, "mark");
    const peer = await clients.connect(node.url, { transports: ["websocket"] });
    assert.deepEqual(await ack(peer, "$join", room), { ok: true });
    assert.deepEqual(await ack(peer, "$publish", room, "mark"), { ok: true });
    await markMain;
    assert.deepEqual(atB1, [], "a room of /tenant-a is not the same-named room of /tenant-b");
    assert.deepEqual(atMain, [], "nor the same-named room of /");
  });

  test("a namespace matching no pattern is refused", async () => {
    const manager = clients.manager(node.url, { transports: ["websocket"] });
    const main = manager.socket("/");
    await connected(main);
    for (const nsp of ["/tenant", "/other", "/tenantx"]) {
      const err = await connectError(manager.socket(nsp));
      assert.equal(err.message, "Invalid namespace", nsp);
    }
    assert.ok(main.connected);
  });
});

// The Socket.IO Admin UI (`@socket.io/admin-ui` 0.5) against a two-node
// cluster over a real Redis server: the gateway serves the UI's namespace
// (`[admin_ui]`), the UI pointed at one node shows both nodes and the
// sockets of both, and its actions reach sockets of either node.
//
// 1. The protocol, with the official client as the UI uses it: login with
//    user name and password (bcrypt hash in the configuration), `session`,
//    `config`, `all_sockets` of both nodes, `server_stats` of both node ids,
//    live `socket_connected` / `room_joined` / `socket_disconnected` from the
//    other node, a session id accepted by the other node, a wrong password
//    refused, and `_disconnect` / `join` of a socket on the other node.
// 2. The real UI: its built files (from the npm package, served by the
//    node's ops listener at /admin-ui/) in headless Chromium
//    (playwright-core): logged in, the Sockets page lists the sockets of
//    both nodes, the Servers page both node ids, and the disconnect button
//    of a socket on the other node disconnects it. A screenshot is saved
//    under target/artifacts/ (ARTIFACTS_DIR), outside git.
//
// Needs `redis-server` and Chromium (/usr/bin/chromium or CHROMIUM_BIN);
// skipped without them, unless GATEWAY_TESTS_REQUIRE_ALL=1.

import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import bcrypt from "bcryptjs";
import { io as ioClient } from "socket.io-client";
import { Cluster, REQUIRE_ALL, freeServerPort, skipWithoutRedis, startRedis } from "../lib/cluster.js";
import { Clients, ack, connectError, connected, once, until } from "../lib/harness.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const UI_DIST = path.join(path.dirname(require.resolve("@socket.io/admin-ui/package.json")), "ui", "dist");
const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const ARTIFACTS = process.env.ARTIFACTS_DIR ?? path.resolve(here, "../../../../target/artifacts");

const SKIP = skipWithoutRedis();
const SKIP_BROWSER =
  SKIP ||
  (existsSync(CHROMIUM)
    ? false
    : process.env[REQUIRE_ALL] === "1"
      ? false // the test fails and says why
      : `${CHROMIUM} not found (install Debian's chromium)`);

const PASSWORD = "correct horse battery staple";

describe("the Socket.IO Admin UI against a two-node cluster", { skip: SKIP, timeout: 180_000 }, () => {
  let redis;
  let cluster;
  let nodeA;
  let nodeB;
  const opsPorts = [];
  const clients = new Clients();
  const saved = {};
  /** name -> connected socket of "/" */
  const sockets = {};

  const setEnv = (key, value) => {
    if (!(key in saved)) saved[key] = process.env[key];
    process.env[key] = value;
  };

  const login = (node, auth, opts = {}) =>
    ioClient(`${node.url}/admin`, { forceNew: true, reconnection: false, auth, transports: ["websocket"], ...opts });

  before(async () => {
    redis = await startRedis();
    opsPorts.push(await freeServerPort(), await freeServerPort());
    const hash = bcrypt.hashSync(PASSWORD, 4);
    const config = `
[server]
cors_origins = [${opsPorts.map((p) => `"http://127.0.0.1:${p}"`).join(", ")}]

[[namespaces]]
name = "/"
join = ["*"]

[admin_ui]
enabled = true
username = "admin"
password_hash = "${hash}"
stats_interval_ms = 500
static_dir = "${UI_DIST}"
`;
    cluster = new Cluster({ redisUrl: redis.url, config });
    setEnv("GATEWAY_OPS__LISTEN", `127.0.0.1:${opsPorts[0]}`);
    nodeA = await cluster.start();
    setEnv("GATEWAY_OPS__LISTEN", `127.0.0.1:${opsPorts[1]}`);
    nodeB = await cluster.start();
    await cluster.settled(2);
    for (const [name, node] of [
      ["a1", nodeA],
      ["a2", nodeA],
      ["b1", nodeB],
      ["b2", nodeB],
      ["b3", nodeB],
    ]) {
      sockets[name] = await clients.connect(node.url, { query: { who: name } });
    }
    assert.deepEqual(await ack(sockets.a1, "$join", "lobby"), { ok: true });
    assert.deepEqual(await ack(sockets.b1, "$join", "lobby"), { ok: true });
  });

  after(async () => {
    clients.closeAll();
    await cluster?.stop();
    await redis?.stop();
    for (const [key, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  });

  test("a wrong password is refused with the UI's message", async () => {
    const ui = login(nodeA, { username: "admin", password: "wrong" });
    try {
      const err = await connectError(ui);
      assert.equal(err.message, "invalid credentials");
      const other = login(nodeA, { username: "root", password: PASSWORD });
      assert.equal((await connectError(other)).message, "invalid credentials");
      other.close();
      const forged = login(nodeA, { sessionId: "4102444800.abc.def" });
      assert.equal((await connectError(forged)).message, "invalid credentials");
      forged.close();
    } finally {
      ui.close();
    }
  });

  test("the UI's protocol: both nodes' sockets and statistics, live events, actions on the other node", async () => {
    const ui = login(nodeA, { username: "admin", password: PASSWORD });
    const session = once(ui, "session");
    const config = once(ui, "config");
    const all = once(ui, "all_sockets");
    const servers = new Map();
    ui.on("server_stats", (stats) => servers.set(stats.serverId, stats));
    const events = [];
    for (const name of ["socket_connected", "socket_disconnected", "room_joined", "room_left", "socket_updated"]) {
      ui.on(name, (...args) => events.push([name, ...args]));
    }
    try {
      await connected(ui);
      const [sessionId] = await session;
      assert.match(sessionId, /^\d+\.[\w-]+\.[\w-]+$/);
      const [{ supportedFeatures }] = await config;
      for (const f of ["EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT", "AGGREGATED_EVENTS", "ALL_EVENTS"]) {
        assert.ok(supportedFeatures.includes(f), f);
      }
      const [list] = await all;
      const ids = Object.fromEntries(Object.entries(sockets).map(([name, s]) => [s.id, name]));
      const listed = list.filter((s) => s.nsp === "/");
      assert.deepEqual(listed.map((s) => ids[s.id]).sort(), ["a1", "a2", "b1", "b2", "b3"]);
      const b1 = listed.find((s) => s.id === sockets.b1.id);
      assert.deepEqual(b1.rooms.sort(), [sockets.b1.id, "lobby"].sort());
      assert.equal(b1.transport, "websocket");
      assert.equal(b1.handshake.query.who, "b1");
      assert.equal(b1.handshake.address, "127.0.0.1");
      assert.equal(typeof b1.handshake.issued, "number");
      assert.ok(b1.handshake.headers.host, "headers are listed");
      assert.equal(typeof b1.clientId, "string");
      // The admin socket itself is listed under its namespace.
      assert.ok(list.some((s) => s.nsp === "/admin" && s.id === ui.id));

      await until(() => servers.has(nodeA.nodeId) && servers.has(nodeB.nodeId), {
        timeoutMs: 10_000,
        what: "server_stats of both nodes",
      });
      const statsB = servers.get(nodeB.nodeId);
      assert.equal(statsB.namespaces.find((n) => n.name === "/").socketsCount, 3);
      assert.ok(statsB.clientsCount >= 3);
      assert.equal(typeof statsB.uptime, "number");
      // Traffic counted between two reports shows up as aggregated events.
      await until(
        () => [...servers.values()].some((s) => s.aggregatedEvents.some((e) => e.type === "packetsOut" && e.count > 0)),
        { timeoutMs: 10_000, what: "aggregated events" },
      );

      // Live events from the other node.
      const late = await clients.connect(nodeB.url, { query: { who: "late" } });
      const lateId = late.id; // the client forgets it once disconnected
      await until(() => events.some(([e, s]) => e === "socket_connected" && s.id === lateId), {
        what: "socket_connected from node B",
      });
      assert.deepEqual(await ack(late, "$join", "late-room"), { ok: true });
      await until(() => events.some(([e, nsp, room, id]) => e === "room_joined" && nsp === "/" && room === "late-room" && id === lateId), {
        what: "room_joined from node B",
      });
      late.close();
      await until(() => events.some(([e, nsp, id]) => e === "socket_disconnected" && nsp === "/" && id === lateId), {
        what: "socket_disconnected from node B",
      });
      assert.ok(events.some(([e, nsp, room, id]) => e === "room_left" && room === "late-room" && id === lateId));

      // Actions on a socket of the other node.
      ui.emit("join", "/", "joined-by-ui", sockets.b2.id);
      await until(() => events.some(([e, , room, id]) => e === "room_joined" && room === "joined-by-ui" && id === sockets.b2.id), {
        what: "the UI's join applied on node B",
      });
      const gone = once(sockets.b3, "disconnect", { timeoutMs: 10_000 });
      ui.emit("_disconnect", "/", false, sockets.b3.id);
      assert.equal((await gone)[0], "io server disconnect");
      assert.ok(sockets.a1.connected && sockets.b1.connected && sockets.b2.connected);
      const got = once(sockets.a1, "from-ui");
      ui.emit("emit", "/", "lobby", "from-ui", { n: 1 });
      assert.deepEqual(await got, [{ n: 1 }]);

      // The session id logs in on the other node without the password.
      const again = login(nodeB, { sessionId });
      await connected(again);
      again.close();
    } finally {
      ui.close();
    }
  });

  test("the real UI in Chromium shows both nodes and disconnects a socket of the other node", { skip: SKIP_BROWSER }, async () => {
    const { chromium } = await import("playwright-core");
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
    try {
      const page = await browser.newPage({ locale: "en-US", viewport: { width: 1400, height: 1000 } });
      // The page asks for web fonts from CDNs: nothing beyond loopback.
      await page.route(/^https?:\/\/(?!127\.0\.0\.1)/, (route) => route.abort());
      const origin = `http://127.0.0.1:${opsPorts[0]}`;
      await page.goto(`${origin}/admin-ui/`, { waitUntil: "domcontentloaded" });
      await page.getByLabel("Server URL").fill(nodeA.url);
      await page.getByLabel("Username").fill("admin");
      await page.getByLabel("Password").fill(PASSWORD);
      await page.getByRole("button", { name: "Connect" }).click();

      await page.goto(`${origin}/admin-ui/#/servers/`);
      for (const node of [nodeA, nodeB]) {
        await page.getByText(node.nodeId, { exact: true }).first().waitFor({ timeout: 15_000 });
      }
      await page.goto(`${origin}/admin-ui/#/sockets/`);
      const target = sockets.b2;
      const targetId = target.id; // the client forgets it once disconnected
      for (const name of ["a1", "a2", "b1", "b2"]) {
        await page.getByText(sockets[name].id, { exact: true }).waitFor({ timeout: 15_000 });
      }
      mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: path.join(ARTIFACTS, "admin-ui-sockets.png"), fullPage: true });

      const gone = once(target, "disconnect", { timeoutMs: 15_000 });
      await page.locator("tr", { hasText: targetId }).getByRole("button").click();
      assert.equal((await gone)[0], "io server disconnect");
      // Gone from the list (the click also opened the socket's page).
      await page.goto(`${origin}/admin-ui/#/sockets/`);
      await page.getByText(sockets.a1.id, { exact: true }).waitFor({ timeout: 15_000 });
      await until(async () => (await page.locator("tr", { hasText: targetId }).count()) === 0, {
        timeoutMs: 15_000,
        what: "the disconnected socket's row is gone",
      });
      assert.ok(sockets.a1.connected && sockets.b1.connected);
    } finally {
      await browser.close();
    }
  });
});

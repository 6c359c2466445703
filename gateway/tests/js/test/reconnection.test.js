// Automatic reconnection: the gateway process is killed (SIGKILL, no goodbye)
// and started again on the same port; the official client reconnects by
// itself, and an emit buffered while it was disconnected is sent and
// acknowledged after the reconnection.

import assert from "node:assert/strict";
import { after, afterEach, describe, test } from "node:test";
import { Clients, GATEWAY_BIN, ack, connected, once, startNode, unique, until, withTimeout } from "../lib/harness.js";

/** Starts the gateway on `port` again, retrying while the port is still being released. */
async function restartOn(port) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      return await startNode({ bin: GATEWAY_BIN, listen: `127.0.0.1:${port}` });
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

describe("reconnection after the node restarts", { timeout: 90_000 }, () => {
  const nodes = [];
  const clients = new Clients();
  afterEach(async () => {
    clients.closeAll();
    await Promise.all(nodes.splice(0).map((n) => n.stop()));
  });
  after(() => Promise.all(nodes.map((n) => n.stop())));

  for (const transports of [["websocket"], ["polling"], ["polling", "websocket"]]) {
    test(`transports ${JSON.stringify(transports)}: reconnects and flushes the buffered emit`, async () => {
      const first = await startNode({ bin: GATEWAY_BIN });
      nodes.push(first);
      const client = clients.socket(first.url, {
        transports,
        reconnection: true,
        reconnectionDelay: 100,
        reconnectionDelayMax: 200,
        randomizationFactor: 0,
        timeout: 2_000,
      });
      await connected(client);
      if (transports.length === 2) {
        // Kill the node after the upgrade, so the WebSocket is what breaks.
        await until(() => client.io.engine.transport.name === "websocket", { what: "the upgrade to websocket" });
      }
      const firstId = client.id;
      assert.deepEqual(await ack(client, "$join", unique("before")), { ok: true });

      const disconnected = once(client, "disconnect", { timeoutMs: 10_000 });
      await first.kill();
      const [reason] = await disconnected;
      assert.match(reason, /transport (close|error)|ping timeout/, `disconnect reason: ${reason}`);
      assert.equal(client.connected, false);

      // Emitted while disconnected: buffered by the client, sent on reconnection.
      const room = unique("r");
      const buffered = withTimeout(client.emitWithAck("$join", room), 20_000, "the buffered $join is acknowledged");
      let attempts = 0;
      client.io.on("reconnect", (n) => (attempts = n));
      const reconnected = once(client, "connect", { timeoutMs: 20_000 });

      const second = await restartOn(first.port);
      nodes.push(second);
      await reconnected;
      assert.ok(attempts >= 1, "reconnected through the Manager's own retry loop");
      assert.ok(client.connected);
      assert.notEqual(client.id, firstId, "a new session on the new process");
      assert.deepEqual(await buffered, { ok: true });

      // The buffered $join really put the socket in the room.
      const peer = await clients.connect(second.url, { transports: ["websocket"] });
      assert.deepEqual(await ack(peer, "$join", room), { ok: true });
      const got = once(client, "after-restart");
      assert.deepEqual(await ack(peer, "$publish", room, "after-restart", "hi"), { ok: true });
      assert.deepEqual(await got, ["hi"]);
    });
  }
});

describe("graceful shutdown (SIGTERM)", { timeout: 90_000 }, () => {
  const nodes = [];
  const clients = new Clients();
  afterEach(async () => {
    clients.closeAll();
    await Promise.all(nodes.splice(0).map((n) => n.stop()));
  });

  for (const transport of ["websocket", "polling"]) {
    test(`${transport}: the client is told to reconnect, not to stay away, and does`, async () => {
      const first = await startNode({ bin: GATEWAY_BIN });
      nodes.push(first);
      const client = clients.socket(first.url, {
        transports: [transport],
        reconnection: true,
        reconnectionDelay: 100,
        reconnectionDelayMax: 200,
        randomizationFactor: 0,
        timeout: 2_000,
      });
      await connected(client);

      const disconnected = once(client, "disconnect", { timeoutMs: 15_000 });
      first.proc.kill("SIGTERM");
      const [reason] = await disconnected;
      // "io server disconnect" (a Socket.IO DISCONNECT) would stop the client's
      // reconnection: a draining node must close the transport instead.
      assert.notEqual(reason, "io server disconnect", "a DISCONNECT packet stops automatic reconnection");
      const status = await withTimeout(first.exited, 15_000, "the node exits after SIGTERM");
      assert.equal(status.code, 0, `exit status ${JSON.stringify(status)}`);

      const reconnected = once(client, "connect", { timeoutMs: 20_000 });
      nodes.push(await restartOn(first.port));
      await reconnected;
      assert.deepEqual(await ack(client, "$join", unique("back")), { ok: true });
    });
  }
});

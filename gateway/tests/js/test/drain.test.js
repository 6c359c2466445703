// Graceful drain with the official client: two gateway processes, a client
// on node A whose reconnection goes to node B (as a load balancer would send
// it once A is out of rotation). SIGTERM to A: A's /readyz answers 503 at
// once, the client is disconnected with a reason that makes it reconnect
// ("transport close", not "io server disconnect"), it reconnects to B and
// works there, and A exits within its grace period.
//
// The ops port is on 127.0.0.1:0 (GATEWAY_OPS__LISTEN); the binary prints
// `gateway ops listening on <addr>` after its client listening line.

import assert from "node:assert/strict";
import { after, afterEach, describe, test } from "node:test";
import { Clients, GATEWAY_BIN, ack, connected, once, startNode, unique, until, withTimeout } from "../lib/harness.js";

process.env.GATEWAY_OPS__LISTEN = "127.0.0.1:0";

const OPS_LINE = /^gateway ops listening on (\S+)\s*$/m;
const GRACE_MS = 5_000;
const DRAIN_DELAY_MS = 1_000;
const CONFIG = `
[shutdown]
grace_period_ms = ${GRACE_MS}
drain_delay_ms = ${DRAIN_DELAY_MS}
`;

/** The ops base URL of a node started by the harness (from its stdout). */
async function opsUrl(node) {
  const m = await until(() => OPS_LINE.exec(node.logs()), { what: "the ops listening line" });
  const addr = m[1];
  return `http://127.0.0.1:${addr.slice(addr.lastIndexOf(":") + 1)}`;
}

/** Status of GET url, or null when the connection fails. */
async function status(url) {
  try {
    const res = await fetch(url);
    await res.text();
    return res.status;
  } catch {
    return null;
  }
}

describe("graceful drain", { timeout: 60_000 }, () => {
  const nodes = [];
  const clients = new Clients();
  afterEach(async () => {
    clients.closeAll();
    await Promise.all(nodes.splice(0).map((n) => n.stop()));
  });
  after(() => Promise.all(nodes.map((n) => n.stop())));

  for (const transports of [["websocket"], ["polling"]]) {
    test(`transports ${JSON.stringify(transports)}: SIGTERM moves the client to the other node`, async () => {
      const a = await startNode({ bin: GATEWAY_BIN, config: CONFIG });
      nodes.push(a);
      const b = await startNode({ bin: GATEWAY_BIN, config: CONFIG });
      nodes.push(b);
      const opsA = await opsUrl(a);
      assert.equal(await status(`${opsA}/readyz`), 200);
      assert.equal(await status(`${opsA}/healthz`), 200);

      const client = clients.socket(a.url, {
        transports,
        reconnection: true,
        reconnectionDelay: 100,
        reconnectionDelayMax: 200,
        randomizationFactor: 0,
        timeout: 2_000,
      });
      // The load balancer's part: once A is out of rotation, new
      // connections reach B.
      client.io.on("reconnect_attempt", () => {
        client.io.uri = b.url;
      });
      await connected(client);
      const firstId = client.id;

      const disconnected = once(client, "disconnect", { timeoutMs: 10_000 });
      let attempts = 0;
      client.io.on("reconnect", (n) => (attempts = n));
      const reconnected = once(client, "connect", { timeoutMs: 15_000 });
      const sigterm = Date.now();
      a.proc.kill("SIGTERM");

      // Not ready at once (within the drain delay), still live.
      await until(async () => (await status(`${opsA}/readyz`)) === 503, {
        timeoutMs: DRAIN_DELAY_MS,
        what: "A's /readyz answers 503",
      });
      assert.equal(await status(`${opsA}/healthz`), 200);
      const metrics = await (await fetch(`${opsA}/metrics`)).text();
      assert.match(metrics, /^gateway_draining 1$/m);

      const [reason] = await disconnected;
      assert.match(reason, /^transport (close|error)$/, `disconnect reason: ${reason}`);
      await reconnected;
      assert.ok(client.connected);
      assert.ok(attempts >= 1, "reconnected through the Manager's own retry loop");
      assert.notEqual(client.id, firstId);
      assert.equal(client.io.uri, b.url);

      // The client works on B: a peer on B reaches it through a room.
      const room = unique("drained");
      assert.deepEqual(await ack(client, "$join", room), { ok: true });
      const peer = await clients.connect(b.url, { transports: ["websocket"] });
      assert.deepEqual(await ack(peer, "$join", room), { ok: true });
      const got = once(client, "after-drain");
      assert.deepEqual(await ack(peer, "$publish", room, "after-drain", "hi"), { ok: true });
      assert.deepEqual(await got, ["hi"]);

      // A exits by itself, cleanly, within drain delay + grace period.
      const exit = await withTimeout(a.exited, DRAIN_DELAY_MS + GRACE_MS + 2_000, "node A exits");
      assert.equal(exit.code, 0, `exit: ${JSON.stringify(exit)}\n${a.logs()}`);
      assert.ok(Date.now() - sigterm < DRAIN_DELAY_MS + GRACE_MS, "A exited within the grace period");
      assert.equal(await status(`${opsA}/healthz`), null, "A's ops port is closed");
    });
  }
});

// Connection state recovery with the official client: its transport is
// closed, messages are published while it is away, and on reconnection it
// is recovered (`socket.recovered`), keeps its id and receives exactly the
// missed messages, in order, each with its offset as a last argument (the
// official client passes it to listeners).

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import { Clients, GATEWAY_BIN, ack, once, record, startNode, unique } from "../lib/harness.js";

const CONFIG = `
[[namespaces]]
name = "/"
join = ["*"]
publish = true
[namespaces.recovery]
enabled = true
max_disconnection_ms = 30000
`;

describe("connection state recovery (official client)", { timeout: 60_000 }, () => {
  let node;
  const clients = new Clients();
  before(async () => {
    node = await startNode({ bin: GATEWAY_BIN, config: CONFIG });
  });
  afterEach(() => clients.closeAll());
  after(() => node?.stop());

  for (const transports of [["websocket"], ["polling"]]) {
    test(`transports ${JSON.stringify(transports)}: recovered with the same id and the missed messages`, async () => {
      const room = unique("room");
      const client = await clients.connect(node.url, {
        transports,
        reconnection: true,
        // Long enough for the publishes below to happen while it is away.
        reconnectionDelay: 1_000,
        reconnectionDelayMax: 1_000,
        randomizationFactor: 0,
      });
      const publisher = await clients.connect(node.url, { transports: ["websocket"] });
      assert.equal(client.recovered, false, "a first connection is not a recovery");
      assert.deepEqual(await ack(client, "$join", room), { ok: true });
      assert.deepEqual(await ack(publisher, "$join", room), { ok: true });
      const messages = record(client, "msg");

      const first = once(client, "msg");
      assert.deepEqual(await ack(publisher, "$publish", room, "msg", "m0"), { ok: true });
      const [m0, offset0] = await first;
      assert.equal(m0, "m0");
      assert.equal(typeof offset0, "string", "the offset is the last argument");

      const id = client.id;
      const gone = once(client, "disconnect", { timeoutMs: 5_000 });
      client.io.engine.close();
      await gone;
      for (const m of ["m1", "m2", "m3"]) {
        assert.deepEqual(await ack(publisher, "$publish", room, "msg", m), { ok: true });
      }

      await once(client, "connect", { timeoutMs: 10_000 });
      assert.equal(client.recovered, true, "recovered");
      assert.equal(client.id, id, "the same socket id");
      await messages.atLeast(4);
      assert.deepEqual(
        messages.items.map(([m]) => m),
        ["m0", "m1", "m2", "m3"],
      );
      for (const args of messages.items) {
        assert.equal(args.length, 2);
        assert.equal(typeof args[1], "string", `offset of ${args[0]}`);
      }
      // Still in its room: live messages follow.
      assert.deepEqual(await ack(publisher, "$publish", room, "msg", "m4"), { ok: true });
      await messages.atLeast(5);
      assert.equal(messages.items[4][0], "m4");
    });
  }

  test("a client that never received an event is not recovered (it sends no offset)", async () => {
    const client = await clients.connect(node.url, {
      transports: ["websocket"],
      reconnection: true,
      reconnectionDelay: 100,
      randomizationFactor: 0,
    });
    const id = client.id;
    const gone = once(client, "disconnect");
    client.io.engine.close();
    await gone;
    await once(client, "connect", { timeoutMs: 10_000 });
    assert.equal(client.recovered, false);
    assert.notEqual(client.id, id);
  });
});

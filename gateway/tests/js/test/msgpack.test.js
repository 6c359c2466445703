// The msgpack parser: the official socket.io-client with the real
// `socket.io-msgpack-parser` (one msgpack map per packet, binary values in
// place) against the gateway binary with `server.parser = "msgpack"`, over
// WebSocket and long-polling: connect, acks both ways, binary, rooms, and
// admin emits with attachments (the admin API keeps its JSON form).

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import parser from "socket.io-msgpack-parser";
import { AdminClient } from "../lib/cluster.js";
import { Clients, GATEWAY_BIN, ack, once, record, startNode, unique, until } from "../lib/harness.js";

const CONFIG = `
[server]
parser = "msgpack"
`;

describe("msgpack parser (gateway binary)", { timeout: 60_000 }, () => {
  let node;
  let admin;
  const clients = new Clients();
  before(async () => {
    node = await startNode({ bin: GATEWAY_BIN, config: CONFIG });
    const m = await until(() => /^gateway admin listening on (\S+)\s*$/m.exec(node.logs()), {
      what: "the admin listening line",
    });
    admin = new AdminClient(m[1]);
  });
  afterEach(() => clients.closeAll());
  after(async () => {
    admin?.close();
    await node?.stop();
  });

  const connect = (transports) => clients.connect(node.url, { parser, transports });

  test("connects on both transports, and acks go both ways", async () => {
    for (const transports of [["websocket"], ["polling"]]) {
      const s = await connect(transports);
      assert.equal(typeof s.id, "string");
      // Client -> server ack: the node answers `$join`.
      const room = unique("mp-ack");
      assert.deepEqual(await ack(s, "$join", room), { ok: true });
      // Server -> client ack: an admin EmitWithAck, answered by the client.
      s.on("question", (n, reply) => reply({ answer: n * 2, transport: transports[0] }));
      const res = await admin.call("EmitWithAck", {
        target: { namespace: "/", socket_ids: [s.id] },
        event: "question",
        payload: { json_args: "[21]", attachments: [] },
        timeout_ms: 3_000,
      });
      assert.equal(res.acks.length, 1, JSON.stringify(res));
      assert.deepEqual(JSON.parse(res.acks[0].payload.json_args), [{ answer: 42, transport: transports[0] }]);
    }
  });

  test("rooms and binary: $publish with a Buffer reaches the room's other members", async () => {
    const room = unique("mp-room");
    const a = await connect(["websocket"]);
    const b = await connect(["websocket"]);
    const c = await connect(["polling"]);
    const outsider = await connect(["websocket"]);
    for (const s of [a, b, c]) assert.deepEqual(await ack(s, "$join", room), { ok: true });
    const atB = record(b, "blob");
    const atC = record(c, "blob");
    const atOutsider = record(outsider, "blob");
    const bytes = Buffer.from([0, 1, 2, 250, 255]);
    assert.deepEqual(await ack(a, "$publish", room, "blob", { label: "x", bytes }, 7), { ok: true });
    await atB.atLeast(1);
    await atC.atLeast(1);
    for (const got of [atB.items[0], atC.items[0]]) {
      assert.equal(got[0].label, "x");
      assert.ok(Buffer.isBuffer(got[0].bytes), "binary stays binary");
      assert.deepEqual([...got[0].bytes], [...bytes]);
      assert.equal(got[1], 7);
    }
    // Leaving: the next publish no longer reaches c; b is the barrier.
    assert.deepEqual(await ack(c, "$leave", room), { ok: true });
    assert.deepEqual(await ack(a, "$publish", room, "blob", "again"), { ok: true });
    await atB.atLeast(2);
    assert.equal(atC.items.length, 1);
    assert.equal(atOutsider.items.length, 0);
  });

  test("admin emits with attachments arrive as binary values", async () => {
    const room = unique("mp-admin");
    const s = await connect(["websocket"]);
    const p = await connect(["polling"]);
    for (const c of [s, p]) assert.deepEqual(await ack(c, "$join", room), { ok: true });
    const atS = once(s, "file");
    const atP = once(p, "file");
    await admin.call("Emit", {
      target: { namespace: "/", rooms: [room] },
      event: "file",
      payload: {
        json_args: '[{"name":"a.bin","data":{"_placeholder":true,"num":0}},{"_placeholder":true,"num":1}]',
        attachments: [Buffer.from([1, 2, 3]), Buffer.from("second")],
      },
    });
    for (const [meta, second] of [await atS, await atP]) {
      assert.equal(meta.name, "a.bin");
      assert.ok(Buffer.isBuffer(meta.data));
      assert.deepEqual([...meta.data], [1, 2, 3]);
      assert.equal(Buffer.from(second).toString(), "second");
    }
  });
});

// permessage-deflate with the official socket.io-client (its Node `ws`
// transport offers the extension by default, threshold 1024 bytes) against
// the gateway binary with `[server.compression]` on: large and small
// messages both ways through `$publish` and admin emits, and a client that
// does not offer the extension (and one on long-polling) getting the same
// broadcasts uncompressed.

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import { AdminClient } from "../lib/cluster.js";
import { Clients, GATEWAY_BIN, ack, record, startNode, unique, until } from "../lib/harness.js";

const CONFIG = `
[server.compression]
enabled = true
[ops]
listen = "127.0.0.1:0"
`;

/** A JSON-friendly value of about `n` bytes, compressible like real text. */
function bulky(n) {
  const words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
  const items = [];
  for (let i = 0, size = 0; size < n; i += 1) {
    const item = { id: i, word: words[i % words.length], note: `item ${i} of the list` };
    items.push(item);
    size += JSON.stringify(item).length + 1;
  }
  return { items };
}

/** The value of the series `name` (no labels) in the node's /metrics. */
async function metric(opsAddr, name) {
  const text = await (await fetch(`http://${opsAddr}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line === undefined ? 0 : Number(line.split(" ")[1]);
}

/** The extensions the client's WebSocket negotiated ("" for none). */
function extensions(socket) {
  return socket.io.engine.transport.ws?.extensions ?? "";
}

describe("permessage-deflate (gateway binary, compression on)", { timeout: 60_000 }, () => {
  let node;
  let admin;
  let opsAddr;
  const clients = new Clients();
  before(async () => {
    node = await startNode({ bin: GATEWAY_BIN, config: CONFIG });
    const line = (re) => until(() => re.exec(node.logs()), { what: `${re}` });
    admin = new AdminClient((await line(/^gateway admin listening on (\S+)\s*$/m))[1]);
    opsAddr = (await line(/^gateway ops listening on (\S+)\s*$/m))[1];
  });
  afterEach(() => clients.closeAll());
  after(async () => {
    admin?.close();
    await node?.stop();
  });

  /** One client with the extension, one WebSocket without, one polling; all in `room`. */
  async function trio(room) {
    const deflating = await clients.connect(node.url, { transports: ["websocket"] });
    const plain = await clients.connect(node.url, { transports: ["websocket"], perMessageDeflate: false });
    const polling = await clients.connect(node.url, { transports: ["polling"] });
    assert.equal(extensions(deflating), "permessage-deflate");
    assert.equal(extensions(plain), "");
    for (const s of [deflating, plain, polling]) assert.deepEqual(await ack(s, "$join", room), { ok: true });
    return [deflating, plain, polling];
  }

  test("large and small messages go both ways; one broadcast is compressed only for the client that negotiated", async () => {
    const room = unique("deflate");
    const [deflating, plain, polling] = await trio(room);
    const at = [deflating, plain, polling].map((s) => record(s, "news"));
    const large = bulky(20_000);
    const small = { brief: true };

    // From the deflating client: its large message goes compressed (over
    // the client's own 1024-byte threshold), its small one plain.
    const framesBefore = await metric(opsAddr, "gateway_ws_compressed_frames_total");
    assert.deepEqual(await ack(deflating, "$publish", room, "news", large), { ok: true });
    assert.deepEqual(await ack(deflating, "$publish", room, "news", small), { ok: true });
    for (const r of at.slice(1)) await r.atLeast(2);
    assert.deepEqual(at[1].items, [[large], [small]]);
    assert.deepEqual(at[2].items, [[large], [small]]);

    // From the plain client: the deflating client gets the large message
    // compressed, the others get it as it is.
    assert.deepEqual(await ack(plain, "$publish", room, "news", large), { ok: true });
    assert.deepEqual(await ack(plain, "$publish", room, "news", small), { ok: true });
    await at[0].atLeast(2);
    await at[2].atLeast(4);
    assert.deepEqual(at[0].items, [[large], [small]]);
    assert.deepEqual(at[2].items, [[large], [small], [large], [small]]);
    // One compressed delivery: the large message to the deflating client
    // (the small one is under the threshold, the others did not negotiate).
    const framesAfter = await metric(opsAddr, "gateway_ws_compressed_frames_total");
    assert.equal(framesAfter - framesBefore, 1);
    const before = await metric(opsAddr, "gateway_ws_compression_input_bytes_total");
    const afterBytes = await metric(opsAddr, "gateway_ws_compression_output_bytes_total");
    assert.ok(afterBytes * 3 < before, `compressed ${before} bytes to ${afterBytes}`);
  });

  test("admin emits reach every client, compressed or not, large and small", async () => {
    const room = unique("deflate-admin");
    const [deflating, plain, polling] = await trio(room);
    const at = [deflating, plain, polling].map((s) => record(s, "report"));
    const large = bulky(50_000);
    const framesBefore = await metric(opsAddr, "gateway_ws_compressed_frames_total");
    await admin.emit({ namespace: "/", rooms: [room] }, "report", large, "large");
    await admin.emit({ namespace: "/", rooms: [room] }, "report", "small");
    for (const r of at) await r.atLeast(2);
    for (const r of at) assert.deepEqual(r.items, [[large, "large"], ["small"]]);
    const framesAfter = await metric(opsAddr, "gateway_ws_compressed_frames_total");
    assert.equal(framesAfter - framesBefore, 1);
  });
});

// Binary payloads (BINARY_EVENT with attachments) in both directions: the
// client sends Buffers and Uint8Arrays nested in objects and arrays, the
// conformance server echoes them back; over WebSocket (binary frames) and over
// long-polling (`b<base64>` payloads). Also binary fan-out through a room of
// the gateway binary.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, afterEach, before, describe, test } from "node:test";
import {
  CONFORMANCE_BIN,
  Clients,
  GATEWAY_BIN,
  ack,
  normalize,
  once,
  startNode,
  unique,
  until,
} from "../lib/harness.js";

async function echo(socket, ...args) {
  const back = once(socket, "message-back", { timeoutMs: 10_000 });
  socket.emit("message", ...args);
  return back;
}

for (const transport of ["websocket", "polling"]) {
  describe(`binary over ${transport} (conformance server)`, { timeout: 60_000 }, () => {
    let node;
    const clients = new Clients();
    before(async () => {
      node = await startNode({ bin: CONFORMANCE_BIN });
    });
    afterEach(() => clients.closeAll());
    after(() => node?.stop());

    test("a top-level Buffer comes back intact", async () => {
      const socket = await clients.connect(node.url, { transports: [transport] });
      const bytes = Buffer.from([0, 1, 2, 127, 128, 254, 255]);
      const [back] = await echo(socket, bytes);
      assert.ok(Buffer.isBuffer(back) || back instanceof ArrayBuffer, `binary type: ${back?.constructor?.name}`);
      assert.deepEqual(normalize(back), normalize(bytes));
    });

    test("Buffers and Uint8Arrays nested in objects and arrays, mixed with JSON", async () => {
      const socket = await clients.connect(node.url, { transports: [transport] });
      const args = [
        "text first",
        {
          a: Buffer.from("hello"),
          nested: {
            u8: Uint8Array.of(4, 5, 6),
            list: [1, Buffer.from([0xde, 0xad, 0xbe, 0xef]), { deeper: Uint8Array.of(0) }, null],
          },
          plain: { n: 1.5, s: "x", t: true },
        },
        [Buffer.from([9]), "between", Buffer.from([10, 11])],
        42,
      ];
      const back = await echo(socket, ...args);
      assert.deepEqual(normalize(back), normalize(args));
    });

    test("an object whose key order must be kept next to attachments", async () => {
      const socket = await clients.connect(node.url, { transports: [transport] });
      const value = { z: 1, a: Buffer.from([1]), m: 2, b: { y: 3, x: Buffer.from([2]) } };
      const [back] = await echo(socket, value);
      assert.deepEqual(Object.keys(back), ["z", "a", "m", "b"]);
      assert.deepEqual(Object.keys(back.b), ["y", "x"]);
      assert.deepEqual(normalize(back), normalize(value));
    });

    test("a 300 KiB random Buffer and an empty Buffer", async () => {
      const socket = await clients.connect(node.url, { transports: [transport] });
      const big = randomBytes(300 * 1024);
      const empty = Buffer.alloc(0);
      const back = await echo(socket, { big, empty });
      assert.deepEqual(normalize(back), normalize([{ big, empty }]));
    });

    test("binary and text messages interleaved keep their order", async () => {
      const socket = await clients.connect(node.url, { transports: [transport] });
      const got = [];
      socket.on("message-back", (i, payload) => got.push([i, payload]));
      const sent = [];
      for (let i = 0; i < 20; i++) {
        const payload = i % 2 ? Buffer.from([i, i + 1]) : `text ${i}`;
        sent.push([i, payload]);
        socket.emit("message", i, payload);
      }
      await until(() => got.length >= 20, { timeoutMs: 10_000, what: "20 echoes" });
      assert.deepEqual(normalize(got), normalize(sent));
    });
  });
}

describe("binary fan-out through a room (gateway binary)", { timeout: 60_000 }, () => {
  let node;
  const clients = new Clients();
  before(async () => {
    node = await startNode({ bin: GATEWAY_BIN });
  });
  afterEach(() => clients.closeAll());
  after(() => node?.stop());

  test("$publish with attachments reaches a websocket and a polling member", async () => {
    const room = unique("bin");
    const wsMember = await clients.connect(node.url, { transports: ["websocket"] });
    const pollMember = await clients.connect(node.url, { transports: ["polling"] });
    const publisher = await clients.connect(node.url, { transports: ["polling"] });
    for (const s of [wsMember, pollMember, publisher]) assert.deepEqual(await ack(s, "$join", room), { ok: true });

    const payload = { file: Buffer.from([1, 2, 3, 255]), meta: { parts: [Uint8Array.of(7), "p"] } };
    const atWs = once(wsMember, "blob");
    const atPoll = once(pollMember, "blob");
    assert.deepEqual(await ack(publisher, "$publish", room, "blob", payload, Buffer.from("tail")), { ok: true });
    const expected = normalize([payload, Buffer.from("tail")]);
    assert.deepEqual(normalize(await atWs), expected);
    assert.deepEqual(normalize(await atPoll), expected);
  });
});

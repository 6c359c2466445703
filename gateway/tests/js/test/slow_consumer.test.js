// Slow consumer: with `outbound_queue_frames = 8`, a member of a busy room
// that stops reading is disconnected by the gateway, while the healthy members
// of the same room receive every message, in order, and stay connected.
//
// The stalled member is a raw WebSocket client that stops reading from its TCP
// socket: the kernel buffers (a few MiB on loopback) fill, then its outbound
// queue in the gateway. 200 messages of 64 KiB (12.5 MiB) are well past that.

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import { Clients, GATEWAY_BIN, ack, startNode, unique, until, withTimeout } from "../lib/harness.js";
import { RawClient } from "../lib/raw.js";

const MESSAGES = 200;
const SIZE = 64 * 1024;
/** Messages the publisher may be ahead of the slower healthy member. */
const WINDOW = 16;

const body = (i) => `${i}:`.padEnd(SIZE, "x");

describe("slow consumer (outbound_queue_frames = 8)", { timeout: 120_000 }, () => {
  let node;
  let raw;
  const clients = new Clients();
  before(async () => {
    node = await startNode({
      bin: GATEWAY_BIN,
      config: `
[limits]
outbound_queue_frames = 8
`,
    });
  });
  afterEach(() => {
    clients.closeAll();
    raw?.close();
  });
  after(() => node?.stop());

  test("a member that stops reading is disconnected; the others lose nothing", async () => {
    const room = unique("big");

    // The stalled member, by hand: CONNECT to "/", then $join with ack id 0.
    const { client: slow } = await RawClient.connect(node.port);
    raw = slow;
    slow.send("40");
    assert.match(await slow.next(), /^40\{"sid":"[^"]+"/);
    slow.send(`420${JSON.stringify(["$join", room])}`);
    assert.equal(await slow.next(), '430[{"ok":true}]');
    let slowReceived = 0;
    slow.onFrame = (frame) => {
      if (typeof frame === "string" && frame.startsWith('42["payload"')) slowReceived++;
    };
    slow.pause();

    const healthy = [];
    for (let h = 0; h < 2; h++) {
      const socket = await clients.connect(node.url, { transports: ["websocket"] });
      assert.deepEqual(await ack(socket, "$join", room), { ok: true });
      const member = { socket, got: [], disconnects: [] };
      socket.on("payload", (i, data) => member.got.push([i, data]));
      socket.on("disconnect", (reason) => member.disconnects.push(reason));
      healthy.push(member);
    }
    const publisher = await clients.connect(node.url, { transports: ["websocket"] });
    assert.deepEqual(await ack(publisher, "$join", room), { ok: true });

    // Publish, keeping the healthy members at most WINDOW messages behind so
    // that only the stalled member can fill its queue.
    const acks = [];
    for (let i = 0; i < MESSAGES; i++) {
      await until(() => Math.min(...healthy.map((m) => m.got.length)) >= i - WINDOW, {
        timeoutMs: 10_000,
        what: () => `healthy members reach message ${i - WINDOW} (got ${healthy.map((m) => m.got.length)})`,
      });
      acks.push(
        new Promise((resolve) => publisher.emit("$publish", room, "payload", i, body(i), resolve)),
      );
    }
    const replies = await Promise.all(acks.map((p, i) => withTimeout(p, 20_000, `ack of publish ${i}`)));
    replies.forEach((reply, i) => assert.deepEqual(reply, { ok: true }, `ack of publish ${i}`));

    for (const [h, member] of healthy.entries()) {
      await until(() => member.got.length >= MESSAGES, {
        timeoutMs: 20_000,
        what: () => `healthy member ${h} has all ${MESSAGES} messages (got ${member.got.length})`,
      });
      assert.deepEqual(
        member.got.map(([i]) => i),
        [...Array(MESSAGES).keys()],
        `healthy member ${h}: every message, in order`,
      );
      member.got.forEach(([i, data]) => assert.ok(data === body(i), `healthy member ${h}: payload ${i} intact`));
      assert.deepEqual(member.disconnects, [], `healthy member ${h} stayed connected`);
      assert.ok(member.socket.connected);
    }

    // Read again: what the kernel held comes out, then the connection ends.
    slow.resume();
    const closed = await slow.closed(15_000).catch(() => null);
    assert.ok(
      closed,
      `the stalled member was not disconnected (it read ${slowReceived} of ${MESSAGES} messages and is still open)`,
    );
    assert.ok(slowReceived < MESSAGES, `the stalled member was dropped before the end (read ${slowReceived})`);

    // The node is still healthy for everyone else.
    for (const member of healthy) assert.deepEqual(await ack(member.socket, "$join", unique("after")), { ok: true });
    assert.deepEqual(await ack(publisher, "$publish", room, "payload", -1, "end"), { ok: true });
  });
});

// Acknowledgements both ways against the conformance server:
// client -> server (`message-with-ack` acks with every argument; callbacks,
// emitWithAck, binary acks, many in flight) and server -> client
// (`request-ack`: the server emits with an ack request and reports the
// client's answer, or a timeout, as `ack-result`).

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import { CONFORMANCE_BIN, Clients, normalize, once, startNode, until, withTimeout } from "../lib/harness.js";

for (const transport of ["websocket", "polling"]) {
  describe(`acks over ${transport} (conformance server)`, { timeout: 60_000 }, () => {
    let node;
    const clients = new Clients();
    before(async () => {
      node = await startNode({ bin: CONFORMANCE_BIN });
    });
    afterEach(() => clients.closeAll());
    after(() => node?.stop());

    test("client -> server: the ack callback gets every argument", async () => {
      const socket = await clients.connect(node.url, { transports: [transport] });
      const args = await withTimeout(
        new Promise((resolve) => socket.emit("message-with-ack", 1, "two", { three: [3] }, null, (...a) => resolve(a))),
        5_000,
        "ack of message-with-ack",
      );
      assert.deepEqual(args, [1, "two", { three: [3] }, null]);
    });

    test("client -> server: emitWithAck, with and without a timeout", async () => {
      const socket = await clients.connect(node.url, { transports: [transport] });
      assert.deepEqual(
        await withTimeout(socket.emitWithAck("message-with-ack", { a: 1 }), 5_000, "emitWithAck"),
        { a: 1 },
      );
      assert.equal(await socket.timeout(5_000).emitWithAck("message-with-ack", "timed"), "timed");
    });

    test("client -> server: binary arguments come back in a BINARY_ACK", async () => {
      const socket = await clients.connect(node.url, { transports: [transport] });
      const payload = { file: Buffer.from([1, 2, 3]), list: [Uint8Array.of(255), "x"] };
      const args = await withTimeout(
        new Promise((resolve) => socket.emit("message-with-ack", payload, Buffer.from("b"), (...a) => resolve(a))),
        5_000,
        "binary ack",
      );
      assert.deepEqual(normalize(args), normalize([payload, Buffer.from("b")]));
    });

    test("client -> server: 100 acks in flight each resolve with their own value", async () => {
      const socket = await clients.connect(node.url, { transports: [transport] });
      const answers = await withTimeout(
        Promise.all([...Array(100).keys()].map((i) => socket.emitWithAck("message-with-ack", i, `v${i}`))),
        10_000,
        "100 acks",
      );
      assert.deepEqual(answers, [...Array(100).keys()]);
    });

    test("server -> client: the server's ack request reaches the client and its answer the server", async () => {
      const socket = await clients.connect(node.url, { transports: [transport] });
      const asked = once(socket, "please-answer");
      const result = once(socket, "ack-result");
      socket.emit("request-ack", "please-answer", 1, { two: 2 }, Buffer.from([3]));

      const received = await asked;
      const callback = received.pop();
      assert.equal(typeof callback, "function", "the event carries an ack id");
      assert.deepEqual(normalize(received), normalize([1, { two: 2 }, Buffer.from([3])]));

      callback("answer", { n: 1 }, Buffer.from([9, 8]));
      assert.deepEqual(normalize(await result), normalize(["answer", { n: 1 }, Buffer.from([9, 8])]));
    });

    test("server -> client: several ack requests answered out of order", async () => {
      const socket = await clients.connect(node.url, { transports: [transport] });
      const callbacks = [];
      socket.on("ask", (i, cb) => callbacks.push([i, cb]));
      const results = [];
      socket.on("ack-result", (v) => results.push(v));
      for (let i = 0; i < 3; i++) socket.emit("request-ack", "ask", i);
      await until(() => callbacks.length >= 3, { what: "3 ack requests" });
      // The conformance server handles each `request-ack` in a task of its
      // own, so the order of the requests and of the `ack-result` reports is
      // not part of its contract; their sets are.
      callbacks.sort(([a], [b]) => a - b);
      assert.deepEqual(
        callbacks.map(([i]) => i),
        [0, 1, 2],
      );
      for (const [i, cb] of [...callbacks].reverse()) cb(`answer ${i}`);
      await until(() => results.length >= 3, { what: "3 ack results" });
      assert.deepEqual([...results].sort(), ["answer 0", "answer 1", "answer 2"]);
    });

    test("server -> client: an unanswered ack request times out on the server", async () => {
      const socket = await clients.connect(node.url, { transports: [transport] });
      const asked = once(socket, "ignored");
      const result = once(socket, "ack-result", { timeoutMs: 6_000 });
      socket.emit("request-ack", "ignored", "x");
      await asked; // never answered
      assert.deepEqual(await result, [{ timeout: true }]);
    });
  });
}

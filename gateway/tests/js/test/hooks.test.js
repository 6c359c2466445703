// gRPC hooks with the official client: the gateway binary calls the
// `chat_backend` example (a Hooks service) for admission and events.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import { Clients, GATEWAY_BIN, ack, connectError, startNode } from "../lib/harness.js";

/** The chat backend example, beside the gateway binary (`CHAT_BACKEND_BIN` overrides). */
const CHAT_BACKEND_BIN =
  process.env.CHAT_BACKEND_BIN ?? path.join(path.dirname(GATEWAY_BIN), "examples", "chat_backend");

const LISTENING = /^hooks backend listening on (\S+)\s*$/m;

/** Starts the chat backend on a free port; resolves with its address and a stop function. */
async function startBackend(timeoutMs = 15_000) {
  const child = spawn(CHAT_BACKEND_BIN, ["--listen", "127.0.0.1:0"], { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  child.stderr.setEncoding("utf8").on("data", (chunk) => (output += chunk));
  const addr = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`chat_backend did not listen within ${timeoutMs} ms\n${output}`));
    }, timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${CHAT_BACKEND_BIN}: ${err.message}`));
    });
    child.stdout.setEncoding("utf8").on("data", (chunk) => {
      output += chunk;
      const m = LISTENING.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`chat_backend exited (code ${code}, signal ${signal})\n${output}`));
    });
  });
  return {
    addr,
    output: () => output,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
}

describe("gRPC hooks (chat_backend example)", { timeout: 60_000 }, () => {
  let backend;
  let node;
  const clients = new Clients();

  before(async () => {
    backend = await startBackend();
    node = await startNode({
      bin: GATEWAY_BIN,
      config: `
[[namespaces]]
name = "/"
join = ["*"]
publish = true

[namespaces.hooks]
url = "http://${backend.addr}"
timeout_ms = 3000
`,
    });
  });
  afterEach(() => clients.closeAll());
  after(async () => {
    await node?.stop();
    await backend?.stop();
  });

  for (const transport of ["websocket", "polling"]) {
    test(`${transport}: refused without a name (connect_error "name required")`, async () => {
      const err = await connectError(clients.socket(node.url, { transports: [transport] }));
      assert.equal(err.message, "name required");
      const empty = await connectError(clients.socket(node.url, { transports: [transport], auth: { name: "" } }));
      assert.equal(empty.message, "name required");
    });

    test(`${transport}: chat events are acked by the backend, in order`, async () => {
      const alice = await clients.connect(node.url, { transports: [transport], auth: { name: "alice" } });
      const acks = await Promise.all(
        Array.from({ length: 20 }, (_, i) => ack(alice, "chat", "lobby", `message ${i}`)),
      );
      assert.deepEqual(
        acks,
        acks.map((_, i) => ({ ok: true, seq: i + 1 })),
      );
      assert.deepEqual(await ack(alice, "whoami"), { user: "alice", socket: alice.id });
      // A rejected event: the backend's message reaches the ack.
      assert.deepEqual(await ack(alice, "chat", "lobby"), { error: "chat needs a room and a text" });
      // The backend joined her to `lobby` on connect: publishing there works without $join.
      const bob = await clients.connect(node.url, { transports: [transport], auth: { name: "bob" } });
      const heard = new Promise((resolve) => bob.once("said", resolve));
      assert.deepEqual(await ack(alice, "$publish", "lobby", "said", "hi bob"), { ok: true });
      assert.equal(await heard, "hi bob");
    });
  }

  test("the backend kept the messages in the order they were sent", async () => {
    const carol = await clients.connect(node.url, { transports: ["websocket"], auth: { name: "carol" } });
    const room = `room-${process.pid}`;
    for (let i = 0; i < 5; i++) carol.emit("chat", room, `line ${i}`);
    const history = await ack(carol, "history", room);
    assert.deepEqual(
      history,
      Array.from({ length: 5 }, (_, i) => ({ user: "carol", text: `line ${i}` })),
    );
  });
});

describe("gRPC hooks with the backend down", { timeout: 60_000 }, () => {
  let backend;
  let node;
  const clients = new Clients();

  before(async () => {
    backend = await startBackend();
    node = await startNode({
      bin: GATEWAY_BIN,
      config: `
[[namespaces]]
name = "/"

[namespaces.hooks]
url = "http://${backend.addr}"
timeout_ms = 2000
`,
    });
  });
  afterEach(() => clients.closeAll());
  after(async () => {
    await node?.stop();
    await backend?.stop();
  });

  test("events get an error ack and new clients a connect_error, promptly", async () => {
    const dave = await clients.connect(node.url, { transports: ["websocket"], auth: { name: "dave" } });
    await backend.stop();
    const started = Date.now();
    assert.deepEqual(await ack(dave, "chat", "lobby", "anyone?"), { error: "backend unavailable" });
    const err = await connectError(clients.socket(node.url, { transports: ["websocket"], auth: { name: "eve" } }));
    assert.equal(err.message, "backend unavailable");
    assert.ok(Date.now() - started < 4_500, `took ${Date.now() - started} ms`);
    assert.ok(dave.connected, "the connected socket stays connected");
  });
});

// Limits (SPEC section 6) as the official client meets them: every bound has
// a clear answer, and only the offending connection pays for it.

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import { Clients, GATEWAY_BIN, ack, connectError, normalize, once, startNode, unique, until } from "../lib/harness.js";

/** Resolves with the ack, or with `{ disconnected: reason }` if the socket is dropped first. */
function ackOrDisconnect(socket, ...args) {
  const dropped = once(socket, "disconnect").then(([reason]) => ({ disconnected: reason }));
  // socket.io-client rejects pending acks when the socket disconnects.
  const acked = socket.emitWithAck(...args).catch(() => dropped);
  return Promise.race([acked, dropped]);
}

describe("limits: payload, attachments, rooms per socket", { timeout: 60_000 }, () => {
  let node;
  const clients = new Clients();
  before(async () => {
    node = await startNode({
      bin: GATEWAY_BIN,
      config: `
[server]
max_payload = 10000

[limits]
max_attachments = 2
max_rooms_per_socket = 4
`,
    });
  });
  afterEach(() => clients.closeAll());
  after(() => node?.stop());

  test("max_rooms_per_socket: joins past the bound are refused, a $leave makes room", async () => {
    const s = await clients.connect(node.url, { transports: ["websocket"] });
    const rooms = [...Array(5).keys()].map(() => unique("cap"));
    const replies = [];
    for (const room of rooms) replies.push(await ack(s, "$join", room));
    const accepted = replies.filter((r) => r.ok).length;
    // 4 rooms per socket, its own-id room included: 3 (or 4) may be joined.
    assert.ok(accepted === 3 || accepted === 4, `accepted ${accepted} joins: ${JSON.stringify(replies)}`);
    const refused = replies[accepted];
    assert.equal(refused.ok, false, JSON.stringify(replies));
    assert.equal(typeof refused.error, "string");
    assert.ok(replies.slice(0, accepted).every((r) => r.ok), "the first joins succeed, the later ones fail");

    assert.deepEqual(await ack(s, "$leave", rooms[0]), { ok: true });
    assert.deepEqual(await ack(s, "$join", rooms[accepted]), { ok: true }, "a join fits again after a leave");
  });

  test("max_attachments: 2 attachments pass, 3 are refused and delivered to nobody", async () => {
    const [room, sync] = [unique("att"), unique("sync")];
    const member = await clients.connect(node.url, { transports: ["websocket"] });
    const sender = await clients.connect(node.url, { transports: ["websocket"] });
    for (const s of [member, sender]) {
      assert.deepEqual(await ack(s, "$join", room), { ok: true });
      assert.deepEqual(await ack(s, "$join", sync), { ok: true });
    }
    const got = [];
    member.on("files", (...args) => got.push(args));

    const two = [Buffer.from([1]), Buffer.from([2])];
    assert.deepEqual(await ack(sender, "$publish", room, "files", ...two), { ok: true });
    await until(() => got.length === 1, { what: "the 2-attachment message" });
    assert.deepEqual(normalize(got[0]), normalize(two));

    const answer = await ackOrDisconnect(sender, "$publish", room, "files", Buffer.from([1]), Buffer.from([2]), Buffer.from([3]));
    assert.ok(answer.disconnected || answer.ok === false, `3 attachments must be refused, got ${JSON.stringify(answer)}`);

    // Barrier: a later message reaches the member, the refused one did not.
    const witness = answer.disconnected ? await clients.connect(node.url, { transports: ["websocket"] }) : sender;
    if (answer.disconnected) assert.deepEqual(await ack(witness, "$join", sync), { ok: true });
    const mark = once(member, "mark");
    assert.deepEqual(await ack(witness, "$publish", sync, "mark"), { ok: true });
    await mark;
    assert.equal(got.length, 1, "the 3-attachment message was not delivered");
    assert.ok(member.connected, "the member is unaffected");
  });

  for (const transport of ["websocket", "polling"]) {
    test(`max_payload over ${transport}: a message under it passes, one over it drops only that connection`, async () => {
      const bystander = await clients.connect(node.url, { transports: [transport] });
      const s = await clients.connect(node.url, { transports: [transport] });
      assert.deepEqual(await ack(s, "$join", "x".repeat(100) + unique("small")), { ok: true });

      const dropped = once(s, "disconnect", { timeoutMs: 10_000 });
      s.emit("$join", "y".repeat(20_000), () => {});
      const [reason] = await dropped;
      assert.match(reason, /transport (close|error)|parse error|io server disconnect/, `reason: ${reason}`);

      assert.ok(bystander.connected, "the other connection is unaffected");
      assert.deepEqual(await ack(bystander, "$join", unique("still")), { ok: true });
    });
  }
});

describe("limits: rate limit (20/s, burst 40)", { timeout: 60_000 }, () => {
  let node;
  const clients = new Clients();
  before(async () => {
    node = await startNode({
      bin: GATEWAY_BIN,
      config: `
[limits]
rate_limit_per_sec = 20
rate_limit_burst = 40
`,
    });
  });
  afterEach(() => clients.closeAll());
  after(() => node?.stop());

  test("a flood disconnects the flooder only; a client within the burst is served", async () => {
    const calm = await clients.connect(node.url, { transports: ["websocket"] });
    const flooder = await clients.connect(node.url, { transports: ["websocket"] });

    const replies = await Promise.all([...Array(20).keys()].map(() => ack(calm, "$join", unique("calm"))));
    assert.ok(replies.every((r) => r.ok), "20 packets within the burst are all served");

    const dropped = once(flooder, "disconnect", { timeoutMs: 10_000 });
    for (let i = 0; i < 500; i++) flooder.emit("noise", i);
    const [reason] = await dropped;
    assert.notEqual(reason, "io client disconnect", `reason: ${reason}`);

    assert.ok(calm.connected, "the calm client is unaffected");
    assert.deepEqual(await ack(calm, "$join", unique("after")), { ok: true });
  });
});

describe("limits: max_connections = 3", { timeout: 60_000 }, () => {
  let node;
  const clients = new Clients();
  before(async () => {
    node = await startNode({
      bin: GATEWAY_BIN,
      config: `
[limits]
max_connections = 3
`,
    });
  });
  afterEach(() => clients.closeAll());
  after(() => node?.stop());

  /** A connected socket, retried until the node has a free slot (10 s at most). */
  async function connectRetrying(transport) {
    let socket;
    await until(
      async () => {
        socket = clients.socket(node.url, { transports: [transport] });
        try {
          await once(socket, "connect", { timeoutMs: 2_000, rejectOn: "connect_error" });
          return true;
        } catch {
          socket.io.disconnect();
          return false;
        }
      },
      { timeoutMs: 10_000, intervalMs: 100, what: "a connection is accepted" },
    );
    return socket;
  }

  for (const transport of ["websocket", "polling"]) {
    test(`${transport}: the 4th connection is refused; closing one lets a new one in`, async () => {
      const open = [];
      // Slots of the previous test are released asynchronously: retry briefly.
      for (let i = 0; i < 3; i++) open.push(await connectRetrying(transport));
      const err = await connectError(clients.socket(node.url, { transports: [transport] }));
      assert.ok(err instanceof Error, "the 4th connection fails to connect");

      open[0].disconnect(); // the last namespace: the client closes the connection
      await connectRetrying(transport); // the node notices the close asynchronously
      assert.ok(open[1].connected && open[2].connected, "the others were never affected");
    });
  }
});

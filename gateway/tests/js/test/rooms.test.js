// Reserved client events against the gateway binary: `$join`, `$leave` and
// `$publish`, with the namespace policy (join patterns, publish switch).
//
// "Did not receive" is asserted with a barrier, not a sleep: once a later
// message has reached a client, an earlier one that was meant for it would
// have arrived first (a message is handed to every recipient's queue before
// the next one is handled, and each connection delivers its queue in order).

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import { Clients, GATEWAY_BIN, ack, normalize, once, record, startNode, unique } from "../lib/harness.js";

const REFUSED = (reply) => {
  assert.equal(reply?.ok, false, `expected a refusal, got ${JSON.stringify(reply)}`);
  assert.equal(typeof reply.error, "string", "a refusal carries an error string");
  assert.ok(reply.error.length > 0, "the error string is not empty");
};

describe("rooms (gateway binary, default config)", { timeout: 60_000 }, () => {
  let node;
  const clients = new Clients();
  before(async () => {
    node = await startNode({ bin: GATEWAY_BIN });
  });
  afterEach(() => clients.closeAll());
  after(() => node?.stop());

  /** Three connected clients (one over polling), all in `room` and in `sync`. */
  async function trio(room, sync) {
    const a = await clients.connect(node.url, { transports: ["websocket"] });
    const b = await clients.connect(node.url, { transports: ["polling"] });
    const c = await clients.connect(node.url, { transports: ["websocket"] });
    for (const s of [a, b, c]) {
      assert.deepEqual(await ack(s, "$join", room), { ok: true });
      assert.deepEqual(await ack(s, "$join", sync), { ok: true });
    }
    return [a, b, c];
  }

  test("$publish reaches every member of the room except the sender", async () => {
    const [room, sync] = [unique("r1"), unique("sync")];
    const [a, b, c] = await trio(room, sync);
    const atA = record(a, "news");
    const atB = record(b, "news");
    const atC = record(c, "news");

    assert.deepEqual(await ack(c, "$publish", room, "news", { n: 1 }, "x", [true, null]), { ok: true });
    await atA.atLeast(1);
    await atB.atLeast(1);
    assert.deepEqual(atA.items, [[{ n: 1 }, "x", [true, null]]]);
    assert.deepEqual(atB.items, [[{ n: 1 }, "x", [true, null]]]);

    // Barrier for the sender: a message published after `news` reached b.
    const mark = once(c, "mark");
    assert.deepEqual(await ack(b, "$publish", sync, "mark"), { ok: true });
    await mark;
    assert.deepEqual(atC.items, [], "the sender does not get its own publish");
  });

  test("messages of one publisher arrive in order", async () => {
    const [room, sync] = [unique("order"), unique("sync")];
    const [a, b, c] = await trio(room, sync);
    const atA = record(a, "seq");
    const atB = record(b, "seq");
    const acks = [];
    for (let i = 0; i < 100; i++) acks.push(ack(c, "$publish", room, "seq", i));
    for (const reply of await Promise.all(acks)) assert.deepEqual(reply, { ok: true });
    await atA.atLeast(100);
    await atB.atLeast(100);
    const expected = [...Array(100).keys()].map((i) => [i]);
    assert.deepEqual(atA.items, expected);
    assert.deepEqual(atB.items, expected);
  });

  test("after $leave a socket no longer gets the room's messages", async () => {
    const [room, sync] = [unique("leave"), unique("sync")];
    const [a, b, c] = await trio(room, sync);
    const atA = record(a, "news");
    const atB = record(b, "news");

    assert.deepEqual(await ack(b, "$leave", room), { ok: true });
    assert.deepEqual(await ack(c, "$publish", room, "news", "after leave"), { ok: true });
    await atA.atLeast(1);
    assert.deepEqual(atA.items, [["after leave"]]);

    // Barrier for b: published by a after `news` reached a.
    const mark = once(b, "mark");
    assert.deepEqual(await ack(a, "$publish", sync, "mark"), { ok: true });
    await mark;
    assert.deepEqual(atB.items, [], "b left the room before the publish");

    // b is out of the room, so it may not publish there any more.
    REFUSED(await ack(b, "$publish", room, "news", "from outside"));
  });

  test("$publish into a room the sender is not in is refused and delivers nothing", async () => {
    const [room, sync] = [unique("closed"), unique("sync")];
    const member = await clients.connect(node.url, { transports: ["websocket"] });
    const outsider = await clients.connect(node.url, { transports: ["websocket"] });
    assert.deepEqual(await ack(member, "$join", room), { ok: true });
    assert.deepEqual(await ack(member, "$join", sync), { ok: true });
    assert.deepEqual(await ack(outsider, "$join", sync), { ok: true });
    const atMember = record(member, "intrusion");

    REFUSED(await ack(outsider, "$publish", room, "intrusion", 1));

    const mark = once(member, "mark");
    assert.deepEqual(await ack(outsider, "$publish", sync, "mark"), { ok: true });
    await mark;
    assert.deepEqual(atMember.items, []);
  });

  test("binary arguments survive $publish", async () => {
    const [room, sync] = [unique("bin"), unique("sync")];
    const [a, b, c] = await trio(room, sync);
    const atA = once(a, "file");
    const atB = once(b, "file");
    const payload = { name: "f", data: Buffer.from([0, 1, 2, 255]) };
    assert.deepEqual(await ack(c, "$publish", room, "file", payload), { ok: true });
    assert.deepEqual(normalize(await atA), normalize([payload]));
    assert.deepEqual(normalize(await atB), normalize([payload]));
  });
});

describe("rooms: join policy (join = [\"public-*\"])", { timeout: 60_000 }, () => {
  let node;
  const clients = new Clients();
  before(async () => {
    node = await startNode({
      bin: GATEWAY_BIN,
      config: `
[[namespaces]]
name = "/"
join = ["public-*"]
publish = true
`,
    });
  });
  afterEach(() => clients.closeAll());
  after(() => node?.stop());

  test("a room matching the patterns may be joined and left", async () => {
    const s = await clients.connect(node.url, { transports: ["websocket"] });
    assert.deepEqual(await ack(s, "$join", "public-lobby"), { ok: true });
    assert.deepEqual(await ack(s, "$publish", "public-lobby", "hello"), { ok: true });
    assert.deepEqual(await ack(s, "$leave", "public-lobby"), { ok: true });
  });

  test("a room outside the patterns is refused with {ok:false,error}", async () => {
    const s = await clients.connect(node.url, { transports: ["websocket"] });
    REFUSED(await ack(s, "$join", "private-lobby"));
    REFUSED(await ack(s, "$join", "public")); // "public-*" needs the dash
    REFUSED(await ack(s, "$leave", "private-lobby"));
    // The refused join did not happen: publishing there is refused too.
    REFUSED(await ack(s, "$publish", "private-lobby", "hello"));
    // The connection is still fine.
    assert.deepEqual(await ack(s, "$join", "public-ok"), { ok: true });
  });
});

describe("rooms: publish = false", { timeout: 60_000 }, () => {
  let node;
  const clients = new Clients();
  before(async () => {
    node = await startNode({
      bin: GATEWAY_BIN,
      config: `
[[namespaces]]
name = "/"
join = ["*"]
publish = false
`,
    });
  });
  afterEach(() => clients.closeAll());
  after(() => node?.stop());

  test("$publish is refused and delivers nothing", async () => {
    const room = unique("nopub");
    const a = await clients.connect(node.url, { transports: ["websocket"] });
    const b = await clients.connect(node.url, { transports: ["websocket"] });
    assert.deepEqual(await ack(a, "$join", room), { ok: true });
    assert.deepEqual(await ack(b, "$join", room), { ok: true });
    const atA = record(a, "news");
    REFUSED(await ack(b, "$publish", room, "news", 1));
    // No publish is possible here, so no barrier message either: the refusal
    // ack is sent after the publish was handled, and a delivery to a would
    // have been queued by then; a round trip of a's own makes sure a's queue
    // was flushed up to that point.
    assert.deepEqual(await ack(a, "$join", unique("flush")), { ok: true });
    assert.deepEqual(atA.items, []);
  });
});

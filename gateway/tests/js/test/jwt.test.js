// JWT authentication of namespace connections (auth.token): HS256 and RS256
// tokens accepted, the `rooms` claim joined on connect, and every bad token
// refused with CONNECT_ERROR.

import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { after, afterEach, before, describe, test } from "node:test";
import { Clients, GATEWAY_BIN, ack, connectError, once, startNode, unique } from "../lib/harness.js";
import { epoch, signJwt } from "../lib/jwt.js";

const SECRET = "interop-test-secret-0123456789abcdef";

/** A connect_error sent by the server (not a transport failure) with a message. */
function assertRefused(err) {
  assert.equal(typeof err.message, "string");
  assert.ok(err.message.length > 0, "the refusal has a message");
  assert.doesNotMatch(err.message, /xhr poll error|websocket error|timeout/, "a server refusal, not a transport error");
  assert.notEqual(err.message, "Invalid namespace");
}

describe("JWT HS256", { timeout: 60_000 }, () => {
  let node;
  const clients = new Clients();
  before(async () => {
    node = await startNode({
      bin: GATEWAY_BIN,
      config: `
[[namespaces]]
name = "/"
join = ["*"]
publish = true

[namespaces.jwt]
algorithm = "HS256"
secret = "${SECRET}"
`,
    });
  });
  afterEach(() => clients.closeAll());
  after(() => node?.stop());

  const token = (claims) => signJwt(claims, { alg: "HS256", key: SECRET });

  for (const transport of ["websocket", "polling"]) {
    test(`${transport}: a valid token connects and its rooms claim is joined on connect`, async () => {
      const [vip, other] = [unique("vip"), unique("other")];
      const alice = await clients.connect(node.url, {
        transports: [transport],
        auth: { token: token({ sub: "alice", exp: epoch(3600), rooms: [vip, other] }) },
      });
      const bob = await clients.connect(node.url, {
        transports: [transport],
        auth: { token: token({ sub: "bob", exp: epoch(3600) }) },
      });

      // alice never sent $join: she is in `vip` through the claim.
      assert.deepEqual(await ack(bob, "$join", vip), { ok: true });
      const atAlice = once(alice, "hello");
      assert.deepEqual(await ack(bob, "$publish", vip, "hello", "from bob"), { ok: true });
      assert.deepEqual(await atAlice, ["from bob"]);

      // ... and in `other`, where she may publish without joining.
      assert.deepEqual(await ack(bob, "$join", other), { ok: true });
      const atBob = once(bob, "hi");
      assert.deepEqual(await ack(alice, "$publish", other, "hi", 2), { ok: true });
      assert.deepEqual(await atBob, [2]);
    });
  }

  const refusals = [
    ["no auth at all", undefined],
    ["auth without a token", {}],
    ["a token that is not a string", { token: 12345 }],
    ["a token that is not a JWT", { token: "not-a-jwt" }],
    ["a token signed with another secret", { token: signJwt({ sub: "x", exp: epoch(3600) }, { alg: "HS256", key: "wrong" }) }],
    ["an expired token (1 h ago)", { token: signJwt({ sub: "x", exp: epoch(-3600) }, { alg: "HS256", key: SECRET }) }],
    ["an unsigned token (alg none)", { token: signJwt({ sub: "x", exp: epoch(3600) }, { alg: "none" }) }],
    [
      "a token whose claims were altered after signing",
      {
        token: (() => {
          const [h, , s] = signJwt({ sub: "x", exp: epoch(3600) }, { alg: "HS256", key: SECRET }).split(".");
          const forged = Buffer.from(JSON.stringify({ sub: "admin", exp: epoch(3600) })).toString("base64url");
          return `${h}.${forged}.${s}`;
        })(),
      },
    ],
  ];
  for (const [what, auth] of refusals) {
    test(`refused: ${what}`, async (t) => {
      const socket = clients.socket(node.url, { transports: ["websocket"], ...(auth ? { auth } : {}) });
      const err = await connectError(socket);
      t.diagnostic(`connect_error: ${err.message}`);
      assertRefused(err);
      assert.equal(socket.connected, false);
    });
  }
});

describe("JWT RS256", { timeout: 60_000 }, () => {
  const { publicKey, privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const other = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const publicPem = publicKey.export({ type: "spki", format: "pem" });
  let node;
  const clients = new Clients();
  before(async () => {
    node = await startNode({
      bin: GATEWAY_BIN,
      config: `
[[namespaces]]
name = "/"
join = ["*"]
publish = true

[namespaces.jwt]
algorithm = "RS256"
public_key = '''
${publicPem.trim()}
'''
`,
    });
  });
  afterEach(() => clients.closeAll());
  after(() => node?.stop());

  test("a token signed with the private key connects, with its rooms", async () => {
    const room = unique("rs");
    const alice = await clients.connect(node.url, {
      auth: { token: signJwt({ sub: "alice", exp: epoch(3600), rooms: [room] }, { alg: "RS256", key: privateKey }) },
    });
    const bob = await clients.connect(node.url, {
      auth: { token: signJwt({ sub: "bob", exp: epoch(3600), rooms: [room] }, { alg: "RS256", key: privateKey }) },
    });
    const atAlice = once(alice, "hello");
    assert.deepEqual(await ack(bob, "$publish", room, "hello", "rs256"), { ok: true });
    assert.deepEqual(await atAlice, ["rs256"]);
  });

  const refusals = [
    ["a token signed with another key", () => signJwt({ sub: "x", exp: epoch(3600) }, { alg: "RS256", key: other.privateKey })],
    ["an expired token", () => signJwt({ sub: "x", exp: epoch(-3600) }, { alg: "RS256", key: privateKey })],
    // Algorithm confusion: HMAC keyed with the public key must not pass.
    ["an HS256 token keyed with the public key", () => signJwt({ sub: "x", exp: epoch(3600) }, { alg: "HS256", key: publicPem })],
    ["no token", () => undefined],
  ];
  for (const [what, mint] of refusals) {
    test(`refused: ${what}`, async (t) => {
      const token = mint();
      const socket = clients.socket(node.url, { transports: ["websocket"], ...(token ? { auth: { token } } : {}) });
      const err = await connectError(socket);
      t.diagnostic(`connect_error: ${err.message}`);
      assertRefused(err);
    });
  }
});

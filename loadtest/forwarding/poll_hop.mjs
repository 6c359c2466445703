// The cost of a forwarded long-polling request next to a direct one: two
// gateway nodes over one Redis with forwarding on; one polling session on
// node 1; N POSTs of a noop packet (`6`) sent to node 1 (direct) and to
// node 2 (forwarded to node 1), one at a time, in alternating blocks so that
// both see the same machine. Prints the latency percentiles
// of each and their ratio.
//
//   GATEWAY_BIN=target/release/gateway node loadtest/forwarding/poll_hop.mjs
//
// It uses the JavaScript test suite's helpers: run `npm ci` in
// gateway/tests/js first. ROUNDS [2000] requests per path; BLOCK [200].

import http from "node:http";
import { randomBytes } from "node:crypto";
import { Cluster, startRedis } from "../../gateway/tests/js/lib/cluster.js";

const ROUNDS = Number(process.env.ROUNDS ?? 2000);
const BLOCK = Number(process.env.BLOCK ?? 200);
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function request(port, method, query, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: "127.0.0.1", port, method, path: `/socket.io/?EIO=4&transport=polling${query}`, agent },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
      },
    );
    req.on("error", reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

const pct = (xs, p) => xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];
const summary = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return { p50: pct(s, 50), p90: pct(s, 90), p99: pct(s, 99) };
};

process.env.GATEWAY_CLUSTER__INTERNAL_LISTEN = "127.0.0.1:0";
process.env.GATEWAY_CLUSTER__SECRET = randomBytes(16).toString("hex");
const redis = await startRedis();
const cluster = new Cluster({ redisUrl: redis.url, config: "[limits]\nrate_limit_per_sec = 0\n" });
try {
  const n1 = await cluster.start();
  const n2 = await cluster.start();
  await cluster.settled(2);
  const open = await request(n1.port, "GET", "");
  const sid = JSON.parse(open.body.slice(1)).sid;
  const q = `&sid=${sid}`;
  // Until node 2 knows node 1's internal address.
  for (let i = 0; ; i += 1) {
    if ((await request(n2.port, "POST", q, "6")).status === 200) break;
    if (i > 100) throw new Error("node 2 does not forward");
    await new Promise((r) => setTimeout(r, 100));
  }
  const times = { direct: [], forwarded: [] };
  for (let done = 0; done < ROUNDS; done += BLOCK) {
    for (const [name, port] of [["direct", n1.port], ["forwarded", n2.port]]) {
      for (let i = 0; i < BLOCK; i += 1) {
        const t0 = process.hrtime.bigint();
        const r = await request(port, "POST", q, "6");
        if (r.status !== 200) throw new Error(`${name}: ${r.status} ${r.body}`);
        times[name].push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
    }
  }
  const d = summary(times.direct);
  const f = summary(times.forwarded);
  console.log(`POST of a noop packet, ${ROUNDS} each, ms:`);
  console.log(`direct    p50 ${d.p50.toFixed(3)} p90 ${d.p90.toFixed(3)} p99 ${d.p99.toFixed(3)}`);
  console.log(`forwarded p50 ${f.p50.toFixed(3)} p90 ${f.p90.toFixed(3)} p99 ${f.p99.toFixed(3)}`);
  console.log(`forwarded / direct: p50 ${(f.p50 / d.p50).toFixed(2)}x, p99 ${(f.p99 / d.p99).toFixed(2)}x`);
} finally {
  await cluster.stop();
  await redis.stop();
  agent.destroy();
}

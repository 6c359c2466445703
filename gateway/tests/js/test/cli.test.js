// The gateway binary's command line: `--check-config` validates a file and
// exits 0, or prints the error and exits 2; SIGTERM stops a running node.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { GATEWAY_BIN, startNode, withTimeout } from "../lib/harness.js";

const dir = mkdtempSync(path.join(tmpdir(), "gateway-cli-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the gateway to completion; resolves with its exit code and output. */
function run(args) {
  const child = spawn(GATEWAY_BIN, args, { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.setEncoding("utf8").on("data", (d) => (output += d));
  child.stderr.setEncoding("utf8").on("data", (d) => (output += d));
  const done = new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("exit", (code, signal) => resolve({ code, signal, output }));
  });
  return withTimeout(done, 10_000, `gateway ${args.join(" ")} exits`).catch((err) => {
    child.kill("SIGKILL");
    throw err;
  });
}

function configFile(name, text) {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
}

describe("gateway --check-config", { timeout: 60_000 }, () => {
  test("a valid file exits 0", async () => {
    const file = configFile(
      "valid.toml",
      `
[server]
listen = "127.0.0.1:0"
ping_interval_ms = 1000
[limits]
outbound_queue_frames = 8
[[namespaces]]
name = "/tenant-*"
join = ["public-*"]
publish = true
[namespaces.jwt]
algorithm = "HS256"
secret = "s"
`,
    );
    const { code, output } = await run(["--config", file, "--check-config"]);
    assert.equal(code, 0, output);
  });

  const invalid = [
    ["not TOML", "this is = = not toml"],
    ["a wrong type", '[server]\nping_interval_ms = "soon"\n'],
    ["an unknown JWT algorithm", '[[namespaces]]\nname = "/"\n[namespaces.jwt]\nalgorithm = "XX999"\nsecret = "s"\n'],
    ["an RS256 key that is not a PEM", '[[namespaces]]\nname = "/"\n[namespaces.jwt]\nalgorithm = "RS256"\npublic_key = "nope"\n'],
  ];
  for (const [what, text] of invalid) {
    test(`${what}: exits 2 with a message`, async () => {
      const file = configFile(`${what.replace(/\W+/g, "-")}.toml`, text);
      const { code, output } = await run(["--config", file, "--check-config"]);
      assert.equal(code, 2, `exit code (output: ${output})`);
      assert.ok(output.trim().length > 0, "an error message is printed");
    });
  }

  test("a missing file exits 2", async () => {
    const { code } = await run(["--config", path.join(dir, "does-not-exist.toml"), "--check-config"]);
    assert.equal(code, 2);
  });
});

describe("gateway signals", { timeout: 30_000 }, () => {
  for (const signal of ["SIGTERM", "SIGINT"]) {
    test(`${signal} stops an idle node`, async () => {
      const node = await startNode({ bin: GATEWAY_BIN });
      node.proc.kill(signal);
      const status = await withTimeout(node.exited, 10_000, `the node exits on ${signal}`);
      assert.ok(status.code === 0 || status.signal === signal, `exit status ${JSON.stringify(status)}`);
    });
  }
});

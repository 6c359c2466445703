// Test harness: start gateway binaries on 127.0.0.1:0, drive them with the
// official socket.io-client, and wait for things with deadlines (never fixed
// sleeps used as assertions).

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Manager, io } from "socket.io-client";

const here = path.dirname(fileURLToPath(import.meta.url));
const defaultTargetDir = path.resolve(here, "../../../../target/debug");

/** Path of the gateway binary (`GATEWAY_BIN`, else target/debug/gateway). */
export const GATEWAY_BIN = process.env.GATEWAY_BIN ?? path.join(defaultTargetDir, "gateway");

/** Path of the conformance server (`CONFORMANCE_BIN`, else beside the gateway binary). */
export const CONFORMANCE_BIN =
  process.env.CONFORMANCE_BIN ?? path.join(path.dirname(GATEWAY_BIN), "examples", "conformance");

const LISTENING = /^gateway listening on (\S+)\s*$/;
const LOG_CAP = 256 * 1024;
const running = new Set();

// A test file that crashes must not leave servers behind.
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/**
 * Starts `bin` and resolves once it printed `gateway listening on <ip:port>`.
 *
 * @param {object} opts
 * @param {string} opts.bin         binary to run
 * @param {string} [opts.config]    TOML written to a temp file and passed with `--config`
 * @param {string} [opts.listen]    `--listen` address (default 127.0.0.1:0)
 * @param {string[]} [opts.args]    extra arguments
 * @param {number} [opts.startTimeoutMs]
 */
export async function startNode({ bin, config, listen = "127.0.0.1:0", args = [], startTimeoutMs = 15_000 }) {
  let dir;
  const argv = [];
  if (config !== undefined) {
    dir = mkdtempSync(path.join(tmpdir(), "gateway-interop-"));
    const file = path.join(dir, "gateway.toml");
    writeFileSync(file, config);
    argv.push("--config", file);
  }
  argv.push("--listen", listen, ...args);

  // The admin API binds 127.0.0.1:50051 by default: an ephemeral port lets
  // several nodes (and several test runs) share the host.
  const env = { GATEWAY_ADMIN__LISTEN: "127.0.0.1:0", ...process.env };
  const child = spawn(bin, argv, { stdio: ["ignore", "pipe", "pipe"], env });
  running.add(child);
  let logs = "";
  const log = (chunk) => {
    logs += chunk;
    if (logs.length > LOG_CAP) logs = logs.slice(-LOG_CAP);
  };
  const exited = new Promise((resolve) => {
    child.on("exit", (code, signal) => {
      running.delete(child);
      if (dir) rmSync(dir, { recursive: true, force: true });
      resolve({ code, signal });
    });
  });
  child.stderr.setEncoding("utf8").on("data", log);

  const addr = await new Promise((resolve, reject) => {
    let pending = "";
    let found = false;
    const fail = (why) => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(new Error(`${path.basename(bin)} ${argv.join(" ")}: ${why}\n--- output ---\n${logs}`));
    };
    const timer = setTimeout(() => fail(`no "gateway listening on" line within ${startTimeoutMs} ms`), startTimeoutMs);
    child.on("error", (err) => fail(`cannot start: ${err.message}`));
    exited.then(({ code, signal }) => {
      if (!found) fail(`exited before listening (code ${code}, signal ${signal})`);
    });
    child.stdout.setEncoding("utf8").on("data", (chunk) => {
      log(chunk);
      if (found) return;
      pending += chunk;
      let nl;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        const m = LISTENING.exec(line);
        if (m) {
          found = true;
          clearTimeout(timer);
          resolve(m[1]);
          return;
        }
      }
    });
  });

  const port = Number(addr.slice(addr.lastIndexOf(":") + 1));
  let stopped = false;
  const node = {
    proc: child,
    addr,
    port,
    url: `http://127.0.0.1:${port}`,
    exited,
    logs: () => logs,
    /** SIGKILL, resolves once the process is gone. */
    async kill() {
      stopped = true;
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      return exited;
    },
    /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
    async stop(graceMs = 5_000) {
      if (stopped) return exited;
      stopped = true;
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      const status = await exited;
      clearTimeout(timer);
      return status;
    },
  };
  return node;
}

/** Rejects with a clear message when `promise` does not settle within `ms`. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Resolves with the arguments of the next `event` on `emitter`, or rejects after `timeoutMs`.
 * A `rejectOn` event (e.g. "connect_error") rejects at once with its first argument.
 */
export function once(emitter, event, { timeoutMs = 5_000, rejectOn } = {}) {
  return new Promise((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      emitter.off(event, onEvent);
      if (rejectOn) emitter.off(rejectOn, onReject);
    };
    const onEvent = (...args) => {
      done();
      resolve(args);
    };
    const onReject = (err) => {
      done();
      reject(err instanceof Error ? err : new Error(`${rejectOn}: ${JSON.stringify(err)}`));
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for "${event}"`));
    }, timeoutMs);
    emitter.on(event, onEvent);
    if (rejectOn) emitter.on(rejectOn, onReject);
  });
}

/**
 * Polls `predicate` every `intervalMs` until it returns truthy; rejects after
 * `timeoutMs`. `what` (a string, or a function called at the deadline) says
 * what was awaited in the error.
 */
export async function until(predicate, { timeoutMs = 5_000, intervalMs = 10, what = predicate.toString() } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) {
      const described = typeof what === "function" ? what() : what;
      throw new Error(`timed out after ${timeoutMs} ms waiting until ${described}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Resolves once `socket` is connected; rejects with the connect_error. */
export async function connected(socket, timeoutMs = 5_000) {
  if (socket.connected) return socket;
  await once(socket, "connect", { timeoutMs, rejectOn: "connect_error" });
  return socket;
}

/** Resolves with the connect_error of `socket`; rejects if it connects instead. */
export function connectError(socket, timeoutMs = 5_000) {
  return new Promise((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      socket.off("connect_error", onError);
      socket.off("connect", onConnect);
    };
    const onError = (err) => {
      done();
      resolve(err);
    };
    const onConnect = () => {
      done();
      reject(new Error(`socket ${socket.nsp} connected, a connect_error was expected`));
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for connect_error on ${socket.nsp}`));
    }, timeoutMs);
    socket.on("connect_error", onError);
    socket.on("connect", onConnect);
  });
}

/** Records every occurrence of `event` on `socket` (arguments arrays, in arrival order). */
export function record(socket, event) {
  const items = [];
  socket.on(event, (...args) => items.push(args));
  return {
    items,
    /** Resolves once at least `n` occurrences were recorded. */
    atLeast(n, timeoutMs = 5_000) {
      return until(() => items.length >= n, { timeoutMs, what: () => `${n} "${event}" events (got ${items.length})` });
    },
  };
}

/** emitWithAck with a deadline (a lost ack must fail the test, not hang it). */
export function ack(socket, event, ...args) {
  return withTimeout(socket.emitWithAck(event, ...args), 5_000, `ack of "${event}" ${JSON.stringify(args)}`);
}

/**
 * Turns every binary value (Buffer, ArrayBuffer, typed array) into `{ $binary: "<hex>" }`
 * so payloads compare with deepStrictEqual whatever binary type the transport produced.
 */
export function normalize(value) {
  if (value instanceof ArrayBuffer) return { $binary: Buffer.from(value).toString("hex") };
  if (ArrayBuffer.isView(value)) {
    return { $binary: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("hex") };
  }
  if (Array.isArray(value)) return value.map(normalize);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalize(v)]));
  }
  return value;
}

/**
 * Creates socket.io-client sockets and managers and closes them all in `closeAll()`
 * (call it from `afterEach`). Reconnection is off unless asked for, so a failure
 * surfaces at once instead of as a retry loop.
 */
export class Clients {
  #managers = new Set();

  /** A socket on its own Manager (`forceNew`), not yet necessarily connected. */
  socket(url, opts = {}) {
    const socket = io(url, { forceNew: true, reconnection: false, ...opts });
    this.#managers.add(socket.io);
    return socket;
  }

  /** A connected socket on its own Manager. */
  async connect(url, opts = {}) {
    return connected(this.socket(url, opts));
  }

  /** A Manager whose sockets (`manager.socket(nsp)`) share one Engine.IO connection. */
  manager(url, opts = {}) {
    const manager = new Manager(url, { reconnection: false, ...opts });
    this.#managers.add(manager);
    return manager;
  }

  closeAll() {
    for (const manager of this.#managers) {
      for (const socket of Object.values(manager.nsps)) socket.disconnect();
      manager.disconnect(); // closes the Engine.IO connection and stops reconnecting
    }
    this.#managers.clear();
  }
}

/**
 * A fresh room or event name, so tests on one node never see each other's
 * traffic. The separators are dots, outside the socket id alphabet: with
 * dashes, a prefix, process id and counter that happen to add up to 20
 * characters have the shape of a socket id, and the gateway refuses such a
 * room name.
 */
let counter = 0;
export function unique(prefix) {
  counter += 1;
  return `${prefix}.${process.pid}.${counter}`;
}

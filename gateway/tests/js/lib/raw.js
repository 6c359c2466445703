// A hand-driven Engine.IO v4 / Socket.IO v5 client over a raw WebSocket (the
// `ws` package), for what the official client cannot do: look at exact frames,
// or stop reading from the socket like a stalled consumer.

import WebSocket from "ws";
import { withTimeout } from "./harness.js";

export class RawClient {
  /** Text frames not yet taken by `next()`, pings excluded. */
  #frames = [];
  #waiters = [];
  #closed;

  constructor(ws, { autoPong = true } = {}) {
    this.ws = ws;
    this.closeInfo = null;
    /** Every text frame received, in order (pings included). */
    this.log = [];
    this.#closed = new Promise((resolve) => {
      ws.on("close", (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        resolve(this.closeInfo);
        for (const w of this.#waiters.splice(0)) w.reject(new Error(`connection closed (code ${code})`));
      });
    });
    ws.on("error", () => {}); // surfaces as "close"
    ws.on("message", (data, isBinary) => {
      const frame = isBinary ? data : data.toString();
      this.log.push(frame);
      if (frame === "2") {
        if (autoPong) ws.send("3"); // answer the server's heartbeat
        return;
      }
      this.onFrame?.(frame);
      const waiter = this.#waiters.shift();
      if (waiter) waiter.resolve(frame);
      else this.#frames.push(frame);
    });
  }

  /**
   * Opens `ws://127.0.0.1:<port>/socket.io/?EIO=4&transport=websocket` and
   * resolves with the client and the parsed Engine.IO open packet. With
   * `autoPong: false` the server's pings go unanswered.
   */
  static async connect(port, { path = "/socket.io/", timeoutMs = 5_000, autoPong = true } = {}) {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${path}?EIO=4&transport=websocket`);
    const client = new RawClient(ws, { autoPong });
    const first = await client.next(timeoutMs);
    if (typeof first !== "string" || first[0] !== "0") throw new Error(`expected an open packet, got ${first}`);
    return { client, open: JSON.parse(first.slice(1)) };
  }

  send(frame) {
    this.ws.send(frame);
  }

  /** The next frame (a ping is answered and skipped). */
  next(timeoutMs = 5_000) {
    if (this.#frames.length) return Promise.resolve(this.#frames.shift());
    if (this.closeInfo) return Promise.reject(new Error(`connection closed (code ${this.closeInfo.code})`));
    let waiter;
    const p = new Promise((resolve, reject) => {
      waiter = { resolve, reject };
      this.#waiters.push(waiter);
    });
    return withTimeout(p, timeoutMs, "next frame").catch((err) => {
      this.#waiters = this.#waiters.filter((w) => w !== waiter);
      throw err;
    });
  }

  /** Stops reading from the TCP socket: the kernel buffers fill, then the server's. */
  pause() {
    this.ws.pause();
  }

  resume() {
    this.ws.resume();
  }

  /** Resolves with `{ code, reason }` once the connection is closed. */
  closed(timeoutMs = 5_000) {
    return withTimeout(this.#closed, timeoutMs, "the connection closes");
  }

  close() {
    this.ws.terminate();
  }
}

// Baseline for the load test: Node Socket.IO 4 with the Redis adapter,
// speaking the same small contract as the gateway:
//   $join(room)                 -> joins the room, ack {"ok":true}
//   $leave(room)                -> leaves the room, ack {"ok":true}
//   $publish(room, event, ...a) -> emits event(...a) to the room except the sender, ack {"ok":true}
// Every socket is also in the room named after its id, so `$publish` to a
// socket id is a targeted emit (cluster-wide through the adapter).
//
// Env: PORT (default 3000), HOST (default 127.0.0.1), REDIS_URL (optional;
// without it the node runs alone with the in-memory adapter), COMPRESSION
// (1: WebSocket permessage-deflate for clients that offer it, messages of
// COMPRESSION_THRESHOLD bytes [1024] and more, as the gateway's
// `[server.compression]`; ws's other defaults: zlib level 6, context
// takeover; default 0: off, engine.io's default).
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");

const PORT = Number(process.env.PORT || 3000);
const HOST = process.env.HOST || "127.0.0.1";
const REDIS_URL = process.env.REDIS_URL || "";
const COMPRESSION = process.env.COMPRESSION === "1";
const COMPRESSION_THRESHOLD = Number(process.env.COMPRESSION_THRESHOLD || 1024);

function ok(ack) {
  if (typeof ack === "function") ack({ ok: true });
}

function fail(ack, error) {
  if (typeof ack === "function") ack({ ok: false, error });
}

function popAck(args) {
  return typeof args[args.length - 1] === "function" ? args.pop() : undefined;
}

async function main() {
  const httpServer = http.createServer();
  const io = new Server(httpServer, {
    serveClient: false,
    // engine.io hands this to ws; false (off) is its default.
    perMessageDeflate: COMPRESSION ? { threshold: COMPRESSION_THRESHOLD } : false,
  });

  if (REDIS_URL) {
    const { createClient } = require("redis");
    const { createAdapter } = require("@socket.io/redis-adapter");
    const pubClient = createClient({ url: REDIS_URL });
    const subClient = pubClient.duplicate();
    pubClient.on("error", (err) => console.error("redis pub error:", err.message));
    subClient.on("error", (err) => console.error("redis sub error:", err.message));
    await Promise.all([pubClient.connect(), subClient.connect()]);
    io.adapter(createAdapter(pubClient, subClient));
  }

  io.on("connection", (socket) => {
    socket.on("$join", (...args) => {
      const ack = popAck(args);
      const room = args[0];
      if (typeof room !== "string" || room === "") return fail(ack, "room must be a non-empty string");
      socket.join(room);
      ok(ack);
    });

    socket.on("$leave", (...args) => {
      const ack = popAck(args);
      const room = args[0];
      if (typeof room !== "string" || room === "") return fail(ack, "room must be a non-empty string");
      socket.leave(room);
      ok(ack);
    });

    socket.on("$publish", (...args) => {
      const ack = popAck(args);
      const [room, event, ...rest] = args;
      if (typeof room !== "string" || room === "") return fail(ack, "room must be a non-empty string");
      if (typeof event !== "string" || event === "") return fail(ack, "event must be a non-empty string");
      socket.to(room).emit(event, ...rest);
      ok(ack);
    });
  });

  httpServer.listen(PORT, HOST, () => {
    const addr = httpServer.address();
    console.log(
      `node baseline listening on ${addr.address}:${addr.port} (adapter: ${REDIS_URL ? "redis" : "memory"}, ` +
        `compression: ${COMPRESSION ? `on from ${COMPRESSION_THRESHOLD} bytes` : "off"})`,
    );
  });

  const stop = () => {
    io.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

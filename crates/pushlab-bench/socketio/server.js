// The socket.io 4 peer for pushlab's benchmarks.
//
// It does what pushlab does for a chat message, and nothing else: every "msg"
// event from any client goes to every connected client, over engine.io's
// websocket or polling transport, whichever the client chose. Node is single
// threaded, so pinned to one core it gets the same CPU as `pushlab --workers 1`.
//
//   node server.js [--addr 127.0.0.1:0] [--redis redis://HOST:PORT/DB]
//
// With --redis, several of these processes share their clients: an event
// emitted on one node reaches the clients of every node through a Redis
// stream (@socket.io/redis-streams-adapter), as pushlab's nodes share a room
// through Redis. That is how socket.io is scaled out; crates/pushlab-bench/
// cluster-compare.sh puts two of them behind nginx.
//
// It runs as socket.io's performance guide says to run it: with `ws`'s native
// add-ons `bufferutil` (frame masking) and `utf-8-validate` installed
// (package.json's optionalDependencies, from the lockfile). Required here so
// that a peer without them stops at once instead of being measured slower.
//
// Prints "socketio listening on http://ADDR" once it is ready, like pushlab.
"use strict";

require("bufferutil");
require("utf-8-validate");
const http = require("node:http");
const { Server } = require("socket.io");

/** The value after `--name`, or `fallback`. */
function flag(argv, name, fallback) {
  const at = argv.indexOf(name);
  return at >= 0 ? argv[at + 1] : fallback;
}

function parseAddr(addr) {
  const colon = addr.lastIndexOf(":");
  return { host: addr.slice(0, colon), port: Number(addr.slice(colon + 1)) };
}

/** The Redis streams adapter on a client of `url`, connected. */
async function redisAdapter(url) {
  const { createClient } = require("redis");
  const { createAdapter } = require("@socket.io/redis-streams-adapter");
  const client = createClient({ url });
  client.on("error", (err) => console.error(`redis: ${err.message}`));
  await client.connect();
  return { adapter: createAdapter(client), client };
}

async function main() {
  const argv = process.argv.slice(2);
  const { host, port } = parseAddr(flag(argv, "--addr", "127.0.0.1:0"));
  const redisUrl = flag(argv, "--redis", null);
  const redis = redisUrl ? await redisAdapter(redisUrl) : null;
  const httpServer = http.createServer();
  // Defaults otherwise: pingInterval 25 s, pingTimeout 20 s, no compression
  // for websocket frames. Both transports are allowed; clients pick one and
  // never upgrade, as the load generator asks for exactly one.
  const io = new Server(httpServer, {
    transports: ["polling", "websocket"],
    serveClient: false,
    ...(redis ? { adapter: redis.adapter } : {}),
  });

  io.on("connection", (socket) => {
    socket.on("msg", (payload) => io.emit("msg", payload));
  });

  httpServer.listen(port, host, () => {
    const a = httpServer.address();
    console.log(`socketio listening on http://${a.address}:${a.port}`);
  });

  const stop = () => {
    io.close();
    httpServer.close(() => process.exit(0));
    redis?.client.quit().catch(() => {});
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

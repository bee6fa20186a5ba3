// The socket.io 4 peer for pushlab's benchmarks.
//
// It does what pushlab does for a chat message, and nothing else: every "msg"
// event from any client goes to every connected client, over engine.io's
// websocket or polling transport, whichever the client chose. Node is single
// threaded, so pinned to one core it gets the same CPU as `pushlab --workers 1`.
//
//   node server.js [--addr 127.0.0.1:0]
//
// Prints "socketio listening on http://ADDR" once it is ready, like pushlab.
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");

function parseAddr(argv) {
  const at = argv.indexOf("--addr");
  const addr = at >= 0 ? argv[at + 1] : "127.0.0.1:0";
  const colon = addr.lastIndexOf(":");
  return { host: addr.slice(0, colon), port: Number(addr.slice(colon + 1)) };
}

const { host, port } = parseAddr(process.argv.slice(2));
const httpServer = http.createServer();
// Defaults otherwise: pingInterval 25 s, pingTimeout 20 s, no compression
// for websocket frames. Both transports are allowed; clients pick one and
// never upgrade, as the load generator asks for exactly one.
const io = new Server(httpServer, {
  transports: ["polling", "websocket"],
  serveClient: false,
});

io.on("connection", (socket) => {
  socket.on("msg", (payload) => io.emit("msg", payload));
});

httpServer.listen(port, host, () => {
  const a = httpServer.address();
  console.log(`socketio listening on http://${a.address}:${a.port}`);
});

function stop() {
  io.close();
  httpServer.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

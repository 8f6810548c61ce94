// Benchmark baseline "raw": the smallest JavaScript Durable Object that fans
// a published string out. WebSockets are accepted with the Hibernation API;
// each POSTed body is sent, unchanged, to every socket from getWebSockets().
// This is the runtime's ceiling: nothing but `send`.
//
// Routes (same paths as Herald, so the load generator only changes framing):
//   GET  /v1/rooms/{room}/ws        WebSocket upgrade; every text frame a
//                                   socket sends is broadcast to all sockets
//                                   of the room, the sender included
//   POST /v1/rooms/{room}/messages  body = a string to broadcast
//   GET  /healthz

export class Room {
  constructor(ctx) {
    this.ctx = ctx;
  }

  async fetch(request) {
    if (request.headers.get("Upgrade") === "websocket") {
      const [client, server] = Object.values(new WebSocketPair());
      this.ctx.acceptWebSocket(server);
      return new Response(null, { status: 101, webSocket: client });
    }
    this.broadcast(await request.text());
    return new Response("ok");
  }

  webSocketMessage(_ws, message) {
    this.broadcast(message);
  }

  broadcast(message) {
    for (const ws of this.ctx.getWebSockets()) {
      try {
        ws.send(message);
      } catch {
        // a closing socket; the others still get it
      }
    }
  }

  webSocketClose(ws, code) {
    try {
      ws.close(code === 1005 || code === 1006 ? 1000 : code);
    } catch {}
  }
}

const ROUTE = /^\/v1\/rooms\/([^/]+)\/(ws|messages)$/;

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/healthz") return Response.json({ ok: true });
    const m = ROUTE.exec(url.pathname);
    if (!m) return new Response("not found", { status: 404 });
    return env.ROOM.get(env.ROOM.idFromName(m[1])).fetch(request);
  },
};

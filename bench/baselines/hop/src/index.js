// Benchmark baseline "hop": raw's fan-out with Herald's shape and nothing
// else. The sockets live in a Relay object; each published string goes to
// the room's Room object, which numbers it (and, with HOP_STORE=1, stores it
// in SQLite first), and comes back to the Relay, which sends it to every
// socket, the sender included. No auth, no framing, no JSON.
//
// Run once per variant, it splits Herald's fixed cost per message into the
// runtime's part (raw), the hop's (fetch or RPC), the durable write's, and
// the rest, which is Herald's own code.
//
// Routes (same paths as Herald and raw):
//   GET /v1/rooms/{room}/ws   WebSocket upgrade
//   GET /healthz

import { DurableObject } from "cloudflare:workers";

export class Room extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.store = env.HOP_STORE === "1";
    if (this.store) {
      ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY, data TEXT NOT NULL)");
      this.seq = ctx.storage.sql.exec("SELECT coalesce(max(seq), 0) AS s FROM messages").one().s;
    } else {
      this.seq = 0;
    }
  }

  /** The RPC entry. */
  publish(data) {
    this.seq += 1;
    if (this.store) this.ctx.storage.sql.exec("INSERT INTO messages (seq, data) VALUES (?, ?)", this.seq, data);
    return data;
  }

  /** The fetch entry: the same, over HTTP framing. */
  async fetch(request) {
    return new Response(this.publish(await request.text()));
  }
}

export class Relay extends DurableObject {
  async fetch(request) {
    const [client, server] = Object.values(new WebSocketPair());
    this.ctx.acceptWebSocket(server, [decodeURIComponent(new URL(request.url).pathname.split("/")[3])]);
    return new Response(null, { status: 101, webSocket: client });
  }

  async webSocketMessage(ws, message) {
    const [room] = this.ctx.getTags(ws);
    const stub = this.env.ROOM.get(this.env.ROOM.idFromName(room));
    const out =
      this.env.HOP_LINK === "rpc"
        ? await stub.publish(message)
        : await (await stub.fetch("http://room/publish", { method: "POST", body: message })).text();
    for (const socket of this.ctx.getWebSockets()) {
      try {
        socket.send(out);
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

const ROUTE = /^\/v1\/rooms\/([^/]+)\/ws$/;

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/healthz") return Response.json({ ok: true });
    const m = ROUTE.exec(url.pathname);
    if (!m || request.headers.get("Upgrade") !== "websocket") return new Response("not found", { status: 404 });
    // One relay per room, as Herald has per room and region (one region here).
    return env.RELAY.get(env.RELAY.idFromName(`${decodeURIComponent(m[1])}@weur`)).fetch(request);
  },
};

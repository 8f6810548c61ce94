// Benchmark baseline "partyserver": PartyKit's room server (npm
// `partyserver`, pinned in package.json) with hibernation on. Each published
// string is sent with `this.broadcast` to every connection of the room.
//
// Routes (same paths as Herald, so the load generator only changes framing):
//   GET  /v1/rooms/{room}/ws        WebSocket upgrade (partyserver accepts it);
//                                   every text frame a connection sends is
//                                   broadcast to all, the sender included
//   POST /v1/rooms/{room}/messages  body = a string to broadcast
//   GET  /healthz
//
// The stub is addressed with idFromName, so partyserver reads its name from
// ctx.id.name; getServerByName would add a setName RPC to every publish.

import { Server } from "partyserver";

export class Room extends Server {
  static options = { hibernate: true };

  onMessage(_connection, message) {
    this.broadcast(message);
  }

  async onRequest(request) {
    this.broadcast(await request.text());
    return new Response("ok");
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

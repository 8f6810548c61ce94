// Where WebSockets are blocked, the SDK falls back to SSE (fetch-streamed)
// and publishes over HTTP: the app sees the same messages and acks.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { room } from "../herald.js";
import { adminToken, startServer, uniqueRoom } from "./support/server.mjs";
import { waitFor } from "./support/wait.mjs";

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.stop(); });

/** A network that kills every WebSocket before it opens. */
class BlockedWebSocket {
  static attempts = 0;
  constructor() {
    BlockedWebSocket.attempts++;
    this.readyState = 0;
    setTimeout(() => {
      this.readyState = 3;
      this.onclose?.({ code: 1006, reason: "blocked by a proxy" });
    }, 5);
  }
  send() {}
  close() {}
}

test("blocked WebSockets: falls back to SSE, receives and publishes", async () => {
  const name = uniqueRoom("sse");
  const tok = adminToken();
  const viaSse = room(server.url, name, { token: tok, WebSocket: BlockedWebSocket, base: 20, cap: 100 });
  const states = [];
  const got = [];
  viaSse.on("state", (s) => states.push(s));
  viaSse.on("message", (m) => got.push(m));
  await waitFor(() => viaSse.state === "open", "open over SSE");
  assert.equal(BlockedWebSocket.attempts, 2, "two failed sockets, then SSE");
  assert.ok(states.some((s) => s.reason?.code === "sse"), JSON.stringify(states));

  const ws = room(server.url, name, { token: tok, WebSocket });
  assert.equal(await ws.publish({ from: "ws" }), 1);
  assert.equal(await viaSse.publish({ from: "sse" }), 2);
  await waitFor(() => got.length === 2, "both messages over SSE");
  assert.deepEqual(got.map((m) => [m.seq, m.data.from]), [[1, "ws"], [2, "sse"]]);
  const page = await viaSse.history({ since: 0 });
  assert.deepEqual(page.messages.map((m) => m.seq), [1, 2]);
  viaSse.close();
  ws.close();
});

test("SSE only: resumes after the stream drops, nothing lost", async () => {
  const name = uniqueRoom("sse-resume");
  const tok = adminToken();
  let live = null;
  // A fetch that lets the test cut the event stream.
  const cuttable = (url, init = {}) => {
    if (!String(url).includes("/events")) return fetch(url, init);
    const abort = new AbortController();
    init.signal?.addEventListener("abort", () => abort.abort());
    live = abort;
    return fetch(url, { ...init, signal: abort.signal });
  };
  const r = room(server.url, name, { token: tok, transports: ["sse"], fetch: cuttable, base: 20, cap: 100 });
  const got = [];
  r.on("message", (m) => got.push(m.seq));
  await waitFor(() => r.state === "open", "open");
  const w = room(server.url, name, { token: tok, WebSocket });
  await w.publish(1);
  await waitFor(() => got.length === 1, "first message");
  live.abort();
  await w.publish(2);
  await w.publish(3);
  await waitFor(() => got.length === 3, "the rest after the resume");
  assert.deepEqual(got, [1, 2, 3]);
  r.close();
  w.close();
});

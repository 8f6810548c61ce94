// Publishing through the SDK against a real runtime: acks carry the seqs,
// another client gets each message once in order, ephemeral messages are
// acked without a seq, refusals reject with their code and nothing else is
// lost, and publishes made before the connection opened wait for it.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { room } from "../herald.js";
import { adminToken, startServer, token, uniqueRoom } from "./support/server.mjs";
import { waitFor } from "./support/wait.mjs";

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.stop(); });

test("publishes resolve with their seqs and reach another client once each, in order", async () => {
  const name = uniqueRoom("pub");
  const tok = adminToken();
  const reader = room(server.url, name, { token: tok, WebSocket });
  const got = [];
  reader.on("message", (m) => got.push(m));
  await waitFor(() => reader.state === "open", "the reader to open");
  // Published before the writer's connection opened: they wait for it.
  const writer = room(server.url, name, { token: tok, WebSocket });
  const seqs = await Promise.all(Array.from({ length: 30 }, (_, i) => writer.publish({ i })));
  assert.deepEqual(seqs, Array.from({ length: 30 }, (_, i) => i + 1));
  await waitFor(() => got.length >= 30, "30 messages at the reader");
  assert.deepEqual(got.map((m) => m.seq), seqs);
  assert.deepEqual(got.map((m) => m.data.i), seqs.map((s) => s - 1));
  assert.ok(got.every((m) => m.from === "tester" && typeof m.mid === "string"), "from and an auto mid");
  assert.equal(new Set(got.map((m) => m.mid)).size, 30, "mids are unique");
  reader.close();
  writer.close();
});

test("an ephemeral publish is acked with null and delivered, never stored", async () => {
  const name = uniqueRoom("eph");
  const tok = adminToken();
  const a = room(server.url, name, { token: tok, WebSocket });
  const b = room(server.url, name, { token: tok, WebSocket });
  const got = [];
  b.on("message", (m) => got.push(m));
  await waitFor(() => a.state === "open" && b.state === "open", "both open");
  assert.equal(await a.publish({ cursor: [1, 2] }, { ephemeral: true }), null);
  await waitFor(() => got.length === 1, "the ephemeral message");
  assert.equal(got[0].eph, true);
  assert.equal(got[0].seq, undefined);
  assert.deepEqual((await a.history()).messages, []);
  a.close();
  b.close();
});

test("refusals reject with the server's code; the connection and later publishes go on", async () => {
  const name = uniqueRoom("refused");
  const a = room(server.url, name, { token: adminToken(), WebSocket });
  await assert.rejects(a.publish("x".repeat(70_000)), (e) => e.code === "too_large");
  const readOnly = room(server.url, name, { token: token({ sub: "ro", exp: Math.floor(Date.now() / 1000) + 600, rooms: { [name]: ["sub"] } }), WebSocket });
  await assert.rejects(readOnly.publish("nope"), (e) => e.code === "forbidden");
  assert.equal(await a.publish("fine"), 1, "the refused ones took no seq");
  assert.equal(a.state, "open");
  assert.equal(readOnly.state, "open");
  await assert.rejects(a.publish(undefined), (e) => e.code === "bad_frame");
  a.close();
  readOnly.close();
  await assert.rejects(a.publish("after close"), (e) => e.code === "closed");
});

// Read marks through the SDK against a real runtime: `read(seq)` moves the
// user's mark on every device (a `read` event and `readSeq` in each
// region), a reconnect is welcomed with the unread count (`room.unread`),
// a lower mark is not sent, a mark asked for before the connection opened
// waits for it, and an anonymous reader's read is refused with an error.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { room } from "../herald.js";
import { adminToken, startServer, token, uniqueRoom } from "./support/server.mjs";
import { httpPublish, waitFor } from "./support/wait.mjs";

let server;
before(async () => { server = await startServer({ vars: { HERALD_PUBLIC_ROOMS: "open:*" } }); });
after(async () => { await server?.stop(); });

const userToken = (sub) => token({ sub, exp: Math.floor(Date.now() / 1000) + 600, rooms: { "*": ["sub"] } });

test("a read mark reaches every device of the user, and the next welcome counts what is unread", async () => {
  const name = uniqueRoom("open:reads");
  for (let i = 1; i <= 5; i++) await httpPublish(server.url, name, adminToken(), { i });
  const ana = userToken("ana");
  const a = room(server.url, name, { token: ana, WebSocket, region: "weur" });
  const b = room(server.url, name, { token: ana, WebSocket, region: "apac" });
  const events = [];
  b.on("read", (e) => events.push(e));
  await waitFor(() => a.state === "open" && b.state === "open", "both devices open");
  assert.equal(a.unread, null, "a room without read marks: no count in the welcome");
  assert.equal(a.readSeq, null);

  a.read(3);
  await waitFor(() => b.readSeq === 3, "the mark on the other device");
  assert.deepEqual(events, [{ seq: 3 }]);
  await waitFor(() => a.readSeq === 3, "the mark on the reading device");

  const c = room(server.url, name, { token: ana, WebSocket, region: "apac" });
  await waitFor(() => c.state === "open", "a third device");
  assert.equal(c.unread, 2, "4 and 5 are unread");
  assert.equal(c.readSeq, 3, "the welcome carries the mark");

  a.read(1); // lower: not even sent
  assert.equal(a.pendingRead, null);
  a.read(4);
  await waitFor(() => b.readSeq === 4, "the next mark");
  assert.deepEqual(events, [{ seq: 3 }, { seq: 4 }], "never back to 1");

  // Asked before the connection opened: sent once it does.
  const d = room(server.url, name, { token: ana, WebSocket });
  d.read(5);
  await waitFor(() => b.readSeq === 5, "the early mark, once d opened");
  assert.equal(d.readSeq, 5);
  assert.throws(() => d.read(-1), TypeError);
  assert.throws(() => d.read(1.5), TypeError);
  for (const r of [a, b, c, d]) r.close();
});

test("an anonymous reader has no mark: its read is refused with an error", async () => {
  const name = uniqueRoom("open:anon");
  const anon = room(server.url, name, { WebSocket });
  const errors = [];
  anon.on("error", (e) => errors.push(e));
  await waitFor(() => anon.state === "open", "the anonymous reader");
  anon.read(1);
  await waitFor(() => errors.length === 1, "the refusal");
  assert.equal(errors[0].code, "unauthorized");
  assert.equal(anon.pendingRead, null, "not retried");
  assert.equal(anon.state, "open");
  anon.close();
});

// Publishes waiting for their ack are bounded in count and in bytes: past
// either, publish rejects at once with `overloaded`, and what already
// waited is still sent when the connection opens.
import { test } from "node:test";
import assert from "node:assert/strict";
import { room } from "../herald.js";
import { FakeClock, fakeFetch, fakeWebSocketClass, settle } from "./support/fake.mjs";

function setup(options) {
  const clock = new FakeClock();
  const Socket = fakeWebSocketClass(clock);
  const r = room("http://herald.test", "r", { clock, random: () => 0.5, WebSocket: Socket, fetch: fakeFetch(426, "upgrade_required"), token: "t", ...options });
  return { clock, Socket, r };
}

test("past maxQueued publishes, the next is refused; the queued ones go on open", async () => {
  const s = setup({ maxQueued: 3 });
  const waiting = [1, 2, 3].map((i) => s.r.publish({ i }));
  await assert.rejects(s.r.publish({ i: 4 }), (e) => e.code === "overloaded" && e.retryable);
  await settle();
  const socket = s.Socket.instances[0];
  socket.welcome();
  const sent = socket.sent.map((t) => JSON.parse(t)).filter((f) => f.t === "pub");
  assert.deepEqual(sent.map((f) => f.data.i), [1, 2, 3]);
  sent.forEach((f, n) => socket.frame({ t: "ack", id: f.id, seq: n + 1 }));
  assert.deepEqual(await Promise.all(waiting), [1, 2, 3]);
  // Acknowledged ones free their place.
  const next = s.r.publish({ i: 5 });
  const f = JSON.parse(socket.sent.at(-1));
  socket.frame({ t: "ack", id: f.id, seq: 4 });
  assert.equal(await next, 4);
  s.r.close();
});

test("past maxQueuedBytes, a publish is refused before it is queued", async () => {
  const s = setup({ maxQueuedBytes: 300 });
  const first = s.r.publish("x".repeat(150));
  await assert.rejects(s.r.publish("y".repeat(150)), (e) => e.code === "overloaded");
  const small = s.r.publish("z");
  await settle();
  s.Socket.instances[0].welcome();
  const sent = s.Socket.instances[0].sent.map((t) => JSON.parse(t)).filter((f) => f.t === "pub");
  assert.deepEqual(sent.map((f) => f.data.length), [150, 1], "the refused one was never sent");
  s.r.close();
  await assert.rejects(first, (e) => e.code === "closed");
  await assert.rejects(small, (e) => e.code === "closed");
});

// Reconnect timing on a virtual clock: each delay within the full-jitter
// bound of its attempt, the bound reset only after a connection stayed up
// for minUptime, a connect that hangs cut at connectTimeout, and the
// browser's `online` event skipping the wait.
import { test } from "node:test";
import assert from "node:assert/strict";
import { room } from "../herald.js";
import { backoffCeiling } from "../backoff.js";
import { FakeClock, fakeFetch, fakeWebSocketClass, settle } from "./support/fake.mjs";

const opts = { base: 100, cap: 3_000, minUptime: 1_000, connectTimeout: 2_000 };

function setup(random) {
  const clock = new FakeClock();
  const Socket = fakeWebSocketClass(clock);
  // The handshake fails and the probe says the server is overloaded: transient.
  const r = room("http://herald.test", "r", { ...opts, clock, random, WebSocket: Socket, fetch: fakeFetch(503, "overloaded"), token: "t" });
  const states = [];
  r.on("state", (s) => states.push(s));
  return { clock, Socket, r, states };
}

/** Fail every connect at once until `n` attempts were made; the delays between them. */
async function failAttempts({ clock, Socket }, n) {
  const delays = [];
  await settle();
  for (let i = 0; i < n; i++) {
    const socket = Socket.instances.at(-1);
    socket.serverClose(1006);
    await settle();
    const due = clock.nextDeadline();
    assert.ok(due !== null, "a reconnect is scheduled");
    const before = Socket.instances.length;
    await clock.advance(due - clock.now());
    assert.equal(Socket.instances.length, before + 1, "the timer opened a new socket");
    delays.push(Socket.instances.at(-1).createdAt - socket.createdAt);
  }
  return delays;
}

test("each delay is within [0, min(cap, base * 2^attempt)]", async () => {
  let seed = 11;
  const random = () => ((seed = (seed * 16807) % 2147483647) - 1) / 2147483646;
  const s = setup(random);
  const delays = await failAttempts(s, 40);
  delays.forEach((d, attempt) => {
    assert.ok(d >= 0 && d <= backoffCeiling(attempt, opts), `attempt ${attempt}: ${d} ms > ${backoffCeiling(attempt, opts)}`);
  });
  assert.ok(delays.slice(10).some((d) => d > opts.cap / 2), "late attempts reach toward the cap");
  assert.equal(s.states.at(-1).state, "connecting" === s.states.at(-1).state ? "connecting" : "reconnecting");
  assert.equal(s.states.at(-1).reason.code, 1006);
  s.r.close();
});

test("the bound grows while connections die young and resets after minUptime", async () => {
  const s = setup(() => 0.999999); // draw the ceiling itself
  const grown = await failAttempts(s, 4);
  assert.deepEqual(grown, [99, 199, 399, 799]);

  // Welcomed, then dropped before minUptime: the bound keeps growing.
  let socket = s.Socket.instances.at(-1);
  socket.welcome();
  assert.equal(s.r.state, "open");
  await s.clock.advance(opts.minUptime - 1);
  socket.serverClose(1011);
  await settle();
  assert.equal(s.clock.nextDeadline() - s.clock.now(), 1599);

  // Welcomed and up for minUptime: the next drop starts from base again.
  await s.clock.advance(1599);
  socket = s.Socket.instances.at(-1);
  socket.welcome();
  await s.clock.advance(opts.minUptime);
  socket.serverClose(1001);
  await settle();
  assert.equal(s.clock.nextDeadline() - s.clock.now(), 99);
  s.r.close();
});

test("a connect with no welcome is cut at connectTimeout and retried", async () => {
  const s = setup(() => 0);
  await settle();
  const first = s.Socket.instances[0];
  await s.clock.advance(opts.connectTimeout - 1);
  assert.equal(s.Socket.instances.length, 1);
  await s.clock.advance(1);
  assert.equal(first.closedWith, 4000, "the hung socket was closed");
  assert.equal(s.r.state, "reconnecting");
  await s.clock.advance(0);
  assert.equal(s.Socket.instances.length, 2, "and a new one opened");
  s.r.close();
});

test("the browser's online event reconnects at once", async (t) => {
  const handlers = {};
  globalThis.addEventListener = (type, fn) => { handlers[type] = fn; };
  globalThis.removeEventListener = (type) => { delete handlers[type]; };
  t.after(() => { delete globalThis.addEventListener; delete globalThis.removeEventListener; });
  const s = setup(() => 0.999999);
  await failAttempts(s, 6);
  s.Socket.instances.at(-1).serverClose(1006);
  await settle();
  assert.ok(s.clock.nextDeadline() - s.clock.now() > 3_000 - 2, "a long wait is scheduled");
  const before = s.Socket.instances.length;
  handlers.online();
  await settle();
  assert.equal(s.Socket.instances.length, before + 1, "online reconnected without waiting");
  s.r.close();
  assert.equal(handlers.online, undefined, "close() removed the listener");
});

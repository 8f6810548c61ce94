// What the client does on each kind of close, against a scripted socket:
// terminal codes stop it for good, transient ones bring it back resuming,
// 4001 fetches a fresh token first.
import { test } from "node:test";
import assert from "node:assert/strict";
import { room } from "../herald.js";
import { FakeClock, fakeFetch, fakeWebSocketClass, settle } from "./support/fake.mjs";

function setup(options = {}) {
  const clock = new FakeClock();
  const Socket = fakeWebSocketClass(clock);
  const r = room("http://herald.test", "r", { clock, random: () => 0.5, WebSocket: Socket, fetch: fakeFetch(426, "upgrade_required"), token: "t", ...options });
  const states = [];
  const errors = [];
  r.on("state", (s) => states.push(s));
  r.on("error", (e) => errors.push(e));
  return { clock, Socket, r, states, errors };
}

for (const code of [1008, 1009, 3500, 4500, 4999]) {
  test(`close ${code} is terminal: closed, no reconnect, waiting publishes refused`, async () => {
    const s = setup();
    await settle();
    s.Socket.instances[0].welcome();
    const pending = s.r.publish("unacknowledged").catch((e) => e);
    s.Socket.instances[0].serverClose(code, "policy");
    await settle();
    assert.equal(s.r.state, "closed");
    assert.deepEqual(s.states.at(-1).reason, { code, message: "policy" });
    const refused = await pending;
    assert.equal(refused.code, "closed");
    assert.equal(refused.closeCode, code);
    assert.equal(s.errors.length, 1, "one error event tells the app");
    await s.clock.advance(120_000);
    assert.equal(s.Socket.instances.length, 1, "never reconnected");
  });
}

for (const code of [1001, 1006, 1011, 4000, 4002, 4499]) {
  test(`close ${code} is transient: reconnects resuming from the last message`, async () => {
    const s = setup();
    await settle();
    const first = s.Socket.instances[0];
    first.welcome({ epoch: "ep", seq: 4 });
    first.frame({ t: "msg", seq: 5, ts: 1, data: "x", from: null });
    first.serverClose(code);
    await settle();
    assert.equal(s.r.state, "reconnecting");
    assert.equal(s.states.at(-1).reason.code, code);
    await s.clock.advance(s.clock.nextDeadline() - s.clock.now());
    const second = s.Socket.instances[1];
    assert.ok(second, "reconnected");
    assert.equal(second.url.searchParams.get("since"), "5");
    assert.equal(second.url.searchParams.get("epoch"), "ep");
    second.welcome({ epoch: "ep", seq: 5, recovered: true });
    assert.equal(s.r.state, "open");
    s.r.close();
  });
}

test("4001 gets a fresh token, then reconnects at once with it", async () => {
  let issued = 0;
  const s = setup({ token: undefined, getToken: async () => `tok${++issued}` });
  await settle();
  await settle();
  assert.equal(s.Socket.instances[0].url.searchParams.get("token"), "tok1");
  s.Socket.instances[0].welcome();
  s.Socket.instances[0].serverClose(4001, "token expired");
  await settle();
  await settle();
  assert.equal(s.Socket.instances.length, 2, "reconnected without a backoff wait");
  assert.equal(s.Socket.instances[1].url.searchParams.get("token"), "tok2");
  s.r.close();
});

test("4001 without getToken stops: a fixed token cannot be renewed", async () => {
  const s = setup();
  await settle();
  s.Socket.instances[0].welcome();
  s.Socket.instances[0].serverClose(4001, "token expired");
  await settle();
  assert.equal(s.r.state, "closed");
  assert.equal(s.states.at(-1).reason.code, 4001);
});

test("a refused handshake is diagnosed over HTTP: 403 stops with forbidden", async () => {
  const s = setup({ fetch: fakeFetch(403, "forbidden") });
  await settle();
  s.Socket.instances[0].serverClose(1006);
  await settle();
  await settle();
  assert.equal(s.r.state, "closed");
  assert.equal(s.states.at(-1).reason.code, "forbidden");
  await s.clock.advance(60_000);
  assert.equal(s.Socket.instances.length, 1);
});

test("a gap in live seqs resumes instead of delivering past it", async () => {
  const s = setup();
  const got = [];
  s.r.on("message", (m) => got.push(m.seq));
  await settle();
  const first = s.Socket.instances[0];
  first.welcome({ epoch: "ep", seq: 1 });
  first.frame([{ t: "msg", seq: 2, ts: 1, data: 0, from: null }, { t: "msg", seq: 4, ts: 1, data: 0, from: null }]);
  await settle();
  assert.deepEqual(got, [2]);
  const second = s.Socket.instances[1];
  assert.ok(second, "resumed at once");
  assert.equal(second.url.searchParams.get("since"), "2");
  second.welcome({ epoch: "ep", seq: 4, recovered: true });
  second.frame([{ t: "msg", seq: 2, ts: 1, data: 0, from: null }, { t: "msg", seq: 3, ts: 1, data: 0, from: null }, { t: "msg", seq: 4, ts: 1, data: 0, from: null }]);
  assert.deepEqual(got, [2, 3, 4], "each once, in order");
  s.r.close();
});

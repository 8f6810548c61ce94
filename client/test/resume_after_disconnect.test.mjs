// A socket killed under the SDK: it resumes from its last message and the
// app gets every message exactly once, in order, including those published
// over HTTP while it was away; a publish whose ack was lost is sent again
// under the same mid and stored once.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { room } from "../herald.js";
import { adminToken, startServer, uniqueRoom } from "./support/server.mjs";
import { httpPublish, recordingWebSocket, storedMessages, waitFor } from "./support/wait.mjs";

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.stop(); });

test("killed socket: resumes and misses nothing published meanwhile", async () => {
  const name = uniqueRoom("resume");
  const tok = adminToken();
  const Socket = recordingWebSocket();
  const sub = room(server.url, name, { token: tok, WebSocket: Socket, base: 50, cap: 200 });
  const got = [];
  const states = [];
  sub.on("message", (m) => got.push(m.seq));
  sub.on("state", (s) => states.push(s));
  await waitFor(() => sub.state === "open", "open");
  for (let i = 1; i <= 5; i++) await httpPublish(server.url, name, tok, { i });
  await waitFor(() => got.length === 5, "the first 5");

  Socket.all.at(-1).terminate();
  for (let i = 6; i <= 15; i++) await httpPublish(server.url, name, tok, { i });
  await waitFor(() => got.length >= 15 && sub.state === "open", "the other 10 after the resume");
  assert.deepEqual(got, Array.from({ length: 15 }, (_, i) => i + 1), "each once, in order");
  assert.ok(states.some((s) => s.state === "reconnecting" && s.reason.code === 1006), JSON.stringify(states));
  const resumed = new URL(Socket.all.at(-1).url);
  assert.equal(resumed.searchParams.get("since"), "5");
  assert.ok(resumed.searchParams.get("epoch"));
  sub.close();
});

test("a publish whose ack was lost is stored once", async () => {
  const name = uniqueRoom("lostack");
  const tok = adminToken();
  let dropped = false;
  const Base = recordingWebSocket();
  // Kill the socket the moment the first ack arrives, before the SDK sees it.
  class LosesFirstAck extends Base {
    set onmessage(fn) {
      super.onmessage = fn && ((ev) => {
        if (!dropped && String(ev.data).includes('"t":"ack"')) {
          dropped = true;
          this.terminate();
          return;
        }
        fn(ev);
      });
    }
    get onmessage() {
      return super.onmessage;
    }
  }
  const pub = room(server.url, name, { token: tok, WebSocket: LosesFirstAck, base: 50, cap: 200 });
  const got = [];
  pub.on("message", (m) => got.push(m));
  const seq = await pub.publish({ once: true });
  assert.ok(dropped, "the first ack was lost");
  assert.equal(seq, 1, "the resend was acked with the original seq");
  assert.ok(LosesFirstAck.all.length >= 2, "it reconnected");
  assert.equal(await pub.publish({ next: true }), 2);
  await waitFor(() => got.length === 2, "both messages delivered");
  assert.deepEqual(got.map((m) => m.seq), [1, 2]);
  const stored = await storedMessages(server.url, name, tok);
  assert.deepEqual(stored.map((m) => m.data), [{ once: true }, { next: true }], "stored exactly once");
  pub.close();
});

// getToken against a real runtime: a token that expires on an open socket
// (closed with 4001) is replaced and the room resumes with nothing lost; a
// token refused at connect (401) is replaced before giving up.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { room } from "../herald.js";
import { adminToken, startServer, token, uniqueRoom } from "./support/server.mjs";
import { httpPublish, waitFor } from "./support/wait.mjs";

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.stop(); });

const nowS = () => Math.floor(Date.now() / 1000);

test("an expiring token is refreshed on 4001 and the room resumes", async () => {
  const name = uniqueRoom("refresh");
  const issued = [];
  const getToken = async () => {
    // The first token lives 3 s (the server allows 2 s of skew); the next ones an hour.
    const ttl = issued.length === 0 ? 3 : 3600;
    const t = token({ sub: "ana", exp: nowS() + ttl, rooms: { [name]: ["sub", "pub"] } });
    issued.push(ttl);
    return t;
  };
  const r = room(server.url, name, { getToken, WebSocket, base: 50, cap: 500 });
  const states = [];
  const got = [];
  r.on("state", (s) => states.push(s));
  r.on("message", (m) => got.push(m.seq));
  await waitFor(() => r.state === "open", "open");
  assert.equal(await r.publish("before"), 1);

  // Silent socket: the relay's alarm closes it at expiry with 4001.
  await waitFor(() => states.some((s) => s.reason?.code === 4001), "the 4001 close", 20_000);
  await httpPublish(server.url, name, adminToken(), "while renewing");
  await waitFor(() => r.state === "open" && issued.length === 2, "reopened with a fresh token");
  assert.equal(await r.publish("after"), 3);
  await waitFor(() => got.length === 3, "all three messages");
  assert.deepEqual(got, [1, 2, 3]);
  assert.deepEqual(issued, [3, 3600], "getToken was asked exactly once more");
  r.close();
});

test("a token refused at connect (401) is replaced by getToken", async () => {
  const name = uniqueRoom("refused401");
  let calls = 0;
  const getToken = async () => {
    calls++;
    // The first one expired long ago: the handshake is refused with 401.
    const exp = calls === 1 ? nowS() - 600 : nowS() + 600;
    return token({ sub: "bo", exp, rooms: { [name]: ["sub", "pub"] } });
  };
  const r = room(server.url, name, { getToken, WebSocket, base: 50, cap: 500 });
  await waitFor(() => r.state === "open", "open with the second token");
  assert.equal(calls, 2);
  assert.equal(await r.publish("hi"), 1);
  r.close();
});

test("a fixed token that is refused stops the client with unauthorized", async () => {
  const name = uniqueRoom("bad401");
  const r = room(server.url, name, { token: token({ sub: "x", exp: nowS() - 600, rooms: { [name]: ["sub"] } }), WebSocket, base: 50 });
  const errors = [];
  r.on("error", (e) => errors.push(e));
  await waitFor(() => r.state === "closed", "closed");
  assert.equal(errors.at(-1).code, "unauthorized");
});

// A terminal close from a real runtime (1008 after repeated bad frames)
// stops the client for good; it does not hammer the server reconnecting.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { room } from "../herald.js";
import { adminToken, startServer, uniqueRoom } from "./support/server.mjs";
import { recordingWebSocket, waitFor } from "./support/wait.mjs";

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.stop(); });

test("1008 closes the client and it stays closed", async () => {
  const Socket = recordingWebSocket();
  const r = room(server.url, uniqueRoom("abuse"), { token: adminToken(), WebSocket: Socket, base: 10, cap: 20 });
  const states = [];
  r.on("state", (s) => states.push(s));
  r.on("error", () => {});
  await waitFor(() => r.state === "open", "open");
  // A buggy app writing garbage on the raw socket, past the abuse limit.
  for (let i = 0; i < 12; i++) Socket.all[0].send("not json");
  await waitFor(() => r.state === "closed", "closed");
  assert.equal(states.at(-1).reason.code, 1008);
  // Backoff here is at most 20 ms: a transient close would have reconnected
  // many times over by the time this other room opens and answers.
  const probe = room(server.url, uniqueRoom("after"), { token: adminToken(), WebSocket: Socket });
  await waitFor(() => probe.state === "open", "another room to open");
  assert.equal(await probe.publish("x"), 1);
  assert.equal(Socket.all.length, 2, "the closed client never reconnected");
  probe.close();
});

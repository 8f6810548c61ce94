// presence() kept live by events: two users in two regions, then one leaves.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { room } from "../herald.js";
import { startServer, token, uniqueRoom } from "./support/server.mjs";
import { waitFor } from "./support/wait.mjs";

let server;
before(async () => { server = await startServer({ vars: { HERALD_PRESENCE_GRACE_MS: "500" } }); });
after(async () => { await server?.stop(); });

const tokenFor = (sub, name) =>
  token({ sub, exp: Math.floor(Date.now() / 1000) + 600, rooms: { [name]: ["sub", "pub", "presence"] }, info: { name: sub.toUpperCase() } });

test("join and leave keep the snapshot live", async () => {
  const name = uniqueRoom("presence");
  const ana = room(server.url, name, { token: tokenFor("ana", name), WebSocket, presence: "events", region: "weur" });
  const updates = [];
  ana.on("presence", (p) => updates.push(p));
  await waitFor(() => ana.presence().count === 1, "ana sees herself");
  const bo = room(server.url, name, { token: tokenFor("bo", name), WebSocket, presence: "counts", region: "apac" });
  await waitFor(() => ana.presence().count === 2, "ana sees bo");
  assert.deepEqual(ana.presence().regions, { weur: 1, apac: 1 });
  assert.deepEqual(ana.presence().members.map((m) => [m.user, m.info?.name, m.region]).sort(), [["ana", "ANA", "weur"], ["bo", "BO", "apac"]]);
  await waitFor(() => bo.presence().count === 2, "bo's counts");
  assert.deepEqual(bo.presence().members, [], "counts mode follows no members");
  bo.close();
  await waitFor(() => ana.presence().count === 1, "bo's leave after the grace");
  assert.deepEqual(ana.presence().regions, { weur: 1 });
  assert.ok(updates.length >= 3, "presence events reached the app");
  ana.close();
});

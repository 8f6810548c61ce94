// Tests of the server harness itself (support/server.mjs), so failures of
// the SDK's end-to-end tests can be trusted to be about the SDK: a server
// starts healthy with the given vars, serves the page and the SDK as static
// assets, keeps its Durable Object state across restart() on the same port,
// and is gone after stop().
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT, adminToken, startServer, uniqueRoom } from "./support/server.mjs";

const auth = () => ({ authorization: `Bearer ${adminToken()}` });

test("start, assets, vars, restart keeps state, stop", async (t) => {
  const server = await startServer({ vars: { HERALD_DEMO_ROOMS: "demo:*" } });
  t.after(() => server.stop());

  const health = await fetch(`${server.url}/healthz`);
  assert.equal(health.status, 200);
  assert.deepEqual(await health.json(), { ok: true });

  const page = await fetch(`${server.url}/`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
  assert.match(await page.text(), /<title>[^<]*Herald[^<]*<\/title>/);

  // The SDK and every module it imports are served, as browsers fetch them.
  const modules = readdirSync(join(REPO_ROOT, "client")).filter((f) => f.endsWith(".js"));
  assert.ok(modules.includes("herald.js"));
  for (const file of [...modules, "herald.d.ts"]) {
    const res = await fetch(`${server.url}/client/${file}`);
    const body = await res.text();
    assert.equal(res.status, 200, `${file}: ${body.slice(0, 200)}`);
    assert.equal(body, readFileSync(join(REPO_ROOT, "client", file), "utf8"), `${file} is served as it is in client/`);
    if (file.endsWith(".js")) assert.match(res.headers.get("content-type") ?? "", /javascript/);
  }

  // The vars reach the worker: the demo token endpoint is on.
  const demo = await fetch(`${server.url}/v1/demo/token?name=harness`);
  assert.equal(demo.status, 200, await demo.clone().text());
  assert.match((await demo.json()).sub, /^guest-[a-z0-9]{6}$/);

  const room = uniqueRoom("harness");
  const messages = `${server.url}/v1/rooms/${room}/messages`;
  const pub = await fetch(messages, {
    method: "POST",
    headers: { ...auth(), "content-type": "application/json" },
    body: JSON.stringify({ data: { text: "before restart" } }),
  });
  assert.equal(pub.status, 200, await pub.clone().text());
  const { seq, epoch } = await pub.json();
  assert.equal(seq, 1);

  const { port, persistDir, logPath } = server;
  await server.restart();
  assert.equal(server.port, port, "same port after restart");
  assert.equal(server.persistDir, persistDir, "same state after restart");
  assert.notEqual(server.logPath, logPath, "one log per start");

  const history = await fetch(`${messages}?since=0`, { headers: auth() });
  assert.equal(history.status, 200);
  const h = await history.json();
  assert.equal(h.epoch, epoch, "the room kept its epoch");
  assert.deepEqual(h.messages.map((m) => [m.seq, m.data]), [[1, { text: "before restart" }]]);

  await server.stop();
  await assert.rejects(fetch(`${server.url}/healthz`, { signal: AbortSignal.timeout(2_000) }), "nothing answers after stop()");
  assert.equal(existsSync(persistDir), false, "the harness removes the state dir it made");
});

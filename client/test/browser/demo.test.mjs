// The demo page in a real browser (Debian's Chromium, driven by
// playwright-core) against a real local runtime: two pages join one room,
// chat, see each other in presence, live through a server restart with a
// message published meanwhile over HTTP, and see a page leave.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, copyFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { chromium } from "playwright-core";
import { REPO_ROOT, adminToken, startServer, uniqueRoom } from "../support/server.mjs";
import { httpPublish } from "../support/wait.mjs";

const CHROMIUM = process.env.HERALD_CHROMIUM ?? "/usr/bin/chromium";
/** Where the screenshot goes (a test artifact); HERALD_SCREENSHOT copies it elsewhere too. */
const ARTIFACT = join(REPO_ROOT, "target/artifacts/demo.png");
const T = 20_000;

let server;
let browser;

before(async () => {
  if (!existsSync(CHROMIUM)) {
    // Loud on purpose: a machine without Chromium must not pass silently.
    throw new Error(`BROWSER TESTS CANNOT RUN: no Chromium at ${CHROMIUM}. scripts/setup installs Debian's chromium package (apt-get install chromium); set HERALD_CHROMIUM to use another binary.`);
  }
  server = await startServer({ vars: { HERALD_DEMO_ROOMS: "demo:*", HERALD_PRESENCE_GRACE_MS: "1000" } });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    // No sandbox as root; no background traffic on a closed network.
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const text = (page, sel) => page.locator(sel).first().textContent();
const feedCount = (page, needle) => page.locator("#feed li", { hasText: needle }).count();
const waitState = (page, state) => page.waitForFunction((s) => document.getElementById("state")?.dataset.state === s, state, { timeout: T });
const waitCount = (page, n) => page.waitForFunction((n) => document.getElementById("presence-count")?.textContent === String(n), n, { timeout: T });
const waitFeed = (page, needle) => page.locator("#feed li", { hasText: needle }).first().waitFor({ timeout: T });

test("two pages chat, see each other, survive a restart, and see a leave", async () => {
  const room = uniqueRoom("demo:e2e");
  const url = `${server.url}/?room=${encodeURIComponent(room)}`;
  // Separate contexts: two browsers' worth of storage, two demo users.
  const [a, b] = await Promise.all([browser.newContext(), browser.newContext()].map(async (c) => (await c).newPage()));
  const errors = [];
  for (const p of [a, b]) p.on("pageerror", (e) => errors.push(e.message));
  await a.setViewportSize({ width: 1200, height: 760 });
  // B comes in through another region's relay (local dev trusts ?region=).
  await Promise.all([a.goto(url), b.goto(`${url}&region=weur`)]);

  // First load, no typing: both join and can publish.
  await Promise.all([waitState(a, "open"), waitState(b, "open")]);
  await Promise.all([waitCount(a, 2), waitCount(b, 2)]);
  await a.waitForFunction(() => document.querySelectorAll("#regions li").length === 2, null, { timeout: T });
  assert.deepEqual(
    await a.locator("#regions li").evaluateAll((els) => els.map((e) => e.dataset.region).sort()),
    ["enam", "weur"],
    "presence counts per region",
  );

  await a.fill("#chat-input", "hello from A");
  await a.press("#chat-input", "Enter");
  await waitFeed(b, "hello from A");
  await b.fill("#chat-input", "hi back from B");
  await b.click("#send");
  await waitFeed(a, "hi back from B");
  await a.waitForFunction(() => document.getElementById("latency-p50").textContent !== "–", null, { timeout: T });

  // Restart the server under both pages; publish over HTTP as soon as it is
  // back, while the pages are still waiting out their backoff.
  await server.restart();
  const during = await httpPublish(server.url, room, adminToken(), { kind: "chat", text: "published during the restart", name: "backend" });
  await Promise.all([waitFeed(a, "published during the restart"), waitFeed(b, "published during the restart")]);
  await Promise.all([waitState(a, "open"), waitState(b, "open")]);
  for (const p of [a, b]) {
    assert.equal(await feedCount(p, "hello from A"), 1, "no duplicate after the resume");
    assert.equal(await feedCount(p, "hi back from B"), 1);
    assert.equal(await feedCount(p, "published during the restart"), 1);
    const seqs = await p.locator("#feed li[data-seq]").evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));
    assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y), "feed in seq order");
    assert.ok(seqs.includes(during.seq));
  }
  await Promise.all([waitCount(a, 2), waitCount(b, 2)]);

  // A few more lines, so the screenshot shows a conversation.
  for (const line of ["the feed resumed by itself", "and nothing was lost"]) {
    await a.fill("#chat-input", line);
    await a.press("#chat-input", "Enter");
    await waitFeed(b, line);
  }

  // Typing and cursors reach the other page as ephemeral messages.
  await b.type("#chat-input", "typing…");
  await a.waitForFunction(() => /typing/.test(document.getElementById("typing").textContent), null, { timeout: T });
  const strip = await b.locator("#cursor-strip").boundingBox();
  await b.mouse.move(strip.x + strip.width * 0.3, strip.y + strip.height * 0.4);
  await b.mouse.move(strip.x + strip.width * 0.62, strip.y + strip.height * 0.5, { steps: 4 });
  await a.locator("#cursor-strip .cursor").first().waitFor({ timeout: T });

  mkdirSync(dirname(ARTIFACT), { recursive: true });
  await a.screenshot({ path: ARTIFACT });
  if (process.env.HERALD_SCREENSHOT) copyFileSync(ARTIFACT, process.env.HERALD_SCREENSHOT);

  await b.close();
  await waitCount(a, 1);
  assert.equal(await text(a, "#state"), "open");
  assert.deepEqual(errors, [], "no uncaught errors in the pages");
});

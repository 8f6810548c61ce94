// Test harness for the SDK's node:test suites: a real `wrangler dev --local`
// (workerd + the built Rust worker) per server, mirroring the Rust harness
// (tests/support/mod.rs `Server`) so both suites test the same thing.
//
// * startServer() spawns wrangler on free loopback ports in its own process
//   group, with its own persistence dir, and resolves once GET /healthz is
//   200. stop() signals the whole group (wrangler spawns workerd), so nothing
//   outlives it; restart() comes back on the same port and dir (Durable
//   Object storage survives, memory does not), like a redeploy.
// * Servers still running when the process exits (a test that threw, Ctrl-C)
//   are killed by the exit hooks below.
// * The worker is NOT built here: run `bash scripts/build` first (scripts/test
//   does). Every wrangler runs with HERALD_SKIP_BUILD=1, so its build step
//   only copies the SDK into public/client/ and concurrent servers never race
//   on a rebuild.
//
// Node 20, ES module, no dependencies. Waiting is always "until this happens,
// with a deadline", never a fixed sleep.

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root (this file is client/test/support/server.mjs). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
/** Logs and persistence dirs, next to the Rust harness's (`<target>/itest`,
 * which scripts/test wipes at the start). */
export const ITEST_DIR = join(resolve(REPO_ROOT, process.env.CARGO_TARGET_DIR || "target"), "itest/js");
/** How long a server may take from spawn to a 200 on /healthz. */
export const START_DEADLINE_MS = 60_000;
/** How long stop() waits after SIGTERM before SIGKILL. */
export const STOP_GRACE_MS = 5_000;
/** The HERALD_SECRET every test server runs with (same as the Rust harness). */
export const TEST_SECRET = "herald-integration-test-secret-0123456789";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let seq = 0;
function uniqueSuffix() {
  return `${process.pid.toString(16)}${(Date.now() % 0x1_0000_0000).toString(16)}-${seq++}`;
}

/** A room name no other test (or earlier run) uses: `<prefix>-<hex>-<n>`. */
export function uniqueRoom(prefix = "room") {
  return `${prefix}-${uniqueSuffix()}`;
}

// ---------------------------------------------------------------- Tokens --

const b64url = (value) => Buffer.from(value).toString("base64url");

/** An HS256 JWT for `claims` (any JSON object), signed with TEST_SECRET. */
export function token(claims) {
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac("sha256", TEST_SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

/** Every capability on every room for an hour, as user "tester". */
export function adminToken() {
  return token({
    sub: "tester",
    exp: Math.floor(Date.now() / 1000) + 3600,
    rooms: { "*": ["sub", "pub", "presence", "history", "admin"] },
  });
}

// ----------------------------------------------------------------- Ports --

// Never hand out a port twice in this process: the kernel may give the same
// free port to two probes before either wrangler has bound it.
const givenPorts = new Set();

function probePort(port) {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once("error", rej);
    s.listen(port, "127.0.0.1", () => {
      const got = s.address().port;
      s.close(() => res(got));
    });
  });
}

/** A free loopback port (listen on 0, close). */
export async function freePort() {
  for (;;) {
    const port = await probePort(0);
    if (!givenPorts.has(port)) {
      givenPorts.add(port);
      return port;
    }
  }
}

/** Resolves once nothing listens on `port`; throws after `deadlineMs`. */
async function waitPortFree(port, deadlineMs) {
  const end = Date.now() + deadlineMs;
  for (;;) {
    try {
      await probePort(port);
      return;
    } catch (e) {
      if (Date.now() >= end) throw new Error(`port ${port} still in use after ${deadlineMs} ms (${e.code ?? e})`);
      await sleep(100);
    }
  }
}

// ------------------------------------------------------- Process groups --

/** Servers whose process group may still be alive, for the exit hooks. */
const live = new Set();

function groupAlive(pgid) {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (e) {
    return e.code === "EPERM";
  }
}

function signalGroup(pgid, signal) {
  try {
    process.kill(-pgid, signal);
  } catch {
    // already gone
  }
}

// 'exit' handlers cannot wait, so they SIGKILL: no wrangler or workerd may
// outlive the test process. Signals first kill, then exit as the signal would.
process.on("exit", () => {
  for (const server of live) signalGroup(server.pid, "SIGKILL");
});
for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143], ["SIGHUP", 129]]) {
  process.once(signal, () => {
    for (const server of live) signalGroup(server.pid, "SIGKILL");
    process.exit(code);
  });
}

function tail(path, lines) {
  try {
    return readFileSync(path, "utf8").split("\n").slice(-lines).join("\n");
  } catch (e) {
    return `(no log: ${e.message})`;
  }
}

// ---------------------------------------------------------------- Server --

/**
 * Starts `wrangler dev --local` and waits until it is healthy.
 *
 * @param {object} [opts]
 * @param {Record<string, string|number>} [opts.vars] extra `--var NAME:VALUE`
 *   overrides of wrangler.toml [vars] (HERALD_TRUST_REGION_PARAM=1,
 *   HERALD_SECRET=TEST_SECRET and HERALD_MAX_CONNECTIONS_PER_USER=100000 are
 *   always set; a var given here overrides them).
 * @param {string} [opts.persistDir] Durable Object storage; default a fresh
 *   dir under target/itest/js, removed by stop(). Pass another server's dir
 *   to start on its state.
 * @param {number} [opts.port] default a free one.
 * @returns {Promise<{url: string, port: number, persistDir: string,
 *   logPath: string, stop(): Promise<void>, restart(): Promise<void>}>}
 */
export async function startServer({ vars = {}, persistDir, port } = {}) {
  if (!existsSync(join(REPO_ROOT, "build/index.js"))) {
    throw new Error("build/index.js is missing: the tests run the built worker. Run `bash scripts/build` (or `bash scripts/test`).");
  }
  mkdirSync(ITEST_DIR, { recursive: true });
  const ownsPersistDir = persistDir === undefined;
  const server = new Server({
    vars,
    port: port ?? (await freePort()),
    persistDir: resolve(persistDir ?? join(ITEST_DIR, `state-${uniqueSuffix()}`)),
    ownsPersistDir,
  });
  // A port free when probed may be taken before wrangler binds it: retry
  // on a fresh one, unless the caller chose the port.
  for (let attempt = 1; ; attempt++) {
    try {
      await server.start();
      return server;
    } catch (e) {
      if (port !== undefined || attempt >= 3 || !/Address already in use/.test(e.message)) throw e;
      server.port = await freePort();
      server.url = `http://127.0.0.1:${server.port}`;
    }
  }
}

class Server {
  constructor({ vars, port, persistDir, ownsPersistDir }) {
    this.vars = vars;
    this.port = port;
    this.url = `http://127.0.0.1:${port}`;
    this.persistDir = persistDir;
    this.ownsPersistDir = ownsPersistDir;
    this.logPath = "";
    this.child = null;
    this.pid = 0;
    this.exited = null; // the exit of the current child, once it happened
  }

  args(inspectorPort) {
    const args = [
      "dev", "--local", "--ip", "127.0.0.1",
      "--port", String(this.port),
      "--inspector-port", String(inspectorPort),
      "--persist-to", this.persistDir,
      "--show-interactive-dev-session=false",
      "--var", "HERALD_TRUST_REGION_PARAM:1",
      "--var", `HERALD_SECRET:${TEST_SECRET}`,
      // Tests share one token (one user); the per-user cap would bite.
      "--var", "HERALD_MAX_CONNECTIONS_PER_USER:100000",
    ];
    for (const [name, value] of Object.entries(this.vars)) args.push("--var", `${name}:${value}`);
    return args;
  }

  async start() {
    this.logPath = join(ITEST_DIR, `wrangler-${uniqueSuffix()}.log`);
    const log = openSync(this.logPath, "w");
    const bin = join(REPO_ROOT, "node_modules/.bin");
    const started = Date.now();
    try {
      this.child = spawn(join(bin, "wrangler"), this.args(await freePort()), {
        cwd: REPO_ROOT,
        // Same environment as scripts/env.sh: node 24 from node_modules
        // first (wrangler 4 needs node >= 22.12), no telemetry, no banner.
        env: {
          ...process.env,
          PATH: `${bin}:${process.env.PATH ?? ""}`,
          HERALD_SKIP_BUILD: "1",
          WRANGLER_SEND_METRICS: "false",
          CLOUDFLARE_CF_FETCH_ENABLED: "false",
          WRANGLER_HIDE_BANNER: "true",
          CI: "true",
        },
        detached: true, // own process group: stop() reaches workerd too
        stdio: ["ignore", log, log],
      });
    } finally {
      closeSync(log);
    }
    this.pid = this.child.pid;
    this.exited = null;
    live.add(this);
    const child = this.child;
    child.once("exit", (code, signal) => {
      if (this.child === child) this.exited = { code, signal };
    });
    child.once("error", (e) => {
      if (this.child === child) this.exited = { error: e.message };
    });
    // A forgotten stop() must not keep the test process alive; the exit
    // hooks kill the group.
    child.unref();

    const deadline = started + START_DEADLINE_MS;
    for (;;) {
      try {
        const r = await fetch(`${this.url}/healthz`, { signal: AbortSignal.timeout(2_000) });
        await r.arrayBuffer();
        if (r.status === 200) break;
      } catch {
        // not listening yet
      }
      if (this.exited) await this.fail(`wrangler exited during startup (${JSON.stringify(this.exited)})`);
      if (Date.now() >= deadline) await this.fail(`wrangler not healthy within ${START_DEADLINE_MS} ms at ${this.url}/healthz`);
      await sleep(100);
    }
    this.startupMs = Date.now() - started;
  }

  async fail(what) {
    await this.kill();
    throw new Error(`${what}\n--- log ${this.logPath} (last 40 lines) ---\n${tail(this.logPath, 40)}`);
  }

  /** SIGTERM the process group, wait up to STOP_GRACE_MS, then SIGKILL. */
  async kill() {
    if (!this.child) return;
    const pgid = this.pid;
    signalGroup(pgid, "SIGTERM");
    const end = Date.now() + STOP_GRACE_MS;
    while (Date.now() < end && groupAlive(pgid)) await sleep(50);
    if (groupAlive(pgid)) signalGroup(pgid, "SIGKILL");
    const killed = Date.now() + STOP_GRACE_MS;
    while (groupAlive(pgid) && Date.now() < killed) await sleep(20);
    this.child = null;
    live.delete(this);
  }

  /** Stops the server and removes its persistence dir if it made it. */
  async stop() {
    await this.kill();
    if (this.ownsPersistDir) rmSync(this.persistDir, { recursive: true, force: true });
  }

  /** Stop, then start again on the same port and persistence dir. */
  async restart() {
    await this.kill();
    await waitPortFree(this.port, 10_000);
    await this.start();
  }
}

// One room, as an app sees it: a connection that comes back by itself,
// messages exactly once and in seq order across every reconnect, publishes
// that survive being offline, the room's presence kept live, and the
// user's read mark shared by all their devices.
//
// States: connecting → open ⇄ reconnecting → closed. Every change is a
// `state` event carrying the reason. Decisions follow docs/PROTOCOL.md:
// close codes through `closeAction` (codes.js), delays through full-jitter
// backoff (backoff.js), the stream position through stream_position.js.

import { backoffDelay, backoffDefaults } from "./backoff.js";
import { HeraldError, closeAction, isRetryable } from "./codes.js";
import { PresenceState } from "./presence_state.js";
import { afterReset, afterWelcome, classifySeq } from "./stream_position.js";
import { TokenSource } from "./token_source.js";
import { openSse } from "./transport_sse.js";
import { openWebSocket } from "./transport_ws.js";

const EVENTS = ["message", "presence", "state", "reset", "read", "error"];

/** Defaults of the timing options, in milliseconds. */
export const defaults = Object.freeze({
  ...backoffDefaults,
  /** A connection must stay open this long before backoff starts over. */
  minUptime: 5_000,
  /** From opening a connection to its welcome. */
  connectTimeout: 10_000,
  /** Between `ping`s on an open socket (keeps intermediaries from idling it out). */
  pingInterval: 30_000,
  /** How long a `ping` may go unanswered before the socket counts as dead. */
  pongTimeout: 10_000,
  /** Unacknowledged publishes on the wire at once. */
  maxInFlight: 16,
  /**
   * The server's HERALD_MAX_FRAME_BYTES. A larger publish is refused here
   * with too_large: the server answers an oversized frame without reading
   * its id, so it could not say which publish it refused.
   */
  maxFrameBytes: 65_536,
  /**
   * Publishes waiting for their ack (offline, or in flight), in count and
   * in bytes. Past either, `publish` rejects with `overloaded` at once
   * rather than let an app that publishes while offline grow without bound.
   */
  maxQueued: 1_000,
  maxQueuedBytes: 4 * 1_048_576,
});

/** Publish (and read mark) retry delays after `rate_limited`/`overloaded` (full jitter). */
const PUBLISH_RETRY = { base: 250, cap: 5_000 };

/** The page size for presence snapshots (the most the server gives). */
const PRESENCE_PAGE = 1000;

function randomTag(random) {
  let tag = "";
  for (let i = 0; i < 8; i++) tag += "abcdefghijklmnopqrstuvwxyz0123456789"[Math.floor(random() * 36)];
  return tag;
}

function baseUrlOf(baseUrl) {
  let base = baseUrl;
  if (!base && typeof location !== "undefined") base = location.origin;
  if (typeof base !== "string" || base === "") throw new TypeError("herald: baseUrl is required outside a browser");
  if (typeof location !== "undefined") base = new URL(base, location.href).href;
  base = base.replace(/^ws(s?):/i, "http$1:").replace(/\/+$/, "");
  return base;
}

export class Room {
  /**
   * @param {string} baseUrl e.g. `https://herald.example.com` ("" in a page served by Herald)
   * @param {string} name the room
   * @param {import("./herald.js").RoomOptions} [options]
   */
  constructor(baseUrl, name, options = {}) {
    if (typeof name !== "string" || name === "") throw new TypeError("herald: room name is required");
    this.name = name;
    this.base = baseUrlOf(baseUrl);
    this.options = { ...defaults, ...options };
    this.clock = options.clock ?? {
      now: () => Date.now(),
      setTimeout: (fn, ms) => setTimeout(fn, ms),
      clearTimeout: (t) => clearTimeout(t),
    };
    this.random = options.random ?? Math.random;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket ?? null;
    this.fetch = options.fetch ?? (globalThis.fetch ? globalThis.fetch.bind(globalThis) : null);
    const transports = options.transports ?? ["websocket", "sse"];
    this.allowWs = transports.includes("websocket") && this.WebSocket !== null;
    this.allowSse = transports.includes("sse") && this.fetch !== null;
    if (!this.allowWs && !this.allowSse) {
      throw new TypeError("herald: no transport: pass a WebSocket implementation (`ws` in Node) or allow \"sse\"");
    }
    this.useSse = !this.allowWs;
    this.tokens = new TokenSource(options, () => this.clock.now());
    /** @type {Record<string, Set<Function>>} */
    this.listeners = Object.fromEntries(EVENTS.map((e) => [e, new Set()]));

    this.state = "connecting";
    /** Where the app is in the stream: {epoch, seq} of the last message handed over. */
    this.position = options.resume ? { epoch: options.resume.epoch, seq: options.resume.seq } : null;
    this.conn = null;
    this.region = null;
    this.presenceState = new PresenceState();
    /** The user's unread count in the last welcome (null when it had none). */
    this.unread = null;
    /** The user's read mark as last heard from the room (null: not yet). */
    this.readSeq = null;
    /** A mark `read()` was given that the room has not confirmed yet. */
    this.pendingRead = null;
    /** The `read` frame on the wire: {id, seq}. */
    this.readInFlight = null;
    this.readRetries = 0;

    this.clientId = randomTag(this.random);
    this.nextId = 1;
    this.midCounter = 0;
    /** Publishes in publish order, until acknowledged or refused. */
    this.outbox = [];
    /** Requests answered by id (history, presence pages) over the socket. */
    this.requests = new Map();

    this.transport = null;
    this.generation = 0;
    this.welcomed = false;
    this.openedAt = 0;
    this.attempt = 0;
    this.wsFailures = 0;
    this.refreshedWithoutWelcome = false;
    this.timers = {};
    this.httpPublishing = false;

    this.onOnline = () => {
      if (this.state === "reconnecting") {
        this.clearTimer("reconnect");
        this.connect();
      }
    };
    if (typeof globalThis.addEventListener === "function") globalThis.addEventListener("online", this.onOnline);
    // Listeners are attached after construction: start on the next tick.
    Promise.resolve().then(() => {
      this.emit("state", { state: "connecting", previous: null, reason: null });
      this.connect();
    });
  }

  // ------------------------------------------------------------- public --

  /** Listen to `message`, `presence`, `state`, `reset` or `error`; returns the unsubscribe. */
  on(event, fn) {
    const set = this.listeners[event];
    if (!set) throw new TypeError(`herald: unknown event "${event}" (one of ${EVENTS.join(", ")})`);
    set.add(fn);
    return () => set.delete(fn);
  }

  off(event, fn) {
    this.listeners[event]?.delete(fn);
  }

  /**
   * Publish `data` (any JSON value). Resolves with the message's seq once
   * the room has stored it (null for an ephemeral one). While offline it
   * waits, and it is sent again after a reconnect under the same `mid`, so
   * the room stores it exactly once.
   */
  publish(data, { ephemeral = false } = {}) {
    if (this.state === "closed") return Promise.reject(new HeraldError("closed", "the room client is closed"));
    if (data === undefined) return Promise.reject(new HeraldError("bad_frame", "data is required (any JSON value, null included)"));
    const id = this.nextId++;
    const mid = ephemeral ? undefined : `${this.clientId}-${++this.midCounter}`;
    let frame, body;
    try {
      frame = JSON.stringify({ t: "pub", id, data, mid, ephemeral: ephemeral || undefined });
      body = JSON.stringify({ data, mid, ephemeral: ephemeral || undefined });
    } catch (e) {
      return Promise.reject(new HeraldError("bad_frame", `data is not JSON: ${e.message}`));
    }
    const bytes = new TextEncoder().encode(frame).length;
    if (bytes > this.options.maxFrameBytes) {
      return Promise.reject(new HeraldError("too_large", `the publish is ${bytes} bytes; the limit is ${this.options.maxFrameBytes}`));
    }
    const queuedBytes = this.outbox.reduce((sum, e) => sum + e.bytes, 0);
    if (this.outbox.length >= this.options.maxQueued || queuedBytes + bytes > this.options.maxQueuedBytes) {
      return Promise.reject(new HeraldError("overloaded", `${this.outbox.length} publishes (${queuedBytes} bytes) are waiting for their ack; retry once some are acknowledged`));
    }
    return new Promise((resolve, reject) => {
      this.outbox.push({ id, mid, ephemeral, frame, body, bytes, resolve, reject, sent: false, retries: 0, notBefore: 0 });
      this.pump();
    });
  }

  /**
   * Mark everything up to `seq` read, for this user on every device. Only
   * a higher mark than the last known one is sent; while offline (or over
   * SSE, which cannot send frames) the highest waits for the next socket.
   * Every connection of the user then gets a `read` event.
   */
  read(seq) {
    if (!Number.isSafeInteger(seq) || seq < 0) throw new TypeError("herald: read(seq) takes a whole number ≥ 0");
    if (this.state === "closed") return;
    if (seq <= Math.max(this.readSeq ?? -1, this.pendingRead ?? -1)) return;
    this.pendingRead = seq;
    this.sendRead();
  }

  /** The room's presence as last seen: `{count, regions, members}`. */
  presence() {
    return this.presenceState.snapshot();
  }

  /** Stored messages after `since`: `{epoch, messages, more}`. */
  async history({ since = 0, limit = 100 } = {}) {
    const overHttp = () => this.http("GET", "messages", { query: { since, limit } });
    if (this.state === "open" && this.transport?.kind === "websocket") {
      return this.request({ t: "history", since, limit }, overHttp);
    }
    return overHttp();
  }

  /** Stop for good: the socket closes, waiting publishes are refused with `closed`. */
  close() {
    if (this.state === "closed") return;
    this.stop({ code: 1000, message: "closed by the app" }, { quiet: true });
  }

  // ------------------------------------------------------------ events --

  emit(event, value) {
    for (const fn of [...this.listeners[event]]) {
      try {
        fn(value);
      } catch (e) {
        // An app bug must not break the connection; surface it like an
        // uncaught error, outside our call stack.
        this.clock.setTimeout(() => {
          throw e;
        }, 0);
      }
    }
  }

  setState(state, reason = null) {
    if (this.state === state && state !== "reconnecting") return;
    const previous = this.state;
    this.state = state;
    this.emit("state", { state, previous, reason });
  }

  clearTimer(name) {
    if (this.timers[name] !== undefined) {
      this.clock.clearTimeout(this.timers[name]);
      delete this.timers[name];
    }
  }

  setTimer(name, ms, fn) {
    this.clearTimer(name);
    this.timers[name] = this.clock.setTimeout(() => {
      delete this.timers[name];
      fn();
    }, ms);
  }

  // -------------------------------------------------------- connection --

  url(kind, token) {
    const url = new URL(`${this.base}/v1/rooms/${encodeURIComponent(this.name)}/${kind}`);
    if (token && kind === "ws") url.searchParams.set("token", token);
    if (this.options.region) url.searchParams.set("region", this.options.region);
    if (kind === "ws" && this.options.presence) url.searchParams.set("presence", this.options.presence);
    if (this.position) {
      url.searchParams.set("since", String(this.position.seq));
      url.searchParams.set("epoch", this.position.epoch);
    }
    return url;
  }

  async connect({ refresh = false } = {}) {
    if (this.state === "closed") return;
    const generation = ++this.generation;
    let token;
    try {
      token = await this.tokens.get({ refresh });
    } catch (e) {
      if (generation !== this.generation) return;
      this.emit("error", e);
      this.retry({ code: e.code, message: e.message });
      return;
    }
    if (generation !== this.generation || this.state === "closed") return;
    this.welcomed = false;
    const handlers = {
      onText: (text) => generation === this.generation && this.onText(text),
      onClose: (info) => generation === this.generation && this.onDrop(info),
    };
    this.setTimer("connect", this.options.connectTimeout, () => {
      if (generation !== this.generation) return;
      this.abandon({ code: 1006, reason: "connect timeout", timeout: true });
    });
    if (this.useSse) {
      this.transport = openSse(this.fetch, this.url("events", token).href, token, handlers);
    } else {
      const url = this.url("ws", token);
      url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
      this.transport = openWebSocket(this.WebSocket, url.href, handlers);
    }
  }

  /** Drop the current transport without waiting for its close, then react. */
  abandon(info) {
    const t = this.transport;
    if (t) t.close(4000, info.reason);
    this.onDrop(info);
  }

  /** The transport closed (or was abandoned): clean up, then reconnect or stop. */
  async onDrop(info) {
    const generation = ++this.generation; // late events of the old transport are ignored
    const wasWelcomed = this.welcomed;
    const uptime = this.clock.now() - this.openedAt;
    this.transport = null;
    this.welcomed = false;
    this.clearTimer("connect");
    this.clearTimer("ping");
    this.clearTimer("pong");
    this.presenceState.abortSnapshot();
    this.onDisconnected();
    if (this.state === "closed") return;

    const reason = { code: info.code, message: info.reason || "connection lost" };
    if (info.gap) {
      this.setState("reconnecting", { code: "gap", message: "a message is missing; resuming" });
      this.connect();
      return;
    }
    if (wasWelcomed) {
      this.refreshedWithoutWelcome = false;
      if (uptime >= this.options.minUptime) this.attempt = 0;
      const action = closeAction(info.code);
      if (action === "stop") return this.stop(reason);
      if (action === "refresh_token") {
        if (!this.tokens.refreshable) {
          return this.stop({ code: info.code, message: "the token expired and no getToken was given" });
        }
        this.setState("reconnecting", reason);
        if (this.attempt === 0) {
          this.attempt++;
          this.connect({ refresh: true });
        } else {
          this.retry(reason, { refresh: true });
        }
        return;
      }
      return this.retry(reason);
    }

    // Never welcomed: a browser hides the HTTP status of a refused
    // handshake, so ask the endpoint with plain HTTP what is wrong.
    const status = info.status ?? (info.timeout ? null : await this.probe());
    if (generation !== this.generation || this.state === "closed") return;
    const refusal = this.classifyRefusal(status, info);
    if (refusal === "refresh") {
      if (this.tokens.refreshable && !this.refreshedWithoutWelcome) {
        this.refreshedWithoutWelcome = true;
        this.setState("reconnecting", { code: "unauthorized", message: "token refused; fetching a new one" });
        this.connect({ refresh: true });
        return;
      }
      return this.stop({ code: "unauthorized", message: info.reason || "the token was refused" });
    }
    if (refusal?.stop) return this.stop(refusal.stop);
    if (refusal === "websocket_blocked") {
      this.wsFailures++;
      if (this.wsFailures >= 2 && this.allowSse && !this.useSse) {
        this.useSse = true;
        this.setState("reconnecting", { code: "sse", message: "WebSockets fail here; falling back to SSE" });
        this.connect();
        return;
      }
    }
    this.retry(reason);
  }

  /**
   * What a connect that never got its welcome tells: "refresh" (401),
   * {stop} for refusals that would repeat, "websocket_blocked" when the
   * server answers HTTP but the socket failed, else null (transient).
   */
  classifyRefusal(status, info) {
    if (status === 401) return "refresh";
    if (status === 400 || status === 403 || status === 404 || status === 405 || status === 413) {
      return { stop: { code: info.error ?? this.lastProbeError ?? `http_${status}`, message: info.reason || this.lastProbeMessage || `HTTP ${status}` } };
    }
    if (status === 426) return "websocket_blocked";
    return null;
  }

  /** GET the socket endpoint without upgrading: 426 means the request itself was fine. */
  async probe() {
    if (!this.fetch) return null;
    this.lastProbeError = this.lastProbeMessage = null;
    try {
      const token = this.tokens.token;
      const headers = token ? { authorization: `Bearer ${token}` } : {};
      const res = await this.fetch(this.url("ws", null).href, { headers, cache: "no-store" });
      try {
        const body = await res.json();
        this.lastProbeError = body?.error ?? null;
        this.lastProbeMessage = body?.message ?? null;
      } catch {
        // no JSON body
      }
      return res.status;
    } catch {
      return null;
    }
  }

  retry(reason, { refresh = false } = {}) {
    if (this.state === "closed") return;
    const delay = backoffDelay(this.attempt, this.options, this.random);
    this.attempt++;
    this.setState("reconnecting", { ...reason, retryIn: delay });
    this.setTimer("reconnect", delay, () => this.connect({ refresh }));
  }

  stop(reason, { quiet = false } = {}) {
    this.generation++;
    const t = this.transport;
    this.transport = null;
    if (t) t.close(1000, "");
    for (const name of Object.keys(this.timers)) this.clearTimer(name);
    if (typeof globalThis.removeEventListener === "function") globalThis.removeEventListener("online", this.onOnline);
    this.setState("closed", reason);
    // A close code stops with `closed` (the code in closeCode); a refusal
    // diagnosed over HTTP keeps its error code (`forbidden`, ...).
    const numeric = typeof reason.code === "number";
    const err = new HeraldError(quiet || numeric ? "closed" : reason.code, reason.message, numeric ? { closeCode: reason.code } : {});
    for (const entry of this.outbox.splice(0)) entry.reject(err);
    for (const req of this.requests.values()) req.reject(err);
    this.requests.clear();
    if (!quiet) this.emit("error", err);
  }

  /** Publishes and requests in flight on a connection that is gone. */
  onDisconnected() {
    this.readInFlight = null; // the pending mark goes again after the next welcome
    const kept = [];
    for (const entry of this.outbox) {
      if (entry.sent && entry.ephemeral) {
        // Ephemeral messages are at most once: no dedup makes a resend safe.
        entry.reject(new HeraldError("disconnected", "the connection dropped before the ephemeral message was acknowledged"));
        continue;
      }
      entry.sent = false;
      kept.push(entry);
    }
    this.outbox = kept;
    for (const req of this.requests.values()) req.fallback();
    this.requests.clear();
  }

  // ------------------------------------------------------------ frames --

  onText(text) {
    this.clearTimer("pong"); // anything from the server shows it is alive
    if (text === "pong") return;
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch {
      this.emit("error", new HeraldError("bad_frame", `the server sent something that is not JSON: ${text.slice(0, 80)}`));
      return;
    }
    for (const frame of Array.isArray(parsed) ? parsed : [parsed]) {
      if (!this.welcomed && frame.t !== "welcome") continue;
      this.onFrame(frame);
      if (!this.transport) return; // a frame made us drop this connection
    }
  }

  onFrame(f) {
    switch (f.t) {
      case "welcome":
        return this.onWelcome(f);
      case "msg":
        return this.onMessage(f);
      case "reset": {
        const { position, reset } = afterReset(this.position, f);
        this.position = position;
        if (reset) this.emit("reset", reset);
        return;
      }
      case "read":
        return this.onReadMark(f.seq);
      case "ack": {
        if (this.readInFlight && f.id === this.readInFlight.id) {
          this.readInFlight = null;
          this.readRetries = 0;
          this.onReadMark(f.seq);
          this.sendRead(); // a higher one asked for meanwhile
          return;
        }
        const entry = this.takePublish(f.id);
        if (entry) entry.resolve(f.seq ?? null);
        this.pump();
        return;
      }
      case "err":
        return this.onError(f);
      case "history":
      case "presence": {
        const req = this.requests.get(f.id);
        if (req) {
          this.requests.delete(f.id);
          req.resolve(f);
        }
        return;
      }
      case "join":
      case "leave":
      case "presence_counts":
        if (this.presenceState.apply(f)) this.rereadPresence();
        this.emit("presence", this.presence());
        return;
      default:
        return; // later protocol versions may add frames
    }
  }

  onWelcome(f) {
    this.clearTimer("connect");
    this.welcomed = true;
    this.openedAt = this.clock.now();
    this.refreshedWithoutWelcome = false;
    if (!this.useSse) this.wsFailures = 0;
    this.conn = f.conn;
    this.region = f.region;
    this.unread = typeof f.unread === "number" ? f.unread : null;
    if (typeof f.read === "number") this.onReadMark(f.read);
    const { position, reset } = afterWelcome(this.position, f);
    this.position = position;
    if (reset) this.emit("reset", reset);
    this.setState("open", null);
    if (this.options.presence) this.readPresence();
    this.schedulePing();
    this.pump();
    this.sendRead();
  }

  /** The user's mark moved (here or on another device): a `read` event. */
  onReadMark(seq) {
    if (typeof seq !== "number") return;
    if (this.pendingRead !== null && seq >= this.pendingRead) this.pendingRead = null;
    if (this.readSeq !== null && seq <= this.readSeq) return;
    this.readSeq = seq;
    this.emit("read", { seq });
  }

  /** Sends the pending mark, one `read` frame at a time, on an open socket. */
  sendRead() {
    if (this.pendingRead === null || this.readInFlight || this.timers.read !== undefined) return;
    if (this.state !== "open" || this.useSse || !this.transport) return;
    const id = `m${this.nextId++}`;
    const seq = this.pendingRead;
    if (this.transport.send(JSON.stringify({ t: "read", id, seq }))) this.readInFlight = { id, seq };
  }

  onMessage(f) {
    if (f.eph) {
      this.emit("message", f);
      return;
    }
    if (!this.position) return;
    switch (classifySeq(this.position.seq, f.seq)) {
      case "deliver":
        this.position = { epoch: this.position.epoch, seq: f.seq };
        this.emit("message", f);
        return;
      case "duplicate":
        return;
      case "gap":
        // Herald never skips silently, so this is a broken path: resume
        // from what we have rather than hand the app a hole.
        this.abandon({ code: 4000, reason: "gap", gap: true });
        return;
    }
  }

  onError(f) {
    if (this.readInFlight && f.id === this.readInFlight.id) {
      this.readInFlight = null;
      if (f.code === "rate_limited" || f.code === "overloaded" || f.code === "internal") {
        const delay = backoffDelay(this.readRetries++, PUBLISH_RETRY, this.random) + 50;
        this.setTimer("read", delay, () => this.sendRead());
        return;
      }
      this.pendingRead = null; // e.g. unauthorized: an anonymous reader has no mark
      this.emit("error", new HeraldError(f.code, f.message));
      return;
    }
    const entry = f.id === null || f.id === undefined ? null : this.outbox.find((e) => e.id === f.id && e.sent);
    if (entry) {
      if (f.code === "rate_limited" || f.code === "overloaded") {
        entry.sent = false;
        entry.notBefore = this.clock.now() + backoffDelay(entry.retries++, PUBLISH_RETRY, this.random) + 50;
        this.pump();
        return;
      }
      this.takePublish(f.id);
      entry.reject(new HeraldError(f.code, f.message));
      this.pump();
      return;
    }
    const req = this.requests.get(f.id);
    if (req) {
      this.requests.delete(f.id);
      req.reject(new HeraldError(f.code, f.message));
      return;
    }
    this.emit("error", new HeraldError(f.code, f.message));
  }

  schedulePing() {
    if (this.useSse) return;
    this.setTimer("ping", this.options.pingInterval, () => {
      if (!this.transport?.send("ping")) return;
      this.setTimer("pong", this.options.pongTimeout, () => this.abandon({ code: 1006, reason: "no pong" }));
      this.schedulePing();
    });
  }

  // ---------------------------------------------------------- publishes --

  takePublish(id) {
    const i = this.outbox.findIndex((e) => e.id === id);
    if (i < 0) return null;
    return this.outbox.splice(i, 1)[0];
  }

  /** Send what may go now, in publish order. */
  pump() {
    if (this.state !== "open" || !this.transport) return;
    if (this.useSse) return this.pumpHttp();
    let inFlight = this.outbox.filter((e) => e.sent).length;
    const now = this.clock.now();
    for (const entry of this.outbox) {
      if (entry.sent) continue;
      if (inFlight >= this.options.maxInFlight) return;
      if (entry.notBefore > now) {
        // Keep publish order: nothing overtakes a publish waiting to retry.
        this.setTimer("pump", entry.notBefore - now, () => this.pump());
        return;
      }
      if (!this.transport.send(entry.frame)) return;
      entry.sent = true;
      inFlight++;
    }
  }

  /** Over SSE, publishes go one at a time as HTTP POSTs, in order. */
  async pumpHttp() {
    if (this.httpPublishing) return;
    const entry = this.outbox[0];
    if (!entry) return;
    const wait = entry.notBefore - this.clock.now();
    if (wait > 0) {
      this.setTimer("pump", wait, () => this.pump());
      return;
    }
    this.httpPublishing = true;
    entry.sent = true;
    try {
      const answer = await this.http("POST", "messages", { body: entry.body });
      this.takePublish(entry.id);
      entry.resolve(answer.seq ?? null);
    } catch (e) {
      if (this.state === "closed") return;
      if (isRetryable(e.code)) {
        entry.sent = false;
        entry.notBefore = this.clock.now() + backoffDelay(entry.retries++, PUBLISH_RETRY, this.random) + 50;
      } else {
        this.takePublish(entry.id);
        entry.reject(e);
      }
    } finally {
      this.httpPublishing = false;
    }
    this.pump();
  }

  // ----------------------------------------------------------- requests --

  /** A request answered by id over the socket; `fallback` if the socket drops first. */
  request(frame, fallback) {
    const id = `r${this.nextId++}`;
    return new Promise((resolve, reject) => {
      this.requests.set(id, {
        resolve,
        reject,
        fallback: () => fallback().then(resolve, reject),
      });
      if (!this.transport?.send(JSON.stringify({ ...frame, id }))) {
        this.requests.delete(id);
        fallback().then(resolve, reject);
      }
    });
  }

  /** An HTTP call on this room, with the token; a refused token is refreshed once. */
  async http(method, endpoint, { query = {}, body } = {}, refreshed = false) {
    if (!this.fetch) throw new HeraldError("network", "no fetch implementation");
    const url = new URL(`${this.base}/v1/rooms/${encodeURIComponent(this.name)}/${endpoint}`);
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) url.searchParams.set(k, String(v));
    const token = await this.tokens.get({ refresh: refreshed });
    const headers = {};
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    let res;
    try {
      res = await this.fetch(url.href, { method, headers, body, cache: "no-store" });
    } catch (e) {
      throw new HeraldError("network", String(e?.message ?? e));
    }
    let json = null;
    try {
      json = await res.json();
    } catch {
      // an error page that is not JSON: the status says enough
    }
    if (res.status === 401 && !refreshed && this.tokens.refreshable) {
      return this.http(method, endpoint, { query, body }, true);
    }
    if (!res.ok) {
      throw new HeraldError(json?.error ?? `http_${res.status}`, json?.message ?? `HTTP ${res.status}`, { status: res.status });
    }
    return json;
  }

  // ----------------------------------------------------------- presence --

  /**
   * Read the whole snapshot (page by page), then follow events over it. A
   * newer read (a reconnect, a re-read) supersedes one still running.
   */
  async readPresence() {
    const run = {};
    this.presenceRun = run;
    const generation = this.generation;
    const current = () => this.presenceRun === run && generation === this.generation;
    const withMembers = this.options.presence === "events";
    try {
      this.presenceState.beginSnapshot();
      let cursor;
      for (;;) {
        const frame = { t: "presence", limit: withMembers ? PRESENCE_PAGE : 1 };
        if (cursor) frame.cursor = cursor;
        const page = await this.request(frame, () => this.http("GET", "presence", { query: { cursor, limit: frame.limit } }));
        if (!current()) return;
        if (this.presenceState.snapshotPage(page, { withMembers })) break;
        cursor = page.cursor;
      }
      this.emit("presence", this.presence());
    } catch (e) {
      if (current()) this.emit("error", e);
    }
  }

  /** A counts frame left members unknown: read again, at most every 2 s. */
  rereadPresence() {
    if (this.options.presence !== "events" || this.timers.presence !== undefined) return;
    this.setTimer("presence", 2_000, () => this.readPresence());
  }
}

/** `room(baseUrl, name, options)`: a connected room client. */
export function room(baseUrl, name, options) {
  return new Room(baseUrl, name, options);
}

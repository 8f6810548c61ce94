// Fakes for the client's sans-network tests: a virtual clock whose timers
// run only when the test advances it, and a WebSocket the test drives.

/** Let pending promise callbacks (the client's awaits) run. */
export const settle = () => new Promise((r) => setImmediate(r));

export class FakeClock {
  constructor() {
    this.t = 0;
    this.nextId = 1;
    this.timers = new Map();
  }

  now() {
    return this.t;
  }

  setTimeout(fn, ms) {
    const id = this.nextId++;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn });
    return id;
  }

  clearTimeout(id) {
    this.timers.delete(id);
  }

  /** Run every timer due within `ms`, in deadline order, settling after each. */
  async advance(ms) {
    const end = this.t + ms;
    await settle();
    for (;;) {
      let next = null;
      for (const [id, timer] of this.timers) {
        if (timer.at <= end && (next === null || timer.at < next[1].at)) next = [id, timer];
      }
      if (!next) break;
      this.timers.delete(next[0]);
      this.t = next[1].at;
      next[1].fn();
      await settle();
    }
    this.t = end;
  }

  /** The deadline of the earliest timer, or null. */
  nextDeadline() {
    let at = null;
    for (const timer of this.timers.values()) if (at === null || timer.at < at) at = timer.at;
    return at;
  }
}

/** A WebSocket class whose instances the test opens, feeds and closes. */
export function fakeWebSocketClass(clock) {
  return class FakeSocket {
    static instances = [];
    constructor(url) {
      this.url = new URL(url);
      this.readyState = 0;
      this.sent = [];
      this.createdAt = clock.now();
      FakeSocket.instances.push(this);
    }
    send(text) {
      this.sent.push(text);
    }
    close(code) {
      this.readyState = 3;
      this.closedWith = code;
    }
    // ---- driven by the test ----
    welcome(fields = {}) {
      this.readyState = 1;
      this.frame({ t: "welcome", room: "r", conn: "c", region: "enam", epoch: "e1", seq: 0, ...fields });
    }
    frame(value) {
      this.onmessage?.({ data: JSON.stringify(value) });
    }
    serverClose(code, reason = "") {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }
  };
}

/** A fetch that answers every request with `status` and `{"error": code}`. */
export function fakeFetch(status, code) {
  const calls = [];
  const fetch = async (url) => {
    calls.push(url);
    return { status, ok: status < 300, json: async () => ({ error: code, message: code }) };
  };
  fetch.calls = calls;
  return fetch;
}

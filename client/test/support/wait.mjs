// Waiting in tests: for a condition, with a deadline, never a fixed sleep.
import WebSocket from "ws";

/** Resolve once `predicate()` is truthy; fail naming `what` after `timeout` ms. */
export async function waitFor(predicate, what, timeout = 15_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The `ws` WebSocket, with every instance recorded so a test can kill one. */
export function recordingWebSocket() {
  return class RecordingWebSocket extends WebSocket {
    static all = [];
    constructor(...args) {
      super(...args);
      RecordingWebSocket.all.push(this);
    }
  };
}

/** Publish over HTTP as a backend would. */
export async function httpPublish(url, room, token, data, extra = {}) {
  const res = await fetch(`${url}/v1/rooms/${encodeURIComponent(room)}/messages`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ data, ...extra }),
  });
  const body = await res.json();
  if (!res.ok) throw new Error(`publish ${res.status}: ${JSON.stringify(body)}`);
  return body;
}

/** Every stored message of a room, over HTTP. */
export async function storedMessages(url, room, token) {
  const out = [];
  let since = 0;
  for (;;) {
    const res = await fetch(`${url}/v1/rooms/${encodeURIComponent(room)}/messages?since=${since}&limit=1000`, {
      headers: { authorization: `Bearer ${token}` },
    });
    const page = await res.json();
    out.push(...page.messages);
    if (!page.more || page.messages.length === 0) return out;
    since = page.messages.at(-1).seq;
  }
}

// The SSE fallback, for networks that block WebSockets: the room's
// `/events` stream read with `fetch`, so the token goes in a header rather
// than the URL and it works in Node as in browsers. Frames are the same JSON
// as on a socket; publishing and reads go over HTTP (see room.js).

import { SseParser } from "./sse_parser.js";

/**
 * @param {typeof fetch} fetchImpl
 * @param {string} url
 * @param {string | null} token
 * @param {{onText(text: string): void, onClose(info: {code: number, reason: string, status?: number, error?: string}): void}} handlers
 */
export function openSse(fetchImpl, url, token, handlers) {
  const abort = new AbortController();
  let closed = false;
  const finish = (info) => {
    if (closed) return;
    closed = true;
    handlers.onClose(info);
  };
  (async () => {
    let res;
    try {
      const headers = { accept: "text/event-stream" };
      if (token) headers.authorization = `Bearer ${token}`;
      res = await fetchImpl(url, { headers, signal: abort.signal, cache: "no-store" });
    } catch (e) {
      finish({ code: 1006, reason: String(e?.message ?? e) });
      return;
    }
    if (!res.ok || !res.body) {
      let body = null;
      try {
        body = await res.json();
      } catch {
        // not JSON; the status says enough
      }
      finish({ code: 1006, status: res.status, error: body?.error, reason: body?.message ?? `HTTP ${res.status}` });
      return;
    }
    const parser = new SseParser((ev) => {
      if (!closed) handlers.onText(ev.data);
    });
    const decoder = new TextDecoder();
    try {
      const reader = res.body.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done || closed) break;
        parser.push(decoder.decode(value, { stream: true }));
      }
    } catch {
      // aborted or the network dropped: reported below as a drop
    }
    finish({ code: 1006, reason: "event stream ended" });
  })();
  return {
    kind: "sse",
    send: () => false,
    close() {
      closed = true;
      abort.abort();
    },
  };
}

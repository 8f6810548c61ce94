// A WebSocket to the room's relay, behind the small interface the room
// client drives: text in, text out, one close report. Any implementation
// with the browser's API works (the global one, or `ws` in Node).

/**
 * @param {typeof WebSocket} WebSocketImpl
 * @param {string} url
 * @param {{onText(text: string): void, onClose(info: {code: number, reason: string}): void}} handlers
 */
export function openWebSocket(WebSocketImpl, url, handlers) {
  let closed = false;
  const finish = (info) => {
    if (closed) return;
    closed = true;
    handlers.onClose(info);
  };
  let ws;
  try {
    ws = new WebSocketImpl(url);
  } catch (e) {
    // Reported after return, like a socket that failed to open.
    Promise.resolve().then(() => finish({ code: 1006, reason: String(e?.message ?? e) }));
    return { kind: "websocket", send: () => false, close() { closed = true; } };
  }
  ws.onmessage = (ev) => {
    if (closed) return;
    handlers.onText(typeof ev.data === "string" ? ev.data : String(ev.data));
  };
  ws.onclose = (ev) => finish({ code: ev.code, reason: ev.reason ?? "" });
  ws.onerror = () => {}; // a close event always follows
  return {
    kind: "websocket",
    send(text) {
      if (closed || ws.readyState !== 1) return false;
      ws.send(text);
      return true;
    },
    /** Stop reporting and close; the room client has already moved on. */
    close(code = 1000, reason = "") {
      closed = true;
      ws.onmessage = ws.onclose = null;
      try {
        if (ws.readyState <= 1) ws.close(code, reason);
      } catch {
        // closing a socket that never opened may throw; nothing to do
      }
    },
  };
}

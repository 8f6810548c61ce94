// An incremental text/event-stream parser (the WHATWG "interpret an event
// stream" rules, minus `retry`, which the client's own backoff replaces).
// Fed decoded text as it arrives; calls `onEvent({event, data, id})` per
// dispatched event. Pure, so chunk boundaries are tested without a server.

export class SseParser {
  /**
   * @param {(ev: {event: string, data: string, id: string | null}) => void} onEvent
   * @param {number} maxBuffer the most characters one event may take (Herald
   *   never sends more than max(1 MiB, a message + 4 KiB) at once); past it
   *   `push` throws, and the stream is dropped rather than held in memory.
   */
  constructor(onEvent, maxBuffer = 16 * 1_048_576) {
    this.onEvent = onEvent;
    this.maxBuffer = maxBuffer;
    this.pending = 0;
    this.buffer = "";
    this.reset();
  }

  reset() {
    this.event = "";
    this.data = [];
    this.id = null;
  }

  /** Feed the next piece of decoded text. */
  push(text) {
    this.buffer += text;
    if (this.buffer.length + this.pending > this.maxBuffer) {
      throw new RangeError(`event stream: an event over ${this.maxBuffer} characters`);
    }
    for (;;) {
      const nl = this.buffer.search(/\r\n|\r|\n/);
      if (nl < 0) return;
      // A lone \r at the very end may be the first half of \r\n.
      if (this.buffer[nl] === "\r" && nl === this.buffer.length - 1) return;
      const line = this.buffer.slice(0, nl);
      const width = this.buffer.startsWith("\r\n", nl) ? 2 : 1;
      this.buffer = this.buffer.slice(nl + width);
      this.line(line);
    }
  }

  line(line) {
    if (line === "") {
      this.pending = 0;
      if (this.data.length > 0) {
        this.onEvent({ event: this.event || "message", data: this.data.join("\n"), id: this.id });
      }
      this.reset();
      return;
    }
    if (line.startsWith(":")) return; // comment (heartbeat)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") {
      this.data.push(value);
      this.pending += value.length;
    }
    else if (field === "id" && !value.includes("\0")) this.id = value;
  }
}

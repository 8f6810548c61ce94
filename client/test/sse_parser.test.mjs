// The event-stream parser: events survive any chunking of the stream.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SseParser } from "../sse_parser.js";

const stream = 'retry: 1000\n\nevent: welcome\ndata: {"t":"welcome","seq":1}\n\n: heartbeat\n\nid: ep:2\r\nevent: msg\r\ndata: {"t":"msg",\r\ndata: "seq":2}\r\n\r\nevent: msg\rdata: x\r\r\n';

function parse(chunks) {
  const out = [];
  const p = new SseParser((ev) => out.push(ev));
  for (const c of chunks) p.push(c);
  return out;
}

test("events, comments, multi-line data and every line ending", () => {
  assert.deepEqual(parse([stream]), [
    { event: "welcome", data: '{"t":"welcome","seq":1}', id: null },
    { event: "msg", data: '{"t":"msg",\n"seq":2}', id: "ep:2" },
    { event: "msg", data: "x", id: null },
  ]);
});

test("the same events whatever the chunk boundaries", () => {
  const whole = parse([stream]);
  for (let size = 1; size <= 7; size++) {
    const chunks = [];
    for (let i = 0; i < stream.length; i += size) chunks.push(stream.slice(i, i + size));
    assert.deepEqual(parse(chunks), whole, `chunks of ${size}`);
  }
});

test("an event past the bound throws instead of growing the buffer", () => {
  const p = new SseParser(() => {}, 100);
  p.push("data: " + "x".repeat(60) + "\n");
  assert.throws(() => p.push("data: " + "y".repeat(60)), RangeError);
  const ok = new SseParser(() => {}, 100);
  for (let i = 0; i < 50; i++) ok.push("data: " + "z".repeat(60) + "\n\n"); // many events, each small
});

// The close code table of docs/PROTOCOL.md, as the client acts on it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { closeAction, closeCodes, errorCodes, isRetryable, HeraldError } from "../codes.js";

test("terminal close codes stop, transient ones reconnect, 4001 refreshes the token", () => {
  for (const code of [1008, 1009, 1002, 1003, 1007, 3500, 3999, 4500, 4999]) assert.equal(closeAction(code), "stop", `${code}`);
  for (const code of [1000, 1001, 1005, 1006, 1011, 1012, 1013, 3000, 3499, 4000, 4002, 4499]) assert.equal(closeAction(code), "reconnect", `${code}`);
  assert.equal(closeAction(closeCodes.tokenExpired), "refresh_token");
});

test("every server error code of the protocol is listed, and retryable ones are marked", async () => {
  const { readFile } = await import("node:fs/promises");
  const spec = await readFile(new URL("../../docs/PROTOCOL.md", import.meta.url), "utf8");
  const table = spec.slice(spec.indexOf("## Error codes"), spec.indexOf("## Close codes"));
  const inSpec = [...table.matchAll(/^\| `([a-z_]+)` \|/gm)].map((m) => m[1]);
  assert.ok(inSpec.length >= 12, "the error table was found");
  for (const code of inSpec) assert.ok(Object.values(errorCodes).includes(code), `${code} missing from codes.js`);
  for (const code of ["rate_limited", "overloaded", "internal"]) assert.ok(isRetryable(code), code);
  for (const code of ["bad_frame", "too_large", "forbidden", "unauthorized", "bad_room"]) assert.ok(!isRetryable(code), code);
  assert.equal(new HeraldError("overloaded", "busy").retryable, true);
});

test("the client's close code table matches the spec's", async () => {
  const { readFile } = await import("node:fs/promises");
  const spec = await readFile(new URL("../../docs/PROTOCOL.md", import.meta.url), "utf8");
  const table = spec.slice(spec.indexOf("## Close codes"));
  const rows = [...table.matchAll(/^\| (\d{4}) \| [^|]+\| ([^|]+) \|/gm)].map((m) => [Number(m[1]), m[2].trim()]);
  assert.ok(rows.length >= 7, "the close code table was found");
  for (const [code, should] of rows) {
    const action = closeAction(code);
    if (code === 1000) continue; // only ever the answer to our own close
    if (should.startsWith("not reconnect")) assert.equal(action, "stop", `${code}: ${should}`);
    else if (should.startsWith("get a fresh token")) assert.equal(action, "refresh_token", `${code}: ${should}`);
    else assert.equal(action, "reconnect", `${code}: ${should}`);
  }
});

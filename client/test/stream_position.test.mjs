// The exactly-once, in-order rule, and what welcomes and resets do to it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { afterReset, afterWelcome, classifySeq } from "../stream_position.js";

test("next seq is delivered, older ones are duplicates, a jump is a gap", () => {
  assert.equal(classifySeq(4, 5), "deliver");
  assert.equal(classifySeq(4, 4), "duplicate");
  assert.equal(classifySeq(4, 1), "duplicate");
  assert.equal(classifySeq(4, 6), "gap");
});

test("welcomes: first, recovered, refused, new epoch", () => {
  assert.deepEqual(afterWelcome(null, { epoch: "a", seq: 3 }), { position: { epoch: "a", seq: 3 }, reset: null });
  const at = { epoch: "a", seq: 3 };
  assert.deepEqual(afterWelcome(at, { epoch: "a", seq: 9, recovered: true }), { position: at, reset: null });
  assert.deepEqual(afterWelcome(at, { epoch: "a", seq: 9, recovered: false }).reset, { epoch: "a", seq: 9, reason: "not_recovered" });
  assert.deepEqual(afterWelcome(at, { epoch: "b", seq: 9, recovered: false }).reset, { epoch: "b", seq: 9, reason: "erased" });
});

test("resets move forward only", () => {
  const at = { epoch: "a", seq: 3 };
  assert.deepEqual(afterReset(at, { epoch: "a", seq: 2 }), { position: at, reset: null });
  assert.deepEqual(afterReset(at, { epoch: "a", seq: 7 }).reset, { epoch: "a", seq: 7, reason: "pruned" });
  assert.deepEqual(afterReset(at, { epoch: "b", seq: 3 }).reset, { epoch: "b", seq: 3, reason: "erased" });
});

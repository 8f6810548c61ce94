// Full-jitter backoff: every delay within [0, min(cap, base * 2^attempt)].
import { test } from "node:test";
import assert from "node:assert/strict";
import { backoffCeiling, backoffDelay } from "../backoff.js";

test("ceilings double from base up to the cap", () => {
  const opts = { base: 500, cap: 30_000 };
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 7].map((a) => backoffCeiling(a, opts)), [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
  assert.equal(backoffCeiling(10_000, opts), 30_000, "huge attempts stay finite");
  assert.equal(backoffCeiling(-3, opts), 500);
});

test("delays span [0, ceiling] and nothing outside", () => {
  let seed = 7;
  const random = () => ((seed = (seed * 16807) % 2147483647) - 1) / 2147483646;
  for (let attempt = 0; attempt < 12; attempt++) {
    const ceiling = backoffCeiling(attempt);
    const draws = Array.from({ length: 400 }, () => backoffDelay(attempt, {}, random));
    assert.ok(draws.every((d) => d >= 0 && d <= ceiling), `attempt ${attempt}: ${Math.max(...draws)} > ${ceiling}`);
    // Full jitter uses the whole range, not a band near the ceiling.
    assert.ok(Math.min(...draws) < ceiling * 0.1, `attempt ${attempt}: no small delays`);
    assert.ok(Math.max(...draws) > ceiling * 0.9, `attempt ${attempt}: no large delays`);
  }
  assert.equal(backoffDelay(3, {}, () => 0), 0);
  assert.equal(backoffDelay(3, {}, () => 0.5), 2000);
});

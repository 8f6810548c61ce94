// Reconnect delays: full-jitter exponential backoff ("Exponential Backoff
// And Jitter", AWS architecture blog). A uniform pick in [0, ceiling] keeps
// a crowd of clients that lost the same server from coming back in step.

/** Defaults, in milliseconds. */
export const backoffDefaults = Object.freeze({ base: 500, cap: 30_000 });

/** The largest delay attempt `attempt` (0 for the first retry) may draw. */
export function backoffCeiling(attempt, { base = backoffDefaults.base, cap = backoffDefaults.cap } = {}) {
  // 2 ** 40 already passes any sane cap; clamping keeps the number finite.
  return Math.min(cap, base * 2 ** Math.min(Math.max(attempt, 0), 40));
}

/** A delay in [0, backoffCeiling(attempt)], drawn with `random` in [0, 1). */
export function backoffDelay(attempt, options = {}, random = Math.random) {
  return Math.floor(random() * backoffCeiling(attempt, options));
}

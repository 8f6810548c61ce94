// Where a client is in a room's stream: the epoch of its last welcome or
// reset and the seq of the last message it handed to the app. Pure, so the
// exactly-once, in-order rule is tested without a server.

/**
 * What to do with a stored message (`seq`), given the last seq delivered:
 * - `"deliver"`: it is the next one;
 * - `"duplicate"`: already delivered (a replay overlapping what we had);
 * - `"gap"`: messages are missing before it; resume instead of delivering.
 */
export function classifySeq(lastSeq, seq) {
  if (seq <= lastSeq) return "duplicate";
  if (seq === lastSeq + 1) return "deliver";
  return "gap";
}

/**
 * The position after a `welcome`, and whether the app must be told of a
 * jump (`reset`): a resume that was refused, or a first welcome (no jump).
 * @param {{epoch: string, seq: number} | null} position before
 * @param {{epoch: string, seq: number, recovered?: boolean}} welcome
 * @returns {{position: {epoch: string, seq: number}, reset: null | {epoch: string, seq: number, reason: string}}}
 */
export function afterWelcome(position, welcome) {
  const at = { epoch: welcome.epoch, seq: welcome.seq };
  if (!position) return { position: at, reset: null };
  if (welcome.recovered === true) return { position, reset: null };
  // Not recovered: the history was erased, pruned past our seq, or we are
  // ahead of the room. Continue from the welcome and tell the app.
  const reason = welcome.epoch !== position.epoch ? "erased" : "not_recovered";
  return { position: at, reset: { ...at, reason } };
}

/**
 * The position after a `reset` frame, and what to tell the app (or null
 * when it moves nothing, e.g. one already covered by a welcome).
 */
export function afterReset(position, frame) {
  const at = { epoch: frame.epoch, seq: frame.seq };
  if (!position) return { position: at, reset: null };
  if (frame.epoch === position.epoch && frame.seq <= position.seq) return { position, reset: null };
  const reason = frame.epoch !== position.epoch ? "erased" : "pruned";
  return { position: at, reset: { ...at, reason } };
}

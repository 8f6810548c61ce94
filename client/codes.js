// The error and close code tables of docs/PROTOCOL.md, and what a client
// does on each. One module, so the SDK and apps agree on every code.

/** Error codes in `err` frames and HTTP error bodies (`{"error":CODE}`). */
export const errorCodes = Object.freeze({
  badFrame: "bad_frame",
  tooLarge: "too_large",
  badRoom: "bad_room",
  badRegion: "bad_region",
  rateLimited: "rate_limited",
  unauthorized: "unauthorized",
  forbidden: "forbidden",
  overloaded: "overloaded",
  upgradeRequired: "upgrade_required",
  notFound: "not_found",
  methodNotAllowed: "method_not_allowed",
  internal: "internal",
  // Client-side codes: never sent by the server.
  /** The connection dropped before the request was answered. */
  disconnected: "disconnected",
  /** `close()` was called, or the client stopped for good. */
  closed: "closed",
  /** No answer within the client's deadline. */
  timeout: "timeout",
  /** The network failed (fetch rejected, socket never opened). */
  network: "network",
});

/** Error codes after which the same request may succeed later. */
const retryable = new Set(["rate_limited", "overloaded", "internal", "disconnected", "timeout", "network"]);

/** Whether a request refused with `code` may be retried after a backoff. */
export function isRetryable(code) {
  return retryable.has(code);
}

/** Close codes the server sends (and 1006, which only the client sees). */
export const closeCodes = Object.freeze({
  normal: 1000,
  goingAway: 1001,
  abnormal: 1006,
  policyViolation: 1008,
  messageTooBig: 1009,
  internalError: 1011,
  tokenExpired: 4001,
  tooSlow: 4002,
});

/**
 * What a client does when its connection closes with `code`:
 * - `"reconnect"`: transient; reconnect with backoff and resume.
 * - `"refresh_token"`: the token expired; get a fresh one, then reconnect.
 * - `"stop"`: terminal; reconnecting would fail the same way.
 *
 * 1000 is only ever sent in answer to the client's own close; seen without
 * one (a proxy, a restart) it is treated as transient, so a client never
 * stops silently.
 */
export function closeAction(code) {
  if (code === closeCodes.tokenExpired) return "refresh_token";
  if (code === closeCodes.policyViolation || code === closeCodes.messageTooBig) return "stop";
  // Protocol errors on our side: the same client would fail again.
  if (code === 1002 || code === 1003 || code === 1007) return "stop";
  if ((code >= 3500 && code <= 3999) || (code >= 4500 && code <= 4999)) return "stop";
  return "reconnect";
}

/** An error from Herald (`code` from `errorCodes`), or from the client. */
export class HeraldError extends Error {
  /**
   * @param {string} code one of `errorCodes`
   * @param {string} message
   * @param {{status?: number, closeCode?: number}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message || code);
    this.name = "HeraldError";
    this.code = code;
    if (extra.status !== undefined) this.status = extra.status;
    if (extra.closeCode !== undefined) this.closeCode = extra.closeCode;
  }

  /** Whether the same request may succeed if retried later. */
  get retryable() {
    return isRetryable(this.code);
  }
}

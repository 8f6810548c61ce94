// The token a client presents: a fixed one, or one fetched by the app's
// `getToken` whenever the current one is missing, expired or refused.

import { HeraldError } from "./codes.js";

/** Seconds before `exp` at which a token counts as expired (clock skew). */
const EXPIRY_MARGIN_S = 5;

/** The `exp` claim of a JWT, or null (not a JWT, no exp, unreadable). */
export function tokenExpiry(token) {
  try {
    const part = token.split(".")[1];
    if (!part) return null;
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const json = typeof atob === "function"
      ? decodeURIComponent(Array.from(atob(b64), (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""))
      : Buffer.from(b64, "base64").toString("utf8");
    const exp = JSON.parse(json).exp;
    return typeof exp === "number" ? exp : null;
  } catch {
    return null;
  }
}

export class TokenSource {
  /**
   * @param {{token?: string, getToken?: () => Promise<string>}} options
   * @param {() => number} now milliseconds
   */
  constructor({ token, getToken }, now) {
    this.token = token ?? null;
    this.getToken = getToken ?? null;
    this.now = now;
  }

  /** Whether a fresh token can be had (an app callback exists). */
  get refreshable() {
    return this.getToken !== null;
  }

  expired() {
    if (!this.token) return false;
    const exp = tokenExpiry(this.token);
    return exp !== null && exp - EXPIRY_MARGIN_S <= this.now() / 1000;
  }

  /**
   * The token to present (null: connect anonymously, for public rooms).
   * `refresh` asks the app for a new one even if the current one looks valid
   * (the server refused it).
   */
  async get({ refresh = false } = {}) {
    if (this.getToken && (refresh || !this.token || this.expired())) {
      let fresh;
      try {
        fresh = await this.getToken();
      } catch (e) {
        throw new HeraldError("unauthorized", `getToken failed: ${e?.message ?? e}`);
      }
      if (typeof fresh !== "string" || fresh === "") {
        throw new HeraldError("unauthorized", "getToken must resolve to a non-empty token string");
      }
      this.token = fresh;
    }
    return this.token;
  }
}

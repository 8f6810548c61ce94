// Herald's JavaScript client: `import { room } from "/client/herald.js"`.
// Zero dependencies; browsers and Node 20+ (pass `WebSocket` from `ws`).
// Types: herald.d.ts. Guide: client/README.md.

export { room, Room, defaults } from "./room.js";
export { HeraldError, errorCodes, closeCodes, closeAction, isRetryable } from "./codes.js";
export { backoffDelay, backoffCeiling, backoffDefaults } from "./backoff.js";

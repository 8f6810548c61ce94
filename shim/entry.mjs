// The Worker's entry module: what worker-build generated (build/index.js),
// with the Room's class wrapped so that it extends `DurableObject`. The
// runtime only allows Durable Object RPC on such classes, and the relay's
// publish call to its Room is RPC (docs/ARCHITECTURE.md, "The link").
//
// Nothing is decided here: every call goes straight to the Rust object.

import { DurableObject } from "cloudflare:workers";
import { Room as RustRoom } from "../build/index.js";

export * from "../build/index.js";
export { default } from "../build/index.js";

export class Room extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.room = new RustRoom(ctx, env);
  }

  fetch(request) {
    return this.room.fetch(request);
  }

  alarm(alarmInfo) {
    return this.room.alarm(alarmInfo);
  }

  /** RPC from a relay: a publish batch (JSON) in, the answer text out. */
  publish(room, batch) {
    return this.room.publishRpc(room, batch);
  }
}

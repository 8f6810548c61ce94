// Compiled by types.test.mjs with `tsc --noEmit --strict`: the declarations
// in herald.d.ts describe what apps write against. Never run.
import { room, HeraldError, closeAction, backoffDelay, errorCodes, type Message, type Presence, type StateEvent } from "../../herald.js";

const chat = room("https://herald.example.com", "chat:lobby", {
  getToken: async () => "jwt",
  presence: "events",
  WebSocket: globalThis.WebSocket,
  cap: 5_000,
});
const off: () => void = chat.on("message", (m: Message) => {
  const seq: number | undefined = m.seq;
  const from: string | null = m.from;
  void seq, from;
});
off();
chat.on("state", (s: StateEvent) => {
  if (s.state === "reconnecting" && s.reason) console.log(s.reason.code, s.reason.retryIn);
});
chat.on("reset", (r) => console.log(r.reason === "erased", r.epoch, r.seq));
chat.on("error", (e: HeraldError) => console.log(e.code, e.retryable));
chat.on("presence", (p: Presence) => p.members.map((m) => m.user + m.region));

async function main(): Promise<void> {
  const seq: number | null = await chat.publish({ text: "hi" });
  await chat.publish({ x: 1 }, { ephemeral: true });
  const page = await chat.history({ since: seq ?? 0, limit: 10 });
  const more: boolean = page.more;
  const now: Presence = chat.presence();
  const at = chat.position?.seq;
  console.log(more, now.count, at, closeAction(4001), backoffDelay(2), errorCodes.rateLimited);
  chat.close();
}
void main;

// @ts-expect-error: unknown events are a type error
chat.on("nope", () => {});
// @ts-expect-error: presence modes are "events" | "counts"
room("", "r", { presence: "all" });

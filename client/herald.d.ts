// Types for herald.js (Herald's JavaScript client). The wire protocol they
// describe is docs/PROTOCOL.md.

export type State = "connecting" | "open" | "reconnecting" | "closed";

/** Why the state changed: a close code (number) or an error code (string). */
export interface Reason {
  code: number | string;
  message: string;
  /** Milliseconds until the next attempt, on `reconnecting`. */
  retryIn?: number;
}

export interface StateEvent {
  state: State;
  previous: State | null;
  reason: Reason | null;
}

/** A message as the server sent it (`t: "msg"`). */
export interface Message<T = unknown> {
  t: "msg";
  /** Absent on ephemeral messages. */
  seq?: number;
  ts: number;
  data: T;
  from: string | null;
  mid?: string;
  eph?: true;
}

/** The stream jumped: drop what was derived from it and reload (e.g. from `history`). */
export interface ResetEvent {
  epoch: string;
  seq: number;
  /** `erased`: a new epoch; `pruned`: messages past retention; `not_recovered`: a resume failed. */
  reason: "erased" | "pruned" | "not_recovered";
}

/** The user's read mark moved, on this device or another one. */
export interface ReadEvent {
  seq: number;
}

export interface Member {
  user: string;
  info?: unknown;
  region: string;
}

export interface Presence {
  count: number;
  regions: Record<string, number>;
  /** Empty in counts-only mode and while only counts are known. */
  members: Member[];
}

export interface HistoryPage<T = unknown> {
  epoch: string;
  messages: Message<T>[];
  more: boolean;
}

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface RoomOptions {
  /** A token (JWT). Omit for public rooms. */
  token?: string;
  /** Called for a token at first connect and whenever the current one expires or is refused. */
  getToken?: () => Promise<string>;
  /** A region hint (honoured only where the server trusts `?region=`). */
  region?: string;
  /** Follow presence: `events` (members, join/leave) or `counts` (counts only). Needs the `presence` capability. */
  presence?: "events" | "counts" | false;
  /** A WebSocket implementation; the global one by default (pass `ws` in Node 20). */
  WebSocket?: unknown;
  /** A fetch implementation; the global one by default. */
  fetch?: typeof fetch;
  /** Transports in order of preference; default `["websocket", "sse"]` (SSE is the fallback). */
  transports?: Array<"websocket" | "sse">;
  /** Start from a known position (a resume), e.g. one saved from `room.position`. */
  resume?: { epoch: string; seq: number };
  /** Backoff base and cap, ms (500, 30000). */
  base?: number;
  cap?: number;
  /** A connection must stay open this long (ms, 5000) before backoff starts over. */
  minUptime?: number;
  /** From opening a connection to its welcome, ms (10000). */
  connectTimeout?: number;
  pingInterval?: number;
  pongTimeout?: number;
  maxInFlight?: number;
  /** The server's HERALD_MAX_FRAME_BYTES (65536): larger publishes are refused locally with too_large. */
  maxFrameBytes?: number;
  /** Publishes waiting for their ack, in count (1000) and bytes (4 MiB); past either `publish` rejects with `overloaded`. */
  maxQueued?: number;
  maxQueuedBytes?: number;
  /** For tests: a fake clock and random source. */
  clock?: Clock;
  random?: () => number;
}

export class HeraldError extends Error {
  code: string;
  status?: number;
  closeCode?: number;
  readonly retryable: boolean;
}

export class Room {
  readonly name: string;
  readonly state: State;
  /** The last message handed to the app: where a resume starts. */
  readonly position: { epoch: string; seq: number } | null;
  /** This connection's id and relay region, once welcomed. */
  readonly conn: string | null;
  readonly region: string | null;
  /**
   * The user's unread count in the last welcome: stored messages after
   * their read mark, up to the welcome's seq, that others published.
   * `null` when the welcome had none (no `sub`, a room nobody has marked
   * read yet, or the room could not be asked). Not kept live.
   */
  readonly unread: number | null;
  /** The user's read mark as last heard from the room (a welcome, a `read` frame); null until then. */
  readonly readSeq: number | null;
  on(event: "message", fn: (m: Message) => void): () => void;
  on(event: "presence", fn: (p: Presence) => void): () => void;
  on(event: "state", fn: (s: StateEvent) => void): () => void;
  on(event: "reset", fn: (r: ResetEvent) => void): () => void;
  on(event: "read", fn: (r: ReadEvent) => void): () => void;
  on(event: "error", fn: (e: HeraldError) => void): () => void;
  off(event: string, fn: Function): void;
  /** Resolves with the stored seq once acknowledged (null for ephemeral). */
  publish(data: unknown, options?: { ephemeral?: boolean }): Promise<number | null>;
  /**
   * Marks everything up to `seq` read for this user on every device. Only
   * a mark above the last known one is sent; offline (or over SSE) the
   * highest waits for the next socket. Throws a TypeError for anything but
   * a whole number ≥ 0.
   */
  read(seq: number): void;
  presence(): Presence;
  history(options?: { since?: number; limit?: number }): Promise<HistoryPage>;
  close(): void;
}

export function room(baseUrl: string, name: string, options?: RoomOptions): Room;

export const defaults: Readonly<{
  base: number; cap: number; minUptime: number; connectTimeout: number;
  pingInterval: number; pongTimeout: number; maxInFlight: number; maxFrameBytes: number; maxQueued: number; maxQueuedBytes: number;
}>;

export const errorCodes: Readonly<Record<string, string>>;
export const closeCodes: Readonly<Record<string, number>>;
export function closeAction(code: number): "reconnect" | "refresh_token" | "stop";
export function isRetryable(code: string): boolean;
export const backoffDefaults: Readonly<{ base: number; cap: number }>;
export function backoffCeiling(attempt: number, options?: { base?: number; cap?: number }): number;
export function backoffDelay(attempt: number, options?: { base?: number; cap?: number }, random?: () => number): number;

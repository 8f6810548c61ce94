// The room's presence as one client sees it: a snapshot read once the
// connection is welcomed, kept live by `join`/`leave` events, or by
// `presence_counts` frames in large rooms and in counts-only mode.

export class PresenceState {
  constructor() {
    /** @type {Map<string, {user: string, info?: unknown, region: string}>} */
    this.members = new Map();
    this.count = 0;
    this.regions = {};
    /** Members are known one by one (else only counts are). */
    this.exact = false;
    /** Events seen while a snapshot is being read, replayed over it. */
    this.pending = null;
  }

  /** What `room.presence()` returns. */
  snapshot() {
    return {
      count: this.count,
      regions: { ...this.regions },
      members: this.exact ? [...this.members.values()] : [],
    };
  }

  /** A snapshot read starts: events from now on are kept to replay. */
  beginSnapshot() {
    this.pending = [];
    this.next = new Map();
  }

  /** One page of a snapshot; `last` when `more` is false. */
  snapshotPage(page, { withMembers }) {
    if (!this.next) this.beginSnapshot();
    for (const m of page.members ?? []) this.next.set(m.user, m);
    if (page.more && withMembers) return false;
    this.count = page.count ?? 0;
    this.regions = { ...(page.regions ?? {}) };
    if (withMembers) {
      this.members = this.next;
      this.exact = true;
    }
    const replay = this.pending ?? [];
    this.pending = null;
    this.next = null;
    for (const ev of replay) this.apply(ev);
    return true;
  }

  /** Abandon a snapshot read (the connection dropped). */
  abortSnapshot() {
    this.pending = null;
    this.next = null;
  }

  /**
   * A `join`, `leave` or `presence_counts` frame. Returns true when a
   * counts frame leaves members unknown and a fresh snapshot should be read.
   */
  apply(frame) {
    if (this.pending) this.pending.push(frame);
    if (frame.t === "join") {
      this.members.set(frame.user, { user: frame.user, info: frame.info, region: frame.region });
      this.recount();
    } else if (frame.t === "leave") {
      this.members.delete(frame.user);
      this.recount();
    } else if (frame.t === "presence_counts") {
      this.count = frame.count;
      this.regions = { ...frame.regions };
      // In a room past the event threshold members are not followed; the
      // spec tells clients to read the snapshot again after a counts frame.
      if (this.exact && this.members.size !== frame.count) return true;
    }
    return false;
  }

  recount() {
    if (!this.exact) return;
    this.count = this.members.size;
    const regions = {};
    for (const m of this.members.values()) regions[m.region] = (regions[m.region] ?? 0) + 1;
    this.regions = regions;
  }
}

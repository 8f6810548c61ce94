//! The Room: the primary that orders, stores and forwards a room's messages.
//!
//! Sans-IO, in the manner of quinn-proto: the Durable Object glue feeds
//! events in (`publish`, `report`, `delivered`, `alarm`, …), each with the
//! current time, and then drains [`RoomAction`]s with
//! [`RoomCore::poll_action`] until it returns `None`. The core never touches
//! storage, the network or the clock.
//!
//! **The drain rule.** After every event, drain until `None`; actions are
//! in the order they must be carried out (a message is stored before any
//! delivery carrying it). `poll_action` uses the time of the last event.
//!
//! Fan-out cost at the primary is per relay: each message is rendered to its
//! frame once, and each relay has at most one `deliver` call in flight.
//! Messages that arrive meanwhile ride together in the next one, so a burst
//! becomes a few batch frames instead of many small ones.
//!
//! **The link never loses silently.** Every item the Room holds for a
//! relay (a message, ephemeral or stored, a `reset`, a sync) has a link
//! sequence number (`lsn`, consecutive per link), and stays in that relay's
//! `unacked` list until the relay acknowledges it: every relay call and
//! every delivery answer carries the relay's cumulative [`LinkAck`], the
//! last lsn up to which it applied everything. A call that fails is sent again after a jittered backoff;
//! items sent without an answer (a delivery in a publish answer, or one the
//! fault knob dropped) are sent again when their ack is overdue. The Room
//! gives up on a relay's queue after [`MAX_ATTEMPTS`] attempts without
//! progress, or when it passes [`MAX_RELAY_QUEUE`] items or
//! [`MAX_RELAY_QUEUE_BYTES`] bytes: it then forgets the
//! queue, keeps trying at the longest backoff, and brings the relay level
//! from storage with a *sync* (see [`DeliveryHead::sync_to`]). It forgets a
//! relay only when the relay reports no connections.
//!
//! Reports ride on independent calls that can arrive in any order, so each
//! carries the relay's incarnation and a counter, and an older one than the
//! last applied is ignored.

mod presence;
mod webhooks;
mod reads;

pub use presence::{PresenceLink, PresenceRow};
pub use reads::CountPlan;

use crate::backoff::{Backoff, Rng};
use crate::config::Retention;
use crate::faults::{FaultConfig, FaultStats, Faults};
use crate::history::{mid_key, History, Prune, MIN_ALARM_GAP_MS};
use crate::link::{DeliveryHead, JoinReply, LinkAck, LinkPub, PubOutcome, PublishBatch, RangeHead, RelayReport};
use crate::region::Region;
use crate::server_frame::{batch_frame, reset_frame, Message};
use serde::Serialize;
use crate::region_map::RegionMap;
use std::collections::VecDeque;
use std::rc::Rc;

/// Most messages in one delivery (and so in one client batch frame), by
/// default; `HERALD_MAX_BATCH` sets it (1 turns batching off, for measuring
/// what batching buys).
pub const MAX_BATCH_MESSAGES: usize = 256;
/// Most bytes of message frames in one delivery; a single larger message
/// still goes alone.
pub const MAX_BATCH_BYTES: usize = 512 * 1024;
/// Items held for one relay, sent and unsent. Past this the Room gives up on
/// the queue and syncs the relay from storage instead (ephemeral messages in
/// the queue are then lost for that relay; they are never stored).
pub const MAX_RELAY_QUEUE: usize = 8192;
/// Bytes of frames held for one relay, sent and unsent; passing it gives the
/// queue up like [`MAX_RELAY_QUEUE`]. The count alone would let a link hold
/// 8192 messages of a maximal frame each (over 512 MiB). Items are shared
/// by every link that holds them, and each link holds a suffix of the same
/// stream, so this also bounds what all of a room's queues hold together.
pub const MAX_RELAY_QUEUE_BYTES: usize = 8 * 1024 * 1024;
/// Delay before items are sent again: after a failed call, or when their ack
/// is overdue. The first retry comes within a second, and no gap lasts
/// longer than the cap plus one call.
pub const REDELIVERY: Backoff = Backoff { base_ms: 500, cap_ms: 4_000 };
/// Attempts without progress after which the Room gives up a relay's queue
/// and syncs it from storage instead (it keeps trying at the cap).
pub const MAX_ATTEMPTS: u32 = 8;
/// Most messages one range read returns; a longer gap is read in pages.
pub const MAX_RANGE_MESSAGES: u64 = 1000;
/// Publish batch ids remembered for answering a retried call (also in
/// storage, for a retry that lands on the next incarnation).
pub const REMEMBERED_BATCHES: usize = 256;

/// The room's identity, persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub epoch: String,
    pub seq: u64,
    /// Erasures so far; orders epochs.
    pub gen: u64,
    /// The seq at which the current epoch began.
    pub epoch_start: u64,
}

/// A relay in the Room's persisted table: its connections as last reported,
/// and that report's order (incarnation, counter), so a report older than it
/// is still known for stale after the Room restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedRelay {
    pub region: Region,
    pub connections: u32,
    pub order: (u64, u64),
}

/// What the Room persisted, read back when the object is constructed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub meta: Meta,
    pub relays: Vec<SavedRelay>,
    /// (seq, ts) of the stored messages, in seq order.
    pub index: Vec<(u64, u64)>,
    /// Remembered `mid`s as (key, seq, ts), keyed by [`mid_key`].
    pub mids: Vec<(String, u64, u64)>,
    /// The most recent publish batches as (id, outcomes), oldest first.
    pub batches: Vec<(String, Vec<PubOutcome>)>,
    /// The presence roster's rows, and each relay's presence position.
    pub presence: Vec<PresenceRow>,
    pub presence_links: Vec<PresenceLink>,
}

/// Work for the glue to carry out, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomAction {
    /// Persist the room's identity.
    SaveMeta(Meta),
    /// Persist a message; its seq is now the room's last seq.
    Store(Message),
    /// Replace the persisted table of active relays.
    SaveRelays(Vec<SavedRelay>),
    /// Call the relay with a delivery; report the answer with
    /// [`RoomCore::delivered`].
    Deliver(Delivery),
    /// Delete rows past retention.
    Prune(Prune),
    /// Schedule the object's alarm; call [`RoomCore::alarm`] when it fires.
    SetAlarm(u64),
    /// Delete every stored message and remembered `mid` (erasure).
    EraseAll,
    /// Remember a relay's publish batch and its outcomes, stamped `ts`
    /// (forgotten with the `mid`s, by [`Prune::mids_before_ts`]).
    RememberBatch { id: String, outcomes: Vec<PubOutcome>, ts: u64 },
    /// Write these presence rows (`None`: delete the member's row), and
    /// replace the relays' presence positions.
    SavePresence { changed: Vec<(String, Option<PresenceRow>)>, links: Vec<PresenceLink> },
    /// Webhook work: persist or forget events, or send a request (see
    /// [`crate::webhook`]); report a request's answer with
    /// [`RoomCore::webhook_sent`].
    Webhook(crate::webhook::WebhookAction),
    /// Persist `user`'s read mark (it only ever moves forward).
    SaveRead { user: String, seq: u64 },
}

/// Which stored messages a history read returns: `after < seq <= upto`, at
/// most `limit`, in seq order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPlan {
    pub after: u64,
    pub upto: u64,
    pub limit: u64,
}

/// A range read for a relay: read `head.from < seq <= upto`, at most
/// `limit` (nothing when `head.recovered` is false), then set `head.last`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangePlan {
    pub head: RangeHead,
    pub upto: u64,
    pub limit: u64,
}

/// One frame for one relay.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub region: Region,
    pub head: DeliveryHead,
    /// The client frame, shared by every relay that gets the same batch;
    /// empty for a sync with nothing else in it.
    pub frame: Rc<str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Msg,
    Reset,
    /// A presence frame, for these subscribers.
    Presence(crate::presence::Audience),
    /// "Be level with this seq", for one relay only.
    Sync(u64),
    /// A user's read mark moved (a [`crate::link::MarkItem`]).
    Read,
}

#[derive(Debug)]
struct Queued {
    /// Unique in this incarnation: names the item for the shared rendering.
    uid: u64,
    kind: Kind,
    seq: Option<u64>,
    ts: u64,
    frame: String,
}

/// A presence item's audience; `None` for everything else.
fn presence_of(kind: Kind) -> Option<crate::presence::Audience> {
    match kind {
        Kind::Presence(audience) => Some(audience),
        _ => None,
    }
}

/// Items batch only with items of the same group: messages (with resets
/// and syncs), presence frames of one audience, read marks. A relay sends
/// each group to other clients.
fn group(kind: Kind) -> (u8, Option<crate::presence::Audience>) {
    match kind {
        Kind::Presence(audience) => (1, Some(audience)),
        Kind::Read => (2, None),
        Kind::Msg | Kind::Reset | Kind::Sync(_) => (0, None),
    }
}

/// An item as one link holds it: its link sequence number and the item.
type Held = (u64, Rc<Queued>);

#[derive(Debug)]
struct RelayLink {
    report: RelayReport,
    /// This link's number within the incarnation.
    id: u64,
    next_lsn: u64,
    /// Not sent yet.
    queue: VecDeque<Held>,
    /// Sent, not yet acknowledged; in lsn order, before everything queued.
    unacked: VecDeque<Held>,
    /// The frame bytes of everything in `queue` and `unacked`, kept as
    /// items come and go so the bound costs nothing per publish.
    held_bytes: usize,
    /// A `deliver` call is in flight.
    calling: bool,
    /// Consecutive attempts without progress, for the backoff.
    attempt: u32,
    /// After a failed call: nothing is sent before this.
    hold_until: Option<u64>,
    /// When `unacked` is sent again if still not acknowledged.
    ack_due: Option<u64>,
    /// Heard from in this incarnation. A link restored from storage is not:
    /// the order of the last report it applied before the restart may not
    /// have been saved, so until a delivery answer (fresh by construction)
    /// confirms it, no report can make the Room forget it.
    confirmed: bool,
}

impl RelayLink {
    fn new(report: RelayReport, id: u64) -> Self {
        RelayLink {
            report,
            id,
            next_lsn: 1,
            queue: VecDeque::new(),
            unacked: VecDeque::new(),
            held_bytes: 0,
            calling: false,
            attempt: 0,
            hold_until: None,
            ack_due: None,
            confirmed: true,
        }
    }

    fn held(&self) -> usize {
        self.queue.len() + self.unacked.len()
    }

    /// Whether holding `item` too would pass either bound.
    fn full_for(&self, item: &Queued) -> bool {
        self.held() >= MAX_RELAY_QUEUE || self.held_bytes + item.frame.len() > MAX_RELAY_QUEUE_BYTES
    }

    fn push(&mut self, item: Rc<Queued>) {
        self.held_bytes += item.frame.len();
        self.queue.push_back((self.next_lsn, item));
        self.next_lsn += 1;
    }

    /// Forgets everything held (the items are no longer wanted, or the
    /// relay will be synced from storage instead).
    fn clear(&mut self) {
        self.queue.clear();
        self.unacked.clear();
        self.held_bytes = 0;
        self.ack_due = None;
    }

    /// When this link next needs the Room's attention, if it waits on time.
    fn deadline(&self) -> Option<u64> {
        if self.calling {
            return None;
        }
        let hold = (!self.queue.is_empty()).then_some(self.hold_until).flatten();
        let ack = (!self.unacked.is_empty()).then_some(self.ack_due).flatten();
        [hold, ack].into_iter().flatten().min()
    }

    /// Puts every unacknowledged item back in front of the queue (go-back-N).
    fn go_back(&mut self) {
        while let Some(q) = self.unacked.pop_back() {
            self.queue.push_front(q);
        }
        self.ack_due = None;
    }

    /// Drops what the relay acknowledged; true when that was progress.
    fn acknowledge(&mut self, lsn: u64) -> bool {
        let before = self.held();
        let mut released = 0;
        let mut keep = |(n, q): &Held| {
            let kept = *n > lsn;
            if !kept {
                released += q.frame.len();
            }
            kept
        };
        self.unacked.retain(&mut keep);
        self.queue.retain(&mut keep);
        self.held_bytes -= released;
        if self.unacked.is_empty() {
            self.ack_due = None;
        }
        let progress = self.held() < before;
        if progress {
            self.attempt = 0;
            self.hold_until = None;
        }
        progress
    }
}

/// The room's counters, for `GET /v1/rooms/{room}/stats`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoomStats {
    pub room: String,
    pub seq: u64,
    pub epoch: String,
    pub relays: Vec<RelayReport>,
    pub connections: u64,
    pub primary_sends: u64,
    /// Of `primary_sends`, those that rode in the answer to the relay's own
    /// publish call rather than in a `deliver` call.
    pub reply_deliveries: u64,
    /// Deliveries sent again because a call failed or an ack was overdue.
    pub redeliveries: u64,
    /// Syncs queued: a relay the Room could not vouch for was told to
    /// bring itself level from storage.
    pub syncs: u64,
    /// `reset` frames relays sent because a gap was no longer stored.
    pub resets: u64,
    pub relay_sends: u64,
    pub wakeups: Wakeups,
    /// Stored message rows not yet deleted by the retention alarm.
    pub stored: u64,
    /// Resumes across all relays, as last reported, by how they were served.
    pub resumes: Resumes,
    /// Injected faults that fired (`HERALD_FAULT_*`).
    pub faults: FaultStats,
    /// The Room's side of each relay link, for seeing where a delivery waits.
    pub links: RegionMap<LinkState>,
    /// Webhook delivery (`null` when `HERALD_WEBHOOK_URL` is not set).
    pub webhooks: Option<crate::webhook::WebhookStats>,
}

/// What the Room holds for one relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LinkState {
    /// Items not yet sent.
    pub queued: usize,
    /// Items sent and not yet acknowledged.
    pub unacked: usize,
    /// Frame bytes of the items queued and unacknowledged (bounded by
    /// [`MAX_RELAY_QUEUE_BYTES`]).
    pub held_bytes: usize,
    /// A `deliver` call is in flight.
    pub calling: bool,
    /// Attempts without progress.
    pub attempt: u32,
    /// When unacknowledged items go again (ms since the Unix epoch).
    pub ack_due: Option<u64>,
    /// After a failed call, when the queue may go again.
    pub hold_until: Option<u64>,
}

/// Resume outcomes summed over relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Resumes {
    pub from_relay: u64,
    pub from_room: u64,
    pub not_recovered: u64,
}

/// Constructions of each object in its isolate; a rise after idle time is
/// the proof that the object hibernated and woke.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Wakeups {
    pub room: u64,
    pub relays: RegionMap<u64>,
}

/// The Room's state machine.
#[derive(Debug)]
pub struct RoomCore {
    room: String,
    meta: Meta,
    /// This incarnation's number (its construction time, so it grows).
    inc: u64,
    next_link: u64,
    rng: Rng,
    now: u64,
    relays: RegionMap<RelayLink>,
    actions: VecDeque<RoomAction>,
    primary_sends: u64,
    reply_deliveries: u64,
    redeliveries: u64,
    syncs: u64,
    next_uid: u64,
    /// The last batch frame rendered, keyed by its first and last uid and
    /// its item count, so relays that are level share one rendering.
    batch_cache: Option<((u64, u64, usize), Rc<str>)>,
    history: History,
    /// When the alarm is set for, as far as this object knows.
    alarm_at: Option<u64>,
    max_batch: usize,
    faults: Faults,
    /// Answers to recent publish batches, by batch id, for retried calls.
    batches: VecDeque<(String, Vec<PubOutcome>)>,
    /// HTTP publishes per second and burst, per user.
    http_rate: (u32, u32),
    http_buckets: crate::rate::Buckets,
    /// HTTP history reads per second and burst, per user (or IP).
    history_rate: (u32, u32),
    history_buckets: crate::rate::Buckets,
    roster: crate::presence::Roster,
    /// Per relay: the incarnation presence deltas are numbered in, and the
    /// next number expected.
    presence_links: RegionMap<(u64, u64)>,
    /// `None` unless `HERALD_WEBHOOK_URL` is set.
    webhooks: Option<crate::webhook::Webhooks>,
    /// Some user has a read mark: relays ask for unread counts at connect.
    reads_used: bool,
}

impl RoomCore {
    /// Builds the room from what storage held, or as a new room with
    /// `fresh_epoch` (which is then queued for saving). `inc` numbers this
    /// incarnation and must grow from one to the next (the glue passes the
    /// construction time in ms); it also seeds the retry jitter.
    pub fn new(
        room: impl Into<String>,
        restored: Option<Restored>,
        fresh_epoch: String,
        retention: Retention,
        inc: u64,
    ) -> Self {
        let fresh = Meta { epoch: fresh_epoch, seq: 0, gen: 0, epoch_start: 0 };
        let mut core = RoomCore {
            room: room.into(),
            meta: fresh.clone(),
            inc,
            next_link: 0,
            rng: Rng::new(inc.rotate_left(17) ^ 0x5eed),
            now: 0,
            relays: RegionMap::new(),
            actions: VecDeque::new(),
            primary_sends: 0,
            reply_deliveries: 0,
            redeliveries: 0,
            syncs: 0,
            next_uid: 1,
            batch_cache: None,
            history: History::new(retention, Vec::new(), Vec::new()),
            alarm_at: None,
            max_batch: MAX_BATCH_MESSAGES,
            faults: Faults::default(),
            batches: VecDeque::new(),
            http_rate: (20, 40),
            http_buckets: crate::rate::Buckets::default(),
            history_rate: (5, 20),
            history_buckets: crate::rate::Buckets::default(),
            roster: crate::presence::Roster::new(crate::presence::PresenceConfig::default()),
            presence_links: RegionMap::new(),
            webhooks: None,
            reads_used: false,
        };
        match restored {
            Some(r) => {
                core.meta = r.meta;
                core.history = History::new(retention, r.index, r.mids);
                core.batches = r.batches.into_iter().rev().take(REMEMBERED_BATCHES).rev().collect();
                core.roster.restore(r.presence);
                core.presence_links = r.presence_links.into_iter().map(|(region, inc, next)| (region, (inc, next))).collect();
                // What was queued for these relays died with the last
                // incarnation: each is told to bring itself level.
                for saved in r.relays {
                    let (incarnation, report_seq) = saved.order;
                    let report = RelayReport { connections: saved.connections, incarnation, report_seq, ..RelayReport::new(saved.region) };
                    core.add_link(report);
                    if let Some(link) = core.relays.get_mut(&saved.region) {
                        link.confirmed = false;
                    }
                    core.queue_sync(saved.region);
                }
            }
            None => core.actions.push_back(RoomAction::SaveMeta(fresh)),
        }
        core
    }

    /// Sets how presence is told (`HERALD_PRESENCE_*`). Call before any
    /// presence call: the roster starts again empty.
    pub fn set_presence_config(&mut self, config: crate::presence::PresenceConfig) {
        let rows = self.roster.saved();
        self.roster = crate::presence::Roster::new(config);
        self.roster.restore(rows);
    }

    /// Sets the most messages per delivery (at least 1).
    pub fn set_max_batch(&mut self, messages: usize) {
        self.max_batch = messages.max(1);
    }

    /// Sets the HTTP publish rate and burst per user (`HERALD_PUB_RATE`,
    /// `HERALD_PUB_BURST`, as for a connection).
    pub fn set_http_publish_rate(&mut self, per_second: u32, burst: u32) {
        self.http_rate = (per_second, burst);
    }

    /// The HTTP publish rate and burst per user.
    pub fn http_publish_rate(&self) -> (u32, u32) {
        self.http_rate
    }

    /// Whether user `sub` may publish over HTTP at `now_ms`; `Err(ms)` says
    /// when to retry. A token holding `admin` on the room (`exempt`) is a
    /// backend, and is not limited. The bucket is per (user, room): this
    /// Room is the room.
    pub fn admit_http_publish(&mut self, now_ms: u64, sub: Option<&str>, exempt: bool) -> Result<(), u64> {
        if exempt {
            return Ok(());
        }
        let (rate, burst) = self.http_rate;
        self.http_buckets.take(sub.unwrap_or_default(), now_ms, rate, burst)
    }

    /// Sets the HTTP history read rate and burst per user
    /// (`HERALD_HISTORY_RATE`, `HERALD_HISTORY_BURST`, as for a connection).
    pub fn set_http_history_rate(&mut self, per_second: u32, burst: u32) {
        self.history_rate = (per_second, burst);
    }

    /// The HTTP history read rate and burst per user.
    pub fn http_history_rate(&self) -> (u32, u32) {
        self.history_rate
    }

    /// Whether the reader under `key` ([`crate::rate::http_rate_key`]: a
    /// user, or an anonymous reader's IP) may read history over HTTP at
    /// `now_ms`; `Err(ms)` says when to retry. Each read is a storage query,
    /// so one reader in a loop would slow the room for everyone. `exempt`
    /// is a backend (a token with `admin`) or a socket's read through its
    /// relay, which limits it per connection. The buckets are apart from
    /// the publish ones: reading never costs a user a publish.
    pub fn admit_http_history(&mut self, now_ms: u64, key: &str, exempt: bool) -> Result<(), u64> {
        if exempt {
            return Ok(());
        }
        let (rate, burst) = self.history_rate;
        self.history_buckets.take(key, now_ms, rate, burst)
    }

    /// Turns on fault injection (tests only; see [`crate::faults`]).
    pub fn set_faults(&mut self, config: FaultConfig) {
        self.faults = Faults::new(config);
    }

    pub fn room(&self) -> &str {
        &self.room
    }

    pub fn epoch(&self) -> &str {
        &self.meta.epoch
    }

    /// The last assigned seq (0 when none).
    pub fn seq(&self) -> u64 {
        self.meta.seq
    }

    fn add_link(&mut self, report: RelayReport) {
        self.next_link += 1;
        self.relays.insert(report.region, RelayLink::new(report, self.next_link));
    }

    /// Starts a relay's link afresh: a new link number, items numbered from
    /// 1, nothing held. Used when what was held is dropped (an erasure, a
    /// queue given up), so the relay never waits on numbers that will not
    /// come: its acks of the old link no longer count.
    fn renumber(&mut self, region: Region) {
        self.next_link += 1;
        if let Some(link) = self.relays.get_mut(&region) {
            link.clear();
            link.id = self.next_link;
            link.next_lsn = 1;
        }
    }

    fn take_uid(&mut self) -> u64 {
        let uid = self.next_uid;
        self.next_uid += 1;
        uid
    }

    /// Orders one message at `now_ms`: assigns its seq (unless ephemeral),
    /// queues it for storage and for every active relay.
    ///
    /// A stored publish whose `mid` the room saw within the dedup window is
    /// not stored or delivered again: it is answered with the original seq.
    pub fn publish(&mut self, now_ms: u64, p: LinkPub) -> PubOutcome {
        self.now = now_ms;
        let key = p.mid.as_deref().map(|mid| mid_key(p.from.as_deref(), mid));
        if let (false, Some(key)) = (p.eph, key.as_deref()) {
            if let Some(seen) = self.history.seen(now_ms, key) {
                return PubOutcome { seq: Some(seen.seq), ts: seen.ts };
            }
        }
        let seq = if p.eph {
            None
        } else {
            self.meta.seq += 1;
            Some(self.meta.seq)
        };
        let message = Message { seq, ts: now_ms, from: p.from, mid: p.mid, data: p.data };
        let uid = self.take_uid();
        let queued = Rc::new(Queued { uid, kind: Kind::Msg, seq, ts: now_ms, frame: message.to_frame() });
        if let Some(seq) = seq {
            self.history.record(seq, now_ms, key.as_deref());
            self.actions.push_back(RoomAction::Store(message));
        }
        self.enqueue(&queued);
        self.schedule_alarm(0);
        PubOutcome { seq, ts: now_ms }
    }

    /// A relay's publish call: its report, then each publish in order. A
    /// batch id seen recently is a retry of a call whose answer was lost: it
    /// gets the outcomes already stored, and nothing is stored again.
    pub fn publish_batch(&mut self, now_ms: u64, batch: PublishBatch) -> Vec<PubOutcome> {
        self.report(now_ms, batch.report);
        if !batch.id.is_empty() {
            if let Some((_, outcomes)) = self.batches.iter().find(|(id, _)| *id == batch.id) {
                return outcomes.clone();
            }
        }
        let outcomes: Vec<PubOutcome> = batch.pubs.into_iter().map(|p| self.publish(now_ms, p)).collect();
        if !batch.id.is_empty() {
            if self.batches.len() >= REMEMBERED_BATCHES {
                self.batches.pop_front();
            }
            self.batches.push_back((batch.id.clone(), outcomes.clone()));
            self.actions.push_back(RoomAction::RememberBatch { id: batch.id, outcomes: outcomes.clone(), ts: now_ms });
        }
        outcomes
    }

    fn enqueue(&mut self, queued: &Rc<Queued>) {
        let mut overflowed = Vec::new();
        for (region, link) in self.relays.iter_mut() {
            if link.full_for(queued) {
                overflowed.push(region);
            } else {
                link.push(Rc::clone(queued));
            }
        }
        for region in overflowed {
            self.give_up_queue(region);
        }
    }

    /// Forgets what was held for a relay that is too far behind, and tells it
    /// to bring itself level from storage instead.
    fn give_up_queue(&mut self, region: Region) {
        self.renumber(region);
        self.queue_sync(region);
    }

    fn queue_sync(&mut self, region: Region) {
        let uid = self.take_uid();
        let upto = self.meta.seq;
        if let Some(link) = self.relays.get_mut(&region) {
            link.push(Rc::new(Queued { uid, kind: Kind::Sync(upto), seq: None, ts: 0, frame: String::new() }));
            self.syncs += 1;
        }
    }

    /// Sets the alarm for the next deadline (a prune or a redelivery),
    /// unless one is already set earlier. Prunes keep at least `prune_gap`
    /// from now.
    ///
    /// Every alarm is strictly in the future. A redelivery already due is
    /// the drain's to send, not the alarm's; and an alarm set for a past
    /// time from inside the alarm handler may be taken by the runtime for
    /// the one that just ran, and never fire. For the same reason an alarm
    /// this object set for a time now past is not trusted to be pending.
    fn schedule_alarm(&mut self, prune_gap: u64) {
        let now = self.now;
        let soonest = now + 1;
        let prune = self.history.next_deadline(now).map(|due| due.max(now + prune_gap).max(soonest));
        let link = self.relays.values().filter_map(RelayLink::deadline).filter(|&d| d > now).min();
        let presence = self.presence_deadline().map(|due| due.max(soonest));
        let webhook = self.webhook_deadline().map(|due| due.max(soonest));
        let Some(due) = [prune, link, presence, webhook].into_iter().flatten().min() else { return };
        if self.alarm_at.is_none_or(|at| due < at || at <= now) {
            self.alarm_at = Some(due);
            self.actions.push_back(RoomAction::SetAlarm(due));
        }
    }

    /// The alarm fired: prune what retention no longer allows, send what is
    /// due again, then set the next alarm.
    pub fn alarm(&mut self, now_ms: u64) {
        self.now = now_ms;
        self.alarm_at = None;
        if let Some(prune) = self.history.prune(now_ms, self.meta.seq) {
            self.actions.push_back(RoomAction::Prune(prune));
        }
        self.presence_tick();
        self.schedule_alarm(MIN_ALARM_GAP_MS);
    }

    /// Erases the history and starts a new epoch. `seq` keeps counting and is
    /// never reused; connected clients receive a `reset` frame. Nothing of
    /// the old epoch is sent after this: what was queued or unacknowledged
    /// is dropped, so no erased message can reach a client labelled with
    /// the new epoch.
    pub fn erase(&mut self, now_ms: u64, fresh_epoch: String) -> (String, u64) {
        self.now = now_ms;
        self.meta.epoch = fresh_epoch;
        self.meta.gen += 1;
        self.meta.epoch_start = self.meta.seq;
        self.history.clear();
        self.batches.clear();
        self.actions.push_back(RoomAction::EraseAll);
        self.actions.push_back(RoomAction::SaveMeta(self.meta.clone()));
        let regions: Vec<Region> = self.relays.keys().collect();
        for region in regions {
            self.renumber(region);
        }
        let uid = self.take_uid();
        let frame = reset_frame(&self.meta.epoch, self.meta.seq);
        let queued = Rc::new(Queued { uid, kind: Kind::Reset, seq: None, ts: 0, frame });
        self.enqueue(&queued);
        // A link held back after a failed call sends the reset only when
        // its hold ends: the alarm must be there for it.
        self.schedule_alarm(0);
        (self.meta.epoch.clone(), self.meta.seq)
    }

    /// What a history read returns for `since` and `limit` at `now`:
    /// messages past retention are skipped even if not yet deleted.
    pub fn read(&self, now_ms: u64, since: u64, limit: u64) -> ReadPlan {
        let oldest = self.history.oldest_visible(now_ms, self.meta.seq);
        ReadPlan { after: since.max(oldest.saturating_sub(1)), upto: self.meta.seq, limit }
    }

    /// Whether a client of `epoch` that has seen up to `since` can be given
    /// exactly the messages after it.
    pub fn recoverable(&self, now_ms: u64, epoch: &str, since: u64) -> bool {
        epoch == self.meta.epoch && self.history.covers(now_ms, self.meta.seq, since)
    }

    /// A relay's range read of `after < seq <= upto`. Without an epoch it is
    /// a gap repair: it starts past what retention dropped, and the relay
    /// announces the jump with a `reset`. With the client's epoch it is a
    /// resume, and reads nothing unless the client can recover exactly.
    pub fn range(&self, now_ms: u64, after: u64, upto: u64, epoch: Option<&str>) -> RangePlan {
        let recovered = epoch.is_none_or(|e| self.recoverable(now_ms, e, after));
        let from = match epoch {
            Some(_) => after,
            None => after.max(self.history.oldest_visible(now_ms, self.meta.seq).saturating_sub(1)).min(upto.max(after)),
        };
        let head = RangeHead {
            epoch: self.meta.epoch.clone(),
            gen: self.meta.gen,
            epoch_start: self.meta.epoch_start,
            from,
            last: from,
            recovered,
        };
        let upto = upto.min(self.meta.seq).min(from.saturating_add(MAX_RANGE_MESSAGES));
        RangePlan { head, upto, limit: if recovered { MAX_RANGE_MESSAGES } else { 0 } }
    }

    /// Whether the range read being served fails (fault injection).
    pub fn fail_range(&mut self) -> bool {
        self.faults.fail_range()
    }

    /// Whether the answer to the publish batch just handled fails (fault
    /// injection): the batch is stored, the relay retries it by id.
    pub fn fail_publish_answer(&mut self) -> bool {
        self.faults.fail_publish_answer()
    }

    /// A relay reported itself (on join, on a change in its connections, or
    /// with a publish). Returns what it needs to welcome clients.
    pub fn report(&mut self, now_ms: u64, report: RelayReport) -> JoinReply {
        self.now = now_ms;
        self.apply_report(report);
        self.schedule_alarm(0);
        let (link, lsn) = self.relays.get(&report.region).map_or((0, 0), |l| (l.id, l.next_lsn - 1));
        JoinReply {
            epoch: self.meta.epoch.clone(),
            gen: self.meta.gen,
            epoch_start: self.meta.epoch_start,
            seq: self.meta.seq,
            ack: LinkAck { inc: self.inc, link, lsn },
            reads: self.reads_used,
        }
    }

    /// The answer to a [`RoomAction::Deliver`]: the relay's report, `Ok(None)`
    /// when the call was dropped by fault injection, or `Err` when it failed.
    pub fn delivered(&mut self, now_ms: u64, region: Region, result: Result<Option<RelayReport>, ()>) {
        self.now = now_ms;
        let Some(link) = self.relays.get_mut(&region) else { return };
        link.calling = false;
        match result {
            Ok(Some(report)) => {
                link.confirmed = true;
                self.apply_report(report);
            }
            Ok(None) => {}
            Err(()) => {
                link.attempt = (link.attempt + 1).min(MAX_ATTEMPTS);
                link.hold_until = Some(now_ms + REDELIVERY.delay(link.attempt, &mut self.rng));
                link.go_back();
                self.redeliveries += 1;
                if link.attempt >= MAX_ATTEMPTS && link.held() > 1 {
                    self.give_up_queue(region);
                }
            }
        }
        self.schedule_alarm(0);
    }

    /// Drops a relay that reported no clients.
    fn forget(&mut self, region: Region) {
        if self.relays.remove(&region).is_some() {
            self.save_relays();
        }
        self.presence_relay_gone(region);
    }

    fn apply_report(&mut self, report: RelayReport) {
        let region = report.region;
        let order = (report.incarnation, report.report_seq);
        if let Some(link) = self.relays.get(&region) {
            if order < (link.report.incarnation, link.report.report_seq) {
                return; // overtaken by a newer report
            }
        }
        let unconfirmed = self.relays.get(&region).is_some_and(|l| !l.confirmed);
        if report.connections == 0 && !unconfirmed {
            // No clients: nothing to deliver, and nothing a client could
            // miss. A relay that gets clients again joins first.
            self.forget(region);
            return;
        }
        let (inc, level) = (self.inc, report.position.is_none_or(|p| p.gen == self.meta.gen && p.cursor >= self.meta.seq));
        let ack = report.position.and_then(|p| p.ack);
        match self.relays.get_mut(&region) {
            Some(link) => {
                let changed = link.report.connections != report.connections;
                link.report = report;
                if let Some(ack) = ack.filter(|a| a.key() == (inc, link.id)) {
                    link.acknowledge(ack.lsn);
                }
                if changed {
                    self.save_relays();
                }
            }
            None => {
                // A relay with no position adopts the join answer; one with
                // a position that is behind is told to sync.
                self.add_link(report);
                if !level {
                    self.queue_sync(region);
                }
                self.save_relays();
            }
        }
    }

    fn save_relays(&mut self) {
        let table = self
            .relays
            .iter()
            .map(|(region, link)| SavedRelay {
                region,
                connections: link.report.connections,
                order: (link.report.incarnation, link.report.report_seq),
            })
            .collect();
        self.actions.push_back(RoomAction::SaveRelays(table));
    }

    /// A delivery for `region` to ride in the answer to that relay's own
    /// publish call, when nothing is in flight to it and items wait.
    ///
    /// It saves the relay → room → relay path one of its two calls, which
    /// is most of a small room's cost per message. Nobody answers it, so its
    /// items stay unacknowledged until the relay's next call says it applied
    /// them, and are sent again if that does not come in time. Call it
    /// before draining [`RoomCore::poll_action`], or the queue may already
    /// be on its way in a call.
    pub fn reply_delivery(&mut self, now_ms: u64, region: Region) -> Option<Delivery> {
        self.now = now_ms;
        let ready = self.relays.get(&region).is_some_and(|l| !l.calling && l.hold_until.is_none() && !l.queue.is_empty());
        if !ready {
            return None;
        }
        let delivery = self.start_delivery(region, false)?;
        self.reply_deliveries += 1;
        self.schedule_alarm(0);
        (!self.faults.drop_delivery()).then_some(delivery)
    }

    /// The next thing to do, or `None` when the room is quiescent until the
    /// next event (see the drain rule in the module doc).
    pub fn poll_action(&mut self) -> Option<RoomAction> {
        loop {
            if let Some(action) = self.actions.pop_front() {
                return Some(action);
            }
            if let Some(action) = self.poll_webhook() {
                self.schedule_alarm(0);
                return Some(action);
            }
            let now = self.now;
            let due = self.relays.iter().find_map(|(region, l)| {
                if l.calling {
                    return None;
                }
                let overdue = !l.unacked.is_empty() && l.ack_due.is_some_and(|d| d <= now);
                let sendable = !l.queue.is_empty() && l.hold_until.is_none_or(|h| h <= now);
                (overdue || sendable).then_some((region, overdue))
            });
            let (region, overdue) = due?;
            if overdue {
                let link = self.relays.get_mut(&region)?;
                link.attempt = (link.attempt + 1).min(MAX_ATTEMPTS);
                link.go_back();
                self.redeliveries += 1;
                if link.attempt >= MAX_ATTEMPTS && link.held() > 1 {
                    self.give_up_queue(region);
                }
            }
            let delivery = self.start_delivery(region, true)?;
            if self.faults.drop_delivery() {
                // As if it had been delivered: the call "succeeded" without
                // an answer, so only the ack deadline brings it back.
                if let Some(link) = self.relays.get_mut(&region) {
                    link.calling = false;
                }
                self.schedule_alarm(0);
                continue;
            }
            self.schedule_alarm(0);
            return Some(RoomAction::Deliver(delivery));
        }
    }

    fn start_delivery(&mut self, region: Region, call: bool) -> Option<Delivery> {
        let max_batch = self.max_batch;
        let now = self.now;
        let link = self.relays.get_mut(&region)?;
        let mut batch: Vec<Held> = Vec::new();
        let mut bytes = 0;
        while let Some((_, front)) = link.queue.front() {
            let fits = batch.is_empty()
                || (batch.len() < max_batch
                    && bytes + front.frame.len() <= MAX_BATCH_BYTES
                    && front.kind != Kind::Reset
                    && batch.last().is_some_and(|(_, last)| group(last.kind) == group(front.kind)));
            if !fits {
                break;
            }
            bytes += front.frame.len();
            if let Some(held) = link.queue.pop_front() {
                batch.push(held);
            }
        }
        let (first_lsn, last_lsn) = (batch.first()?.0, batch.last()?.0);
        let items = || batch.iter().map(|(_, q)| q);
        let first = items().find_map(|q| q.seq);
        let first_ts = items().find(|q| q.seq.is_some()).map_or(0, |q| q.ts);
        let last = items().rev().find_map(|q| q.seq);
        let sync_to = items().filter_map(|q| if let Kind::Sync(s) = q.kind { Some(s) } else { None }).max();
        let reset = items().next().is_some_and(|q| q.kind == Kind::Reset);
        let presence = items().next().and_then(|q| presence_of(q.kind));
        let read_marks = items().next().is_some_and(|q| q.kind == Kind::Read);
        let frames: Vec<&str> = items().filter(|q| !q.frame.is_empty()).map(|q| q.frame.as_str()).collect();
        let key = (items().next()?.uid, items().next_back()?.uid, frames.len());
        let frame = match &self.batch_cache {
            Some((k, frame)) if *k == key => Rc::clone(frame),
            _ if frames.is_empty() => Rc::from(""),
            _ => {
                let frame: Rc<str> = Rc::from(batch_frame(&frames));
                self.batch_cache = Some((key, Rc::clone(&frame)));
                frame
            }
        };
        if link.unacked.is_empty() {
            link.ack_due = Some(now + REDELIVERY.delay(link.attempt, &mut self.rng));
        }
        link.unacked.extend(batch);
        link.calling = call;
        self.primary_sends += 1;
        let head = DeliveryHead {
            epoch: self.meta.epoch.clone(),
            gen: self.meta.gen,
            epoch_start: self.meta.epoch_start,
            inc: self.inc,
            link: link.id,
            first_lsn,
            last_lsn,
            first,
            last,
            first_ts,
            sync_to,
            reset,
            presence,
            read_marks,
            reads: self.reads_used,
        };
        Some(Delivery { region, head, frame })
    }

    /// The counters; `room_wakeups` comes from the glue's construction count.
    pub fn stats(&self, room_wakeups: u64) -> RoomStats {
        let relays: Vec<RelayReport> = self.relays.values().map(|l| l.report).collect();
        RoomStats {
            room: self.room.clone(),
            seq: self.meta.seq,
            epoch: self.meta.epoch.clone(),
            connections: relays.iter().map(|r| u64::from(r.connections)).sum(),
            relay_sends: relays.iter().map(|r| r.relay_sends).sum(),
            resets: relays.iter().map(|r| r.resets).sum(),
            wakeups: Wakeups {
                room: room_wakeups,
                relays: relays.iter().map(|r| (r.region, r.wakeups)).collect(),
            },
            stored: self.history.stored() as u64,
            resumes: Resumes {
                from_relay: relays.iter().map(|r| r.recovered_from_relay).sum(),
                from_room: relays.iter().map(|r| r.recovered_from_room).sum(),
                not_recovered: relays.iter().map(|r| r.not_recovered).sum(),
            },
            relays,
            primary_sends: self.primary_sends,
            reply_deliveries: self.reply_deliveries,
            redeliveries: self.redeliveries,
            syncs: self.syncs,
            faults: self.faults.fired,
            links: self
                .relays
                .iter()
                .map(|(region, l)| {
                    let state = LinkState {
                        queued: l.queue.len(),
                        unacked: l.unacked.len(),
                        held_bytes: l.held_bytes,
                        calling: l.calling,
                        attempt: l.attempt,
                        ack_due: l.ack_due,
                        hold_until: l.hold_until,
                    };
                    (region, state)
                })
                .collect(),
            webhooks: self.webhook_stats(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::RelayPosition;
    use serde_json::value::RawValue;

    fn room() -> RoomCore {
        let mut core = RoomCore::new("r", None, "e".into(), Retention::default(), 7);
        drain(&mut core);
        core
    }

    fn pub_(data: &str) -> LinkPub {
        LinkPub { from: None, data: RawValue::from_string(data.into()).unwrap(), mid: None, eph: false }
    }

    /// A relay that says it is level and acknowledges nothing new.
    fn report(region: Region, connections: u32) -> RelayReport {
        let position = RelayPosition { gen: 0, cursor: u64::MAX, ack: None };
        RelayReport { connections, wakeups: 1, position: Some(position), ..RelayReport::new(region) }
    }

    /// The relay's answer after applying everything up to `uid`.
    fn acked(core: &RoomCore, region: Region, uid: u64) -> Result<Option<RelayReport>, ()> {
        let mut r = report(region, 1);
        r.position = Some(RelayPosition { gen: 0, cursor: core.seq(), ack: Some(LinkAck { inc: 7, link: 1, lsn: uid }) });
        Ok(Some(r))
    }

    fn drain(core: &mut RoomCore) -> Vec<RoomAction> {
        std::iter::from_fn(|| core.poll_action()).collect()
    }

    fn deliveries(actions: &[RoomAction]) -> Vec<&Delivery> {
        actions
            .iter()
            .filter_map(|a| if let RoomAction::Deliver(d) = a { Some(d) } else { None })
            .collect()
    }

    fn stored(actions: &[RoomAction]) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| if let RoomAction::Store(m) = a { m.seq } else { None })
            .collect()
    }

    #[test]
    fn new_room_saves_its_meta_and_a_restored_room_syncs_its_relays() {
        let mut fresh = RoomCore::new("r", None, "e1".into(), Retention::default(), 1);
        let meta = Meta { epoch: "e1".into(), seq: 0, gen: 0, epoch_start: 0 };
        assert_eq!(drain(&mut fresh), vec![RoomAction::SaveMeta(meta)]);
        let restored = Restored {
            meta: Meta { epoch: "e0".into(), seq: 41, gen: 2, epoch_start: 30 },
            relays: vec![SavedRelay { region: Region::Weur, connections: 2, order: (1, 1) }],
            index: vec![(41, 1)],
            mids: vec![(mid_key(None, "m"), 41, 1)],
            batches: vec![],
            presence: vec![],
            presence_links: vec![],
        };
        let mut old = RoomCore::new("r", Some(restored), "e2".into(), Retention::default(), 2);
        let acts = drain(&mut old);
        let ds = deliveries(&acts);
        assert_eq!(ds.len(), 1, "the restored relay is synced: {acts:?}");
        assert_eq!((ds[0].head.sync_to, ds[0].head.gen, ds[0].head.epoch_start), (Some(41), 2, 30));
        assert_eq!(&*ds[0].frame, "", "a sync alone carries no frame");
        let dup = LinkPub { mid: Some("m".into()), ..pub_("9") };
        assert_eq!(old.publish(2, dup), PubOutcome { seq: Some(41), ts: 1 }, "mid remembered across restart");
        assert_eq!((old.epoch(), old.seq()), ("e0", 41));
        assert_eq!(old.publish(5, pub_("1")).seq, Some(42));
    }

    #[test]
    fn one_call_per_relay_and_batches_while_in_flight() {
        let mut core = room();
        core.report(0, report(Region::Weur, 3));
        core.report(0, report(Region::Apac, 1));
        drain(&mut core);

        assert_eq!(core.publish(10, pub_("1")).seq, Some(1));
        let acts = drain(&mut core);
        assert!(matches!(acts[0], RoomAction::Store(ref m) if m.seq == Some(1)));
        let ds = deliveries(&acts);
        assert_eq!(ds.len(), 2, "one delivery per relay");
        assert!(Rc::ptr_eq(&ds[0].frame, &ds[1].frame), "rendered once, shared");
        let uid = ds[0].head.last_lsn;

        for d in ["2", "3", "4"] {
            core.publish(11, pub_(d));
        }
        assert!(deliveries(&drain(&mut core)).is_empty(), "one call in flight per relay");
        core.delivered(12, Region::Weur, acked(&core, Region::Weur, uid));
        core.delivered(12, Region::Apac, acked(&core, Region::Apac, uid));
        let acts = drain(&mut core);
        let ds = deliveries(&acts);
        assert_eq!(ds.len(), 2);
        assert_eq!((ds[0].head.first, ds[0].head.last), (Some(2), Some(4)));
        let v: serde_json::Value = serde_json::from_str(&ds[0].frame).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 3);
        assert_eq!(core.stats(1).primary_sends, 4);
        assert_eq!(core.stats(1).redeliveries, 0);
    }

    #[test]
    fn a_reply_delivery_is_sent_again_unless_the_next_call_acknowledges_it() {
        let mut core = room();
        core.report(0, report(Region::Weur, 2));
        core.report(0, report(Region::Apac, 1));
        drain(&mut core);
        core.publish(10, pub_("1"));
        core.publish(10, pub_("2"));
        let d = core.reply_delivery(10, Region::Weur).expect("weur had messages waiting");
        assert_eq!((d.head.first, d.head.last, d.region), (Some(1), Some(2), Region::Weur));
        let acts = drain(&mut core);
        let ds = deliveries(&acts);
        assert_eq!(ds.len(), 1, "only apac gets a call");
        assert!(Rc::ptr_eq(&ds[0].frame, &d.frame), "one rendering for both");
        let due = acts.iter().filter_map(|a| if let RoomAction::SetAlarm(t) = a { Some(*t) } else { None }).min();
        let due = due.expect("an alarm for the unacknowledged reply delivery");
        assert!((10 + REDELIVERY.base_ms / 2..=10 + REDELIVERY.base_ms).contains(&due), "{due}");
        assert!(core.reply_delivery(10, Region::Weur).is_none(), "nothing left for weur");

        // No ack came: at the deadline the items go again, in a call.
        core.alarm(due);
        let acts = drain(&mut core);
        let ds = deliveries(&acts);
        assert_eq!(ds.len(), 1, "{acts:?}");
        assert_eq!((ds[0].region, ds[0].head.first_lsn, ds[0].head.last_lsn), (Region::Weur, d.head.first_lsn, d.head.last_lsn));
        assert_eq!(core.stats(1).redeliveries, 1);

        // With the ack riding on the relay's next call, nothing is resent.
        let mut core = room();
        core.report(0, report(Region::Weur, 2));
        core.publish(10, pub_("1"));
        let d = core.reply_delivery(10, Region::Weur).unwrap();
        drain(&mut core);
        let mut batch_report = report(Region::Weur, 2);
        batch_report.position = Some(RelayPosition { gen: 0, cursor: 1, ack: Some(LinkAck { inc: 7, link: 1, lsn: d.head.last_lsn }) });
        core.publish_batch(20, PublishBatch { id: "a-1".into(), report: batch_report, pubs: vec![] });
        drain(&mut core);
        core.alarm(10_000);
        assert!(deliveries(&drain(&mut core)).is_empty());
        assert_eq!(core.stats(1).redeliveries, 0);
    }

    #[test]
    fn ephemeral_messages_are_delivered_not_stored() {
        let mut core = room();
        core.report(0, report(Region::Oc, 1));
        drain(&mut core);
        let mut p = pub_("{}");
        p.eph = true;
        assert_eq!(core.publish(7, p).seq, None);
        let acts = drain(&mut core);
        assert!(stored(&acts).is_empty());
        let ds = deliveries(&acts);
        assert_eq!((ds[0].head.first, ds[0].head.last), (None, None));
        assert!(ds[0].frame.contains("\"eph\":true"));
        assert_eq!(core.seq(), 0);
    }

    #[test]
    fn a_failed_call_is_retried_after_backoff_for_as_long_as_it_takes() {
        let mut core = room();
        core.report(0, report(Region::Me, 1));
        core.publish(1, pub_("1"));
        let first = deliveries(&drain(&mut core))[0].head.clone();
        core.delivered(2, Region::Me, Err(()));
        assert!(deliveries(&drain(&mut core)).is_empty(), "held back, not retried at once");
        let mut now = 2;
        for attempt in 2..=MAX_ATTEMPTS + 3 {
            now += REDELIVERY.cap_ms;
            core.alarm(now);
            let acts = drain(&mut core);
            let ds = deliveries(&acts);
            assert_eq!(ds.len(), 1, "attempt {attempt}: {acts:?}");
            assert_eq!(ds[0].head.first_lsn, first.first_lsn, "the same items");
            core.delivered(now, Region::Me, Err(()));
        }
        assert_eq!(core.stats(0).relays.len(), 1, "a relay with clients is never forgotten for failing");
        now += REDELIVERY.cap_ms;
        core.alarm(now);
        let d = deliveries(&drain(&mut core))[0].head.clone();
        core.delivered(now, Region::Me, acked(&core, Region::Me, d.last_lsn));
        assert_eq!(core.stats(0).links[&Region::Me].unacked, 0, "reachable again: level");
    }

    #[test]
    fn a_queue_given_up_becomes_a_sync_and_a_stale_report_is_ignored() {
        let mut core = room();
        core.report(0, report(Region::Me, 1));
        for i in 0..3 {
            core.publish(1, pub_(&i.to_string()));
        }
        drain(&mut core);
        let mut now = 1;
        for _ in 0..MAX_ATTEMPTS {
            core.delivered(now, Region::Me, Err(()));
            now += REDELIVERY.cap_ms;
            core.alarm(now);
            drain(&mut core);
        }
        let link = core.stats(0).links[&Region::Me];
        assert_eq!((link.queued + link.unacked, core.stats(0).syncs), (1, 1), "{link:?}");

        // Reports are ordered: an old one saying "no clients" changes nothing.
        let newer = RelayReport { incarnation: 5, report_seq: 9, ..report(Region::Me, 2) };
        core.report(now, newer);
        let stale = RelayReport { incarnation: 5, report_seq: 8, ..report(Region::Me, 0) };
        core.report(now, stale);
        assert_eq!(core.stats(0).connections, 2);
    }

    #[test]
    fn a_dropped_delivery_is_sent_again_when_its_ack_is_overdue() {
        let mut core = room();
        core.set_faults(FaultConfig { drop_forward_every: 1, ..FaultConfig::default() });
        core.report(0, report(Region::Weur, 1));
        core.publish(100, pub_("1"));
        let acts = drain(&mut core);
        assert!(deliveries(&acts).is_empty(), "dropped");
        assert_eq!(core.stats(0).faults.dropped_deliveries, 1);
        let due = acts.iter().filter_map(|a| if let RoomAction::SetAlarm(t) = a { Some(*t) } else { None }).min().unwrap();
        core.set_faults(FaultConfig::default());
        core.alarm(due);
        let acts = drain(&mut core);
        assert_eq!(deliveries(&acts)[0].head.first, Some(1));
    }

    #[test]
    fn a_relay_with_no_connections_is_forgotten() {
        let mut core = room();
        core.report(0, report(Region::Sam, 1));
        core.publish(1, pub_("1"));
        drain(&mut core);
        core.report(2, report(Region::Sam, 0));
        assert!(core.stats(0).relays.is_empty());
        core.delivered(3, Region::Sam, Err(()));
        assert!(deliveries(&drain(&mut core)).is_empty(), "a late answer changes nothing");
    }

    #[test]
    fn a_joining_relay_adopts_the_rooms_position() {
        let mut core = room();
        core.publish(1, pub_("1"));
        drain(&mut core);
        let join = RelayReport { connections: 1, ..RelayReport::new(Region::Afr) };
        let reply = core.report(2, join);
        assert_eq!((reply.seq, reply.gen, reply.ack), (1, 0, LinkAck { inc: 7, link: 1, lsn: 0 }));
        assert!(deliveries(&drain(&mut core)).is_empty(), "level: no sync");
    }

    #[test]
    fn max_batch_one_sends_messages_singly() {
        let mut core = room();
        core.set_max_batch(1);
        core.report(0, report(Region::Afr, 1));
        for i in 0..3 {
            core.publish(1, pub_(&i.to_string()));
        }
        let acts = drain(&mut core);
        let d = deliveries(&acts)[0];
        assert_eq!((d.head.first, d.head.last), (Some(1), Some(1)));
        assert!(d.frame.starts_with('{'), "a lone message is not wrapped in an array");
    }

    #[test]
    fn big_bursts_split_into_bounded_batches_and_overflow_becomes_a_sync() {
        let mut core = room();
        core.report(0, report(Region::Afr, 1));
        for i in 0..(MAX_BATCH_MESSAGES + 10) {
            core.publish(1, pub_(&i.to_string()));
        }
        let acts = drain(&mut core);
        let d = deliveries(&acts)[0].clone();
        assert_eq!((d.head.first, d.head.last), (Some(1), Some(MAX_BATCH_MESSAGES as u64)));
        core.delivered(2, Region::Afr, acked(&core, Region::Afr, d.head.last_lsn));
        let acts = drain(&mut core);
        assert_eq!(deliveries(&acts)[0].head.first, Some(MAX_BATCH_MESSAGES as u64 + 1));

        // A relay that never answers: past the bound its queue becomes a sync.
        for i in 0..MAX_RELAY_QUEUE {
            core.publish(3, pub_(&i.to_string()));
        }
        drain(&mut core);
        core.delivered(4, Region::Afr, Err(()));
        core.alarm(4 + REDELIVERY.cap_ms);
        let acts = drain(&mut core);
        let d = deliveries(&acts)[0];
        let sync_to = d.head.sync_to.expect("a sync");
        assert_eq!(d.head.first, Some(sync_to + 1), "the sync covers what was dropped, the queue the rest: {:?}", d.head);
        assert_eq!(core.stats(0).syncs, 1);
    }

    /// `held_bytes` as kept incrementally, against the sum it stands for.
    fn assert_held_bytes_exact(core: &RoomCore) {
        for (region, l) in core.relays.iter() {
            let sum: usize = l.queue.iter().chain(&l.unacked).map(|(_, q)| q.frame.len()).sum();
            assert_eq!(l.held_bytes, sum, "{region}");
        }
    }

    #[test]
    fn a_queue_of_big_messages_is_given_up_by_bytes_long_before_the_count_bound() {
        let mut core = room();
        core.report(0, report(Region::Afr, 1));
        core.report(0, report(Region::Oc, 1));
        drain(&mut core);
        let big = format!("\"{}\"", "x".repeat(64 * 1024));
        // afr never answers its first call; oc acknowledges everything.
        let mut oc_syncs = 0;
        let mut first_sync_at = None;
        for i in 1..=300u64 {
            core.publish(i, pub_(&big));
            for d in deliveries(&drain(&mut core)) {
                if d.region == Region::Oc {
                    oc_syncs += usize::from(d.head.sync_to.is_some());
                    let mut answer = acked(&core, Region::Oc, d.head.last_lsn);
                    if let Ok(Some(RelayReport { position: Some(RelayPosition { ack: Some(ack), .. }), .. })) = &mut answer {
                        ack.link = d.head.link;
                    }
                    core.delivered(i, Region::Oc, answer);
                }
            }
            drain(&mut core);
            assert_held_bytes_exact(&core);
            let afr = core.stats(0).links[&Region::Afr];
            assert!(afr.held_bytes <= MAX_RELAY_QUEUE_BYTES, "message {i}: {afr:?}");
            if first_sync_at.is_none() && core.stats(0).syncs == 1 {
                first_sync_at = Some(i);
            }
        }
        let per_message = MAX_RELAY_QUEUE_BYTES / (64 * 1024);
        let at = first_sync_at.expect("the byte bound gave the queue up");
        assert!((per_message as u64 - 2..=per_message as u64 + 1).contains(&at), "given up at message {at}, ~{per_message} expected");
        assert_eq!((core.stats(0).syncs, oc_syncs), (2, 0), "afr given up twice in 300 messages, oc never");
        assert_eq!(core.stats(0).links[&Region::Oc].held_bytes, 0, "an acknowledging link holds nothing");

        // The sync and what follows go to afr once its call fails.
        core.delivered(400, Region::Afr, Err(()));
        core.alarm(400 + REDELIVERY.cap_ms);
        let acts = drain(&mut core);
        let d = deliveries(&acts).into_iter().find(|d| d.region == Region::Afr).expect("afr is sent its queue again").clone();
        let sync_to = d.head.sync_to.expect("led by the sync");
        assert_eq!(d.head.first, Some(sync_to + 1), "{:?}", d.head);
        core.delivered(401, Region::Afr, acked(&core, Region::Afr, d.head.last_lsn));
        assert_held_bytes_exact(&core);
        assert!(core.stats(0).links[&Region::Afr].held_bytes < MAX_RELAY_QUEUE_BYTES);
    }

    #[test]
    fn held_bytes_follow_acks_go_back_and_renumbering() {
        let mut core = room();
        core.report(0, report(Region::Weur, 1));
        drain(&mut core);
        for i in 0..5 {
            core.publish(1, pub_(&format!("\"{}\"", "y".repeat(i * 100))));
        }
        let d = deliveries(&drain(&mut core))[0].clone();
        assert_held_bytes_exact(&core);
        let all = core.stats(0).links[&Region::Weur].held_bytes;
        assert!(all > 1000, "{all}");
        core.delivered(2, Region::Weur, Err(()));
        assert_held_bytes_exact(&core);
        assert_eq!(core.stats(0).links[&Region::Weur].held_bytes, all, "go-back moves items, holds the same bytes");
        core.alarm(2 + REDELIVERY.cap_ms);
        drain(&mut core);
        core.delivered(3 + REDELIVERY.cap_ms, Region::Weur, acked(&core, Region::Weur, d.head.first_lsn));
        assert_held_bytes_exact(&core);
        assert!(core.stats(0).links[&Region::Weur].held_bytes < all);
        core.erase(10_000, "e2".into());
        assert_held_bytes_exact(&core);
        let reset_only = core.stats(0).links[&Region::Weur].held_bytes;
        assert_eq!(reset_only, reset_frame("e2", 5).len(), "renumbered: only the reset is held");
    }

    #[test]
    fn duplicate_mid_and_retried_batch_are_answered_with_the_original_seqs() {
        let mut core = room();
        core.report(0, report(Region::Weur, 1));
        drain(&mut core);
        let first = core.publish(10, LinkPub { mid: Some("x".into()), ..pub_("1") });
        assert_eq!(stored(&drain(&mut core)), vec![1]);
        let again = core.publish(20, LinkPub { mid: Some("x".into()), ..pub_("2") });
        assert_eq!(again, first);
        assert!(drain(&mut core).is_empty(), "not stored or delivered again");
        let window = Retention::default().dedup_window_ms;
        let late = core.publish(10 + window, LinkPub { mid: Some("x".into()), ..pub_("3") });
        assert_eq!(late.seq, Some(2), "outside the window it is a new message");
        let ana = core.publish(20 + window, LinkPub { from: Some("ana".into()), mid: Some("x".into()), ..pub_("4") });
        assert_eq!(ana.seq, Some(3), "a mid belongs to its publisher: another user's x is a new message");
        let again = core.publish(21 + window, LinkPub { from: Some("ana".into()), mid: Some("x".into()), ..pub_("5") });
        assert_eq!(again, ana, "the same user repeating it gets the original");
        drain(&mut core);

        let batch = PublishBatch { id: "n-1".into(), report: report(Region::Weur, 1), pubs: vec![pub_("\"a\""), pub_("\"b\"")] };
        let out = core.publish_batch(30, batch.clone());
        assert_eq!(stored(&drain(&mut core)), vec![4, 5]);
        assert_eq!(core.publish_batch(31, batch), out, "a retried call is answered, not stored again");
        assert!(stored(&drain(&mut core)).is_empty());
    }

    #[test]
    fn alarm_prunes_and_reschedules() {
        let retention = Retention { max_messages: 2, ttl_ms: 10_000, dedup_window_ms: 0 };
        let mut core = RoomCore::new("r", None, "e".into(), retention, 1);
        drain(&mut core);
        core.publish(1_000, pub_("1"));
        let acts = drain(&mut core);
        assert!(acts.contains(&RoomAction::SetAlarm(11_000)), "{acts:?}");
        for i in 0..2 {
            core.publish(2_000 + i, pub_("0"));
        }
        assert!(!drain(&mut core).iter().any(|a| matches!(a, RoomAction::SetAlarm(_))), "already set");
        core.publish(2_002, pub_("0"));
        assert!(drain(&mut core).contains(&RoomAction::SetAlarm(2_003)), "over the count bound: due at once");
        assert_eq!(core.read(2_500, 0, 100), ReadPlan { after: 2, upto: 4, limit: 100 });
        assert!(core.recoverable(2_500, "e", 2));
        assert!(!core.recoverable(2_500, "e", 1));
        assert!(!core.recoverable(2_500, "other", 3));
        let repair = core.range(2_500, 0, 4, None);
        assert_eq!((repair.head.from, repair.upto, repair.head.recovered), (2, 4, true), "a repair starts past what is gone");
        let resume = core.range(2_500, 0, 4, Some("e"));
        assert_eq!((resume.head.from, resume.limit, resume.head.recovered), (0, 0, false), "a resume is refused instead");
        core.alarm(3_000);
        let acts = drain(&mut core);
        assert!(acts.contains(&RoomAction::Prune(Prune { upto_seq: 2, mids_before_ts: 3_000 })), "{acts:?}");
        assert!(acts.contains(&RoomAction::SetAlarm(12_001)), "{acts:?}");
    }

    #[test]
    fn erase_starts_a_new_epoch_and_drops_what_the_old_one_had_queued() {
        let mut core = RoomCore::new("r", None, "e1".into(), Retention::default(), 7);
        drain(&mut core);
        core.report(0, report(Region::Apac, 2));
        core.publish(1, pub_("1"));
        let d1 = deliveries(&drain(&mut core))[0].head.clone();
        core.publish(1, pub_("2"));
        drain(&mut core);
        let (epoch, seq) = core.erase(2, "e2".into());
        assert_eq!((epoch.as_str(), seq), ("e2", 2));
        let acts = drain(&mut core);
        assert_eq!(acts[0], RoomAction::EraseAll);
        assert_eq!(acts[1], RoomAction::SaveMeta(Meta { epoch: "e2".into(), seq: 2, gen: 1, epoch_start: 2 }));
        core.delivered(3, Region::Apac, acked(&core, Region::Apac, d1.last_lsn - 1));
        let acts = drain(&mut core);
        let d = deliveries(&acts)[0];
        assert_eq!((d.head.epoch.as_str(), d.head.gen, d.head.reset, d.head.first), ("e2", 1, true, None), "message 2 of e1 is not sent as e2");
        let v: serde_json::Value = serde_json::from_str(&d.frame).unwrap();
        assert_eq!(v, serde_json::json!({"t":"reset","epoch":"e2","seq":2}));
        assert_eq!(core.publish(4, pub_("3")).seq, Some(3), "seq is never reused");
        assert!(!core.recoverable(5, "e1", 1));
        assert!(core.recoverable(5, "e2", 2));
    }

    #[test]
    fn a_past_alarm_is_never_set_nor_trusted() {
        let mut core = room();
        core.report(0, report(Region::Weur, 1));
        core.publish(100, pub_("1"));
        let d = core.reply_delivery(100, Region::Weur).unwrap();
        let acts = drain(&mut core);
        let due = acts.iter().filter_map(|a| if let RoomAction::SetAlarm(t) = a { Some(*t) } else { None }).min().unwrap();
        // The alarm is late; meanwhile another event finds it past due.
        core.publish(due + 50, LinkPub { eph: true, ..pub_("2") });
        let acts = drain(&mut core);
        assert!(deliveries(&acts).iter().any(|x| x.head.first_lsn == d.head.first_lsn), "the drain resends what is due: {acts:?}");
        let alarms: Vec<u64> = acts.iter().filter_map(|a| if let RoomAction::SetAlarm(t) = a { Some(*t) } else { None }).collect();
        assert!(alarms.iter().all(|&t| t > due + 50), "only future alarms: {alarms:?}");
        assert!(!alarms.is_empty(), "the stale alarm is not trusted to be pending: {acts:?}");
    }

    #[test]
    fn http_publishes_are_limited_per_user_and_backends_are_not() {
        let mut core = room();
        core.set_http_publish_rate(1, 2);
        assert!(core.admit_http_publish(0, Some("a"), false).is_ok());
        assert!(core.admit_http_publish(0, Some("a"), false).is_ok());
        assert_eq!(core.admit_http_publish(0, Some("a"), false), Err(1000));
        assert!(core.admit_http_publish(0, Some("b"), false).is_ok(), "another user is not affected");
        assert!((0..10).all(|_| core.admit_http_publish(0, Some("a"), true).is_ok()), "admin is exempt");
    }

    #[test]
    fn http_history_reads_are_limited_per_reader_apart_from_publishes() {
        let mut core = room();
        core.set_http_history_rate(1, 2);
        assert_eq!(core.http_history_rate(), (1, 2));
        assert!(core.admit_http_history(0, "a", false).is_ok() && core.admit_http_history(0, "a", false).is_ok());
        assert_eq!(core.admit_http_history(0, "a", false), Err(1000));
        assert!(core.admit_http_history(0, "b", false).is_ok(), "another reader is not affected");
        assert!((0..10).all(|_| core.admit_http_history(0, "a", true).is_ok()), "exempt: admin, or a socket's read");
        assert!(core.admit_http_publish(0, Some("a"), false).is_ok(), "reading costs no publish");
        assert!(core.admit_http_history(500, "a", false).is_err() && core.admit_http_history(1_000, "a", false).is_ok());
    }

    #[test]
    fn stats_sum_relays() {
        let mut core = room();
        core.report(0, RelayReport { relay_sends: 5, wakeups: 2, resets: 1, ..report(Region::Weur, 2) });
        core.report(0, RelayReport { relay_sends: 7, wakeups: 1, ..report(Region::Enam, 3) });
        let s = core.stats(4);
        assert_eq!((s.connections, s.relay_sends, s.wakeups.room, s.resets), (5, 12, 4, 1));
        assert_eq!(s.wakeups.relays[&Region::Weur], 2);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["relays"][0]["region"], "enam", "ordered by region");
        assert_eq!(json["wakeups"]["relays"]["enam"], 1);
        assert_eq!(json["faults"]["dropped_deliveries"], 0);
    }
}

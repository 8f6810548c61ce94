//! The Relay: a room's presence in one region. It holds that region's client
//! sockets, fans each delivery out to them, and forwards their publishes to
//! the Room.
//!
//! Sans-IO like the Room: the glue feeds events in (`handle_delivery`,
//! `handle_range`, `handle_range_failed`, `joined`, …) and drains
//! [`RelayAction`]s with [`RelayCore::poll_action`] until it returns `None`.
//!
//! **The drain rule.** After every event, drain until `None`, carrying the
//! actions out in order: a `FanOut` goes to exactly the sockets and streams
//! open at that moment, with no await between admitting a client (its
//! welcome carries the cursor) and adding it to the fan-out.
//!
//! **The cursor rule.** The relay's `cursor` is the last stored seq fanned
//! out to its clients; it only moves past a seq once that seq has been
//! fanned out. The one exception is a seq no longer stored: the relay then
//! first sends its clients `{"t":"reset","epoch":E,"seq":S}` in the same
//! epoch (the next message is S + 1). So:
//! - a new client's welcome carries the cursor, and its first message is
//!   always cursor + 1;
//! - a delivery that skips ahead waits while the gap is read from the
//!   Room's storage, page by page; if a read fails, nothing past the gap is
//!   fanned out, the delivery is not acknowledged, and the Room sends it
//!   again later;
//! - a delivery the relay already applied (a retry) is not fanned out twice:
//!   each carries the link sequence numbers (lsn) of its items, and the
//!   relay acknowledges the last lsn up to which it applied everything. One
//!   that arrives ahead of an earlier one (a `deliver` call overtaking a
//!   publish answer) is applied at once, its stored gap repaired, but the
//!   ack waits for the earlier one, so the Room sends that again if it was
//!   lost and nothing in it (an ephemeral message, a `reset`) is skipped.
//!
//! Deliveries are applied one at a time, in arrival order; one that waits
//! on a repair holds the ones behind it. The position (epoch, cursor, ack)
//! is persisted after each change ([`RelayAction::SavePosition`]), so a relay
//! that hibernated with its sockets still knows where its clients are.

mod buffer_watch;
mod inbound;
mod presence;
mod reads;
mod window;

pub use buffer_watch::BufferWatch;
pub use inbound::{gather_before_forwarding, Inbound, GATHER_FROM_CONNECTIONS};
pub use reads::{user_tag, UnreadAsk, WelcomeUnread};
pub use window::{trim_frame, without_resets, Window, RELAY_WINDOW_BYTES, RELAY_WINDOW_MESSAGES};

use crate::abuse::Strikes;
use crate::backoff::{Backoff, Rng};
use crate::close_code::CloseCode;
use crate::config::Retention;
use crate::error::{ErrorCode, Rejection};
use crate::link::{DeliveryHead, JoinReply, LinkAck, RangeHead, RelayPosition, RelayReport};
pub use crate::rate::user_key;
use crate::rate::TokenBucket;
use crate::region::Region;
use crate::server_frame::{reset_frame, welcome_frame, WelcomeExtras};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// Deliveries waiting behind one being repaired. The Room makes one call at
/// a time, so only answers to this relay's own publishes add to it; past
/// the bound a delivery is answered unapplied and the Room sends it again.
pub const MAX_PENDING_DELIVERIES: usize = 64;
/// The same in bytes of frames: 64 deliveries of 512 KiB would be 32 MiB.
/// A delivery that would pass it is answered unapplied too (one is always
/// taken when none waits).
pub const MAX_PENDING_DELIVERY_BYTES: usize = 4 << 20;
/// Attempts at one publish call, counting the first.
pub const MAX_PUBLISH_ATTEMPTS: u32 = 4;
/// Delay before a publish call is tried again, under the same batch id.
pub const PUBLISH_RETRY: Backoff = Backoff { base_ms: 100, cap_ms: 1_000 };

/// How the glue holds a frame: a JS string on wasm (shared by every socket,
/// so the fan-out and the window cost no copies), a `String` in tests.
pub trait Frame: Clone {
    fn from_text(text: String) -> Self;
    /// The frame's text, when it must be read (trimming, SSE).
    fn text(&self) -> Option<String>;
    /// Its size in bytes (or close to it), for the window's byte bound.
    fn size(&self) -> usize;
}

impl Frame for String {
    fn from_text(text: String) -> Self {
        text
    }
    fn text(&self) -> Option<String> {
        Some(self.clone())
    }
    fn size(&self) -> usize {
        self.len()
    }
}

/// Work for the glue, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayAction<F> {
    /// Send this frame to every open client socket and SSE stream.
    FanOut(F),
    /// Send this presence frame to the presence subscribers it is for.
    FanOutPresence(F, crate::presence::Audience),
    /// Send this frame (`{"t":"read","seq":N}`) to every socket and SSE
    /// stream of `user`.
    SendToUser { user: String, frame: F },
    /// Read stored messages `after < seq <= upto` from the Room; answer with
    /// [`RelayCore::handle_range`] or [`RelayCore::handle_range_failed`].
    ReadRange { after: u64, upto: u64 },
    /// Persist the relay's position in its own storage.
    SavePosition(Saved),
    /// Answer the `deliver` call `token` with [`RelayCore::report`]: its
    /// ack says whether the delivery was applied.
    Answer { token: u64 },
}

/// The relay's persisted position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub epoch: String,
    pub gen: u64,
    pub epoch_start: u64,
    pub cursor: u64,
    #[serde(default)]
    pub ack: Option<LinkAck>,
    /// Whether the room has read marks, as far as the relay knows (`None`:
    /// not known, so it asks when it welcomes a user). See
    /// [`crate::link::JoinReply::reads`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reads: Option<bool>,
}

/// How a resuming client (`?since=N&epoch=E`) is brought up to date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume<F> {
    /// `recovered: false`: another epoch, or a seq this relay cannot vouch for.
    NotRecoverable,
    /// `recovered: true`: send these frames (each trimmed to seqs above the
    /// given one, when `Some`) after the welcome. Empty when up to date.
    Frames(Vec<(F, Option<u64>)>),
    /// The relay's window does not reach back far enough: read
    /// `after < seq <= upto` from the Room, then plan again from `upto`.
    FromRoom { after: u64, upto: u64 },
}

/// A delivery waiting to be applied: from a `deliver` call (with the
/// token its answer waits on) or from a publish answer.
#[derive(Debug)]
struct Incoming<F> {
    token: Option<u64>,
    head: DeliveryHead,
    frame: Option<F>,
}

/// Out-of-order lsn ranges kept above the cumulative ack, at most.
const MAX_AHEAD_RANGES: usize = 64;

/// What a delivery needed, once tried.
enum Step {
    Applied,
    /// A gap is being read from the Room.
    Reading,
}

/// The relay's state machine. `F` is how the glue holds a frame.
#[derive(Debug)]
pub struct RelayCore<F = String> {
    room: String,
    region: Region,
    /// `None` until the relay has joined (or restored its position).
    position: Option<Saved>,
    pending: VecDeque<Incoming<F>>,
    /// Lsn ranges applied ahead of a missing one, and the link they are of.
    ahead: Vec<(u64, u64)>,
    ahead_key: (u64, u64),
    /// Clients between the start of their admission and their socket being
    /// accepted: counted in reports, so the Room never takes the relay for
    /// empty while one is joining.
    admitting: u32,
    /// This incarnation (its construction time) and a report counter: they
    /// order the relay's reports at the Room.
    incarnation: u64,
    report_seq: u64,
    /// Connections per user key ([`user_key`]), open and being admitted.
    users: HashMap<String, u32>,
    /// The sockets this object woke with have been counted into `users`.
    users_counted: bool,
    /// A repair read is in flight for the front of `pending`.
    reading: bool,
    /// The position changed since it was last saved.
    dirty: bool,
    actions: VecDeque<RelayAction<F>>,
    relay_sends: u64,
    resets: u64,
    slow_closes: u64,
    buffer_peak: u64,
    wakeups: u64,
    /// Distinguishes this construction's connection ids (and publish batch
    /// ids) from earlier ones.
    nonce: String,
    next_conn: u64,
    next_batch: u64,
    rng: Rng,
    strikes: HashMap<String, Strikes>,
    buckets: HashMap<String, TokenBucket>,
    /// Publishes per second and burst per connection.
    publish_rate: (u32, u32),
    history_buckets: HashMap<String, TokenBucket>,
    /// `history` reads per second and burst per connection.
    history_rate: (u32, u32),
    report_in_flight: bool,
    report_wanted: bool,
    resumes: ResumeCounts,
    window: Window<F>,
    /// The Room's retention, so the window never vouches for more than the
    /// Room would.
    retention: Retention,
    presence: presence::PresenceCalls,
}

#[derive(Debug, Default, Clone, Copy)]
struct ResumeCounts {
    from_relay: u64,
    from_room: u64,
    refused: u64,
}

impl<F: Frame> RelayCore<F> {
    /// `wakeups` is this object's construction count; `nonce` a short random
    /// string chosen by the glue; `incarnation` must grow from one
    /// construction to the next (the glue passes the time in ms).
    pub fn new(room: impl Into<String>, region: Region, wakeups: u64, nonce: String, incarnation: u64) -> Self {
        let seed = nonce.bytes().fold(incarnation, |h, b| h.rotate_left(5) ^ u64::from(b));
        RelayCore {
            room: room.into(),
            region,
            position: None,
            pending: VecDeque::new(),
            ahead: Vec::new(),
            ahead_key: (0, 0),
            admitting: 0,
            incarnation,
            report_seq: 0,
            users: HashMap::new(),
            users_counted: false,
            reading: false,
            dirty: false,
            actions: VecDeque::new(),
            relay_sends: 0,
            resets: 0,
            slow_closes: 0,
            buffer_peak: 0,
            wakeups,
            nonce,
            next_conn: 0,
            next_batch: 0,
            rng: Rng::new(seed),
            strikes: HashMap::new(),
            buckets: HashMap::new(),
            publish_rate: (20, 40),
            history_buckets: HashMap::new(),
            history_rate: (5, 20),
            report_in_flight: false,
            report_wanted: false,
            resumes: ResumeCounts::default(),
            window: Window::default(),
            retention: Retention::default(),
            presence: presence::PresenceCalls::default(),
        }
    }

    /// The position persisted before the relay hibernated, read back when
    /// it is constructed again.
    pub fn restore(&mut self, saved: Saved) {
        if self.position.is_none() {
            self.position = Some(saved);
        }
    }

    pub fn room(&self) -> &str {
        &self.room
    }

    pub fn region(&self) -> Region {
        self.region
    }

    pub fn cursor(&self) -> Option<u64> {
        self.position.as_ref().map(|p| p.cursor)
    }

    pub fn epoch(&self) -> Option<&str> {
        self.position.as_ref().map(|p| p.epoch.as_str())
    }

    /// What this relay has fanned out, as the Room sees it.
    pub fn position(&self) -> Option<RelayPosition> {
        self.position.as_ref().map(|p| RelayPosition { gen: p.gen, cursor: p.cursor, ack: p.ack })
    }

    /// Whether a new client must wait for a join with the Room before its
    /// welcome: when the relay has no position, or has no clients (and so
    /// may have been forgotten by the Room).
    pub fn needs_join(&self, open_connections: u32) -> bool {
        self.position.is_none() || open_connections == 0
    }

    /// Reserves a place for a connecting client of user `key`, or refuses
    /// it: 503 `overloaded` when the relay holds `max_relay` connections
    /// (open ones, `open`, and those being admitted: simultaneous connects
    /// cannot all pass), 429 `rate_limited` when the user holds
    /// `max_user`. A reservation is released by [`RelayCore::user_left`]
    /// (the admission failed, or the client left); it also begins the
    /// admission ([`RelayCore::begin_admission`]).
    pub fn reserve(&mut self, key: &str, open: u32, max_relay: u32, max_user: u32) -> Result<(), Rejection> {
        if open.saturating_add(self.admitting) >= max_relay {
            return Err(Rejection::new(ErrorCode::Overloaded, "this region's relay is at its connection limit; retry later"));
        }
        let held = self.users.get(key).copied().unwrap_or(0);
        if held >= max_user {
            return Err(Rejection::new(
                ErrorCode::RateLimited,
                format!("this user holds {held} connections to this region's relay, the most allowed; close one first"),
            ));
        }
        self.users.insert(key.to_owned(), held + 1);
        self.begin_admission();
        Ok(())
    }

    /// Counts the open connections this object woke with, by user key,
    /// once per construction: hibernation keeps sockets, not memory.
    pub fn count_users<'a>(&mut self, keys: impl IntoIterator<Item = &'a str>) {
        for key in keys {
            *self.users.entry(key.to_owned()).or_default() += 1;
        }
        self.users_counted = true;
    }

    /// Whether [`RelayCore::count_users`] has run since construction.
    pub fn users_counted(&self) -> bool {
        self.users_counted
    }

    /// A connection of user `key` is gone (or its admission failed).
    pub fn user_left(&mut self, key: &str) {
        if let Some(n) = self.users.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.users.remove(key);
            }
        }
    }

    /// A client's admission begins: it counts in reports from now on.
    pub fn begin_admission(&mut self) {
        self.admitting = self.admitting.saturating_add(1);
    }

    /// A client's admission ended (its socket was accepted, or it failed).
    pub fn end_admission(&mut self) {
        self.admitting = self.admitting.saturating_sub(1);
    }

    /// The report sent when joining: the relay's own position, or none for
    /// a relay that never had one (it adopts the Room's).
    pub fn join_report(&mut self, open_connections: u32) -> RelayReport {
        self.report(open_connections)
    }

    /// The Room's answer to a join. A relay with no position adopts it
    /// whole. A relay with a position never takes the Room's ack from a join
    /// (the Room syncs a relay that is behind, and drives that to the end);
    /// with no clients and nothing in hand it skips ahead to the answer's
    /// seq, since nobody is waiting for what lies between. It never moves
    /// backwards.
    pub fn joined(&mut self, reply: JoinReply, open_connections: u32) {
        let Some(p) = &self.position else {
            self.adopt(reply);
            return;
        };
        let idle = open_connections == 0 && self.pending.is_empty() && !self.reading;
        let reads = reply.reads;
        if idle && (reply.gen, reply.seq) > (p.gen, p.cursor) {
            let (ack, known) = (p.ack, p.reads);
            if self.epoch() != Some(reply.epoch.as_str()) {
                self.window.clear();
            }
            self.position = Some(Saved {
                epoch: reply.epoch,
                gen: reply.gen,
                epoch_start: reply.epoch_start,
                cursor: reply.seq,
                ack,
                reads: known,
            });
            self.dirty = true;
        }
        self.learn_reads(reads);
        self.flush();
    }

    fn adopt(&mut self, reply: JoinReply) {
        self.window.clear();
        self.ahead.clear();
        self.position = Some(Saved {
            epoch: reply.epoch,
            gen: reply.gen,
            epoch_start: reply.epoch_start,
            cursor: reply.seq,
            ack: Some(reply.ack),
            reads: Some(reply.reads),
        });
        self.dirty = true;
        self.flush();
    }

    /// Admits a client: its connection id and welcome frame. `None` until the
    /// relay has a position. `recovered` answers a resume request, if any.
    pub fn admit(&mut self, recovered: Option<bool>) -> Option<(String, String)> {
        self.admit_with_unread(recovered, None)
    }

    /// [`RelayCore::admit`], with the user's unread count in the welcome
    /// when the Room's answer to [`RelayCore::unread_ask`] can be brought
    /// up to the cursor (see [`WelcomeUnread`]).
    pub fn admit_with_unread(&mut self, recovered: Option<bool>, unread: Option<WelcomeUnread<'_>>) -> Option<(String, String)> {
        let unread = unread.and_then(|u| self.welcome_unread(&u));
        let p = self.position.as_ref()?;
        self.next_conn += 1;
        let conn = format!("{}-{}-{}", self.region, self.nonce, self.next_conn);
        let extras = WelcomeExtras { recovered, unread };
        let welcome = welcome_frame(&self.room, &conn, self.region.as_str(), &p.epoch, p.cursor, extras);
        Some((conn, welcome))
    }

    /// A delivery from the Room: from a `deliver` call whose answer waits on
    /// `token`, or (`None`) from the answer to this relay's publish.
    pub fn handle_delivery(&mut self, token: Option<u64>, head: DeliveryHead, frame: Option<F>) {
        if head.reads {
            self.learn_reads(true);
        }
        let over_bytes = !self.pending.is_empty() && {
            let held: usize = self.pending.iter().filter_map(|i| i.frame.as_ref()).map(Frame::size).sum();
            held.saturating_add(frame.as_ref().map_or(0, Frame::size)) > MAX_PENDING_DELIVERY_BYTES
        };
        if over_bytes || self.pending.len() >= MAX_PENDING_DELIVERIES {
            if let Some(token) = token {
                self.actions.push_back(RelayAction::Answer { token });
            }
            return;
        }
        self.pending.push_back(Incoming { token, head, frame });
        self.process();
    }

    /// A range read answered: fan out what it holds (announcing a `reset`
    /// first when it starts past the cursor), then go on with the delivery
    /// that waited for it.
    pub fn handle_range(&mut self, head: RangeHead, frame: Option<F>) {
        if !self.reading {
            return;
        }
        self.reading = false;
        let Some(p) = self.position.as_mut() else { return };
        if head.gen > p.gen {
            // Erased meanwhile: the new epoch's reset, and the delivery that
            // waited (of the old epoch) is stale.
            self.cross_epoch(&head.epoch, head.gen, head.epoch_start, true);
            self.process();
            return;
        }
        let before = p.cursor;
        if head.gen == p.gen {
            if head.from > p.cursor {
                let reset = reset_frame(&p.epoch, head.from);
                p.cursor = head.from;
                self.window.clear();
                self.resets += 1;
                self.actions.push_back(RelayAction::FanOut(F::from_text(reset)));
            }
            let cursor = self.cursor().unwrap_or(before);
            if let Some(frame) = frame.filter(|_| head.last > cursor) {
                // The cursor may have moved while the read was out (a join
                // adopted): only what is above it goes out.
                let frame = if cursor > head.from {
                    match frame.text().and_then(|t| trim_frame(&t, cursor, false)) {
                        Some(kept) => F::from_text(kept),
                        None => return self.process(),
                    }
                } else {
                    frame
                };
                // Unknown stamp: 0 sends resumes into it to the Room.
                self.window.push(cursor + 1, head.last, 0, frame.clone());
                self.actions.push_back(RelayAction::FanOut(frame));
                if let Some(p) = self.position.as_mut() {
                    p.cursor = head.last;
                }
            }
        }
        if self.cursor() == Some(before) {
            // Storage had nothing the delivery needs: give it back unapplied
            // rather than loop; the Room sends it again later.
            self.fail_front();
        } else {
            self.dirty = true;
        }
        self.process();
    }

    /// A range read failed: the delivery that waited is not applied, and not
    /// acknowledged, so the Room sends it again after its backoff.
    pub fn handle_range_failed(&mut self) {
        if !self.reading {
            return;
        }
        self.reading = false;
        self.fail_front();
        self.process();
    }

    fn fail_front(&mut self) {
        if let Some(Incoming { token: Some(token), .. }) = self.pending.pop_front() {
            self.actions.push_back(RelayAction::Answer { token });
        }
    }

    /// Applies pending deliveries until one waits on a read.
    fn process(&mut self) {
        while !self.reading {
            let Some(next) = self.pending.pop_front() else { break };
            match self.step(&next) {
                Step::Applied => {
                    if let Some(token) = next.token {
                        self.actions.push_back(RelayAction::Answer { token });
                    }
                }
                Step::Reading => {
                    self.pending.push_front(next);
                    self.reading = true;
                }
            }
        }
        self.flush();
    }

    fn flush(&mut self) {
        if std::mem::take(&mut self.dirty) {
            if let Some(p) = &self.position {
                self.actions.push_back(RelayAction::SavePosition(p.clone()));
            }
        }
    }

    fn cross_epoch(&mut self, epoch: &str, gen: u64, epoch_start: u64, announce: bool) {
        if announce {
            self.actions.push_back(RelayAction::FanOut(F::from_text(reset_frame(epoch, epoch_start))));
        }
        let (ack, reads) = self.position.as_ref().map_or((None, None), |p| (p.ack, p.reads));
        self.position = Some(Saved { epoch: epoch.to_owned(), gen, epoch_start, cursor: epoch_start, ack, reads });
        self.window.clear();
        self.dirty = true;
    }

    fn step(&mut self, d: &Incoming<F>) -> Step {
        let h = &d.head;
        let Some(p) = self.position.as_ref() else {
            // Never joined, so it has no clients (admission joins first):
            // nothing to fan out, and no position to take from this.
            return Step::Applied;
        };
        let key = (h.inc, h.link);
        let ack = p.ack.filter(|a| a.key() == key).map_or(0, |a| a.lsn);
        let stale_link = p.ack.is_some_and(|a| a.key() > key);
        let ahead = self.ahead_key == key && self.ahead.iter().any(|&(a, b)| a <= h.first_lsn && h.last_lsn <= b);
        if stale_link || h.last_lsn <= ack || ahead {
            return Step::Applied; // a retry, or of a link since replaced
        }
        if h.gen < p.gen {
            // From an epoch since erased: nothing in it goes out.
            self.record(h);
            return Step::Applied;
        }
        // The epoch's reset goes out once: here, or when the relay crossed
        // into the epoch on a later item and announced it itself.
        let announced = h.reset && h.gen == p.gen;
        if h.gen > p.gen {
            self.cross_epoch(&h.epoch, h.gen, h.epoch_start, !h.reset);
        }
        let Some(p) = self.position.as_mut() else { return Step::Applied };
        // Everything up to `needed` must be out before this frame.
        let needed = h.first.map(|f| f.saturating_sub(1)).or(h.sync_to);
        if let Some(upto) = needed.filter(|&n| n > p.cursor) {
            self.actions.push_back(RelayAction::ReadRange { after: p.cursor, upto });
            return Step::Reading;
        }
        let cursor = p.cursor;
        let stripped = if announced { d.frame.as_ref().and_then(|f| f.text()).and_then(|t| without_resets(&t)) } else { None };
        let frame = match stripped {
            Some(kept) => Some(F::from_text(kept)),
            None if announced => None,
            None => d.frame.clone(),
        };
        if let Some(frame) = frame.as_ref() {
            match (h.first, h.last) {
                (Some(first), Some(last)) if first > cursor => {
                    self.window.push(first, last, h.first_ts, frame.clone());
                    self.actions.push_back(RelayAction::FanOut(frame.clone()));
                }
                (Some(_), Some(last)) => {
                    // Partly fanned out already: only what is new (ephemeral
                    // messages in it were not).
                    if let Some(kept) = frame.text().and_then(|t| trim_frame(&t, cursor, true)) {
                        let kept = F::from_text(kept);
                        if last > cursor {
                            // The stamp is of an older message: the safe side
                            // for the window's retention check.
                            self.window.push(cursor + 1, last, h.first_ts, kept.clone());
                        }
                        self.actions.push_back(RelayAction::FanOut(kept));
                    }
                }
                _ if h.read_marks => self.send_marks(frame),
                _ => match h.presence {
                    Some(audience) => self.actions.push_back(RelayAction::FanOutPresence(frame.clone(), audience)),
                    None => self.actions.push_back(RelayAction::FanOut(frame.clone())),
                },
            }
        }
        if let Some(p) = self.position.as_mut() {
            p.cursor = p.cursor.max(h.last.unwrap_or(0));
        }
        self.record(h);
        Step::Applied
    }

    /// Takes a delivery's lsn range into the ack: at once when it follows
    /// on (then any ranges applied ahead that now follow on too), or kept
    /// aside until the missing ones arrive.
    fn record(&mut self, h: &DeliveryHead) {
        let Some(p) = self.position.as_mut() else { return };
        let key = (h.inc, h.link);
        if self.ahead_key != key {
            self.ahead.clear();
            self.ahead_key = key;
        }
        let mut ack = p.ack.filter(|a| a.key() == key).unwrap_or(LinkAck { inc: h.inc, link: h.link, lsn: 0 });
        if h.first_lsn <= ack.lsn + 1 {
            ack.lsn = ack.lsn.max(h.last_lsn);
            while let Some(i) = self.ahead.iter().position(|&(a, _)| a <= ack.lsn + 1) {
                ack.lsn = ack.lsn.max(self.ahead.swap_remove(i).1);
            }
        } else if self.ahead.len() < MAX_AHEAD_RANGES {
            self.ahead.push((h.first_lsn, h.last_lsn));
        }
        p.ack = Some(ack);
        self.dirty = true;
    }

    /// The next thing to do, or `None` (see the drain rule).
    pub fn poll_action(&mut self) -> Option<RelayAction<F>> {
        self.actions.pop_front()
    }

    /// Counts frames sent to clients (one per socket or stream reached).
    pub fn sent(&mut self, frames: u64) {
        self.relay_sends += frames;
    }

    /// The Room's retention, from the same configuration.
    pub fn set_retention(&mut self, retention: Retention) {
        self.retention = retention;
    }

    /// Bounds the window's bytes (see [`window::RELAY_WINDOW_BYTES`]).
    pub fn set_window_bytes(&mut self, max_bytes: usize) {
        self.window.set_max_bytes(max_bytes);
    }

    /// How to bring a client of `epoch` that has seen up to `since` level
    /// with this relay's cursor, at `now_ms`. Anything near the retention
    /// bounds goes to the Room, which decides exactly.
    pub fn plan_resume(&self, epoch: &str, since: u64, now_ms: u64) -> Resume<F> {
        let Some(p) = &self.position else { return Resume::NotRecoverable };
        let cursor = p.cursor;
        if p.epoch != epoch || since > cursor {
            return Resume::NotRecoverable;
        }
        if since == cursor {
            return Resume::Frames(Vec::new());
        }
        let within_count = cursor - since <= self.retention.max_messages;
        let oldest_ts = now_ms.saturating_sub(self.retention.ttl_ms);
        match self.window.since(since, oldest_ts) {
            Some(frames) if within_count && self.window.newest() == Some(cursor) => Resume::Frames(frames),
            _ => Resume::FromRoom { after: since, upto: cursor },
        }
    }

    /// Counts a client cut off for falling behind the buffer bound.
    pub fn slow_closed(&mut self) {
        self.slow_closes += 1;
    }

    /// Notes how many bytes one client's buffer held.
    pub fn saw_buffer(&mut self, bytes: usize) {
        self.buffer_peak = self.buffer_peak.max(bytes as u64);
    }

    /// Counts a finished resume, by where it was served from.
    pub fn resumed(&mut self, recovered: bool, used_room: bool) {
        let c = &mut self.resumes;
        match (recovered, used_room) {
            (false, _) => c.refused += 1,
            (true, true) => c.from_room += 1,
            (true, false) => c.from_relay += 1,
        }
    }

    /// The relay's report: its open connections (plus the clients being
    /// admitted) and its position. Each report is numbered.
    pub fn report(&mut self, open_connections: u32) -> RelayReport {
        self.report_seq += 1;
        RelayReport {
            region: self.region,
            connections: open_connections.saturating_add(self.admitting),
            relay_sends: self.relay_sends,
            wakeups: self.wakeups,
            recovered_from_relay: self.resumes.from_relay,
            recovered_from_room: self.resumes.from_room,
            not_recovered: self.resumes.refused,
            resets: self.resets,
            slow_closes: self.slow_closes,
            buffer_peak: self.buffer_peak,
            position: self.position(),
            incarnation: self.incarnation,
            report_seq: self.report_seq,
        }
    }

    /// Asks for a report to the Room. Returns true when the caller must send
    /// one now; false when one is in flight (it will be followed by another).
    pub fn want_report(&mut self) -> bool {
        if self.report_in_flight {
            self.report_wanted = true;
            false
        } else {
            self.report_in_flight = true;
            true
        }
    }

    /// A report finished. Returns true when another must be sent because the
    /// count changed meanwhile.
    pub fn report_done(&mut self) -> bool {
        if self.report_wanted {
            self.report_wanted = false;
            true
        } else {
            self.report_in_flight = false;
            false
        }
    }

    /// A new id for a publish call; its retries reuse it.
    pub fn next_batch_id(&mut self) -> String {
        self.next_batch += 1;
        format!("{}-{}", self.nonce, self.next_batch)
    }

    /// How long to wait before attempt `attempt + 1` of a publish call whose
    /// answer did not come, or `None` to give up and tell the publishers.
    pub fn publish_retry_delay(&mut self, attempt: u32) -> Option<u64> {
        (attempt < MAX_PUBLISH_ATTEMPTS).then(|| PUBLISH_RETRY.delay(attempt.saturating_sub(1), &mut self.rng))
    }

    /// Records a bad frame from `conn`; returns the close code when the
    /// connection has gone over its allowance.
    pub fn bad_frame(&mut self, conn: &str, now_ms: u64, code: ErrorCode) -> Option<CloseCode> {
        let close = self.strikes.entry(conn.to_owned()).or_default().strike(now_ms, code);
        if close.is_some() {
            self.strikes.remove(conn);
        }
        close
    }

    /// Sets the per-connection publish rate and burst.
    pub fn set_publish_rate(&mut self, per_second: u32, burst: u32) {
        self.publish_rate = (per_second, burst);
    }

    /// Whether `conn` may publish at `now_ms`. Buckets live in memory, so a
    /// relay that hibernated starts every connection with a full burst.
    pub fn allow_publish(&mut self, conn: &str, now_ms: u64) -> bool {
        let (rate, burst) = self.publish_rate;
        self.buckets
            .entry(conn.to_owned())
            .or_insert_with(|| TokenBucket::full(burst, now_ms))
            .take(now_ms, rate, burst)
    }

    /// Sets the per-connection `history` read rate and burst
    /// (`HERALD_HISTORY_RATE`, `HERALD_HISTORY_BURST`).
    pub fn set_history_rate(&mut self, per_second: u32, burst: u32) {
        self.history_rate = (per_second, burst);
    }

    /// Whether `conn` may read history at `now_ms`: each read is a storage
    /// query at the Room, so a socket asking in a loop would cost the Room
    /// (and every other client of it) far more than a publisher can.
    pub fn allow_history(&mut self, conn: &str, now_ms: u64) -> bool {
        let (rate, burst) = self.history_rate;
        self.history_buckets
            .entry(conn.to_owned())
            .or_insert_with(|| TokenBucket::full(burst, now_ms))
            .take(now_ms, rate, burst)
    }

    /// Forgets a closed connection.
    pub fn closed(&mut self, conn: &str) {
        self.strikes.remove(conn);
        self.buckets.remove(conn);
        self.history_buckets.remove(conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Relay = RelayCore<String>;

    fn joined(open: u32, seq: u64) -> Relay {
        let mut r = Relay::new("room", Region::Weur, 1, "n".into(), 1);
        let reply = JoinReply { epoch: "e".into(), gen: 0, epoch_start: 0, seq, ack: LinkAck { inc: 9, link: 1, lsn: 0 }, reads: false };
        r.joined(reply, open);
        drain(&mut r);
        r
    }

    fn drain(r: &mut Relay) -> Vec<RelayAction<String>> {
        std::iter::from_fn(|| r.poll_action()).collect()
    }

    fn fanned(actions: &[RelayAction<String>]) -> Vec<serde_json::Value> {
        actions
            .iter()
            .filter_map(|a| if let RelayAction::FanOut(f) = a { Some(serde_json::from_str(f).unwrap()) } else { None })
            .collect()
    }

    fn msgs(seqs: std::ops::RangeInclusive<u64>) -> String {
        let frames: Vec<String> = seqs.map(|s| format!(r#"{{"t":"msg","seq":{s},"ts":1,"data":{s},"from":null}}"#)).collect();
        crate::server_frame::batch_frame(&frames)
    }

    fn head(uid: u64, first: u64, last: u64) -> DeliveryHead {
        DeliveryHead {
            epoch: "e".into(),
            gen: 0,
            epoch_start: 0,
            inc: 9,
            link: 1,
            first_lsn: uid,
            last_lsn: uid + (last - first),
            first: Some(first),
            last: Some(last),
            first_ts: 1,
            sync_to: None,
            reset: false,
            presence: None,
            read_marks: false,
            reads: false,
        }
    }

    fn range(from: u64, last: u64) -> (RangeHead, Option<String>) {
        let head = RangeHead { epoch: "e".into(), gen: 0, epoch_start: 0, from, last, recovered: true };
        (head, (last > from).then(|| msgs(from + 1..=last)))
    }

    #[test]
    fn welcome_carries_the_cursor() {
        let mut r = Relay::new("room", Region::Weur, 1, "abc".into(), 1);
        assert!(r.admit(None).is_none(), "no welcome before joining");
        assert!(r.needs_join(0));
        assert_eq!(r.join_report(0).position, None, "with no clients it adopts the Room's position");
        let reply = JoinReply { epoch: "e".into(), gen: 0, epoch_start: 0, seq: 5, ack: LinkAck { inc: 1, link: 1, lsn: 3 }, reads: false };
        r.joined(reply, 0);
        assert!(matches!(drain(&mut r)[..], [RelayAction::SavePosition(Saved { cursor: 5, .. })]));
        let (conn, w) = r.admit(None).unwrap();
        assert_eq!(conn, "weur-abc-1");
        let v: serde_json::Value = serde_json::from_str(&w).unwrap();
        assert_eq!((v["seq"].as_u64(), v["epoch"].as_str()), (Some(5), Some("e")));
        assert!(!r.needs_join(1));
        assert_eq!(r.join_report(1).position.map(|p| p.cursor), Some(5));
    }

    #[test]
    fn deliveries_are_forwarded_trimmed_or_skipped_as_retries() {
        let mut r = joined(1, 5);
        r.handle_delivery(Some(1), head(1, 6, 8), Some(msgs(6..=8)));
        let acts = drain(&mut r);
        assert_eq!(fanned(&acts).len(), 1);
        assert!(acts.contains(&RelayAction::Answer { token: 1 }));
        assert_eq!(r.position().unwrap().ack, Some(LinkAck { inc: 9, link: 1, lsn: 3 }));
        r.handle_delivery(Some(2), head(1, 6, 8), Some(msgs(6..=8)));
        let acts = drain(&mut r);
        assert!(fanned(&acts).is_empty(), "a retry is not fanned out twice: {acts:?}");
        assert_eq!(acts, vec![RelayAction::Answer { token: 2 }]);
        // Another incarnation of the Room re-sends 8..10: only 9 and 10 go out.
        let mut h = head(1, 8, 10);
        h.inc = 10;
        r.handle_delivery(None, h, Some(msgs(8..=10)));
        let out = fanned(&drain(&mut r));
        assert_eq!(out[0].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect::<Vec<_>>(), vec![9, 10]);
        assert_eq!(r.cursor(), Some(10));
    }

    #[test]
    fn a_gap_is_repaired_page_by_page_before_the_delivery() {
        let mut r = joined(1, 5);
        r.handle_delivery(Some(7), head(40, 2006, 2006), Some(msgs(2006..=2006)));
        let acts = drain(&mut r);
        assert_eq!(acts, vec![RelayAction::ReadRange { after: 5, upto: 2005 }], "nothing fanned out before the gap");
        let admitted = r.admit(None).unwrap().1;
        assert!(admitted.contains("\"seq\":5"), "a client admitted meanwhile is welcomed before the gap");
        let (h, f) = range(5, 1005);
        r.handle_range(h, f);
        let acts = drain(&mut r);
        assert_eq!(fanned(&acts).len(), 1);
        assert!(acts.contains(&RelayAction::ReadRange { after: 1005, upto: 2005 }), "the next page: {acts:?}");
        assert_eq!(r.cursor(), Some(1005));
        let (h, f) = range(1005, 2005);
        r.handle_range(h, f);
        let acts = drain(&mut r);
        assert_eq!(fanned(&acts).len(), 2, "the last page, then the delivery");
        assert!(acts.contains(&RelayAction::Answer { token: 7 }));
        assert_eq!(r.cursor(), Some(2006));
    }

    #[test]
    fn deliveries_waiting_behind_a_repair_are_bounded_in_bytes() {
        let mut r = joined(1, 5);
        r.handle_delivery(Some(1), head(10, 9, 9), Some(msgs(9..=9)));
        assert_eq!(drain(&mut r), vec![RelayAction::ReadRange { after: 5, upto: 8 }]);
        let big = "x".repeat(1 << 20);
        for token in 2..=4 {
            r.handle_delivery(Some(token), head(10 + token, 8 + token, 8 + token), Some(big.clone()));
            assert_eq!(drain(&mut r), vec![], "{token} waits");
        }
        r.handle_delivery(Some(5), head(15, 13, 13), Some(big.clone()));
        assert_eq!(drain(&mut r), vec![RelayAction::Answer { token: 5 }], "past 4 MiB: answered unapplied at once");
        r.handle_delivery(Some(6), head(15, 13, 13), Some("small".into()));
        assert_eq!(drain(&mut r), vec![], "a small one still fits");
    }

    #[test]
    fn a_failed_repair_moves_nothing_and_answers_unapplied() {
        let mut r = joined(1, 5);
        r.handle_delivery(Some(3), head(10, 9, 9), Some(msgs(9..=9)));
        drain(&mut r);
        r.handle_range_failed();
        let acts = drain(&mut r);
        assert_eq!(acts, vec![RelayAction::Answer { token: 3 }], "no fan-out past the gap");
        assert_eq!(r.cursor(), Some(5));
        assert_eq!(r.position().unwrap().ack, Some(LinkAck { inc: 9, link: 1, lsn: 0 }), "not acknowledged");
        // The Room sends it again; this time the read works.
        r.handle_delivery(Some(4), head(10, 9, 9), Some(msgs(9..=9)));
        assert_eq!(drain(&mut r), vec![RelayAction::ReadRange { after: 5, upto: 8 }]);
        let (h, f) = range(5, 8);
        r.handle_range(h, f);
        drain(&mut r);
        assert_eq!(r.cursor(), Some(9));
    }

    #[test]
    fn a_gap_no_longer_stored_is_announced_by_a_reset() {
        let mut r = joined(1, 5);
        r.handle_delivery(None, head(10, 20, 20), Some(msgs(20..=20)));
        drain(&mut r);
        let (h, f) = range(16, 19);
        r.handle_range(h, f);
        let out = fanned(&drain(&mut r));
        assert_eq!(out[0], serde_json::json!({"t":"reset","epoch":"e","seq":16}), "same epoch, next is 17");
        assert_eq!(out.len(), 3, "reset, 17..=19, then 20");
        assert_eq!((r.cursor(), r.report(1).resets), (Some(20), 1));
        // Everything gone: the read starts past the gap and holds nothing.
        r.handle_delivery(None, head(11, 30, 30), Some(msgs(30..=30)));
        drain(&mut r);
        let (h, f) = range(29, 29);
        r.handle_range(h, f);
        let out = fanned(&drain(&mut r));
        assert_eq!(out[0]["seq"], 29);
        assert_eq!(r.cursor(), Some(30));
    }

    #[test]
    fn a_sync_brings_the_relay_level_from_storage() {
        let mut r = joined(1, 5);
        let h = DeliveryHead { first: None, last: None, sync_to: Some(7), ..head(3, 1, 1) };
        r.handle_delivery(Some(1), h.clone(), None);
        assert_eq!(drain(&mut r), vec![RelayAction::ReadRange { after: 5, upto: 7 }]);
        let (rh, f) = range(5, 7);
        r.handle_range(rh, f);
        let acts = drain(&mut r);
        assert!(acts.contains(&RelayAction::Answer { token: 1 }));
        assert_eq!(r.cursor(), Some(7));
        // Already level: nothing to read.
        r.handle_delivery(Some(2), DeliveryHead { first_lsn: 4, last_lsn: 4, ..h }, None);
        assert_eq!(drain(&mut r).len(), 2, "saved and answered, nothing read");
    }

    #[test]
    fn epochs_move_forward_only() {
        let mut r = joined(1, 5);
        // The Room's own reset leads the delivery: no second reset.
        let reset = reset_frame("e2", 7);
        let h = DeliveryHead { epoch: "e2".into(), gen: 1, epoch_start: 7, reset: true, first: None, last: None, ..head(20, 1, 1) };
        r.handle_delivery(None, h, Some(reset));
        let out = fanned(&drain(&mut r));
        assert_eq!(out.len(), 1);
        assert_eq!((r.epoch(), r.cursor()), (Some("e2"), Some(7)));
        // A late delivery of the erased epoch is dropped.
        r.handle_delivery(None, head(15, 6, 6), Some(msgs(6..=6)));
        assert!(fanned(&drain(&mut r)).is_empty());
        // A relay that missed the reset announces it itself.
        let h = DeliveryHead { epoch: "e3".into(), gen: 2, epoch_start: 9, ..head(30, 10, 10) };
        r.handle_delivery(None, h, Some(msgs(10..=10)));
        let out = fanned(&drain(&mut r));
        assert_eq!(out[0], serde_json::json!({"t":"reset","epoch":"e3","seq":9}));
        assert_eq!(out[1]["seq"], 10);
    }

    #[test]
    fn admission_is_capped_per_relay_and_per_user_even_when_simultaneous() {
        let mut r = joined(0, 0);
        let (ana, bo) = (user_key(Some("ana"), None), user_key(None, Some("10.0.0.1")));
        assert!(r.reserve(&ana, 0, 3, 2).is_ok() && r.reserve(&ana, 0, 3, 2).is_ok(), "two at once, neither open yet");
        assert_eq!(r.reserve(&ana, 0, 3, 2).unwrap_err().code, ErrorCode::RateLimited, "a third for the same user");
        assert!(r.reserve(&bo, 0, 3, 2).is_ok(), "another user");
        assert_eq!(r.reserve("u:cy", 0, 3, 2).unwrap_err().code, ErrorCode::Overloaded, "three being admitted fill the relay");
        r.end_admission();
        r.user_left(&ana);
        assert!(r.reserve(&ana, 1, 4, 2).is_ok(), "a place freed: one open, two still being admitted");
        assert_eq!(bo, "ip:10.0.0.1");
    }

    #[test]
    fn reports_coalesce_and_publish_retries_are_bounded() {
        let mut r = joined(0, 0);
        assert!(r.want_report());
        assert!(!r.want_report());
        assert!(!r.want_report());
        assert!(r.report_done(), "one more for the changes meanwhile");
        assert!(!r.report_done());
        assert!(r.want_report());
        r.begin_admission();
        assert_eq!(r.join_report(2).connections, 3, "a client being admitted counts");
        r.end_admission();
        let (a, b) = (r.report(2), r.report(2));
        assert!((a.incarnation, a.report_seq) < (b.incarnation, b.report_seq), "reports are ordered");
        assert_ne!(r.next_batch_id(), r.next_batch_id());
        let delays: Vec<Option<u64>> = (1..=MAX_PUBLISH_ATTEMPTS).map(|a| r.publish_retry_delay(a)).collect();
        assert!(delays[..delays.len() - 1].iter().all(Option::is_some));
        assert_eq!(delays.last(), Some(&None), "then the publishers are told");
    }

    #[test]
    fn trims_batches() {
        let f = r#"[{"t":"msg","seq":3,"ts":1,"data":1,"from":null},{"t":"msg","eph":true,"ts":1,"data":2,"from":null},{"t":"msg","seq":4,"ts":1,"data":3,"from":null}]"#;
        let kept: serde_json::Value = serde_json::from_str(&trim_frame(f, 3, true).unwrap()).unwrap();
        assert_eq!(kept.as_array().unwrap().len(), 2);
        let replay: serde_json::Value = serde_json::from_str(&trim_frame(f, 2, false).unwrap()).unwrap();
        assert_eq!(replay.as_array().unwrap().len(), 2, "a replay drops ephemeral messages");
        assert_eq!(trim_frame(r#"{"t":"msg","seq":3,"ts":1,"data":1,"from":null}"#, 3, true), None);
        assert_eq!(trim_frame("garbage", 0, true), None);
        let with_reset = r#"[{"t":"reset","epoch":"e2","seq":4},{"t":"msg","seq":5,"ts":1,"data":1,"from":null}]"#;
        let kept: serde_json::Value = serde_json::from_str(&without_resets(with_reset).unwrap()).unwrap();
        assert_eq!(kept["seq"], 5, "the reset is gone, the message stays: {kept}");
        assert_eq!(without_resets(r#"{"t":"reset","epoch":"e2","seq":4}"#), None);
    }

    #[test]
    fn window_is_contiguous_and_bounded() {
        let f = |s: &str| s.to_string();
        let mut w: Window<String> = Window::default();
        w.push(1, 3, 100, f("a"));
        w.push(4, 4, 200, f("b"));
        assert_eq!(w.since(0, 0), Some(vec![(f("a"), None), (f("b"), None)]));
        assert_eq!(w.since(2, 0), Some(vec![(f("a"), Some(2)), (f("b"), None)]));
        assert_eq!(w.since(4, 0), Some(vec![]));
        assert_eq!(w.since(2, 150), None, "the frame holding 3 is past the TTL");
        assert_eq!(w.since(3, 150), Some(vec![(f("b"), None)]));
        w.push(9, 9, 300, f("gap"));
        assert_eq!(w.since(4, 0), None, "a hole restarts the window");
        assert_eq!(w.since(8, 0), Some(vec![(f("gap"), None)]));
        let mut big: Window<String> = Window::default();
        for s in 1..=RELAY_WINDOW_MESSAGES + 10 {
            big.push(s, s, 0, s.to_string());
        }
        assert_eq!(big.since(5, 0), None);
        assert_eq!(big.since(10, 0).map(|f| f.len()), Some(RELAY_WINDOW_MESSAGES as usize));
    }

    #[test]
    fn window_is_bounded_in_bytes() {
        let mut w: Window<String> = Window::default();
        let frame = "x".repeat(64 * 1024);
        for s in 1..=40 {
            w.push(s, s, 0, frame.clone());
        }
        assert_eq!(w.bytes(), 16 * frame.len(), "1 MiB of 64 KiB frames, not 40 of them");
        assert_eq!(w.since(24, 0).map(|f| f.len()), Some(16));
        assert_eq!(w.since(23, 0), None, "older frames were let go");
        w.set_max_bytes(10);
        w.push(41, 41, 0, frame.clone());
        assert_eq!(w.bytes(), frame.len(), "the newest frame is always kept");
    }

    #[test]
    fn resume_plans() {
        let mut r = joined(1, 10);
        r.handle_delivery(None, head(1, 11, 12), Some("f11".to_string()));
        drain(&mut r);
        assert_eq!(r.plan_resume("other", 12, 1_000), Resume::NotRecoverable);
        assert_eq!(r.plan_resume("e", 13, 1_000), Resume::NotRecoverable, "ahead of this relay");
        assert_eq!(r.plan_resume("e", 12, 1_000), Resume::Frames(vec![]));
        assert_eq!(r.plan_resume("e", 11, 1_000), Resume::Frames(vec![("f11".to_string(), Some(11))]));
        assert_eq!(r.plan_resume("e", 3, 1_000), Resume::FromRoom { after: 3, upto: 12 });
        r.set_retention(Retention { max_messages: 1, ttl_ms: 1_000_000, dedup_window_ms: 0 });
        assert_eq!(r.plan_resume("e", 10, 1_000), Resume::FromRoom { after: 10, upto: 12 }, "past the count bound");
        r.set_retention(Retention { max_messages: 100, ttl_ms: 500, dedup_window_ms: 0 });
        assert_eq!(r.plan_resume("e", 10, 1_600), Resume::FromRoom { after: 10, upto: 12 }, "past the TTL");
        r.resumed(true, false);
        r.resumed(true, true);
        r.resumed(false, false);
        let rep = r.report(1);
        assert_eq!((rep.recovered_from_relay, rep.recovered_from_room, rep.not_recovered), (1, 1, 1));
    }

    #[test]
    fn publish_rate_is_per_connection() {
        let mut r = joined(0, 0);
        r.set_publish_rate(1, 2);
        assert!(r.allow_publish("a", 0) && r.allow_publish("a", 0));
        assert!(!r.allow_publish("a", 0));
        assert!(r.allow_publish("b", 0), "another connection has its own bucket");
        assert!(r.allow_publish("a", 1000));
        r.closed("a");
        assert!(r.allow_publish("a", 1000) && r.allow_publish("a", 1000), "a new connection starts full");
    }

    #[test]
    fn strikes_are_per_connection() {
        let mut r = joined(0, 0);
        for i in 0..crate::abuse::MAX_STRIKES {
            assert_eq!(r.bad_frame("a", u64::from(i), ErrorCode::BadFrame), None);
        }
        assert_eq!(r.bad_frame("b", 20, ErrorCode::BadFrame), None);
        assert_eq!(r.bad_frame("a", 20, ErrorCode::TooLarge), Some(CloseCode::MessageTooBig));
    }
}

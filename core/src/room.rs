//! The Room: the primary that orders, stores and forwards a room's messages.
//!
//! Sans-IO, in the manner of quinn-proto: the Durable Object glue feeds
//! events in (`publish`, `report`, `delivered`) with the current time, and
//! drains [`RoomAction`]s out with [`RoomCore::poll_action`] until it returns
//! `None`. The core never touches storage, the network or the clock.
//!
//! Fan-out cost at the primary is per relay: each message is rendered to its
//! frame once, and each relay gets at most one delivery in flight. Messages
//! that arrive while a delivery is in flight ride together in the next one,
//! so a burst becomes a few batch frames instead of many small ones.

use crate::config::Retention;
use crate::history::{History, Prune, MIN_ALARM_GAP_MS};
use crate::link::{JoinReply, LinkPub, PubOutcome, RelayReport};
use crate::region::Region;
use crate::server_frame::{batch_frame, reset_frame, Message};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

/// Most messages in one delivery (and so in one client batch frame), by
/// default; `HERALD_MAX_BATCH` sets it (1 turns batching off, for measuring
/// what batching buys).
pub const MAX_BATCH_MESSAGES: usize = 256;
/// Most bytes of message frames in one delivery; a single larger message
/// still goes alone.
pub const MAX_BATCH_BYTES: usize = 512 * 1024;
/// Messages held for a relay that is not keeping up. Past this the oldest
/// are dropped; the relay sees the seq gap and repairs it from storage.
pub const MAX_RELAY_QUEUE: usize = 8192;
/// Consecutive failed deliveries after which a relay is dropped from the
/// room until it reports again.
pub const MAX_DELIVERY_FAILURES: u32 = 3;

/// What the Room persisted, read back when the object is constructed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub epoch: String,
    pub seq: u64,
    pub relays: Vec<(Region, u32)>,
    /// (seq, ts) of the stored messages, in seq order.
    pub index: Vec<(u64, u64)>,
    /// Remembered `mid`s as (mid, seq, ts).
    pub mids: Vec<(String, u64, u64)>,
}

/// Work for the glue to carry out, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomAction {
    /// Persist the room's identity (first construction only).
    SaveMeta { epoch: String, seq: u64 },
    /// Persist a message; its seq is now the room's last seq.
    Store(Message),
    /// Replace the persisted table of active relays.
    SaveRelays(Vec<(Region, u32)>),
    /// Send a delivery; report its result with [`RoomCore::delivered`].
    Deliver(Delivery),
    /// Delete rows past retention.
    Prune(Prune),
    /// Schedule the object's alarm; call [`RoomCore::alarm`] when it fires.
    SetAlarm(u64),
    /// Delete every stored message and remembered `mid` (erasure).
    EraseAll,
}

/// Which stored messages a read returns: `after < seq <= upto`, at most
/// `limit`, in seq order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPlan {
    pub after: u64,
    pub upto: u64,
    pub limit: u64,
}

/// One frame for one relay.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub region: Region,
    pub epoch: String,
    /// First and last stored seq in the frame; `None` when it carries only
    /// ephemeral messages.
    pub first: Option<u64>,
    pub last: Option<u64>,
    /// The stamp of the first stored message, for the relay's window.
    pub first_ts: Option<u64>,
    /// The client frame, shared by every relay that gets the same batch.
    pub frame: Rc<str>,
}

#[derive(Debug)]
struct Queued {
    /// Position in the room's stream of rendered messages (ephemeral
    /// included); consecutive in every relay queue, so a (first, last) pair
    /// names a batch's content exactly.
    uid: u64,
    seq: Option<u64>,
    ts: u64,
    frame: String,
}

#[derive(Debug)]
struct RelayLink {
    report: RelayReport,
    queue: VecDeque<Rc<Queued>>,
    /// The batch being delivered, kept so a failure can put it back.
    in_flight: Option<Vec<Rc<Queued>>>,
    failures: u32,
}

impl RelayLink {
    fn new(report: RelayReport) -> Self {
        RelayLink { report, queue: VecDeque::new(), in_flight: None, failures: 0 }
    }

    /// A relay with no clients and nothing pending can be forgotten.
    fn idle(&self) -> bool {
        self.report.connections == 0 && self.queue.is_empty() && self.in_flight.is_none()
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
    pub relay_sends: u64,
    pub wakeups: Wakeups,
    /// Stored message rows not yet deleted by the retention alarm.
    pub stored: u64,
    /// Resumes across all relays, as last reported, by how they were served.
    pub resumes: Resumes,
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
    pub relays: BTreeMap<Region, u64>,
}

/// The Room's state machine.
#[derive(Debug)]
pub struct RoomCore {
    room: String,
    epoch: String,
    seq: u64,
    relays: BTreeMap<Region, RelayLink>,
    actions: VecDeque<RoomAction>,
    primary_sends: u64,
    reply_deliveries: u64,
    next_uid: u64,
    /// The last batch frame rendered, keyed by its (first, last) uid, so
    /// relays that are level share one rendering.
    batch_cache: Option<(u64, u64, Rc<str>)>,
    history: History,
    /// When the alarm is set for, as far as this object knows.
    alarm_at: Option<u64>,
    max_batch: usize,
}

impl RoomCore {
    /// Builds the room from what storage held, or as a new room with
    /// `fresh_epoch` (which is then queued for saving).
    pub fn new(
        room: impl Into<String>,
        restored: Option<Restored>,
        fresh_epoch: String,
        retention: Retention,
    ) -> Self {
        let mut core = RoomCore {
            room: room.into(),
            epoch: fresh_epoch,
            seq: 0,
            relays: BTreeMap::new(),
            actions: VecDeque::new(),
            primary_sends: 0,
            reply_deliveries: 0,
            next_uid: 0,
            batch_cache: None,
            history: History::new(retention, Vec::new(), Vec::new()),
            alarm_at: None,
            max_batch: MAX_BATCH_MESSAGES,
        };
        match restored {
            Some(r) => {
                core.epoch = r.epoch;
                core.seq = r.seq;
                for (region, connections) in r.relays {
                    let report = RelayReport { region, connections, ..RelayReport::new(region) };
                    core.relays.insert(region, RelayLink::new(report));
                }
                core.history = History::new(retention, r.index, r.mids);
            }
            None => core.actions.push_back(RoomAction::SaveMeta {
                epoch: core.epoch.clone(),
                seq: 0,
            }),
        }
        core
    }

    /// Sets the most messages per delivery (at least 1).
    pub fn set_max_batch(&mut self, messages: usize) {
        self.max_batch = messages.max(1);
    }

    pub fn room(&self) -> &str {
        &self.room
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The last assigned seq (0 when none).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Orders one message at `now_ms`: assigns its seq (unless ephemeral),
    /// queues it for storage and for every active relay.
    ///
    /// A stored publish whose `mid` the room saw within the dedup window is
    /// not stored or delivered again: it is answered with the original seq.
    pub fn publish(&mut self, now_ms: u64, p: LinkPub) -> PubOutcome {
        if let (false, Some(mid)) = (p.eph, p.mid.as_deref()) {
            if let Some(seen) = self.history.seen(now_ms, mid) {
                return PubOutcome { seq: Some(seen.seq), ts: seen.ts };
            }
        }
        let seq = if p.eph {
            None
        } else {
            self.seq += 1;
            Some(self.seq)
        };
        let message = Message { seq, ts: now_ms, from: p.from, mid: p.mid, data: p.data };
        let queued = Rc::new(Queued { uid: self.next_uid, seq, ts: now_ms, frame: message.to_frame() });
        self.next_uid += 1;
        if let Some(seq) = seq {
            self.history.record(seq, now_ms, message.mid.as_deref());
            self.actions.push_back(RoomAction::Store(message));
            self.schedule_alarm(now_ms, 0);
        }
        self.enqueue(queued);
        PubOutcome { seq, ts: now_ms }
    }

    fn enqueue(&mut self, queued: Rc<Queued>) {
        for link in self.relays.values_mut() {
            if link.queue.len() >= MAX_RELAY_QUEUE {
                link.queue.pop_front();
            }
            link.queue.push_back(Rc::clone(&queued));
        }
    }

    /// Sets the alarm for the next prune, unless one is already set earlier.
    fn schedule_alarm(&mut self, now_ms: u64, min_gap: u64) {
        let Some(due) = self.history.next_deadline(now_ms) else { return };
        let due = due.max(now_ms + min_gap);
        if self.alarm_at.is_none_or(|at| due < at) {
            self.alarm_at = Some(due);
            self.actions.push_back(RoomAction::SetAlarm(due));
        }
    }

    /// The alarm fired: prune what retention no longer allows, then set the
    /// next alarm.
    pub fn alarm(&mut self, now_ms: u64) {
        self.alarm_at = None;
        if let Some(prune) = self.history.prune(now_ms, self.seq) {
            self.actions.push_back(RoomAction::Prune(prune));
        }
        self.schedule_alarm(now_ms, MIN_ALARM_GAP_MS);
    }

    /// Erases the history and starts a new epoch. `seq` keeps counting and is
    /// never reused; connected clients receive a `reset` frame.
    pub fn erase(&mut self, fresh_epoch: String) -> JoinReply {
        self.epoch = fresh_epoch;
        self.history.clear();
        self.actions.push_back(RoomAction::EraseAll);
        self.actions.push_back(RoomAction::SaveMeta { epoch: self.epoch.clone(), seq: self.seq });
        let frame = reset_frame(&self.epoch, self.seq);
        let queued = Rc::new(Queued { uid: self.next_uid, seq: None, ts: 0, frame });
        self.next_uid += 1;
        self.enqueue(queued);
        JoinReply { epoch: self.epoch.clone(), seq: self.seq, delivered: self.seq }
    }

    /// What a history read returns for `since` and `limit` at `now`:
    /// messages past retention are skipped even if not yet deleted.
    pub fn read(&self, now_ms: u64, since: u64, limit: u64) -> ReadPlan {
        let oldest = self.history.oldest_visible(now_ms, self.seq);
        ReadPlan { after: since.max(oldest.saturating_sub(1)), upto: self.seq, limit }
    }

    /// Whether a client of `epoch` that has seen up to `since` can be given
    /// exactly the messages after it.
    pub fn recoverable(&self, now_ms: u64, epoch: &str, since: u64) -> bool {
        epoch == self.epoch && self.history.covers(now_ms, self.seq, since)
    }

    /// A relay reported itself (on join, on a change in its connections, or
    /// with a publish). Returns what it needs to welcome clients.
    pub fn report(&mut self, report: RelayReport) -> JoinReply {
        self.apply_report(report);
        let pending_from = self.relays.get(&report.region).and_then(|link| {
            let in_flight = link.in_flight.iter().flatten();
            in_flight.chain(link.queue.iter()).find_map(|q| q.seq)
        });
        JoinReply {
            epoch: self.epoch.clone(),
            seq: self.seq,
            delivered: pending_from.map_or(self.seq, |first| first - 1),
        }
    }

    /// The result of a [`RoomAction::Deliver`]: the relay's report, or `Err`
    /// when the call failed.
    pub fn delivered(&mut self, region: Region, result: Result<RelayReport, ()>) {
        let Some(link) = self.relays.get_mut(&region) else { return };
        let batch = link.in_flight.take();
        match result {
            Ok(report) => {
                link.failures = 0;
                self.apply_report(report);
            }
            Err(()) => {
                link.failures += 1;
                if link.failures >= MAX_DELIVERY_FAILURES {
                    self.relays.remove(&region);
                    self.save_relays();
                } else if let Some(batch) = batch {
                    for q in batch.into_iter().rev() {
                        link.queue.push_front(q);
                    }
                }
            }
        }
    }

    fn apply_report(&mut self, report: RelayReport) {
        let before = self.relays.get(&report.region).map(|l| l.report.connections);
        let link = self
            .relays
            .entry(report.region)
            .or_insert_with(|| RelayLink::new(report));
        link.report = report;
        let idle = link.idle();
        if idle {
            self.relays.remove(&report.region);
        }
        let after = (!idle).then_some(report.connections);
        if before != after {
            self.save_relays();
        }
    }

    fn save_relays(&mut self) {
        let table = self
            .relays
            .iter()
            .map(|(region, link)| (*region, link.report.connections))
            .collect();
        self.actions.push_back(RoomAction::SaveRelays(table));
    }

    /// A delivery for `region` to ride in the answer to that relay's own
    /// publish call, when nothing is in flight to it and messages wait.
    ///
    /// It saves the relay → room → relay path one of its two calls, which
    /// is most of a small room's cost per message. It counts as done when
    /// the answer leaves: the answer is held until the messages are stored,
    /// and if it is lost, the relay's next delivery starts past its cursor and
    /// the relay repairs the gap from storage, as after any lost delivery.
    /// Call it before draining [`RoomCore::poll_action`], or the queue may
    /// already be on its way in a call.
    pub fn reply_delivery(&mut self, region: Region) -> Option<Delivery> {
        if !self.relays.get(&region).is_some_and(|l| l.in_flight.is_none() && !l.queue.is_empty()) {
            return None;
        }
        let delivery = self.start_delivery(region)?;
        if let Some(link) = self.relays.get_mut(&region) {
            link.in_flight = None;
        }
        self.reply_deliveries += 1;
        Some(delivery)
    }

    /// The next thing to do, or `None` when the room is quiescent.
    pub fn poll_action(&mut self) -> Option<RoomAction> {
        if let Some(action) = self.actions.pop_front() {
            return Some(action);
        }
        let region = self
            .relays
            .iter()
            .find(|(_, l)| l.in_flight.is_none() && !l.queue.is_empty())
            .map(|(r, _)| *r)?;
        self.start_delivery(region).map(RoomAction::Deliver)
    }

    fn start_delivery(&mut self, region: Region) -> Option<Delivery> {
        let max_batch = self.max_batch;
        let link = self.relays.get_mut(&region)?;
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(front) = link.queue.front() {
            let fits = batch.is_empty()
                || (batch.len() < max_batch && bytes + front.frame.len() <= MAX_BATCH_BYTES);
            if !fits {
                break;
            }
            bytes += front.frame.len();
            if let Some(q) = link.queue.pop_front() {
                batch.push(q);
            }
        }
        let (first_uid, last_uid) = (batch.first()?.uid, batch.last()?.uid);
        let first = batch.iter().find_map(|q| q.seq);
        let first_ts = batch.iter().find(|q| q.seq.is_some()).map(|q| q.ts);
        let last = batch.iter().rev().find_map(|q| q.seq);
        let frame = match &self.batch_cache {
            Some((f, l, frame)) if (*f, *l) == (first_uid, last_uid) => Rc::clone(frame),
            _ => {
                let frames: Vec<&str> = batch.iter().map(|q| q.frame.as_str()).collect();
                let frame: Rc<str> = Rc::from(batch_frame(&frames));
                self.batch_cache = Some((first_uid, last_uid, Rc::clone(&frame)));
                frame
            }
        };
        link.in_flight = Some(batch);
        self.primary_sends += 1;
        Some(Delivery { region, epoch: self.epoch.clone(), first, last, first_ts, frame })
    }

    /// The counters; `room_wakeups` comes from the glue's construction count.
    pub fn stats(&self, room_wakeups: u64) -> RoomStats {
        let relays: Vec<RelayReport> = self.relays.values().map(|l| l.report).collect();
        RoomStats {
            room: self.room.clone(),
            seq: self.seq,
            epoch: self.epoch.clone(),
            connections: relays.iter().map(|r| u64::from(r.connections)).sum(),
            relay_sends: relays.iter().map(|r| r.relay_sends).sum(),
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn pub_(data: &str) -> LinkPub {
        LinkPub { from: None, data: RawValue::from_string(data.into()).unwrap(), mid: None, eph: false }
    }

    fn report(region: Region, connections: u32) -> RelayReport {
        RelayReport { connections, wakeups: 1, ..RelayReport::new(region) }
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

    #[test]
    fn new_room_saves_its_epoch_and_restored_room_does_not() {
        let mut fresh = RoomCore::new("r", None, "e1".into(), Retention::default());
        assert_eq!(drain(&mut fresh), vec![RoomAction::SaveMeta { epoch: "e1".into(), seq: 0 }]);
        let restored = Restored {
            epoch: "e0".into(),
            seq: 41,
            relays: vec![(Region::Weur, 2)],
            index: vec![(41, 1)],
            mids: vec![("m".into(), 41, 1)],
        };
        let mut old = RoomCore::new("r", Some(restored), "e2".into(), Retention::default());
        assert!(drain(&mut old).is_empty());
        let dup = LinkPub { mid: Some("m".into()), ..pub_("9") };
        assert_eq!(old.publish(2, dup), PubOutcome { seq: Some(41), ts: 1 }, "mid remembered across restart");
        assert_eq!((old.epoch(), old.seq()), ("e0", 41));
        assert_eq!(old.publish(5, pub_("1")).seq, Some(42));
    }

    #[test]
    fn one_delivery_per_relay_and_batches_while_in_flight() {
        let mut core = RoomCore::new("r", None, "e".into(), Retention::default());
        drain(&mut core);
        core.report(report(Region::Weur, 3));
        core.report(report(Region::Apac, 1));
        drain(&mut core);

        assert_eq!(core.publish(10, pub_("1")).seq, Some(1));
        let acts = drain(&mut core);
        assert!(matches!(acts[0], RoomAction::Store(ref m) if m.seq == Some(1)));
        let ds = deliveries(&acts);
        assert_eq!(ds.len(), 2, "one delivery per relay");
        assert!(Rc::ptr_eq(&ds[0].frame, &ds[1].frame), "rendered once, shared");
        assert_eq!(core.stats(1).primary_sends, 2);

        // While both are in flight, three more messages queue up.
        for d in ["2", "3", "4"] {
            core.publish(11, pub_(d));
        }
        assert!(deliveries(&drain(&mut core)).is_empty());
        core.delivered(Region::Weur, Ok(report(Region::Weur, 3)));
        core.delivered(Region::Apac, Ok(report(Region::Apac, 1)));
        let acts = drain(&mut core);
        let ds = deliveries(&acts);
        assert_eq!(ds.len(), 2);
        assert_eq!((ds[0].first, ds[0].last), (Some(2), Some(4)));
        let v: serde_json::Value = serde_json::from_str(&ds[0].frame).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 3);
        assert_eq!(core.stats(1).primary_sends, 4);
    }

    #[test]
    fn the_publishing_relay_gets_its_delivery_in_the_answer() {
        let mut core = RoomCore::new("r", None, "e".into(), Retention::default());
        core.report(report(Region::Weur, 2));
        core.report(report(Region::Apac, 1));
        drain(&mut core);
        core.publish(10, pub_("1"));
        core.publish(10, pub_("2"));
        let d = core.reply_delivery(Region::Weur).expect("weur had messages waiting");
        assert_eq!((d.first, d.last, d.region), (Some(1), Some(2), Region::Weur));
        let acts = drain(&mut core);
        let ds = deliveries(&acts);
        assert_eq!(ds.len(), 1, "only apac gets a call");
        assert_eq!(ds[0].region, Region::Apac);
        assert!(Rc::ptr_eq(&ds[0].frame, &d.frame), "one rendering for both");
        assert_eq!((core.stats(1).primary_sends, core.stats(1).reply_deliveries), (2, 1));
        assert!(core.reply_delivery(Region::Weur).is_none(), "nothing left for weur");
        assert!(core.reply_delivery(Region::Apac).is_none(), "apac has one in flight");

        // Done when the answer left: the next message goes out at once.
        core.publish(11, pub_("3"));
        let acts = drain(&mut core);
        let ds = deliveries(&acts);
        assert_eq!(ds.len(), 1);
        assert_eq!((ds[0].region, ds[0].first), (Region::Weur, Some(3)));
        assert!(core.reply_delivery(Region::Oc).is_none(), "an unknown relay gets nothing");
    }

    #[test]
    fn ephemeral_messages_are_delivered_not_stored() {
        let mut core = RoomCore::new("r", None, "e".into(), Retention::default());
        core.report(report(Region::Oc, 1));
        drain(&mut core);
        let mut p = pub_("{}");
        p.eph = true;
        assert_eq!(core.publish(7, p).seq, None);
        let acts = drain(&mut core);
        assert!(!acts.iter().any(|a| matches!(a, RoomAction::Store(_))));
        let ds = deliveries(&acts);
        assert_eq!((ds[0].first, ds[0].last), (None, None));
        assert!(ds[0].frame.contains("\"eph\":true"));
        assert_eq!(core.seq(), 0);
    }

    #[test]
    fn failed_delivery_is_retried_then_the_relay_dropped() {
        let mut core = RoomCore::new("r", None, "e".into(), Retention::default());
        core.report(report(Region::Me, 1));
        core.publish(1, pub_("1"));
        drain(&mut core);
        core.delivered(Region::Me, Err(()));
        let ds = drain(&mut core);
        assert_eq!(deliveries(&ds)[0].first, Some(1), "retried");
        core.delivered(Region::Me, Err(()));
        drain(&mut core);
        core.delivered(Region::Me, Err(()));
        let acts = drain(&mut core);
        assert!(acts.contains(&RoomAction::SaveRelays(vec![])));
        assert!(core.stats(0).relays.is_empty());
    }

    #[test]
    fn relay_with_no_connections_is_forgotten_once_drained() {
        let mut core = RoomCore::new("r", None, "e".into(), Retention::default());
        core.report(report(Region::Sam, 1));
        core.publish(1, pub_("1"));
        drain(&mut core);
        core.report(report(Region::Sam, 0));
        assert_eq!(core.stats(0).relays.len(), 1, "kept while a delivery is in flight");
        core.delivered(Region::Sam, Ok(report(Region::Sam, 0)));
        assert!(core.stats(0).relays.is_empty());
    }

    #[test]
    fn max_batch_one_sends_messages_singly() {
        let mut core = RoomCore::new("r", None, "e".into(), Retention::default());
        core.set_max_batch(1);
        core.report(report(Region::Afr, 1));
        for i in 0..3 {
            core.publish(1, pub_(&i.to_string()));
        }
        let acts = drain(&mut core);
        let d = deliveries(&acts)[0];
        assert_eq!((d.first, d.last), (Some(1), Some(1)));
        assert!(d.frame.starts_with('{'), "a lone message is not wrapped in an array");
    }

    #[test]
    fn big_bursts_split_into_bounded_batches() {
        let mut core = RoomCore::new("r", None, "e".into(), Retention::default());
        core.report(report(Region::Afr, 1));
        for i in 0..(MAX_BATCH_MESSAGES + 10) {
            core.publish(1, pub_(&i.to_string()));
        }
        let acts = drain(&mut core);
        let d = deliveries(&acts)[0].clone();
        assert_eq!((d.first, d.last), (Some(1), Some(MAX_BATCH_MESSAGES as u64)));
        core.delivered(Region::Afr, Ok(report(Region::Afr, 1)));
        let acts = drain(&mut core);
        let d = deliveries(&acts)[0];
        assert_eq!(d.first, Some(MAX_BATCH_MESSAGES as u64 + 1));
    }

    #[test]
    fn join_reply_says_what_is_still_in_flight() {
        let mut core = RoomCore::new("r", None, "e".into(), Retention::default());
        core.report(report(Region::Weur, 1));
        core.publish(1, pub_("1"));
        drain(&mut core);
        core.publish(1, pub_("2"));
        let reply = core.report(report(Region::Weur, 1));
        assert_eq!((reply.seq, reply.delivered), (2, 0), "1 in flight, 2 queued");
        core.delivered(Region::Weur, Ok(report(Region::Weur, 1)));
        drain(&mut core);
        assert_eq!(core.report(report(Region::Weur, 1)).delivered, 1);
        assert_eq!(core.report(report(Region::Apac, 1)).delivered, 2, "a new relay starts level");
    }

    fn stored(actions: &[RoomAction]) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| if let RoomAction::Store(m) = a { m.seq } else { None })
            .collect()
    }

    #[test]
    fn duplicate_mid_is_answered_with_the_original_seq() {
        let mut core = RoomCore::new("r", None, "e".into(), Retention::default());
        core.report(report(Region::Weur, 1));
        drain(&mut core);
        let first = core.publish(10, LinkPub { mid: Some("x".into()), ..pub_("1") });
        let acts = drain(&mut core);
        assert_eq!(stored(&acts), vec![1]);
        let again = core.publish(20, LinkPub { mid: Some("x".into()), ..pub_("2") });
        assert_eq!(again, first);
        assert!(drain(&mut core).is_empty(), "not stored or delivered again");
        let window = Retention::default().dedup_window_ms;
        let late = core.publish(10 + window, LinkPub { mid: Some("x".into()), ..pub_("3") });
        assert_eq!(late.seq, Some(2), "outside the window it is a new message");
    }

    #[test]
    fn alarm_prunes_and_reschedules() {
        let retention = Retention { max_messages: 2, ttl_ms: 10_000, dedup_window_ms: 0 };
        let mut core = RoomCore::new("r", None, "e".into(), retention);
        drain(&mut core);
        core.publish(1_000, pub_("1"));
        let acts = drain(&mut core);
        assert!(acts.contains(&RoomAction::SetAlarm(11_000)), "{acts:?}");
        for i in 0..2 {
            core.publish(2_000 + i, pub_("0"));
        }
        assert!(!drain(&mut core).iter().any(|a| matches!(a, RoomAction::SetAlarm(_))), "already set");
        core.publish(2_002, pub_("0"));
        assert!(drain(&mut core).contains(&RoomAction::SetAlarm(2_002)), "over the count bound: due now");
        assert_eq!(core.read(2_500, 0, 100), ReadPlan { after: 2, upto: 4, limit: 100 });
        assert!(core.recoverable(2_500, "e", 2));
        assert!(!core.recoverable(2_500, "e", 1));
        assert!(!core.recoverable(2_500, "other", 3));
        core.alarm(3_000);
        let acts = drain(&mut core);
        assert!(acts.contains(&RoomAction::Prune(Prune { upto_seq: 2, mids_before_ts: 3_000 })), "{acts:?}");
        assert!(acts.contains(&RoomAction::SetAlarm(12_001)), "{acts:?}");
    }

    #[test]
    fn erase_starts_a_new_epoch_and_resets_relays() {
        let mut core = RoomCore::new("r", None, "e1".into(), Retention::default());
        core.report(report(Region::Apac, 2));
        core.publish(1, pub_("1"));
        drain(&mut core);
        core.delivered(Region::Apac, Ok(report(Region::Apac, 2)));
        let reply = core.erase("e2".into());
        assert_eq!((reply.epoch.as_str(), reply.seq), ("e2", 1));
        let acts = drain(&mut core);
        assert_eq!(acts[0], RoomAction::EraseAll);
        assert_eq!(acts[1], RoomAction::SaveMeta { epoch: "e2".into(), seq: 1 });
        let d = deliveries(&acts)[0];
        assert_eq!(d.epoch, "e2");
        let v: serde_json::Value = serde_json::from_str(&d.frame).unwrap();
        assert_eq!(v, serde_json::json!({"t":"reset","epoch":"e2","seq":1}));
        assert_eq!(core.publish(2, pub_("2")).seq, Some(2), "seq is never reused");
        assert!(!core.recoverable(3, "e1", 1));
        assert!(core.recoverable(3, "e2", 1));
    }

    #[test]
    fn stats_sum_relays() {
        let mut core = RoomCore::new("r", None, "e".into(), Retention::default());
        core.report(RelayReport { connections: 2, relay_sends: 5, wakeups: 2, ..RelayReport::new(Region::Weur) });
        core.report(RelayReport { connections: 3, relay_sends: 7, wakeups: 1, ..RelayReport::new(Region::Enam) });
        let s = core.stats(4);
        assert_eq!((s.connections, s.relay_sends, s.wakeups.room), (5, 12, 4));
        assert_eq!(s.wakeups.relays[&Region::Weur], 2);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["relays"][0]["region"], "enam", "ordered by region");
        assert_eq!(json["wakeups"]["relays"]["enam"], 1);
    }
}

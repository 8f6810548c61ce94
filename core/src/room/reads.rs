//! The Room's side of read marks and unread counts.
//!
//! A user's *read mark* is the last seq they have read, one per user in the
//! room (every connection and device of the user shares it). It only moves
//! forward: a `read` below the mark changes nothing, and one above the
//! room's last seq is clamped to it (nobody can have read a message that
//! does not exist yet). Seqs are never reused, erasures included, so a mark
//! keeps its meaning across an erasure.
//!
//! The marks live in storage only (`reads`, one row per user who ever
//! sent a `read`): the glue reads the user's stored mark and passes it in,
//! so the core holds no table that grows with readers. When a mark moves,
//! the new mark goes to every relay as a link item, acknowledged and
//! redelivered like a message, never batched with other kinds; each relay
//! tells that user's connections (`{"t":"read","seq":N}`).
//!
//! A user's *unread count* is the number of stored messages after their
//! mark (after 0 when they have none) that others published, within
//! retention: messages past `HERALD_HISTORY_MAX` or `HERALD_HISTORY_TTL_S`
//! do not count, even before their rows are deleted. The core says which
//! seqs to count ([`CountPlan`]); the glue counts rows.
//!
//! Rooms that never use read marks pay nothing: until the first mark is
//! stored (`reads_used`), relays are told (in join answers and delivery
//! heads) not to ask for unread counts when they welcome clients.

use super::{Kind, Queued, RoomAction, RoomCore};
use crate::error::to_json;
use crate::link::{MarkItem, ReadReply};
use std::rc::Rc;

/// Which stored messages an unread count covers: those with
/// `after < seq <= upto` not published by the user. Empty when
/// `upto <= after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountPlan {
    pub after: u64,
    pub upto: u64,
}

impl CountPlan {
    /// Nothing to count: the answer is 0 without a query.
    pub fn is_empty(&self) -> bool {
        self.upto <= self.after
    }
}

impl RoomCore {
    /// Whether storage holds any read mark (read back when the object is
    /// constructed; a mark is never deleted, erasure included).
    pub fn set_reads_used(&mut self, used: bool) {
        self.reads_used = used;
    }

    /// Whether any user has a read mark in this room.
    pub fn reads_used(&self) -> bool {
        self.reads_used
    }

    /// `user` read up to `seq` at `now_ms`; `stored` is their mark as storage
    /// holds it (0 when none). A higher mark is saved and sent to every
    /// relay for the user's connections; a lower or equal one changes
    /// nothing. A `seq` past the room's last one is clamped to it.
    pub fn mark_read(&mut self, now_ms: u64, user: &str, stored: u64, seq: u64) -> ReadReply {
        self.now = now_ms;
        let target = seq.min(self.meta.seq);
        if target <= stored {
            return ReadReply { read: stored, moved: false };
        }
        self.reads_used = true;
        self.actions.push_back(RoomAction::SaveRead { user: user.to_owned(), seq: target });
        let frame = to_json(&MarkItem { user: user.to_owned(), seq: target });
        let uid = self.take_uid();
        let queued = Rc::new(Queued { uid, kind: Kind::Read, seq: None, ts: now_ms, frame });
        self.enqueue(&queued);
        self.schedule_alarm(0);
        ReadReply { read: target, moved: true }
    }

    /// What to count for a user whose mark is `mark`, at `now_ms`, up to
    /// `upto` (a relay's cursor when it welcomes the user), or up to the
    /// room's last seq. Messages past retention are left out.
    pub fn unread_plan(&self, now_ms: u64, mark: u64, upto: Option<u64>) -> CountPlan {
        let last = self.meta.seq;
        let oldest = self.history.oldest_visible(now_ms, last);
        let after = mark.max(oldest.saturating_sub(1));
        let upto = upto.map_or(last, |u| u.min(last));
        CountPlan { after, upto: upto.max(after) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Retention;
    use crate::link::{LinkPub, RelayReport};
    use crate::region::Region;
    use crate::room::Delivery;
    use serde_json::value::RawValue;

    fn room(retention: Retention) -> RoomCore {
        let mut core = RoomCore::new("r", None, "e".into(), retention, 7);
        for region in [Region::Weur, Region::Apac] {
            core.report(0, RelayReport { connections: 1, ..RelayReport::new(region) });
        }
        drain(&mut core);
        core
    }

    fn drain(core: &mut RoomCore) -> Vec<RoomAction> {
        std::iter::from_fn(|| core.poll_action()).collect()
    }

    fn publish(core: &mut RoomCore, now: u64, from: &str) -> u64 {
        let p = LinkPub { from: Some(from.into()), data: RawValue::from_string("1".into()).unwrap(), mid: None, eph: false };
        core.publish(now, p).seq.unwrap()
    }

    fn deliveries(actions: &[RoomAction]) -> Vec<&Delivery> {
        actions.iter().filter_map(|a| if let RoomAction::Deliver(d) = a { Some(d) } else { None }).collect()
    }

    /// Answers every delivery as applied, so the next ones go.
    fn ack_all(core: &mut RoomCore, actions: &[RoomAction], now: u64) {
        use crate::link::{LinkAck, RelayPosition};
        for d in deliveries(actions) {
            let ack = LinkAck { inc: d.head.inc, link: d.head.link, lsn: d.head.last_lsn };
            let position = RelayPosition { gen: 0, cursor: core.seq(), ack: Some(ack) };
            let report = RelayReport { connections: 1, position: Some(position), report_seq: now + d.head.last_lsn, ..RelayReport::new(d.region) };
            core.delivered(now, d.region, Ok(Some(report)));
        }
    }

    #[test]
    fn a_mark_moves_forward_only_is_clamped_and_goes_to_every_relay() {
        let mut core = room(Retention::default());
        assert!(!core.reads_used());
        assert!(!core.report(1, RelayReport { connections: 1, report_seq: 1, ..RelayReport::new(Region::Weur) }).reads);
        for _ in 0..5 {
            publish(&mut core, 10, "bo");
        }
        let acts = drain(&mut core);
        assert!(deliveries(&acts).iter().all(|d| !d.head.reads && !d.head.read_marks), "no marks yet: relays are told not to ask");
        ack_all(&mut core, &acts, 11);
        drain(&mut core);

        assert_eq!(core.mark_read(20, "ana", 0, 3), ReadReply { read: 3, moved: true });
        let acts = drain(&mut core);
        assert_eq!(acts[0], RoomAction::SaveRead { user: "ana".into(), seq: 3 }, "saved before it goes out");
        let ds = deliveries(&acts);
        assert_eq!(ds.len(), 2, "one item per relay: {acts:?}");
        for d in &ds {
            assert!(d.head.read_marks && d.head.reads, "{:?}", d.head);
            assert_eq!((d.head.first, d.head.last), (None, None), "no stored seq: the relay's cursor does not move");
            let item: MarkItem = serde_json::from_str(&d.frame).unwrap();
            assert_eq!(item, MarkItem { user: "ana".into(), seq: 3 });
        }
        assert!(core.reads_used());
        assert!(core.report(21, RelayReport { connections: 1, report_seq: 2, ..RelayReport::new(Region::Weur) }).reads, "joins learn it too");
        ack_all(&mut core, &acts, 21);
        drain(&mut core);

        assert_eq!(core.mark_read(30, "ana", 3, 1), ReadReply { read: 3, moved: false }, "a lower mark does not move it back");
        assert_eq!(core.mark_read(30, "ana", 3, 3), ReadReply { read: 3, moved: false });
        assert!(drain(&mut core).is_empty(), "nothing saved or sent");
        assert_eq!(core.mark_read(31, "ana", 3, 99), ReadReply { read: 5, moved: true }, "clamped to the room's last seq");
        let acts = drain(&mut core);
        assert!(acts.contains(&RoomAction::SaveRead { user: "ana".into(), seq: 5 }));
        ack_all(&mut core, &acts, 32);
        drain(&mut core);

        // Messages after a mark carry the flag, and never share a frame with marks.
        publish(&mut core, 40, "bo");
        core.mark_read(40, "cy", 0, 6);
        let acts = drain(&mut core);
        let ds = deliveries(&acts);
        assert!(ds.iter().all(|d| d.head.reads && !d.head.read_marks && d.head.first == Some(6)), "{ds:?}");
        ack_all(&mut core, &acts, 41);
        let ds: Vec<Delivery> = deliveries(&drain(&mut core)).into_iter().cloned().collect();
        assert!(ds.iter().all(|d| d.head.read_marks && d.head.first.is_none()), "{ds:?}");
    }

    #[test]
    fn marks_batch_together_and_are_sent_again_until_acknowledged() {
        let mut core = room(Retention::default());
        publish(&mut core, 1, "bo");
        publish(&mut core, 1, "bo");
        let acts = drain(&mut core);
        core.mark_read(2, "ana", 0, 1);
        core.mark_read(2, "cy", 0, 2);
        core.mark_read(2, "ana", 1, 2);
        assert!(deliveries(&drain(&mut core)).is_empty(), "a call is in flight to each relay");
        ack_all(&mut core, &acts, 3);
        let acts = drain(&mut core);
        let ds = deliveries(&acts);
        assert_eq!(ds.len(), 2);
        let items: Vec<MarkItem> = serde_json::from_str(&ds[0].frame).unwrap();
        assert_eq!(items.len(), 3, "one frame for the three marks");
        // weur fails: the marks go again after the backoff.
        let weur = ds.iter().find(|d| d.region == Region::Weur).unwrap().head.clone();
        core.delivered(4, Region::Weur, Err(()));
        core.alarm(4 + crate::room::REDELIVERY.cap_ms);
        let again = drain(&mut core);
        let d = deliveries(&again).into_iter().find(|d| d.region == Region::Weur).expect("sent again").clone();
        assert_eq!((d.head.first_lsn, d.head.last_lsn, d.head.read_marks), (weur.first_lsn, weur.last_lsn, true));
    }

    #[test]
    fn unread_counts_skip_what_retention_dropped() {
        let retention = Retention { max_messages: 3, ttl_ms: 10_000, dedup_window_ms: 0 };
        let mut core = room(retention);
        for i in 0..5 {
            publish(&mut core, 1_000 + i, "bo");
        }
        drain(&mut core);
        // Five stored, three within the count bound: 3, 4, 5.
        assert_eq!(core.unread_plan(2_000, 0, None), CountPlan { after: 2, upto: 5 }, "no mark: everything kept");
        assert_eq!(core.unread_plan(2_000, 4, None), CountPlan { after: 4, upto: 5 });
        assert_eq!(core.unread_plan(2_000, 4, Some(4)), CountPlan { after: 4, upto: 4 }, "up to the relay's cursor");
        assert!(core.unread_plan(2_000, 4, Some(4)).is_empty());
        assert_eq!(core.unread_plan(2_000, 0, Some(99)), CountPlan { after: 2, upto: 5 }, "never past the room's seq");
        assert!(core.unread_plan(2_000, 5, None).is_empty(), "all read");
        assert!(core.unread_plan(20_000, 0, None).is_empty(), "all past the TTL");
    }
}

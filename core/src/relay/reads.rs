//! The relay's side of read marks: telling a user's connections that their
//! mark moved, and the unread count in a user's welcome.
//!
//! **Marks.** The Room sends each moved mark to every relay as a link item
//! ([`crate::link::MarkItem`]s, a frame of their own); the relay renders
//! `{"t":"read","seq":N}` for the connections of that user only (the glue
//! finds them by a hibernation tag, [`user_tag`]), the highest mark per
//! user when several arrive together.
//!
//! **Welcome.** Only when the room has read marks (the relay learns it from
//! join answers, delivery heads and the Room's answers, and keeps it with
//! its position) does the relay ask the Room for a user's count as it
//! welcomes them, up to its cursor at the time ([`UnreadAsk`]). Messages
//! that reach the relay while it waits for the answer are counted from its
//! window, so the count is exactly the user's unread messages up to the
//! welcome's `seq`; when the window cannot say (an epoch crossed, a jump),
//! the welcome goes out without a count rather than with a wrong one.

use super::{Frame, RelayAction, RelayCore};
use crate::link::{MarkItem, UnreadCount};
use crate::server_frame::read_frame;
use serde_json::value::RawValue;

/// The hibernation tag of a socket whose token names `sub`: the user's
/// connection key, hashed ([`crate::rate::http_rate_key`]), so it is short
/// ASCII whatever script the `sub` is in.
pub fn user_tag(sub: &str) -> String {
    format!("r:{}", crate::rate::http_rate_key(Some(sub), None))
}

/// What the relay asked the Room for: a user's count up to its cursor
/// `upto`, in erasure generation `gen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnreadAsk {
    pub gen: u64,
    pub upto: u64,
}

/// The Room's answer to an [`UnreadAsk`] for `user`, for the welcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WelcomeUnread<'a> {
    pub user: &'a str,
    pub ask: UnreadAsk,
    pub count: UnreadCount,
}

impl<F: Frame> RelayCore<F> {
    /// Whether to ask the Room for `user`'s unread count before welcoming
    /// them, and up to what: only users with a `sub`, in a room with read
    /// marks (or one the relay does not know about yet).
    pub fn unread_ask(&self, user: Option<&str>) -> Option<UnreadAsk> {
        user?;
        let p = self.position.as_ref()?;
        (p.reads != Some(false)).then_some(UnreadAsk { gen: p.gen, upto: p.cursor })
    }

    /// The Room answered an unread ask: `None` when it has no read marks.
    pub fn unread_answered(&mut self, answer: Option<UnreadCount>) {
        self.learn_reads(answer.is_some());
        self.flush();
    }

    /// Whether the room has read marks, as far as this relay knows.
    pub fn reads_known(&self) -> Option<bool> {
        self.position.as_ref().and_then(|p| p.reads)
    }

    /// Takes in whether the room has read marks. A room never stops having
    /// them, and answers can arrive late, so "no" is taken only when
    /// nothing is known yet.
    pub(super) fn learn_reads(&mut self, used: bool) {
        let Some(p) = self.position.as_mut() else { return };
        let known = if used { Some(true) } else { p.reads.or(Some(false)) };
        if p.reads != known {
            p.reads = known;
            self.dirty = true;
        }
    }

    /// The welcome's mark and count: the Room's count, plus the messages of
    /// others after the mark that reached the relay while it asked; `None`
    /// when that cannot be told exactly.
    pub(super) fn welcome_unread(&self, u: &WelcomeUnread<'_>) -> Option<(u64, u64)> {
        let p = self.position.as_ref()?;
        if p.gen != u.ask.gen || p.cursor < u.ask.upto {
            return None;
        }
        if p.cursor == u.ask.upto {
            return Some((u.count.read, u.count.unread));
        }
        if self.window.newest() != Some(p.cursor) {
            return None;
        }
        let mut unread = u.count.unread;
        for (frame, _) in self.window.since(u.ask.upto, 0)? {
            unread += count_unread(&frame.text()?, u.ask.upto.max(u.count.read), p.cursor, u.user)?;
        }
        Some((u.count.read, unread))
    }

    /// A read-marks delivery: one `read` frame per user, with their highest
    /// mark in it.
    pub(super) fn send_marks(&mut self, frame: &F) {
        let Some(items) = frame.text().and_then(|t| parse_marks(&t)) else { return };
        // In the order users first appear. A batch holds at most
        // `HERALD_MAX_BATCH` (≤ 1000) marks, so the linear search stays
        // small, and a `Vec` saves the `.wasm` a `BTreeMap` instance.
        let mut highest: Vec<(String, u64)> = Vec::new();
        for MarkItem { user, seq } in items {
            match highest.iter_mut().find(|(u, _)| *u == user) {
                Some((_, mark)) => *mark = (*mark).max(seq),
                None => highest.push((user, seq)),
            }
        }
        for (user, seq) in highest {
            self.actions.push_back(RelayAction::SendToUser { user, frame: F::from_text(read_frame(seq)) });
        }
    }
}

/// The items of a read-marks frame (one, or a batch); `None` when it is not
/// what the Room renders.
fn parse_marks(frame: &str) -> Option<Vec<MarkItem>> {
    if frame.trim_start().starts_with('[') {
        serde_json::from_str(frame).ok()
    } else {
        serde_json::from_str(frame).ok().map(|one| vec![one])
    }
}

/// Stored messages in a (batch) message frame with `after < seq <= upto`
/// that `user` did not publish; `None` when it is not a message frame.
fn count_unread(frame: &str, after: u64, upto: u64, user: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Item<'a> {
        seq: Option<u64>,
        #[serde(borrow)]
        from: Option<&'a str>,
    }
    let items: Vec<&RawValue> = if frame.trim_start().starts_with('[') {
        serde_json::from_str(frame).ok()?
    } else {
        vec![serde_json::from_str(frame).ok()?]
    };
    let mut n = 0;
    for raw in items {
        let item: Item<'_> = serde_json::from_str(raw.get()).ok()?;
        let counted = item.seq.is_some_and(|s| s > after && s <= upto) && item.from != Some(user);
        n += u64::from(counted);
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{DeliveryHead, JoinReply, LinkAck};
    use crate::region::Region;
    use crate::relay::Saved;

    type Relay = RelayCore<String>;

    fn relay(seq: u64, reads: bool) -> Relay {
        let mut r = Relay::new("room", Region::Weur, 1, "n".into(), 1);
        let reply = JoinReply { epoch: "e".into(), gen: 0, epoch_start: 0, seq, ack: LinkAck { inc: 9, link: 1, lsn: 0 }, reads };
        r.joined(reply, 0);
        std::iter::from_fn(|| r.poll_action()).for_each(drop);
        r
    }

    fn drain(r: &mut Relay) -> Vec<RelayAction<String>> {
        std::iter::from_fn(|| r.poll_action()).collect()
    }

    fn msg(seq: u64, from: &str) -> String {
        format!(r#"{{"t":"msg","seq":{seq},"ts":1,"data":{seq},"from":"{from}"}}"#)
    }

    fn head(lsn: u64, seqs: Option<(u64, u64)>) -> DeliveryHead {
        DeliveryHead {
            epoch: "e".into(),
            gen: 0,
            epoch_start: 0,
            inc: 9,
            link: 1,
            first_lsn: lsn,
            last_lsn: lsn,
            first: seqs.map(|s| s.0),
            last: seqs.map(|s| s.1),
            first_ts: 1,
            sync_to: None,
            reset: false,
            presence: None,
            read_marks: false,
            reads: false,
        }
    }

    fn welcome(r: &mut Relay, unread: Option<WelcomeUnread<'_>>) -> serde_json::Value {
        serde_json::from_str(&r.admit_with_unread(None, unread).unwrap().1).unwrap()
    }

    #[test]
    fn the_relay_asks_only_in_rooms_with_marks_and_learns_it_from_everything() {
        let mut r = relay(5, false);
        assert_eq!(r.unread_ask(Some("ana")), None, "the join said: no marks");
        let mut h = head(1, None);
        h.reads = true;
        r.handle_delivery(None, h, Some("{}".into()));
        let acts = drain(&mut r);
        assert!(acts.iter().any(|a| matches!(a, RelayAction::SavePosition(Saved { reads: Some(true), .. }))), "kept with the position: {acts:?}");
        assert_eq!(r.unread_ask(Some("ana")), Some(UnreadAsk { gen: 0, upto: 5 }));
        assert_eq!(r.unread_ask(None), None, "anonymous readers have no mark");
        r.unread_answered(None);
        assert_eq!(r.reads_known(), Some(true), "a late \"no\" does not undo a \"yes\"");

        // Not known (a position saved before the flag existed): it asks,
        // and a "no" answer stops it asking.
        let mut r = Relay::new("room", Region::Weur, 1, "n".into(), 1);
        r.restore(Saved { epoch: "e".into(), gen: 0, epoch_start: 0, cursor: 5, ack: None, reads: None });
        assert!(r.unread_ask(Some("ana")).is_some());
        r.unread_answered(None);
        assert_eq!(r.unread_ask(Some("ana")), None);
        let reply = JoinReply { epoch: "e".into(), gen: 0, epoch_start: 0, seq: 5, ack: LinkAck { inc: 9, link: 1, lsn: 0 }, reads: true };
        r.joined(reply, 1);
        assert_eq!(r.reads_known(), Some(true), "a join answer says yes");
    }

    #[test]
    fn the_welcome_counts_up_to_its_seq_including_what_arrived_while_asking() {
        let mut r = relay(5, true);
        let ask = r.unread_ask(Some("ana")).unwrap();
        let count = UnreadCount { read: 3, unread: 2 };
        let w = welcome(&mut r, Some(WelcomeUnread { user: "ana", ask, count }));
        assert_eq!((w["seq"].as_u64(), w["read"].as_u64(), w["unread"].as_u64()), (Some(5), Some(3), Some(2)));
        let w = welcome(&mut r, None);
        assert_eq!((w.get("read"), w.get("unread")), (None, None), "no answer: no count");

        // 6 (bo), 7 (ana's own) and 8 (bo) arrive while the Room is asked.
        let frame = crate::server_frame::batch_frame(&[msg(6, "bo"), msg(7, "ana")]);
        r.handle_delivery(None, head(1, Some((6, 7))), Some(frame));
        r.handle_delivery(None, head(2, Some((8, 8))), Some(msg(8, "bo")));
        drain(&mut r);
        let w = welcome(&mut r, Some(WelcomeUnread { user: "ana", ask, count }));
        assert_eq!((w["seq"].as_u64(), w["unread"].as_u64()), (Some(8), Some(4)), "2 + 6 and 8; 7 is hers");
        // A mark past the ask's seq (she read 7 meanwhile, on another device).
        let count = UnreadCount { read: 7, unread: 0 };
        let w = welcome(&mut r, Some(WelcomeUnread { user: "ana", ask, count }));
        assert_eq!(w["unread"].as_u64(), Some(1), "only 8");

        // The window cannot vouch for the seam (a jump): no count at all.
        r.handle_delivery(None, head(3, Some((20, 20))), Some(msg(20, "bo")));
        let acts = drain(&mut r);
        assert!(acts.iter().any(|a| matches!(a, RelayAction::ReadRange { .. })));
        r.handle_range(crate::link::RangeHead { epoch: "e".into(), gen: 0, epoch_start: 0, from: 19, last: 19, recovered: true }, None);
        drain(&mut r);
        assert_eq!(r.cursor(), Some(20));
        let w = welcome(&mut r, Some(WelcomeUnread { user: "ana", ask, count }));
        assert_eq!(w.get("unread"), None, "{w}");
    }

    #[test]
    fn marks_go_to_their_user_once_each_with_the_highest_mark() {
        let mut r = relay(5, true);
        let mut h = head(1, None);
        h.read_marks = true;
        let items = r#"[{"user":"ana","seq":3},{"user":"bo","seq":4},{"user":"ana","seq":5}]"#;
        r.handle_delivery(Some(7), h.clone(), Some(items.into()));
        let acts = drain(&mut r);
        let sent: Vec<(String, String)> = acts
            .iter()
            .filter_map(|a| if let RelayAction::SendToUser { user, frame } = a { Some((user.clone(), frame.clone())) } else { None })
            .collect();
        assert_eq!(sent, vec![("ana".into(), r#"{"t":"read","seq":5}"#.into()), ("bo".into(), r#"{"t":"read","seq":4}"#.into())]);
        assert!(acts.contains(&RelayAction::Answer { token: 7 }));
        assert!(!acts.iter().any(|a| matches!(a, RelayAction::FanOut(_))), "nobody else gets them");
        assert_eq!(r.cursor(), Some(5), "marks do not move the cursor");
        // A retry of the same items is answered, not sent twice.
        r.handle_delivery(Some(8), h, Some(items.into()));
        assert_eq!(drain(&mut r), vec![RelayAction::Answer { token: 8 }]);
        let mut one = head(2, None);
        one.read_marks = true;
        r.handle_delivery(None, one, Some(r#"{"user":"cy","seq":1}"#.into()));
        assert!(drain(&mut r).iter().any(|a| matches!(a, RelayAction::SendToUser { user, .. } if user == "cy")));
        assert_eq!(user_tag("ana"), user_tag("ana"));
        assert_ne!(user_tag("ana"), user_tag("bo"));
        assert!(user_tag(&"東".repeat(40)).len() < 64 && user_tag("x").is_ascii());
    }
}

//! The Room's side of presence: relays' presence calls into the
//! [`crate::presence::Roster`], its frames out to every relay as link items, and its rows
//! to storage.
//!
//! A presence call carries one relay incarnation's numbered deltas (and,
//! first after the relay was constructed, its whole membership). The Room
//! remembers per relay the incarnation and the next delta number it
//! expects, applies each delta once, in order, and answers what it took
//! ([`PresenceAck`]), so the relay can let go of them. Roster frames ride
//! the acknowledged link like messages: in order, redelivered until
//! acknowledged, never batched with messages (a relay sends them only to
//! its presence subscribers).

use super::{Kind, Queued, RoomAction, RoomCore};
use crate::link::{PresenceAck, PresenceCall};
pub use crate::presence::PresenceRow;
use crate::presence::{Out, SnapshotPage};
use crate::region::Region;
use std::rc::Rc;

/// A relay's presence position: (incarnation, next delta number).
pub type PresenceLink = (Region, u64, u64);

impl RoomCore {
    /// A relay's presence call.
    pub fn presence_call(&mut self, now_ms: u64, call: PresenceCall) -> PresenceAck {
        self.now = now_ms;
        let PresenceCall { region, inc, report } = call;
        let (known_inc, mut next) = self.presence_links.get(&region).copied().unwrap_or((0, 0));
        let mut full = false;
        if inc < known_inc {
            // An older incarnation's call, overtaken: nothing in it holds.
            return PresenceAck { full: false, next: report.first, need_full: false };
        }
        if let Some(members) = report.full {
            self.roster.replace(now_ms, region, members);
            next = report.first;
            full = true;
        } else if inc != known_inc {
            // Deltas of an incarnation whose whole membership the Room does
            // not have: it is asked for it.
            return PresenceAck { full: false, next: report.first, need_full: true };
        }
        for (n, delta) in (report.first..).zip(report.deltas) {
            if n < next {
                continue; // applied from an earlier call
            }
            if n > next {
                break; // a gap: the relay sends the rest again
            }
            self.roster.apply(now_ms, region, delta);
            next += 1;
        }
        self.presence_links.insert(region, (inc, next));
        self.after_presence_change();
        PresenceAck { full, next, need_full: false }
    }

    /// A relay the Room forgets (it reported no connections): its members
    /// start their grace. Its presence position stays: the relay's deltas
    /// go on being numbered in the same incarnation.
    pub(super) fn presence_relay_gone(&mut self, region: Region) {
        self.roster.replace(self.now, region, Vec::new());
        self.after_presence_change();
    }

    /// Time passed (the alarm): graces and coalesced counts.
    pub(super) fn presence_tick(&mut self) {
        self.roster.tick(self.now);
        self.after_presence_change();
    }

    /// When the roster next needs the alarm.
    pub(super) fn presence_deadline(&self) -> Option<u64> {
        self.roster.next_deadline()
    }

    /// One page of the members, by user id.
    pub fn presence_snapshot(&self, cursor: Option<&str>, limit: usize) -> SnapshotPage {
        self.roster.snapshot(cursor, limit)
    }

    /// Frames out to every relay, rows to storage.
    fn after_presence_change(&mut self) {
        while let Some(Out { audience, frame }) = self.roster.poll_out() {
            let uid = self.take_uid();
            let queued = Rc::new(Queued { uid, kind: Kind::Presence(audience), seq: None, ts: self.now, frame });
            self.enqueue(&queued);
        }
        self.webhooks_observe();
        let changed = self.roster.take_changed();
        if !changed.is_empty() {
            let links = self.presence_links.iter().map(|(r, (inc, next))| (r, *inc, *next)).collect();
            self.actions.push_back(RoomAction::SavePresence { changed, links });
        }
        self.schedule_alarm(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Retention;
    use crate::link::{LinkAck, RelayPosition, RelayReport};
    use crate::presence::{Audience, Delta, PresenceConfig, PresenceReport};

    fn room() -> RoomCore {
        let mut core = RoomCore::new("r", None, "e".into(), Retention::default(), 7);
        core.set_presence_config(PresenceConfig { events_max: 10, interval_ms: 1000, grace_ms: 500 });
        for region in [Region::Weur, Region::Apac] {
            core.report(0, RelayReport { connections: 1, ..RelayReport::new(region) });
        }
        std::iter::from_fn(|| core.poll_action()).for_each(drop);
        core
    }

    fn call(region: Region, inc: u64, first: u64, full: Option<Vec<&str>>, deltas: Vec<Delta>) -> PresenceCall {
        let full = full.map(|users| users.into_iter().map(|u| (u.to_owned(), None)).collect());
        PresenceCall { region, inc, report: PresenceReport { full, first, deltas } }
    }

    fn join(user: &str) -> Delta {
        Delta::Join { user: user.into(), info: None }
    }

    /// Carries out the room's actions, answering every delivery as applied
    /// so the next one goes: the presence frames each relay got (with their
    /// audience), and the other actions.
    fn pump(core: &mut RoomCore) -> (Vec<(Region, Audience, String)>, Vec<RoomAction>) {
        let (mut frames, mut others) = (Vec::new(), Vec::new());
        loop {
            let actions: Vec<RoomAction> = std::iter::from_fn(|| core.poll_action()).collect();
            if actions.is_empty() {
                return (frames, others);
            }
            for a in actions {
                let RoomAction::Deliver(d) = a else {
                    others.push(a);
                    continue;
                };
                frames.extend(d.head.presence.map(|p| (d.region, p, d.frame.to_string())));
                let ack = LinkAck { inc: d.head.inc, link: d.head.link, lsn: d.head.last_lsn };
                let position = RelayPosition { gen: 0, cursor: core.meta.seq, ack: Some(ack) };
                let report = RelayReport { connections: 1, position: Some(position), report_seq: 100 + d.head.last_lsn, ..RelayReport::new(d.region) };
                core.delivered(core.now, d.region, Ok(Some(report)));
            }
        }
    }

    fn presence_out(core: &mut RoomCore, region: Region) -> Vec<(Audience, String)> {
        pump(core).0.into_iter().filter(|(r, _, _)| *r == region).map(|(_, a, f)| (a, f)).collect()
    }

    #[test]
    fn deltas_apply_once_in_order_and_frames_go_to_every_relay() {
        let mut core = room();
        let ack = core.presence_call(10, call(Region::Weur, 1, 0, Some(vec!["ana"]), vec![]));
        assert_eq!(ack, PresenceAck { full: true, next: 0, need_full: false });
        let out = presence_out(&mut core, Region::Apac);
        assert_eq!(out[0].0, Audience::Full);
        assert!(out[0].1.contains(r#""t":"join","user":"ana""#), "{out:?}");
        let ack = core.presence_call(20, call(Region::Weur, 1, 0, None, vec![join("bo"), join("cy")]));
        assert_eq!(ack, PresenceAck { full: false, next: 2, need_full: false });
        // The same call again (its answer was lost), and one with a gap.
        assert_eq!(core.presence_call(30, call(Region::Weur, 1, 0, None, vec![join("bo"), join("cy")])).next, 2);
        assert_eq!(core.presence_call(30, call(Region::Weur, 1, 5, None, vec![join("dee")])).next, 2, "a gap is not applied");
        assert_eq!(core.presence_snapshot(None, 10).counts.count, 3);
        // A new incarnation must start with its whole membership.
        let ack = core.presence_call(40, call(Region::Weur, 2, 0, None, vec![join("eve")]));
        assert_eq!((ack.next, ack.need_full), (0, true), "the Room asks for the whole membership");
        assert_eq!(core.presence_snapshot(None, 10).counts.count, 3, "deltas of an unknown incarnation wait");
        let ack = core.presence_call(50, call(Region::Weur, 2, 0, Some(vec!["ana", "eve"]), vec![]));
        assert!(ack.full);
        assert_eq!(core.presence_snapshot(None, 10).counts.count, 4, "bo and cy are in grace");
        core.alarm(600);
        let users: Vec<String> = core.presence_snapshot(None, 10).members.into_iter().map(|m| m.user).collect();
        assert_eq!(users, vec!["ana", "eve"]);
        let saved = pump(&mut core).1.into_iter().any(|a| matches!(a, RoomAction::SavePresence { .. }));
        assert!(saved, "the graces that ran out are deleted from storage");
    }

    #[test]
    fn a_forgotten_relay_s_members_leave_after_grace_and_a_restart_keeps_the_roster() {
        let mut core = room();
        core.presence_call(10, call(Region::Apac, 1, 0, Some(vec!["ana"]), vec![]));
        let rows: Vec<PresenceRow> = pump(&mut core)
            .1
            .into_iter()
            .filter_map(|a| if let RoomAction::SavePresence { changed, .. } = a { Some(changed) } else { None })
            .flatten()
            .filter_map(|(_, row)| row)
            .collect();
        assert_eq!(rows.len(), 1);
        let mut again = RoomCore::new("r", None, "e".into(), Retention::default(), 8);
        again.roster.restore(rows);
        assert_eq!(again.presence_snapshot(None, 10).counts.count, 1, "restored from its rows");
        core.report(100, RelayReport { connections: 0, report_seq: 1000, ..RelayReport::new(Region::Apac) });
        assert_eq!(core.presence_snapshot(None, 10).counts.count, 1, "in grace");
        core.alarm(700);
        assert_eq!(core.presence_snapshot(None, 10).counts.count, 0);
        let out = presence_out(&mut core, Region::Weur);
        assert!(out.iter().any(|(a, f)| *a == Audience::Full && f.contains(r#""t":"leave""#)), "{out:?}");
        // Counts go out at most once a second: the one for 0 is due at 1010.
        assert_eq!(core.presence_deadline(), Some(1010));
        core.alarm(1010);
        let out = presence_out(&mut core, Region::Weur);
        assert_eq!(out, vec![(Audience::CountsOnly, r#"{"t":"presence_counts","count":0,"regions":{}}"#.to_string())]);
    }
}

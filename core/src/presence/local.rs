//! One relay's members, and the deltas it owes the Room.
//!
//! The relay counts connections per user. A user's first connection is a
//! `join` delta, its last disconnection a `leave`; connections in between
//! send nothing. Deltas are numbered and kept until the Room acknowledges
//! them, so a report that is lost is sent again and one that is repeated is
//! applied once (the Room skips numbers it has seen). A relay that was
//! constructed anew (after hibernation or eviction) rebuilds its members
//! from its sockets' attachments and sends them whole, replacing what the
//! Room held for it: nothing lives only in memory.

use super::Delta;

/// Deltas kept for the Room at most, in count and in bytes (users and
/// `info`). Past either, while the Room is unreachable and connections
/// churn, they are dropped and the whole membership is owed instead: it
/// says the same in a size bounded by the relay's connections.
pub const MAX_UNACKED_DELTAS: usize = 1024;
pub const MAX_UNACKED_BYTES: usize = 256 * 1024;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// What a relay tells the Room about presence in one report.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PresenceReport {
    /// `Some`: the relay's whole membership, replacing what the Room held
    /// for it; the deltas then follow it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<Vec<(String, Option<String>)>>,
    /// The number of the first delta in `deltas`.
    #[serde(default)]
    pub first: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deltas: Vec<Delta>,
}

#[derive(Debug, Default)]
pub struct LocalPresence {
    /// Connections per user, and the user's `info` from the first one.
    users: BTreeMap<String, (u32, Option<String>)>,
    /// Deltas not yet acknowledged, numbered from `first_unacked`.
    unacked: VecDeque<Delta>,
    first_unacked: u64,
    /// The Room has not yet taken this relay's whole membership.
    full_owed: bool,
    /// Bytes of user ids and `info` in `unacked`.
    unacked_bytes: usize,
}

impl LocalPresence {
    /// A relay starting with `connections` (user, info) already open (its
    /// sockets after a wake); the Room is owed the whole membership.
    pub fn rebuilt(connections: impl IntoIterator<Item = (String, Option<String>)>) -> Self {
        let mut p = LocalPresence { first_unacked: 1, full_owed: true, ..LocalPresence::default() };
        for (user, info) in connections {
            let e = p.users.entry(user).or_insert((0, info));
            e.0 += 1;
        }
        p
    }

    /// A connection of `user` opened.
    pub fn connected(&mut self, user: &str, info: Option<&str>) {
        let e = self.users.entry(user.to_owned()).or_insert((0, info.map(str::to_owned)));
        e.0 += 1;
        if e.0 == 1 {
            self.owe(Delta::Join { user: user.to_owned(), info: info.map(str::to_owned) });
        }
    }

    /// A connection of `user` closed (cleanly or not).
    pub fn disconnected(&mut self, user: &str) {
        let Some(e) = self.users.get_mut(user) else { return };
        e.0 = e.0.saturating_sub(1);
        if e.0 == 0 {
            self.users.remove(user);
            self.owe(Delta::Leave { user: user.to_owned() });
        }
    }

    fn owe(&mut self, delta: Delta) {
        self.unacked_bytes += delta_bytes(&delta);
        self.unacked.push_back(delta);
        if self.unacked.len() > MAX_UNACKED_DELTAS || self.unacked_bytes > MAX_UNACKED_BYTES {
            self.first_unacked += self.unacked.len() as u64;
            self.unacked.clear();
            self.unacked_bytes = 0;
            self.full_owed = true;
        }
    }

    /// Whether a report has presence news for the Room.
    pub fn owes(&self) -> bool {
        self.full_owed || !self.unacked.is_empty()
    }

    /// The presence part of the next report: the whole membership if it is
    /// owed, then every unacknowledged delta. Once the whole membership is
    /// sent, the deltas before it are moot (it already includes them).
    pub fn report(&mut self) -> PresenceReport {
        if self.full_owed {
            let full = self.users.iter().map(|(u, (_, info))| (u.clone(), info.clone())).collect();
            self.first_unacked += self.unacked.len() as u64;
            self.unacked.clear();
            self.unacked_bytes = 0;
            return PresenceReport { full: Some(full), first: self.first_unacked, deltas: Vec::new() };
        }
        PresenceReport { full: None, first: self.first_unacked, deltas: self.unacked.iter().cloned().collect() }
    }

    /// The Room applied the whole membership (when `full` was taken) and the
    /// deltas before `next`. True when that let go of anything.
    pub fn acked(&mut self, full: bool, next: u64) -> bool {
        let mut progress = full && self.full_owed;
        if full {
            self.full_owed = false;
        }
        while self.first_unacked < next {
            let Some(d) = self.unacked.pop_front() else { break };
            self.unacked_bytes = self.unacked_bytes.saturating_sub(delta_bytes(&d));
            self.first_unacked += 1;
            progress = true;
        }
        progress
    }

    /// The Room asks for the whole membership (it does not know this
    /// incarnation); the deltas it did not take are in it.
    pub fn owe_full(&mut self) {
        self.full_owed = true;
    }

    /// Users with a connection here.
    pub fn users(&self) -> usize {
        self.users.len()
    }
}

fn delta_bytes(d: &Delta) -> usize {
    match d {
        Delta::Join { user, info } => user.len() + info.as_ref().map_or(0, String::len),
        Delta::Leave { user } => user.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_and_last_connections_are_deltas_and_acks_drop_them() {
        let mut p = LocalPresence::rebuilt(vec![("old".to_string(), None)]);
        assert!(p.owes());
        let r = p.report();
        assert_eq!(r.full, Some(vec![("old".to_string(), None)]));
        p.acked(true, r.first);
        assert!(!p.owes());
        p.connected("a", Some(r#"{"n":1}"#));
        p.connected("a", None);
        p.disconnected("a");
        assert_eq!(p.report().deltas, vec![Delta::Join { user: "a".into(), info: Some(r#"{"n":1}"#.into()) }]);
        p.disconnected("a");
        p.disconnected("nobody");
        let r = p.report();
        assert_eq!(r.deltas.len(), 2, "join then leave, nothing for a stranger");
        p.acked(false, r.first + 1);
        assert_eq!(p.report().deltas, vec![Delta::Leave { user: "a".into() }], "only what was not acked");
        p.acked(false, r.first + 2);
        assert!(!p.owes());
        assert_eq!(p.users(), 1);
    }

    #[test]
    fn churn_while_the_room_is_away_is_bounded_by_the_membership() {
        let mut p = LocalPresence::rebuilt(Vec::<(String, Option<String>)>::new());
        let r = p.report();
        p.acked(true, r.first);
        for i in 0..=MAX_UNACKED_DELTAS {
            p.connected(&format!("u{i}"), None);
            p.disconnected(&format!("u{i}"));
        }
        p.connected("stays", None);
        let r = p.report();
        assert!(r.deltas.len() <= MAX_UNACKED_DELTAS, "{} deltas kept", r.deltas.len());
        assert_eq!(r.full, Some(vec![("stays".to_string(), None)]), "the whole membership instead");
        let big = "x".repeat(1000);
        let mut q = LocalPresence::rebuilt(Vec::<(String, Option<String>)>::new());
        let r = q.report();
        q.acked(true, r.first);
        for i in 0..300 {
            q.connected(&format!("v{i}"), Some(&big));
        }
        assert!(q.report().full.is_some(), "past the byte bound too");
    }
}

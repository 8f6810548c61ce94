//! The Room's roster: every member of the room, aggregated from the relays'
//! deltas, and what clients are told about it.
//!
//! Sans-IO like the rest of the core: deltas and ticks come in with `now`,
//! presence frames come out of [`Roster::poll_out`], drained until `None`
//! after every event; [`Roster::next_deadline`] is when `tick` is next
//! needed (a grace running out, or coalesced counts due).
//!
//! **What clients see.** While the room has at most `events_max` members,
//! `join` and `leave` frames go to full presence subscribers as members come
//! and go. Past it they stop, and every presence subscriber gets a
//! `presence_counts` frame at most once per `interval_ms`, and only when the
//! counts changed. Coming back under the maximum, per-member events resume
//! only after a counts frame showing the lower count has gone out: that
//! frame is the client's cue to read the snapshot again. Counts-only
//! subscribers get the coalesced counts frames in both modes.

use super::{counts_frame, join_frame, leave_frame, Counts, Delta, Member};
use crate::region::Region;
use crate::region_map::{RegionMap, RegionSet};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// `HERALD_PRESENCE_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceConfig {
    /// `HERALD_PRESENCE_EVENTS_MAX`: above this many members, per-member
    /// events stop.
    pub events_max: u64,
    /// `HERALD_PRESENCE_INTERVAL_MS`: closest two counts frames may follow.
    pub interval_ms: u64,
    /// `HERALD_PRESENCE_GRACE_MS`: how long a user who left stays a member.
    pub grace_ms: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig { events_max: 100, interval_ms: 1000, grace_ms: 5000 }
    }
}

/// Who a presence frame is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// Subscribers to per-member events only.
    Full,
    /// Counts-only subscribers only.
    CountsOnly,
    /// Every presence subscriber.
    All,
}

/// A presence frame to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    pub audience: Audience,
    pub frame: String,
}

/// A change in who is a member, in any mode (presence's counts mode is for
/// clients; webhooks hear every member): `Added` when the roster gains a
/// member, `Removed` when a member's grace ran out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    Added(String),
    Removed(String),
}

/// A member's stored row: the member, the relays it is on, its grace.
pub type PresenceRow = (Member, Vec<Region>, Option<u64>);

/// One page of the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPage {
    pub counts: Counts,
    pub members: Vec<Member>,
    pub more: bool,
    /// Where the next page starts (the last user of this one), when `more`.
    pub cursor: Option<String>,
}

#[derive(Debug, Clone)]
struct Entry {
    info: Option<String>,
    /// The region of the connection that made the user join.
    region: Region,
    /// The relays on which the user has a connection now.
    relays: RegionSet,
    /// No connection anywhere: a member until then.
    grace_until: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    PerMember,
    /// Counts only, for everyone, until a counts frame at or below the
    /// maximum has gone out.
    Counts,
}

#[derive(Debug)]
pub struct Roster {
    config: PresenceConfig,
    members: BTreeMap<String, Entry>,
    regions: RegionMap<u64>,
    mode: Mode,
    /// The counts changed since the last counts frame.
    counts_dirty: bool,
    /// No counts frame before this.
    next_counts_at: u64,
    out: VecDeque<Out>,
    /// Members whose stored row is out of date (added, changed or gone).
    changed: BTreeSet<String>,
    /// The members in grace, by deadline: the next deadline and the expired
    /// ones are found without walking every member (the Room asks for the
    /// next deadline after every event, publishes included).
    graces: BTreeSet<(u64, String)>,
    /// Member changes not yet taken ([`Roster::poll_membership`]).
    membership: VecDeque<MemberChange>,
}

impl Roster {
    pub fn new(config: PresenceConfig) -> Self {
        Roster {
            config,
            members: BTreeMap::new(),
            regions: RegionMap::new(),
            mode: Mode::PerMember,
            counts_dirty: false,
            next_counts_at: 0,
            out: VecDeque::new(),
            changed: BTreeSet::new(),
            graces: BTreeSet::new(),
            membership: VecDeque::new(),
        }
    }

    /// A relay's delta, for the members connected through it (`region`).
    pub fn apply(&mut self, now: u64, region: Region, delta: Delta) {
        match delta {
            Delta::Join { user, info } => self.join(now, region, user, info),
            Delta::Leave { user } => self.leave(now, region, &user),
        }
        self.maybe_counts(now);
    }

    /// A relay's whole membership, replacing what it contributed before (a
    /// relay that restarted, or one the Room forgets: `users` empty).
    pub fn replace(&mut self, now: u64, region: Region, users: Vec<(String, Option<String>)>) {
        let listed: BTreeSet<&str> = users.iter().map(|(u, _)| u.as_str()).collect();
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(user, e)| e.relays.contains_key(&region) && !listed.contains(user.as_str()))
            .map(|(user, _)| user.clone())
            .collect();
        for user in gone {
            self.leave(now, region, &user);
        }
        for (user, info) in users {
            self.join(now, region, user, info);
        }
        self.maybe_counts(now);
    }

    fn join(&mut self, _now: u64, region: Region, user: String, info: Option<String>) {
        if let Some(e) = self.members.get_mut(&user) {
            // Another connection of a member, or a reconnect within grace:
            // no event either way.
            let added = e.relays.add(region);
            let was_leaving = e.grace_until.take();
            if let Some(t) = was_leaving {
                self.graces.remove(&(t, user.clone()));
            }
            if added || was_leaving.is_some() {
                self.changed.insert(user);
            }
            return;
        }
        *self.regions.or_default(region) += 1;
        self.counts_dirty = true;
        self.changed.insert(user.clone());
        self.membership.push_back(MemberChange::Added(user.clone()));
        let member = Member { user: user.clone(), info: info.clone(), region };
        self.members.insert(user, Entry { info, region, relays: std::iter::once(region).collect(), grace_until: None });
        if self.mode == Mode::PerMember && self.count() > self.config.events_max {
            self.mode = Mode::Counts;
        }
        if self.mode == Mode::PerMember {
            self.out.push_back(Out { audience: Audience::Full, frame: join_frame(&member) });
        }
    }

    fn leave(&mut self, now: u64, region: Region, user: &str) {
        let grace = self.config.grace_ms;
        if let Some(e) = self.members.get_mut(user) {
            let removed = e.relays.take(&region);
            if e.relays.is_empty() && e.grace_until.is_none() {
                let until = now.saturating_add(grace);
                e.grace_until = Some(until);
                self.graces.insert((until, user.to_owned()));
            }
            if removed {
                self.changed.insert(user.to_owned());
            }
        }
    }

    /// Time passes: graces that ran out become leaves, and counts that are
    /// due go out.
    pub fn tick(&mut self, now: u64) {
        let mut expired = Vec::new();
        while let Some((t, _)) = self.graces.first() {
            if *t > now {
                break;
            }
            if let Some((_, user)) = self.graces.pop_first() {
                expired.push(user);
            }
        }
        for user in expired {
            self.changed.insert(user.clone());
            if let Some(e) = self.members.remove(&user) {
                if let Some(n) = self.regions.get_mut(&e.region) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.regions.remove(&e.region);
                    }
                }
                self.counts_dirty = true;
                self.membership.push_back(MemberChange::Removed(user.clone()));
                if self.mode == Mode::PerMember {
                    self.out.push_back(Out { audience: Audience::Full, frame: leave_frame(&user, e.region) });
                }
            }
        }
        self.maybe_counts(now);
    }

    /// Sends a counts frame if the counts changed and the interval allows.
    fn maybe_counts(&mut self, now: u64) {
        if !self.counts_dirty || now < self.next_counts_at {
            return;
        }
        self.counts_dirty = false;
        self.next_counts_at = now.saturating_add(self.config.interval_ms);
        let counts = self.counts();
        let audience = match self.mode {
            Mode::PerMember => Audience::CountsOnly,
            Mode::Counts => Audience::All,
        };
        self.out.push_back(Out { audience, frame: counts_frame(&counts) });
        if self.mode == Mode::Counts && counts.count <= self.config.events_max {
            // Clients saw a count they may list: per-member events resume.
            self.mode = Mode::PerMember;
        }
    }

    /// The next presence frame to send, in order.
    pub fn poll_out(&mut self) -> Option<Out> {
        self.out.pop_front()
    }

    /// The next member change, in order (drained with the frames).
    pub fn poll_membership(&mut self) -> Option<MemberChange> {
        self.membership.pop_front()
    }

    /// When [`Roster::tick`] is next needed.
    pub fn next_deadline(&self) -> Option<u64> {
        let grace = self.graces.first().map(|(t, _)| *t);
        let counts = self.counts_dirty.then_some(self.next_counts_at);
        [grace, counts].into_iter().flatten().min()
    }

    pub fn count(&self) -> u64 {
        self.members.len() as u64
    }

    pub fn counts(&self) -> Counts {
        Counts { count: self.count(), regions: self.regions.clone() }
    }

    /// Whether per-member events are going out.
    pub fn per_member(&self) -> bool {
        self.mode == Mode::PerMember
    }

    /// Up to `limit` members after `cursor` (a user id), by user id.
    pub fn snapshot(&self, cursor: Option<&str>, limit: usize) -> SnapshotPage {
        use std::ops::Bound;
        let from = cursor.map_or(Bound::Unbounded, |c| Bound::Excluded(c.to_owned()));
        let mut iter = self.members.range((from, Bound::Unbounded));
        let members: Vec<Member> = iter
            .by_ref()
            .take(limit.max(1))
            .map(|(user, e)| Member { user: user.clone(), info: e.info.clone(), region: e.region })
            .collect();
        let more = iter.next().is_some();
        let cursor = more.then(|| members.last().map(|m| m.user.clone())).flatten();
        SnapshotPage { counts: self.counts(), members, more, cursor }
    }

    /// Every member with the relays they are on and their grace, for
    /// storage: what a restarted Room needs to be exact.
    pub fn saved(&self) -> Vec<PresenceRow> {
        self.members
            .iter()
            .map(|(user, e)| {
                let m = Member { user: user.clone(), info: e.info.clone(), region: e.region };
                (m, e.relays.keys().collect(), e.grace_until)
            })
            .collect()
    }

    /// The members whose stored row changed since the last call: `Some`
    /// with the row to write, `None` to delete it.
    pub fn take_changed(&mut self) -> Vec<(String, Option<PresenceRow>)> {
        std::mem::take(&mut self.changed)
            .into_iter()
            .map(|user| {
                let row = self.members.get(&user).map(|e| {
                    let m = Member { user: user.clone(), info: e.info.clone(), region: e.region };
                    (m, e.relays.keys().collect(), e.grace_until)
                });
                (user, row)
            })
            .collect()
    }

    /// Restores what [`Roster::saved`] gave.
    pub fn restore(&mut self, saved: Vec<PresenceRow>) {
        for (m, relays, grace_until) in saved {
            *self.regions.or_default(m.region) += 1;
            if let Some(t) = grace_until {
                self.graces.insert((t, m.user.clone()));
            }
            let entry = Entry { info: m.info, region: m.region, relays: relays.into_iter().collect(), grace_until };
            self.members.insert(m.user, entry);
        }
        if self.count() > self.config.events_max {
            self.mode = Mode::Counts;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presence::LocalPresence;
    use proptest::prelude::*;
    use serde_json::Value;
    use std::collections::HashMap;

    const CONFIG: PresenceConfig = PresenceConfig { events_max: 3, interval_ms: 50, grace_ms: 100 };
    const REGIONS: [Region; 3] = [Region::Weur, Region::Apac, Region::Enam];

    fn drain(r: &mut Roster) -> Vec<Out> {
        std::iter::from_fn(|| r.poll_out()).collect()
    }

    fn join(r: &mut Roster, now: u64, region: Region, user: &str) {
        r.apply(now, region, Delta::Join { user: user.into(), info: None });
    }

    fn leave(r: &mut Roster, now: u64, region: Region, user: &str) {
        r.apply(now, region, Delta::Leave { user: user.into() });
    }

    fn frames(outs: &[Out]) -> Vec<Value> {
        outs.iter().map(|o| serde_json::from_str(&o.frame).unwrap()).collect()
    }

    #[test]
    fn one_member_across_regions_counts_once_where_it_joined() {
        let mut r = Roster::new(CONFIG);
        join(&mut r, 0, Region::Weur, "ana");
        join(&mut r, 1, Region::Apac, "ana");
        let outs = drain(&mut r);
        assert_eq!(frames(&outs)[0]["t"], "join");
        assert_eq!(outs.iter().filter(|o| o.audience == Audience::Full).count(), 1, "one join");
        leave(&mut r, 2, Region::Weur, "ana");
        assert_eq!(r.counts().regions, [(Region::Weur, 1)].into_iter().collect(), "still in weur's count");
        leave(&mut r, 3, Region::Apac, "ana");
        assert_eq!(r.count(), 1, "in grace, still a member");
        assert_eq!(r.next_deadline(), Some(103), "the grace; the counts did not change");
        r.tick(103);
        let f = frames(&drain(&mut r));
        assert!(f.iter().any(|f| f["t"] == "leave" && f["region"] == "weur"), "{f:?}");
        assert_eq!(r.count(), 0);
    }

    #[test]
    fn a_reconnect_within_grace_is_no_flap() {
        let mut r = Roster::new(CONFIG);
        join(&mut r, 0, Region::Weur, "ana");
        drain(&mut r);
        leave(&mut r, 10, Region::Weur, "ana");
        join(&mut r, 60, Region::Apac, "ana");
        r.tick(500);
        let f = frames(&drain(&mut r));
        assert!(!f.iter().any(|f| f["t"] == "join" || f["t"] == "leave"), "{f:?}");
        assert_eq!(r.snapshot(None, 10).members[0].region, Region::Weur, "counted where it first joined");
    }

    #[test]
    fn past_the_maximum_only_coalesced_counts_go_out_until_back_under() {
        let mut r = Roster::new(CONFIG);
        for (i, u) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            join(&mut r, i as u64, Region::Weur, u);
        }
        let outs = drain(&mut r);
        let joins = outs.iter().filter(|o| o.frame.contains(r#""t":"join""#)).count();
        assert_eq!(joins, 3, "d and e joined past the maximum");
        assert!(!r.per_member());
        r.tick(60);
        let outs = drain(&mut r);
        assert_eq!(outs.len(), 1);
        assert_eq!((outs[0].audience, frames(&outs)[0]["count"].as_u64()), (Audience::All, Some(5)));
        leave(&mut r, 61, Region::Weur, "e");
        leave(&mut r, 61, Region::Weur, "d");
        r.tick(200);
        let f = frames(&drain(&mut r));
        assert_eq!(f.len(), 1, "graces ran out: no leave events, one counts frame: {f:?}");
        assert_eq!(f[0]["count"], 3);
        assert!(r.per_member(), "the count at the maximum went out");
        leave(&mut r, 201, Region::Weur, "c");
        r.tick(400);
        assert!(frames(&drain(&mut r)).iter().any(|f| f["t"] == "leave"));
    }

    #[test]
    fn snapshot_pages_by_user_id() {
        let mut r = Roster::new(CONFIG);
        for u in ["c", "a", "b"] {
            join(&mut r, 0, Region::Weur, u);
        }
        let p = r.snapshot(None, 2);
        assert_eq!(p.members.iter().map(|m| m.user.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!((p.more, p.cursor.as_deref()), (true, Some("b")));
        let p = r.snapshot(p.cursor.as_deref(), 2);
        assert_eq!((p.members.len(), p.more, p.cursor), (1, false, None));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Connect(usize, usize),
        Disconnect(usize, usize),
        /// A relay restarts and sends its whole membership.
        Restart(usize),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..8usize, 0..3usize).prop_map(|(u, r)| Op::Connect(u, r)),
            4 => (0..8usize, 0..3usize).prop_map(|(u, r)| Op::Disconnect(u, r)),
            1 => (0..3usize).prop_map(Op::Restart),
            3 => (1..80u64).prop_map(Op::Advance),
        ]
    }

    /// A client of each kind, as the frames it received build it.
    #[derive(Default)]
    struct Clients {
        /// Full subscriber: user → region, from join/leave, reloaded from
        /// the snapshot on a counts frame at or under the maximum.
        members: BTreeMap<String, String>,
        last_counts: Option<Value>,
    }

    impl Clients {
        fn take(&mut self, r: &Roster, outs: &[Out]) {
            for o in outs {
                let f: Value = serde_json::from_str(&o.frame).unwrap();
                match (o.audience, f["t"].as_str()) {
                    (Audience::Full, Some("join")) => {
                        self.members.insert(f["user"].as_str().unwrap().into(), f["region"].as_str().unwrap().into());
                    }
                    (Audience::Full, Some("leave")) => {
                        assert!(self.members.remove(f["user"].as_str().unwrap()).is_some(), "leave of a non-member");
                    }
                    (_, Some("presence_counts")) => {
                        if o.audience == Audience::All && f["count"].as_u64().unwrap() <= CONFIG.events_max {
                            self.members = snapshot_members(r);
                        }
                        self.last_counts = Some(f);
                    }
                    other => panic!("unexpected {other:?}: {f}"),
                }
            }
        }
    }

    fn snapshot_members(r: &Roster) -> BTreeMap<String, String> {
        r.snapshot(None, 1000).members.into_iter().map(|m| (m.user, m.region.as_str().to_owned())).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn event_derived_state_equals_the_snapshot(ops in proptest::collection::vec(op(), 1..120)) {
            let mut roster = Roster::new(CONFIG);
            let mut relays: Vec<LocalPresence> = (0..3).map(|_| LocalPresence::default()).collect();
            let mut conns: HashMap<(usize, usize), u32> = HashMap::new();
            let mut clients = Clients::default();
            let mut now = 0;
            let send = |roster: &mut Roster, relay: &mut LocalPresence, region: Region, now: u64| {
                let report = relay.report();
                if let Some(full) = report.full.clone() {
                    roster.replace(now, region, full);
                }
                for d in report.deltas.iter().cloned() {
                    roster.apply(now, region, d);
                }
                relay.acked(report.full.is_some(), report.first + report.deltas.len() as u64);
            };
            for op in ops {
                match op {
                    Op::Connect(u, r) => {
                        relays[r].connected(&format!("u{u}"), None);
                        *conns.entry((u, r)).or_default() += 1;
                        send(&mut roster, &mut relays[r], REGIONS[r], now);
                    }
                    Op::Disconnect(u, r) => {
                        let n = conns.entry((u, r)).or_default();
                        if *n > 0 {
                            *n -= 1;
                            relays[r].disconnected(&format!("u{u}"));
                            send(&mut roster, &mut relays[r], REGIONS[r], now);
                        }
                    }
                    Op::Restart(r) => {
                        let open = conns.iter().filter(|((_, rr), n)| *rr == r && **n > 0).flat_map(|((u, _), n)| {
                            std::iter::repeat_n((format!("u{u}"), None), *n as usize)
                        });
                        relays[r] = LocalPresence::rebuilt(open.collect::<Vec<_>>());
                        send(&mut roster, &mut relays[r], REGIONS[r], now);
                    }
                    Op::Advance(ms) => {
                        now += ms;
                        roster.tick(now);
                    }
                }
                let outs: Vec<Out> = std::iter::from_fn(|| roster.poll_out()).collect();
                clients.take(&roster, &outs);
                let counts = roster.counts();
                prop_assert_eq!(counts.regions.values().sum::<u64>(), counts.count, "regions sum to the count");
                if roster.per_member() {
                    prop_assert_eq!(&clients.members, &snapshot_members(&roster));
                }
            }
            // Everything settles: every grace runs out, the last counts go out.
            now += CONFIG.grace_ms + CONFIG.interval_ms + 1;
            roster.tick(now);
            now += CONFIG.interval_ms;
            roster.tick(now);
            let outs: Vec<Out> = std::iter::from_fn(|| roster.poll_out()).collect();
            clients.take(&roster, &outs);
            prop_assert!(roster.per_member() || roster.count() > CONFIG.events_max);
            if roster.per_member() {
                prop_assert_eq!(&clients.members, &snapshot_members(&roster));
            }
            let connected: BTreeSet<String> = conns.iter().filter(|(_, n)| **n > 0).map(|((u, _), _)| format!("u{u}")).collect();
            let listed: BTreeSet<String> = snapshot_members(&roster).into_keys().collect();
            prop_assert_eq!(connected, listed, "after every grace, the members are exactly the users connected");
            if let Some(c) = &clients.last_counts {
                prop_assert_eq!(c["count"].as_u64(), Some(roster.count()), "the last counts frame is exact");
            }
        }
    }
}

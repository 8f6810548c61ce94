//! A seeded, deterministic simulation of one room: a [`RoomCore`], one to
//! four [`RelayCore`]s (in regions of [`Region::ALL`]) with one to three
//! clients each, joined by a simulated network on a virtual clock (u64 ms),
//! in the manner of quinn-proto's `Pair` harness and str0m's netem. No I/O,
//! no threads: every call is a message in a time-ordered queue, and both
//! cores are driven by the drain rule (an event, then `poll_action` until
//! `None`).
//!
//! What is simulated (the harness plays the Durable Object glue):
//! - the Room's storage: `Store`, `Prune`, `EraseAll`, `SaveMeta`,
//!   `SaveRelays` applied to an in-memory map; range reads served with
//!   [`RoomCore::range`]; the Durable Object alarm (one, replaced by each
//!   `SetAlarm`, fired once, persisted across restarts);
//! - every link call as a request and an answer that the network may drop,
//!   delay or reorder, and duplicate (requests of calls that are retried:
//!   the callee sees it twice, the caller takes the first answer):
//!   `deliver` calls (a call that cannot complete is reported with
//!   `delivered(Err)`, including one applied whose answer was lost),
//!   publish calls with a delivery riding in their answer (a lost answer
//!   is retried under the same batch id), range reads, joins and reports;
//!   HTTP publishes straight to the Room; regional outages of up to 90 s;
//! - clients joining (the join protocol: counted from the start of their
//!   admission, `begin_admission` .. `end_admission`, and counted again when
//!   the join answer comes), leaving, and publishing stored and ephemeral
//!   messages, each payload with a unique id, half of them with a `mid`;
//! - relay restarts: hibernation (an idle relay) or a crash (at any moment:
//!   what the old incarnation had in hand is lost, what it sent may still
//!   arrive), each a new core restored from the saved position with its
//!   clients still connected; Room restarts (a new core with a fresh `inc`
//!   built from storage: what was in flight to or from the old one is lost
//!   or still arrives); erasures; retention of 5 to 50 messages, so gaps
//!   are pruned away and announced by `reset`.
//!
//! After the fault phase comes a quiet phase: no new faults (an outage runs
//! its course), no new work, and 90 s of virtual time for alarms and
//! retries to settle.
//!
//! What is checked, in every generated case:
//! 1. Every client sees, after its welcome (epoch E, seq S), stored
//!    messages whose seqs grow by exactly one: no gap, no duplicate. A
//!    `reset` moves the expectation to its seq and never backwards: in the
//!    same epoch only past messages no longer stored, otherwise into a
//!    newer epoch (an erasure).
//! 2. Every stored message a client sees is the one stored under that seq,
//!    in the client's current epoch: nothing erased arrives labelled with a
//!    later epoch.
//! 3. Seq grows by exactly one across restarts and erasures; a payload is
//!    stored at most once per epoch (retried batches and `mid`s are
//!    answered, not stored again); every publish answer names the seq its
//!    payload is stored under; a welcome names a known epoch and a stored
//!    seq.
//! 4. Convergence: after the quiet phase every connected client has seen up
//!    to the Room's seq in the Room's epoch, and every relay with clients
//!    has its cursor there.
//!
//! Each core bug it found is pinned by a step-by-step test in
//! `link_sim_regressions.rs`. Ephemeral messages are published but excluded
//! from the invariants (they are at most once). Runs are reproducible: a
//! run is a function of the generated [`Scenario`] alone (proptest keeps
//! failing seeds in
//! `link_simulation.proptest-regressions`); `SIM_TRACE=1` prints every step
//! and `SIM_CASES=N` runs more cases.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use herald_core::backoff::Rng;
use herald_core::config::Retention;
use herald_core::link::{DeliveryHead, JoinReply, LinkPub, PubOutcome, PublishBatch, RangeHead, RelayReport};
use herald_core::relay::{RelayAction, RelayCore, Saved};
use herald_core::room::{Delivery, Meta, Restored, RoomAction, RoomCore, SavedRelay};
use herald_core::server_frame::{batch_frame, Message};
use herald_core::Region;
use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::Value;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};

const ROOM: &str = "sim";
/// How long the quiet phase runs, virtual ms: far past every backoff cap.
const QUIET_MS: u64 = 90_000;
/// Most publishes in one relay → Room call.
const MAX_PUBLISH_BATCH: usize = 8;

// ---------------------------------------------------------------------------
// The scenario proptest generates.

#[derive(Debug, Clone, Copy)]
struct NetFaults {
    /// Percent of messages dropped.
    drop: u64,
    /// Percent of requests duplicated.
    dup: u64,
    /// Percent of messages delayed by up to `max_delay_ms`.
    delay: u64,
    max_delay_ms: u64,
}

#[derive(Debug, Clone)]
enum Op {
    Publish { relay: usize, client: usize, count: usize, eph: bool, mid: bool },
    Join { relay: usize, client: usize },
    Leave { relay: usize, client: usize },
    /// `crash: false` is hibernation, which only happens to an idle relay
    /// (nothing in hand, no call of its own in flight); a crash happens at
    /// any moment, and what the old incarnation sent may still arrive.
    RestartRelay { relay: usize, crash: bool },
    /// A publish over HTTP, straight to the Room.
    HttpPublish { count: usize, mid: bool },
    /// Every message to or from the relay is lost for a while.
    Partition { relay: usize, ms: u64 },
    RestartRoom,
    Erase,
}

#[derive(Debug, Clone)]
struct Scenario {
    seed: u64,
    /// (region, clients) per relay.
    relays: Vec<(Region, usize)>,
    max_messages: u64,
    max_batch: usize,
    faults: NetFaults,
    /// (ms since the previous op, op).
    ops: Vec<(u64, Op)>,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0..4usize, 0..3usize, prop_oneof![3 => 1..4usize, 1 => 4..12usize], prop::bool::weighted(0.15), any::<bool>())
            .prop_map(|(relay, client, count, eph, mid)| Op::Publish { relay, client, count, eph, mid }),
        2 => (1..6usize, any::<bool>()).prop_map(|(count, mid)| Op::HttpPublish { count, mid }),
        1 => (0..4usize, prop_oneof![1_000..5_000u64, 5_000..40_000u64, 40_000..90_000u64]).prop_map(|(relay, ms)| Op::Partition { relay, ms }),
        3 => (0..4usize, 0..3usize).prop_map(|(relay, client)| Op::Join { relay, client }),
        2 => (0..4usize, 0..3usize).prop_map(|(relay, client)| Op::Leave { relay, client }),
        1 => (0..4usize, any::<bool>()).prop_map(|(relay, crash)| Op::RestartRelay { relay, crash }),
        1 => Just(Op::RestartRoom),
        1 => Just(Op::Erase),
    ]
}

fn arb_scenario() -> impl Strategy<Value = Scenario> {
    let relays = (prop::sample::subsequence(Region::ALL.to_vec(), 1..=4), prop::collection::vec(1..=3usize, 4))
        .prop_map(|(regions, clients)| regions.into_iter().zip(clients).collect::<Vec<_>>());
    let faults = (0..=25u64, 0..=10u64, 0..=30u64, prop_oneof![Just(300u64), Just(3_000u64)])
        .prop_map(|(drop, dup, delay, max_delay_ms)| NetFaults { drop, dup, delay, max_delay_ms });
    (
        any::<u64>(),
        relays,
        5..50u64,
        prop_oneof![Just(256usize), 1..4usize],
        faults,
        prop::collection::vec((0..400u64, arb_op()), 0..60),
    )
        .prop_map(|(seed, relays, max_messages, max_batch, faults, ops)| Scenario {
            seed,
            relays,
            max_messages,
            max_batch,
            faults,
            ops,
        })
}

// ---------------------------------------------------------------------------
// The network: calls, messages and timers.

type CallId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKind {
    Deliver,
    Publish,
    Range,
    Join { client: usize },
    Report,
}

/// One call: who made it, and whether its caller has had its result.
#[derive(Debug)]
struct Call {
    kind: CallKind,
    relay: usize,
    /// The incarnation of the caller (the Room's `inc` for a deliver call,
    /// the relay's life otherwise): a result for a dead caller goes nowhere.
    caller: u64,
    resolved: bool,
}

#[derive(Debug)]
enum ToRoom {
    DeliverAnswer { report: RelayReport },
    Publish { batch: PublishBatch },
    Range { after: u64, upto: u64 },
    Join { report: RelayReport },
    Report { report: RelayReport },
}

#[derive(Debug)]
enum ToRelay {
    Deliver { head: DeliveryHead, frame: String },
    PublishAnswer { outcomes: Vec<PubOutcome>, delivery: Option<Delivery> },
    RangeAnswer { head: RangeHead, frame: Option<String> },
    JoinAnswer { reply: JoinReply },
    ReportAnswer,
}

#[derive(Debug)]
enum Ev {
    ToRoom(CallId, ToRoom),
    ToRelay(CallId, usize, ToRelay),
    /// The call could not complete: its caller gets an error.
    Failed(CallId),
    /// The Room's alarm, by its arming number.
    Alarm(u64),
    /// An HTTP publish reaches the Room.
    HttpPublish(Vec<Pending>),
    /// A relay's publish call is tried again.
    RetryPublish { relay: usize, life: u64 },
}

// ---------------------------------------------------------------------------
// The Room side: the core and what the glue persists.

#[derive(Debug, Default)]
struct Storage {
    meta: Option<Meta>,
    messages: BTreeMap<u64, Message>,
    mids: BTreeMap<String, (u64, u64)>,
    relays: Vec<SavedRelay>,
    /// Remembered publish batches: (id, outcomes, stamp).
    batches: Vec<(String, Vec<PubOutcome>, u64)>,
    /// The armed alarm: (when, arming number).
    alarm: Option<(u64, u64)>,
}

struct RoomSide {
    core: RoomCore,
    inc: u64,
    storage: Storage,
}

// ---------------------------------------------------------------------------
// The Relay side: the core, its persisted position, its clients, and the
// glue's publish queue and report loop.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    Off,
    Joining,
    On,
}

#[derive(Debug)]
struct Client {
    conn: Conn,
    /// (epoch, last seq seen) since the welcome.
    at: Option<(String, u64)>,
    msgs: u64,
}

/// A publish waiting at a relay: payload id, and the publish itself.
type Pending = (u64, LinkPub);

struct InFlightPub {
    id: String,
    pubs: Vec<Pending>,
    attempt: u32,
    call: CallId,
}

struct RelaySide {
    region: Region,
    core: RelayCore<String>,
    /// Incarnation number, bumped by each restart.
    life: u64,
    saved: Option<Saved>,
    clients: Vec<Client>,
    outbox: VecDeque<Pending>,
    publishing: Option<InFlightPub>,
    /// Deliver calls in hand, by the token the core answers with.
    tokens: BTreeMap<u64, CallId>,
    next_token: u64,
    /// Every message to or from this relay is lost until then (a regional
    /// outage begun in the fault phase; it may end in the quiet phase).
    partitioned_until: u64,
}

impl RelaySide {
    /// Open client connections: what `needs_join`, `joined` and the fan-out
    /// go by.
    fn open(&self) -> u32 {
        self.clients.iter().filter(|c| c.conn == Conn::On).count() as u32
    }

    /// Whether a client in this state is being admitted: it counts in the
    /// relay's reports (`begin_admission` .. `end_admission`).
    fn admitting(conn: Conn) -> bool {
        conn == Conn::Joining
    }
}

// ---------------------------------------------------------------------------
// The simulation.

struct Sim {
    now: u64,
    rng: Rng,
    faults: Option<NetFaults>,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Ev>,
    next_event: u64,
    calls: HashMap<CallId, Call>,
    next_call: CallId,
    retention: Retention,
    max_batch: usize,
    room: RoomSide,
    relays: Vec<RelaySide>,
    next_inc: u64,
    /// Relay incarnations, increasing across restarts (the construction
    /// time, in the glue).
    next_relay_incarnation: u64,
    next_payload: u64,
    next_alarm: u64,
    erasures: u64,
    /// Epoch name → generation.
    epochs: HashMap<String, u64>,
    /// Every message ever stored, by seq: (epoch, payload).
    ever_stored: HashMap<u64, (String, u64)>,
    /// (epoch, payload) → (seq, Room inc, batch id), for "stored at most
    /// once per epoch".
    stored_once: HashMap<(String, u64), (u64, u64, Option<String>)>,
    /// The publish batch the Room is handling.
    batch_in_hand: Option<String>,
    last_stored: u64,
    /// Counters, for the coverage summary.
    stats: SimStats,
    /// `SIM_TRACE=1`: every step to stderr, for reading a failing case.
    tracing: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct SimStats {
    msgs_seen: u64,
    resets_seen: u64,
    erase_resets_seen: u64,
    publish_retries: u64,
    room_restarts: u64,
    relay_restarts: u64,
    dropped: u64,
    duplicated: u64,
    prunes: u64,
    /// Times the Room dropped a relay that had clients (a `SaveRelays`
    /// without it): after `MAX_ATTEMPTS`, or a count of zero.
    forgot_relay_with_clients: u64,
    /// Connected clients checked at the end.
    converged_clients: u64,
}

impl Sim {
    fn new(s: &Scenario) -> Self {
        let retention = Retention { max_messages: s.max_messages, ttl_ms: 3_600_000, dedup_window_ms: 60_000 };
        let inc = 1000;
        let mut core = RoomCore::new(ROOM, None, "E0".into(), retention, inc);
        core.set_max_batch(s.max_batch);
        let rng = Rng::new(s.seed);
        let relays = s
            .relays
            .iter()
            .enumerate()
            .map(|(i, &(region, clients))| {
                let mut relay = RelayCore::new(ROOM, region, 1, format!("r{i}l0"), i as u64 + 1);
                relay.set_retention(retention);
                RelaySide {
                    region,
                    core: relay,
                    life: 0,
                    saved: None,
                    clients: (0..clients).map(|_| Client { conn: Conn::Off, at: None, msgs: 0 }).collect(),
                    outbox: VecDeque::new(),
                    publishing: None,
                    tokens: BTreeMap::new(),
                    next_token: 0,
                    partitioned_until: 0,
                }
            })
            .collect();
        let mut sim = Sim {
            now: 0,
            rng,
            faults: Some(s.faults),
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            next_event: 0,
            calls: HashMap::new(),
            next_call: 0,
            retention,
            max_batch: s.max_batch,
            room: RoomSide { core, inc, storage: Storage::default() },
            relays,
            next_inc: inc + 1,
            next_relay_incarnation: 100,
            next_payload: 0,
            next_alarm: 0,
            erasures: 0,
            epochs: HashMap::from([("E0".to_owned(), 0)]),
            ever_stored: HashMap::new(),
            stored_once: HashMap::new(),
            batch_in_hand: None,
            last_stored: 0,
            stats: SimStats::default(),
            tracing: std::env::var_os("SIM_TRACE").is_some(),
        };
        sim.drain_room();
        sim
    }

    fn trace(&self, line: impl FnOnce() -> String) {
        if self.tracing {
            eprintln!("{:>7} {}", self.now, line());
        }
    }

    // --- the event queue -------------------------------------------------

    fn schedule(&mut self, at: u64, ev: Ev) {
        let n = self.next_event;
        self.next_event += 1;
        self.events.insert(n, ev);
        self.queue.push(Reverse((at.max(self.now), n)));
    }

    /// Runs every event due up to `until`, then sets the clock to it.
    fn run_until(&mut self, until: u64) {
        while let Some(&Reverse((at, n))) = self.queue.peek() {
            if at > until {
                break;
            }
            self.queue.pop();
            self.now = self.now.max(at);
            let ev = self.events.remove(&n).expect("a scheduled event");
            self.trace(|| format!("{ev:?}"));
            self.handle(ev);
        }
        self.now = self.now.max(until);
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.rng.below(100) < percent
    }

    /// One message's trip: a few ms, sometimes much longer under faults.
    fn latency(&mut self) -> u64 {
        let mut ms = 1 + self.rng.below(20);
        if let Some(f) = self.faults {
            if self.chance(f.delay) {
                ms += self.rng.below(f.max_delay_ms + 1);
            }
        }
        ms
    }

    /// Whether the network loses this message.
    fn lost(&mut self, relay: usize) -> bool {
        let drop = self.faults.map_or(0, |f| f.drop);
        // An outage runs its course, into the quiet phase.
        let cut_off = self.now < self.relays[relay].partitioned_until;
        let lost = self.chance(drop) || cut_off;
        self.stats.dropped += u64::from(lost);
        lost
    }

    fn new_call(&mut self, kind: CallKind, relay: usize, caller: u64) -> CallId {
        let id = self.next_call;
        self.next_call += 1;
        self.calls.insert(id, Call { kind, relay, caller, resolved: false });
        id
    }

    /// Sends a request: lost (the caller gets an error later), or delivered
    /// once or, under faults, twice.
    fn request(&mut self, call: CallId, make: impl Fn() -> Ev) {
        if self.lost(self.calls[&call].relay) {
            self.trace(|| format!("  lost: {:?}", make()));
            let at = self.now + 1 + self.rng.below(2_000);
            self.schedule(at, Ev::Failed(call));
            return;
        }
        let at = self.now + self.latency();
        self.schedule(at, make());
        // Calls that are retried (deliveries, range reads, publishes) may
        // arrive twice; joins and reports are never sent again.
        let kind = self.calls[&call].kind;
        let dup = match kind {
            CallKind::Deliver | CallKind::Range | CallKind::Publish => self.faults.map_or(0, |f| f.dup),
            CallKind::Join { .. } | CallKind::Report => 0,
        };
        if self.chance(dup) {
            self.stats.duplicated += 1;
            let at = self.now + self.latency();
            self.trace(|| format!("  duplicated, second at {at}: {:?}", make()));
            self.schedule(at, make());
        }
    }

    /// Sends an answer: delivered, or lost (the caller gets an error).
    /// Sends an answer: delivered, or lost (the caller gets an error).
    fn answer(&mut self, call: CallId, ev: Ev) {
        if self.lost(self.calls[&call].relay) {
            self.trace(|| format!("  lost: {ev:?}"));
            let at = self.now + 1 + self.rng.below(2_000);
            self.schedule(at, Ev::Failed(call));
        } else {
            let at = self.now + self.latency();
            self.schedule(at, ev);
        }
    }

    /// Marks a call's result as taken; false when it already was, or when
    /// its caller no longer exists.
    fn resolve(&mut self, call: CallId) -> Option<(CallKind, usize)> {
        let c = self.calls.get_mut(&call).expect("a known call");
        if c.resolved {
            return None;
        }
        c.resolved = true;
        let (kind, relay, caller) = (c.kind, c.relay, c.caller);
        let alive = match kind {
            CallKind::Deliver => caller == self.room.inc,
            _ => caller == self.relays[relay].life,
        };
        if alive {
            Some((kind, relay))
        } else {
            // A join whose relay died meanwhile: the client's connect failed.
            if let CallKind::Join { client } = kind {
                self.set_conn(relay, client, Conn::Off);
            }
            None
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::ToRoom(call, msg) => self.at_room(call, msg),
            Ev::ToRelay(call, relay, msg) => self.at_relay(call, relay, msg),
            Ev::Failed(call) => self.failed(call),
            Ev::HttpPublish(pubs) => {
                for (payload, p) in pubs {
                    let outcome = self.room.core.publish(self.now, p);
                    self.drain_room();
                    let stored = outcome.seq.and_then(|seq| self.ever_stored.get(&seq)).map(|(_, p)| *p);
                    assert_eq!(stored, Some(payload), "the answer names the seq its payload is stored under");
                }
            }
            Ev::Alarm(n) => {
                if self.room.storage.alarm.is_some_and(|(_, armed)| armed == n) {
                    self.room.storage.alarm = None;
                    self.room.core.alarm(self.now);
                    self.drain_room();
                }
            }
            Ev::RetryPublish { relay, life } => {
                if self.relays[relay].life == life {
                    self.send_publish(relay);
                }
            }
        }
    }

    // --- the Room ----------------------------------------------------------

    fn at_room(&mut self, call: CallId, msg: ToRoom) {
        let now = self.now;
        let relay = self.calls[&call].relay;
        match msg {
            ToRoom::DeliverAnswer { report } => {
                if let Some((_, relay)) = self.resolve(call) {
                    let region = self.relays[relay].region;
                    self.room.core.delivered(now, region, Ok(Some(report)));
                    self.drain_room();
                }
            }
            ToRoom::Publish { batch } => {
                let region = batch.report.region;
                self.batch_in_hand = Some(batch.id.clone());
                let outcomes = self.room.core.publish_batch(now, batch);
                let delivery = self.room.core.reply_delivery(now, region);
                self.drain_room();
                self.answer(call, Ev::ToRelay(call, relay, ToRelay::PublishAnswer { outcomes, delivery }));
                self.batch_in_hand = None;
            }
            ToRoom::Range { after, upto } => {
                let plan = self.room.core.range(now, after, upto, None);
                let mut head = plan.head;
                let read: Vec<(u64, String)> = if plan.upto > head.from {
                    let rows = self.room.storage.messages.range(head.from + 1..=plan.upto);
                    rows.take(plan.limit as usize).map(|(seq, m)| (*seq, m.to_frame())).collect()
                } else {
                    Vec::new()
                };
                head.last = read.last().map_or(head.from, |(seq, _)| *seq);
                let frames: Vec<&str> = read.iter().map(|(_, f)| f.as_str()).collect();
                let frame = (!frames.is_empty()).then(|| batch_frame(&frames));
                self.answer(call, Ev::ToRelay(call, relay, ToRelay::RangeAnswer { head, frame }));
            }
            ToRoom::Join { report } => {
                let reply = self.room.core.report(now, report);
                self.drain_room();
                self.answer(call, Ev::ToRelay(call, relay, ToRelay::JoinAnswer { reply }));
            }
            ToRoom::Report { report } => {
                self.room.core.report(now, report);
                self.drain_room();
                self.answer(call, Ev::ToRelay(call, relay, ToRelay::ReportAnswer));
            }
        }
    }

    /// Carries out the Room's actions, in order (the drain rule).
    fn drain_room(&mut self) {
        while let Some(action) = self.room.core.poll_action() {
            self.trace(|| format!("  room {} -> {action:?}", self.room.inc));
            match action {
                RoomAction::SaveMeta(meta) => self.room.storage.meta = Some(meta),
                RoomAction::Store(m) => self.store(m),
                RoomAction::SaveRelays(table) => {
                    let dropped = self.relays.iter().filter(|r| r.open() > 0 && !table.iter().any(|t| t.region == r.region)).count();
                    self.stats.forgot_relay_with_clients += dropped as u64;
                    self.room.storage.relays = table;
                }
                RoomAction::Prune(p) => {
                    self.stats.prunes += 1;
                    let st = &mut self.room.storage;
                    st.messages.retain(|seq, _| *seq > p.upto_seq);
                    st.mids.retain(|_, (_, ts)| *ts >= p.mids_before_ts);
                    st.batches.retain(|(_, _, ts)| *ts >= p.mids_before_ts);
                }
                RoomAction::EraseAll => {
                    // The Room forgets its batches on erasure too: so does storage.
                    self.room.storage.messages.clear();
                    self.room.storage.mids.clear();
                    self.room.storage.batches.clear();
                }
                RoomAction::RememberBatch { id, outcomes, ts } => self.room.storage.batches.push((id, outcomes, ts)),
                // The simulation has no presence calls, webhooks, nor read marks.
                RoomAction::SavePresence { .. } | RoomAction::Webhook(_) | RoomAction::SaveRead { .. } => {}
                RoomAction::SetAlarm(at) => {
                    self.next_alarm += 1;
                    let n = self.next_alarm;
                    self.room.storage.alarm = Some((at, n));
                    self.schedule(at, Ev::Alarm(n));
                }
                RoomAction::Deliver(d) => {
                    let relay = self.relays.iter().position(|r| r.region == d.region).expect("a simulated region");
                    let call = self.new_call(CallKind::Deliver, relay, self.room.inc);
                    let (head, frame) = (d.head, d.frame.to_string());
                    self.request(call, || Ev::ToRelay(call, relay, ToRelay::Deliver { head: head.clone(), frame: frame.clone() }));
                }
            }
        }
    }

    /// `Store`: invariant 3 is checked here.
    fn store(&mut self, m: Message) {
        let seq = m.seq.expect("a stored message has a seq");
        assert_eq!(seq, self.last_stored + 1, "seq grows by exactly one, across restarts and erasures");
        self.last_stored = seq;
        let epoch = self.room.core.epoch().to_owned();
        let payload = payload_of(&m.data);
        let by = (seq, self.room.inc, self.batch_in_hand.clone());
        if let Some((first, inc, batch)) = self.stored_once.insert((epoch.clone(), payload), by) {
            panic!(
                "payload {payload} stored twice in epoch {epoch}: seq {first} (Room {inc}, batch {batch:?}) and {seq} (Room {}, batch {:?})",
                self.room.inc, self.batch_in_hand
            );
        }
        self.ever_stored.insert(seq, (epoch, payload));
        let st = &mut self.room.storage;
        if let Some(meta) = st.meta.as_mut() {
            meta.seq = seq;
        }
        if let Some(mid) = &m.mid {
            // As the glue keys it: (publisher, mid).
            st.mids.insert(herald_core::history::mid_key(m.from.as_deref(), mid), (seq, m.ts));
        }
        st.messages.insert(seq, m);
    }

    // --- a Relay -------------------------------------------------------------

    fn at_relay(&mut self, call: CallId, r: usize, msg: ToRelay) {
        match msg {
            ToRelay::Deliver { head, frame } => {
                // A call from any Room incarnation is applied by whichever
                // relay incarnation is alive when it lands.
                let rs = &mut self.relays[r];
                rs.next_token += 1;
                let token = rs.next_token;
                rs.tokens.insert(token, call);
                let frame = (!frame.is_empty()).then_some(frame);
                rs.core.handle_delivery(Some(token), head, frame);
                self.drain_relay(r);
            }
            ToRelay::PublishAnswer { outcomes, delivery } => {
                if self.resolve(call).is_none() {
                    return;
                }
                let done = self.relays[r].publishing.take().expect("the call in flight");
                assert_eq!(done.call, call);
                assert_eq!(outcomes.len(), done.pubs.len());
                for ((payload, p), outcome) in done.pubs.iter().zip(&outcomes) {
                    assert_eq!(outcome.seq.is_none(), p.eph, "only ephemeral messages get no seq");
                    if let Some(seq) = outcome.seq {
                        // After an erasure the answer may name a seq of the
                        // old epoch, stored then.
                        let stored = self.ever_stored.get(&seq).map(|(_, p)| *p);
                        assert_eq!(stored, Some(*payload), "the answer names the seq its payload is stored under");
                    }
                }
                if let Some(d) = delivery {
                    let frame = (!d.frame.is_empty()).then(|| d.frame.to_string());
                    self.relays[r].core.handle_delivery(None, d.head, frame);
                    self.drain_relay(r);
                }
                self.pump_publishes(r);
            }
            ToRelay::RangeAnswer { head, frame } => {
                if self.resolve(call).is_some() {
                    self.relays[r].core.handle_range(head, frame);
                    self.drain_relay(r);
                }
            }
            ToRelay::JoinAnswer { reply } => {
                if let Some((CallKind::Join { client }, _)) = self.resolve(call) {
                    let open_now = self.relays[r].open();
                    self.relays[r].core.joined(reply, open_now);
                    self.drain_relay(r);
                    self.admit(r, client);
                }
            }
            ToRelay::ReportAnswer => {
                if self.resolve(call).is_some() {
                    self.report_done(r);
                }
            }
        }
    }

    /// A call's caller learns it failed.
    fn failed(&mut self, call: CallId) {
        self.trace(|| format!("  failed {:?}", self.calls[&call]));
        let Some((kind, r)) = self.resolve(call) else { return };
        match kind {
            CallKind::Deliver => {
                let region = self.relays[r].region;
                self.room.core.delivered(self.now, region, Err(()));
                self.drain_room();
            }
            CallKind::Publish => {
                let rs = &mut self.relays[r];
                let p = rs.publishing.as_mut().expect("the call in flight");
                let made = p.attempt;
                p.attempt += 1;
                match rs.core.publish_retry_delay(made) {
                    Some(delay) => {
                        let life = rs.life;
                        self.stats.publish_retries += 1;
                        self.schedule(self.now + delay, Ev::RetryPublish { relay: r, life });
                    }
                    None => {
                        // Given up: the publishers are told it failed.
                        rs.publishing = None;
                        self.pump_publishes(r);
                    }
                }
            }
            CallKind::Range => {
                self.relays[r].core.handle_range_failed();
                self.drain_relay(r);
            }
            CallKind::Join { client } => {
                self.set_conn(r, client, Conn::Off);
            }
            CallKind::Report => self.report_done(r),
        }
    }

    /// Carries out a relay's actions, in order (the drain rule).
    fn drain_relay(&mut self, r: usize) {
        while let Some(action) = self.relays[r].core.poll_action() {
            self.trace(|| format!("  relay {}/{} -> {action:?}", self.relays[r].region, self.relays[r].life));
            match action {
                RelayAction::FanOut(frame) => self.fan_out(r, &frame),
                RelayAction::FanOutPresence(..) => panic!("the simulation has no presence"),
                RelayAction::SendToUser { .. } => panic!("the simulation has no read marks"),
                RelayAction::SavePosition(saved) => self.relays[r].saved = Some(saved),
                RelayAction::ReadRange { after, upto } => {
                    let life = self.relays[r].life;
                    let call = self.new_call(CallKind::Range, r, life);
                    self.request(call, || Ev::ToRoom(call, ToRoom::Range { after, upto }));
                }
                RelayAction::Answer { token } => {
                    let rs = &mut self.relays[r];
                    let call = rs.tokens.remove(&token).expect("a token in hand");
                    let report = rs.core.report(rs.open());
                    self.answer(call, Ev::ToRoom(call, ToRoom::DeliverAnswer { report }));
                }
            }
        }
    }

    /// Sends a frame to every client connected at this moment, checking it.
    fn fan_out(&mut self, r: usize, frame: &str) {
        let items = match serde_json::from_str::<Value>(frame).expect("a JSON frame") {
            Value::Array(items) => items,
            one => vec![one],
        };
        // Everything at or below this is no longer readable.
        let gone_upto = self.room.core.read(self.now, 0, 0).after;
        let region = self.relays[r].region;
        let mut reached = 0;
        for (c, client) in self.relays[r].clients.iter_mut().enumerate() {
            if client.conn != Conn::On {
                continue;
            }
            reached += 1;
            let (epoch, last) = client.at.as_mut().expect("welcomed");
            for item in &items {
                let who = format!("client {region}#{c}");
                match item["t"].as_str() {
                    Some("msg") if item.get("eph").is_some() => {
                        assert!(item.get("seq").is_none(), "{who}: an ephemeral message has no seq: {item}");
                    }
                    Some("msg") => {
                        let seq = item["seq"].as_u64().expect("a stored message's seq");
                        assert_eq!(seq, *last + 1, "{who} in {epoch}: after {last} came {seq}: gap or duplicate ({frame})");
                        let (stored_epoch, payload) = self.ever_stored.get(&seq).expect("a message that was stored");
                        assert_eq!(item["data"]["p"].as_u64(), Some(*payload), "{who}: seq {seq} carries another payload");
                        assert_eq!(stored_epoch, epoch, "{who}: seq {seq} of {stored_epoch} arrived labelled {epoch}");
                        *last = seq;
                        client.msgs += 1;
                        self.stats.msgs_seen += 1;
                    }
                    Some("reset") => {
                        let to_epoch = item["epoch"].as_str().expect("a reset's epoch");
                        let to_seq = item["seq"].as_u64().expect("a reset's seq");
                        assert!(to_seq >= *last, "{who} in {epoch}: a reset back from {last} to {to_seq}");
                        if to_epoch == epoch {
                            assert!(to_seq <= gone_upto, "{who}: a reset to {to_seq} skips messages still stored (gone up to {gone_upto})");
                        } else {
                            let (from_gen, to_gen) = (self.epochs[epoch.as_str()], self.epochs[to_epoch]);
                            assert!(to_gen > from_gen, "{who}: a reset from {epoch} (gen {from_gen}) to {to_epoch} (gen {to_gen})");
                            *epoch = to_epoch.to_owned();
                            self.stats.erase_resets_seen += 1;
                        }
                        *last = to_seq;
                        self.stats.resets_seen += 1;
                    }
                    other => panic!("{who}: unexpected frame {other:?}: {item}"),
                }
            }
        }
        self.relays[r].core.sent(reached);
    }

    // --- clients -------------------------------------------------------------

    /// Moves a client to `conn`; an admission begins when the client starts
    /// connecting and ends when it is welcomed or fails, as in the glue.
    fn set_conn(&mut self, r: usize, c: usize, conn: Conn) {
        let rs = &mut self.relays[r];
        let was = std::mem::replace(&mut rs.clients[c].conn, conn);
        match (RelaySide::admitting(was), RelaySide::admitting(conn)) {
            (false, true) => rs.core.begin_admission(),
            (true, false) => rs.core.end_admission(),
            _ => {}
        }
    }

    fn connect(&mut self, r: usize, c: usize) {
        if self.relays[r].clients[c].conn != Conn::Off {
            return;
        }
        let open = self.relays[r].open();
        if self.relays[r].core.needs_join(open) {
            self.set_conn(r, c, Conn::Joining);
            let rs = &mut self.relays[r];
            let (report, life) = (rs.core.join_report(open), rs.life);
            let call = self.new_call(CallKind::Join { client: c }, r, life);
            self.request(call, || Ev::ToRoom(call, ToRoom::Join { report }));
        } else {
            self.admit(r, c);
        }
    }

    /// The welcome, and the client joins the fan-out at once.
    fn admit(&mut self, r: usize, c: usize) {
        let (_, welcome) = self.relays[r].core.admit(None).expect("a joined relay admits");
        let w: Value = serde_json::from_str(&welcome).unwrap();
        let epoch = w["epoch"].as_str().unwrap().to_owned();
        let seq = w["seq"].as_u64().unwrap();
        assert!(self.epochs.contains_key(&epoch), "welcome into an unknown epoch {epoch}");
        assert!(seq <= self.last_stored, "welcome at {seq}, past the last stored {}", self.last_stored);
        self.trace(|| format!("  client {}#{c} welcomed: {welcome}", self.relays[r].region));
        self.set_conn(r, c, Conn::On);
        self.relays[r].clients[c].at = Some((epoch, seq));
        self.schedule_report(r);
    }

    fn leave(&mut self, r: usize, c: usize) {
        if self.relays[r].clients[c].conn == Conn::On {
            self.set_conn(r, c, Conn::Off);
            self.relays[r].clients[c].at = None;
            self.relays[r].core.closed(&format!("{c}"));
            self.schedule_report(r);
        }
    }

    fn publish(&mut self, r: usize, c: usize, count: usize, eph: bool, mid: bool) {
        if self.relays[r].clients[c].conn != Conn::On {
            return;
        }
        for _ in 0..count {
            self.next_payload += 1;
            let p = self.next_payload;
            let data = RawValue::from_string(format!(r#"{{"p":{p}}}"#)).unwrap();
            let mid = (mid && !eph).then(|| format!("m{p}"));
            self.relays[r].outbox.push_back((p, LinkPub { from: Some(format!("u{c}")), data, mid, eph }));
        }
        self.pump_publishes(r);
    }

    /// Publishes over HTTP: the Worker calls the Room; the answer goes to the
    /// publisher, not to a relay. The call may be lost.
    fn http_publish(&mut self, count: usize, mid: bool) {
        let drop = self.faults.map_or(0, |f| f.drop);
        if self.chance(drop) {
            return;
        }
        let at = self.now + self.latency();
        let pubs = (0..count)
            .map(|_| {
                self.next_payload += 1;
                let p = self.next_payload;
                let data = RawValue::from_string(format!(r#"{{"p":{p}}}"#)).unwrap();
                (p, LinkPub { from: Some("http".into()), data, mid: mid.then(|| format!("m{p}")), eph: false })
            })
            .collect();
        self.schedule(at, Ev::HttpPublish(pubs));
    }

    /// One publish call at a time per relay; what waits rides in the next.
    fn pump_publishes(&mut self, r: usize) {
        let rs = &mut self.relays[r];
        if rs.publishing.is_some() || rs.outbox.is_empty() {
            return;
        }
        let n = rs.outbox.len().min(MAX_PUBLISH_BATCH);
        let pubs: Vec<Pending> = rs.outbox.drain(..n).collect();
        let id = rs.core.next_batch_id();
        rs.publishing = Some(InFlightPub { id, pubs, attempt: 1, call: 0 });
        self.send_publish(r);
    }

    /// Sends (or sends again, under the same id) the batch in hand.
    fn send_publish(&mut self, r: usize) {
        let life = self.relays[r].life;
        let call = self.new_call(CallKind::Publish, r, life);
        let rs = &mut self.relays[r];
        let report = rs.core.report(rs.open());
        let p = rs.publishing.as_mut().expect("a batch in hand");
        p.call = call;
        let batch = PublishBatch { id: p.id.clone(), report, pubs: p.pubs.iter().map(|(_, p)| p.clone()).collect() };
        self.request(call, || Ev::ToRoom(call, ToRoom::Publish { batch: batch.clone() }));
    }

    /// The glue's report loop: one in flight, changes meanwhile coalesced.
    fn schedule_report(&mut self, r: usize) {
        if self.relays[r].core.want_report() {
            self.send_report(r);
        }
    }

    fn send_report(&mut self, r: usize) {
        let rs = &mut self.relays[r];
        let (report, life) = (rs.core.report(rs.open()), rs.life);
        let call = self.new_call(CallKind::Report, r, life);
        self.request(call, || Ev::ToRoom(call, ToRoom::Report { report }));
    }

    fn report_done(&mut self, r: usize) {
        if self.relays[r].core.report_done() {
            self.send_report(r);
        }
    }

    // --- restarts and erasures ---------------------------------------------

    /// The relay object is constructed again (hibernation, eviction): it
    /// reads its saved position; its sockets stay open. Whatever the old
    /// incarnation had in hand is gone: its deliver calls fail, its publish
    /// batch and queue are lost, its reads and joins answer nobody.
    fn restart_relay(&mut self, r: usize) {
        self.stats.relay_restarts += 1;
        self.next_relay_incarnation += 1;
        let incarnation = self.next_relay_incarnation;
        let rs = &mut self.relays[r];
        rs.life += 1;
        let mut core = RelayCore::new(ROOM, rs.region, rs.life + 1, format!("r{r}l{}", rs.life), incarnation);
        core.set_retention(self.retention);
        if let Some(saved) = rs.saved.clone() {
            core.restore(saved);
        }
        // Sockets still being admitted are counted by the new incarnation.
        for client in &rs.clients {
            if RelaySide::admitting(client.conn) {
                core.begin_admission();
            }
        }
        rs.core = core;
        rs.outbox.clear();
        rs.publishing = None;
        let held: Vec<CallId> = std::mem::take(&mut rs.tokens).into_values().collect();
        for call in held {
            let at = self.now + 1 + self.rng.below(500);
            self.schedule(at, Ev::Failed(call));
        }
    }

    /// Whether the relay could hibernate: nothing in hand, no call of its own
    /// in flight, no request of its own still in the network.
    fn idle(&self, r: usize) -> bool {
        let rs = &self.relays[r];
        let mine = |call: &CallId| self.calls.get(call).is_some_and(|c| c.relay == r && c.kind != CallKind::Deliver);
        rs.tokens.is_empty()
            && rs.publishing.is_none()
            && rs.outbox.is_empty()
            && !self.calls.values().any(|c| c.relay == r && c.kind != CallKind::Deliver && !c.resolved)
            && !self.events.values().any(|ev| matches!(ev, Ev::ToRoom(call, _) if mine(call)))
    }

    /// The Room object is constructed again from storage, with a new `inc`.
    fn restart_room(&mut self) {
        self.stats.room_restarts += 1;
        let st = &self.room.storage;
        let restored = st.meta.clone().map(|meta| Restored {
            meta,
            relays: st.relays.clone(),
            index: st.messages.iter().map(|(seq, m)| (*seq, m.ts)).collect(),
            mids: st.mids.iter().map(|(mid, (seq, ts))| (mid.clone(), *seq, *ts)).collect(),
            batches: st.batches.iter().map(|(id, outcomes, _)| (id.clone(), outcomes.clone())).collect(),
            presence: vec![],
            presence_links: vec![],
        });
        let inc = self.next_inc;
        self.next_inc += 1;
        let mut core = RoomCore::new(ROOM, restored, "never-used".into(), self.retention, inc);
        core.set_max_batch(self.max_batch);
        self.room.core = core;
        self.room.inc = inc;
        self.drain_room();
    }

    fn erase(&mut self) {
        self.erasures += 1;
        let epoch = format!("E{}", self.erasures);
        self.epochs.insert(epoch.clone(), self.erasures);
        let (named, seq) = self.room.core.erase(self.now, epoch.clone());
        assert_eq!((named, seq), (epoch, self.last_stored));
        self.drain_room();
    }

    fn apply(&mut self, op: &Op) {
        self.trace(|| format!("op {op:?}"));
        let n = self.relays.len();
        match *op {
            Op::Publish { relay, client, count, eph, mid } => {
                let r = relay % n;
                let c = client % self.relays[r].clients.len();
                self.publish(r, c, count, eph, mid);
            }
            Op::Join { relay, client } => {
                let r = relay % n;
                let c = client % self.relays[r].clients.len();
                self.connect(r, c);
            }
            Op::Leave { relay, client } => {
                let r = relay % n;
                let c = client % self.relays[r].clients.len();
                self.leave(r, c);
            }
            Op::RestartRelay { relay, crash } => {
                let r = relay % n;
                if crash || self.idle(r) {
                    self.restart_relay(r);
                }
            }
            Op::HttpPublish { count, mid } => self.http_publish(count, mid),
            Op::Partition { relay, ms } => {
                let r = relay % n;
                self.relays[r].partitioned_until = self.relays[r].partitioned_until.max(self.now + ms);
            }
            Op::RestartRoom => self.restart_room(),
            Op::Erase => self.erase(),
        }
    }

    /// Invariant 4: everyone connected is level with the Room.
    fn check_converged(&mut self) {
        self.stats.converged_clients = self.relays.iter().map(|r| u64::from(r.open())).sum();
        let (epoch, seq) = (self.room.core.epoch(), self.room.core.seq());
        for rs in &self.relays {
            if rs.open() == 0 {
                continue;
            }
            assert_eq!(
                (rs.core.epoch(), rs.core.cursor()),
                (Some(epoch), Some(seq)),
                "relay {} with {} clients is not level with the Room",
                rs.region,
                rs.open()
            );
            for (c, client) in rs.clients.iter().enumerate() {
                assert!(matches!(client.conn, Conn::On | Conn::Off), "client {}#{c} still connecting after the quiet phase", rs.region);
                if client.conn == Conn::On {
                    let at = client.at.as_ref().map(|(e, s)| (e.as_str(), *s));
                    assert_eq!(at, Some((epoch, seq)), "client {}#{c} did not converge", rs.region);
                }
            }
        }
    }
}

/// The unique payload id in a message's data.
fn payload_of(data: &RawValue) -> u64 {
    let v: Value = serde_json::from_str(data.get()).unwrap();
    v["p"].as_u64().expect("a payload id")
}

/// Runs one scenario to the end of its quiet phase, checking as it goes.
fn run(s: &Scenario) -> SimStats {
    let mut sim = Sim::new(s);
    for r in 0..sim.relays.len() {
        for c in 0..sim.relays[r].clients.len() {
            sim.connect(r, c);
        }
    }
    for (gap, op) in &s.ops {
        sim.run_until(sim.now + gap);
        sim.apply(op);
    }
    // The quiet phase: no faults, no new work; alarms and retries settle.
    sim.faults = None;
    sim.trace(|| "quiet phase".to_owned());
    let outages_end = sim.relays.iter().map(|r| r.partitioned_until).max().unwrap_or(0);
    sim.run_until(sim.now.max(outages_end) + QUIET_MS);
    sim.check_converged();
    sim.stats
}

proptest! {
    // `SIM_CASES=N` runs more cases, to hunt; 500 keep `cargo test` at about a second.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("SIM_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(500),
        ..ProptestConfig::default()
    })]

    #[test]
    fn link_converges_under_faults(s in arb_scenario()) {
        run(&s);
    }
}

/// What the generated scenarios exercise, summed over a fixed sample: a
/// guard against a harness that quietly stops exercising something.
#[test]
fn the_generated_scenarios_exercise_every_path() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let mut sum = SimStats::default();
    for _ in 0..100 {
        let s = arb_scenario().new_tree(&mut runner).unwrap().current();
        let st = run(&s);
        sum.msgs_seen += st.msgs_seen;
        sum.resets_seen += st.resets_seen;
        sum.erase_resets_seen += st.erase_resets_seen;
        sum.publish_retries += st.publish_retries;
        sum.room_restarts += st.room_restarts;
        sum.relay_restarts += st.relay_restarts;
        sum.dropped += st.dropped;
        sum.duplicated += st.duplicated;
        sum.prunes += st.prunes;
        sum.forgot_relay_with_clients += st.forgot_relay_with_clients;
        sum.converged_clients += st.converged_clients;
    }
    eprintln!("{sum:?}");
    assert!(sum.msgs_seen > 1_000 && sum.resets_seen > sum.erase_resets_seen && sum.erase_resets_seen > 0, "{sum:?}");
    assert!(sum.publish_retries > 0 && sum.room_restarts > 0 && sum.relay_restarts > 0 && sum.prunes > 0, "{sum:?}");
    assert!(sum.dropped > 0 && sum.duplicated > 0 && sum.converged_clients > 100, "{sum:?}");
}

/// A fixed scenario with every fault, as a smoke test of the harness itself:
/// it must actually exercise what it claims to.
#[test]
fn the_harness_exercises_faults() {
    let ops: Vec<(u64, Op)> = (0..120)
        .map(|i| {
            let op = match i % 20 {
                5 => Op::RestartRelay { relay: i, crash: i % 40 == 5 },
                9 => Op::Leave { relay: i, client: 0 },
                10 => Op::Join { relay: i, client: 0 },
                13 => Op::RestartRoom,
                17 if i > 60 => Op::Erase,
                _ => Op::Publish { relay: i, client: i / 3, count: 1 + i % 3, eph: i % 7 == 0, mid: i % 2 == 0 },
            };
            (50 + (i as u64 * 37) % 200, op)
        })
        .collect();
    let s = Scenario {
        seed: 42,
        relays: vec![(Region::Weur, 3), (Region::Apac, 2), (Region::Enam, 1)],
        max_messages: 8,
        max_batch: 256,
        faults: NetFaults { drop: 15, dup: 5, delay: 20, max_delay_ms: 2_000 },
        ops,
    };
    let stats = run(&s);
    assert!(stats.msgs_seen > 100, "{stats:?}");
    assert!(stats.dropped > 0 && stats.duplicated > 0 && stats.publish_retries > 0, "{stats:?}");
    assert!(stats.erase_resets_seen > 0, "{stats:?}");
}


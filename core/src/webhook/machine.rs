//! The room's webhook state machine: occupancy with its debounce, and
//! delivery of the event queue, one request at a time.

use super::queue::{Event, EventQueue};
use super::{body, event_json, signature, EventType, WebhookConfig, MAX_BATCH_BYTES, MAX_BATCH_EVENTS, REQUEST_TIMEOUT_MS, RETRY};
use crate::backoff::Rng;
use crate::presence::MemberChange;
use serde::Serialize;

/// What the machine persists besides its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookState {
    /// The id prefix, chosen once per room.
    pub prefix: String,
    /// The number the next event gets.
    pub next: u64,
    /// The room has members, or had until a pending `room_vacated`.
    pub occupied: bool,
    /// When `room_vacated` is due, if the room is empty and debouncing.
    pub vacate_at: Option<u64>,
}

/// What storage held: the state and the undelivered events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedWebhooks {
    pub state: WebhookState,
    pub events: Vec<Event>,
}

/// Work for the glue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookAction {
    /// Store these new events, and the state (always before any request
    /// that carries them).
    Save { events: Vec<Event>, state: WebhookState },
    /// Delete the stored events numbered up to `upto`: delivered or dropped.
    Forget { upto: u64 },
    /// POST this; report the answer with [`Webhooks::sent`]. Never more
    /// than one at a time.
    Send(WebhookRequest),
}

/// One request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRequest {
    /// Names the attempt: its answer is reported with it, and an answer
    /// for an attempt the machine gave up on is ignored.
    pub id: u64,
    pub url: String,
    pub body: String,
    /// The `x-herald-signature` value.
    pub signature: String,
    /// The `x-herald-timestamp` value (ms), also the body's `sent_at`.
    pub timestamp: u64,
    /// Events in the body.
    pub events: usize,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered with this status.
    Status(u16),
    /// No answer: a network error or the timeout.
    Failed(String),
}

/// `stats.webhooks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookStats {
    /// Events waiting, the request in flight included.
    pub queued: usize,
    /// Bytes of their JSON.
    pub queued_bytes: usize,
    /// Events in the request in flight (0: none out).
    pub in_flight: usize,
    /// Events delivered with a 2xx answer.
    pub sent: u64,
    /// Requests made.
    pub requests: u64,
    /// Requests that failed (non-2xx, network error, timeout).
    pub failed_attempts: u64,
    /// Events given up: past the retry window, or refused by a full queue.
    pub dropped: u64,
    /// Status of the last answer; `null` before any, or after a request
    /// that got none.
    pub last_status: Option<u16>,
    /// Why the last request got no answer, if it did not.
    pub last_error: Option<String>,
    /// When a failed request goes again (ms since the Unix epoch).
    pub next_attempt_at: Option<u64>,
    /// Failures in a row.
    pub attempt: u32,
    pub occupied: bool,
}

/// Past the glue's own timeout, how long the machine waits for a
/// request's answer before it counts the request as failed (the task
/// that carried it was lost), so the queue never sticks on it.
pub const WATCHDOG_SLACK_MS: u64 = 5_000;

#[derive(Debug, Clone, Copy)]
struct InFlight {
    id: u64,
    last: u64,
    /// No answer by then: failed.
    watchdog: u64,
}

#[derive(Debug)]
pub struct Webhooks {
    config: WebhookConfig,
    room: String,
    queue: EventQueue,
    occupied: bool,
    vacate_at: Option<u64>,
    in_flight: Option<InFlight>,
    /// The last attempt the watchdog gave up on: its answer may still
    /// come, and a 2xx means the receiver has those events.
    given_up: Option<InFlight>,
    attempt: u32,
    hold_until: Option<u64>,
    rng: Rng,
    /// Events made since the last `Save`.
    unsaved: Vec<Event>,
    state_dirty: bool,
    forget: Option<u64>,
    sent: u64,
    requests: u64,
    failed_attempts: u64,
    dropped: u64,
    last_status: Option<u16>,
    last_error: Option<String>,
}

impl Webhooks {
    /// The machine for `room`, from what storage held (`None`: the room's
    /// first time with webhooks, numbered under `fresh_prefix`), with the
    /// roster's `members` now. A room that already has members when
    /// webhooks are first on is occupied without an event.
    pub fn new(config: WebhookConfig, room: String, saved: Option<SavedWebhooks>, fresh_prefix: String, members: u64, now: u64, seed: u64) -> Self {
        let (queue, occupied, vacate_at, fresh) = match saved {
            Some(s) => (EventQueue::new(s.state.prefix, s.state.next, s.events), s.state.occupied, s.state.vacate_at, false),
            None => (EventQueue::new(fresh_prefix, 1, Vec::new()), members > 0, None, true),
        };
        let mut w = Webhooks {
            config,
            room,
            queue,
            occupied,
            vacate_at,
            in_flight: None,
            given_up: None,
            attempt: 0,
            hold_until: None,
            rng: Rng::new(seed.rotate_left(29) ^ 0x40b4),
            unsaved: Vec::new(),
            state_dirty: fresh,
            forget: None,
            sent: 0,
            requests: 0,
            failed_attempts: 0,
            dropped: 0,
            last_status: None,
            last_error: None,
        };
        w.observe(now, Vec::new(), members);
        w
    }

    /// The roster changed: its member changes in order, and how many
    /// members it has now.
    pub fn observe(&mut self, now: u64, changes: Vec<MemberChange>, members: u64) {
        // A debounce that ran out before this (a late alarm) is a vacancy
        // that happened: announced before whoever arrives now.
        self.tick(now);
        for change in changes {
            match change {
                MemberChange::Added(user) => {
                    if !self.occupied {
                        self.occupied = true;
                        self.push(now, EventType::RoomOccupied, None);
                    }
                    if self.vacate_at.take().is_some() {
                        self.state_dirty = true;
                    }
                    self.push(now, EventType::MemberAdded, Some(&user));
                }
                MemberChange::Removed(user) => self.push(now, EventType::MemberRemoved, Some(&user)),
            }
        }
        if members > 0 {
            if self.vacate_at.take().is_some() {
                self.state_dirty = true;
            }
            if !self.occupied {
                // Members restored without the event having been saved.
                self.occupied = true;
                self.push(now, EventType::RoomOccupied, None);
            }
        } else if self.occupied && self.vacate_at.is_none() {
            self.vacate_at = Some(now.saturating_add(self.config.vacate_ms));
            self.state_dirty = true;
        }
        self.tick(now);
    }

    /// Fires the vacancy whose debounce ran out.
    fn tick(&mut self, now: u64) {
        if self.vacate_at.is_some_and(|t| t <= now) {
            self.vacate_at = None;
            self.occupied = false;
            self.state_dirty = true;
            self.push(now, EventType::RoomVacated, None);
        }
    }

    fn push(&mut self, now: u64, kind: EventType, user: Option<&str>) {
        self.state_dirty = true;
        let room = &self.room;
        match self.queue.push(now, kind.is_occupancy(), |id| event_json(id, kind, room, user, now)) {
            Ok(event) => self.unsaved.push(event.clone()),
            Err(_) => self.dropped += 1,
        }
    }

    fn state(&self) -> WebhookState {
        WebhookState {
            prefix: self.queue.prefix().to_owned(),
            next: self.queue.next(),
            occupied: self.occupied,
            vacate_at: self.vacate_at,
        }
    }

    /// The next thing to do at `now`, or `None` until the next event or
    /// deadline. Drain until `None`.
    pub fn poll(&mut self, now: u64) -> Option<WebhookAction> {
        self.tick(now);
        if let Some(f) = self.in_flight.filter(|f| f.watchdog <= now) {
            self.sent(now, f.id, Outcome::Failed("the request's answer never came back".into()));
            self.given_up = Some(f);
        }
        if self.state_dirty || !self.unsaved.is_empty() {
            self.state_dirty = false;
            return Some(WebhookAction::Save { events: std::mem::take(&mut self.unsaved), state: self.state() });
        }
        if let Some(upto) = self.forget.take() {
            return Some(WebhookAction::Forget { upto });
        }
        if self.in_flight.is_some() || self.queue.is_empty() || self.hold_until.is_some_and(|h| h > now) {
            return None;
        }
        self.hold_until = None;
        let len = self.queue.batch_len(MAX_BATCH_EVENTS, MAX_BATCH_BYTES);
        let last = self.queue.front(len).last()?.n;
        let body = body(now, self.queue.front(len).map(|e| e.json.as_str()));
        let signature = signature(self.config.secret.as_bytes(), body.as_bytes());
        self.requests += 1;
        let id = self.requests;
        self.in_flight = Some(InFlight { id, last, watchdog: now.saturating_add(REQUEST_TIMEOUT_MS + WATCHDOG_SLACK_MS) });
        Some(WebhookAction::Send(WebhookRequest { id, url: self.config.url.clone(), body, signature, timestamp: now, events: len }))
    }

    /// The answer to request `id`: the one in flight, or a 2xx that came
    /// late for the attempt the watchdog gave up on (its events are
    /// delivered, so they are not sent again). Anything else is ignored.
    pub fn sent(&mut self, now: u64, id: u64, outcome: Outcome) {
        let late = self.given_up.filter(|f| f.id == id && matches!(outcome, Outcome::Status(200..=299)));
        let Some(flight) = self.in_flight.filter(|f| f.id == id).or(late) else { return };
        if late.is_some() {
            self.given_up = None;
        } else {
            self.in_flight = None;
        }
        match outcome {
            Outcome::Status(status) if (200..300).contains(&status) => {
                self.sent += self.queue.pop_through(flight.last) as u64;
                self.forget = self.forget.max(Some(flight.last));
                self.attempt = 0;
                self.hold_until = None;
                self.last_status = Some(status);
                self.last_error = None;
            }
            other => {
                self.failed_attempts += 1;
                (self.last_status, self.last_error) = match other {
                    Outcome::Status(s) => (Some(s), None),
                    Outcome::Failed(why) => (None, Some(why.chars().take(200).collect())),
                };
                self.hold_until = Some(now.saturating_add(RETRY.delay(self.attempt, &mut self.rng)));
                self.attempt = self.attempt.saturating_add(1);
                let expired = now.checked_sub(self.config.retry_ms).and_then(|cutoff| self.queue.expire(cutoff));
                if let Some((last, count)) = expired {
                    self.dropped += count as u64;
                    self.forget = self.forget.max(Some(last));
                }
            }
        }
    }

    /// When [`Webhooks::poll`] next has something to do without a new
    /// event: a vacancy's debounce, or a retry.
    pub fn next_deadline(&self) -> Option<u64> {
        let retry = (self.in_flight.is_none() && !self.queue.is_empty()).then_some(self.hold_until).flatten();
        let watchdog = self.in_flight.map(|f| f.watchdog);
        [self.vacate_at, retry, watchdog].into_iter().flatten().min()
    }

    pub fn stats(&self) -> WebhookStats {
        WebhookStats {
            queued: self.queue.len(),
            queued_bytes: self.queue.bytes(),
            in_flight: self.in_flight.map_or(0, |f| self.queue.front(usize::MAX).take_while(|e| e.n <= f.last).count()),
            sent: self.sent,
            requests: self.requests,
            failed_attempts: self.failed_attempts,
            dropped: self.dropped,
            last_status: self.last_status,
            last_error: self.last_error.clone(),
            next_attempt_at: self.hold_until.filter(|_| !self.queue.is_empty()),
            attempt: self.attempt,
            occupied: self.occupied,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::{WebhookSecret, REQUEST_TIMEOUT_MS};
    use proptest::prelude::*;
    use serde_json::Value;
    use std::collections::BTreeMap;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn config() -> WebhookConfig {
        WebhookConfig { url: "http://h/x".into(), secret: WebhookSecret::new(SECRET), vacate_ms: 1_000, retry_ms: 300_000 }
    }

    fn machine() -> Webhooks {
        Webhooks::new(config(), "r".into(), None, "pfx".into(), 0, 0, 1)
    }

    fn added(u: &str) -> MemberChange {
        MemberChange::Added(u.into())
    }

    fn removed(u: &str) -> MemberChange {
        MemberChange::Removed(u.into())
    }

    /// Drains the machine: the requests it makes, and the other actions.
    fn drain(w: &mut Webhooks, now: u64) -> (Vec<WebhookRequest>, Vec<WebhookAction>) {
        let (mut sends, mut others) = (Vec::new(), Vec::new());
        while let Some(a) = w.poll(now) {
            match a {
                WebhookAction::Send(r) => sends.push(r),
                a => others.push(a),
            }
        }
        (sends, others)
    }

    fn events(r: &WebhookRequest) -> Vec<Value> {
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["sent_at"].as_u64(), Some(r.timestamp));
        assert!(crate::webhook::verify(SECRET, r.body.as_bytes(), &r.signature), "signed");
        v["events"].as_array().unwrap().clone()
    }

    fn types(r: &WebhookRequest) -> Vec<String> {
        events(r)
            .iter()
            .map(|e| format!("{}{}", e["type"].as_str().unwrap(), e["user"].as_str().map_or(String::new(), |u| format!(":{u}"))))
            .collect()
    }

    #[test]
    fn occupied_members_and_vacated_after_the_debounce() {
        let mut w = machine();
        let (sends, others) = drain(&mut w, 0);
        assert!(sends.is_empty());
        assert!(matches!(&others[..], [WebhookAction::Save { events, state }] if events.is_empty() && state.prefix == "pfx"), "{others:?}");
        w.observe(10, vec![added("ana"), added("bo")], 2);
        let (sends, others) = drain(&mut w, 10);
        assert!(matches!(&others[0], WebhookAction::Save { events, .. } if events.len() == 3), "saved before sent: {others:?}");
        assert_eq!(types(&sends[0]), ["room_occupied", "member_added:ana", "member_added:bo"]);
        let ids: Vec<Value> = events(&sends[0]).iter().map(|e| e["id"].clone()).collect();
        assert_eq!(ids, ["pfx-1", "pfx-2", "pfx-3"]);
        w.observe(20, vec![removed("ana")], 1);
        assert!(drain(&mut w, 20).0.is_empty(), "one request at a time");
        w.sent(30, w.requests, Outcome::Status(204));
        let (sends, others) = drain(&mut w, 30);
        assert_eq!(others, vec![WebhookAction::Forget { upto: 3 }]);
        assert_eq!(types(&sends[0]), ["member_removed:ana"]);
        w.sent(31, w.requests, Outcome::Status(200));
        w.observe(40, vec![removed("bo")], 0);
        assert_eq!(w.next_deadline(), Some(1_040), "the debounce");
        let (sends, _) = drain(&mut w, 40);
        assert_eq!(types(&sends[0]), ["member_removed:bo"]);
        w.sent(41, w.requests, Outcome::Status(200));
        assert!(drain(&mut w, 1_039).0.is_empty());
        let (sends, _) = drain(&mut w, 1_040);
        assert_eq!(types(&sends[0]), ["room_vacated"]);
        w.sent(1_041, w.requests, Outcome::Status(200));
        let s = w.stats();
        assert_eq!((s.sent, s.requests, s.queued, s.occupied, s.dropped), (6, 4, 0, false, 0));
    }

    #[test]
    fn a_member_within_the_debounce_cancels_the_vacancy_and_a_late_one_does_not() {
        let mut w = machine();
        w.observe(0, vec![added("ana")], 1);
        w.observe(10, vec![removed("ana")], 0);
        w.observe(500, vec![added("ana")], 1);
        let mut seen = Vec::new();
        let mut now = 500;
        loop {
            let (sends, _) = drain(&mut w, now);
            for r in &sends {
                seen.extend(types(r));
                w.sent(now, w.requests, Outcome::Status(200));
            }
            if sends.is_empty() {
                break;
            }
            now += 1;
        }
        assert_eq!(seen, ["room_occupied", "member_added:ana", "member_removed:ana", "member_added:ana"], "no vacated, no second occupied");
        assert_eq!(w.next_deadline(), None);
        // Empty again; the alarm comes late, after someone new arrived.
        w.observe(600, vec![removed("ana")], 0);
        w.observe(5_000, vec![added("cy")], 1);
        let (sends, _) = drain(&mut w, 5_000);
        assert_eq!(types(&sends[0]), ["member_removed:ana", "room_vacated", "room_occupied", "member_added:cy"]);
    }

    #[test]
    fn failures_back_off_and_expire_after_the_window() {
        let mut w = machine();
        w.observe(0, vec![added("ana")], 1);
        let (sends, _) = drain(&mut w, 0);
        let first = sends[0].body.clone();
        w.sent(1, w.requests, Outcome::Status(500));
        let due = w.next_deadline().unwrap();
        assert!((501..=1_001).contains(&due), "{due}");
        assert!(drain(&mut w, due - 1).0.is_empty(), "held");
        let (sends, _) = drain(&mut w, due);
        assert_eq!(events(&sends[0]), serde_json::from_str::<Value>(&first).unwrap()["events"].as_array().unwrap().clone(), "the same events again");
        assert_ne!(sends[0].timestamp, 0, "a fresh timestamp");
        w.sent(due, w.requests, Outcome::Failed("connection refused".into()));
        let s = w.stats();
        assert_eq!((s.failed_attempts, s.last_status, s.last_error.as_deref(), s.queued), (2, None, Some("connection refused"), 2));
        let mut now = due;
        let mut attempts = 2;
        while w.stats().queued > 0 {
            now = w.next_deadline().unwrap();
            assert!(drain(&mut w, now).0.len() == 1);
            w.sent(now, w.requests, Outcome::Status(503));
            attempts += 1;
        }
        assert!(now >= 300_000, "retried for the whole window: {now}");
        assert!(now < 300_000 + 61_000, "and not much longer: {now}");
        assert!(attempts >= 8, "{attempts}");
        let (_, others) = drain(&mut w, now);
        assert!(others.contains(&WebhookAction::Forget { upto: 2 }), "{others:?}");
        assert_eq!(w.stats().dropped, 2);
        // The next event goes out with the next id: the gap is not reused.
        w.sent(now, w.requests, Outcome::Status(200));
        w.observe(now + 100_000, vec![added("bo")], 2);
        let (sends, _) = drain(&mut w, now + 100_000);
        assert_eq!(events(&sends[0])[0]["id"], "pfx-3");
    }

    #[test]
    fn a_restart_restores_the_queue_and_the_debounce() {
        let mut w = machine();
        w.observe(0, vec![added("ana")], 1);
        w.observe(5, vec![removed("ana")], 0);
        let mut stored: BTreeMap<u64, Event> = BTreeMap::new();
        let mut state = None;
        while let Some(a) = w.poll(5) {
            match a {
                WebhookAction::Save { events, state: s } => {
                    stored.extend(events.into_iter().map(|e| (e.n, e)));
                    state = Some(s);
                }
                WebhookAction::Forget { upto } => stored.retain(|n, _| *n > upto),
                WebhookAction::Send(_) => {}
            }
        }
        let saved = SavedWebhooks { state: state.unwrap(), events: stored.into_values().collect() };
        assert_eq!(saved.state.vacate_at, Some(1_005));
        let mut again = Webhooks::new(config(), "r".into(), Some(saved), "other".into(), 0, 2_000, 2);
        let (sends, _) = drain(&mut again, 2_000);
        assert_eq!(types(&sends[0]), ["room_occupied", "member_added:ana", "member_removed:ana", "room_vacated"]);
        assert_eq!(events(&sends[0])[3]["id"], "pfx-4", "the prefix and numbering carry over");
    }

    #[test]
    fn a_full_queue_drops_member_events_but_keeps_occupancy() {
        let mut w = machine();
        let many: Vec<MemberChange> = (0..crate::webhook::MAX_QUEUE_EVENTS + 10).map(|i| added(&format!("u{i}"))).collect();
        w.observe(0, many, 20_000);
        assert_eq!(w.stats().dropped, 11, "occupied took one place");
        let gone: Vec<MemberChange> = (0..crate::webhook::MAX_QUEUE_EVENTS + 10).map(|i| removed(&format!("u{i}"))).collect();
        w.observe(1, gone, 0);
        w.observe(2_000, vec![], 0);
        assert_eq!(w.stats().queued, crate::webhook::MAX_QUEUE_EVENTS + 1, "vacated in the reserve");
        let (sends, _) = drain(&mut w, 2_000);
        assert_eq!(sends[0].events, crate::webhook::MAX_BATCH_EVENTS, "requests are bounded");
    }

    #[test]
    fn a_lost_answer_is_given_up_by_the_watchdog_and_a_late_2xx_still_counts() {
        let mut w = machine();
        w.observe(0, vec![added("ana")], 1);
        let (sends, _) = drain(&mut w, 0);
        let first = sends[0].id;
        let watchdog = REQUEST_TIMEOUT_MS + WATCHDOG_SLACK_MS;
        assert_eq!(w.next_deadline(), Some(watchdog), "the alarm covers a request in flight");
        assert!(drain(&mut w, watchdog - 1).0.is_empty());
        assert!(drain(&mut w, watchdog).0.is_empty(), "failed, held for the backoff");
        assert_eq!(w.stats().failed_attempts, 1);
        let due = w.next_deadline().unwrap();
        let (sends, _) = drain(&mut w, due);
        assert_ne!(sends[0].id, first);
        w.sent(due, first, Outcome::Status(500));
        assert_eq!((w.stats().sent, w.stats().in_flight, w.stats().failed_attempts), (0, 2, 1), "a late failure of the old attempt is ignored");
        w.sent(due, first, Outcome::Status(200));
        assert_eq!((w.stats().sent, w.stats().queued), (2, 0), "a late 2xx: the receiver has them");
        w.sent(due, first, Outcome::Status(200));
        w.sent(due, sends[0].id, Outcome::Status(200));
        assert_eq!((w.stats().sent, w.stats().queued), (2, 0), "counted once");
    }

    /// Found by the property below: the watchdog gave a request up, its
    /// 2xx came back before the resend, and the resend repeated it.
    #[test]
    fn a_late_2xx_before_the_resend_prevents_the_resend() {
        let mut w = machine();
        w.observe(0, vec![added("ana")], 1);
        let (sends, _) = drain(&mut w, 0);
        let watchdog = REQUEST_TIMEOUT_MS + WATCHDOG_SLACK_MS;
        assert!(drain(&mut w, watchdog).0.is_empty(), "given up, held for the backoff");
        w.sent(watchdog, sends[0].id, Outcome::Status(204));
        let (again, others) = drain(&mut w, watchdog + 60_000);
        assert!(again.is_empty(), "not sent twice: {again:?}");
        assert_eq!(others, vec![WebhookAction::Forget { upto: 2 }]);
        assert_eq!((w.stats().sent, w.stats().queued, w.next_deadline()), (2, 0, None));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Join(u8),
        Leave(u8),
        Advance(u64),
        Answer(Option<u16>),
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..4u8).prop_map(Op::Join),
            3 => (0..4u8).prop_map(Op::Leave),
            3 => (1..3_000u64).prop_map(Op::Advance),
            4 => prop_oneof![Just(None), Just(Some(200u16)), Just(Some(500)), Just(Some(204)), Just(Some(429))].prop_map(Op::Answer),
            1 => Just(Op::Restart),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// Across failures, restarts (which lose the request in flight) and
        /// late answers, every event accepted by a 2xx is new, and the
        /// events of the room arrive in the order they were made; with a
        /// receiver that eventually answers, every event arrives.
        #[test]
        fn events_arrive_in_order_exactly_once_across_failures(ops in proptest::collection::vec(op(), 1..150)) {
            let mut now = 0u64;
            let mut w = machine();
            let mut members: BTreeMap<u8, ()> = BTreeMap::new();
            let mut stored: BTreeMap<u64, Event> = BTreeMap::new();
            let mut state: Option<WebhookState> = None;
            let mut out: Option<WebhookRequest> = None;
            let mut accepted: Vec<u64> = Vec::new();
            let mut made: Vec<u64> = Vec::new();
            let run = |w: &mut Webhooks, now: u64, out: &mut Option<WebhookRequest>, stored: &mut BTreeMap<u64, Event>, state: &mut Option<WebhookState>, made: &mut Vec<u64>| {
                while let Some(a) = w.poll(now) {
                    match a {
                        WebhookAction::Save { events, state: s } => {
                            made.extend(events.iter().map(|e| e.n));
                            stored.extend(events.into_iter().map(|e| (e.n, e)));
                            *state = Some(s);
                        }
                        WebhookAction::Forget { upto } => stored.retain(|n, _| *n > upto),
                        WebhookAction::Send(r) => {
                            // One request at a time: another only once the
                            // machine gave the last one up (its answer never
                            // came: the task was lost, like in a restart).
                            if let Some(old) = out.as_ref() {
                                let given_up = old.timestamp + REQUEST_TIMEOUT_MS + WATCHDOG_SLACK_MS;
                                assert!(old.id < r.id && now >= given_up, "two requests in flight");
                            }
                            *out = Some(r);
                        }
                    }
                }
            };
            let ns = |r: &WebhookRequest| -> Vec<u64> {
                let v: Value = serde_json::from_str(&r.body).unwrap();
                v["events"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().rsplit('-').next().unwrap().parse().unwrap()).collect()
            };
            for op in ops {
                match op {
                    Op::Join(u) => {
                        let new = members.insert(u, ()).is_none();
                        let changes = if new { vec![added(&u.to_string())] } else { vec![] };
                        w.observe(now, changes, members.len() as u64);
                    }
                    Op::Leave(u) => {
                        let gone = members.remove(&u).is_some();
                        let changes = if gone { vec![removed(&u.to_string())] } else { vec![] };
                        w.observe(now, changes, members.len() as u64);
                    }
                    Op::Advance(ms) => now += ms,
                    Op::Answer(status) => {
                        if let Some(r) = out.take() {
                            let outcome = status.map_or(Outcome::Failed("x".into()), Outcome::Status);
                            if status.is_some_and(|s| (200..300).contains(&s)) {
                                accepted.extend(ns(&r));
                            }
                            w.sent(now, r.id, outcome);
                        }
                    }
                    Op::Restart => {
                        // The request in flight is lost with the object; its
                        // answer, if any, never comes back.
                        out = None;
                        let saved = state.clone().map(|s| SavedWebhooks { state: s, events: stored.values().cloned().collect() });
                        w = Webhooks::new(config(), "r".into(), saved, "fresh".into(), members.len() as u64, now, now);
                    }
                }
                run(&mut w, now, &mut out, &mut stored, &mut state, &mut made);
                prop_assert!(accepted.windows(2).all(|p| p[0] < p[1]), "in order, never twice: {:?}", accepted);
            }
            // A receiver that answers from now on gets everything left.
            for _ in 0..100_000 {
                run(&mut w, now, &mut out, &mut stored, &mut state, &mut made);
                match out.take() {
                    Some(r) => {
                        accepted.extend(ns(&r));
                        w.sent(now, r.id, Outcome::Status(200));
                    }
                    None => match w.next_deadline() {
                        Some(t) => now = now.max(t),
                        None => break,
                    },
                }
            }
            prop_assert!(accepted.windows(2).all(|p| p[0] < p[1]), "in order, never twice: {:?}", accepted);
            let dropped = w.stats().dropped;
            made.sort_unstable();
            made.dedup();
            if dropped == 0 {
                // Only a restart's lost answer may skip a resend; every made
                // event was accepted exactly once.
                prop_assert_eq!(&made, &accepted, "every event delivered once");
            }
            prop_assert!(stored.is_empty(), "storage holds nothing delivered: {:?}", stored.keys().collect::<Vec<_>>());
            prop_assert_eq!(w.stats().occupied, !members.is_empty());
        }
    }
}

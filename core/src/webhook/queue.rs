//! The room's queue of webhook events: numbered, in order, bounded in count
//! and bytes, cut into batches from the front.
//!
//! Every event gets the next number `n` of the room when it is made, even
//! one the bound refuses, so a gap in the numbers a receiver sees is exactly
//! the events that were dropped. Its id is `<prefix>-<n>`: the prefix is
//! random, chosen when the room first had webhooks, and persisted with the
//! next number, so ids stay unique across restarts (and across rooms).

use std::collections::VecDeque;

/// Most events held per room; past it member events are dropped (and
/// counted). Occupancy events may use [`OCCUPANCY_RESERVE`] more.
pub const MAX_QUEUE_EVENTS: usize = 10_000;
/// Most bytes of event JSON held per room.
pub const MAX_QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// Room kept for `room_occupied` / `room_vacated` past the bounds: a full
/// queue of member events never hides that the room emptied or filled.
/// They alternate and each takes a debounce, so this is plenty.
pub const OCCUPANCY_RESERVE: usize = 64;
/// Bytes an event may take in the reserve (an occupancy event names no
/// user: well under this).
const RESERVE_EVENT_BYTES: usize = 1024;

/// One event as queued and stored: its number, time, and JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub n: u64,
    pub ts: u64,
    pub json: String,
}

#[derive(Debug)]
pub struct EventQueue {
    prefix: String,
    next: u64,
    events: VecDeque<Event>,
    bytes: usize,
}

impl EventQueue {
    /// A queue numbering from `next` under `prefix`, holding `events`
    /// (restored from storage; sorted here by number).
    pub fn new(prefix: String, next: u64, mut events: Vec<Event>) -> Self {
        events.sort_by_key(|e| e.n);
        events.dedup_by_key(|e| e.n);
        let next = events.last().map_or(next, |e| next.max(e.n + 1)).max(1);
        let bytes = events.iter().map(|e| e.json.len()).sum();
        EventQueue { prefix, next, events: events.into(), bytes }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The number the next event gets.
    pub fn next(&self) -> u64 {
        self.next
    }

    pub fn id(&self, n: u64) -> String {
        format!("{}-{n}", self.prefix)
    }

    /// Numbers an event, renders it with its id, and queues it if the
    /// bounds allow (`reserve`: an occupancy event, which may go past them
    /// by the reserve). `Err(n)`: dropped, number `n` left as a gap.
    pub fn push(&mut self, ts: u64, reserve: bool, render: impl FnOnce(&str) -> String) -> Result<&Event, u64> {
        let n = self.next;
        self.next += 1;
        let json = render(&self.id(n));
        let (max_events, max_bytes) = if reserve {
            (MAX_QUEUE_EVENTS + OCCUPANCY_RESERVE, MAX_QUEUE_BYTES + OCCUPANCY_RESERVE * RESERVE_EVENT_BYTES)
        } else {
            (MAX_QUEUE_EVENTS, MAX_QUEUE_BYTES)
        };
        if self.events.len() >= max_events || self.bytes + json.len() > max_bytes {
            return Err(n);
        }
        self.bytes += json.len();
        self.events.push_back(Event { n, ts, json });
        self.events.back().ok_or(n)
    }

    /// How many events from the front make the next request: at least one
    /// (when any), at most `max_events`, and no more than `max_bytes` of
    /// event JSON unless a single event is larger.
    pub fn batch_len(&self, max_events: usize, max_bytes: usize) -> usize {
        let mut bytes = 0;
        let mut n = 0;
        for e in self.events.iter().take(max_events.max(1)) {
            if n > 0 && bytes + e.json.len() > max_bytes {
                break;
            }
            bytes += e.json.len();
            n += 1;
        }
        n
    }

    /// The first `len` events.
    pub fn front(&self, len: usize) -> impl Iterator<Item = &Event> {
        self.events.iter().take(len)
    }

    /// Removes the events numbered up to `upto` from the front; how many.
    pub fn pop_through(&mut self, upto: u64) -> usize {
        let mut popped = 0;
        while self.events.front().is_some_and(|e| e.n <= upto) {
            if let Some(e) = self.events.pop_front() {
                self.bytes -= e.json.len();
                popped += 1;
            }
        }
        popped
    }

    /// Removes the events at the front stamped at or before `ts`: their
    /// retry window is over. Returns the last number removed and how many.
    pub fn expire(&mut self, ts: u64) -> Option<(u64, usize)> {
        let mut last = None;
        let mut count = 0;
        while self.events.front().is_some_and(|e| e.ts <= ts) {
            if let Some(e) = self.events.pop_front() {
                self.bytes -= e.json.len();
                last = Some(e.n);
                count += 1;
            }
        }
        last.map(|n| (n, count))
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> EventQueue {
        EventQueue::new("p".into(), 1, Vec::new())
    }

    #[test]
    fn numbers_ids_batches_and_pops() {
        let mut q = q();
        for ts in 0..5 {
            let e = q.push(ts, false, |id| format!("{{\"id\":\"{id}\"}}")).unwrap();
            assert_eq!(e.json, format!("{{\"id\":\"p-{}\"}}", ts + 1));
        }
        assert_eq!(q.batch_len(3, 1 << 20), 3);
        assert_eq!(q.batch_len(10, 25), 2, "bytes bound: each event is 12 bytes");
        assert_eq!(q.batch_len(10, 1), 1, "one event always goes, however large");
        assert_eq!(q.pop_through(2), 2);
        assert_eq!(q.front(9).map(|e| e.n).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(q.expire(3), Some((4, 2)));
        assert_eq!(q.expire(3), None);
        assert_eq!((q.len(), q.bytes()), (1, 12));
    }

    #[test]
    fn bounds_drop_members_first_and_leave_gaps() {
        let mut q = q();
        for _ in 0..MAX_QUEUE_EVENTS {
            assert!(q.push(0, false, |_| "m".into()).is_ok());
        }
        assert_eq!(q.push(0, false, |_| "m".into()).err(), Some(MAX_QUEUE_EVENTS as u64 + 1));
        let o = q.push(0, true, |_| "o".into()).unwrap().n;
        assert_eq!(o, MAX_QUEUE_EVENTS as u64 + 2, "occupancy uses the reserve, after a gap");
        let mut big = EventQueue::new("p".into(), 1, Vec::new());
        let chunk = "x".repeat(64 * 1024);
        let accepted = (0..100).filter(|_| big.push(0, false, |_| chunk.clone()).is_ok()).count();
        assert_eq!(accepted, MAX_QUEUE_BYTES / chunk.len(), "bounded in bytes");
    }

    #[test]
    fn restored_events_continue_the_numbering() {
        let ev = |n| Event { n, ts: 0, json: "{}".into() };
        let q = EventQueue::new("p".into(), 3, vec![ev(7), ev(5), ev(5)]);
        assert_eq!((q.next(), q.len(), q.bytes()), (8, 2, 4), "past the last stored, deduplicated");
        assert_eq!(EventQueue::new("p".into(), 9, vec![ev(2)]).next(), 9);
    }
}

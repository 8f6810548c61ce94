//! What a Room remembers of its past: which stored messages are still
//! readable, and which `mid`s it has seen recently.
//!
//! Retention is exact for readers: a message past `HERALD_HISTORY_MAX` or
//! `HERALD_HISTORY_TTL_S` is never served, even before its row is deleted.
//! Deleting rows is the alarm's job, in batches, so a busy room does not pay
//! a delete per message and an idle room still shrinks.

use crate::config::Retention;
use std::collections::{HashMap, VecDeque};

/// Closest two alarms may follow each other, so steady traffic against the
/// TTL does not turn into an alarm per message.
pub const MIN_ALARM_GAP_MS: u64 = 1000;

/// Rows to delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prune {
    /// Delete messages with `seq <= upto_seq`.
    pub upto_seq: u64,
    /// Delete remembered `mid`s stamped before this time.
    pub mids_before_ts: u64,
}

/// A remembered `mid`: the message it named.
/// The key a `mid` is remembered under: the publisher's `sub` and the
/// `mid`, so a `mid` belongs to whoever published it. Another user
/// publishing the same `mid` gets a message of their own; they cannot
/// suppress someone else's by publishing that user's next `mid` first.
/// Anonymous publishers share one namespace. A `sub` cannot hold a NUL (it
/// came from JSON text as a string that the key separates with one).
pub fn mid_key(from: Option<&str>, mid: &str) -> String {
    format!("{}\u{0}{mid}", from.unwrap_or_default())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenMid {
    pub seq: u64,
    pub ts: u64,
}

#[derive(Debug, Default)]
pub struct History {
    retention: Retention,
    /// (seq, ts) of every stored message not yet deleted, oldest first.
    index: VecDeque<(u64, u64)>,
    mids: HashMap<String, SeenMid>,
    /// The same mids in stamp order, for pruning.
    mid_order: VecDeque<(u64, String)>,
}

impl History {
    /// `index` is (seq, ts) of the stored messages in seq order; `mids` the
    /// remembered ones as (mid, seq, ts).
    pub fn new(retention: Retention, index: Vec<(u64, u64)>, mut mids: Vec<(String, u64, u64)>) -> Self {
        mids.sort_by_key(|(_, _, ts)| *ts);
        let mut h = History { retention, index: index.into(), ..History::default() };
        for (mid, seq, ts) in mids {
            h.remember(mid, seq, ts);
        }
        h
    }

    fn remember(&mut self, mid: String, seq: u64, ts: u64) {
        self.mid_order.push_back((ts, mid.clone()));
        self.mids.insert(mid, SeenMid { seq, ts });
    }

    /// Records a stored message; `mid` is its dedup key ([`mid_key`]).
    pub fn record(&mut self, seq: u64, ts: u64, mid: Option<&str>) {
        self.index.push_back((seq, ts));
        if let Some(mid) = mid {
            if self.retention.dedup_window_ms > 0 {
                self.remember(mid.to_owned(), seq, ts);
            }
        }
    }

    /// The message an earlier publish with this `mid` produced, if it is
    /// within the dedup window at `now`.
    /// `mid` is the dedup key ([`mid_key`]).
    pub fn seen(&self, now: u64, mid: &str) -> Option<SeenMid> {
        let m = self.mids.get(mid)?;
        (now.saturating_sub(m.ts) < self.retention.dedup_window_ms).then_some(*m)
    }

    /// The first seq a reader may see at `now`; `last_seq + 1` when none.
    pub fn oldest_visible(&self, now: u64, last_seq: u64) -> u64 {
        let floor = last_seq.saturating_sub(self.retention.max_messages) + 1;
        let cutoff = now.saturating_sub(self.retention.ttl_ms);
        self.index
            .iter()
            .find(|(seq, ts)| *seq >= floor && *ts >= cutoff)
            .map_or(last_seq + 1, |(seq, _)| *seq)
    }

    /// Whether a client that has seen everything up to `since` can be given
    /// exactly the rest.
    pub fn covers(&self, now: u64, last_seq: u64, since: u64) -> bool {
        since <= last_seq && since + 1 >= self.oldest_visible(now, last_seq)
    }

    /// What to delete at `now`, and forgets it here.
    pub fn prune(&mut self, now: u64, last_seq: u64) -> Option<Prune> {
        let oldest = self.oldest_visible(now, last_seq);
        let mut upto_seq = 0;
        while let Some(&(seq, _)) = self.index.front() {
            if seq >= oldest {
                break;
            }
            upto_seq = seq;
            self.index.pop_front();
        }
        let mids_before_ts = now.saturating_sub(self.retention.dedup_window_ms);
        let mut dropped_mid = false;
        while let Some((ts, _)) = self.mid_order.front() {
            if *ts >= mids_before_ts {
                break;
            }
            if let Some((ts, mid)) = self.mid_order.pop_front() {
                // A mid reused later is still remembered under its newer stamp.
                if self.mids.get(&mid).is_some_and(|m| m.ts == ts) {
                    self.mids.remove(&mid);
                }
                dropped_mid = true;
            }
        }
        (upto_seq > 0 || dropped_mid).then_some(Prune { upto_seq, mids_before_ts })
    }

    /// When the next prune is due: the oldest message's expiry, the oldest
    /// mid's expiry, or now when the count bound is exceeded by a tenth.
    pub fn next_deadline(&self, now: u64) -> Option<u64> {
        let slack = (self.retention.max_messages / 10).max(1);
        let over_count = (self.index.len() as u64 > self.retention.max_messages + slack).then_some(now);
        let ttl = self.index.front().map(|(_, ts)| ts + self.retention.ttl_ms);
        let mid = self.mid_order.front().map(|(ts, _)| ts + self.retention.dedup_window_ms);
        [over_count, ttl, mid].into_iter().flatten().min()
    }

    /// Forgets everything (erasure).
    pub fn clear(&mut self) {
        self.index.clear();
        self.mids.clear();
        self.mid_order.clear();
    }

    /// Stored messages not yet deleted.
    pub fn stored(&self) -> usize {
        self.index.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retention(max: u64, ttl_ms: u64, dedup_ms: u64) -> Retention {
        Retention { max_messages: max, ttl_ms, dedup_window_ms: dedup_ms }
    }

    #[test]
    fn count_bound_is_exact_for_readers() {
        let mut h = History::new(retention(3, 1_000_000, 0), vec![], vec![]);
        for seq in 1..=5 {
            h.record(seq, 100, None);
        }
        assert_eq!(h.oldest_visible(100, 5), 3);
        assert!(h.covers(100, 5, 2));
        assert!(!h.covers(100, 5, 1));
        assert!(h.covers(100, 5, 5));
        assert!(!h.covers(100, 5, 6), "a seq from the future is not recoverable");
        assert_eq!(h.prune(100, 5), Some(Prune { upto_seq: 2, mids_before_ts: 100 }));
        assert_eq!(h.stored(), 3);
        assert_eq!(h.prune(100, 5), None, "nothing more to do");
    }

    #[test]
    fn ttl_bound_and_deadline() {
        let mut h = History::new(retention(100, 1000, 0), vec![(1, 0), (2, 500)], vec![]);
        assert_eq!(h.next_deadline(0), Some(1000));
        assert_eq!(h.oldest_visible(1200, 2), 2);
        assert_eq!(h.prune(1200, 2).map(|p| p.upto_seq), Some(1));
        assert_eq!(h.next_deadline(1200), Some(1500));
        assert_eq!(h.oldest_visible(1600, 2), 3, "all expired");
        assert!(h.covers(1600, 2, 2));
        assert!(!h.covers(1600, 2, 1));
    }

    #[test]
    fn over_count_is_due_now() {
        let mut h = History::new(retention(10, 1_000_000, 0), vec![], vec![]);
        for seq in 1..=11 {
            h.record(seq, 5, None);
        }
        assert_eq!(h.next_deadline(7), Some(1_000_005), "within the slack");
        h.record(12, 5, None);
        assert_eq!(h.next_deadline(7), Some(7));
    }

    #[test]
    fn mids_are_remembered_for_the_window() {
        let mut h = History::new(retention(10, 1_000_000, 300), vec![], vec![("old".into(), 1, 0)]);
        h.record(2, 100, Some("a"));
        assert_eq!(h.seen(150, "a"), Some(SeenMid { seq: 2, ts: 100 }));
        assert_eq!(h.seen(150, "old"), Some(SeenMid { seq: 1, ts: 0 }));
        assert_eq!(h.seen(300, "old"), None, "outside the window");
        assert!(h.prune(350, 2).is_some());
        assert_eq!(h.seen(350, "a"), Some(SeenMid { seq: 2, ts: 100 }));
        h.clear();
        assert_eq!(h.seen(350, "a"), None);
    }
}

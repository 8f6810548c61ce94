//! The relay's window of recent delivery frames, for resuming clients, and
//! trimming a frame to the messages a client still needs.

use serde_json::value::RawValue;
use crate::server_frame::batch_frame;
use std::collections::VecDeque;

/// Stored messages a relay keeps in memory for resuming clients.
pub const RELAY_WINDOW_MESSAGES: u64 = 512;
/// Bytes of frames the window keeps, by default: 512 messages of 64 KiB
/// would otherwise be 32 MiB per relay. The newest frame is always kept.
pub const RELAY_WINDOW_BYTES: usize = 1 << 20;

/// One delivery frame in the window: its stored seqs, the stamp of its
/// first message (0 when unknown), and the frame.
#[derive(Debug)]
struct Entry<F> {
    first: u64,
    last: u64,
    first_ts: u64,
    frame: F,
}

/// Recent delivery frames, contiguous in seq, newest last.
#[derive(Debug)]
pub struct Window<F> {
    entries: VecDeque<Entry<F>>,
    messages: u64,
    bytes: usize,
    max_bytes: usize,
}

impl<F> Default for Window<F> {
    fn default() -> Self {
        Window { entries: VecDeque::new(), messages: 0, bytes: 0, max_bytes: RELAY_WINDOW_BYTES }
    }
}

impl<F: super::Frame> Window<F> {
    /// Sets the byte bound (the relay keeps it below what one client may
    /// have buffered, so a replay from the window never overflows it).
    pub fn set_max_bytes(&mut self, max_bytes: usize) {
        self.max_bytes = max_bytes;
    }

    /// Bytes of frames held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds a frame holding stored seqs `first..=last`. A frame that does not
    /// follow on restarts the window, so it never has holes.
    pub fn push(&mut self, first: u64, last: u64, first_ts: u64, frame: F) {
        if self.entries.back().is_some_and(|e| e.last + 1 != first) {
            self.clear();
        }
        self.bytes += frame.size();
        self.entries.push_back(Entry { first, last, first_ts, frame });
        self.messages += last + 1 - first;
        while (self.messages > RELAY_WINDOW_MESSAGES || self.bytes > self.max_bytes) && self.entries.len() > 1 {
            if let Some(e) = self.entries.pop_front() {
                self.messages -= e.last + 1 - e.first;
                self.bytes = self.bytes.saturating_sub(e.frame.size());
            }
        }
    }

    /// The last seq the window holds.
    pub fn newest(&self) -> Option<u64> {
        self.entries.back().map(|e| e.last)
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.messages = 0;
        self.bytes = 0;
    }

    /// The frames with every message after `after` up to the newest, or
    /// `None` when the window does not reach back to `after + 1`, or the
    /// frame holding it is older than `oldest_ts` (past retention: only the
    /// Room can say exactly what is still kept).
    pub fn since(&self, after: u64, oldest_ts: u64) -> Option<Vec<(F, Option<u64>)>> {
        let mut out = Vec::new();
        for e in &self.entries {
            if e.last <= after {
                continue;
            }
            if out.is_empty() && (e.first > after + 1 || e.first_ts < oldest_ts) {
                return None;
            }
            out.push((e.frame.clone(), (e.first <= after).then_some(after)));
        }
        Some(out)
    }
}

/// Rebuilds a frame (one object, or a batch array) from the items `keep`
/// accepts. `None` when none is left or the frame is not what the Room
/// renders.
fn filter_frame(frame: &str, keep: impl Fn(&str) -> bool) -> Option<String> {
    let items: Vec<&RawValue> = if frame.trim_start().starts_with('[') {
        serde_json::from_str(frame).ok()?
    } else {
        vec![serde_json::from_str(frame).ok()?]
    };
    let kept: Vec<&str> = items.into_iter().map(RawValue::get).filter(|item| keep(item)).collect();
    (!kept.is_empty()).then(|| batch_frame(&kept))
}

/// Keeps the messages of a (batch) frame with seq above `after`, and the
/// ephemeral ones when `keep_ephemeral` (live delivery, not a replay).
pub fn trim_frame(frame: &str, after: u64, keep_ephemeral: bool) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct SeqOnly {
        seq: Option<u64>,
    }
    filter_frame(frame, |item| {
        serde_json::from_str::<SeqOnly>(item).is_ok_and(|m| m.seq.map_or(keep_ephemeral, |s| s > after))
    })
}

/// The frame without its `reset` items (one the relay already announced).
pub fn without_resets(frame: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Kind<'a> {
        #[serde(borrow)]
        t: &'a str,
    }
    filter_frame(frame, |item| serde_json::from_str::<Kind>(item).map_or(true, |k| k.t != "reset"))
}

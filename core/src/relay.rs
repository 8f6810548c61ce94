//! The Relay: a room's presence in one region. It holds that region's client
//! sockets, fans each delivery out to them, and forwards their publishes to
//! the Room.
//!
//! Sans-IO like the Room. The relay keeps a `cursor`, the last stored seq it
//! has fanned out, which makes three things exact:
//! - the `seq` in a welcome frame is the cursor, so a new client's first
//!   message is always cursor + 1;
//! - a delivery that skips ahead is repaired from the Room's storage first;
//! - a delivery the relay already fanned out (a retry) is not sent twice.
//!
//! The cursor lives in memory only. After the relay hibernates it restarts
//! from the next delivery or join, which is safe because a relay only
//! hibernates when nothing is in flight to it.

use crate::abuse::Strikes;
use crate::config::Retention;
use crate::rate::TokenBucket;
use crate::close_code::CloseCode;
use crate::error::ErrorCode;
use crate::link::{JoinReply, RelayReport};
use crate::region::Region;
use crate::server_frame::{batch_frame, welcome_frame};
use serde_json::value::RawValue;
use std::collections::{HashMap, VecDeque};

/// Stored messages a relay keeps in memory for resuming clients.
pub const RELAY_WINDOW_MESSAGES: u64 = 512;

/// What to do with a delivery from the Room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryPlan {
    /// Fan the frame out as it is.
    Forward,
    /// Everything in it was already fanned out: drop it.
    Skip,
    /// Fan out only the messages with seq above `after` (and ephemeral ones);
    /// see [`trim_frame`].
    Trim { after: u64 },
    /// Messages `after + 1 ..= upto` never arrived: fetch them from the Room
    /// and fan them out, then fan out the frame, then call
    /// [`RelayCore::repaired`].
    Repair { after: u64, upto: u64 },
}

/// How a resuming client (`?since=N&epoch=E`) is brought up to date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume<F> {
    /// `recovered: false`: another epoch, or a seq this relay cannot vouch for.
    NotRecoverable,
    /// `recovered: true`: send these frames (each trimmed to seqs above the
    /// given one, when `Some`) after the welcome. Empty when up to date.
    Frames(Vec<(F, Option<u64>)>),
    /// The relay's window does not reach back far enough: read
    /// `after < seq <= upto` from the Room, then plan again from `upto`.
    FromRoom { after: u64, upto: u64 },
}

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
}

impl<F> Default for Window<F> {
    fn default() -> Self {
        Window { entries: VecDeque::new(), messages: 0 }
    }
}

impl<F: Clone> Window<F> {
    /// Adds a frame holding stored seqs `first..=last`. A frame that does not
    /// follow on restarts the window, so it never has holes.
    pub fn push(&mut self, first: u64, last: u64, first_ts: u64, frame: F) {
        if self.entries.back().is_some_and(|e| e.last + 1 != first) {
            self.clear();
        }
        self.entries.push_back(Entry { first, last, first_ts, frame });
        self.messages += last + 1 - first;
        while self.messages > RELAY_WINDOW_MESSAGES && self.entries.len() > 1 {
            if let Some(e) = self.entries.pop_front() {
                self.messages -= e.last + 1 - e.first;
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

/// The relay's state machine. `F` is how the glue holds a frame (a JS
/// string on wasm, so the window costs no copies).
#[derive(Debug)]
pub struct RelayCore<F = String> {
    room: String,
    region: Region,
    epoch: Option<String>,
    cursor: Option<u64>,
    relay_sends: u64,
    wakeups: u64,
    /// Distinguishes this construction's connection ids from earlier ones.
    nonce: String,
    next_conn: u64,
    strikes: HashMap<String, Strikes>,
    buckets: HashMap<String, TokenBucket>,
    /// Publishes per second and burst per connection.
    publish_rate: (u32, u32),
    report_in_flight: bool,
    report_wanted: bool,
    resumes: ResumeCounts,
    window: Window<F>,
    /// The Room's retention, so the window never vouches for more than the
    /// Room would.
    retention: Retention,
}

#[derive(Debug, Default, Clone, Copy)]
struct ResumeCounts {
    from_relay: u64,
    from_room: u64,
    refused: u64,
}

impl<F: Clone> RelayCore<F> {
    /// `wakeups` is this object's construction count; `nonce` a short random
    /// string chosen by the glue.
    pub fn new(room: impl Into<String>, region: Region, wakeups: u64, nonce: String) -> Self {
        RelayCore {
            room: room.into(),
            region,
            epoch: None,
            cursor: None,
            relay_sends: 0,
            wakeups,
            nonce,
            next_conn: 0,
            strikes: HashMap::new(),
            buckets: HashMap::new(),
            publish_rate: (20, 40),
            report_in_flight: false,
            report_wanted: false,
            resumes: ResumeCounts::default(),
            window: Window::default(),
            retention: Retention::default(),
        }
    }

    pub fn room(&self) -> &str {
        &self.room
    }

    pub fn region(&self) -> Region {
        self.region
    }

    pub fn cursor(&self) -> Option<u64> {
        self.cursor
    }

    /// Whether a new client must wait for a join with the Room before its
    /// welcome: when the relay has never joined since construction, or has
    /// no clients (and so may have been dropped by the Room).
    pub fn needs_join(&self, open_connections: u32) -> bool {
        self.epoch.is_none() || self.cursor.is_none() || open_connections == 0
    }

    /// The report sent when joining: it counts the client being admitted, so
    /// the Room does not drop the relay as empty in the meantime.
    pub fn join_report(&self, open_connections: u32) -> RelayReport {
        self.report(open_connections.saturating_add(1))
    }

    /// The Room's answer to a join.
    ///
    /// - With no clients, nothing was fanned out that a client could miss, so
    ///   the cursor jumps to the room's seq (deliveries still in flight below
    ///   it will be skipped).
    /// - With clients but no cursor (the relay woke from hibernation, or the
    ///   epoch changed), the cursor resumes from what the Room knows was
    ///   delivered, so in-flight deliveries still reach those clients.
    /// - Otherwise the cursor is already right.
    pub fn joined(&mut self, reply: JoinReply, open_connections: u32) {
        let new_epoch = self.epoch.as_deref() != Some(reply.epoch.as_str());
        if open_connections == 0 {
            self.cursor = Some(reply.seq);
        } else if new_epoch || self.cursor.is_none() {
            self.cursor = Some(reply.delivered);
        }
        self.epoch = Some(reply.epoch);
    }

    /// Admits a client: its connection id and welcome frame. `None` until the
    /// relay has joined. `recovered` answers a resume request, if any.
    pub fn admit(&mut self, recovered: Option<bool>) -> Option<(String, String)> {
        let epoch = self.epoch.as_deref()?;
        let cursor = self.cursor?;
        self.next_conn += 1;
        let conn = format!("{}-{}-{}", self.region, self.nonce, self.next_conn);
        let welcome = welcome_frame(&self.room, &conn, self.region.as_str(), epoch, cursor, recovered);
        Some((conn, welcome))
    }

    pub fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    /// Decides what to do with a delivery carrying stored seqs `first..=last`
    /// (`None` for ephemeral-only) from epoch `epoch`, and advances the cursor.
    pub fn plan_delivery(&mut self, epoch: &str, first: Option<u64>, last: Option<u64>) -> DeliveryPlan {
        if self.epoch.as_deref() != Some(epoch) {
            // A new epoch (erasure): the old window means nothing now.
            self.window.clear();
            self.epoch = Some(epoch.to_owned());
            self.cursor = None;
        }
        let (Some(first), Some(last)) = (first, last) else {
            return DeliveryPlan::Forward;
        };
        let Some(cursor) = self.cursor else {
            self.cursor = Some(last);
            return DeliveryPlan::Forward;
        };
        if last <= cursor {
            return DeliveryPlan::Skip;
        }
        if first > cursor + 1 {
            // The cursor moves only once the repair has been fanned out, so a
            // client admitted while the range is being fetched is welcomed
            // before it and receives it.
            return DeliveryPlan::Repair { after: cursor, upto: first - 1 };
        }
        self.cursor = Some(last);
        if first == cursor + 1 {
            DeliveryPlan::Forward
        } else {
            DeliveryPlan::Trim { after: cursor }
        }
    }

    /// A repaired range and the delivery after it were fanned out up to `last`.
    pub fn repaired(&mut self, last: u64) {
        self.cursor = Some(self.cursor.map_or(last, |c| c.max(last)));
    }

    /// A frame with stored seqs `first..=last` was fanned out: keep it for
    /// resuming clients.
    pub fn fanned_out(&mut self, first: u64, last: u64, first_ts: u64, frame: F) {
        self.window.push(first, last, first_ts, frame);
    }

    /// The Room's retention, from the same configuration.
    pub fn set_retention(&mut self, retention: Retention) {
        self.retention = retention;
    }

    /// How to bring a client of `epoch` that has seen up to `since` level
    /// with this relay's cursor, at `now_ms`. Anything near the retention
    /// bounds goes to the Room, which decides exactly.
    pub fn plan_resume(&self, epoch: &str, since: u64, now_ms: u64) -> Resume<F> {
        let Some(cursor) = self.cursor else { return Resume::NotRecoverable };
        if self.epoch.as_deref() != Some(epoch) || since > cursor {
            return Resume::NotRecoverable;
        }
        if since == cursor {
            return Resume::Frames(Vec::new());
        }
        let within_count = cursor - since <= self.retention.max_messages;
        let oldest_ts = now_ms.saturating_sub(self.retention.ttl_ms);
        match self.window.since(since, oldest_ts) {
            Some(frames) if within_count && self.window.newest() == Some(cursor) => Resume::Frames(frames),
            _ => Resume::FromRoom { after: since, upto: cursor },
        }
    }

    /// Counts a finished resume, by where it was served from.
    pub fn resumed(&mut self, recovered: bool, used_room: bool) {
        let c = &mut self.resumes;
        match (recovered, used_room) {
            (false, _) => c.refused += 1,
            (true, true) => c.from_room += 1,
            (true, false) => c.from_relay += 1,
        }
    }

    /// Counts frames sent to clients.
    pub fn sent(&mut self, frames: u64) {
        self.relay_sends += frames;
    }

    /// The relay's report with its current connection count.
    pub fn report(&self, open_connections: u32) -> RelayReport {
        RelayReport {
            region: self.region,
            connections: open_connections,
            relay_sends: self.relay_sends,
            wakeups: self.wakeups,
            recovered_from_relay: self.resumes.from_relay,
            recovered_from_room: self.resumes.from_room,
            not_recovered: self.resumes.refused,
        }
    }

    /// Asks for a report to the Room. Returns true when the caller must send
    /// one now; false when one is in flight (it will be followed by another).
    pub fn want_report(&mut self) -> bool {
        if self.report_in_flight {
            self.report_wanted = true;
            false
        } else {
            self.report_in_flight = true;
            true
        }
    }

    /// A report finished. Returns true when another must be sent because the
    /// count changed meanwhile.
    pub fn report_done(&mut self) -> bool {
        if self.report_wanted {
            self.report_wanted = false;
            true
        } else {
            self.report_in_flight = false;
            false
        }
    }

    /// Records a bad frame from `conn`; returns the close code when the
    /// connection has gone over its allowance.
    pub fn bad_frame(&mut self, conn: &str, now_ms: u64, code: ErrorCode) -> Option<CloseCode> {
        let close = self.strikes.entry(conn.to_owned()).or_default().strike(now_ms, code);
        if close.is_some() {
            self.strikes.remove(conn);
        }
        close
    }

    /// Sets the per-connection publish rate and burst.
    pub fn set_publish_rate(&mut self, per_second: u32, burst: u32) {
        self.publish_rate = (per_second, burst);
    }

    /// Whether `conn` may publish at `now_ms`. Buckets live in memory, so a
    /// relay that hibernated starts every connection with a full burst.
    pub fn allow_publish(&mut self, conn: &str, now_ms: u64) -> bool {
        let (rate, burst) = self.publish_rate;
        self.buckets
            .entry(conn.to_owned())
            .or_insert_with(|| TokenBucket::full(burst, now_ms))
            .take(now_ms, rate, burst)
    }

    /// Forgets a closed connection.
    pub fn closed(&mut self, conn: &str) {
        self.strikes.remove(conn);
        self.buckets.remove(conn);
    }
}

/// Keeps the messages of a (batch) frame with seq above `after`, and the
/// ephemeral ones when `keep_ephemeral` (live delivery, not a replay).
/// Returns `None` when nothing is left or the frame is not what the Room
/// renders.
pub fn trim_frame(frame: &str, after: u64, keep_ephemeral: bool) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct SeqOnly {
        seq: Option<u64>,
    }
    let items: Vec<&RawValue> = if frame.trim_start().starts_with('[') {
        serde_json::from_str(frame).ok()?
    } else {
        vec![serde_json::from_str(frame).ok()?]
    };
    let kept: Vec<&str> = items
        .into_iter()
        .filter(|raw| {
            serde_json::from_str::<SeqOnly>(raw.get())
                .map(|m| m.seq.map_or(keep_ephemeral, |s| s > after))
                .unwrap_or(false)
        })
        .map(RawValue::get)
        .collect();
    (!kept.is_empty()).then(|| batch_frame(&kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(open: u32, seq: u64) -> RelayCore {
        let mut r: RelayCore = RelayCore::new("room", Region::Weur, 1, "n".into());
        r.joined(JoinReply { epoch: "e".into(), seq, delivered: seq }, open);
        r
    }

    #[test]
    fn welcome_carries_the_cursor() {
        let mut r: RelayCore = RelayCore::new("room", Region::Weur, 1, "abc".into());
        assert!(r.admit(None).is_none(), "no welcome before joining");
        assert!(r.needs_join(0));
        r.joined(JoinReply { epoch: "e".into(), seq: 5, delivered: 5 }, 0);
        let (conn, w) = r.admit(None).unwrap();
        assert_eq!(conn, "weur-abc-1");
        let v: serde_json::Value = serde_json::from_str(&w).unwrap();
        assert_eq!(v["seq"], 5);
        assert_eq!(v["epoch"], "e");
        assert!(!r.needs_join(1));
        assert_eq!(r.admit(None).unwrap().0, "weur-abc-2");
    }

    #[test]
    fn delivery_plans() {
        let mut r = joined(0, 5);
        assert_eq!(r.plan_delivery("e", Some(6), Some(8)), DeliveryPlan::Forward);
        assert_eq!(r.plan_delivery("e", None, None), DeliveryPlan::Forward);
        assert_eq!(r.plan_delivery("e", Some(7), Some(8)), DeliveryPlan::Skip);
        assert_eq!(r.plan_delivery("e", Some(8), Some(10)), DeliveryPlan::Trim { after: 8 });
        assert_eq!(r.plan_delivery("e", Some(14), Some(15)), DeliveryPlan::Repair { after: 10, upto: 13 });
        assert_eq!(r.cursor(), Some(10), "not moved until the repair is out");
        r.repaired(15);
        assert_eq!(r.cursor(), Some(15));
    }

    #[test]
    fn joining_with_clients_keeps_the_cursor() {
        let mut r = joined(0, 5);
        r.plan_delivery("e", Some(6), Some(6));
        // The room's seq may be ahead while a delivery is in flight; clients
        // already connected must not skip it.
        r.joined(JoinReply { epoch: "e".into(), seq: 9, delivered: 6 }, 2);
        assert_eq!(r.cursor(), Some(6));
        r.joined(JoinReply { epoch: "e".into(), seq: 9, delivered: 6 }, 0);
        assert_eq!(r.cursor(), Some(9));
    }

    #[test]
    fn waking_with_sockets_resumes_from_what_was_delivered() {
        let mut r: RelayCore = RelayCore::new("room", Region::Weur, 2, "n".into());
        r.joined(JoinReply { epoch: "e".into(), seq: 9, delivered: 7 }, 3);
        assert_eq!(r.cursor(), Some(7));
        assert_eq!(r.plan_delivery("e", Some(8), Some(9)), DeliveryPlan::Forward);
    }

    #[test]
    fn new_epoch_restarts_the_cursor() {
        let mut r = joined(1, 5);
        assert_eq!(r.plan_delivery("e2", Some(1), Some(1)), DeliveryPlan::Forward);
        assert_eq!(r.cursor(), Some(1));
    }

    #[test]
    fn reports_coalesce() {
        let mut r = joined(0, 0);
        assert!(r.want_report());
        assert!(!r.want_report());
        assert!(!r.want_report());
        assert!(r.report_done(), "one more for the changes meanwhile");
        assert!(!r.report_done());
        assert!(r.want_report());
        assert_eq!(r.join_report(2).connections, 3);
    }

    #[test]
    fn trims_batches() {
        let f = r#"[{"t":"msg","seq":3,"ts":1,"data":1,"from":null},{"t":"msg","eph":true,"ts":1,"data":2,"from":null},{"t":"msg","seq":4,"ts":1,"data":3,"from":null}]"#;
        let kept: serde_json::Value = serde_json::from_str(&trim_frame(f, 3, true).unwrap()).unwrap();
        assert_eq!(kept.as_array().unwrap().len(), 2);
        let replay: serde_json::Value = serde_json::from_str(&trim_frame(f, 2, false).unwrap()).unwrap();
        assert_eq!(replay.as_array().unwrap().len(), 2, "a replay drops ephemeral messages");
        assert_eq!(trim_frame(r#"{"t":"msg","seq":3,"ts":1,"data":1,"from":null}"#, 3, true), None);
        assert_eq!(trim_frame("garbage", 0, true), None);
    }

    #[test]
    fn window_is_contiguous_and_bounded() {
        let mut w: Window<&str> = Window::default();
        w.push(1, 3, 100, "a");
        w.push(4, 4, 200, "b");
        assert_eq!(w.since(0, 0), Some(vec![("a", None), ("b", None)]));
        assert_eq!(w.since(2, 0), Some(vec![("a", Some(2)), ("b", None)]));
        assert_eq!(w.since(4, 0), Some(vec![]));
        assert_eq!(w.since(2, 150), None, "the frame holding 3 is past the TTL");
        assert_eq!(w.since(3, 150), Some(vec![("b", None)]));
        w.push(9, 9, 300, "gap");
        assert_eq!(w.since(4, 0), None, "a hole restarts the window");
        assert_eq!(w.since(8, 0), Some(vec![("gap", None)]));
        let mut big: Window<u64> = Window::default();
        for s in 1..=RELAY_WINDOW_MESSAGES + 10 {
            big.push(s, s, 0, s);
        }
        assert_eq!(big.since(5, 0), None);
        assert_eq!(big.since(10, 0).map(|f| f.len()), Some(RELAY_WINDOW_MESSAGES as usize));
    }

    #[test]
    fn resume_plans() {
        let mut r = joined(0, 10);
        r.fanned_out(11, 12, 1_000, "f11".to_string());
        r.plan_delivery("e", Some(11), Some(12));
        assert_eq!(r.plan_resume("other", 12, 1_000), Resume::NotRecoverable);
        assert_eq!(r.plan_resume("e", 13, 1_000), Resume::NotRecoverable, "ahead of this relay");
        assert_eq!(r.plan_resume("e", 12, 1_000), Resume::Frames(vec![]));
        assert_eq!(r.plan_resume("e", 11, 1_000), Resume::Frames(vec![("f11".to_string(), Some(11))]));
        assert_eq!(r.plan_resume("e", 3, 1_000), Resume::FromRoom { after: 3, upto: 12 });
        r.set_retention(Retention { max_messages: 1, ttl_ms: 1_000_000, dedup_window_ms: 0 });
        assert_eq!(r.plan_resume("e", 10, 1_000), Resume::FromRoom { after: 10, upto: 12 }, "past the count bound");
        r.set_retention(Retention { max_messages: 100, ttl_ms: 500, dedup_window_ms: 0 });
        assert_eq!(r.plan_resume("e", 10, 1_600), Resume::FromRoom { after: 10, upto: 12 }, "past the TTL");
        r.resumed(true, false);
        r.resumed(true, true);
        r.resumed(false, false);
        let rep = r.report(1);
        assert_eq!((rep.recovered_from_relay, rep.recovered_from_room, rep.not_recovered), (1, 1, 1));
        r.plan_delivery("e2", Some(1), Some(1));
        assert_eq!(r.plan_resume("e2", 0, 1_000), Resume::FromRoom { after: 0, upto: 1 }, "window cleared on a new epoch");
    }

    #[test]
    fn publish_rate_is_per_connection() {
        let mut r = joined(0, 0);
        r.set_publish_rate(1, 2);
        assert!(r.allow_publish("a", 0) && r.allow_publish("a", 0));
        assert!(!r.allow_publish("a", 0));
        assert!(r.allow_publish("b", 0), "another connection has its own bucket");
        assert!(r.allow_publish("a", 1000));
        r.closed("a");
        assert!(r.allow_publish("a", 1000) && r.allow_publish("a", 1000), "a new connection starts full");
    }

    #[test]
    fn strikes_are_per_connection() {
        let mut r = joined(0, 0);
        for i in 0..crate::abuse::MAX_STRIKES {
            assert_eq!(r.bad_frame("a", u64::from(i), ErrorCode::BadFrame), None);
        }
        assert_eq!(r.bad_frame("b", 20, ErrorCode::BadFrame), None);
        assert_eq!(r.bad_frame("a", 20, ErrorCode::TooLarge), Some(CloseCode::MessageTooBig));
    }
}

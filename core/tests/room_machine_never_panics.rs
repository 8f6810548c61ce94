//! Arbitrary sequences of events into the Room and Relay state machines:
//! nothing panics, and the invariants that clients rely on hold.
//!
//! - The Room: publishes (single and in batches, retried by id), reports of
//!   any shape, call results of every kind (applied, dropped, failed, and
//!   late results of calls to a relay the Room has since forgotten), reply
//!   deliveries, alarms and erasures. Seq grows by exactly one per stored
//!   message, a join reply names the Room's seq, and every delivery is
//!   well-formed; one `deliver` call is in flight per relay.
//! - The Relay: arbitrary deliveries (any seqs, links, item numbers, syncs)
//!   and range answers served consistently from a store with a pruned
//!   floor, or failed. What it fans out is gapless (a `reset` jumps the
//!   expectation forward), its cursor never goes back, and it is always the
//!   last seq it fanned out.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use herald_core::config::Retention;
use herald_core::link::{DeliveryHead, JoinReply, LinkAck, LinkPub, PublishBatch, RangeHead, RelayPosition, RelayReport};
use herald_core::relay::{RelayAction, RelayCore};
use herald_core::room::{RoomAction, RoomCore};
use herald_core::server_frame::batch_frame;
use herald_core::Region;
use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

const INC: u64 = 7;

#[derive(Debug, Clone)]
enum Event {
    Publish { eph: bool, data: String },
    /// A relay's publish call; `id` small so retries of the same id happen.
    Batch { region: usize, id: u8, n: usize },
    /// `cursor`: `None` for a relay with no position (joining).
    Report { region: usize, connections: u32, cursor: Option<u64>, ack: bool },
    /// The result of one call in flight (picked by index): applied and
    /// acknowledged, answered unapplied, dropped by the fault knob, or failed.
    Delivered { pick: usize, outcome: u8 },
    /// A relay's publish call is answered, with its delivery if one is due.
    Answered { region: usize },
    Alarm { advance: u64 },
    Erase,
}

fn arb_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => (any::<bool>(), "[a-z0-9]{0,12}").prop_map(|(eph, s)| Event::Publish {
            eph,
            data: serde_json::to_string(&s).unwrap()
        }),
        2 => (0..9usize, 0..4u8, 0..4usize).prop_map(|(region, id, n)| Event::Batch { region, id, n }),
        2 => (0..9usize, 0..4u32, prop::option::of(0..40u64), any::<bool>())
            .prop_map(|(region, connections, cursor, ack)| Event::Report { region, connections, cursor, ack }),
        4 => (any::<usize>(), 0..4u8).prop_map(|(pick, outcome)| Event::Delivered { pick, outcome }),
        2 => (0..9usize).prop_map(|region| Event::Answered { region }),
        1 => (0..5_000u64).prop_map(|advance| Event::Alarm { advance }),
        1 => Just(Event::Erase),
    ]
}

fn link_pub(eph: bool, data: &str) -> LinkPub {
    LinkPub { from: None, data: RawValue::from_string(data.to_owned()).unwrap(), mid: None, eph }
}

/// A call in flight: its region and the item it would acknowledge.
#[derive(Debug, Clone, Copy)]
struct Call {
    region: Region,
    link: u64,
    last_lsn: u64,
    /// Made to a relay the Room has forgotten since: a late result.
    stale: bool,
}

fn check_head(head: &DeliveryHead, frame: &str, last_seq: u64) -> Result<(), TestCaseError> {
    if let (Some(f), Some(l)) = (head.first, head.last) {
        prop_assert!(f <= l && l <= last_seq, "{head:?} past seq {last_seq}");
    }
    prop_assert!(head.first_lsn <= head.last_lsn);
    prop_assert_eq!(head.inc, INC);
    if frame.is_empty() {
        prop_assert!(head.sync_to.is_some(), "only a sync carries no frame: {head:?}");
    } else {
        let parsed: Value = serde_json::from_str(frame).unwrap();
        prop_assert!(parsed.is_object() || parsed.is_array());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn room_survives_any_event_order(events in prop::collection::vec(arb_event(), 0..200)) {
        let mut room = RoomCore::new("r", None, "e0".into(), Retention { max_messages: 20, ttl_ms: 60_000, dedup_window_ms: 30_000 }, INC);
        let mut last_seq = 0u64;
        let mut stored = 0u64;
        let mut epochs = 0u32;
        let mut now = 0u64;
        let mut calls: Vec<Call> = Vec::new();
        // Regions that got a late result since their calls last drained: the
        // Room cannot tell it from the current call's, so two may overlap.
        let mut relaxed: BTreeSet<Region> = BTreeSet::new();
        let mut batches: BTreeMap<String, Vec<Option<u64>>> = BTreeMap::new();
        for ev in events {
            now += 1;
            match ev {
                Event::Publish { eph, data } => {
                    let out = room.publish(now, link_pub(eph, &data));
                    if let Some(seq) = out.seq {
                        prop_assert_eq!(seq, last_seq + 1, "seq grows by exactly one");
                        last_seq = seq;
                    }
                }
                Event::Batch { region, id, n } => {
                    let region = Region::ALL[region];
                    let id = format!("{region}-{id}-{n}");
                    let pubs = (0..n).map(|i| link_pub(false, &i.to_string())).collect();
                    let report = RelayReport { connections: 1, ..RelayReport::new(region) };
                    let outcomes = room.publish_batch(now, PublishBatch { id: id.clone(), report, pubs });
                    let seqs: Vec<Option<u64>> = outcomes.iter().map(|o| o.seq).collect();
                    match batches.get(&id) {
                        Some(before) if before.len() == n => {
                            // A retry within memory is answered, not stored;
                            // after an erasure it is a new batch.
                            if seqs != *before {
                                for s in seqs.iter().flatten() {
                                    prop_assert_eq!(*s, last_seq + 1);
                                    last_seq = *s;
                                }
                            }
                        }
                        _ => {
                            for s in seqs.iter().flatten() {
                                prop_assert_eq!(*s, last_seq + 1, "seq grows by exactly one");
                                last_seq = *s;
                            }
                        }
                    }
                    batches.insert(id, seqs);
                }
                Event::Report { region, connections, cursor, ack } => {
                    let region = Region::ALL[region];
                    let last = calls.iter().filter(|c| c.region == region).map(|c| (c.link, c.last_lsn)).max();
                    let position = cursor.map(|cursor| RelayPosition {
                        gen: u64::from(epochs),
                        cursor,
                        ack: last.filter(|_| ack).map(|(link, lsn)| LinkAck { inc: INC, link, lsn }),
                    });
                    let reply = room.report(now, RelayReport { connections, wakeups: 1, position, ..RelayReport::new(region) });
                    prop_assert_eq!(reply.seq, last_seq);
                    prop_assert_eq!(reply.gen, u64::from(epochs));
                    prop_assert!(reply.epoch_start <= reply.seq);
                }
                Event::Answered { region } => {
                    let region = Region::ALL[region];
                    if let Some(d) = room.reply_delivery(now, region) {
                        prop_assert_eq!(d.region, region);
                        prop_assert!(!calls.iter().any(|c| c.region == region && !c.stale), "never beside a call in flight");
                        check_head(&d.head, &d.frame, last_seq)?;
                    }
                }
                Event::Delivered { pick, outcome } => {
                    if !calls.is_empty() {
                        let call = calls.remove(pick % calls.len());
                        if call.stale {
                            relaxed.insert(call.region);
                        }
                        let acked = RelayReport {
                            connections: 1,
                            wakeups: 1,
                            position: Some(RelayPosition {
                                gen: u64::from(epochs),
                                cursor: last_seq,
                                ack: Some(LinkAck { inc: INC, link: call.link, lsn: call.last_lsn }),
                            }),
                            ..RelayReport::new(call.region)
                        };
                        let result = match outcome {
                            0 => Ok(Some(acked)),
                            1 => Ok(Some(RelayReport { position: None, ..acked })),
                            2 => Ok(None),
                            _ => Err(()),
                        };
                        room.delivered(now, call.region, result);
                        if !calls.iter().any(|c| c.region == call.region) {
                            relaxed.remove(&call.region);
                        }
                    }
                }
                Event::Alarm { advance } => {
                    now += advance;
                    room.alarm(now);
                }
                Event::Erase => {
                    epochs += 1;
                    let (epoch, seq) = room.erase(now, format!("e{epochs}"));
                    prop_assert_eq!((epoch, seq), (format!("e{epochs}"), last_seq));
                }
            }
            while let Some(action) = room.poll_action() {
                match action {
                    RoomAction::Deliver(d) => {
                        let busy = calls.iter().any(|c| c.region == d.region && !c.stale);
                        prop_assert!(!busy || relaxed.contains(&d.region), "one delivery in flight per relay");
                        check_head(&d.head, &d.frame, last_seq)?;
                        prop_assert_eq!(d.head.gen, u64::from(epochs), "nothing of an erased epoch is sent");
                        calls.push(Call { region: d.region, link: d.head.link, last_lsn: d.head.last_lsn, stale: false });
                    }
                    RoomAction::Store(m) => {
                        prop_assert_eq!(m.seq, Some(stored + 1), "stored in seq order, each once");
                        stored += 1;
                    }
                    _ => {}
                }
            }
            // Calls to a relay the Room forgot are now late, whatever comes.
            let known: BTreeSet<Region> = room.stats(0).relays.iter().map(|r| r.region).collect();
            for c in &mut calls {
                if !known.contains(&c.region) {
                    c.stale = true;
                }
            }
        }
    }

    #[test]
    fn relay_fans_out_gapless_and_its_cursor_never_goes_back(
        start in 0..50u64,
        floor in 0..60u64,
        steps in prop::collection::vec((0..80u64, 0..5u64, 0..3u8, 0..30u64, 0..3u64, 0..4u8), 0..100)
    ) {
        let mut relay: RelayCore = RelayCore::new("r", Region::Weur, 1, "n".into(), 1);
        let reply = JoinReply { epoch: "e".into(), gen: 0, epoch_start: 0, seq: start, ack: LinkAck { inc: 1, link: 1, lsn: 0 }, reads: false };
        relay.joined(reply, 0);
        while relay.poll_action().is_some() {}
        // The room's store: every seq up to `top`, but nothing at or below `floor`.
        let mut top = start;
        let mut expect = start; // the last seq a client saw
        let mut cursor = start;
        let msgs = |from: u64, to: u64| -> Option<String> {
            let frames: Vec<String> = (from..=to).map(|s| format!(r#"{{"t":"msg","seq":{s},"ts":1,"data":{s},"from":null}}"#)).collect();
            (!frames.is_empty()).then(|| batch_frame(&frames))
        };
        let mut pending_read: Option<(u64, u64)> = None;
        for (first, len, kind, uid, inc, fate) in steps {
            match (pending_read, fate) {
                (Some(_), 0) => {
                    relay.handle_range_failed();
                    pending_read = None;
                }
                (Some((after, upto)), _) => {
                    let from = after.max(floor).min(upto.max(after));
                    let last = upto.min(top);
                    let last = last.max(from);
                    let head = RangeHead { epoch: "e".into(), gen: 0, epoch_start: 0, from, last, recovered: true };
                    relay.handle_range(head, msgs(from + 1, last));
                    pending_read = None;
                }
                (None, _) => {
                    let (f, l) = (first + 1, first + 1 + len);
                    top = top.max(l);
                    let mut head = DeliveryHead {
                        epoch: "e".into(),
                        gen: 0,
                        epoch_start: 0,
                        inc,
                        link: 1 + uid % 2,
                        first_lsn: uid,
                        last_lsn: uid + len,
                        first: Some(f),
                        last: Some(l),
                        first_ts: 1,
                        sync_to: None,
                        reset: false,
                        presence: None,
                        read_marks: false,
                        reads: false,
                    };
                    let frame = match kind {
                        0 => msgs(f, l),
                        1 => {
                            head.first = None;
                            head.last = None;
                            Some(r#"{"t":"msg","eph":true,"ts":1,"data":0,"from":null}"#.to_owned())
                        }
                        _ => {
                            head.first = None;
                            head.last = None;
                            head.sync_to = Some(l);
                            None
                        }
                    };
                    relay.handle_delivery(Some(1), head, frame);
                }
            }
            while let Some(action) = relay.poll_action() {
                match action {
                    RelayAction::FanOut(frame) => {
                        let v: Value = serde_json::from_str(&frame).unwrap();
                        let items = match v {
                            Value::Array(items) => items,
                            one => vec![one],
                        };
                        for item in items {
                            match (item["t"].as_str(), item["seq"].as_u64()) {
                                (Some("msg"), Some(seq)) => {
                                    prop_assert_eq!(seq, expect + 1, "gapless fan-out");
                                    expect = seq;
                                }
                                (Some("msg"), None) => {}
                                (Some("reset"), Some(seq)) => {
                                    prop_assert!(seq >= expect, "a reset never goes back");
                                    prop_assert!(seq <= floor, "a reset only skips what is gone");
                                    expect = seq;
                                }
                                other => prop_assert!(false, "unexpected frame {other:?}"),
                            }
                        }
                    }
                    RelayAction::ReadRange { after, upto } => {
                        prop_assert!(pending_read.is_none(), "one read at a time");
                        prop_assert_eq!(Some(after), relay.cursor());
                        prop_assert!(upto > after);
                        pending_read = Some((after, upto));
                    }
                    RelayAction::SavePosition(saved) => prop_assert_eq!(Some(saved.cursor), relay.cursor()),
                    RelayAction::Answer { .. } => {}
                    RelayAction::FanOutPresence(..) => prop_assert!(false, "no presence calls here"),
                    RelayAction::SendToUser { .. } => prop_assert!(false, "no read marks here"),
                }
            }
            let now_cursor = relay.cursor().unwrap();
            prop_assert!(now_cursor >= cursor, "cursor went back: {cursor} -> {now_cursor}");
            cursor = now_cursor;
            prop_assert_eq!(cursor, expect, "the cursor is what clients saw last");
            let welcome: Value = serde_json::from_str(&relay.admit(None).unwrap().1).unwrap();
            prop_assert_eq!(welcome["seq"].as_u64(), Some(cursor));
        }
    }
}

//! Arbitrary sequences of events into the Room and Relay state machines:
//! nothing panics, and the invariants that clients rely on hold.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use herald_core::link::{JoinReply, LinkPub, RelayReport};
use herald_core::relay::{DeliveryPlan, RelayCore};
use herald_core::room::{RoomAction, RoomCore};
use herald_core::Region;
use proptest::prelude::*;
use serde_json::value::RawValue;

#[derive(Debug, Clone)]
enum Event {
    Publish { eph: bool, data: String },
    Report { region: usize, connections: u32 },
    Delivered { region: usize, ok: bool },
    /// A relay's publish call is answered, with its delivery if one is due.
    Answered { region: usize },
}

fn arb_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (any::<bool>(), "[a-z0-9]{0,12}").prop_map(|(eph, s)| Event::Publish {
            eph,
            data: serde_json::to_string(&s).unwrap()
        }),
        (0..9usize, 0..4u32).prop_map(|(region, connections)| Event::Report { region, connections }),
        (0..9usize, any::<bool>()).prop_map(|(region, ok)| Event::Delivered { region, ok }),
        (0..9usize).prop_map(|region| Event::Answered { region }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn room_survives_any_event_order(events in prop::collection::vec(arb_event(), 0..200)) {
        let mut room = RoomCore::new("r", None, "e".into(), herald_core::config::Retention::default());
        let mut last_seq = 0u64;
        let mut in_flight = std::collections::BTreeSet::new();
        for (now, ev) in events.into_iter().enumerate() {
            match ev {
                Event::Publish { eph, data } => {
                    let p = LinkPub { from: None, data: RawValue::from_string(data).unwrap(), mid: None, eph };
                    let out = room.publish(now as u64, p);
                    if let Some(seq) = out.seq {
                        prop_assert_eq!(seq, last_seq + 1, "seq grows by exactly one");
                        last_seq = seq;
                    }
                }
                Event::Report { region, connections } => {
                    let region = Region::ALL[region];
                    let reply = room.report(RelayReport { connections, wakeups: 1, ..RelayReport::new(region) });
                    prop_assert_eq!(reply.seq, last_seq);
                    prop_assert!(reply.delivered <= reply.seq);
                }
                Event::Answered { region } => {
                    let region = Region::ALL[region];
                    if let Some(d) = room.reply_delivery(region) {
                        prop_assert_eq!(d.region, region);
                        prop_assert!(!in_flight.contains(&region), "never beside a delivery in flight");
                        if let (Some(f), Some(l)) = (d.first, d.last) {
                            prop_assert!(f <= l && l <= last_seq);
                        }
                    }
                }
                Event::Delivered { region, ok } => {
                    let region = Region::ALL[region];
                    if in_flight.remove(&region) {
                        let report = RelayReport { connections: 1, wakeups: 1, ..RelayReport::new(region) };
                        room.delivered(region, if ok { Ok(report) } else { Err(()) });
                    } else {
                        // A stray result for a relay with nothing in flight is ignored.
                        room.delivered(region, Ok(RelayReport { connections: 1, wakeups: 1, ..RelayReport::new(region) }));
                    }
                }
            }
            while let Some(action) = room.poll_action() {
                if let RoomAction::Deliver(d) = action {
                    prop_assert!(in_flight.insert(d.region), "one delivery in flight per relay");
                    let parsed: serde_json::Value = serde_json::from_str(&d.frame).unwrap();
                    prop_assert!(parsed.is_object() || parsed.is_array());
                    if let (Some(f), Some(l)) = (d.first, d.last) {
                        prop_assert!(f <= l && l <= last_seq);
                    }
                }
            }
        }
    }

    #[test]
    fn relay_cursor_never_goes_back(
        start in 0..50u64,
        deliveries in prop::collection::vec((0..80u64, 0..5u64, any::<bool>()), 0..100)
    ) {
        let mut relay: RelayCore = RelayCore::new("r", Region::Weur, 1, "n".into());
        relay.joined(JoinReply { epoch: "e".into(), seq: start, delivered: start }, 0);
        let mut cursor = start;
        for (first, len, eph_only) in deliveries {
            let (f, l) = if eph_only { (None, None) } else { (Some(first + 1), Some(first + 1 + len)) };
            let plan = relay.plan_delivery("e", f, l);
            if let (Some(f), Some(l)) = (f, l) {
                match plan {
                    DeliveryPlan::Skip => prop_assert!(l <= cursor),
                    DeliveryPlan::Forward => prop_assert_eq!(f, cursor + 1),
                    DeliveryPlan::Trim { after } => prop_assert!(after == cursor && f <= cursor),
                    DeliveryPlan::Repair { after, upto } => {
                        prop_assert!(after == cursor && upto + 1 == f);
                        prop_assert_eq!(relay.cursor(), Some(cursor), "held until repaired");
                        relay.repaired(l);
                    }
                }
                cursor = cursor.max(l);
            } else {
                prop_assert_eq!(plan, DeliveryPlan::Forward);
            }
            prop_assert_eq!(relay.cursor(), Some(cursor));
        }
    }
}

//! A relay that missed messages repairs the gap from the Room's storage,
//! but retention may already have deleted them. Then the loss is real, and
//! the one thing the relay must not do is hide it: a client that sees seq 12
//! after seq 9 cannot tell "lost for good" from "still coming", and one that
//! simply waits would wait forever. So the relay announces the jump with a
//! `reset` in the SAME epoch (the history was not erased, only outrun)
//! naming the seq after which the stream continues.
//!
//! `HERALD_HISTORY_MAX=3` with every 2nd delivery dropped and a fast HTTP
//! burst makes pruned gaps likely (not certain: a re-send may win the race,
//! so the test does not demand a reset). What it demands of every client's
//! stream: each `msg` is exactly the one after the previous (or after the
//! last reset), each `reset` keeps the welcome's epoch and never moves
//! backwards, and the stream reaches the last seq.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::{clients_in, http_pub_many, room_stats_until, unique_room, Server, ServerOpts};

const T: Duration = Duration::from_secs(20);
const REGIONS: [&str; 2] = ["weur", "apac"];
const CLIENTS_PER_REGION: usize = 2;
const MESSAGES: u64 = 40;
/// HTTP publishes in flight at once: a burst the relays cannot keep level
/// with message by message.
const WIDTH: usize = 8;
/// How long after the last publish every client must have reached the end.
const SETTLE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_lost_to_retention_is_announced_by_a_reset_in_the_same_epoch() {
    let server = Server::start(
        ServerOpts::default()
            .var("HERALD_HISTORY_MAX", 3)
            .var("HERALD_FAULT_DROP_FORWARD_EVERY", 2),
    )
    .await;
    let room = unique_room("pruned");

    let mut clients = clients_in(&server, &room, &REGIONS, CLIENTS_PER_REGION, T).await;
    let welcome = clients[0].1.history()[0].clone();
    let epoch = welcome["epoch"].as_str().unwrap().to_owned();
    for (who, c) in &clients {
        let w = &c.history()[0];
        assert_eq!((w["epoch"].as_str(), w["seq"].as_u64()), (Some(epoch.as_str()), Some(0)), "{who}: {w}");
    }

    let bodies: Vec<Value> = (1..=MESSAGES).map(|i| json!({"data": {"i": i}})).collect();
    let answers = http_pub_many(&server, &room, bodies, WIDTH).await;
    let last_publish = Instant::now();
    let seqs: BTreeSet<u64> = answers.iter().map(|a| a["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=MESSAGES).collect(), "each publish stored once");
    assert!(answers.iter().all(|a| a["epoch"] == epoch.as_str()), "one epoch throughout: {answers:?}");

    let deadline = last_publish + SETTLE;
    let mut total_resets = 0;
    for (who, c) in clients.iter_mut() {
        let mut expected = 0; // the welcome's seq
        let mut resets = Vec::new();
        while expected < MESSAGES {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(f) = c.next_msg(left).await else {
                panic!(
                    "{who}: stuck after seq {expected}, {SETTLE:?} after the last publish \
                     (resets {resets:?}, close code {:?})",
                    c.close_code()
                );
            };
            match f["t"].as_str() {
                Some("msg") => {
                    assert_eq!(
                        f["seq"].as_u64(),
                        Some(expected + 1),
                        "{who}: after seq {expected} (resets so far {resets:?}) a gap or repeat \
                         that no reset announced: {f}"
                    );
                    expected += 1;
                }
                Some("reset") => {
                    assert_eq!(f["epoch"], epoch.as_str(), "{who}: a pruned gap keeps the epoch: {f}");
                    let to = f["seq"].as_u64().unwrap_or_else(|| panic!("{who}: reset without seq {f}"));
                    assert!(
                        (expected..=MESSAGES).contains(&to),
                        "{who}: reset to {to} after seq {expected}: it must not go back, nor past the last seq: {f}"
                    );
                    resets.push((expected, to));
                    expected = to;
                }
                _ => panic!("{who}: unexpected frame {f}"),
            }
        }
        eprintln!("{who}: reached seq {MESSAGES}; resets (from, to): {resets:?}");
        total_resets += resets.len();
    }
    eprintln!("{total_resets} resets over {} clients", clients.len());

    let stats = room_stats_until(&server, &room, T, |s| {
        s["faults"]["dropped_deliveries"].as_u64().is_some_and(|n| n >= 1)
    })
    .await;
    assert_eq!((stats["seq"].as_u64(), stats["epoch"].as_str()), (Some(MESSAGES), Some(epoch.as_str())), "{stats}");
    eprintln!(
        "dropped deliveries {}, redeliveries {}, resets reported by relays {}",
        stats["faults"]["dropped_deliveries"], stats["redeliveries"], stats["resets"]
    );
}

//! Gap repair is itself a call that can fail. A relay whose repair read
//! fails must not paper over the gap by fanning out what came after it:
//! its clients would see a hole (or, once the repair is retried, messages
//! out of order). It has to hold its cursor before the gap and let the
//! Room re-send. Here every 3rd delivery is dropped, so bursts leave relays
//! with gaps to repair, and every 2nd range read the Room serves fails, so
//! some repairs fail. Every client must still end with every message once,
//! in order, and no `reset` (nothing was pruned: a failed read is not a
//! lost message); the stats prove reads did fail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::{assert_exactly_once_in_order, clients_in, http_pub, http_pub_many, room_stats_until, unique_room, Server, ServerOpts};

const T: Duration = Duration::from_secs(20);
const REGIONS: [&str; 3] = ["weur", "apac", "enam"];
const CLIENTS_PER_REGION: usize = 2;
const MESSAGES: u64 = 150;
/// HTTP publishes in flight at once: deliveries follow each other closely,
/// so a dropped one is usually noticed as a gap before the Room re-sends it.
const WIDTH: usize = 8;
/// How long after the last publish every client must have everything.
const SETTLE: Duration = Duration::from_secs(30);
/// The spec's bound for the last message of a quiet room.
const QUIET: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_repair_read_holds_the_cursor_until_the_gap_is_filled() {
    let server = Server::start(
        ServerOpts::default()
            .var("HERALD_FAULT_FAIL_RANGE_EVERY", 2)
            .var("HERALD_FAULT_DROP_FORWARD_EVERY", 3),
    )
    .await;
    let room = unique_room("failrange");

    let mut clients = clients_in(&server, &room, &REGIONS, CLIENTS_PER_REGION, T).await;

    let bodies: Vec<Value> = (1..=MESSAGES).map(|i| json!({"data": {"i": i}})).collect();
    let answers = http_pub_many(&server, &room, bodies, WIDTH).await;
    let last_publish = Instant::now();
    let seqs: BTreeSet<u64> = answers.iter().map(|a| a["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=MESSAGES).collect(), "each publish stored once");

    let deadline = last_publish + SETTLE;
    for (who, c) in clients.iter_mut() {
        if !c.read_through_seq(MESSAGES, deadline).await {
            let stats = support::room_stats(&server, &room).await;
            panic!(
                "{who}: seq {MESSAGES} not received within {SETTLE:?} of the last publish; got {:?}, close code {:?}; room stats: {stats}",
                c.msg_seqs(),
                c.close_code()
            );
        }
        assert_exactly_once_in_order(who, c, MESSAGES);
    }
    eprintln!("all clients complete {:?} after the last publish", last_publish.elapsed());

    // Repairs were needed and some of their reads failed.
    let stats = room_stats_until(&server, &room, T, |s| {
        s["faults"]["failed_ranges"].as_u64().is_some_and(|n| n >= 1)
            && s["faults"]["dropped_deliveries"].as_u64().is_some_and(|n| n >= 1)
    })
    .await;
    assert_eq!(stats["seq"], MESSAGES, "{stats}");
    eprintln!(
        "dropped deliveries {}, failed ranges {}, redeliveries {}",
        stats["faults"]["dropped_deliveries"], stats["faults"]["failed_ranges"], stats["redeliveries"]
    );

    // Nothing late: after one more message every stream is still exactly
    // 1..=N+1 (a repair finishing twice would show as a repeat).
    let sentinel = http_pub(&server, &room, json!({"data": "sentinel"})).await;
    assert_eq!(sentinel["seq"], MESSAGES + 1, "{sentinel}");
    let deadline = Instant::now() + QUIET;
    for (who, c) in clients.iter_mut() {
        if !c.read_through_seq(MESSAGES + 1, deadline).await {
            let stats = support::room_stats(&server, &room).await;
            panic!("{who}: the sentinel did not arrive within {QUIET:?}; room stats: {stats}");
        }
        assert_exactly_once_in_order(who, c, MESSAGES + 1);
    }
}

//! Gap repair only helps a relay that hears about a later message. In a
//! quiet room nothing comes later, so a lost delivery of the last message
//! would leave every client of that relay without it for as long as the
//! room stays quiet. The Room must notice the missing acknowledgement on
//! its own and re-send, within seconds.
//!
//! Made deterministic: two relays and `HERALD_FAULT_DROP_FORWARD_EVERY=2`,
//! and each message is published only after the previous one reached every
//! client. The Room's drop counter spans its relays and each message's two
//! first deliveries are counted back to back, so one of them is always
//! dropped, the last message's included (were the counter per relay, the
//! second message would lose both, so two messages would still do). No
//! dropped delivery here has a later message to expose its gap: only a
//! re-send can bring it. Every message must reach every client within 10 s
//! of its publish, once, in order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::{clients_in, http_pub, room_stats, room_stats_until, unique_room, Server, ServerOpts};

const T: Duration = Duration::from_secs(20);
/// The spec's bound for the last message of a quiet room.
const QUIET: Duration = Duration::from_secs(10);
const REGIONS: [&str; 2] = ["weur", "apac"];
const CLIENTS_PER_REGION: usize = 2;
/// Each loses a delivery; more than one shows a relay carries on normally
/// after a recovered message.
const MESSAGES: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_message_of_a_quiet_room_reaches_everyone() {
    let server = Server::start(ServerOpts::default().var("HERALD_FAULT_DROP_FORWARD_EVERY", 2)).await;
    let room = unique_room("quiet");

    let mut clients = clients_in(&server, &room, &REGIONS, CLIENTS_PER_REGION, T).await;

    for i in 1..=MESSAGES {
        let answer = http_pub(&server, &room, json!({"data": {"i": i}})).await;
        assert_eq!(answer["seq"], i, "{answer}");
        let published = Instant::now();
        for (who, c) in clients.iter_mut() {
            // The very next frame must be this message: nothing missing,
            // nothing repeated, nothing else.
            let left = (published + QUIET).saturating_duration_since(Instant::now());
            let Some(f) = c.next_msg(left).await else {
                let stats = room_stats(&server, &room).await;
                panic!(
                    "{who}: message {i} did not arrive within {QUIET:?} of its publish, with \
                     nothing published after it; close code {:?}; stats {stats}",
                    c.close_code()
                );
            };
            assert_eq!(
                (f["t"].as_str(), f["seq"].as_u64(), f["data"]["i"].as_u64()),
                (Some("msg"), Some(i), Some(i)),
                "{who}: expected message {i}, got {f}"
            );
        }
        eprintln!("message {i} everywhere {:?} after its publish", published.elapsed());
    }

    // Deliveries were dropped, and the Room re-sent on its own.
    let stats = room_stats_until(&server, &room, T, |s| {
        s["faults"]["dropped_deliveries"].as_u64().is_some_and(|n| n >= 1)
            && s["redeliveries"].as_u64().is_some_and(|n| n >= 1)
    })
    .await;
    assert_eq!(stats["seq"], MESSAGES, "nothing stored twice: {stats}");
    eprintln!(
        "dropped deliveries {}, redeliveries {}",
        stats["faults"]["dropped_deliveries"], stats["redeliveries"]
    );
}

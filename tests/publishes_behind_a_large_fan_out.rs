//! Publishes that pile up behind a large fan-out are gathered into one call
//! to the Room (from `GATHER_FROM_CONNECTIONS` open connections on), and
//! nothing about them changes for clients: with 120 sockets on one relay, a
//! burst of 50 publishes from one of them reaches every socket exactly once
//! in publish order, and the publisher gets one ack per publish, in order,
//! naming the seq its message got.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::{assert_exactly_once_in_order, clients_in, unique_room, Server, ServerOpts};

const T: Duration = Duration::from_secs(60);
const SOCKETS: usize = 120;
const PUBLISHES: u64 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_behind_a_large_fan_out_arrives_once_in_order_with_its_acks() {
    assert!(SOCKETS as u32 >= herald_core::relay::GATHER_FROM_CONNECTIONS, "the scenario must reach the gathering path");
    // One test user holds every socket, and the burst is over the default
    // per-connection publish burst (40): lift both.
    let opts = ServerOpts::default().var("HERALD_MAX_CONNECTIONS_PER_USER", 1000).var("HERALD_PUB_BURST", 1000);
    let server = Server::start(opts).await;
    let room = unique_room("gather");
    let mut clients = clients_in(&server, &room, &["weur"], SOCKETS, T).await;

    // The burst: sent back to back, without waiting for any ack.
    let publisher = &mut clients[0].1;
    for i in 1..=PUBLISHES {
        publisher.send_json(&json!({"t":"pub","id":i,"data":{"i":i}})).await;
    }

    let deadline = Instant::now() + T;
    let mut largest = 0;
    for (who, c) in clients.iter_mut() {
        assert!(c.read_through_seq(PUBLISHES, deadline).await, "{who} did not get seq {PUBLISHES}");
        assert_exactly_once_in_order(who, c, PUBLISHES);
        // A fresh room numbers from 1, and the burst was sent in order, so
        // seq k carries publish k.
        for m in c.history().iter().filter(|f| f["t"] == "msg") {
            assert_eq!(m["data"]["i"], m["seq"], "{who}: publish order kept: {m}");
        }
        largest = largest.max(c.largest_frame());
    }

    // One ack per publish, in publish order, each naming its message's seq.
    let publisher = &mut clients[0].1;
    while publisher.history().iter().filter(|f| f["t"] == "ack").count() < PUBLISHES as usize {
        publisher.next_msg(deadline.saturating_duration_since(Instant::now())).await.expect("acks missing");
    }
    let acks: Vec<(u64, u64)> = publisher
        .history()
        .iter()
        .filter(|f| f["t"] == "ack")
        .map(|f| (f["id"].as_u64().unwrap(), f["seq"].as_u64().unwrap()))
        .collect();
    assert_eq!(acks, (1..=PUBLISHES).map(|i| (i, i)).collect::<Vec<_>>(), "acks in order, each with its seq");
    eprintln!("largest frame a client got: {largest} bytes");
}

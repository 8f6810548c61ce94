//! The primary's cost grows with relays, not subscribers: per message the
//! Room sends at most one frame per relay, while every client receives one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::json;
use std::time::Duration;
use support::{http_json, room_stats_until, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(20);
const REGIONS: [&str; 3] = ["weur", "eeur", "oc"];
const CLIENTS_PER_REGION: usize = 5;
const MESSAGES: u64 = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_sends_per_relay_not_per_client() {
    let server = Server::start(ServerOpts::default()).await;
    let room = unique_room("cost");
    let mut clients = Vec::new();
    for region in REGIONS {
        for _ in 0..CLIENTS_PER_REGION {
            let c = Client::welcomed(&server.ws_url(&room, region), T).await;
            clients.push(c);
        }
    }
    let n = clients.len() as u64;
    let before = room_stats_until(&server, &room, T, |s| s["connections"] == n).await;
    let relays = before["relays"].as_array().unwrap();
    assert_eq!(relays.len(), REGIONS.len());
    for r in relays {
        assert_eq!(r["connections"], CLIENTS_PER_REGION as u64, "{r}");
    }

    let url = format!("{}/v1/rooms/{room}/messages", server.base_url());
    for i in 0..MESSAGES {
        let (status, body) = http_json("POST", &url, Some(&json!({"data": i}))).await;
        assert_eq!(status, 200, "{body}");
    }
    for c in clients.iter_mut() {
        for seq in 1..=MESSAGES {
            let m = c.wait_type(T, "msg").await;
            assert_eq!(m["seq"], seq);
        }
    }
    let relay_sends_before = before["relay_sends"].as_u64().unwrap();
    let after = room_stats_until(&server, &room, T, |s| {
        s["relay_sends"].as_u64().unwrap() >= relay_sends_before + n
    })
    .await;

    let primary = after["primary_sends"].as_u64().unwrap() - before["primary_sends"].as_u64().unwrap();
    let relay = after["relay_sends"].as_u64().unwrap() - relay_sends_before;
    eprintln!("{MESSAGES} messages, {n} clients, {} relays: primary_sends +{primary}, relay_sends +{relay}", REGIONS.len());
    assert!(primary >= REGIONS.len() as u64, "every relay got at least one delivery");
    assert!(
        primary <= MESSAGES * REGIONS.len() as u64,
        "primary sent {primary} frames for {MESSAGES} messages to {} relays",
        REGIONS.len()
    );
    assert!(primary < MESSAGES * n, "primary work must not scale with subscribers");
    // Each relay frame goes to each of its clients; batching can only lower it.
    assert!(relay <= MESSAGES * n && relay >= n, "relay_sends +{relay}");
    assert_eq!(relay % CLIENTS_PER_REGION as u64, 0, "each relay frame reaches all its clients");
}

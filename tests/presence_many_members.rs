//! Presence stays exact and cheap with many members: 600 anonymous readers
//! of a public room over three regions (each its own member), and a
//! counts-only watcher. The coalesced counts reach exactly 601 by region,
//! then exactly 301 after half leave; the Room's deliveries per presence
//! change stay under the number of relays (most changes share a counts
//! frame), and the watcher never gets per-member events.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;
use support::{now_s, room_stats, token, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(60);
const PER_REGION: usize = 200;
const REGIONS: [&str; 3] = ["weur", "apac", "enam"];

async fn counts_reach(watcher: &mut Client, count: u64) -> Value {
    watcher.wait_for(T, |f| f["t"] == "presence_counts" && f["count"] == count).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hundred_members_are_counted_exactly() {
    let server = Server::start(
        ServerOpts::default().var("HERALD_PUBLIC_ROOMS", "crowd-*").var("HERALD_PRESENCE_GRACE_MS", 0),
    )
    .await;
    let room = format!("crowd-{}", support::unique_room("p"));
    let t = token(&json!({"sub": "watcher", "exp": now_s() + 600, "rooms": {"*": ["sub", "presence"]}}));
    let watch_url = format!("ws://127.0.0.1:{}/v1/rooms/{room}/ws?region=weur&token={t}&presence=counts", server.port());
    let mut watcher = Client::welcomed(&watch_url, T).await;
    counts_reach(&mut watcher, 1).await;
    let before = room_stats(&server, &room).await;

    let urls: Vec<String> = (0..PER_REGION * REGIONS.len()).map(|i| server.ws_url_anon(&room, REGIONS[i % 3])).collect();
    let mut members: Vec<Client> = futures_util::stream::iter(urls)
        .map(|url| async move { Client::welcomed(&url, T).await })
        .buffer_unordered(32)
        .collect()
        .await;
    let all = counts_reach(&mut watcher, (PER_REGION * 3 + 1) as u64).await;
    assert_eq!(all["regions"], json!({"weur": PER_REGION + 1, "apac": PER_REGION, "enam": PER_REGION}), "{all}");
    let joined = room_stats(&server, &room).await;
    let sends = joined["primary_sends"].as_u64().unwrap() - before["primary_sends"].as_u64().unwrap();
    let relays = joined["relays"].as_array().unwrap().len() as u64;
    eprintln!("{sends} Room deliveries for {} joins over {relays} relays", PER_REGION * 3);
    assert!(
        sends < relays * (PER_REGION * 3) as u64,
        "{sends} deliveries for {} joins over {relays} relays",
        PER_REGION * 3
    );

    // Half leave, a region at a time.
    members.truncate(PER_REGION * 3 / 2);
    let half = counts_reach(&mut watcher, (PER_REGION * 3 / 2 + 1) as u64).await;
    let sum: u64 = half["regions"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(sum, (PER_REGION * 3 / 2 + 1) as u64, "regions sum to the count: {half}");
    assert!(!watcher.history().iter().any(|f| f["t"] == "join" || f["t"] == "leave"), "a counts-only watcher got member events");
    let (status, snap) = support::http_json("GET", &format!("{}/v1/rooms/{room}/presence?limit=1000", server.base_url()), None).await;
    assert_eq!(status, 200);
    assert_eq!(snap["members"].as_array().unwrap().len(), PER_REGION * 3 / 2 + 1);
    drop(members);
}

//! Presence survives hibernation: nothing about members is kept only in
//! memory. Members in two regions, then the Room and both relays sit idle
//! past hibernation; the snapshot is still exact, and a member who leaves
//! afterwards (the relay rebuilding its members from its sockets'
//! attachments) produces exactly one leave.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::{http_json, now_s, token, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(30);
/// Local workerd evicts an idle object after about 10 s. This idle spell is
/// the condition under test, not a wait for something to happen.
const IDLE: Duration = Duration::from_secs(12);
const GRACE_MS: u64 = 500;

fn url(server: &Server, room: &str, region: &str, user: &str, caps: &[&str]) -> String {
    let t = token(&json!({"sub": user, "exp": now_s() + 600, "rooms": {"*": caps}, "info": {"n": user}}));
    format!("ws://127.0.0.1:{}/v1/rooms/{room}/ws?region={region}&token={t}", server.port())
}

async fn stats(server: &Server, room: &str) -> Value {
    http_json("GET", &format!("{}/v1/rooms/{room}/stats", server.base_url()), None).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_is_exact_after_hibernation() {
    let server = Server::start(ServerOpts::default().var("HERALD_PRESENCE_GRACE_MS", GRACE_MS)).await;
    let room = unique_room("hibpres");
    let mut watcher = Client::welcomed(&format!("{}&presence=events", url(&server, &room, "weur", "watcher", &["sub", "presence"])), T).await;
    let mut ned = vec![
        Client::welcomed(&url(&server, &room, "apac", "ned", &["sub"]), T).await,
        Client::welcomed(&url(&server, &room, "apac", "ned", &["sub"]), T).await,
    ];
    let _ola = Client::welcomed(&url(&server, &room, "weur", "ola", &["sub"]), T).await;
    for user in ["watcher", "ned", "ola"] {
        watcher.wait_for(T, |f| f["t"] == "join" && f["user"] == user).await;
    }
    let before = stats(&server, &room).await;

    tokio::time::sleep(IDLE).await;

    let (status, snap) = http_json("GET", &format!("{}/v1/rooms/{room}/presence", server.base_url()), None).await;
    assert_eq!(status, 200);
    assert_eq!((snap["count"].as_u64(), &snap["regions"]), (Some(3), &json!({"weur": 2, "apac": 1})), "{snap}");
    assert_eq!(snap["members"][0], json!({"user": "ned", "info": {"n": "ned"}, "region": "apac"}));
    let after = stats(&server, &room).await;
    assert!(after["wakeups"]["room"].as_u64() > before["wakeups"]["room"].as_u64(), "the Room did not hibernate: {after}");

    // One of ned's two sockets closes: nothing, but the apac relay wakes
    // (constructed anew) and reports. The other: one leave.
    ned.pop().unwrap().close().await;
    let apac_before = before["wakeups"]["relays"]["apac"].as_u64().unwrap();
    support::room_stats_until(&server, &room, T, |s| s["wakeups"]["relays"]["apac"].as_u64() > Some(apac_before)).await;
    let early = watcher.try_wait_for(Duration::from_millis(GRACE_MS + 1500), |f| f["t"] == "leave").await;
    assert_eq!(early, None, "ned left while a socket of his was open");
    ned.pop().unwrap().close().await;
    let leave = watcher.wait_for(T, |f| f["t"] == "leave").await;
    assert_eq!(leave["user"], "ned", "{leave}");
    let extra = watcher.try_wait_for(Duration::from_millis(GRACE_MS + 1500), |f| f["t"] == "leave" || f["t"] == "join").await;
    assert_eq!(extra, None, "a second presence event after the wake");
    let (_, snap) = http_json("GET", &format!("{}/v1/rooms/{room}/presence", server.base_url()), None).await;
    assert_eq!((snap["count"].as_u64(), &snap["regions"]), (Some(2), &json!({"weur": 2})), "{snap}");
}

//! The Room persists its seq as the newest stored row (one write per
//! publish), and in `meta` only when retention deletes rows. So: messages
//! that all expired, then a restart, and the seq must still count on, in the
//! same epoch; and a restart with rows present must continue after the newest.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::{http_json, unique_room, Server, ServerOpts};

async fn stats(server: &Server, room: &str) -> Value {
    let (status, s) = http_json("GET", &format!("{}/v1/rooms/{room}/stats", server.base_url()), None).await;
    assert_eq!(status, 200, "{s}");
    s
}

async fn publish(server: &Server, room: &str, data: Value) -> Value {
    let url = format!("{}/v1/rooms/{room}/messages", server.base_url());
    let (status, v) = http_json("POST", &url, Some(&json!({ "data": data }))).await;
    assert_eq!(status, 200, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_counts_on_after_every_row_expired_and_a_restart() {
    let mut server = Server::start(ServerOpts::default().var("HERALD_HISTORY_TTL_S", 1)).await;
    let room = unique_room("seqhw");
    let mut epoch = None;
    for i in 1..=3u64 {
        let v = publish(&server, &room, json!(i)).await;
        assert_eq!(v["seq"].as_u64(), Some(i), "{v}");
        epoch = Some(v["epoch"].clone());
    }

    // Every row expires and the alarm deletes it: nothing stored holds seq 3.
    let started = Instant::now();
    loop {
        let s = stats(&server, &room).await;
        if s["stored"].as_u64() == Some(0) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "rows never expired: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    server.restart().await;
    let v = publish(&server, &room, json!(4)).await;
    assert_eq!((v["seq"].as_u64(), v["epoch"].clone()), (Some(4), epoch.clone().unwrap()), "seq and epoch survive: {v}");

    // With rows present, a restart continues after the newest one.
    let v = publish(&server, &room, json!(5)).await;
    assert_eq!(v["seq"].as_u64(), Some(5), "{v}");
    server.restart().await;
    let v = publish(&server, &room, json!(6)).await;
    assert_eq!((v["seq"].as_u64(), v["epoch"].clone()), (Some(6), epoch.unwrap()), "{v}");
}

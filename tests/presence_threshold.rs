//! Crossing `HERALD_PRESENCE_EVENTS_MAX` switches to coalesced counts.
//!
//! With the maximum at 3 and counts at most every 500 ms: the first three
//! members are joins; past that, full subscribers get no per-member events,
//! only `presence_counts` frames, never two within the interval, and the
//! last one is exact. A `?presence=counts` subscriber gets counts frames
//! only, in both modes. Back at or under the maximum, per-member events
//! resume after a counts frame showing it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::{now_s, token, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(30);
const INTERVAL_MS: u64 = 500;

fn url(server: &Server, room: &str, region: &str, user: &str, caps: &[&str], extra: &str) -> String {
    let t = token(&json!({"sub": user, "exp": now_s() + 600, "rooms": {"*": caps}}));
    format!("ws://127.0.0.1:{}/v1/rooms/{room}/ws?region={region}&token={t}{extra}", server.port())
}

/// Reads presence frames (with their arrival time) until one satisfies `done`.
async fn until(c: &mut Client, done: impl Fn(&Value) -> bool) -> Vec<(Instant, Value)> {
    let mut got = Vec::new();
    loop {
        let f = c.wait_for(T, |f| matches!(f["t"].as_str(), Some("join" | "leave" | "presence_counts"))).await;
        got.push((Instant::now(), f.clone()));
        if done(&f) {
            return got;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_maximum_only_coalesced_counts_go_out() {
    let server = Server::start(
        ServerOpts::default()
            .var("HERALD_PRESENCE_EVENTS_MAX", 3)
            .var("HERALD_PRESENCE_INTERVAL_MS", INTERVAL_MS)
            .var("HERALD_PRESENCE_GRACE_MS", 0),
    )
    .await;
    let room = unique_room("threshold");
    let mut full = Client::welcomed(&url(&server, &room, "weur", "full", &["sub", "presence"], "&presence=events"), T).await;
    let mut counts = Client::welcomed(&url(&server, &room, "apac", "counts", &["sub", "presence"], "&presence=counts"), T).await;
    let mut users = vec![Client::welcomed(&url(&server, &room, "weur", "u0", &["sub"], ""), T).await];
    let joins = until(&mut full, |f| f["t"] == "join" && f["user"] == "u0").await;
    assert_eq!(joins.iter().filter(|(_, f)| f["t"] == "join").count(), 3, "full, counts, u0: {joins:?}");

    for i in 1..=5 {
        users.push(Client::welcomed(&url(&server, &room, ["weur", "apac", "enam"][i % 3], &format!("u{i}"), &["sub"], ""), T).await);
    }
    let seen = until(&mut full, |f| f["t"] == "presence_counts" && f["count"] == 8).await;
    assert!(seen.iter().all(|(_, f)| f["t"] == "presence_counts"), "per-member events past the maximum: {seen:?}");
    // At most one counts frame per interval. Arrival times jitter, so the
    // check is on the whole span: n frames need at least n - 2 intervals.
    if let (Some(first), Some(last)) = (seen.first(), seen.last()) {
        let span = last.0 - first.0;
        let allowed = span.as_millis() as usize / INTERVAL_MS as usize + 2;
        assert!(seen.len() <= allowed, "{} counts frames in {span:?}: more than one per {INTERVAL_MS} ms", seen.len());
    }
    assert_eq!(seen.last().unwrap().1["regions"], json!({"weur": 3, "apac": 3, "enam": 2}));
    let c = until(&mut counts, |f| f["count"] == 8).await;
    assert!(c.iter().all(|(_, f)| f["t"] == "presence_counts"), "{c:?}");

    // Back to 3: a counts frame showing it, then per-member events again.
    for _ in 0..5 {
        users.pop().unwrap().close().await;
    }
    let back = until(&mut full, |f| f["t"] == "presence_counts" && f["count"] == 3).await;
    assert!(back.iter().all(|(_, f)| f["t"] == "presence_counts"), "{back:?}");
    users.pop().unwrap().close().await;
    let leave = full.wait_for(T, |f| f["t"] == "leave" || f["t"] == "join").await;
    assert_eq!((leave["t"].as_str(), leave["user"].as_str()), (Some("leave"), Some("u0")), "{leave}");
    assert!(!counts.history().iter().any(|f| f["t"] == "join" || f["t"] == "leave"), "a counts subscriber got member events");
}

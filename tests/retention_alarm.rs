//! Retention with `HERALD_HISTORY_MAX=5`, `HERALD_HISTORY_TTL_S=2`: reads
//! are exact at once (only the newest 5), the Room's alarm then physically
//! deletes rows, first down to the count bound (5, plus the slack of 1 that
//! triggers a prune) before any row's TTL, then, with no traffic at all,
//! every row once its TTL passes (stats `stored` 0, history empty), and the
//! seq keeps counting afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::{http_json, unique_room, Server, ServerOpts};

const POLL: Duration = Duration::from_millis(50);

async fn stats(server: &Server, room: &str) -> Value {
    let (status, s) = http_json("GET", &format!("{}/v1/rooms/{room}/stats", server.base_url()), None).await;
    assert_eq!(status, 200, "{s}");
    s
}

async fn history_seqs(server: &Server, room: &str) -> Vec<u64> {
    let url = format!("{}/v1/rooms/{room}/messages?since=0", server.base_url());
    let (status, h) = http_json("GET", &url, None).await;
    assert_eq!(status, 200, "{h}");
    h["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alarm_deletes_rows_past_count_and_age() {
    let server = Server::start(
        ServerOpts::default().var("HERALD_HISTORY_MAX", 5).var("HERALD_HISTORY_TTL_S", 2),
    )
    .await;
    let room = unique_room("retain");
    let url = format!("{}/v1/rooms/{room}/messages", server.base_url());

    let started = Instant::now();
    for i in 1..=12u64 {
        let (status, v) = http_json("POST", &url, Some(&json!({"data": i, "mid": format!("m{i}")}))).await;
        assert_eq!((status, v["seq"].as_u64()), (200, Some(i)), "{v}");
    }
    let published_in = started.elapsed();
    // Reads are exact immediately: only the newest 5. (Valid only while
    // none of 8..12 has reached its 2 s TTL.)
    let seqs = history_seqs(&server, &room).await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "publishing took {published_in:?}: too slow to check the count bound before the TTL"
    );
    assert_eq!(seqs, vec![8, 9, 10, 11, 12], "history holds only the newest HERALD_HISTORY_MAX");

    // The count bound: the alarm deletes rows once they exceed max + max/10
    // (at least +1), i.e. more than 6 here, down to 5; a publish after the
    // prune may leave 6. This must be seen before the first row could expire
    // (2 s after the first publish), so it is the count prune, not the TTL.
    let mut trace = Vec::new();
    loop {
        let s = stats(&server, &room).await;
        let stored = s["stored"].as_u64().unwrap_or_else(|| panic!("no stored in stats: {s}"));
        trace.push((started.elapsed().as_millis(), stored));
        if stored <= 5 + 1 {
            assert!(stored >= 5, "8..12 are within retention and must still be stored: {trace:?}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_millis(1900),
            "stored not pruned to the count bound before the TTL: {trace:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    eprintln!("count prune observed at {:?}: {trace:?}", started.elapsed());

    // The TTL: with no traffic, every row is deleted by the alarm.
    let mut trace = Vec::new();
    loop {
        let s = stats(&server, &room).await;
        let stored = s["stored"].as_u64().unwrap();
        trace.push((started.elapsed().as_millis(), stored));
        if stored == 0 {
            assert_eq!(s["seq"], 12, "{s}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "rows never expired: {trace:?}");
        tokio::time::sleep(POLL).await;
    }
    eprintln!("TTL prune done at {:?}: {trace:?}", started.elapsed());
    assert_eq!(history_seqs(&server, &room).await, Vec::<u64>::new(), "history empty after the TTL");

    // The seq continues.
    let (status, v) = http_json("POST", &url, Some(&json!({"data": 13}))).await;
    assert_eq!((status, v["seq"].as_u64()), (200, Some(13)), "{v}");
    assert_eq!(history_seqs(&server, &room).await, vec![13]);
    let s = stats(&server, &room).await;
    assert_eq!((s["seq"].as_u64(), s["stored"].as_u64()), (Some(13), Some(1)), "{s}");
}

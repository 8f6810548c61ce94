//! SSE one-way feeds: a reader gets every message as an `id: <epoch>:<seq>`
//! event with heartbeats between, reconnects with `Last-Event-ID` (or
//! `?since=&epoch=`) and loses nothing; a stale id gets `event: reset`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::sse::{SseEvent, SseStream};
use support::{http, http_json, unique_room, Server, ServerOpts};

const T: Duration = Duration::from_secs(15);

fn data(ev: &SseEvent) -> Value {
    serde_json::from_str(&ev.data).unwrap_or_else(|e| panic!("event data is not JSON ({e}): {ev:?}"))
}

async fn welcome(s: &mut SseStream) -> Value {
    let ev = s.next_data_event(T).await.expect("a welcome event");
    assert_eq!(ev.event.as_deref(), Some("welcome"), "{ev:?}");
    data(&ev)
}

/// Reads `count` msg events and checks their ids and seqs follow `from`.
async fn expect_msgs(s: &mut SseStream, epoch: &str, from: u64, count: u64) {
    for seq in from..from + count {
        let ev = s.next_data_event(T).await.unwrap_or_else(|| panic!("no event for seq {seq}"));
        assert_eq!(ev.event.as_deref(), Some("msg"), "{ev:?}");
        assert_eq!(ev.id, Some(format!("{epoch}:{seq}")));
        let m = data(&ev);
        assert_eq!((m["t"].as_str(), m["seq"].as_u64()), (Some("msg"), Some(seq)), "{m}");
        assert_eq!(m["data"]["n"], seq, "{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_reads_resumes_and_resets() {
    let server = Server::start(ServerOpts::default().var("HERALD_SSE_HEARTBEAT_S", 1)).await;
    let room = unique_room("sse");
    let base = server.base_url();
    let events = |region: &str| format!("{base}/v1/rooms/{room}/events?region={region}");
    let publish_url = format!("{base}/v1/rooms/{room}/messages");
    let publish = |n: u64| {
        let url = publish_url.clone();
        async move {
            let (status, v) = http_json("POST", &url, Some(&json!({"data": {"n": n}}))).await;
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["seq"], n, "publishes in order");
        }
    };

    let mut s = SseStream::open(&events("weur"), &[]).await.unwrap();
    assert_eq!(s.status, 200);
    assert!(s.content_type.starts_with("text/event-stream"), "{}", s.content_type);
    let w = welcome(&mut s).await;
    assert_eq!(w["seq"], 0);
    let epoch = w["epoch"].as_str().unwrap().to_owned();

    for n in 1..=5 {
        publish(n).await;
    }
    expect_msgs(&mut s, &epoch, 1, 5).await;
    let beat = s.next_event(T).await.expect("a heartbeat");
    assert_eq!(beat.comment.as_deref(), Some("heartbeat"), "{beat:?}");
    drop(s);

    // Missed while away: 6..10 and an ephemeral message, which is never replayed.
    for n in 6..=10 {
        publish(n).await;
    }
    let (status, _) = http("POST", &publish_url, Some(r#"{"data":"typing","ephemeral":true}"#)).await;
    assert_eq!(status, 200);

    let last_id = format!("{epoch}:5");
    let mut s = SseStream::open(&events("weur"), &[("Last-Event-ID", &last_id)]).await.unwrap();
    let w = welcome(&mut s).await;
    // The welcome carries the relay's cursor: 10, or lower while the relay,
    // which had no clients meanwhile, is still catching up from storage;
    // either way 6..=10 follow in order.
    assert_eq!(w["recovered"].as_bool(), Some(true), "{w}");
    assert!(w["seq"].as_u64().is_some_and(|s| (5..=10).contains(&s)), "{w}");
    expect_msgs(&mut s, &epoch, 6, 5).await;
    publish(11).await;
    expect_msgs(&mut s, &epoch, 11, 1).await;

    // The same resume by query, on another region's relay (served from the Room).
    let mut q = SseStream::open(&format!("{}&since=8&epoch={epoch}", events("apac")), &[]).await.unwrap();
    let w = welcome(&mut q).await;
    assert_eq!(w["recovered"], true, "{w}");
    expect_msgs(&mut q, &epoch, 9, 3).await;

    // A stale id: recovered false, then a reset with the current epoch and seq.
    let mut stale = SseStream::open(&events("weur"), &[("Last-Event-ID", "old-epoch:3")]).await.unwrap();
    let w = welcome(&mut stale).await;
    assert_eq!(w["recovered"], false);
    let reset = stale.next_data_event(T).await.unwrap();
    assert_eq!(reset.event.as_deref(), Some("reset"));
    assert_eq!(data(&reset), json!({"t":"reset","epoch":epoch,"seq":11}));

    // A malformed id is refused before any object is touched.
    let bad = SseStream::open(&events("weur"), &[("Last-Event-ID", "garbage")]).await.unwrap();
    assert_eq!(bad.status, 400);

    // Erasure reaches SSE readers as a reset event.
    let (status, erased) = http_json("DELETE", &publish_url, None).await;
    assert_eq!(status, 200, "{erased}");
    let reset = s.next_data_event(T).await.unwrap();
    assert_eq!(reset.event.as_deref(), Some("reset"), "{reset:?}");
    assert_eq!(data(&reset), json!({"t":"reset","epoch":erased["epoch"],"seq":11}));
    publish(12).await;
    expect_msgs(&mut s, erased["epoch"].as_str().unwrap(), 12, 1).await;
}

//! 200 SSE streams on one relay, 20 of which are never read.
//!
//! With `HERALD_SSE_MAX_BUFFER_BYTES` at its floor (64 KiB), messages of
//! 60 KB are published until the relay has cut off the 20 stalled streams.
//! The relay never holds more than the bound for any stream (its
//! `buffer_peak`), it is the same object throughout, and every reading
//! stream gets every message exactly once, in order: one that is itself
//! cut off (a reader can fall behind on a busy machine) reconnects with
//! `Last-Event-ID` and resumes, as an `EventSource` does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::sse::SseStream;
use support::{http_pub, room_stats, room_stats_until, unique_room, Server, ServerOpts};

const T: Duration = Duration::from_secs(60);
const STREAMS: usize = 200;
const STALLED: usize = 20;
const BOUND: usize = 65_536;
const DATA_CHARS: usize = 60_000;
/// Enough to fill a stalled client's socket buffers and then the bound,
/// many times over; the loop stops as soon as all 20 are cut off.
const MAX_MESSAGES: u64 = 400;

/// A reader: follows the stream until `last`, reconnecting from the last
/// event id whenever the relay ends it. Returns the seqs and reconnects.
async fn read_until(url: String, last: std::sync::Arc<std::sync::atomic::AtomicU64>) -> (Vec<u64>, u32) {
    let mut seqs = Vec::new();
    let mut last_id: Option<String> = None;
    let mut reconnects = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let headers: Vec<(&str, &str)> = last_id.as_deref().map(|id| vec![("Last-Event-ID", id)]).unwrap_or_default();
        let mut s = SseStream::open(&url, &headers).await.unwrap();
        assert_eq!(s.status, 200);
        loop {
            let target = last.load(std::sync::atomic::Ordering::SeqCst);
            if target > 0 && seqs.last() == Some(&target) {
                return (seqs, reconnects);
            }
            assert!(Instant::now() < deadline, "reader stuck at {:?}", seqs.last());
            let Some(ev) = s.next_data_event(Duration::from_millis(500)).await else {
                if s.ended() {
                    break;
                }
                continue; // nothing yet: look at the target again
            };
            match ev.event.as_deref() {
                Some("msg") => {
                    let m: Value = serde_json::from_str(&ev.data).unwrap();
                    seqs.push(m["seq"].as_u64().unwrap());
                    last_id = ev.id.clone();
                }
                Some("welcome") => {
                    let w: Value = serde_json::from_str(&ev.data).unwrap();
                    assert_ne!(w["recovered"], false, "a resume was refused: {w}");
                }
                other => panic!("unexpected event {other:?}: {ev:?}"),
            }
        }
        reconnects += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_streams_are_cut_off_and_readers_get_everything() {
    let server = Server::start(ServerOpts::default().var("HERALD_SSE_MAX_BUFFER_BYTES", BOUND)).await;
    let room = unique_room("slowsse");
    let url = format!("{}/v1/rooms/{room}/events?region=weur", server.base_url());
    let last = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));

    let mut stalled = Vec::new();
    let mut readers = Vec::new();
    for i in 0..STREAMS {
        if i % (STREAMS / STALLED) == 0 {
            let mut s = SseStream::open_with(&url, &[], Some(4096)).await.unwrap();
            assert_eq!(s.next_data_event(T).await.and_then(|e| e.event).as_deref(), Some("welcome"));
            stalled.push(s); // never read again
        } else {
            readers.push(tokio::spawn(read_until(url.clone(), last.clone())));
        }
    }
    room_stats_until(&server, &room, T, |s| s["connections"] == STREAMS as u64).await;

    let mut published = 0;
    while published < MAX_MESSAGES {
        let data = format!("{published}:{}", "x".repeat(DATA_CHARS));
        published = http_pub(&server, &room, json!({ "data": data })).await["seq"].as_u64().unwrap();
        if published % 5 == 0 {
            let s = room_stats(&server, &room).await;
            if s["relays"][0]["slow_closes"].as_u64().unwrap_or(0) >= STALLED as u64 {
                break;
            }
        }
    }
    last.store(published, std::sync::atomic::Ordering::SeqCst);

    let mut cut_readers = 0;
    for (i, r) in readers.into_iter().enumerate() {
        let (seqs, reconnects) = r.await.unwrap();
        assert!(seqs.iter().copied().eq(1..=published), "reader {i}: {} seqs, not 1..={published} once each", seqs.len());
        cut_readers += reconnects;
    }
    let s = room_stats(&server, &room).await;
    eprintln!("{published} messages; readers reconnected {cut_readers} times");
    let relay = &s["relays"][0];
    let slow = relay["slow_closes"].as_u64().unwrap();
    assert!(slow >= STALLED as u64, "only {slow} of the {STALLED} stalled streams were cut off after {published} messages: {s}");
    assert_eq!(slow, STALLED as u64 + u64::from(cut_readers), "every cut-off is a stalled stream or a reader that reconnected: {s}");
    let peak = relay["buffer_peak"].as_u64().unwrap() as usize;
    assert!(peak <= BOUND, "a stream held {peak} bytes, over the {BOUND} bound");
    assert_eq!(s["wakeups"]["relays"]["weur"], 1, "the relay restarted: {s}");
    drop(stalled);
}

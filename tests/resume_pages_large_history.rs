//! A resume far back into a history of large messages is replayed in pages.
//!
//! The room holds 80 messages of about 64 KB (5.2 MB), then 20 clients in
//! two regions resume from the very start at once: 16 sockets and 4 SSE
//! streams. Every one of them gets every message exactly once, in order,
//! then the next live message; no socket frame is larger than
//! max(1 MiB, the largest message frame + 4 KiB); the Room and both relays
//! are the same objects before and after (no restart), and `stats` counts
//! the 20 resumes as served from the Room's storage. A history read over
//! HTTP is cut to a mebibyte the same way.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::sse::SseStream;
use support::{assert_exactly_once_in_order, http_pub, http_pub_many, room_stats, room_stats_until, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(60);
const MESSAGES: u64 = 80;
/// Just under `HERALD_MAX_FRAME_BYTES` (65536) with the JSON around it.
const DATA_CHARS: usize = 65_000;
const SOCKETS: usize = 16;
const STREAMS: usize = 4;
const REGIONS: [&str; 2] = ["weur", "apac"];
/// The protocol's bound on anything Herald sends: max(1 MiB, largest + 4 KiB).
const PAGE_BYTES: usize = 1 << 20;

fn data(seq: u64) -> String {
    let tag = format!("m{seq}:");
    format!("{tag}{}", "x".repeat(DATA_CHARS - tag.len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_resumes_from_the_oldest_of_large_messages_are_paged() {
    let server = Server::start(ServerOpts::default()).await;
    let room = unique_room("bigresume");
    let bodies = (1..=MESSAGES).map(|i| json!({"data": data(i)})).collect();
    let answers = http_pub_many(&server, &room, bodies, 4).await;
    let epoch = answers[0]["epoch"].as_str().unwrap().to_owned();
    let before = room_stats(&server, &room).await;
    assert_eq!(before["seq"], MESSAGES);

    let since = format!("since=0&epoch={epoch}");
    let sockets = futures_util::future::join_all((0..SOCKETS).map(|i| {
        let url = format!("{}&{since}", server.ws_url(&room, REGIONS[i % 2]));
        async move {
            let mut c = Client::welcomed(&url, T).await;
            let w = &c.history()[0];
            assert_eq!(w["recovered"], true, "socket {i}: {w}");
            assert!(c.read_through_seq(MESSAGES, Instant::now() + T).await, "socket {i}: replay did not finish");
            c.drain_seen();
            c
        }
    }));
    let streams = futures_util::future::join_all((0..STREAMS).map(|i| {
        let url = format!("{}/v1/rooms/{room}/events?region={}&{since}", server.base_url(), REGIONS[i % 2]);
        async move {
            let mut s = SseStream::open(&url, &[]).await.unwrap();
            assert_eq!(s.status, 200);
            let welcome = s.next_data_event(T).await.expect("welcome");
            assert_eq!(welcome.event.as_deref(), Some("welcome"));
            let w: Value = serde_json::from_str(&welcome.data).unwrap();
            assert_eq!(w["recovered"], true, "stream {i}: {w}");
            let mut seqs = Vec::new();
            while seqs.last() != Some(&MESSAGES) {
                let ev = s.next_data_event(T).await.unwrap_or_else(|| panic!("stream {i}: stopped after {seqs:?}"));
                assert_eq!(ev.event.as_deref(), Some("msg"), "stream {i}: {ev:?}");
                let m: Value = serde_json::from_str(&ev.data).unwrap();
                assert_eq!(m["data"].as_str().map(str::len), Some(DATA_CHARS));
                seqs.push(m["seq"].as_u64().unwrap());
            }
            (s, seqs)
        }
    }));
    let (mut sockets, mut streams) = tokio::join!(sockets, streams);

    // The seam: the next live message reaches everyone once.
    let live = http_pub(&server, &room, json!({"data": "live"})).await;
    assert_eq!(live["seq"], MESSAGES + 1);
    let largest_message = data(MESSAGES).len() + 200;
    for (i, c) in sockets.iter_mut().enumerate() {
        assert!(c.read_through_seq(MESSAGES + 1, Instant::now() + T).await, "socket {i}: no live message");
        assert_exactly_once_in_order(&format!("socket {i}"), c, MESSAGES + 1);
        let bound = PAGE_BYTES.max(largest_message + 4096);
        assert!(c.largest_frame() <= bound, "socket {i}: a {} byte frame, over {bound}", c.largest_frame());
        assert!(c.largest_frame() > DATA_CHARS * 2, "socket {i}: replay frames were not batched at all");
    }
    for (i, (s, seqs)) in streams.iter_mut().enumerate() {
        let ev = s.next_data_event(T).await.expect("live event");
        let m: Value = serde_json::from_str(&ev.data).unwrap();
        seqs.push(m["seq"].as_u64().unwrap());
        assert!(seqs.iter().copied().eq(1..=MESSAGES + 1), "stream {i}: {seqs:?}");
    }

    // History over HTTP is paged by bytes the same way.
    let (status, page) = support::http_json("GET", &format!("{}/v1/rooms/{room}/messages?since=0&limit=100", server.base_url()), None).await;
    assert_eq!(status, 200);
    let n = page["messages"].as_array().unwrap().len();
    assert!(page["more"] == true && n > 1 && n < MESSAGES as usize, "{n} messages, more {}", page["more"]);
    assert!(page.to_string().len() <= PAGE_BYTES, "a {} byte history page", page.to_string().len());

    let after = room_stats_until(&server, &room, T, |s| s["resumes"]["from_room"] == (SOCKETS + STREAMS) as u64).await;
    assert_eq!(after["wakeups"]["room"], before["wakeups"]["room"], "the Room restarted: {after}");
    for region in REGIONS {
        assert_eq!(after["wakeups"]["relays"][region], 1, "the {region} relay restarted: {after}");
    }
    assert_eq!(after["resumes"]["not_recovered"], 0, "{after}");
    assert_eq!(after["connections"], (SOCKETS + STREAMS) as u64, "{after}");
}

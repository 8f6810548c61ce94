//! A socket whose client stops reading is closed with 4002, transient.
//!
//! With `HERALD_WS_MAX_BUFFER_BYTES` at its floor (64 KiB), one client on
//! a small receive buffer never reads while 60 KB messages are published
//! until the relay closes it. A reading client on the same relay gets every
//! message; the stalled client, once it reads again, finds what was buffered
//! for it in order and then close code 4002, which the code table marks as
//! "reconnect and resume"; it does, and gets the rest.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::{assert_exactly_once_in_order, http_pub, room_stats, room_stats_until, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(60);
const BOUND: usize = 65_536;
const DATA_CHARS: usize = 60_000;
const MAX_MESSAGES: u64 = 400;

/// A socket connected with a 4 KiB receive buffer, so the kernel holds
/// little for a client that does not read.
async fn stalled_client(url: &str) -> Client {
    let addr = url.strip_prefix("ws://").and_then(|r| r.split('/').next()).unwrap();
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let mut c = Client::over(url, stream).await.unwrap();
    c.wait_type(T, "welcome").await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_socket_is_closed_with_a_transient_code() {
    let server = Server::start(ServerOpts::default().var("HERALD_WS_MAX_BUFFER_BYTES", BOUND)).await;
    let room = unique_room("slowws");
    let url = server.ws_url(&room, "weur");
    let mut stalled = stalled_client(&url).await;
    let reader_url = url.clone();
    let last = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let target = last.clone();
    let reader = tokio::spawn(async move {
        let mut c = Client::welcomed(&reader_url, T).await;
        loop {
            let want = target.load(std::sync::atomic::Ordering::SeqCst);
            if want > 0 && c.msg_seqs().last() == Some(&want) {
                return (c, want);
            }
            c.next_msg(Duration::from_millis(500)).await;
            assert!(c.close_code().is_none(), "the reading client was closed: {:?}", c.close_code());
        }
    });
    room_stats_until(&server, &room, T, |s| s["connections"] == 2).await;

    let mut published = 0;
    let mut closed = false;
    while published < MAX_MESSAGES && !closed {
        let data = format!("{published}:{}", "x".repeat(DATA_CHARS));
        published = http_pub(&server, &room, json!({ "data": data })).await["seq"].as_u64().unwrap();
        if published % 5 == 0 {
            closed = room_stats(&server, &room).await["relays"][0]["slow_closes"].as_u64().unwrap_or(0) >= 1;
        }
    }
    assert!(closed, "the stalled socket was still open after {published} messages");
    // Two more, which the closed socket can no longer be sent (the frame
    // that crossed the bound may be the last one published so far).
    for _ in 0..2 {
        published = http_pub(&server, &room, json!({ "data": "after" })).await["seq"].as_u64().unwrap();
    }
    last.store(published, std::sync::atomic::Ordering::SeqCst);
    let (reader, _) = reader.await.unwrap();
    assert_exactly_once_in_order("reader", &reader, published);

    // The stalled client reads again: what was buffered, in order, then 4002.
    let code = stalled.wait_closed(T).await;
    assert_eq!(code, Some(4002), "close code");
    assert!(herald_core::CloseCode::reconnect(4002));
    let got = stalled.msg_seqs();
    assert!(got.iter().copied().eq(1..=got.len() as u64), "before the close: {got:?}");
    assert!((got.len() as u64) < published, "the stalled client was sent everything after all");

    // It resumes from where it was cut off and gets the rest exactly once.
    let welcome = &stalled.history()[0];
    let resume = format!("{url}&since={}&epoch={}", got.len(), welcome["epoch"].as_str().unwrap());
    let mut again = Client::welcomed(&resume, T).await;
    assert_eq!(again.history()[0]["recovered"], true, "{}", again.history()[0]);
    assert!(again.read_through_seq(published, Instant::now() + T).await, "the resume did not finish");
    let rest = again.msg_seqs();
    assert!(rest.iter().copied().eq(got.len() as u64 + 1..=published), "after the resume: {rest:?}");

    let s = room_stats(&server, &room).await;
    let peak = s["relays"][0]["buffer_peak"].as_u64().unwrap() as usize;
    assert!(peak <= BOUND + 2 * 65_536, "a socket held {peak} bytes; the bound is {BOUND} plus the frame that crossed it");
    let _: Value = s;
}

//! Past `HERALD_MAX_CONNECTIONS_PER_RELAY`, a region's relay refuses new
//! connections with 503 `overloaded`; other regions and existing
//! connections are unaffected, and a freed slot is reused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};
use support::{unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_relay_answers_503() {
    let server = Server::start(ServerOpts::default().var("HERALD_MAX_CONNECTIONS_PER_RELAY", 2)).await;
    let room = unique_room("cap");
    let mut a = Client::welcomed(&server.ws_url(&room, "weur"), T).await;
    let b = Client::welcomed(&server.ws_url(&room, "weur"), T).await;
    assert_eq!(Client::connect_status(&server.ws_url(&room, "weur")).await, Some(503));
    let _other = Client::welcomed(&server.ws_url(&room, "apac"), T).await;

    a.close().await;
    // The relay sees the close asynchronously: retry until the slot is free.
    let deadline = Instant::now() + T;
    let mut c = loop {
        match Client::connect(&server.ws_url(&room, "weur")).await {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("the freed slot was never reused: {e}"),
        }
    };
    c.wait_type(T, "welcome").await;
    assert!(b.close_code().is_none());
}

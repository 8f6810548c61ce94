//! One user cannot take every place on a region's relay: past
//! `HERALD_MAX_CONNECTIONS_PER_USER` their next connect is 429
//! `rate_limited` while other users still connect, and a place frees when
//! one of theirs closes. Anonymous readers count per IP. The relay's own cap
//! holds under simultaneous connects: a burst cannot pass it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::{now_s, token, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_cannot_take_every_place() {
    let server = Server::start(
        ServerOpts::default()
            .var("HERALD_MAX_CONNECTIONS_PER_USER", 2)
            .var("HERALD_PUBLIC_ROOMS", "open-*"),
    )
    .await;
    let room = unique_room("open-peruser");
    let url = |sub: Option<&str>| match sub {
        Some(sub) => {
            let tok = token(&json!({"sub": sub, "exp": now_s() + 3600, "rooms": {"*": ["sub"]}}));
            format!("ws://127.0.0.1:{}/v1/rooms/{room}/ws?region=weur&token={tok}", server.port())
        }
        None => server.ws_url_anon(&room, "weur"),
    };

    let mut ana = vec![Client::welcomed(&url(Some("ana")), T).await, Client::welcomed(&url(Some("ana")), T).await];
    assert_eq!(Client::connect_status(&url(Some("ana"))).await, Some(429), "ana's third");
    let _bo = Client::welcomed(&url(Some("bo")), T).await;

    // One of ana's closes: a place frees (once the relay has seen the close).
    ana.pop().unwrap().close().await;
    let deadline = Instant::now() + T;
    let again = loop {
        match Client::connect(&url(Some("ana"))).await {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("ana could not connect again: {e}"),
        }
    };
    drop(again);

    // Anonymous readers of a public room count per IP (all of these share one).
    let _a1 = Client::welcomed(&url(None), T).await;
    let _a2 = Client::welcomed(&url(None), T).await;
    assert_eq!(Client::connect_status(&url(None)).await, Some(429), "a third anonymous reader from one IP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_cap_holds_under_simultaneous_connects() {
    let server = Server::start(ServerOpts::default().var("HERALD_MAX_CONNECTIONS_PER_RELAY", 3)).await;
    let room = unique_room("burst");
    let url = server.ws_url(&room, "weur");
    let attempts = (0..12).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { Client::connect(&url).await.ok() })
    });
    // Kept open, so no place frees while the others try.
    let mut admitted = Vec::new();
    for a in attempts.collect::<Vec<_>>() {
        admitted.extend(a.await.unwrap());
    }
    assert_eq!(admitted.len(), 3, "exactly the cap, though all 12 arrived at once");
}

//! A user who reconnects within `HERALD_PRESENCE_GRACE_MS`, in another
//! region, causes no leave and no join; while away they are still counted,
//! in the region they first joined from.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::json;
use std::time::Duration;
use support::{now_s, token, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(30);
const GRACE_MS: u64 = 3000;

fn url(server: &Server, room: &str, region: &str, user: &str, caps: &[&str]) -> String {
    let t = token(&json!({"sub": user, "exp": now_s() + 600, "rooms": {"*": caps}}));
    format!("ws://127.0.0.1:{}/v1/rooms/{room}/ws?region={region}&token={t}", server.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_within_grace_does_not_flap() {
    let server = Server::start(ServerOpts::default().var("HERALD_PRESENCE_GRACE_MS", GRACE_MS)).await;
    let room = unique_room("flap");
    let mut watcher = Client::welcomed(&format!("{}&presence=events", url(&server, &room, "weur", "watcher", &["sub", "presence"])), T).await;
    watcher.wait_for(T, |f| f["t"] == "join" && f["user"] == "watcher").await;
    let mut mia = Client::welcomed(&url(&server, &room, "weur", "mia", &["sub"]), T).await;
    watcher.wait_for(T, |f| f["t"] == "join" && f["user"] == "mia").await;

    mia.close().await;
    watcher.send_json(&json!({"t": "presence", "id": 1})).await;
    let away = watcher.wait_for(T, |f| f["t"] == "presence" && f["id"] == 1).await;
    assert_eq!((away["count"].as_u64(), &away["regions"]), (Some(2), &json!({"weur": 2})), "counted while in grace: {away}");
    let _back = Client::welcomed(&url(&server, &room, "apac", "mia", &["sub"]), T).await;

    // Past the grace, nothing: no leave, no second join.
    let flap = watcher.try_wait_for(Duration::from_millis(GRACE_MS + 2000), |f| f["t"] == "join" || f["t"] == "leave").await;
    assert_eq!(flap, None, "a reconnect within grace flapped");
    watcher.send_json(&json!({"t": "presence", "id": 2})).await;
    let snap = watcher.wait_for(T, |f| f["t"] == "presence" && f["id"] == 2).await;
    let mia = snap["members"].as_array().unwrap().iter().find(|m| m["user"] == "mia").cloned();
    assert_eq!(mia.map(|m| m["region"].clone()), Some(json!("weur")), "still counted where she first joined: {snap}");
    assert_eq!(snap["count"], 2);
}

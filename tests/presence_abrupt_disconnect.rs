//! A member whose TCP connection is reset, with no close frame, leaves
//! within the grace plus 5 s (the bound `docs/PROTOCOL.md` gives), and a
//! user who is gone for good in one region but connected in another does
//! not leave.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::{now_s, token, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(30);
const GRACE_MS: u64 = 1000;

fn url(server: &Server, room: &str, region: &str, user: &str, caps: &[&str]) -> String {
    let t = token(&json!({"sub": user, "exp": now_s() + 600, "rooms": {"*": caps}}));
    format!("ws://127.0.0.1:{}/v1/rooms/{room}/ws?region={region}&token={t}", server.port())
}

/// Connects with SO_LINGER 0, so dropping the client resets the TCP
/// connection: no close frame, no FIN.
async fn resettable(url: &str) -> Client {
    let addr: std::net::SocketAddr = url.strip_prefix("ws://").and_then(|r| r.split('/').next()).unwrap().parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    // A zero linger resets at once on drop; it never blocks.
    socket.set_zero_linger().unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let mut c = Client::over(url, stream).await.unwrap();
    c.wait_type(T, "welcome").await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_connection_leaves_within_grace_plus_five_seconds() {
    let server = Server::start(ServerOpts::default().var("HERALD_PRESENCE_GRACE_MS", GRACE_MS)).await;
    let room = unique_room("abrupt");
    let mut watcher = Client::welcomed(&format!("{}&presence=events", url(&server, &room, "weur", "watcher", &["sub", "presence"])), T).await;
    watcher.wait_for(T, |f| f["t"] == "join" && f["user"] == "watcher").await;
    let kim = resettable(&url(&server, &room, "apac", "kim", &["sub"])).await;
    let lou_apac = resettable(&url(&server, &room, "apac", "lou", &["sub"])).await;
    let _lou_enam = Client::welcomed(&url(&server, &room, "enam", "lou", &["sub"]), T).await;
    for user in ["kim", "lou"] {
        watcher.wait_for(T, |f| f["t"] == "join" && f["user"] == user).await;
    }

    let killed = Instant::now();
    drop(kim);
    drop(lou_apac);
    let leave = watcher.wait_for(T, |f| f["t"] == "leave").await;
    let took = killed.elapsed();
    assert_eq!((leave["user"].as_str(), leave["region"].as_str()), (Some("kim"), Some("apac")), "{leave}");
    assert!(took >= Duration::from_millis(GRACE_MS), "left before the grace ran out: {took:?}");
    assert!(took <= Duration::from_millis(GRACE_MS + 5000), "left after {took:?}, past grace + 5 s");
    // lou is still connected in enam: no leave for him, even after his grace.
    let more = watcher.try_wait_for(Duration::from_millis(GRACE_MS + 1000), |f| f["t"] == "leave").await;
    assert_eq!(more, None, "lou left although connected in enam");
    watcher.send_json(&json!({"t": "presence", "id": 1})).await;
    let snap = watcher.wait_for(T, |f| f["t"] == "presence").await;
    assert_eq!((snap["count"].as_u64(), &snap["regions"]), (Some(2), &json!({"weur": 1, "apac": 1})), "{snap}");
}

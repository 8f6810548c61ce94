//! `{sub}` in a token's room pattern stands for the token's own `sub`: one
//! token template gives each user their own room. Alice's token with
//! `"user:{sub}": ["sub","history"]` connects to `user:alice` and reads its
//! history, and is refused on `user:bob`; a `sub` that cannot be part of a
//! room name (`a/b`) makes the pattern match nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::{http_pub, http_request, now_s, token, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(20);

fn user_token(sub: &str) -> String {
    token(&json!({"sub": sub, "exp": now_s() + 600, "rooms": {"user:{sub}": ["sub", "history"]}}))
}

async fn get_with(url: &str, tok: &str) -> (u16, Value) {
    let auth = format!("Bearer {tok}");
    let r = http_request("GET", url, &[("authorization", &auth)], None).await.unwrap();
    (r.status, serde_json::from_str(&r.body).unwrap_or(Value::String(r.body)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_reaches_their_own_room_only() {
    let server = Server::start(ServerOpts::default()).await;
    let base = server.base_url();
    let ws = |room: &str, tok: &str| format!("ws://127.0.0.1:{}/v1/rooms/{room}/ws?region=weur&token={tok}", server.port());
    let alice = user_token("alice");

    // Alice's own room: connect, receive, read history.
    let mut c = Client::welcomed(&ws("user:alice", &alice), T).await;
    let sent = http_pub(&server, "user:alice", json!({"data": {"n": 1}})).await;
    let got = c.wait_type(T, "msg").await;
    assert_eq!((got["seq"].clone(), got["data"].clone()), (sent["seq"].clone(), json!({"n": 1})), "{got}");
    let (status, h) = get_with(&format!("{base}/v1/rooms/user:alice/messages"), &alice).await;
    assert_eq!(status, 200, "history on her own room: {h}");
    assert_eq!(h["messages"][0]["data"], json!({"n": 1}), "{h}");

    // What the pattern does not grant, and other users' rooms.
    let (status, v) = get_with(&format!("{base}/v1/rooms/user:alice/stats"), &alice).await;
    assert_eq!((status, v["error"].as_str()), (403, Some("forbidden")), "only sub and history: {v}");
    for room in ["user:bob", "user:alice2", "user:alic", "user:alice:x"] {
        assert_eq!(Client::connect_status(&ws(room, &alice)).await, Some(403), "{room}");
    }
    assert_eq!(Client::connect_status(&ws("user:bob", &user_token("bob"))).await, None, "bob's own room is his");

    // A sub that cannot be part of a room name grants nothing: no room is
    // `user:a/b`, and neither `user:a` nor `user:b` is the user's.
    let slash = user_token("a/b");
    for room in ["user:a", "user:b", "user:a:b", "user:ab"] {
        assert_eq!(Client::connect_status(&ws(room, &slash)).await, Some(403), "{room}");
    }
    assert_eq!(Client::connect_status(&ws("user:a%2Fb", &slash)).await, Some(400), "not a room name at all");
    // Nor does a sub that would turn the exact name into a prefix.
    assert_eq!(Client::connect_status(&ws("user:x", &user_token("*"))).await, Some(403));
    c.close().await;
}

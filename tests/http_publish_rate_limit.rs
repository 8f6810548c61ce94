//! HTTP publish is rate limited per user and room, with the same bucket as a
//! connection (`HERALD_PUB_RATE`/`HERALD_PUB_BURST`). Past it the answer is
//! 429 `rate_limited` with `Retry-After`, nothing is stored, and other users
//! are not affected. A token holding `admin` on the room is a backend and is
//! not limited.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use support::{admin_token, http_request, now_s, room_stats, token, unique_room, Server, ServerOpts};

async fn publish_with(server: &Server, room: &str, tok: &str) -> (u16, Option<String>, Value) {
    let url = format!("{}/v1/rooms/{room}/messages", server.base_url());
    let auth = format!("Bearer {tok}");
    let resp = http_request("POST", &url, &[("authorization", &auth)], Some(r#"{"data":1}"#)).await.unwrap();
    let retry = resp.header("retry-after").map(str::to_owned);
    (resp.status, retry, serde_json::from_str(&resp.body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_publish_is_limited_per_user_and_backends_are_exempt() {
    let server = Server::start(ServerOpts::default().var("HERALD_PUB_RATE", 1).var("HERALD_PUB_BURST", 3)).await;
    let room = unique_room("httprate");
    let user = |sub: &str| token(&json!({"sub": sub, "exp": now_s() + 3600, "rooms": {"*": ["sub", "pub"]}}));
    let (ana, bo) = (user("ana"), user("bo"));

    for i in 1..=3 {
        let (status, _, v) = publish_with(&server, &room, &ana).await;
        assert_eq!(status, 200, "publish {i} within the burst: {v}");
    }
    let (status, retry, v) = publish_with(&server, &room, &ana).await;
    assert_eq!((status, v["error"].as_str()), (429, Some("rate_limited")), "{v}");
    assert!(retry.as_deref().and_then(|r| r.parse::<u64>().ok()).is_some_and(|s| s >= 1), "Retry-After: {retry:?}");

    let (status, _, v) = publish_with(&server, &room, &bo).await;
    assert_eq!(status, 200, "another user is not affected: {v}");
    for _ in 0..10 {
        let (status, _, v) = publish_with(&server, &room, &admin_token()).await;
        assert_eq!(status, 200, "a backend is not limited: {v}");
    }
    assert_eq!(room_stats(&server, &room).await["seq"], 3 + 1 + 10, "the refused publish was not stored");
}

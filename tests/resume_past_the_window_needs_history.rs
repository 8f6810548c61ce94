//! A resume the relay serves from its window needs only `sub`; one that
//! reads the Room's storage reads history, so it needs `history`.
//!
//! A watcher in weur sees 5 messages, so the weur relay's window holds
//! them; apac has never seen the room. A token with only `sub` resumes from
//! 0 in weur (`recovered:true`, the 5 messages) but not in apac
//! (`recovered:false`, nothing replayed, the connection accepted); a token
//! with `sub` and `history` resumes in apac from storage.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::{http_pub, now_s, room_stats_until, token, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_from_storage_needs_the_history_capability() {
    let server = Server::start(ServerOpts::default()).await;
    let room = unique_room("resumecap");
    let mut watcher = Client::welcomed(&server.ws_url(&room, "weur"), T).await;
    let epoch = watcher.history()[0]["epoch"].as_str().unwrap().to_owned();
    for i in 1..=5 {
        http_pub(&server, &room, json!({ "data": i })).await;
    }
    assert!(watcher.read_through_seq(5, Instant::now() + T).await);

    let url = |caps: &[&str], region: &str| {
        let t = token(&json!({"sub": "reader", "exp": now_s() + 600, "rooms": {"*": caps}}));
        format!("ws://127.0.0.1:{}/v1/rooms/{room}/ws?region={region}&token={t}&since=0&epoch={epoch}", server.port())
    };

    let mut from_window = Client::welcomed(&url(&["sub"], "weur"), T).await;
    assert_eq!(from_window.history()[0]["recovered"], true, "{}", from_window.history()[0]);
    assert!(from_window.read_through_seq(5, Instant::now() + T).await);
    assert_eq!(from_window.msg_seqs(), vec![1, 2, 3, 4, 5]);

    let mut refused = Client::welcomed(&url(&["sub"], "apac"), T).await;
    let w = refused.history()[0].clone();
    assert_eq!((w["recovered"].as_bool(), w["seq"].as_u64()), (Some(false), Some(5)), "{w}");
    // Still connected: the next live message arrives, and nothing before it.
    http_pub(&server, &room, json!({ "data": 6 })).await;
    assert!(refused.read_through_seq(6, Instant::now() + T).await);
    assert_eq!(refused.msg_seqs(), vec![6]);

    let mut with_history = Client::welcomed(&url(&["sub", "history"], "apac"), T).await;
    assert_eq!(with_history.history()[0]["recovered"], true, "{}", with_history.history()[0]);
    assert!(with_history.read_through_seq(6, Instant::now() + T).await);
    assert_eq!(with_history.msg_seqs(), vec![1, 2, 3, 4, 5, 6]);

    room_stats_until(&server, &room, T, |s| {
        s["resumes"] == json!({"from_relay": 1, "from_room": 1, "not_recovered": 1})
    })
    .await;
}

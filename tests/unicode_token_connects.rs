//! A token's `sub` and `info` may hold any text. The verified grant crosses
//! from the Worker to the relay in a header, and headers carry Latin-1
//! only, so it travels encoded: a user named in emoji and CJK connects over
//! a socket and over SSE, publishes, and is named as the sender, instead of
//! the connect failing with a 500.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::json;
use std::time::Duration;
use support::sse::SseStream;
use support::{now_s, token, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_any_text_connects_and_publishes() {
    let server = Server::start(ServerOpts::default()).await;
    let room = unique_room("unicode");
    let sub = "zoë 🦀 東京";
    let tok = token(&json!({
        "sub": sub,
        "exp": now_s() + 3600,
        "rooms": {"*": ["sub", "pub"]},
        "info": {"name": "Zoë 🎉 北京", "city": "서울"}
    }));

    let url = format!("ws://127.0.0.1:{}/v1/rooms/{room}/ws?region=weur&token={tok}", server.port());
    let mut c = Client::welcomed(&url, T).await;
    c.send_json(&json!({"t": "pub", "id": 1, "data": "こんにちは"})).await;
    // The ack and the message, in whichever order they come.
    for _ in 0..2 {
        c.next_msg(T).await.expect("an ack and a msg");
    }
    let frame = |t: &str| c.history().iter().find(|f| f["t"] == t).cloned().unwrap_or_else(|| panic!("no {t}: {:?}", c.history()));
    let (m, ack) = (frame("msg"), frame("ack"));
    assert_eq!((m["from"].as_str(), m["data"].as_str()), (Some(sub), Some("こんにちは")), "{m}");
    assert_eq!(ack["seq"], 1, "{ack}");

    let events = format!("{}/v1/rooms/{room}/events?region=apac&token={tok}", server.base_url());
    let mut s = SseStream::open(&events, &[]).await.unwrap();
    assert_eq!(s.status, 200);
    let w = s.next_data_event(T).await.expect("a welcome event");
    assert_eq!(w.event.as_deref(), Some("welcome"), "{w:?}");
}

//! The publishing relay's delivery rides in the answer to its publish call:
//! with nothing in flight to it, the Room makes no `deliver` call to that
//! relay, while a relay in another region still gets one. Every client sees
//! every message once, in order, either way.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::json;
use std::time::Duration;
use support::{room_stats_until, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(20);
const MESSAGES: u64 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_answer_carries_the_publishing_relays_delivery() {
    let server = Server::start(ServerOpts::default()).await;
    let room = unique_room("answer");
    let mut publisher = Client::welcomed(&server.ws_url(&room, "weur"), T).await;
    let mut near = Client::welcomed(&server.ws_url(&room, "weur"), T).await;
    let mut far = Client::welcomed(&server.ws_url(&room, "apac"), T).await;
    let before = room_stats_until(&server, &room, T, |s| s["connections"] == 3).await;

    // One at a time: each publish waits for the last message to reach every
    // client, so nothing is in flight to either relay when it is answered.
    for i in 1..=MESSAGES {
        publisher.send_json(&json!({"t": "pub", "id": i, "data": {"i": i}})).await;
        let ack = publisher.wait_type(T, "ack").await;
        assert_eq!((ack["id"].as_u64(), ack["seq"].as_u64()), (Some(i), Some(i)));
        for c in [&mut publisher, &mut near, &mut far] {
            let m = c.wait_type(T, "msg").await;
            assert_eq!((m["seq"].as_u64(), m["data"]["i"].as_u64()), (Some(i), Some(i)), "{m}");
        }
    }

    let after = room_stats_until(&server, &room, T, |s| s["primary_sends"].as_u64() >= before["primary_sends"].as_u64().map(|b| b + 2 * MESSAGES)).await;
    let sent = after["primary_sends"].as_u64().unwrap() - before["primary_sends"].as_u64().unwrap();
    let in_answers = after["reply_deliveries"].as_u64().unwrap() - before["reply_deliveries"].as_u64().unwrap();
    eprintln!("{MESSAGES} messages over 2 relays: primary_sends +{sent}, of them in publish answers +{in_answers}");
    assert_eq!(sent, 2 * MESSAGES, "one delivery per relay per message");
    assert_eq!(in_answers, MESSAGES, "weur's rode in its publish answers; apac's were calls");

    // Nothing arrives twice.
    for c in [&mut publisher, &mut near, &mut far] {
        assert!(c.try_wait_for(Duration::from_millis(300), |v| v["t"] == "msg").await.is_none());
    }
}

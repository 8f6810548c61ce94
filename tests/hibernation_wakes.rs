//! Nothing idle stays awake: after more than 10 s without a message both the
//! Room and the Relays hibernate (their sockets kept), and the next message
//! wakes them and still reaches every client.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::{http_json, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(20);
/// Local workerd evicts an idle object after about 10 s. This idle spell is
/// the condition under test, not a wait for something to happen.
const IDLE: Duration = Duration::from_secs(12);

async fn stats(server: &Server, room: &str) -> Value {
    let (status, v) = http_json("GET", &format!("{}/v1/rooms/{room}/stats", server.base_url()), None).await;
    assert_eq!(status, 200);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_objects_hibernate_and_wake_with_sockets_kept() {
    let server = Server::start(ServerOpts::default()).await;
    let room = unique_room("sleep");
    let url = format!("{}/v1/rooms/{room}/messages", server.base_url());
    let mut clients = Vec::new();
    for region in ["weur", "apac"] {
        for _ in 0..2 {
            let c = Client::welcomed(&server.ws_url(&room, region), T).await;
            clients.push(c);
        }
    }
    let (status, _) = http_json("POST", &url, Some(&json!({"data":"before"}))).await;
    assert_eq!(status, 200);
    for c in clients.iter_mut() {
        assert_eq!(c.wait_type(T, "msg").await["seq"], 1);
    }
    let before = stats(&server, &room).await;
    let room_wakeups = before["wakeups"]["room"].as_u64().unwrap();
    let relay_wakeups = before["wakeups"]["relays"].clone();
    assert_eq!(relay_wakeups.as_object().unwrap().len(), 2, "{before}");

    tokio::time::sleep(IDLE).await;

    let (status, _) = http_json("POST", &url, Some(&json!({"data":"after"}))).await;
    assert_eq!(status, 200);
    for c in clients.iter_mut() {
        let m = c.wait_type(T, "msg").await;
        assert_eq!((m["seq"].as_u64(), m["data"].as_str()), (Some(2), Some("after")));
    }
    let after = stats(&server, &room).await;
    assert!(
        after["wakeups"]["room"].as_u64().unwrap() > room_wakeups,
        "the Room was constructed anew: before {before}, after {after}"
    );
    for region in ["weur", "apac"] {
        let was = relay_wakeups[region].as_u64().unwrap();
        let now = after["wakeups"]["relays"][region].as_u64().unwrap();
        assert!(now > was, "the {region} relay was constructed anew ({was} -> {now})");
    }
    assert_eq!(after["connections"], 4, "hibernation kept every socket");

    // The woken relays still take publishes from their sockets.
    clients[0].send_json(&json!({"t":"pub","id":"w","data":"from a woken relay"})).await;
    for c in clients.iter_mut() {
        assert_eq!(c.wait_type(T, "msg").await["seq"], 3);
    }
    // The publisher's ack may come before or after its own message.
    let ack = match clients[0].drain_seen().pop() {
        Some(ack) => ack,
        None => clients[0].wait_type(T, "ack").await,
    };
    assert_eq!(ack, json!({"t":"ack","id":"w","seq":3}));
}

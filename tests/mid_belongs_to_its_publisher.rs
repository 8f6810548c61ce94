//! A `mid` belongs to whoever published it. Deduplication is keyed on the
//! publisher's `sub` and the `mid`, so one user cannot suppress another's
//! messages by publishing that user's next `mid` first: the same `mid` from
//! two users is two messages. One user repeating a `mid`, over HTTP or from
//! any socket, still gets the original seq and nothing is stored twice.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::{http_request, now_s, room_stats, token, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(15);

fn token_for(sub: &str) -> String {
    token(&json!({"sub": sub, "exp": now_s() + 3600, "rooms": {"*": ["sub", "pub"]}}))
}

async fn publish_as(server: &Server, room: &str, sub: &str, body: Value) -> Value {
    let url = format!("{}/v1/rooms/{room}/messages", server.base_url());
    let auth = format!("Bearer {}", token_for(sub));
    let resp = http_request("POST", &url, &[("authorization", &auth)], Some(&body.to_string())).await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.body);
    serde_json::from_str(&resp.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_mid_from_two_users_is_two_messages() {
    let server = Server::start(ServerOpts::default()).await;
    let room = unique_room("mids");

    // Mallory publishes Alice's next mid first; Alice's message still goes out.
    let mallory = publish_as(&server, &room, "mallory", json!({"data": "spoof", "mid": "alice-17"})).await;
    let alice = publish_as(&server, &room, "alice", json!({"data": "real", "mid": "alice-17"})).await;
    assert_eq!((mallory["seq"].as_u64(), alice["seq"].as_u64()), (Some(1), Some(2)), "{mallory} {alice}");

    // Alice repeating it, over HTTP and from a socket, gets the original.
    let again = publish_as(&server, &room, "alice", json!({"data": "real", "mid": "alice-17"})).await;
    assert_eq!(again["seq"], 2, "{again}");
    let url = format!("ws://127.0.0.1:{}/v1/rooms/{room}/ws?region=weur&token={}", server.port(), token_for("alice"));
    let mut c = Client::welcomed(&url, T).await;
    c.send_json(&json!({"t": "pub", "id": 1, "data": "real", "mid": "alice-17"})).await;
    let ack = c.wait_type(T, "ack").await;
    assert_eq!(ack["seq"], 2, "{ack}");

    let stats = room_stats(&server, &room).await;
    assert_eq!(stats["seq"], 2, "nothing stored twice: {stats}");
}

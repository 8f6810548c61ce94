//! Idempotent publish: a `pub` (socket) or HTTP publish that repeats a `mid`
//! the room saw within the dedup window is not stored or delivered again and
//! is answered with the original seq, whichever way it came in; a different
//! `mid` gets the next seq. A watcher in another region sees each message
//! exactly once, and history holds it once, with the first publish's data.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::{http_json, http_pub, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(20);


/// Sends a `pub` with `id` and returns its ack's seq.
async fn ws_pub(c: &mut Client, id: &str, data: Value, mid: &str) -> u64 {
    c.send_json(&json!({"t":"pub","id":id,"data":data,"mid":mid})).await;
    let ack = c
        .wait_for(T, |f| f["t"] == "ack" || (f["t"] == "err" && f["id"] == id))
        .await;
    assert_eq!(ack["t"], "ack", "pub {id} refused: {ack}");
    assert_eq!(ack["id"], id, "acks come in publish order on one socket: {ack}");
    ack["seq"].as_u64().unwrap_or_else(|| panic!("ack without seq: {ack}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_mid_is_stored_and_delivered_once() {
    let server = Server::start(ServerOpts::default()).await;
    let room = unique_room("idem");

    let mut watcher = Client::connect(&server.ws_url(&room, "weur")).await.unwrap();
    let w = watcher.wait_type(T, "welcome").await;
    assert_eq!(w["seq"], 0);
    let mut publisher = Client::welcomed(&server.ws_url(&room, "apac"), T).await;

    // Socket first, then HTTP, then the socket again: one message, one seq.
    let s1 = ws_pub(&mut publisher, "p1", json!("first"), "m-1").await;
    assert_eq!(s1, 1);
    let again = http_pub(&server, &room, json!({"data":"first, over http","mid":"m-1"})).await;
    assert_eq!(again["seq"], s1, "HTTP repeat of m-1 answers the original seq: {again}");
    let s1b = ws_pub(&mut publisher, "p2", json!("first, again"), "m-1").await;
    assert_eq!(s1b, s1, "socket repeat of m-1 answers the original seq");

    // A different mid is a new message.
    let s2 = ws_pub(&mut publisher, "p3", json!("second"), "m-2").await;
    assert_eq!(s2, 2, "a new mid gets the next seq");

    // HTTP first, then the socket.
    let h3 = http_pub(&server, &room, json!({"data":"third","mid":"m-3"})).await;
    assert_eq!(h3["seq"], 3);
    let s3 = ws_pub(&mut publisher, "p4", json!("third, over the socket"), "m-3").await;
    assert_eq!(s3, 3, "socket repeat of an HTTP mid answers the original seq");
    let h3b = http_pub(&server, &room, json!({"data":"third, again","mid":"m-3"})).await;
    assert_eq!(h3b["seq"], 3);
    assert_eq!(h3b["ts"], h3["ts"], "the repeat answers the original ts too");

    // A message without mid afterwards: the next seq, and the watcher's next
    // message after 3, proving no repeat was delivered late.
    let h4 = http_pub(&server, &room, json!({"data":"fourth"})).await;
    assert_eq!(h4["seq"], 4);
    watcher.wait_for(T, |f| f["t"] == "msg" && f["seq"] == 4).await;
    let got: Vec<(u64, Value, Value)> = watcher
        .history()
        .iter()
        .filter(|f| f["t"] == "msg")
        .map(|f| (f["seq"].as_u64().unwrap(), f["data"].clone(), f["mid"].clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, json!("first"), json!("m-1")),
            (2, json!("second"), json!("m-2")),
            (3, json!("third"), json!("m-3")),
            (4, json!("fourth"), Value::Null),
        ],
        "watcher sees each message once, with the first publish's data"
    );
    // The publisher too received each stored message once.
    publisher.wait_for(T, |f| f["t"] == "msg" && f["seq"] == 4).await;
    let pub_seqs: Vec<u64> = publisher
        .history()
        .iter()
        .filter(|f| f["t"] == "msg")
        .map(|f| f["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(pub_seqs, vec![1, 2, 3, 4]);

    // History holds each once.
    let url = format!("{}/v1/rooms/{room}/messages?since=0", server.base_url());
    let (status, h) = http_json("GET", &url, None).await;
    assert_eq!(status, 200, "{h}");
    let hist: Vec<(u64, Value)> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["seq"].as_u64().unwrap(), m["data"].clone()))
        .collect();
    assert_eq!(
        hist,
        vec![(1, json!("first")), (2, json!("second")), (3, json!("third")), (4, json!("fourth"))]
    );
    assert_eq!(h["more"], false);

    let (_, stats) = http_json("GET", &format!("{}/v1/rooms/{room}/stats", server.base_url()), None).await;
    assert_eq!(stats["seq"], 4, "{stats}");
    assert_eq!(stats["stored"], 4, "{stats}");
}

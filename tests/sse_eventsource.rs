//! A browser-grade `EventSource` (Node's WHATWG implementation) works
//! against Herald's SSE feed with no extra code: it reads the events, and
//! when the stream drops (the runtime restarts) it reconnects by itself with
//! `Last-Event-ID` and misses nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::sse::EventSourceClient;
use support::{admin_token, http_pub, unique_room, Server, ServerOpts};

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_source_reads_and_resumes_by_itself() {
    let mut server = Server::start(ServerOpts::default()).await;
    let room = unique_room("es");
    for n in 1..=2 {
        http_pub(&server, &room, json!({"data": {"n": n}})).await;
    }
    let url = format!("{}/v1/rooms/{room}/events?region=weur&token={}", server.base_url(), admin_token());
    let mut es = EventSourceClient::spawn(&url, 5);

    let welcome = es.next(T).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let epoch = serde_json::from_str::<Value>(welcome["data"].as_str().unwrap()).unwrap()["epoch"].as_str().unwrap().to_owned();
    http_pub(&server, &room, json!({"data": {"n": 3}})).await;
    let m = es.next(T).await;
    assert_eq!((m["type"].as_str(), m["id"].as_str()), (Some("msg"), Some(format!("{epoch}:3").as_str())), "{m}");

    // The runtime restarts: the stream drops and EventSource reconnects on
    // its own, sending Last-Event-ID = epoch:3.
    server.restart().await;
    http_pub(&server, &room, json!({"data": {"n": 4}})).await;
    http_pub(&server, &room, json!({"data": {"n": 5}})).await;
    let mut after = Vec::new();
    while after.len() < 2 {
        let ev = es.next(T).await;
        match ev["type"].as_str() {
            Some("msg") => after.push(ev["id"].as_str().unwrap().to_owned()),
            Some("welcome") => {
                let w: Value = serde_json::from_str(ev["data"].as_str().unwrap()).unwrap();
                assert_eq!(w["recovered"], true, "the reconnect resumed: {w}");
            }
            Some("error") => {} // the drop itself, and failed retries while the runtime was down
            _ => panic!("unexpected {ev}"),
        }
    }
    assert_eq!(after, vec![format!("{epoch}:4"), format!("{epoch}:5")], "nothing missed, nothing twice");
    let status = tokio::time::timeout(T, es.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "the client saw seq 5 and exited");
}

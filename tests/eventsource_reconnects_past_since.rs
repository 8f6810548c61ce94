//! A real `EventSource` opened with `?since=N&epoch=E` reconnects to that
//! same URL when the stream drops, adding `Last-Event-ID`. The header wins,
//! so the reconnect continues after the last event it saw instead of
//! replaying from N again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::json;
use std::time::Duration;
use support::sse::EventSourceClient;
use support::{admin_token, http_pub, unique_room, Server, ServerOpts};

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_source_opened_with_since_does_not_replay_it_on_reconnect() {
    let mut server = Server::start(ServerOpts::default()).await;
    let room = unique_room("es-since");
    let epoch = http_pub(&server, &room, json!({"data": {"n": 1}})).await["epoch"].as_str().unwrap().to_owned();
    for n in 2..=3 {
        http_pub(&server, &room, json!({"data": {"n": n}})).await;
    }
    let url = format!(
        "{}/v1/rooms/{room}/events?region=weur&since=1&epoch={epoch}&token={}",
        server.base_url(),
        admin_token()
    );
    let mut es = EventSourceClient::spawn(&url, 5);

    let mut ids = Vec::new();
    while ids.len() < 2 {
        let ev = es.next(T).await;
        match ev["type"].as_str() {
            Some("welcome") => {}
            Some("msg") => ids.push(ev["id"].as_str().unwrap().to_owned()),
            _ => panic!("unexpected {ev}"),
        }
    }
    assert_eq!(ids, vec![format!("{epoch}:2"), format!("{epoch}:3")], "the replay after since=1");

    // The stream drops; EventSource reconnects to the same URL (since=1)
    // with Last-Event-ID = epoch:3.
    server.restart().await;
    http_pub(&server, &room, json!({"data": {"n": 4}})).await;
    http_pub(&server, &room, json!({"data": {"n": 5}})).await;
    let mut after = Vec::new();
    while after.len() < 2 {
        let ev = es.next(T).await;
        match ev["type"].as_str() {
            Some("msg") => after.push(ev["id"].as_str().unwrap().to_owned()),
            Some("welcome") | Some("error") => {}
            _ => panic!("unexpected {ev}"),
        }
    }
    assert_eq!(after, vec![format!("{epoch}:4"), format!("{epoch}:5")], "continued after 3, not replayed from 1");
    let status = tokio::time::timeout(T, es.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "the client saw seq 5 and exited");
}

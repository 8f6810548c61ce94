//! Resume input is checked before anything is touched: a `since` past what
//! storage can hold (above i64::MAX) or an epoch longer than 64 bytes is a
//! 400 `bad_frame`, on sockets and SSE alike, never a 500. And on SSE,
//! `Last-Event-ID` wins over `?since=`: an `EventSource` reconnects to the
//! URL it was opened with, so the query is where it started and the header
//! is where it got to; the stream continues after the header's seq.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::sse::SseStream;
use support::{admin_token, http_pub, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_input_is_bounded_and_last_event_id_wins() {
    let server = Server::start(ServerOpts::default()).await;
    let room = unique_room("bounds");
    let epoch = http_pub(&server, &room, json!({"data": {"n": 1}})).await["epoch"].as_str().unwrap().to_owned();
    for n in 2..=4 {
        http_pub(&server, &room, json!({"data": {"n": n}})).await;
    }
    let too_big = "9223372036854775808";
    let long_epoch = "e".repeat(65);

    // Sockets.
    for query in [format!("since={too_big}&epoch={epoch}"), format!("since=1&epoch={long_epoch}")] {
        let url = format!("{}&{query}", server.ws_url(&room, "weur"));
        assert_eq!(Client::connect_status(&url).await, Some(400), "{query}");
    }

    // SSE, by query and by header.
    let events = format!("{}/v1/rooms/{room}/events?region=weur&token={}", server.base_url(), admin_token());
    let s = SseStream::open(&format!("{events}&since={too_big}&epoch={epoch}"), &[]).await.unwrap();
    assert_eq!(s.status, 400);
    for id in [format!("{epoch}:{too_big}"), format!("{long_epoch}:1")] {
        let s = SseStream::open(&events, &[("Last-Event-ID", &id)]).await.unwrap();
        assert_eq!(s.status, 400, "{id}");
    }

    // Opened at since=1, reconnected having seen 3: it gets 4 only.
    let last = format!("{epoch}:3");
    let mut s = SseStream::open(&format!("{events}&since=1&epoch={epoch}"), &[("Last-Event-ID", &last)]).await.unwrap();
    assert_eq!(s.status, 200);
    let w = s.next_data_event(T).await.expect("welcome");
    assert_eq!(w.event.as_deref(), Some("welcome"), "{w:?}");
    let m = s.next_data_event(T).await.expect("the next message");
    let v: Value = serde_json::from_str(&m.data).unwrap();
    assert_eq!((m.id.as_deref(), v["seq"].as_u64()), (Some(format!("{epoch}:4").as_str()), Some(4)), "{m:?}");
}

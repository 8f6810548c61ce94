//! Authorization at message granularity: a reader without `pub` gets
//! `forbidden` per publish and keeps its connection; `history` needs its
//! own capability; anonymous readers of public rooms can only read.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::json;
use std::time::Duration;
use support::{http_json, now_s, token, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_frame_is_checked_against_the_connection_grant() {
    let server = Server::start(ServerOpts::default().var("HERALD_PUBLIC_ROOMS", "open:*")).await;
    let room = unique_room("caps");
    let base = server.base_url();
    let url = |tok: &str| format!("{base}/v1/rooms/{room}/ws?region=weur&token={tok}").replace("http://", "ws://");
    let reader_tok = token(&json!({"sub":"reader","exp":now_s()+600,"rooms":{&room:["sub"]}}));
    let writer_tok = token(&json!({"sub":"writer","exp":now_s()+600,"rooms":{&room:["sub","pub"]}}));

    let mut reader = Client::welcomed(&url(&reader_tok), T).await;
    let mut writer = Client::welcomed(&url(&writer_tok), T).await;

    reader.send_json(&json!({"t":"pub","id":1,"data":"sneaky"})).await;
    let err = reader.wait_type(T, "err").await;
    assert_eq!((err["id"].as_u64(), err["code"].as_str()), (Some(1), Some("forbidden")), "{err}");
    reader.send_json(&json!({"t":"history","id":"h"})).await;
    let err = reader.wait_type(T, "err").await;
    assert_eq!((err["id"].as_str(), err["code"].as_str()), (Some("h"), Some("forbidden")), "{err}");

    // The reader is still connected and receives the writer's message; the
    // refused publish never reached anyone.
    writer.send_json(&json!({"t":"pub","id":2,"data":"legit"})).await;
    let m = reader.wait_type(T, "msg").await;
    assert_eq!((m["seq"].as_u64(), m["data"].as_str(), m["from"].as_str()), (Some(1), Some("legit"), Some("writer")));
    let w = writer.wait_type(T, "msg").await;
    assert_eq!(w["seq"], 1, "the writer's first msg is its own: nothing from the reader was published");

    // Anonymous reader of a public room: reads, cannot publish or read history.
    let open = format!("ws://127.0.0.1:{}/v1/rooms/open:feed/ws?region=apac", server.port());
    let mut anon = Client::welcomed(&open, T).await;
    anon.send_json(&json!({"t":"pub","id":3,"data":"x"})).await;
    let err = anon.wait_type(T, "err").await;
    assert_eq!(err["code"], "unauthorized", "{err}");
    let (status, _) = http_json("POST", &format!("{base}/v1/rooms/open:feed/messages"), Some(&json!({"data":"news"}))).await;
    assert_eq!(status, 200, "the admin token publishes");
    let m = anon.wait_type(T, "msg").await;
    assert_eq!(m["data"], "news");
    assert!(anon.close_code().is_none(), "still connected");
}

//! Tests of the integration harness itself (tests/support), so scenario
//! failures can be trusted to be about Herald: the WebSocket client's batch
//! handling and close codes, and the HTTP client, against in-process peers;
//! then the wrangler lifecycle (start, health, restart on the same port,
//! stop) against the built worker.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use support::{http, http_json, unique_room, Client, Server, ServerOpts, WsMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

const T: Duration = Duration::from_secs(5);

/// One-connection WebSocket peer that sends `frames`, then closes with 4001.
async fn ws_peer(frames: Vec<&'static str>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        // Wait for the client's first frame so nothing races the test's sends.
        let _ = ws.next().await;
        for f in frames {
            ws.send(WsMessage::text(f)).await.unwrap();
        }
        let close = CloseFrame {
            code: CloseCode::from(4001),
            reason: "done".into(),
        };
        let _ = ws.send(WsMessage::Close(Some(close))).await;
        while let Some(Ok(_)) = ws.next().await {}
    });
    format!("ws://{addr}/")
}

#[tokio::test]
async fn client_expands_batches_and_keeps_skipped_frames() {
    let url = ws_peer(vec![
        r#"{"t":"a","n":1}"#,
        r#"[{"t":"b","n":2},{"t":"c","n":3}]"#,
        "pong",
        r#"{"t":"d","n":4}"#,
    ])
    .await;
    let mut c = Client::connect(&url).await.unwrap();
    c.send_json(&json!({"t": "hello"})).await;

    assert_eq!(c.next_msg(T).await, Some(json!({"t":"a","n":1})));
    let d = c.wait_type(T, "d").await;
    assert_eq!(d["n"], 4);
    assert_eq!(
        c.drain_seen(),
        vec![json!({"t":"b","n":2}), json!({"t":"c","n":3}), json!("pong")]
    );
    assert!(c.drain_seen().is_empty());
    assert_eq!(c.history().len(), 5);
    assert_eq!(c.wait_closed(T).await, Some(4001));
    assert_eq!(c.next_msg(Duration::from_millis(10)).await, None);
}

#[tokio::test]
async fn http_client_reads_length_and_chunked_bodies() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let replies = [
            "HTTP/1.1 201 Created\r\nContent-Length: 11\r\n\r\n{\"ok\":true}",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n",
        ];
        for reply in replies {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 4096];
            let _ = tcp.read(&mut buf).await.unwrap();
            tcp.write_all(reply.as_bytes()).await.unwrap();
        }
    });
    let (status, body) = http_json("POST", &format!("http://{addr}/x"), Some(&json!({}))).await;
    assert_eq!((status, body), (201, json!({"ok": true})));
    let (status, body) = http("GET", &format!("http://{addr}/y"), None).await;
    assert_eq!((status, body.as_str()), (200, r#"{"a":1}"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrangler_starts_restarts_and_stops() {
    let mut server = Server::start(ServerOpts::default()).await;
    let health = format!("{}/healthz", server.base_url());
    assert_eq!(http("GET", &health, None).await.0, 200);

    // A WebSocket upgrade reaches the worker (whatever it then says).
    let room = unique_room("smoke");
    let ws = Client::connect(&server.ws_url(&room, "weur")).await;
    drop(ws);

    let port = server.port();
    server.restart().await;
    assert_eq!(server.port(), port);
    assert_eq!(http("GET", &health, None).await.0, 200);

    server.stop().await;
    let refused = support::http_request("GET", &health, &[], None).await;
    assert!(refused.is_err(), "still serving after stop: {refused:?}");
}

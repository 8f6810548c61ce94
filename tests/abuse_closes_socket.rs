//! Sustained abuse closes a socket (docs/PROTOCOL.md, "Bad input on a
//! socket" and "Close codes"): more than 10 refused frames within 10 s close
//! the connection with 1008, or 1009 when the last refused frame was
//! oversized; every refused frame still gets its `err` first. Exactly 10 do
//! not close it: the client can still publish and get its ack. A bystander
//! in the same room is untouched: it stays connected, sees no `err`, and its
//! next frames are exactly the valid messages published afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(unused_imports)] // the harness re-exports more than this file uses
mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{http_json, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(10);
const MAX_FRAME_BYTES: usize = 1024;
const LIMIT: usize = 10;

fn t_of(v: &Value) -> Option<&str> {
    v.get("t").and_then(Value::as_str)
}

/// An oversized (2000-byte) but otherwise valid pub.
fn oversized() -> String {
    let frame = format!(r#"{{"t":"pub","data":"{}"}}"#, "x".repeat(2000 - 21));
    assert!(frame.len() > MAX_FRAME_BYTES);
    frame
}

async fn next(c: &mut Client, who: &str) -> Value {
    match c.next_msg(T).await {
        Some(v) => v,
        None => panic!(
            "{who}: no frame within {T:?} (close code {:?}); history {}",
            c.close_code(),
            serde_json::to_string(c.history()).unwrap_or_default()
        ),
    }
}

/// Connects and checks the welcome; returns the client.
async fn join(url: &str, who: &str, seq: u64) -> Client {
    let mut c = Client::connect(url)
        .await
        .unwrap_or_else(|e| panic!("{who}: connect: {e}"));
    let w = next(&mut c, who).await;
    assert_eq!(t_of(&w), Some("welcome"), "{who}: {w}");
    assert_eq!(w["seq"], seq, "{who}: welcome {w}");
    c
}

/// Sends `frames` back to back, then checks the socket is closed with
/// `close_code` and that everything it received meanwhile was `err` frames
/// with the matching codes, exactly one per refused frame.
async fn abuse_until_closed(c: &mut Client, who: &str, frames: &[String], close_code: u16) {
    for f in frames {
        c.send_text(f).await;
    }
    assert_eq!(
        c.wait_closed(T).await,
        Some(close_code),
        "{who}: close code"
    );
    let mut errs = Vec::new();
    while let Some(v) = c.next_msg(Duration::ZERO).await {
        errs.push(v);
    }
    // Every refused frame, the one that trips the limit included, gets its
    // err before the close frame.
    assert_eq!(
        errs.len(),
        frames.len(),
        "{who}: expected one err per refused frame before the close: {errs:?}"
    );
    for (i, e) in errs.iter().enumerate() {
        let want = if frames[i].len() > MAX_FRAME_BYTES {
            "too_large"
        } else {
            "bad_frame"
        };
        assert_eq!(t_of(e), Some("err"), "{who}: frame {i}: {e}");
        assert_eq!(
            (&e["code"], &e["id"]),
            (&json!(want), &Value::Null),
            "{who}: frame {i}: {e}"
        );
    }
}

/// Publishes over HTTP and checks the bystander's very next frame is that
/// message with `seq`.
async fn http_publish_reaches(base: &str, room: &str, bystander: &mut Client, seq: u64) {
    let data = json!({"over": "http", "seq": seq});
    let (status, answer) = http_json(
        "POST",
        &format!("{base}/v1/rooms/{room}/messages"),
        Some(&json!({"data": data})),
    )
    .await;
    assert_eq!(status, 200, "HTTP publish: {answer}");
    assert_eq!(answer["seq"], seq, "HTTP publish: {answer}");
    let msg = next(bystander, "B").await;
    assert_eq!(t_of(&msg), Some("msg"), "B: {msg}");
    assert_eq!(
        (&msg["seq"], &msg["data"]),
        (&json!(seq), &data),
        "B: {msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_bad_frames_close_the_socket() {
    let server =
        Server::start(ServerOpts::default().var("HERALD_MAX_FRAME_BYTES", MAX_FRAME_BYTES)).await;
    let base = server.base_url();
    let room = unique_room("abuse");
    let url = server.ws_url(&room, "weur");
    let garbage = || "garbage".to_owned();

    let mut b = join(&url, "B", 0).await;

    // A: 11 bad frames -> errs, then 1008.
    let mut a = join(&url, "A", 0).await;
    abuse_until_closed(&mut a, "A", &vec![garbage(); LIMIT + 1], 1008).await;
    http_publish_reaches(&base, &room, &mut b, 1).await;

    // C: 11 oversized frames -> errs, then 1009.
    let mut c = join(&url, "C", 1).await;
    abuse_until_closed(&mut c, "C", &vec![oversized(); LIMIT + 1], 1009).await;

    // The close code follows the last refused frame, not the majority.
    let mut e = join(&url, "E", 1).await;
    let mut frames = vec![garbage(); LIMIT];
    frames.push(oversized());
    abuse_until_closed(&mut e, "E", &frames, 1009).await;
    let mut f = join(&url, "F", 1).await;
    let mut frames = vec![oversized(); LIMIT];
    frames.push(garbage());
    abuse_until_closed(&mut f, "F", &frames, 1008).await;

    // D: exactly 10 bad frames -> 10 errs and still open and usable.
    let mut d = join(&url, "D", 1).await;
    for i in 0..LIMIT {
        d.send_text(&garbage()).await;
        let e = next(&mut d, "D").await;
        assert_eq!(
            (t_of(&e), &e["code"]),
            (Some("err"), &json!("bad_frame")),
            "D: frame {i}: {e}"
        );
    }
    d.send_json(&json!({"t": "pub", "id": "after-10", "data": {"from": "D"}}))
        .await;
    // The ack and D's own msg, in either order, and nothing else.
    let mut got = [next(&mut d, "D").await, next(&mut d, "D").await];
    got.sort_by_key(|v| t_of(v) == Some("msg")); // ack first
    assert_eq!(
        got[0],
        json!({"t": "ack", "id": "after-10", "seq": 2}),
        "D's ack"
    );
    assert_eq!(
        (t_of(&got[1]), &got[1]["seq"]),
        (Some("msg"), &json!(2)),
        "D's own msg: {}",
        got[1]
    );
    assert_eq!(
        d.close_code(),
        None,
        "D was closed after exactly {LIMIT} bad frames"
    );

    // B, the bystander: still connected, and its next frame is D's message.
    let msg = next(&mut b, "B").await;
    assert_eq!(
        (t_of(&msg), &msg["seq"], &msg["data"]),
        (Some("msg"), &json!(2), &json!({"from": "D"})),
        "B: {msg}"
    );
    assert_eq!(b.close_code(), None, "B was closed");
    let kinds: Vec<Option<&str>> = b.history().iter().map(t_of).collect();
    assert_eq!(
        kinds,
        [Some("welcome"), Some("msg"), Some("msg")],
        "B saw: {:?}",
        b.history()
    );

    // After a 1008 the room is still served: a new socket joins normally.
    let mut g = join(&url, "G", 2).await;
    g.close().await;
    d.close().await;
    b.close().await;
}

//! Bad input on a socket (docs/PROTOCOL.md, "Bad input on a socket"): every
//! kind of refused frame gets exactly one `err` with the documented `code`
//! and the request's `id` when it could be read (else `null`); the
//! connection stays open and usable; and no other client sees anything — the
//! next frame a bystander receives is the publisher's following valid
//! message, with the next seq. Also covers the accepted edge cases: `ping`
//! answered with `pong`, `data: null`, nesting exactly at
//! `HERALD_MAX_DEPTH`, and ephemeral messages (`eph`, no `seq` in the `msg`
//! or the `ack`).
//!
//! Twelve bad frames are spread over two connections (six each), so neither
//! comes near the abuse limit (more than 10 in 10 s), which
//! `abuse_closes_socket.rs` covers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(unused_imports)] // the harness re-exports more than this file uses
mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(10);
const MAX_FRAME_BYTES: usize = 1024;
const MAX_DEPTH: usize = 8;

/// `data` nested `depth` arrays deep around a `1`.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// Frame field `t`.
fn t_of(v: &Value) -> Option<&str> {
    v.get("t").and_then(Value::as_str)
}

/// Two sockets in one room: the publisher `a` that sends the bad frames,
/// and the bystander `b` that must see only valid messages, in seq order.
struct Room {
    a: Client,
    b: Client,
    /// Seq of the last stored message both have seen.
    seq: u64,
    /// Next request id `a` uses for a valid publish.
    next_id: u64,
}

impl Room {
    /// The next frame of `who`, panicking if none arrives in time.
    async fn next(who: &mut Client, name: &str) -> Value {
        match who.next_msg(T).await {
            Some(v) => v,
            None => panic!(
                "{name}: no frame within {T:?} (close code {:?}); history: {}",
                who.close_code(),
                serde_json::to_string(who.history()).unwrap_or_default()
            ),
        }
    }

    /// `a`'s next frame must be exactly one `err` with `code` and `id`.
    async fn expect_err(&mut self, what: &str, code: &str, id: Value) {
        let err = Self::next(&mut self.a, "A").await;
        assert_eq!(
            t_of(&err),
            Some("err"),
            "{what}: expected an err, got {err}"
        );
        let obj = err.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["code", "id", "message", "t"],
            "{what}: err fields: {err}"
        );
        assert_eq!(err["code"], code, "{what}: {err}");
        assert_eq!(err["id"], id, "{what}: {err}");
        let message = err["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{what}: err without a message: {err}");
    }

    async fn bad_text(&mut self, what: &str, frame: &str, code: &str, id: Value) {
        self.a.send_text(frame).await;
        self.expect_err(what, code, id).await;
        self.prove_nothing_leaked(what).await;
    }

    /// `a` publishes a valid stored message; it gets its ack (with the next
    /// seq) and its own `msg`, and `b`'s very next frame is that `msg`: so
    /// whatever `a` sent before it produced nothing for `b`.
    async fn prove_nothing_leaked(&mut self, after: &str) {
        let data = json!({"after": after, "n": self.next_id});
        self.publish(after, data, Some(format!("m-{}", self.next_id)))
            .await;
    }

    /// Publishes a stored message from `a` with an id and checks the ack,
    /// `a`'s own copy and `b`'s copy exactly. Returns the message's seq.
    async fn publish(&mut self, what: &str, data: Value, mid: Option<String>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut frame = json!({"t": "pub", "id": id, "data": data});
        if let Some(mid) = &mid {
            frame["mid"] = json!(mid);
        }
        self.a.send_json(&frame).await;

        let want_seq = self.seq + 1;
        // The ack and a's own msg may arrive in either order; nothing else may.
        let (mut ack, mut own) = (None, None);
        for _ in 0..2 {
            let v = Self::next(&mut self.a, "A").await;
            match t_of(&v) {
                Some("ack") if ack.is_none() => ack = Some(v),
                Some("msg") if own.is_none() => own = Some(v),
                _ => panic!("{what}: A expected its ack and msg, got {v}"),
            }
        }
        let ack = ack.unwrap();
        assert_eq!(
            ack,
            json!({"t": "ack", "id": id, "seq": want_seq}),
            "{what}: ack"
        );

        let msg = Self::next(&mut self.b, "B").await;
        let ts = msg["ts"].as_u64();
        assert!(ts.is_some(), "{what}: B's msg has no integer ts: {msg}");
        let mut want = json!({"t": "msg", "seq": want_seq, "ts": ts, "data": data, "from": "tester"});
        if let Some(mid) = mid {
            want["mid"] = json!(mid);
        }
        assert_eq!(msg, want, "{what}: B's next frame must be A's next message");
        assert_eq!(own.unwrap(), want, "{what}: A's own copy");
        self.seq = want_seq;
        want_seq
    }

    /// Replaces `a` with a fresh connection (the old one closes normally).
    async fn new_publisher(&mut self, url: &str) {
        self.a.close().await;
        assert_eq!(
            self.a.close_code(),
            Some(1000),
            "A's close was not answered with 1000"
        );
        self.a = Client::connect(url).await.expect("connect A2");
        let welcome = Self::next(&mut self.a, "A2").await;
        assert_eq!(t_of(&welcome), Some("welcome"), "{welcome}");
        assert_eq!(welcome["seq"], self.seq, "A2's welcome: {welcome}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_err_and_nothing_else() {
    let server = Server::start(
        ServerOpts::default()
            .var("HERALD_MAX_FRAME_BYTES", MAX_FRAME_BYTES)
            .var("HERALD_MAX_DEPTH", MAX_DEPTH),
    )
    .await;
    let room = unique_room("badsock");
    let url = server.ws_url(&room, "weur");

    let mut b = Client::connect(&url).await.expect("connect B");
    let welcome_b = b.next_msg(T).await.expect("B's welcome");
    assert_eq!(t_of(&welcome_b), Some("welcome"), "{welcome_b}");
    assert_eq!(welcome_b["seq"], 0, "fresh room: {welcome_b}");
    let mut a = Client::connect(&url).await.expect("connect A");
    let welcome_a = a.next_msg(T).await.expect("A's welcome");
    assert_eq!(t_of(&welcome_a), Some("welcome"), "{welcome_a}");
    assert_eq!(welcome_a["seq"], 0, "{welcome_a}");
    assert_ne!(welcome_a["conn"], welcome_b["conn"], "conn ids must differ");

    let mut r = Room {
        a,
        b,
        seq: 0,
        next_id: 1,
    };
    r.prove_nothing_leaked("start").await;

    // ---- first publisher: six bad frames -------------------------------
    r.bad_text("non-JSON text", "hello", "bad_frame", Value::Null)
        .await;
    r.bad_text("JSON array", "[1,2]", "bad_frame", Value::Null)
        .await;
    r.bad_text("JSON number", "42", "bad_frame", Value::Null)
        .await;
    r.bad_text(
        "unknown t",
        r#"{"t":"subscribe","id":5,"data":1}"#,
        "bad_frame",
        json!(5),
    )
    .await;
    r.bad_text(
        "missing data",
        r#"{"t":"pub","id":"x"}"#,
        "bad_frame",
        json!("x"),
    )
    .await;
    let long_mid = json!({"t": "pub", "id": 6, "data": 1, "mid": "m".repeat(65)}).to_string();
    r.bad_text("mid of 65 chars", &long_mid, "bad_frame", json!(6))
        .await;

    // Accepted edge cases on the same (still open) connection.
    r.a.send_text("ping").await;
    let pong = Room::next(&mut r.a, "A").await;
    assert_eq!(
        pong,
        json!("pong"),
        "ping must be answered with the text pong"
    );
    r.publish("data null", Value::Null, None).await;
    let mid64 = "m".repeat(64);
    r.publish("mid of 64 chars", json!("ok"), Some(mid64)).await;
    r.publish(
        "nested exactly max depth",
        serde_json::from_str(&nested(MAX_DEPTH)).unwrap(),
        None,
    )
    .await;

    // Ephemeral: ack without seq, msg with eph and without seq, and the
    // stored stream's seq is not consumed.
    let eph_id = r.next_id;
    r.next_id += 1;
    let eph_data = json!({"cursor": [10, 20]});
    r.a.send_json(&json!({"t": "pub", "id": eph_id, "data": eph_data, "ephemeral": true}))
        .await;
    let mut got = [
        Room::next(&mut r.a, "A").await,
        Room::next(&mut r.a, "A").await,
    ];
    got.sort_by_key(|v| t_of(v) == Some("msg")); // ack first
    assert_eq!(
        got[0],
        json!({"t": "ack", "id": eph_id}),
        "ephemeral ack has no seq"
    );
    let eph_b = Room::next(&mut r.b, "B").await;
    let ts = eph_b["ts"].as_u64();
    assert!(ts.is_some(), "ephemeral msg without ts: {eph_b}");
    let want = json!({"t": "msg", "eph": true, "ts": ts, "data": eph_data, "from": "tester"});
    assert_eq!(eph_b, want, "B's ephemeral msg");
    assert_eq!(got[1], want, "A's own ephemeral msg");
    r.prove_nothing_leaked("ephemeral").await;

    // ---- second publisher: six more bad frames ---------------------------
    r.new_publisher(&url).await;
    r.bad_text(
        "mid not a string",
        r#"{"t":"pub","id":"m","data":1,"mid":7}"#,
        "bad_frame",
        json!("m"),
    )
    .await;
    r.bad_text(
        "ephemeral not a bool",
        r#"{"t":"pub","id":8,"data":1,"ephemeral":"yes"}"#,
        "bad_frame",
        json!(8),
    )
    .await;
    r.bad_text(
        "id an object",
        r#"{"t":"pub","id":{"n":1},"data":1}"#,
        "bad_frame",
        Value::Null,
    )
    .await;
    let too_deep = format!(r#"{{"t":"pub","id":10,"data":{}}}"#, nested(MAX_DEPTH + 1));
    r.bad_text(
        "nested one over max depth",
        &too_deep,
        "bad_frame",
        json!(10),
    )
    .await;

    let big = format!(r#"{{"t":"pub","data":"{}"}}"#, "x".repeat(2000 - 21));
    assert_eq!(big.len(), 2000);
    r.bad_text("2000-byte frame", &big, "too_large", Value::Null)
        .await;

    // A binary frame carrying an otherwise valid pub is refused, not published.
    let bin = json!({"t": "pub", "data": {"via": "binary"}}).to_string();
    r.a.send_binary(bin.into_bytes())
        .await
        .expect("send binary");
    r.expect_err("binary frame", "bad_frame", Value::Null).await;
    r.prove_nothing_leaked("binary frame").await;

    // Both sockets are still open, and B only ever saw its welcome and the
    // valid messages (checked one by one above; the whole history here).
    assert_eq!(r.a.close_code(), None, "A2 was closed");
    assert_eq!(r.b.close_code(), None, "B was closed");
    let kinds: Vec<&str> = r.b.history().iter().filter_map(t_of).collect();
    assert_eq!(
        kinds.len(),
        r.b.history().len(),
        "B got a non-object frame: {:?}",
        r.b.history()
    );
    assert_eq!(kinds[0], "welcome");
    assert!(kinds[1..].iter().all(|k| *k == "msg"), "B saw {kinds:?}");
    assert_eq!(r.seq, 17, "one stored message per check");

    r.a.close().await;
    r.b.close().await;
}

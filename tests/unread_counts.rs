//! Read marks and unread counts across devices and regions.
//!
//! Five messages from another user; ana connects in weur and in apac (no
//! read marks in the room yet: the welcomes carry no count, and a user
//! with no mark has everything unread), reads up to 3 on her weur socket:
//! the ack carries her mark, and both her sockets (and her SSE stream) get
//! `{"t":"read","seq":3}`. A reconnect is welcomed with `read: 3` and
//! `unread: 2`. A
//! lower read does not move the mark back (the admin endpoint still says
//! 3, and the next `read` frame her other device sees is the next higher
//! one); a read past the room's last seq is clamped. Her own messages do
//! not count; other users' marks are their own (a user whose `sub` is
//! not ASCII included). An anonymous reader's `read` is refused with
//! `unauthorized`; the admin endpoint needs `admin` and a `user`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::sse::SseStream;
use support::{http_json, http_pub, http_request, now_s, token, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(20);

fn user_token(sub: &str, caps: &[&str]) -> String {
    token(&json!({"sub": sub, "exp": now_s() + 600, "rooms": {"*": caps}}))
}

fn ws(server: &Server, room: &str, region: &str, tok: &str) -> String {
    format!("ws://127.0.0.1:{}/v1/rooms/{room}/ws?region={region}&token={tok}", server.port())
}

/// `GET …/unread?user=U` with the harness's admin token: (read, unread).
async fn unread_of(server: &Server, room: &str, user: &str) -> (u64, u64) {
    let user_q: String = url_encode(user);
    let (status, v) = http_json("GET", &format!("{}/v1/rooms/{room}/unread?user={user_q}", server.base_url()), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["user"], user, "{v}");
    (v["read"].as_u64().unwrap(), v["unread"].as_u64().unwrap())
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// Sends a `read` with an id and returns the mark its ack carries.
async fn read(c: &mut Client, id: &str, seq: u64) -> u64 {
    c.send_json(&json!({"t": "read", "id": id, "seq": seq})).await;
    let ack = c.wait_for(T, |f| (f["t"] == "ack" || f["t"] == "err") && f["id"] == id).await;
    assert_eq!(ack["t"], "ack", "{ack}");
    ack["seq"].as_u64().unwrap()
}

/// Connects and returns the client with its welcome.
async fn welcomed(url: &str) -> (Client, Value) {
    let mut c = Client::connect(url).await.unwrap_or_else(|e| panic!("connect {url}: {e}"));
    let w = c.wait_type(T, "welcome").await;
    (c, w)
}

/// The next `read` frame, counting one that came while waiting for an ack
/// (the mark may reach the reader's socket before its ack).
async fn next_read(c: &mut Client) -> Value {
    let mut seen = c.drain_seen();
    match seen.iter().position(|f| f["t"] == "read") {
        Some(i) => seen.remove(i),
        None => c.wait_for(T, |f| f["t"] == "read").await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marks_follow_the_user_and_welcomes_count_what_is_unread() {
    let server = Server::start(ServerOpts::default().var("HERALD_PUBLIC_ROOMS", "open:*")).await;
    let room = unique_room("open:unread");
    let ana = user_token("ana", &["sub", "pub"]);
    for i in 1..=5 {
        assert_eq!(http_pub(&server, &room, json!({"data": {"n": i}})).await["seq"], i, "published by tester");
    }
    assert_eq!(unread_of(&server, &room, "ana").await, (0, 5), "no mark: everything stored is unread");

    let (mut weur, welcome) = welcomed(&ws(&server, &room, "weur", &ana)).await;
    assert_eq!(welcome["seq"], 5);
    assert_eq!(welcome.get("unread"), None, "a room without read marks pays nothing at connect: {welcome}");
    let mut apac = Client::welcomed(&ws(&server, &room, "apac", &ana), T).await;
    let sse_url = format!("{}/v1/rooms/{room}/events?region=enam", server.base_url());
    let auth = format!("Bearer {ana}");
    let mut sse = SseStream::open(&sse_url, &[("authorization", auth.as_str())]).await.unwrap();
    assert_eq!(sse.status, 200);
    assert_eq!(sse.next_data_event(T).await.unwrap().event.as_deref(), Some("welcome"));

    // The first device reads up to 3: every connection of ana hears it.
    assert_eq!(read(&mut weur, "r1", 3).await, 3, "the ack carries the mark");
    assert_eq!(next_read(&mut weur).await, json!({"t": "read", "seq": 3}), "the reader's own socket too");
    assert_eq!(next_read(&mut apac).await, json!({"t": "read", "seq": 3}), "the other region");
    let ev = sse.next_data_event(T).await.unwrap();
    assert_eq!((ev.event.as_deref(), ev.id.as_deref()), (Some("read"), None), "{ev:?}");
    assert_eq!(serde_json::from_str::<Value>(&ev.data).unwrap(), json!({"t": "read", "seq": 3}));
    assert_eq!(unread_of(&server, &room, "ana").await, (3, 2));

    // A reconnect is welcomed with the count, in either region.
    for region in ["weur", "apac"] {
        let (mut again, w) = welcomed(&ws(&server, &room, region, &ana)).await;
        assert_eq!((w["seq"].as_u64(), w["read"].as_u64(), w["unread"].as_u64()), (Some(5), Some(3), Some(2)), "{region}: {w}");
        again.close().await;
    }

    // A lower mark does not move it back, and goes to nobody.
    assert_eq!(read(&mut weur, "r2", 1).await, 3);
    assert_eq!(unread_of(&server, &room, "ana").await, (3, 2), "still 3");
    assert_eq!(read(&mut weur, "r3", 4).await, 4);
    assert_eq!(next_read(&mut apac).await["seq"], 4, "the next read the other device sees is 4, never 1");
    assert_eq!(next_read(&mut weur).await["seq"], 4, "and the reader's own");

    // Her own messages are not unread for her; other users' are.
    weur.send_json(&json!({"t": "pub", "id": "p1", "data": "mine"})).await;
    weur.send_json(&json!({"t": "pub", "id": "p2", "data": "mine too"})).await;
    weur.wait_for(T, |f| f["t"] == "ack" && f["id"] == "p2").await;
    assert_eq!(unread_of(&server, &room, "ana").await, (4, 1), "only 5 is unread: 6 and 7 are hers");
    assert_eq!(http_pub(&server, &room, json!({"data": "from tester"})).await["seq"], 8);
    assert_eq!(unread_of(&server, &room, "ana").await, (4, 2), "5 and 8");
    let (mut again, w) = welcomed(&ws(&server, &room, "apac", &ana)).await;
    assert_eq!((w["seq"].as_u64(), w["read"].as_u64(), w["unread"].as_u64()), (Some(8), Some(4), Some(2)), "{w}");
    assert_eq!(unread_of(&server, &room, "tester").await, (0, 2), "tester has no mark: ana's 6 and 7 are unread for them");

    // Past the room's last seq: clamped.
    assert_eq!(read(&mut again, "r4", 1_000).await, 8, "clamped to the last seq");
    assert_eq!(next_read(&mut weur).await["seq"], 8);
    assert_eq!(unread_of(&server, &room, "ana").await, (8, 0));

    // Another user, whose sub is not ASCII, has a mark of their own.
    let zoe = "zoë 東京";
    let (mut z, w) = welcomed(&ws(&server, &room, "weur", &user_token(zoe, &["sub"]))).await;
    assert_eq!((w["read"].as_u64(), w["unread"].as_u64()), (Some(0), Some(8)), "the room has marks now, zoë has none: {w}");
    assert_eq!(read(&mut z, "z1", 2).await, 2);
    assert_eq!(next_read(&mut z).await["seq"], 2);
    assert_eq!(unread_of(&server, &room, zoe).await, (2, 6));
    assert_eq!(unread_of(&server, &room, "ana").await, (8, 0), "ana's mark is hers");

    // Anonymous readers have no mark.
    let (mut anon, w) = welcomed(&server.ws_url_anon(&room, "weur")).await;
    assert_eq!(w.get("unread"), None);
    anon.send_json(&json!({"t": "read", "id": 9, "seq": 3})).await;
    let err = anon.wait_type(T, "err").await;
    assert_eq!((err["id"].as_u64(), err["code"].as_str()), (Some(9), Some("unauthorized")), "{err}");
    anon.send_json(&json!({"t": "read", "seq": "3"})).await;
    assert_eq!(anon.wait_type(T, "err").await["code"], "bad_frame");
    assert!(anon.close_code().is_none(), "still connected");

    // The admin endpoint: `user` is required; `admin` too.
    let base = format!("{}/v1/rooms/{room}/unread", server.base_url());
    for query in ["", "?user=", "?other=1"] {
        let (status, v) = http_json("GET", &format!("{base}{query}"), None).await;
        assert_eq!((status, v["error"].as_str()), (400, Some("bad_frame")), "{query}: {v}");
    }
    let long = "x".repeat(129);
    assert_eq!(http_json("GET", &format!("{base}?user={long}"), None).await.0, 400);
    let resp = http_request("GET", &format!("{base}?user=ana"), &[("authorization", auth.as_str())], None).await.unwrap();
    assert_eq!(resp.status, 403, "{}", resp.body);
    assert_eq!(http_json("POST", &format!("{base}?user=ana"), None).await.0, 405);
}

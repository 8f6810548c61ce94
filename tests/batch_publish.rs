//! Batch publish (`POST /v1/publish`): one request publishes to many rooms.
//!
//! - 500 rooms, one subscriber each: one batch reaches every subscriber
//!   with exactly its own message, and the answer has each room's seq and
//!   epoch in input order; the same batch again (same mids) answers the
//!   same seqs and delivers nothing twice; the `rooms` form sends one
//!   message everywhere, ephemeral ones too.
//! - A batch refused as a whole publishes nothing: a bad room name (400),
//!   a room the token may not publish to (403), too many rooms (400), no
//!   token (401). A non-admin token is limited per room like a single
//!   publish: an over-rate room fails alone, in its own result, status 200.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::{admin_token, http_request, now_s, room_stats, token, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(60);
const ROOMS: usize = 500;

/// `POST /v1/publish` with `tok` (`None`: no token at all).
async fn batch(server: &Server, tok: Option<&str>, body: &Value) -> (u16, Value) {
    let url = format!("{}/v1/publish", server.base_url());
    let auth = tok.map(|t| format!("Bearer {t}")).unwrap_or_default();
    let r = http_request("POST", &url, &[("authorization", &auth)], Some(&body.to_string())).await.unwrap();
    (r.status, serde_json::from_str(&r.body).unwrap_or(Value::String(r.body)))
}

fn results(v: &Value) -> &Vec<Value> {
    v["results"].as_array().unwrap_or_else(|| panic!("no results: {v}"))
}

/// The stored messages a client received, as (seq, data).
fn msgs(c: &Client) -> Vec<(u64, Value)> {
    c.history().iter().filter(|f| f["t"] == "msg").map(|f| (f["seq"].as_u64().unwrap_or(0), f["data"].clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_reaches_500_rooms_exactly_once() {
    let server = Server::start(ServerOpts::default().var("HERALD_BATCH_MAX_ROOMS", ROOMS)).await;
    let prefix = unique_room("note");
    let rooms: Vec<String> = (0..ROOMS).map(|i| format!("{prefix}:{i}")).collect();

    let t0 = Instant::now();
    let mut clients: Vec<Client> = futures_util::stream::iter(rooms.iter())
        .map(|room| {
            let url = server.ws_url(room, "weur");
            async move { Client::welcomed(&url, T).await }
        })
        .buffered(50)
        .collect()
        .await;
    eprintln!("{ROOMS} subscribers welcomed in {:?}", t0.elapsed());

    // The messages form: each room its own data, each with a mid.
    let body = json!({"messages": rooms.iter().enumerate()
        .map(|(i, room)| json!({"room": room, "data": {"i": i}, "mid": format!("n1-{i}")}))
        .collect::<Vec<_>>()});
    let t0 = Instant::now();
    let (status, first) = batch(&server, Some(&admin_token()), &body).await;
    eprintln!("batch of {ROOMS} answered {status} in {:?}", t0.elapsed());
    assert_eq!(status, 200, "{first}");
    let first = results(&first).clone();
    assert_eq!(first.len(), ROOMS);
    for (i, r) in first.iter().enumerate() {
        assert_eq!((r["room"].as_str(), r["seq"].as_u64()), (Some(rooms[i].as_str()), Some(1)), "result {i} in input order: {r}");
        assert!(r["epoch"].as_str().is_some_and(|e| !e.is_empty()) && r["ts"].is_u64(), "{r}");
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let m = c.wait_type(T, "msg").await;
        assert_eq!((m["seq"].as_u64(), &m["data"], m["mid"].as_str()), (Some(1), &json!({"i": i}), Some(format!("n1-{i}").as_str())), "room {i}");
    }

    // The same batch again: the same answers, nothing stored or sent twice.
    let (status, again) = batch(&server, Some(&admin_token()), &body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(results(&again), &first, "a retry with the same mids answers the original seqs, epochs and ts");

    // The rooms form: one message everywhere. Each subscriber's next
    // message is seq 2, so the retry delivered nothing in between.
    let (status, second) = batch(&server, Some(&admin_token()), &json!({"rooms": rooms, "data": "second", "mid": "n2"})).await;
    assert_eq!(status, 200, "{second}");
    assert!(results(&second).iter().zip(&rooms).all(|(r, room)| r["room"] == *room && r["seq"] == 2), "{second}");
    for (i, c) in clients.iter_mut().enumerate() {
        c.wait_for(T, |f| f["t"] == "msg" && f["seq"] == 2).await;
        assert_eq!(msgs(c), vec![(1, json!({"i": i})), (2, json!("second"))], "room {i}: each message once");
    }
    for room in [&rooms[0], &rooms[ROOMS / 2], &rooms[ROOMS - 1]] {
        let s = room_stats(&server, room).await;
        assert_eq!((s["seq"].as_u64(), s["stored"].as_u64()), (Some(2), Some(2)), "{room}: {s}");
    }

    // Ephemeral: delivered, not stored, no seq.
    let few = &rooms[..3];
    let (status, eph) = batch(&server, Some(&admin_token()), &json!({"rooms": few, "data": "blip", "ephemeral": true})).await;
    assert_eq!(status, 200, "{eph}");
    assert!(results(&eph).iter().all(|r| r["seq"].is_null() && r["epoch"].is_string()), "{eph}");
    for c in clients.iter_mut().take(3) {
        let m = c.wait_for(T, |f| f["t"] == "msg" && f["data"] == "blip").await;
        assert!(m.get("seq").is_none_or(Value::is_null), "{m}");
    }
    assert_eq!(room_stats(&server, &rooms[0]).await["seq"], 2, "ephemeral messages take no seq");

    // One room over the limit is refused whole.
    let mut too_many = rooms.clone();
    too_many.push(format!("{prefix}:extra"));
    let (status, v) = batch(&server, Some(&admin_token()), &json!({"rooms": too_many, "data": 1})).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("bad_frame")), "{v}");
    assert!(v["message"].as_str().is_some_and(|m| m.contains("HERALD_BATCH_MAX_ROOMS")), "{v}");
    assert_eq!(room_stats(&server, &rooms[0]).await["seq"], 2, "nothing published");
    for c in &mut clients {
        c.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_batches_publish_nothing_and_rates_are_per_room() {
    let server = Server::start(ServerOpts::default().var("HERALD_PUB_RATE", 1).var("HERALD_PUB_BURST", 1)).await;
    let base = server.base_url();
    let (a, b) = (unique_room("batch-a"), unique_room("batch-b"));
    let mut sub_a = Client::welcomed(&server.ws_url(&a, "weur"), T).await;
    let admin = admin_token();

    // A bad room name anywhere: 400, naming it, and nothing published.
    let (status, v) = batch(&server, Some(&admin), &json!({"rooms": [&a, "not/a room"], "data": 1})).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("bad_room")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("rooms[1]"), "{v}");
    let (status, v) = batch(&server, Some(&admin), &json!({"messages": [{"room": &a, "data": 1}, {"room": &a, "data": 2}]})).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("bad_frame")), "a room named twice: {v}");

    // A token without pub on one room: 403 naming it, nothing published.
    let partial = token(&json!({"sub": "svc", "exp": now_s() + 600, "rooms": {&a: ["pub"], &b: ["sub"]}}));
    let (status, v) = batch(&server, Some(&partial), &json!({"rooms": [&a, &b], "data": 1})).await;
    assert_eq!((status, v["error"].as_str()), (403, Some("forbidden")), "{v}");
    assert!(v["message"].as_str().unwrap().contains(&b), "{v}");

    // No token, a bad one, the wrong method.
    let (status, v) = batch(&server, None, &json!({"rooms": [&a], "data": 1})).await;
    assert_eq!((status, v["error"].as_str()), (401, Some("unauthorized")), "{v}");
    let (status, v) = batch(&server, Some("not.a.token"), &json!({"rooms": [&a], "data": 1})).await;
    assert_eq!((status, v["error"].as_str()), (401, Some("unauthorized")), "{v}");
    let r = http_request("GET", &format!("{base}/v1/publish"), &[], None).await.unwrap();
    assert_eq!(r.status, 405, "{}", r.body);
    // A body over HERALD_MAX_FRAME_BYTES of data in one message: 413.
    let (status, v) = batch(&server, Some(&admin), &json!({"rooms": [&a], "data": "x".repeat(70_000)})).await;
    assert_eq!((status, v["error"].as_str()), (413, Some("too_large")), "{v}");

    for room in [&a, &b] {
        assert_eq!(room_stats(&server, room).await["seq"], 0, "{room}: nothing was published");
    }
    assert!(sub_a.try_wait_for(Duration::from_millis(300), |f| f["t"] == "msg").await.is_none(), "and nothing delivered");

    // A non-admin token: each room draws one publish from its user's bucket
    // there (burst 1 here). The second batch is over the rate in both rooms:
    // each result says so, with retry_after, and the answer is still 200.
    let svc = token(&json!({"sub": "svc", "exp": now_s() + 600, "rooms": {"*": ["pub"]}}));
    let (status, v) = batch(&server, Some(&svc), &json!({"rooms": [&a, &b], "data": "one", "mid": "r1"})).await;
    assert_eq!(status, 200, "{v}");
    assert!(results(&v).iter().all(|r| r["seq"] == 1), "{v}");
    let (status, v) = batch(&server, Some(&svc), &json!({"rooms": [&a, &b], "data": "two", "mid": "r2"})).await;
    assert_eq!(status, 200, "{v}");
    for (r, room) in results(&v).iter().zip([&a, &b]) {
        assert_eq!((r["room"].as_str(), r["error"].as_str()), (Some(room.as_str()), Some("rate_limited")), "{v}");
        assert!(r["retry_after"].as_u64().is_some_and(|s| s >= 1), "{v}");
    }
    // An admin token is exempt, room by room.
    let (status, v) = batch(&server, Some(&admin), &json!({"rooms": [&a, &b], "data": "three"})).await;
    assert_eq!(status, 200, "{v}");
    assert!(results(&v).iter().all(|r| r["seq"] == 2), "{v}");
    let m = sub_a.wait_for(T, |f| f["t"] == "msg" && f["seq"] == 2).await;
    assert_eq!(m["data"], "three");
    assert_eq!(msgs(&sub_a), vec![(1, json!("one")), (2, json!("three"))], "the over-rate message was not published");
    assert_eq!(msgs(&sub_a).len(), 2);
}

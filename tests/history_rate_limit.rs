//! History reads are rate limited (`HERALD_HISTORY_RATE`/`_BURST`), because
//! each one is a storage query at the Room. Over a socket the bucket is the
//! connection's: the excess `history` frame is answered `err rate_limited`
//! carrying its id, and the socket stays usable. Over HTTP it is the user's
//! in the room: 429 `rate_limited` with `Retry-After`. Another connection or
//! user is not affected, a socket's reads do not draw on its user's HTTP
//! bucket, and a token holding `admin` is not limited over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;
use support::{admin_token, http_pub, http_request, now_s, token, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(20);
const BURST: usize = 3;
/// Frames sent at once on one socket: far more than the burst plus what one
/// read a second refills while they are answered.
const FLOOD: usize = 12;

/// Sends a `history` frame for each id at once and returns the answers by
/// id: `Ok(seqs)` for a `history`, `Err(code)` for an `err`.
async fn ask_all(c: &mut Client, ids: &[String]) -> Vec<(String, Result<Vec<u64>, String>)> {
    for id in ids {
        c.send_json(&json!({"t":"history","id":id,"since":0})).await;
    }
    let wanted: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let mut answers = Vec::new();
    while answers.len() < ids.len() {
        let f = c
            .wait_for(T, |f| (f["t"] == "history" || f["t"] == "err") && f["id"].as_str().is_some_and(|id| wanted.contains(id)))
            .await;
        let id = f["id"].as_str().unwrap().to_owned();
        assert!(!answers.iter().any(|(seen, _)| *seen == id), "{id} answered twice: {f}");
        let answer = match f["t"].as_str() {
            Some("history") => Ok(f["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect()),
            _ => Err(f["code"].as_str().unwrap_or_default().to_owned()),
        };
        answers.push((id, answer));
    }
    answers
}

async fn http_history(server: &Server, room: &str, tok: &str) -> (u16, Option<String>, Value) {
    let url = format!("{}/v1/rooms/{room}/messages?since=0", server.base_url());
    let auth = format!("Bearer {tok}");
    let resp = http_request("GET", &url, &[("authorization", &auth)], None).await.unwrap();
    let retry = resp.header("retry-after").map(str::to_owned);
    (resp.status, retry, serde_json::from_str(&resp.body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reads_are_limited_per_connection_and_per_user() {
    let server = Server::start(ServerOpts::default().var("HERALD_HISTORY_RATE", 1).var("HERALD_HISTORY_BURST", BURST)).await;
    let room = unique_room("histrate");
    assert_eq!(http_pub(&server, &room, json!({"data":"kept"})).await["seq"], 1);
    let reader = |sub: &str| token(&json!({"sub": sub, "exp": now_s() + 3600, "rooms": {&room: ["sub", "history"]}}));
    let (ana, bo) = (reader("ana"), reader("bo"));
    let ws = |tok: &str| format!("ws://127.0.0.1:{}/v1/rooms/{room}/ws?region=weur&token={tok}", server.port());

    // One socket asking in a loop: the burst is answered, the rest refused
    // with their ids, and the socket stays.
    let mut a = Client::welcomed(&ws(&ana), T).await;
    let ids: Vec<String> = (0..FLOOD).map(|i| format!("a{i}")).collect();
    let answers = ask_all(&mut a, &ids).await;
    let answered = answers.iter().filter(|(_, r)| r.is_ok()).count();
    for (id, r) in &answers {
        match r {
            Ok(seqs) => assert_eq!(seqs, &[1], "{id}"),
            Err(code) => assert_eq!(code, "rate_limited", "{id}"),
        }
    }
    assert!(answered >= BURST, "the burst is answered: {answers:?}");
    assert!(answered < FLOOD, "the excess is refused: {answers:?}");
    assert!(a.close_code().is_none(), "rate limiting does not close the socket");

    // Another connection of the same user has its own bucket, and the
    // relay's reads are not limited again at the Room.
    let mut b = Client::welcomed(&ws(&ana), T).await;
    let ids: Vec<String> = (0..BURST).map(|i| format!("b{i}")).collect();
    for (id, r) in ask_all(&mut b, &ids).await {
        assert_eq!(r, Ok(vec![1]), "{id}: another connection is not affected");
    }

    // Over HTTP the bucket is the user's in the room; the socket reads above
    // did not draw on it, so the whole burst is there.
    for i in 1..=BURST {
        let (status, _, v) = http_history(&server, &room, &ana).await;
        assert_eq!((status, v["messages"][0]["seq"].as_u64()), (200, Some(1)), "read {i} within the burst: {v}");
    }
    let mut refused = None;
    for _ in 0..FLOOD {
        let (status, retry, v) = http_history(&server, &room, &ana).await;
        if status != 200 {
            refused = Some((status, retry, v));
            break;
        }
    }
    let (status, retry, v) = refused.expect("a user reading in a loop is refused");
    assert_eq!((status, v["error"].as_str()), (429, Some("rate_limited")), "{v}");
    assert!(retry.as_deref().and_then(|r| r.parse::<u64>().ok()).is_some_and(|s| s >= 1), "Retry-After: {retry:?}");

    let (status, _, v) = http_history(&server, &room, &bo).await;
    assert_eq!(status, 200, "another user is not affected: {v}");
    for _ in 0..FLOOD {
        let (status, _, v) = http_history(&server, &room, &admin_token()).await;
        assert_eq!(status, 200, "a backend is not limited: {v}");
    }
}

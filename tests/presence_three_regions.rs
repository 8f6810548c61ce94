//! Presence across three regions, users with one to three connections.
//!
//! A watcher in weur connects first (with the `presence` capability), one
//! in apac and one in enam after it (starting from a snapshot), then
//! ana (one socket, weur), bo (weur then apac) and cy (apac twice, then
//! enam), with `info`. The watcher sees exactly one `join` per user, in the
//! region of the connection that made them join, and nothing for their
//! further connections. Then bo closes his weur socket (no event: still in
//! apac) and his apac one (one `leave`, after the grace), and cy one of his
//! three (no event). Counts per region are exact in the snapshot over the
//! socket and over HTTP, and the snapshot equals the state every watcher
//! built from events. A socket without the capability is a member but gets no
//! presence frames, and its `presence` frame is refused; events are opt-in
//! (`?presence=events`), which needs the capability.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use support::{http_json, now_s, token, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(30);
const GRACE_MS: u64 = 300;

fn url(server: &Server, room: &str, region: &str, user: &str, caps: &[&str]) -> String {
    let t = token(&json!({"sub": user, "exp": now_s() + 600, "rooms": {"*": caps}, "info": {"name": user}}));
    format!("ws://127.0.0.1:{}/v1/rooms/{room}/ws?region={region}&token={t}", server.port())
}

async fn member(server: &Server, room: &str, region: &str, user: &str) -> Client {
    Client::welcomed(&url(server, room, region, user, &["sub"]), T).await
}

/// The next presence event (`join`/`leave`) the watcher receives.
async fn next_event(c: &mut Client) -> Value {
    c.wait_for(T, |f| f["t"] == "join" || f["t"] == "leave").await
}

/// A full snapshot over the socket: (user → region, counts by region).
async fn snapshot(c: &mut Client, id: u64) -> (BTreeMap<String, String>, Value, u64) {
    c.send_json(&json!({"t": "presence", "id": id})).await;
    let s = c.wait_for(T, |f| f["t"] == "presence" && f["id"] == id).await;
    assert_eq!(s["more"], false, "{s}");
    let members = s["members"].as_array().unwrap();
    let map = members.iter().map(|m| (m["user"].as_str().unwrap().to_owned(), m["region"].as_str().unwrap().to_owned())).collect();
    for m in members {
        assert_eq!(m["info"]["name"], m["user"], "info travels with the member: {m}");
    }
    (map, s["regions"].clone(), s["count"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_leaves_and_counts_are_exact_across_regions() {
    let server = Server::start(ServerOpts::default().var("HERALD_PRESENCE_GRACE_MS", GRACE_MS)).await;
    let room = unique_room("presence");
    let mut watcher = Client::welcomed(&format!("{}&presence=events", url(&server, &room, "weur", "watcher", &["sub", "presence"])), T).await;
    let mut state: BTreeMap<String, String> = BTreeMap::new();
    let apply = |e: &Value, state: &mut BTreeMap<String, String>| {
        let user = e["user"].as_str().unwrap().to_owned();
        match e["t"].as_str() {
            Some("join") => assert!(state.insert(user, e["region"].as_str().unwrap().to_owned()).is_none(), "a second join: {e}"),
            _ => assert!(state.remove(&user).is_some(), "a leave of a non-member: {e}"),
        }
    };
    let e = next_event(&mut watcher).await;
    assert_eq!((e["t"].as_str(), e["user"].as_str(), e["region"].as_str()), (Some("join"), Some("watcher"), Some("weur")));
    assert_eq!(e["info"], json!({"name": "watcher"}));
    apply(&e, &mut state);
    // A watcher in each other region, which starts from the snapshot.
    let mut others = Vec::new();
    for region in ["apac", "enam"] {
        let name = format!("watcher-{region}");
        let mut w = Client::welcomed(&format!("{}&presence=events", url(&server, &room, region, &name, &["sub", "presence"])), T).await;
        w.wait_for(T, |f| f["t"] == "join" && f["user"] == name.as_str()).await;
        watcher.wait_for(T, |f| f["t"] == "join" && f["user"] == name.as_str()).await;
        state.insert(name.clone(), region.to_owned());
        w.send_json(&json!({"t": "presence", "id": 100})).await;
        w.wait_for(T, |f| f["t"] == "presence" && f["id"] == 100).await;
        others.push((name, w));
    }

    let ana = member(&server, &room, "weur", "ana").await;
    let bo_weur = member(&server, &room, "weur", "bo").await;
    let bo_apac = member(&server, &room, "apac", "bo").await;
    let mut cy = vec![
        member(&server, &room, "apac", "cy").await,
        member(&server, &room, "apac", "cy").await,
        member(&server, &room, "enam", "cy").await,
    ];
    for (user, region) in [("ana", "weur"), ("bo", "weur"), ("cy", "apac")] {
        let e = next_event(&mut watcher).await;
        assert_eq!((e["t"].as_str(), e["user"].as_str(), e["region"].as_str()), (Some("join"), Some(user), Some(region)), "{e}");
        apply(&e, &mut state);
    }
    let (snap, regions, count) = snapshot(&mut watcher, 1).await;
    assert_eq!(snap, state);
    assert_eq!((count, regions), (6, json!({"weur": 3, "apac": 2, "enam": 1})));

    // Partial disconnects say nothing; bo's last one is a leave after grace.
    drop(bo_weur);
    cy.pop();
    let mut bo_apac = bo_apac;
    bo_apac.close().await;
    let e = next_event(&mut watcher).await;
    assert_eq!((e["t"].as_str(), e["user"].as_str(), e["region"].as_str()), (Some("leave"), Some("bo"), Some("weur")), "{e}");
    apply(&e, &mut state);
    let (snap, regions, count) = snapshot(&mut watcher, 2).await;
    assert_eq!(snap, state);
    assert_eq!((count, regions), (5, json!({"weur": 2, "apac": 2, "enam": 1})));
    // Every watcher holds the same state: its snapshot, then its events.
    for (name, w) in others.iter_mut() {
        w.wait_for(T, |f| f["t"] == "leave" && f["user"] == "bo").await;
        let h = w.history();
        let at = h.iter().position(|f| f["t"] == "presence" && f["id"] == 100).unwrap();
        let mut view: BTreeMap<String, String> = h[at]["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["user"].as_str().unwrap().to_owned(), m["region"].as_str().unwrap().to_owned()))
            .collect();
        for f in &h[at + 1..] {
            let user = f["user"].as_str().map(str::to_owned);
            match (f["t"].as_str(), user) {
                (Some("join"), Some(u)) => {
                    view.insert(u, f["region"].as_str().unwrap().to_owned());
                }
                (Some("leave"), Some(u)) => {
                    view.remove(&u);
                }
                _ => {}
            }
        }
        assert_eq!(view, state, "{name}'s event-derived state");
    }
    assert!(
        !watcher.drain_seen().iter().any(|f| f["t"] == "join" || f["t"] == "leave"),
        "no other presence event: every one was taken above"
    );

    // Over HTTP, paged.
    let base = format!("{}/v1/rooms/{room}/presence", server.base_url());
    let (status, page) = http_json("GET", &format!("{base}?limit=2"), None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!((page["count"].as_u64(), page["more"].as_bool(), page["cursor"].as_str()), (Some(5), Some(true), Some("cy")));
    let (_, rest) = http_json("GET", &format!("{base}?limit=3&cursor=cy"), None).await;
    let users: Vec<&str> = page["members"].as_array().unwrap().iter().chain(rest["members"].as_array().unwrap()).map(|m| m["user"].as_str().unwrap()).collect();
    assert_eq!(users, vec!["ana", "cy", "watcher", "watcher-apac", "watcher-enam"]);
    assert_eq!(rest["more"], false);
    let (status, bad) = http_json("GET", &format!("{base}?limit=0"), None).await;
    assert_eq!((status, bad["error"].as_str()), (400, Some("bad_frame")));

    // Without the capability: a member, but no presence frames or snapshot.
    let mut plain = member(&server, &room, "weur", "dee").await;
    let e = next_event(&mut watcher).await;
    assert_eq!(e["user"], "dee");
    plain.send_json(&json!({"t": "presence", "id": 9})).await;
    let err = plain.wait_for(T, |f| f["t"] == "err").await;
    assert_eq!((err["code"].as_str(), err["id"].as_u64()), (Some("forbidden"), Some(9)));
    assert!(!plain.history().iter().any(|f| f["t"] == "join" || f["t"] == "leave" || f["t"] == "presence_counts"));
    // With the capability but no `?presence=`: no events either (they are
    // opt-in); asking without the capability, or for something else, is refused.
    let mut quiet = Client::welcomed(&url(&server, &room, "weur", "eve", &["sub", "presence"]), T).await;
    watcher.wait_for(T, |f| f["t"] == "join" && f["user"] == "eve").await;
    let fin = Client::welcomed(&url(&server, &room, "weur", "fin", &["sub"]), T).await;
    watcher.wait_for(T, |f| f["t"] == "join" && f["user"] == "fin").await;
    quiet.send_json(&json!({"t": "presence", "id": 3})).await;
    quiet.wait_for(T, |f| f["t"] == "presence" && f["id"] == 3).await;
    assert!(!quiet.history().iter().any(|f| f["t"] == "join"), "events without asking for them");
    let denied = format!("{}&presence=events", url(&server, &room, "weur", "gus", &["sub"]));
    assert_eq!(Client::connect_status(&denied).await, Some(403));
    let bogus = format!("{}&presence=all", url(&server, &room, "weur", "gus", &["sub", "presence"]));
    assert_eq!(Client::connect_status(&bogus).await, Some(400));
    drop(fin);
    drop(ana);
    drop(cy);
}

//! Resumes that cannot be honoured are refused, and honoured ones are exact,
//! under `HERALD_HISTORY_MAX=5`:
//! - a wrong epoch, a `since` older than retention, or a `since` ahead of
//!   the room get `recovered:false`, the real epoch and seq, and nothing
//!   replayed (the next frame is the next live message);
//! - a `since` within retention gets `recovered:true` and exactly the rest;
//! - both hold on a relay that has watched every message (so its in-memory
//!   window still holds messages retention dropped) and on a relay that
//!   never saw the room;
//! - `since` without `epoch` (or the reverse) is HTTP 400 `bad_frame`;
//! - HTTP history honours retention and pages with `more`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::{http_json, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(20);
/// How long to keep listening for a frame that must not come.
const QUIET: Duration = Duration::from_millis(500);

async fn http_pub(server: &Server, room: &str, data: Value) -> u64 {
    let url = format!("{}/v1/rooms/{room}/messages", server.base_url());
    let (status, v) = http_json("POST", &url, Some(&json!({ "data": data }))).await;
    assert_eq!(status, 200, "{v}");
    v["seq"].as_u64().unwrap()
}

async fn history(server: &Server, room: &str, query: &str) -> Value {
    let url = format!("{}/v1/rooms/{room}/messages?{query}", server.base_url());
    let (status, v) = http_json("GET", &url, None).await;
    assert_eq!(status, 200, "{query}: {v}");
    v
}

fn seqs(msgs: &[Value]) -> Vec<u64> {
    msgs.iter().map(|m| m["seq"].as_u64().unwrap()).collect()
}

/// A resuming client, its welcome, and the messages it was replayed.
struct Resumed {
    label: String,
    client: Client,
    welcome: Value,
}

async fn resume(server: &Server, room: &str, region: &str, since: u64, epoch: &str) -> Resumed {
    let url = format!("{}&since={since}&epoch={epoch}", server.ws_url(room, region));
    let mut client = Client::connect(&url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let welcome = client.next_msg(T).await.unwrap_or_else(|| panic!("{url}: no welcome"));
    assert_eq!(welcome["t"], "welcome", "{url}: first frame {welcome}");
    Resumed { label: format!("{region} since={since} epoch={epoch}"), client, welcome }
}

/// After a live message `live` was published: the frames after the welcome
/// must be exactly the msgs `expect` then `live`.
async fn expect_then_live(r: &mut Resumed, expect: &[u64], live: u64) {
    r.client.wait_for(T, |f| f["t"] == "msg" && f["seq"] == live).await;
    let after: Vec<Value> = r.client.history()[1..].to_vec();
    assert!(after.iter().all(|f| f["t"] == "msg"), "{}: unexpected frames {after:?}", r.label);
    let mut want = expect.to_vec();
    want.push(live);
    assert_eq!(seqs(&after), want, "{}: frames after the welcome", r.label);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_outside_what_the_room_can_vouch_for_are_refused() {
    let server = Server::start(ServerOpts::default().var("HERALD_HISTORY_MAX", 5)).await;

    // ---- Wrong epoch, in a room within retention.
    let room = unique_room("refuse-epoch");
    let mut watcher = Client::connect(&server.ws_url(&room, "weur")).await.unwrap();
    let w = watcher.wait_type(T, "welcome").await;
    let epoch = w["epoch"].as_str().unwrap().to_owned();
    for i in 1..=3 {
        assert_eq!(http_pub(&server, &room, json!(i)).await, i);
    }
    watcher.wait_for(T, |f| f["seq"] == 3).await;
    let mut wrong = Vec::new();
    for region in ["weur", "apac"] {
        let r = resume(&server, &room, region, 1, "not-the-epoch").await;
        assert_eq!(r.welcome["recovered"], false, "{}: {}", r.label, r.welcome);
        assert_eq!(r.welcome["epoch"], epoch.as_str(), "{}: the real epoch", r.label);
        assert_eq!(r.welcome["seq"], 3, "{}: the real seq", r.label);
        wrong.push(r);
    }
    // Nothing is replayed: the first msg is the next live one.
    for r in wrong.iter_mut() {
        assert_eq!(r.client.next_msg(QUIET).await, None, "{}: nothing follows a refused welcome", r.label);
    }
    assert_eq!(http_pub(&server, &room, json!(4)).await, 4);
    for r in wrong.iter_mut() {
        expect_then_live(r, &[], 4).await;
    }
    // A resume in a room without `recovered` when not asked.
    let mut plain = Client::connect(&server.ws_url(&room, "weur")).await.unwrap();
    let pw = plain.wait_type(T, "welcome").await;
    assert_eq!(pw.get("recovered"), None, "no resume asked, no recovered field: {pw}");

    // ---- since/epoch must come together.
    let base = server.ws_url(&room, "weur");
    for query in ["&since=1", &format!("&epoch={epoch}"), &format!("&since=x&epoch={epoch}"), &format!("&since=-1&epoch={epoch}")] {
        let url = format!("{base}{query}");
        assert_eq!(Client::connect_status(&url).await, Some(400), "{url}");
    }
    let url = format!("{}/v1/rooms/{room}/ws?region=weur&since=1", server.base_url());
    let resp = support::http_request(
        "GET",
        &url,
        &[("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")],
        None,
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 400, "{}", resp.body);
    let body: Value = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(body["error"], "bad_frame", "{body}");

    // ---- Retention: 20 published, 5 kept.
    let room = unique_room("refuse-retention");
    // weur watches every message (its relay window holds all 20); apac has
    // never seen the room.
    let mut watcher = Client::connect(&server.ws_url(&room, "weur")).await.unwrap();
    let w = watcher.wait_type(T, "welcome").await;
    let epoch = w["epoch"].as_str().unwrap().to_owned();
    for i in 1..=20 {
        assert_eq!(http_pub(&server, &room, json!(i)).await, i);
    }
    watcher.wait_for(T, |f| f["seq"] == 20).await;

    // HTTP history: only the last 5, paged.
    let h = history(&server, &room, "since=0").await;
    assert_eq!(seqs(h["messages"].as_array().unwrap()), vec![16, 17, 18, 19, 20], "{h}");
    assert_eq!(h["more"], false);
    let h = history(&server, &room, "since=15&limit=2").await;
    assert_eq!((seqs(h["messages"].as_array().unwrap()), h["more"].as_bool()), (vec![16, 17], Some(true)), "{h}");
    let h = history(&server, &room, "since=17&limit=2").await;
    assert_eq!((seqs(h["messages"].as_array().unwrap()), h["more"].as_bool()), (vec![18, 19], Some(true)), "{h}");
    let h = history(&server, &room, "since=18&limit=2").await;
    assert_eq!((seqs(h["messages"].as_array().unwrap()), h["more"].as_bool()), (vec![19, 20], Some(false)), "{h}");
    let h = history(&server, &room, "since=3&limit=2").await;
    assert_eq!((seqs(h["messages"].as_array().unwrap()), h["more"].as_bool()), (vec![16, 17], Some(true)), "{h}");

    // (since, recovered?, replay)
    let cases: [(u64, bool, Vec<u64>); 6] = [
        (2, false, vec![]),
        (14, false, vec![]),
        (15, true, vec![16, 17, 18, 19, 20]),
        (17, true, vec![18, 19, 20]),
        (20, true, vec![]),
        (25, false, vec![]),
    ];
    let mut resumed = Vec::new();
    for region in ["apac", "weur"] {
        for (since, recovered, replay) in &cases {
            let r = resume(&server, &room, region, *since, &epoch).await;
            assert_eq!(r.welcome["epoch"], epoch.as_str(), "{}: {}", r.label, r.welcome);
            assert_eq!(r.welcome["seq"], 20, "{}: {}", r.label, r.welcome);
            resumed.push((r, *recovered, replay.clone()));
        }
    }
    // Check everything before failing on one case, so a report names them all.
    let mut wrong = Vec::new();
    for (r, recovered, replay) in resumed.iter_mut() {
        let mut got = Vec::new();
        while let Some(f) = r.client.next_msg(QUIET).await {
            got.push(f);
        }
        let ok = r.welcome["recovered"] == *recovered && seqs(&got) == *replay;
        if !ok {
            wrong.push(format!(
                "{}: expected recovered:{recovered} replay {replay:?}; got recovered:{} replay {:?}",
                r.label,
                r.welcome["recovered"],
                seqs(&got)
            ));
        }
    }
    assert!(wrong.is_empty(), "wrong resumes:\n{}", wrong.join("\n"));
    assert_eq!(http_pub(&server, &room, json!(21)).await, 21);
    for (r, _, replay) in resumed.iter_mut() {
        expect_then_live(r, replay, 21).await;
    }

    // The refusals were counted (relays still hold these clients).
    let stats_url = format!("{}/v1/rooms/{room}/stats", server.base_url());
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let (_, s) = http_json("GET", &stats_url, None).await;
        let r = &s["resumes"];
        if r["not_recovered"] == 6 && r["from_relay"].as_u64().unwrap_or(0) + r["from_room"].as_u64().unwrap_or(0) == 6 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "resume counters never reached 6/6: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

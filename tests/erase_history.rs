//! Erasure: `DELETE /v1/rooms/{room}/messages` starts a new epoch at the
//! current seq. History is empty (HTTP and `stored`), connected clients in
//! every region get `{"t":"reset","epoch":NEW,"seq":N}`, the seq keeps
//! counting (next publish is N+1, delivered to those same clients), a resume
//! with the old epoch is refused, and a resume in the new epoch is exact, on
//! a relay that saw the reset and on one that never saw the room.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::{http_json, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(20);
const QUIET: Duration = Duration::from_millis(500);

async fn http_pub(server: &Server, room: &str, data: Value) -> Value {
    let url = format!("{}/v1/rooms/{room}/messages", server.base_url());
    let (status, v) = http_json("POST", &url, Some(&json!({ "data": data }))).await;
    assert_eq!(status, 200, "{v}");
    v
}

async fn resume(server: &Server, room: &str, region: &str, since: u64, epoch: &str) -> (Client, Value) {
    let url = format!("{}&since={since}&epoch={epoch}", server.ws_url(room, region));
    let mut c = Client::connect(&url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let w = c.next_msg(T).await.unwrap_or_else(|| panic!("{url}: no welcome"));
    assert_eq!(w["t"], "welcome", "{url}: {w}");
    (c, w)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_history_starts_a_new_epoch_and_keeps_counting() {
    let server = Server::start(ServerOpts::default()).await;
    let room = unique_room("erase");
    let base = server.base_url();

    let mut clients = Vec::new();
    for region in ["weur", "apac"] {
        let c = Client::welcomed(&server.ws_url(&room, region), T).await;
        clients.push(c);
    }
    let mut old_epoch = String::new();
    for i in 1..=5u64 {
        let v = http_pub(&server, &room, json!(i)).await;
        assert_eq!(v["seq"], i);
        old_epoch = v["epoch"].as_str().unwrap().to_owned();
    }
    for c in clients.iter_mut() {
        c.wait_for(T, |f| f["t"] == "msg" && f["seq"] == 5).await;
    }

    let (status, erased) = http_json("DELETE", &format!("{base}/v1/rooms/{room}/messages"), None).await;
    assert_eq!(status, 200, "{erased}");
    let new_epoch = erased["epoch"].as_str().unwrap_or_else(|| panic!("no epoch: {erased}")).to_owned();
    assert_ne!(new_epoch, old_epoch, "erasure starts a new epoch");
    assert_eq!(erased["seq"], 5, "{erased}");

    // Every connected client is told, in every region, and nothing else.
    for c in clients.iter_mut() {
        let reset = c.next_msg(T).await.expect("reset frame");
        assert_eq!(reset, json!({"t":"reset","epoch":new_epoch,"seq":5}));
    }

    // History is gone, and so are the rows.
    let (status, h) = http_json("GET", &format!("{base}/v1/rooms/{room}/messages?since=0"), None).await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h, json!({"epoch":new_epoch,"messages":[],"more":false}));
    let (_, s) = http_json("GET", &format!("{base}/v1/rooms/{room}/stats"), None).await;
    assert_eq!((s["stored"].as_u64(), s["seq"].as_u64(), s["epoch"].as_str()), (Some(0), Some(5), Some(new_epoch.as_str())), "{s}");

    // The seq keeps counting, in the new epoch, to the same clients.
    let v = http_pub(&server, &room, json!(6)).await;
    assert_eq!((v["seq"].as_u64(), v["epoch"].as_str()), (Some(6), Some(new_epoch.as_str())), "{v}");
    for c in clients.iter_mut() {
        let m = c.next_msg(T).await.expect("msg 6");
        assert_eq!((m["t"].as_str(), m["seq"].as_u64(), m["data"].as_u64()), (Some("msg"), Some(6), Some(6)), "{m}");
    }
    let (_, h) = http_json("GET", &format!("{base}/v1/rooms/{room}/messages?since=0"), None).await;
    let hist: Vec<u64> = h["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!((hist, h["epoch"].as_str()), (vec![6], Some(new_epoch.as_str())), "{h}");

    // Resumes. weur and apac have seen the reset; oc never saw the room.
    let mut resumed = Vec::new();
    for region in ["weur", "apac", "oc"] {
        // The old epoch: refused, whatever the seq.
        for since in [0, 5] {
            let (c, w) = resume(&server, &room, region, since, &old_epoch).await;
            assert_eq!(
                (w["recovered"].as_bool(), w["epoch"].as_str(), w["seq"].as_u64()),
                (Some(false), Some(new_epoch.as_str()), Some(6)),
                "{region} since={since} old epoch: {w}"
            );
            resumed.push((format!("{region} old epoch since={since}"), c, vec![]));
        }
        // The new epoch from the erasure point: exactly 6.
        let (c, w) = resume(&server, &room, region, 5, &new_epoch).await;
        assert_eq!(
            (w["recovered"].as_bool(), w["epoch"].as_str(), w["seq"].as_u64()),
            (Some(true), Some(new_epoch.as_str()), Some(6)),
            "{region} since=5 new epoch: {w}"
        );
        resumed.push((format!("{region} new epoch since=5"), c, vec![6]));
        // Up to date in the new epoch: nothing replayed.
        let (c, w) = resume(&server, &room, region, 6, &new_epoch).await;
        assert_eq!(w["recovered"], true, "{region} since=6 new epoch: {w}");
        resumed.push((format!("{region} new epoch since=6"), c, vec![]));
    }
    for (label, c, replay) in resumed.iter_mut() {
        let mut got = Vec::new();
        while let Some(f) = c.next_msg(QUIET).await {
            got.push(f);
        }
        let seqs: Vec<u64> = got.iter().map(|m| m["seq"].as_u64().unwrap_or(0)).collect();
        assert!(got.iter().all(|f| f["t"] == "msg"), "{label}: {got:?}");
        assert_eq!(&seqs, replay, "{label}: replay");
    }
    // And then live 7, next, for everyone.
    assert_eq!(http_pub(&server, &room, json!(7)).await["seq"], 7);
    for (label, c, _) in resumed.iter_mut() {
        let m = c.next_msg(T).await.unwrap_or_else(|| panic!("{label}: no live 7"));
        assert_eq!((m["t"].as_str(), m["seq"].as_u64()), (Some("msg"), Some(7)), "{label}: {m}");
    }
    for c in clients.iter_mut() {
        let m = c.next_msg(T).await.expect("msg 7");
        assert_eq!(m["seq"], 7, "{m}");
    }

    // Erasing again with no new messages: another epoch, same seq.
    let (status, again) = http_json("DELETE", &format!("{base}/v1/rooms/{room}/messages"), None).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["seq"], 7);
    assert_ne!(again["epoch"], new_epoch.as_str());
    for c in clients.iter_mut() {
        let reset = c.next_msg(T).await.expect("second reset");
        assert_eq!(reset, json!({"t":"reset","epoch":again["epoch"],"seq":7}));
    }
}

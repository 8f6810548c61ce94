//! A client resumes across a runtime restart over the same persisted state:
//! relays lose their memory, but the Room's storage still vouches for the
//! epoch, so `?since=3&epoch=E` gets `recovered:true`, exactly the messages
//! published while it was away (4, 5), then live 6, with no duplicate. A
//! second client resuming from further back in another region gets 2..5.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::{http_json, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(20);

async fn http_pub(server: &Server, room: &str, data: Value) -> Value {
    let url = format!("{}/v1/rooms/{room}/messages", server.base_url());
    let (status, v) = http_json("POST", &url, Some(&json!({ "data": data }))).await;
    assert_eq!(status, 200, "{v}");
    v
}

fn msg_seqs(c: &Client) -> Vec<u64> {
    c.history().iter().filter(|f| f["t"] == "msg").map(|f| f["seq"].as_u64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_works_across_a_restart() {
    let mut server = Server::start(ServerOpts::default()).await;
    let room = unique_room("resume-restart");

    let mut a = Client::connect(&server.ws_url(&room, "weur")).await.unwrap();
    let w = a.wait_type(T, "welcome").await;
    let epoch = w["epoch"].as_str().unwrap().to_owned();
    let mut b = Client::welcomed(&server.ws_url(&room, "apac"), T).await;
    for i in 1..=3u64 {
        assert_eq!(http_pub(&server, &room, json!(i)).await["seq"], i);
    }
    a.wait_for(T, |f| f["seq"] == 3).await;
    b.wait_for(T, |f| f["seq"] == 1).await;
    assert_eq!(msg_seqs(&a), vec![1, 2, 3]);
    let b_last = 1; // b stops reading after 1: it resumes from further back.

    server.restart().await;
    assert!(a.wait_closed(T).await.is_some(), "the restart closes the socket");
    assert!(b.wait_closed(T).await.is_some(), "the restart closes the socket");

    // Published while the clients are away, into fresh relays.
    for i in 4..=5u64 {
        let v = http_pub(&server, &room, json!(i)).await;
        assert_eq!((v["seq"].as_u64(), v["epoch"].as_str()), (Some(i), Some(epoch.as_str())), "{v}");
    }

    let url = format!("{}&since=3&epoch={epoch}", server.ws_url(&room, "weur"));
    let mut a = Client::connect(&url).await.unwrap();
    let url = format!("{}&since={b_last}&epoch={epoch}", server.ws_url(&room, "apac"));
    let mut b = Client::connect(&url).await.unwrap();
    for (name, c, replay) in [("a", &mut a, vec![4, 5]), ("b", &mut b, vec![2, 3, 4, 5])] {
        let w = c.next_msg(T).await.expect("welcome");
        assert_eq!(w["t"], "welcome", "{name}: {w}");
        // The welcome's seq is the relay's cursor: 5, or lower while the
        // relay is still catching up from storage (then the rest follows
        // live). Either way the stream after it is exactly the replay.
        assert_eq!((w["recovered"].as_bool(), w["epoch"].as_str()), (Some(true), Some(epoch.as_str())), "{name}: {w}");
        assert!(w["seq"].as_u64().is_some_and(|s| s <= 5 && s >= replay[0] - 1), "{name}: {w}");
        for want in &replay {
            let m = c.next_msg(T).await.unwrap_or_else(|| panic!("{name}: replay of {want} missing"));
            assert_eq!((m["t"].as_str(), m["seq"].as_u64(), m["data"].as_u64()), (Some("msg"), Some(*want), Some(*want)), "{name}: {m}");
        }
    }
    assert_eq!(http_pub(&server, &room, json!(6)).await["seq"], 6);
    for (name, c, want) in [("a", &mut a, vec![4, 5, 6]), ("b", &mut b, vec![2, 3, 4, 5, 6])] {
        let m = c.next_msg(T).await.unwrap_or_else(|| panic!("{name}: live 6 missing"));
        assert_eq!(m["seq"], 6, "{name}: the live message comes next: {m}");
        assert_eq!(msg_seqs(c), want, "{name}: no duplicates");
        assert!(c.history().iter().skip(1).all(|f| f["t"] == "msg"), "{name}: {:?}", c.history());
    }

    // Both resumes were counted as recovered.
    let stats_url = format!("{}/v1/rooms/{room}/stats", server.base_url());
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let (_, s) = http_json("GET", &stats_url, None).await;
        let r = &s["resumes"];
        let recovered = r["from_relay"].as_u64().unwrap_or(0) + r["from_room"].as_u64().unwrap_or(0);
        if recovered >= 2 {
            assert_eq!(r["not_recovered"], 0, "{s}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "resumes not counted: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

//! The runtime restarts over the same persisted state: seq continues where
//! it stopped and the epoch is unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::{http_json, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_and_epoch_survive_a_restart() {
    let mut server = Server::start(ServerOpts::default()).await;
    let room = unique_room("restart");
    let url = |s: &Server| format!("{}/v1/rooms/{room}/messages", s.base_url());

    let mut epoch = None;
    for expect in 1..=3u64 {
        let (status, v) = http_json("POST", &url(&server), Some(&json!({"data": expect}))).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["seq"], expect);
        let e = v["epoch"].as_str().unwrap().to_owned();
        assert_eq!(epoch.get_or_insert(e.clone()), &e, "epoch is stable");
    }
    let epoch = epoch.unwrap();
    let mut c = Client::connect(&server.ws_url(&room, "sam")).await.unwrap();
    let w = c.wait_type(T, "welcome").await;
    assert_eq!((w["seq"].as_u64(), w["epoch"].as_str()), (Some(3), Some(epoch.as_str())));

    server.restart().await;
    let code = c.wait_closed(T).await;
    assert!(code.is_some(), "the old socket is closed by the restart");

    let started = Instant::now();
    let mut c = Client::connect(&server.ws_url(&room, "sam")).await.unwrap();
    let w = c.wait_type(T, "welcome").await;
    eprintln!(
        "restart: runtime start to healthy {:?}, then first welcome in {:?}",
        server.startup_time(),
        started.elapsed()
    );
    assert_eq!(w["seq"], 3, "seq continues after restart: {w}");
    assert_eq!(w["epoch"], epoch.as_str(), "epoch unchanged after restart");

    let (status, v) = http_json("POST", &url(&server), Some(&json!({"data": 4}))).await;
    assert_eq!(status, 200);
    assert_eq!((v["seq"].as_u64(), v["epoch"].as_str()), (Some(4), Some(epoch.as_str())));
    let m = c.wait_type(T, "msg").await;
    assert_eq!((m["seq"].as_u64(), m["data"].as_u64()), (Some(4), Some(4)));
}

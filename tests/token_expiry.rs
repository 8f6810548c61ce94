//! A connection whose token expires is closed with 4001 (refresh the token
//! and reconnect): a silent one by the relay's alarm, a talking one on its
//! next frame.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::json;
use std::time::Duration;
use support::{now_s, token, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_connections_close_with_4001() {
    let server = Server::start(ServerOpts::default().var("HERALD_CLOCK_SKEW_S", 0)).await;
    let room = unique_room("exp");
    let url = |tok: &str| format!("ws://127.0.0.1:{}/v1/rooms/{room}/ws?region=oc&token={tok}", server.port());
    let short = token(&json!({"sub":"brief","exp":now_s()+3,"rooms":{&room:["sub","pub"]}}));
    let long = token(&json!({"sub":"steady","exp":now_s()+600,"rooms":{&room:["sub","pub"]}}));

    let mut silent = Client::welcomed(&url(&short), T).await;
    let mut talker = Client::welcomed(&url(&short), T).await;
    let mut steady = Client::welcomed(&url(&long), T).await;

    // The silent one says nothing: the relay's alarm must close it.
    assert_eq!(silent.wait_closed(Duration::from_secs(15)).await, Some(4001));

    // The talker is closed on its next frame, which is not published.
    talker.send_json(&json!({"t":"pub","id":1,"data":"too late"})).await;
    assert_eq!(talker.wait_closed(T).await, Some(4001));
    assert!(talker.history().iter().all(|f| f["t"] != "ack"), "{:?}", talker.history());

    // The steady connection is untouched and saw nothing from the expired ones.
    steady.send_json(&json!({"t":"pub","id":2,"data":"still here"})).await;
    let m = steady.wait_type(T, "msg").await;
    assert_eq!((m["seq"].as_u64(), m["data"].as_str()), (Some(1), Some("still here")));
    assert!(steady.close_code().is_none());
}

//! A client over its publish rate gets `rate_limited` for the excess; the
//! others in the room see every accepted message once, promptly, and an
//! honest publisher is not slowed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::{unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(10);
const BURST: u64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_client_is_limited_alone() {
    let server = Server::start(ServerOpts::default().var("HERALD_PUB_RATE", 5).var("HERALD_PUB_BURST", BURST)).await;
    let room = unique_room("rate");
    let mut flooder = Client::welcomed(&server.ws_url(&room, "weur"), T).await;
    let mut honest = Client::welcomed(&server.ws_url(&room, "apac"), T).await;
    let mut watcher = Client::welcomed(&server.ws_url(&room, "wnam"), T).await;

    let started = Instant::now();
    for i in 0..40 {
        flooder.send_json(&json!({"t":"pub","id":i,"data":{"who":"flood","i":i}})).await;
    }
    honest.send_json(&json!({"t":"pub","id":"h","data":{"who":"honest"}})).await;

    // Every flood frame is answered: an ack or a rate_limited error.
    let mut acked = BTreeSet::new();
    let mut limited = 0;
    while acked.len() as u64 + limited < 40 {
        let f = flooder.next_msg(T).await.expect("an answer for every publish");
        match f["t"].as_str() {
            Some("ack") => {
                acked.insert(f["seq"].as_u64().unwrap());
            }
            Some("err") => {
                assert_eq!(f["code"], "rate_limited", "{f}");
                limited += 1;
            }
            _ => {}
        }
    }
    assert!(limited >= 40 - BURST - 5, "only about the burst gets through: {limited} limited");
    assert!(acked.len() as u64 >= BURST, "the burst is allowed: {} acked", acked.len());
    assert!(flooder.close_code().is_none(), "rate limiting does not close the socket");

    // The watcher sees exactly the accepted messages plus the honest one, once each.
    let total = acked.len() + 1;
    let mut seen: Vec<Value> = Vec::new();
    while seen.len() < total {
        let m = watcher.wait_type(T, "msg").await;
        seen.push(m);
    }
    eprintln!("watcher had every accepted message {:?} after the flood began", started.elapsed());
    let seqs: Vec<u64> = seen.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>(), "contiguous, no duplicates");
    assert_eq!(seen.iter().filter(|m| m["data"]["who"] == "honest").count(), 1);
    let h = honest.wait_type(T, "ack").await;
    assert!(h["seq"].as_u64().is_some(), "the honest publisher was not limited: {h}");
}

//! Three regions, several clients each: messages published from a socket in
//! every region and over HTTP reach every client exactly once, and every
//! client sees the same seq order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::{http_json, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(20);
const REGIONS: [&str; 3] = ["weur", "apac", "wnam"];
const CLIENTS_PER_REGION: usize = 4;
const ROUNDS: usize = 6;

/// Reads `count` stored messages from `c`, ignoring acks.
async fn read_msgs(c: &mut Client, count: usize) -> Vec<Value> {
    let mut msgs = Vec::new();
    while msgs.len() < count {
        let f = c
            .next_msg(T)
            .await
            .unwrap_or_else(|| panic!("only {} of {count} messages arrived: {msgs:?}", msgs.len()));
        match f["t"].as_str() {
            Some("msg") => msgs.push(f),
            Some("ack") => {}
            _ => panic!("unexpected frame {f}"),
        }
    }
    msgs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_gets_every_message_once_in_the_same_order() {
    let server = Server::start(ServerOpts::default()).await;
    let room = unique_room("fanout");

    let mut clients = Vec::new();
    for region in REGIONS {
        for _ in 0..CLIENTS_PER_REGION {
            let mut c = Client::connect(&server.ws_url(&room, region)).await.unwrap();
            let w = c.wait_type(T, "welcome").await;
            assert_eq!(w["region"], region);
            assert_eq!(w["room"], room.as_str());
            assert_eq!(w["seq"], 0, "a new room starts at seq 0");
            assert!(w["epoch"].as_str().is_some_and(|e| !e.is_empty()));
            clients.push(c);
        }
    }
    let conns: std::collections::HashSet<String> = clients
        .iter()
        .map(|c| c.history()[0]["conn"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(conns.len(), clients.len(), "connection ids are unique");

    // Each round: the first client of every region publishes, and one HTTP
    // publish, all without waiting for each other.
    let url = format!("{}/v1/rooms/{room}/messages", server.base_url());
    let mut id = 0;
    for round in 0..ROUNDS {
        for (r, region) in REGIONS.iter().enumerate() {
            id += 1;
            let frame = json!({"t":"pub","id":id,"data":{"src":region,"round":round}});
            clients[r * CLIENTS_PER_REGION].send_json(&frame).await;
        }
        let (status, body) = http_json("POST", &url, Some(&json!({"data":{"src":"http","round":round}}))).await;
        assert_eq!(status, 200, "{body}");
    }
    let total = ROUNDS * (REGIONS.len() + 1);

    let mut reference: Option<Vec<(u64, Value)>> = None;
    for c in clients.iter_mut() {
        let msgs = read_msgs(c, total).await;
        let seqs: Vec<u64> = msgs.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>(), "every seq once, in order");
        let order: Vec<(u64, Value)> = msgs.iter().map(|m| (m["seq"].as_u64().unwrap(), m["data"].clone())).collect();
        for m in &msgs {
            assert!(m["ts"].as_u64().unwrap() > 1_600_000_000_000);
            assert_eq!(m["from"], "tester", "from is the publisher's token sub");
        }
        match &reference {
            None => reference = Some(order),
            Some(r) => assert_eq!(&order, r, "all clients see the same order"),
        }
    }
    // Every source's messages are all there, once.
    let order = reference.unwrap();
    for src in REGIONS.iter().chain(["http"].iter()) {
        let rounds: Vec<u64> = order
            .iter()
            .filter(|(_, d)| d["src"] == *src)
            .map(|(_, d)| d["round"].as_u64().unwrap())
            .collect();
        assert_eq!(rounds, (0..ROUNDS as u64).collect::<Vec<_>>(), "{src} in publish order");
    }

    // Publishers got one ack per publish, each naming a seq that exists.
    for (r, _) in REGIONS.iter().enumerate() {
        let acks: Vec<&Value> = clients[r * CLIENTS_PER_REGION]
            .history()
            .iter()
            .filter(|f| f["t"] == "ack")
            .collect();
        assert_eq!(acks.len(), ROUNDS);
        assert!(acks.iter().all(|a| (1..=total as u64).contains(&a["seq"].as_u64().unwrap())));
    }

    // Nothing more is pending: the next frame anyone receives is the next seq.
    let (status, _) = http_json("POST", &url, Some(&json!({"data":"last"}))).await;
    assert_eq!(status, 200);
    for c in clients.iter_mut() {
        let next = c.wait_type(T, "msg").await;
        assert_eq!(next["seq"], total as u64 + 1, "no duplicate or stray message");
        assert!(c.drain_seen().iter().all(|f| f["t"] == "ack"));
    }
}

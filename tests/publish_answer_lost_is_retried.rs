//! When the answer to a relay's publish call is lost, the relay cannot know
//! whether the Room stored the batch. Giving up would lose acks (the client
//! would re-publish and duplicate); re-sending blindly would store the
//! messages twice. The relay retries the batch under the same internal id,
//! and the Room answers a retry with the seqs it already stored. Here the
//! Room stores every 3rd batch and then fails its answer: the publisher must
//! still get exactly one ack per `pub`, naming its own message's seq, the
//! room must hold each message once, and every subscriber sees each once.
//!
//! The first half is published one frame at a time (each its own batch, so
//! the fault fires on every third publish for certain); the second half
//! back to back, so a failure can also hit a batch of several publishes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::{room_stats_until, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(20);
const MESSAGES: u64 = 30;
/// Published one at a time, each waiting for its ack.
const ONE_BY_ONE: u64 = 15;

/// Records `f` if it is an ack (id -> seq, refusing a second ack for an
/// id); panics on an `err`.
fn note_ack(f: &Value, acks: &mut BTreeMap<u64, u64>) {
    match f["t"].as_str() {
        Some("ack") => {
            let id = f["id"].as_u64().unwrap_or_else(|| panic!("ack with an unknown id: {f}"));
            let seq = f["seq"].as_u64().unwrap_or_else(|| panic!("ack without seq: {f}"));
            assert!(acks.insert(id, seq).is_none(), "second ack for id {id}: {f}");
        }
        Some("err") => panic!("a publish was refused: {f}"),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_publish_answer_is_retried_without_storing_twice() {
    let server = Server::start(
        ServerOpts::default()
            .var("HERALD_FAULT_FAIL_PUBLISH_ANSWER_EVERY", 3)
            // Not about the rate limiter: every publish must be accepted.
            .var("HERALD_PUB_RATE", 1000)
            .var("HERALD_PUB_BURST", 1000),
    )
    .await;
    let room = unique_room("lostanswer");
    let mut publisher = Client::welcomed(&server.ws_url(&room, "weur"), T).await;
    let near = Client::welcomed(&server.ws_url(&room, "weur"), T).await;
    let far = Client::welcomed(&server.ws_url(&room, "apac"), T).await;

    let mut acks: BTreeMap<u64, u64> = BTreeMap::new(); // pub id -> seq
    let pub_frame = |i: u64| json!({"t": "pub", "id": i, "data": {"i": i}});
    for i in 1..=ONE_BY_ONE {
        publisher.send_json(&pub_frame(i)).await;
        while !acks.contains_key(&i) {
            let f = publisher
                .next_msg(T)
                .await
                .unwrap_or_else(|| panic!("no ack for publish {i} within {T:?}; acks so far {acks:?}"));
            note_ack(&f, &mut acks);
        }
    }
    for i in ONE_BY_ONE + 1..=MESSAGES {
        publisher.send_json(&pub_frame(i)).await;
    }
    while (acks.len() as u64) < MESSAGES {
        let f = publisher
            .next_msg(T)
            .await
            .unwrap_or_else(|| panic!("{} of {MESSAGES} publishes acked: {acks:?}", acks.len()));
        note_ack(&f, &mut acks);
    }
    assert_eq!(acks.keys().copied().collect::<Vec<_>>(), (1..=MESSAGES).collect::<Vec<_>>());
    let mut seqs: Vec<u64> = acks.values().copied().collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=MESSAGES).collect::<Vec<_>>(), "acks name every seq once: {acks:?}");

    // Every answer was eventually given, so every retry has been served:
    // had one stored its batch again, seq would be past MESSAGES now.
    let stats = room_stats_until(&server, &room, T, |s| {
        s["faults"]["failed_publish_answers"].as_u64().is_some_and(|n| n >= 1)
    })
    .await;
    assert_eq!(stats["seq"], MESSAGES, "each message stored once: {stats}");
    eprintln!("failed publish answers {}", stats["faults"]["failed_publish_answers"]);

    // Every subscriber, the publisher included, sees each message once, in
    // order, and each ack named the seq its own message got.
    let deadline = Instant::now() + T;
    let mut subscribers = [("publisher", publisher), ("weur", near), ("apac", far)];
    for (who, c) in subscribers.iter_mut() {
        assert!(c.read_through_seq(MESSAGES, deadline).await, "{who}: not all messages arrived: {:?}", c.msg_seqs());
        assert_eq!(c.msg_seqs(), (1..=MESSAGES).collect::<Vec<_>>(), "{who}: each message once, in order");
        for m in c.history().iter().filter(|f| f["t"] == "msg") {
            let i = m["data"]["i"].as_u64().unwrap();
            assert_eq!(Some(m["seq"].as_u64().unwrap()), acks.get(&i).copied(), "{who}: ack for {i} vs {m}");
        }
        assert!(c.history().iter().all(|f| f["t"] != "err" && f["t"] != "reset"), "{who}: {:?}", c.history());
    }

    // Nothing late: one more publish (itself possibly a failed answer) gets
    // one ack, and it is the next thing everyone stores; no retry answered
    // twice and no message arrived twice meanwhile.
    let (_, publisher) = &mut subscribers[0];
    publisher.send_json(&json!({"t": "pub", "id": "last", "data": "last"})).await;
    let last = publisher.wait_for(T, |f| f["t"] == "ack" && f["id"] == "last").await;
    assert_eq!(last["seq"], MESSAGES + 1, "{last}");
    let deadline = Instant::now() + T;
    for (who, c) in subscribers.iter_mut() {
        assert!(c.read_through_seq(MESSAGES + 1, deadline).await, "{who}: the last message did not arrive");
        assert_eq!(c.msg_seqs(), (1..=MESSAGES + 1).collect::<Vec<_>>(), "{who}: nothing repeated late");
        let ack_count = c.history().iter().filter(|f| f["t"] == "ack").count() as u64;
        let expected = if *who == "publisher" { MESSAGES + 1 } else { 0 };
        assert_eq!(ack_count, expected, "{who}: exactly one ack per publish");
    }
}

//! Webhook delivery when the receiver misbehaves: failed requests are sent
//! again with the same event ids until accepted, each event is accepted
//! once, in order per room; undelivered events outlive a restart (the
//! queue is in the Room's storage, the retry in its alarm); and a receiver
//! that never answers does not slow message fan-out.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
#[path = "support/webhook_receiver.rs"]
mod webhook_receiver;

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::{http_pub, now_s, room_stats, token, unique_room, Client, Server, ServerOpts};
use webhook_receiver::{id_number, labels, Receiver, Reply, WEBHOOK_SECRET};

const T: Duration = Duration::from_secs(30);

fn url(server: &Server, room: &str, region: &str, user: &str) -> String {
    let t = token(&json!({"sub": user, "exp": now_s() + 600, "rooms": {"*": ["sub"]}}));
    format!("ws://127.0.0.1:{}/v1/rooms/{room}/ws?region={region}&token={t}", server.port())
}

fn opts(receiver: &Receiver) -> ServerOpts {
    ServerOpts::default()
        .var("HERALD_WEBHOOK_URL", receiver.url())
        .var("HERALD_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .var("HERALD_PRESENCE_GRACE_MS", 200)
        .var("HERALD_WEBHOOK_VACATE_MS", 500)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_fails_twice_gets_every_event_once_in_order() {
    let mut receiver = Receiver::start().await;
    receiver.script(&[Reply::Status(500), Reply::Status(500)]);
    let server = Server::start(opts(&receiver)).await;
    let rooms = [unique_room("retry-a"), unique_room("retry-b")];

    let mut clients = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        clients.push(Client::welcomed(&url(&server, room, "weur", &format!("u{i}")), T).await);
    }
    for c in &mut clients {
        c.close().await;
    }
    let vacated = |e: &[Value]| rooms.iter().all(|r| labels(e, r).last().map(String::as_str) == Some("room_vacated"));
    let accepted = receiver.accepted_until(T, vacated).await;

    // No event accepted twice; each room's events in the order they were made.
    let ids: Vec<&str> = accepted.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "an event was delivered twice after a 2xx: {ids:?}");
    for (i, room) in rooms.iter().enumerate() {
        let u = format!("u{i}");
        assert_eq!(
            labels(&accepted, room),
            ["room_occupied".to_owned(), format!("member_added:{u}"), format!("member_removed:{u}"), "room_vacated".to_owned()],
            "{room}"
        );
        let numbers: Vec<u64> = accepted.iter().filter(|e| e["room"] == room.as_str()).map(id_number).collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{room}: {numbers:?}");
    }
    // The failed attempts carried events that were then accepted under the
    // same ids: retries, not new events.
    let failed: Vec<_> = receiver.log.iter().filter(|r| !r.accepted()).collect();
    assert_eq!(failed.len(), 2, "the two scripted failures");
    for r in failed {
        for e in r.events() {
            assert!(unique.contains(e["id"].as_str().unwrap()), "failed event {e} was never delivered");
        }
    }
    let mut failures = 0;
    for room in &rooms {
        let w = room_stats(&server, room).await["webhooks"].clone();
        assert_eq!((w["queued"].as_u64(), w["dropped"].as_u64(), w["sent"].as_u64()), (Some(0), Some(0), Some(4)), "{room}: {w}");
        failures += w["failed_attempts"].as_u64().unwrap();
    }
    assert_eq!(failures, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_does_not_wait_for_a_receiver_that_hangs() {
    let mut receiver = Receiver::start().await;
    receiver.set_default(Reply::Hang);
    let server = Server::start(opts(&receiver)).await;
    let room = unique_room("hang");

    let mut sub = Client::welcomed(&url(&server, &room, "weur", "ana"), T).await;
    let first = receiver.next(T).await.expect("the Room called the receiver");
    assert_eq!(first.reply, Reply::Hang);
    assert_eq!(receiver.hung_open(), 1);

    // While the Room's webhook request hangs (it gives up after 10 s),
    // publishes are answered and fanned out as usual.
    let started = Instant::now();
    for i in 1..=10u64 {
        let answer = http_pub(&server, &room, json!({"data": {"n": i}})).await;
        assert_eq!(answer["seq"], i);
        sub.wait_for(Duration::from_secs(5), |f| f["t"] == "msg" && f["seq"] == i).await;
    }
    assert_eq!(
        receiver.hung_open(),
        1,
        "every message arrived while the webhook request was still unanswered (taken {:?})",
        started.elapsed()
    );
    let during = room_stats(&server, &room).await["webhooks"].clone();
    assert_eq!(during["in_flight"], 2, "occupied and added, out: {during}");

    // Once the receiver answers, the Room's retry delivers the same events.
    receiver.set_default(Reply::Status(200));
    let events = receiver.accepted_until(T, |e| labels(e, &room).len() >= 2).await;
    assert_eq!(labels(&events, &room), ["room_occupied", "member_added:ana"]);
    let retried: Vec<Value> = first.events();
    assert_eq!(retried.iter().map(|e| &e["id"]).collect::<Vec<_>>(), events.iter().map(|e| &e["id"]).collect::<Vec<_>>(), "same ids");
    let w = room_stats(&server, &room).await["webhooks"].clone();
    assert!(w["failed_attempts"].as_u64() >= Some(1), "{w}");
    assert!(w["last_error"].is_null() && w["last_status"] == 200, "{w}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_events_survive_a_restart_under_the_same_ids() {
    let mut receiver = Receiver::start().await;
    receiver.set_default(Reply::Status(503));
    let mut server = Server::start(opts(&receiver)).await;
    let room = unique_room("restart");

    let _ana = Client::welcomed(&url(&server, &room, "weur", "ana"), T).await;
    let refused = loop {
        let r = receiver.next(T).await.expect("the Room tries the receiver");
        if labels(&r.events(), &room).len() == 2 {
            break r;
        }
    };
    let before = room_stats(&server, &room).await["webhooks"].clone();
    assert!(before["failed_attempts"].as_u64() >= Some(1) && before["queued"] == 2, "{before}");

    // The queue is in the Room's storage and its retry in the Room's
    // alarm: both outlive the process.
    server.restart().await;
    receiver.set_default(Reply::Status(200));
    // Ana's socket closed with the process: her leave and the vacancy
    // follow (before or after the restart), numbered on from storage.
    let events = receiver.accepted_until(T, |e| labels(e, &room).len() >= 4).await;
    let ids = |evs: &[Value]| evs.iter().map(|e| e["id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&events[..2]), ids(&refused.events()), "the same events, not new ones");
    assert_eq!(labels(&events, &room), ["room_occupied", "member_added:ana", "member_removed:ana", "room_vacated"]);
    let numbers: Vec<u64> = events.iter().map(id_number).collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
}

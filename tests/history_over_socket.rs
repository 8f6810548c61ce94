//! History over the socket: a `history` frame is answered with
//! `{"t":"history","id":I,"epoch":E,"messages":[...],"more":bool}` holding
//! the same `msg` objects live clients received, in seq order, paged by
//! `since`/`limit`; malformed history frames get `err bad_frame` carrying the
//! request's id and leave the socket usable; ephemeral messages never appear
//! in history (socket or HTTP).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::{http_json, http_pub, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(20);


/// Sends `frame` and returns the `history` or `err` answer carrying `id`.
async fn ask(c: &mut Client, frame: Value) -> Value {
    let id = frame["id"].clone();
    c.send_json(&frame).await;
    let answer = c
        .wait_for(T, |f| (f["t"] == "history" || f["t"] == "err") && f["id"] == id)
        .await;
    let skipped = c.drain_seen();
    assert!(skipped.is_empty(), "nothing else arrives while idle: {skipped:?}");
    answer
}

fn seqs(answer: &Value) -> Vec<u64> {
    answer["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages array: {answer}"))
        .iter()
        .map(|m| m["seq"].as_u64().unwrap_or_else(|| panic!("message without seq: {m}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_frames_page_through_stored_messages() {
    let server = Server::start(ServerOpts::default()).await;
    let room = unique_room("hist");

    let mut c = Client::connect(&server.ws_url(&room, "weur")).await.unwrap();
    let w = c.wait_type(T, "welcome").await;
    let epoch = w["epoch"].as_str().unwrap().to_owned();

    // 5 stored messages with ephemeral ones in between (socket and HTTP).
    let mut publisher = Client::welcomed(&server.ws_url(&room, "apac"), T).await;
    for i in 1..=5u64 {
        let body = if i % 2 == 0 { json!({"data":{"n":i},"mid":format!("m{i}")}) } else { json!({"data":{"n":i}}) };
        let r = http_pub(&server, &room, body).await;
        assert_eq!(r["seq"], i);
        let eph = http_pub(&server, &room, json!({"data":{"eph":i},"ephemeral":true})).await;
        assert_eq!(eph["seq"], Value::Null, "{eph}");
        publisher
            .send_json(&json!({"t":"pub","id":i,"data":{"sock_eph":i},"ephemeral":true}))
            .await;
        let ack = publisher.wait_type(T, "ack").await;
        assert_eq!((ack["id"].as_u64(), ack.get("seq")), (Some(i), None), "ephemeral ack: {ack}");
    }
    // Wait for the live copies: 5 stored, 10 ephemeral.
    let mut live = Vec::new();
    let mut ephemeral = 0;
    while live.len() < 5 || ephemeral < 10 {
        let f = c
            .next_msg(T)
            .await
            .unwrap_or_else(|| panic!("live messages missing; got {live:?} and {ephemeral} ephemeral"));
        assert_eq!(f["t"], "msg", "{f}");
        if f["eph"] == true {
            ephemeral += 1;
        } else {
            live.push(f);
        }
    }
    assert_eq!(live.iter().map(|m| m["seq"].as_u64().unwrap()).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);

    // First page.
    let a = ask(&mut c, json!({"t":"history","id":"h1","since":0,"limit":3})).await;
    assert_eq!(a["t"], "history");
    assert_eq!(a["id"], "h1");
    assert_eq!(a["epoch"], epoch.as_str());
    assert_eq!(a["more"], true, "{a}");
    assert_eq!(seqs(&a), vec![1, 2, 3]);
    assert_eq!(a["messages"].as_array().unwrap().as_slice(), &live[..3], "history holds the live msg objects");

    // Second page: the rest, no more.
    let b = ask(&mut c, json!({"t":"history","id":"h2","since":3,"limit":3})).await;
    assert_eq!((b["id"].as_str(), b["more"].as_bool()), (Some("h2"), Some(false)), "{b}");
    assert_eq!(seqs(&b), vec![4, 5]);
    assert_eq!(b["messages"].as_array().unwrap().as_slice(), &live[3..]);

    // A page that ends exactly at the last message: more is false.
    let exact = ask(&mut c, json!({"t":"history","id":"h3","since":2,"limit":3})).await;
    assert_eq!((seqs(&exact), exact["more"].as_bool()), (vec![3, 4, 5], Some(false)), "{exact}");

    // Defaults (since 0, limit 100), a numeric id, and a limit over the cap.
    let all = ask(&mut c, json!({"t":"history","id":7})).await;
    assert_eq!((all["id"].as_u64(), seqs(&all), all["more"].as_bool()), (Some(7), vec![1, 2, 3, 4, 5], Some(false)), "{all}");
    let capped = ask(&mut c, json!({"t":"history","id":8,"since":0,"limit":5000})).await;
    assert_eq!(seqs(&capped), vec![1, 2, 3, 4, 5], "{capped}");

    // Nothing after the last seq, or beyond it.
    let none = ask(&mut c, json!({"t":"history","id":"h4","since":5,"limit":10})).await;
    assert_eq!((seqs(&none), none["more"].as_bool()), (vec![], Some(false)), "{none}");
    let future = ask(&mut c, json!({"t":"history","id":"h5","since":99})).await;
    assert_eq!(seqs(&future), Vec::<u64>::new(), "{future}");

    // Bad history frames: err bad_frame with the id; the socket stays usable.
    for (id, frame) in [
        ("b1", json!({"t":"history","id":"b1","since":-1})),
        ("b2", json!({"t":"history","id":"b2","limit":0})),
        ("b3", json!({"t":"history","id":"b3","since":"0"})),
        ("b4", json!({"t":"history","id":"b4","since":1.5})),
        ("b5", json!({"t":"history","id":"b5","limit":-3})),
    ] {
        let e = ask(&mut c, frame.clone()).await;
        assert_eq!(e["t"], "err", "{frame} → {e}");
        assert_eq!(e["code"], "bad_frame", "{frame} → {e}");
        assert_eq!(e["id"], id, "{frame} → {e}");
    }
    let after_bad = ask(&mut c, json!({"t":"history","id":"h6","since":4})).await;
    assert_eq!(seqs(&after_bad), vec![5], "socket still answers after bad frames: {after_bad}");

    // HTTP history agrees, and has no ephemeral messages either.
    let (status, h) = http_json("GET", &format!("{}/v1/rooms/{room}/messages", server.base_url()), None).await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["epoch"], epoch.as_str());
    assert_eq!(h.get("t"), None, "HTTP history is not a frame: {h}");
    assert_eq!(h["messages"].as_array().unwrap().as_slice(), live.as_slice());
    for answer in [&a, &b, &all, &h] {
        for m in answer["messages"].as_array().unwrap() {
            assert!(m.get("eph").is_none(), "ephemeral message in history: {m}");
        }
    }

    // A live message still arrives next, after all that.
    let r = http_pub(&server, &room, json!({"data":"six"})).await;
    assert_eq!(r["seq"], 6);
    let next = c.next_msg(T).await.unwrap();
    assert_eq!((next["t"].as_str(), next["seq"].as_u64()), (Some("msg"), Some(6)), "{next}");
}

//! Resume after a disconnect: clients read a couple of messages, disconnect,
//! and 200 messages are published meanwhile from sockets in three regions and
//! over HTTP, interleaved. Each client reconnects with `?since=L&epoch=E`, to
//! another region (apac), to the same one (weur), to one that never saw the
//! room (oc, which must read the Room's storage) and to the watcher's (enam,
//! whose relay window holds everything): the welcome says
//! `recovered:true`, exactly L+1..L+200 follow in seq order and identical to
//! what a watcher received live, then the next live message, and nothing
//! twice. The resumes show up in the room's stats.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::{http_json, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(30);
/// Publisher sockets per region, and messages each sends.
const SOCKETS_PER_REGION: usize = 2;
const PER_SOCKET: usize = 28;
const PUB_REGIONS: [&str; 3] = ["weur", "apac", "wnam"];
const TOTAL: usize = 200;
const HTTP_PUBS: usize = TOTAL - PUB_REGIONS.len() * SOCKETS_PER_REGION * PER_SOCKET;
/// 20 publishes a second per socket at most.
const SOCKET_PACE: Duration = Duration::from_millis(50);
const HTTP_PACE: Duration = Duration::from_millis(40);
/// Where the disconnected clients resume. The watcher is on enam.
const RESUME_REGIONS: [&str; 4] = ["apac", "weur", "oc", "enam"];

async fn http_pub(base: &str, room: &str, body: Value) -> Value {
    let url = format!("{base}/v1/rooms/{room}/messages");
    let (status, v) = http_json("POST", &url, Some(&body)).await;
    assert_eq!(status, 200, "{v}");
    v
}

/// Reads `count` msg frames (skipping nothing else: only msgs may arrive).
async fn read_msgs(c: &mut Client, count: usize, who: &str) -> Vec<Value> {
    let mut msgs = Vec::with_capacity(count);
    while msgs.len() < count {
        let f = c
            .next_msg(T)
            .await
            .unwrap_or_else(|| panic!("{who}: only {} of {count} messages arrived", msgs.len()));
        assert_eq!(f["t"], "msg", "{who}: unexpected frame {f}");
        msgs.push(f);
    }
    msgs
}

fn seqs(msgs: &[Value]) -> Vec<u64> {
    msgs.iter().map(|m| m["seq"].as_u64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_clients_get_exactly_what_they_missed() {
    let server = Server::start(ServerOpts::default()).await;
    let room = unique_room("resume");
    let base = server.base_url();

    // A watcher that stays connected throughout, in a region of its own.
    let mut watcher = Client::connect(&server.ws_url(&room, "enam")).await.unwrap();
    let w = watcher.wait_type(T, "welcome").await;
    let epoch = w["epoch"].as_str().unwrap().to_owned();
    assert_eq!(w["seq"], 0);

    // Four clients on weur read two messages, then disconnect.
    let mut leavers = Vec::new();
    for _ in 0..RESUME_REGIONS.len() {
        let mut c = Client::connect(&server.ws_url(&room, "weur")).await.unwrap();
        let w = c.wait_type(T, "welcome").await;
        assert_eq!((w["seq"].as_u64(), w["epoch"].as_str()), (Some(0), Some(epoch.as_str())));
        leavers.push(c);
    }
    for i in 1..=2 {
        assert_eq!(http_pub(&base, &room, json!({"data":{"pre":i}})).await["seq"], i);
    }
    let mut last_seen = 0;
    for c in leavers.iter_mut() {
        let msgs = read_msgs(c, 2, "leaver").await;
        assert_eq!(seqs(&msgs), vec![1, 2]);
        last_seen = 2;
        c.close().await;
    }
    drop(leavers);

    // 200 messages: 6 publisher sockets over 3 regions and HTTP, concurrently.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for region in PUB_REGIONS {
        for s in 0..SOCKETS_PER_REGION {
            let url = server.ws_url(&room, region);
            tasks.push(tokio::spawn(async move {
                let mut c = Client::welcomed(&url, T).await;
                let mut tick = tokio::time::interval(SOCKET_PACE);
                for n in 0..PER_SOCKET {
                    tick.tick().await;
                    let id = format!("{region}-{s}-{n}");
                    let mut frame = json!({"t":"pub","id":id,"data":{"src":region,"sock":s,"n":n}});
                    if n % 3 == 0 {
                        frame["mid"] = json!(format!("mid-{id}"));
                    }
                    c.send_json(&frame).await;
                }
                // One ack per publish, in order, each with a seq.
                let mut acked = 0;
                while acked < PER_SOCKET {
                    let f = c.wait_for(T, |f| f["t"] == "ack" || f["t"] == "err").await;
                    assert_eq!(f["t"], "ack", "{region}-{s}: {f}");
                    assert_eq!(f["id"], format!("{region}-{s}-{acked}"), "{f}");
                    assert!(f["seq"].as_u64().is_some_and(|q| q > 2), "{f}");
                    acked += 1;
                }
                Some(c) // kept open: its relay keeps a live window
            }));
        }
    }
    {
        let base = base.clone();
        let room = room.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(HTTP_PACE);
            for n in 0..HTTP_PUBS {
                tick.tick().await;
                let body = json!({"data":{"src":"http","n":n},"mid":format!("http-{n}")});
                let v = http_pub(&base, &room, body).await;
                assert!(v["seq"].as_u64().is_some_and(|q| q > 2), "{v}");
            }
            None
        }));
    }
    let mut publishers = Vec::new();
    for t in tasks {
        publishers.extend(t.await.unwrap());
    }
    let first = last_seen + 1;
    let last = last_seen + TOTAL as u64;
    // The watcher has all of them: they are all stored.
    let live = read_msgs(&mut watcher, TOTAL + 2, "watcher").await;
    assert_eq!(seqs(&live), (1..=last).collect::<Vec<_>>(), "watcher: every seq once, in order");
    let missed: Vec<Value> = live[2..].to_vec();
    eprintln!("published {TOTAL} in {:?}", started.elapsed());

    // Every source is there, in its publish order.
    for region in PUB_REGIONS {
        for s in 0..SOCKETS_PER_REGION {
            let ns: Vec<u64> = missed
                .iter()
                .filter(|m| m["data"]["src"] == region && m["data"]["sock"] == s)
                .map(|m| m["data"]["n"].as_u64().unwrap())
                .collect();
            assert_eq!(ns, (0..PER_SOCKET as u64).collect::<Vec<_>>(), "{region}-{s}");
        }
    }
    assert_eq!(missed.iter().filter(|m| m["data"]["src"] == "http").count(), HTTP_PUBS);

    // Resume in another region, the same region, a relay that never saw the
    // room (its window is empty: it must read the Room), and the watcher's
    // relay (its window holds every message: it must not).
    let mut resumers = Vec::new();
    for region in RESUME_REGIONS {
        let url = format!("{}&since={last_seen}&epoch={epoch}", server.ws_url(&room, region));
        let t0 = Instant::now();
        let mut c = Client::connect(&url).await.unwrap();
        let w = c.next_msg(T).await.expect("welcome");
        assert_eq!(w["t"], "welcome", "{region}: {w}");
        assert_eq!(w["recovered"], true, "{region}: {w}");
        assert_eq!(w["epoch"], epoch.as_str(), "{region}: {w}");
        assert_eq!(w["region"], region);
        assert_eq!(w["seq"], last, "{region}: the relay is level with the room: {w}");
        let replay = read_msgs(&mut c, TOTAL, region).await;
        eprintln!("{region}: welcome and {TOTAL} replayed in {:?}", t0.elapsed());
        assert_eq!(seqs(&replay), (first..=last).collect::<Vec<_>>(), "{region}: replay in seq order");
        assert_eq!(replay, missed, "{region}: replay identical to the live messages");
        resumers.push((region, c));
    }

    // The next live message comes next, and nothing was received twice.
    let v = http_pub(&base, &room, json!({"data":"live"})).await;
    assert_eq!(v["seq"], last + 1);
    for (region, c) in resumers.iter_mut() {
        let m = c.next_msg(T).await.unwrap_or_else(|| panic!("{region}: no live message"));
        assert_eq!((m["t"].as_str(), m["seq"].as_u64()), (Some("msg"), Some(last + 1)), "{region}: {m}");
        let all: Vec<u64> = c.history().iter().skip(1).map(|f| f["seq"].as_u64().unwrap()).collect();
        assert_eq!(all, (first..=last + 1).collect::<Vec<_>>(), "{region}: exactly once each");
    }

    // Stats: every resume recovered; oc's from the Room, enam's from the relay.
    let stats_url = format!("{base}/v1/rooms/{room}/stats");
    let deadline = tokio::time::Instant::now() + T;
    let s = loop {
        let (_, s) = http_json("GET", &stats_url, None).await;
        let r = &s["resumes"];
        let recovered = r["from_relay"].as_u64().unwrap_or(0) + r["from_room"].as_u64().unwrap_or(0);
        let relay = |region: &str, field: &str| {
            s["relays"]
                .as_array()
                .unwrap()
                .iter()
                .find(|rel| rel["region"] == region)
                .map_or(0, |rel| rel[field].as_u64().unwrap_or(0))
        };
        let (oc_from_room, enam_from_relay) = (relay("oc", "recovered_from_room"), relay("enam", "recovered_from_relay"));
        if recovered >= RESUME_REGIONS.len() as u64 && oc_from_room >= 1 && enam_from_relay >= 1 {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "resumes not counted (want {}, oc from the room, enam from the relay): {s}",
            RESUME_REGIONS.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(s["resumes"]["not_recovered"], 0, "{s}");
    eprintln!("resumes: {}", s["resumes"]);
    drop(publishers);
}

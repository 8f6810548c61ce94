//! Reconnect storm: 200 clients over three regions follow a room while
//! messages are published over HTTP at ~50/s. Half-way, every client drops
//! at once and immediately reconnects with `?since=<last seen>&epoch=E`
//! (half of them to another region), while publishing goes on. Every client
//! must end with exactly 1..=total: what it saw before the drop, the replay,
//! then live messages, contiguous, nothing twice. Every resume is recovered
//! and counted in the room's stats.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{http_json, unique_room, Client, Server, ServerOpts};
use tokio::sync::{mpsc, watch, Semaphore};

const T: Duration = Duration::from_secs(30);
const CLIENTS: usize = 200;
const REGIONS: [&str; 3] = ["weur", "apac", "wnam"];
/// Connects in flight at once.
const CONNECT_CONCURRENCY: usize = 50;
/// Messages published in the storm; one more is published once every client
/// has them all, to prove nothing arrives twice after.
const PUBLISHED: u64 = 100;
const DROP_AFTER: u64 = 50;
const PUB_PACE: Duration = Duration::from_millis(20);

struct Outcome {
    idx: usize,
    before: Vec<u64>,
    welcome: Value,
    after: Vec<u64>,
    others: Vec<Value>,
    client: Client,
}

fn msg_seq(f: &Value) -> Option<u64> {
    (f["t"] == "msg").then(|| f["seq"].as_u64()).flatten()
}

#[allow(clippy::too_many_arguments)]
async fn follow(
    idx: usize,
    ws_url: impl Fn(&str) -> String,
    sem: Arc<Semaphore>,
    mut drop_rx: watch::Receiver<bool>,
    ready: mpsc::UnboundedSender<()>,
    caught_up: mpsc::UnboundedSender<()>,
) -> Outcome {
    let region = REGIONS[idx % REGIONS.len()];
    let permit = sem.acquire().await.unwrap();
    let mut c = Client::connect(&ws_url(region)).await.unwrap_or_else(|e| panic!("client {idx}: {e}"));
    let w = c.next_msg(T).await.unwrap_or_else(|| panic!("client {idx}: no welcome"));
    drop(permit);
    assert_eq!((w["t"].as_str(), w["seq"].as_u64()), (Some("welcome"), Some(0)), "client {idx}: {w}");
    let epoch = w["epoch"].as_str().unwrap().to_owned();
    ready.send(()).unwrap();

    let mut others = Vec::new();
    let mut before = Vec::new();
    let mut note = |f: Value, into: &mut Vec<u64>| match msg_seq(&f) {
        Some(s) => into.push(s),
        None => others.push(f),
    };
    // Follow until told to drop.
    loop {
        tokio::select! {
            _ = drop_rx.wait_for(|d| *d) => break,
            f = c.next_msg(T) => match f {
                Some(f) => note(f, &mut before),
                None => panic!("client {idx}: nothing for {T:?} before the drop"),
            },
        }
    }
    c.close().await;
    // Frames that arrived before the server answered the close were seen.
    while let Some(f) = c.next_msg(Duration::ZERO).await {
        note(f, &mut before);
    }
    let last = before.last().copied().unwrap_or(0);

    // Reconnect at once, half of them elsewhere.
    let region = if idx.is_multiple_of(2) { region } else { REGIONS[(idx + 1) % REGIONS.len()] };
    let url = format!("{}&since={last}&epoch={epoch}", ws_url(region));
    let permit = sem.acquire().await.unwrap();
    let mut c = Client::connect(&url).await.unwrap_or_else(|e| panic!("client {idx} reconnect: {e}"));
    let welcome = c.next_msg(T).await.unwrap_or_else(|| panic!("client {idx}: no welcome on reconnect"));
    drop(permit);
    let mut after = Vec::new();
    let mut notified = false;
    loop {
        let f = c.next_msg(T).await.unwrap_or_else(|| {
            panic!("client {idx}: stalled after reconnect; welcome {welcome}, before {last}, after {after:?}")
        });
        let seq = msg_seq(&f);
        note(f, &mut after);
        if !notified && seq >= Some(PUBLISHED) {
            notified = true;
            caught_up.send(()).unwrap();
        }
        if seq >= Some(PUBLISHED + 1) {
            break;
        }
    }
    Outcome { idx, before, welcome, after, others, client: c }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_survives_a_mass_reconnect_without_gaps_or_duplicates() {
    let server = Server::start(ServerOpts::default()).await;
    let room = unique_room("storm");
    let base = server.base_url();
    let started = Instant::now();

    let sem = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let (drop_tx, drop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (caught_tx, mut caught_rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for idx in 0..CLIENTS {
        // The harness's URLs (they carry whatever credentials it uses).
        let urls: Vec<(&str, String)> = REGIONS.iter().map(|r| (*r, server.ws_url(&room, r))).collect();
        let ws_url = move |region: &str| urls.iter().find(|(r, _)| *r == region).map(|(_, u)| u.clone()).unwrap();
        tasks.push(tokio::spawn(follow(idx, ws_url, Arc::clone(&sem), drop_rx.clone(), ready_tx.clone(), caught_tx.clone())));
    }
    for n in 0..CLIENTS {
        tokio::time::timeout(T, ready_rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {n} of {CLIENTS} clients connected"));
    }
    eprintln!("{CLIENTS} connected in {:?}", started.elapsed());

    // Publish; drop everyone half-way.
    let publish_started = Instant::now();
    let mut tick = tokio::time::interval(PUB_PACE);
    let url = format!("{base}/v1/rooms/{room}/messages");
    let mut dropped_at = None;
    for n in 1..=PUBLISHED {
        tick.tick().await;
        let (status, v) = http_json("POST", &url, Some(&json!({"data":{"n":n}}))).await;
        assert_eq!((status, v["seq"].as_u64()), (200, Some(n)), "{v}");
        if n == DROP_AFTER {
            drop_tx.send(true).unwrap();
            dropped_at = Some(publish_started.elapsed());
        }
    }
    eprintln!(
        "published {PUBLISHED} in {:?} (drop signalled at {dropped_at:?})",
        publish_started.elapsed()
    );
    let mut caught = 0;
    while caught < CLIENTS {
        match tokio::time::timeout(T, caught_rx.recv()).await {
            Ok(Some(())) => caught += 1,
            _ => break,
        }
    }
    // Publish the last one even if some clients are stuck, so the others
    // finish and the report names every failing client.
    let (status, v) = http_json("POST", &url, Some(&json!({"data":"last"}))).await;
    assert_eq!((status, v["seq"].as_u64()), (200, Some(PUBLISHED + 1)), "{v}");

    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for (idx, t) in tasks.into_iter().enumerate() {
        match tokio::time::timeout(T, t).await {
            Ok(Ok(o)) => outcomes.push(o),
            Ok(Err(e)) => failures.push(format!("client {idx}: {e}")),
            Err(_) => failures.push(format!("client {idx}: did not finish")),
        }
    }
    let want: Vec<u64> = (1..=PUBLISHED + 1).collect();
    for o in &outcomes {
        let last = o.before.last().copied().unwrap_or(0);
        let all: Vec<u64> = o.before.iter().chain(&o.after).copied().collect();
        let problems = [
            (o.welcome["t"] != "welcome").then(|| format!("first frame {}", o.welcome)),
            (o.welcome["recovered"] != true).then(|| format!("not recovered: {}", o.welcome)),
            (o.welcome["seq"].as_u64().is_none_or(|s| s < last)).then(|| format!("welcome behind its since: {}", o.welcome)),
            (!o.others.is_empty()).then(|| format!("non-msg frames {:?}", o.others)),
            (all != want).then(|| {
                let mut dups = all.clone();
                dups.sort_unstable();
                let dup: Vec<u64> = dups.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect();
                let missing: Vec<u64> = want.iter().filter(|s| !all.contains(s)).copied().collect();
                format!(
                    "seqs wrong: since={last} welcome.seq={} missing {missing:?} duplicated {dup:?} after-reconnect {:?}",
                    o.welcome["seq"], o.after
                )
            }),
        ];
        for p in problems.into_iter().flatten() {
            failures.push(format!("client {} ({}): {p}", o.idx, REGIONS[o.idx % REGIONS.len()]));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems among {CLIENTS} clients (caught up: {caught}):\n{}",
        failures.len(),
        failures.join("\n")
    );
    let sinces: Vec<u64> = outcomes.iter().map(|o| o.before.last().copied().unwrap_or(0)).collect();
    eprintln!(
        "drop points: min since {} max since {}",
        sinces.iter().min().unwrap(),
        sinces.iter().max().unwrap()
    );

    // Every resume was counted as recovered (all clients are still connected).
    let stats_url = format!("{base}/v1/rooms/{room}/stats");
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let (_, s) = http_json("GET", &stats_url, None).await;
        let r = &s["resumes"];
        let recovered = r["from_relay"].as_u64().unwrap_or(0) + r["from_room"].as_u64().unwrap_or(0);
        if recovered == CLIENTS as u64 && s["connections"] == CLIENTS as u64 {
            assert_eq!(r["not_recovered"], 0, "{s}");
            eprintln!("resumes {r}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "stats never showed {CLIENTS} recovered resumes: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(outcomes.into_iter().map(|o| o.client).collect::<Vec<_>>());
    eprintln!("total {:?}", started.elapsed());
}

//! A Room → Relay delivery can vanish without either side seeing an error
//! (an answer that never comes back, an isolate that dies after the Room
//! counted the call as done). The link must not lose a message to that
//! silently: here the Room drops every 7th delivery as if it had arrived,
//! both `deliver` calls and deliveries riding in publish answers, under
//! realistic load (three regions, thirty clients, HTTP and socket publishes
//! pipelined together, so dropped deliveries are followed by later ones and
//! also sit at the tail of bursts). Every client must still end with every
//! message exactly once, in order, with no `reset`: the relays repair gaps
//! and the Room re-sends what was not acknowledged. The stats prove the
//! fault really fired, so a pass is not a fault-free run in disguise.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use support::{assert_exactly_once_in_order, clients_in, http_pub, http_pub_many, room_stats_until, unique_room, Server, ServerOpts};

const T: Duration = Duration::from_secs(20);
const REGIONS: [&str; 3] = ["weur", "apac", "enam"];
const CLIENTS_PER_REGION: usize = 10;
/// Each round publishes this many over sockets and as many over HTTP.
const PER_ROUND: u64 = 5;
const ROUNDS: u64 = 50;
const MESSAGES: u64 = 2 * PER_ROUND * ROUNDS;
/// How long after the last publish every client must have everything.
const SETTLE: Duration = Duration::from_secs(30);
/// The spec's bound for the last message of a quiet room.
const QUIET: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_gets_every_message_once_despite_dropped_deliveries() {
    let server = Server::start(
        ServerOpts::default()
            .var("HERALD_FAULT_DROP_FORWARD_EVERY", 7)
            // The sockets publish far faster than a person would; this test
            // is about the link, not the rate limiter.
            .var("HERALD_PUB_RATE", 10_000)
            .var("HERALD_PUB_BURST", 10_000),
    )
    .await;
    let room = unique_room("drop7");

    let mut clients = clients_in(&server, &room, &REGIONS, CLIENTS_PER_REGION, T).await;
    // The first client of each region also publishes.
    let publishers: Vec<usize> = (0..REGIONS.len()).map(|r| r * CLIENTS_PER_REGION).collect();

    // Pipelined but bounded: each round sends its socket publishes without
    // waiting, runs its HTTP publishes concurrently, then waits for the
    // round's acks, so at most 2 × PER_ROUND publishes are in flight.
    let mut sent = vec![0usize; publishers.len()];
    let mut acked = vec![0usize; publishers.len()];
    let mut acks: BTreeMap<u64, u64> = BTreeMap::new(); // pub id -> seq
    let mut http_seqs: BTreeMap<u64, u64> = BTreeMap::new(); // http n -> seq
    let (mut next_id, mut next_http) = (1u64, 1u64);
    let mut last_publish = Instant::now();
    for _ in 0..ROUNDS {
        for _ in 0..PER_ROUND {
            let p = (next_id as usize) % publishers.len();
            let frame = json!({"t": "pub", "id": next_id, "data": {"src": "ws", "n": next_id}});
            clients[publishers[p]].1.send_json(&frame).await;
            sent[p] += 1;
            next_id += 1;
        }
        let bodies: Vec<Value> = (next_http..next_http + PER_ROUND)
            .map(|n| json!({"data": {"src": "http", "n": n}}))
            .collect();
        for (answer, n) in http_pub_many(&server, &room, bodies, PER_ROUND as usize).await.iter().zip(next_http..) {
            let seq = answer["seq"].as_u64().unwrap_or_else(|| panic!("http publish {n}: {answer}"));
            http_seqs.insert(n, seq);
        }
        next_http += PER_ROUND;
        last_publish = Instant::now(); // this round's socket publishes went out before
        for (p, &idx) in publishers.iter().enumerate() {
            let (who, c) = &mut clients[idx];
            while acked[p] < sent[p] {
                let f = c
                    .next_msg(T)
                    .await
                    .unwrap_or_else(|| panic!("{who}: {} of {} publishes acked", acked[p], sent[p]));
                match f["t"].as_str() {
                    Some("ack") => {
                        let (id, seq) = (f["id"].as_u64().unwrap(), f["seq"].as_u64());
                        let seq = seq.unwrap_or_else(|| panic!("{who}: ack without seq {f}"));
                        assert!(acks.insert(id, seq).is_none(), "{who}: second ack for id {id}: {f}");
                        acked[p] += 1;
                    }
                    Some("err" | "reset") => panic!("{who}: unexpected frame {f}"),
                    _ => {} // messages: judged from the history below
                }
            }
        }
    }

    // Every client, within SETTLE of the last publish, has exactly 1..=500.
    let deadline = last_publish + SETTLE;
    for (who, c) in clients.iter_mut() {
        if !c.read_through_seq(MESSAGES, deadline).await {
            let seqs = c.msg_seqs();
            panic!(
                "{who}: seq {MESSAGES} not received within {SETTLE:?} of the last publish; \
                 {} messages, last {:?}, close code {:?}",
                seqs.len(),
                seqs.last(),
                c.close_code()
            );
        }
        assert_exactly_once_in_order(who, c, MESSAGES);
    }
    eprintln!("all {} clients complete {:?} after the last publish", clients.len(), last_publish.elapsed());

    // Each publisher was told the right seq, once per publish: the acks and
    // the HTTP answers name every seq once, and each names its own message.
    let (ws_count, http_count) = (PER_ROUND * ROUNDS, PER_ROUND * ROUNDS);
    assert_eq!(acks.len() as u64, ws_count, "one ack per socket publish");
    for (i, (who, c)) in clients.iter().enumerate() {
        // Counted over the whole history, so an ack arriving after the
        // publishing loop (a duplicate) shows too.
        let n = c.history().iter().filter(|f| f["t"] == "ack").count();
        let expected = publishers.iter().position(|&p| p == i).map_or(0, |p| sent[p]);
        assert_eq!(n, expected, "{who}: one ack per publish, no more");
    }
    let mut named: BTreeSet<u64> = acks.values().copied().collect();
    named.extend(http_seqs.values().copied());
    assert_eq!(named.len() as u64, ws_count + http_count, "publish answers name distinct seqs");
    let by_seq: BTreeMap<u64, Value> = clients[1]
        .1
        .history()
        .iter()
        .filter(|f| f["t"] == "msg")
        .map(|f| (f["seq"].as_u64().unwrap(), f["data"].clone()))
        .collect();
    for (id, seq) in &acks {
        assert_eq!(by_seq[seq], json!({"src": "ws", "n": id}), "ack for id {id} names seq {seq}");
    }
    for (n, seq) in &http_seqs {
        assert_eq!(by_seq[seq], json!({"src": "http", "n": n}), "http publish {n} answered seq {seq}");
    }

    // The fault fired, and nothing was stored twice.
    let stats = room_stats_until(&server, &room, T, |s| {
        s["seq"] == MESSAGES && s["faults"]["dropped_deliveries"].as_u64().is_some_and(|n| n > 0)
    })
    .await;
    eprintln!(
        "dropped deliveries {}, redeliveries {}, primary_sends {}",
        stats["faults"]["dropped_deliveries"], stats["redeliveries"], stats["primary_sends"]
    );

    // Nothing late: after one more message, every stream is still exactly
    // 1..=N+1 (a duplicate re-sent after the relay was level would show).
    let sentinel = http_pub(&server, &room, json!({"data": "sentinel"})).await;
    assert_eq!(sentinel["seq"], MESSAGES + 1, "{sentinel}");
    let deadline = Instant::now() + QUIET;
    for (who, c) in clients.iter_mut() {
        assert!(
            c.read_through_seq(MESSAGES + 1, deadline).await,
            "{who}: the sentinel did not arrive within {QUIET:?}"
        );
        assert_exactly_once_in_order(who, c, MESSAGES + 1);
    }
}

//! Webhooks against a receiver on loopback: the Room POSTs signed batches
//! of `room_occupied`, `member_added`, `member_removed` and `room_vacated`;
//! a reconnect within `HERALD_WEBHOOK_VACATE_MS` sends no vacancy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
#[path = "support/webhook_receiver.rs"]
mod webhook_receiver;

use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::{now_s, room_stats_until, token, unique_room, Client, Server, ServerOpts};
use webhook_receiver::{id_number, labels, Receiver, WEBHOOK_SECRET};

const T: Duration = Duration::from_secs(30);

fn url(server: &Server, room: &str, region: &str, user: &str) -> String {
    let t = token(&json!({"sub": user, "exp": now_s() + 600, "rooms": {"*": ["sub"]}}));
    format!("ws://127.0.0.1:{}/v1/rooms/{room}/ws?region={region}&token={t}", server.port())
}

fn opts(receiver: &Receiver, grace_ms: u64, vacate_ms: u64) -> ServerOpts {
    ServerOpts::default()
        .var("HERALD_WEBHOOK_URL", receiver.url())
        .var("HERALD_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .var("HERALD_PRESENCE_GRACE_MS", grace_ms)
        .var("HERALD_WEBHOOK_VACATE_MS", vacate_ms)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn has(events: &[Value], room: &str, label: &str) -> bool {
    labels(events, room).iter().any(|l| l == label)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn occupancy_and_member_events_arrive_signed_and_in_order() {
    let mut receiver = Receiver::start().await;
    let server = Server::start(opts(&receiver, 300, 1_000)).await;
    let room = unique_room("hook");

    let mut ana = Client::welcomed(&url(&server, &room, "weur", "ana"), T).await;
    let events = receiver.accepted_until(T, |e| has(e, &room, "member_added:ana")).await;
    assert_eq!(labels(&events, &room), ["room_occupied", "member_added:ana"], "occupied first: {events:?}");
    let mut bo = Client::welcomed(&url(&server, &room, "apac", "bo"), T).await;
    receiver.accepted_until(T, |e| has(e, &room, "member_added:bo")).await;
    bo.close().await;
    receiver.accepted_until(T, |e| has(e, &room, "member_removed:bo")).await;
    ana.close().await;
    let events = receiver.accepted_until(T, |e| has(e, &room, "room_vacated")).await;
    assert_eq!(
        labels(&events, &room),
        ["room_occupied", "member_added:ana", "member_added:bo", "member_removed:bo", "member_removed:ana", "room_vacated"]
    );

    // Ids are unique and numbered in order; times do not go back.
    let numbers: Vec<u64> = events.iter().map(id_number).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    let prefix = |e: &Value| e["id"].as_str().unwrap().rsplit_once('-').unwrap().0.to_owned();
    assert!(events.iter().all(|e| prefix(e) == prefix(&events[0])), "one prefix per room");
    assert!(events.windows(2).all(|w| w[0]["ts"].as_u64() <= w[1]["ts"].as_u64()), "{events:?}");
    assert!(events.iter().all(|e| e["room"] == room.as_str()));

    // Every request: a POST of JSON, signed over the raw body, with a fresh
    // timestamp that equals the signed sent_at.
    for r in &receiver.log {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/hook"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        let sig = r.header("x-herald-signature").expect("signed");
        assert!(herald_core::webhook::verify(WEBHOOK_SECRET.as_bytes(), r.body.as_bytes(), sig), "signature does not verify: {sig} {}", r.body);
        assert!(!herald_core::webhook::verify(b"another secret of thirty-two bytes!!", r.body.as_bytes(), sig));
        let ts: u64 = r.header("x-herald-timestamp").expect("timestamp").parse().expect("ms");
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["sent_at"].as_u64(), Some(ts), "the timestamp is signed as sent_at");
        assert!(now_ms().abs_diff(ts) < 60_000, "fresh: {ts}");
    }

    documented_node_verifier_accepts(&receiver.log[0]);

    let stats = room_stats_until(&server, &room, T, |s| s["webhooks"]["queued"] == 0).await;
    let w = &stats["webhooks"];
    assert_eq!((w["sent"].as_u64(), w["dropped"].as_u64(), w["failed_attempts"].as_u64()), (Some(6), Some(0), Some(0)), "{w}");
    assert_eq!(w["last_status"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_within_the_debounce_sends_no_vacancy() {
    const VACATE_MS: u64 = 3_000;
    let mut receiver = Receiver::start().await;
    let server = Server::start(opts(&receiver, 200, VACATE_MS)).await;
    let room = unique_room("debounce");

    let mut ana = Client::welcomed(&url(&server, &room, "weur", "ana"), T).await;
    receiver.accepted_until(T, |e| has(e, &room, "member_added:ana")).await;
    ana.close().await;
    // Past the presence grace: ana left, the room is empty and debouncing.
    receiver.accepted_until(T, |e| has(e, &room, "member_removed:ana")).await;
    let mut back = Client::welcomed(&url(&server, &room, "apac", "ana"), T).await;
    let events = receiver.accepted_until(T, |e| labels(e, &room).len() >= 4).await;
    assert_eq!(labels(&events, &room), ["room_occupied", "member_added:ana", "member_removed:ana", "member_added:ana"]);

    // Well past the debounce: nothing more (no vacated, no second occupied).
    let extra = receiver.next(Duration::from_millis(VACATE_MS + 2_000)).await;
    assert!(extra.is_none(), "a reconnect within the debounce sent {extra:?}");

    back.close().await;
    let events = receiver.accepted_until(T, |e| has(e, &room, "room_vacated")).await;
    assert_eq!(
        labels(&events, &room),
        ["room_occupied", "member_added:ana", "member_removed:ana", "member_added:ana", "member_removed:ana", "room_vacated"]
    );
}

/// Runs the verification snippet of docs/PROTOCOL.md (*Webhooks*) under the
/// repository's node on a request the Room really sent: it accepts it, and
/// refuses it with the body changed by one byte or with another secret.
fn documented_node_verifier_accepts(r: &webhook_receiver::Received) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/PROTOCOL.md")).unwrap();
    let section = &doc[doc.find("**Verifying**").expect("the verification snippet")..];
    let start = section.find("```js\n").unwrap() + 6;
    let snippet = &section[start..start + section[start..].find("```").unwrap()];
    let dir = std::env::temp_dir().join(format!("herald-verify-{}", unique_room("v")));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("body"), &r.body).unwrap();
    let headers = json!({
        "x-herald-signature": r.header("x-herald-signature"),
        "x-herald-timestamp": r.header("x-herald-timestamp"),
    });
    let script = format!(
        "{snippet}\nimport {{ readFileSync }} from 'node:fs';\n\
         const raw = readFileSync(process.argv[2]); const headers = {headers};\n\
         const ok = verifyHeraldWebhook(raw, headers, {secret:?});\n\
         const tampered = Buffer.from(raw); tampered[tampered.length - 2] ^= 1;\n\
         const bad = verifyHeraldWebhook(tampered, headers, {secret:?}) ?? verifyHeraldWebhook(raw, headers, 'x'.repeat(40));\n\
         console.log(JSON.stringify({{ ok: ok?.length ?? null, bad }}));\n",
        secret = WEBHOOK_SECRET
    );
    std::fs::write(dir.join("verify.mjs"), script).unwrap();
    let node = root.join("node_modules/.bin/node");
    let node = if node.exists() { node } else { std::path::PathBuf::from("node") };
    let out = std::process::Command::new(node).arg(dir.join("verify.mjs")).arg(dir.join("body")).output().expect("run node");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "node failed: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(v, json!({"ok": r.events().len(), "bad": null}), "the documented verifier");
}

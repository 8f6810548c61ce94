//! Bad input over HTTP (docs/PROTOCOL.md, "Endpoints", "HTTP publish",
//! "Error codes"): bad room names, a plain GET on the socket endpoint, an
//! unknown `?region=`, malformed and oversized publish bodies, unknown paths
//! and wrong methods are each answered with the documented status and a body
//! of exactly `{"error":CODE,"message":TEXT}`; valid publishes answer
//! `{"seq":N,"epoch":E,"ts":MS}` with consecutive seqs; and the rejected
//! requests never reach the Room (its stats still show `seq` 0).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(unused_imports)] // the harness re-exports more than this file uses
mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::{http, http_json, http_request, unique_room, Client, Server, ServerOpts};

const MAX_FRAME_BYTES: usize = 1024;

/// Checks an error answer: `status`, and a JSON body with exactly the keys
/// `error` (= `code`) and `message` (a non-empty string).
fn assert_error(what: &str, status: u16, body: &str, want_status: u16, code: &str) {
    let v: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {body:?}"));
    assert_eq!(status, want_status, "{what}: status (body {body})");
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{what}: body not an object: {body}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["error", "message"], "{what}: body keys: {body}");
    assert_eq!(v["error"], code, "{what}: {body}");
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: message must be a non-empty string: {body}"
    );
}

async fn expect_error(method: &str, url: &str, body: Option<&str>, status: u16, code: &str) {
    let (got, text) = http(method, url, body).await;
    assert_error(&format!("{method} {url}"), got, &text, status, code);
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Headers of a WebSocket upgrade request (the harness adds `Connection: close`,
/// which the Worker does not look at: it checks `Upgrade` only).
const UPGRADE: [(&str, &str); 3] = [
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bad_input_is_refused_with_documented_errors() {
    let server =
        Server::start(ServerOpts::default().var("HERALD_MAX_FRAME_BYTES", MAX_FRAME_BYTES)).await;
    let base = server.base_url();
    let valid_body = r#"{"data":{"a":1},"mid":"m1"}"#;

    // ---- room names ---------------------------------------------------------
    expect_error(
        "GET",
        &format!("{base}/v1/rooms/bad%20room/ws"),
        None,
        400,
        "bad_room",
    )
    .await;
    let status = Client::connect_status(&format!(
        "ws://127.0.0.1:{}/v1/rooms/bad%20room/ws?region=weur",
        server.port()
    ))
    .await;
    assert_eq!(status, Some(400), "WebSocket upgrade to a bad room name");
    let r = http_request(
        "GET",
        &format!("{base}/v1/rooms/bad%20room/ws?region=weur"),
        &UPGRADE,
        None,
    )
    .await
    .unwrap();
    assert_error("upgrade to bad%20room", r.status, &r.body, 400, "bad_room");

    let long = "r".repeat(129);
    // a%2Fb is checked after decoding: '/' may not be in a room name.
    for (method, room, path, body) in [
        ("GET", long.as_str(), "stats", None),
        ("POST", long.as_str(), "messages", Some(valid_body)),
        ("POST", "-x", "messages", Some(valid_body)),
        ("POST", "a%2Fb", "messages", Some(valid_body)),
    ] {
        expect_error(method, &format!("{base}/v1/rooms/{room}/{path}"), body, 400, "bad_room").await;
    }
    // The longest valid name (128 characters) is accepted.
    let longest = format!("{}-", unique_room("max"));
    let longest = format!("{longest}{}", "z".repeat(128 - longest.len()));
    assert_eq!(longest.len(), 128);
    let (status, stats) = http_json("GET", &format!("{base}/v1/rooms/{longest}/stats"), None).await;
    assert_eq!(status, 200, "128-character room: {stats}");
    assert_eq!(stats["room"], longest.as_str());

    // ---- the socket endpoint ------------------------------------------------
    expect_error(
        "GET",
        &format!("{base}/v1/rooms/ok/ws"),
        None,
        426,
        "upgrade_required",
    )
    .await;
    let mars = format!(
        "ws://127.0.0.1:{}/v1/rooms/ok/ws?region=mars&token={}",
        server.port(),
        support::admin_token()
    );
    assert_eq!(
        Client::connect_status(&mars).await,
        Some(400),
        "upgrade with ?region=mars"
    );
    let r = http_request(
        "GET",
        &format!("{base}/v1/rooms/ok/ws?region=mars"),
        &UPGRADE,
        None,
    )
    .await
    .unwrap();
    assert_error(
        "upgrade with ?region=mars",
        r.status,
        &r.body,
        400,
        "bad_region",
    );

    // ---- publish bodies (room `rejected` only ever gets refused ones) -------
    let rejected = unique_room("rejected");
    let rejected_url = format!("{base}/v1/rooms/{rejected}/messages");
    for body in [
        "not json",
        "{}",
        "[]",
        "42",
        r#"{"data":1,"mid":""}"#,
        r#"{"data":1,"mid":7}"#,
        r#"{"data":1,"ephemeral":"yes"}"#,
        r#"{"mid":"no-data"}"#,
        "",
    ] {
        let (status, text) = http("POST", &rejected_url, Some(body)).await;
        assert_error(
            &format!("POST body {body:?}"),
            status,
            &text,
            400,
            "bad_frame",
        );
    }
    let deep = format!(r#"{{"data":{}1{}}}"#, "[".repeat(33), "]".repeat(33));
    expect_error("POST", &rejected_url, Some(&deep), 400, "bad_frame").await;
    let big = format!(r#"{{"data":"{}"}}"#, "x".repeat(MAX_FRAME_BYTES));
    assert!(big.len() > MAX_FRAME_BYTES);
    expect_error("POST", &rejected_url, Some(&big), 413, "too_large").await;

    // ---- valid publishes ----------------------------------------------------
    let ok_room = unique_room("ok");
    let ok_url = format!("{base}/v1/rooms/{ok_room}/messages");
    let before = now_ms();
    let (status, first) = http_json(
        "POST",
        &ok_url,
        Some(&serde_json::from_str(valid_body).unwrap()),
    )
    .await;
    let after = now_ms();
    assert_eq!(status, 200, "valid publish: {first}");
    let obj = first
        .as_object()
        .unwrap_or_else(|| panic!("publish answer not an object: {first}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["epoch", "seq", "ts"], "publish answer: {first}");
    assert_eq!(first["seq"], 1, "{first}");
    let epoch = first["epoch"].as_str().unwrap_or_default().to_owned();
    assert!(
        !epoch.is_empty(),
        "epoch must be a non-empty string: {first}"
    );
    let ts = first["ts"]
        .as_u64()
        .unwrap_or_else(|| panic!("ts not an integer: {first}"));
    // Same machine: the Room's clock is ours (allow 5 s either way).
    assert!(
        ts + 5_000 >= before && ts <= after + 5_000,
        "ts {ts} not within [{before}, {after}]"
    );

    let (status, second) = http_json("POST", &ok_url, Some(&json!({"data": null}))).await;
    assert_eq!(status, 200, "second publish: {second}");
    assert_eq!(second["seq"], 2, "{second}");
    assert_eq!(second["epoch"], epoch.as_str(), "epoch is stable: {second}");
    assert!(
        second["ts"].as_u64().is_some_and(|t| t >= ts),
        "ts: {second}"
    );

    // ---- paths and methods --------------------------------------------------
    expect_error("GET", &format!("{base}/nope"), None, 404, "not_found").await;
    expect_error(
        "GET",
        &format!("{base}/v1/rooms/r/nope"),
        None,
        404,
        "not_found",
    )
    .await;
    expect_error(
        "DELETE",
        &format!("{base}/v1/rooms/r/stats"),
        None,
        405,
        "method_not_allowed",
    )
    .await;
    expect_error(
        "PUT",
        &format!("{base}/v1/rooms/r/messages"),
        Some(valid_body),
        405,
        "method_not_allowed",
    )
    .await;
    expect_error(
        "PATCH",
        &format!("{base}/v1/rooms/r/messages"),
        None,
        405,
        "method_not_allowed",
    )
    .await;
    for bad in ["since=-1", "since=x", "limit=0", "limit=abc"] {
        expect_error("GET", &format!("{base}/v1/rooms/r/messages?{bad}"), None, 400, "bad_frame").await;
    }
    for bad in ["since=1", "epoch=abc", "since=x&epoch=abc"] {
        let (status, _) = http("GET", &format!("{base}/v1/rooms/r/ws?{bad}"), None).await;
        assert_eq!(status, 426, "a plain GET is refused before its query is read");
        assert_eq!(Client::connect_status(&format!("{}&{bad}", server.ws_url("r", "weur"))).await, Some(400), "{bad}");
    }
    expect_error(
        "POST",
        &format!("{base}/v1/rooms/r/ws"),
        Some(valid_body),
        405,
        "method_not_allowed",
    )
    .await;

    let (status, health) = http("GET", &format!("{base}/healthz"), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&health).ok(),
        Some(json!({"ok": true})),
        "{health}"
    );
    let page = http_request("GET", &format!("{base}/"), &[], None)
        .await
        .unwrap();
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("<title>Herald</title>"),
        "demo page: {}",
        page.body
    );
    assert!(
        page.header("content-type")
            .is_some_and(|c| c.starts_with("text/html")),
        "demo page content-type: {:?}",
        page.header("content-type")
    );

    // ---- the refused publishes never reached the Room -----------------------
    let (status, stats) =
        http_json("GET", &format!("{base}/v1/rooms/{rejected}/stats"), None).await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["room"], rejected.as_str(), "{stats}");
    assert_eq!(stats["seq"], 0, "a refused publish was stored: {stats}");
    let (status, stats) = http_json("GET", &format!("{base}/v1/rooms/{ok_room}/stats"), None).await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(
        (stats["seq"].clone(), stats["epoch"].clone()),
        (json!(2), json!(epoch)),
        "{stats}"
    );
}

/// PROTOCOL.md, "Endpoints": "a known path with another method is 405
/// `method_not_allowed`" — for every endpoint in the table, `/healthz` and
/// `/` included, not only the room endpoints. `/` is a static asset, whose
/// 405 comes from the assets layer with an empty body; the others are the
/// Worker's, with the JSON error. Kept apart (its own server) so a failure
/// here does not hide the checks above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_level_paths_answer_405_for_other_methods() {
    let server = Server::start(ServerOpts::default()).await;
    let base = server.base_url();
    let (mut answers, mut wrong) = (Vec::new(), Vec::new());
    for (method, path, body) in [
        ("POST", "/healthz", Some("{}")),
        ("DELETE", "/healthz", None),
        ("POST", "/", Some("{}")),
        ("DELETE", "/", None),
    ] {
        let (status, text) = http(method, &format!("{base}{path}"), body).await;
        answers.push(format!("{method} {path} -> {status} {text}"));
        if status != 405 {
            wrong.push(answers.len() - 1);
            continue;
        }
        if path == "/" {
            continue; // the assets layer's 405: no JSON body to check
        }
        assert_error(
            &format!("{method} {path}"),
            status,
            &text,
            405,
            "method_not_allowed",
        );
    }
    assert!(
        wrong.is_empty(),
        "expected 405 method_not_allowed for each of:\n{}",
        answers.join("\n")
    );
}

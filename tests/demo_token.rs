//! Dev-only demo tokens (docs/PROTOCOL.md, "Demo tokens"):
//! `GET /v1/demo/token` does not exist unless `HERALD_DEMO_ROOMS` is set;
//! with it, a loopback request gets a one-hour guest token that publishes
//! to the demo rooms and nowhere else, a request addressed to any other
//! host is answered as if the endpoint did not exist, and an overlong
//! `name` is `bad_frame`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(unused_imports)] // the harness re-exports more than this file uses
mod support;

use serde_json::{json, Value};
use support::{http_request, now_s, unique_room, Server, ServerOpts, TEST_SECRET};

/// GET `path` on `server` with extra headers; the status and the JSON body.
async fn get(server: &Server, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let r = http_request("GET", &format!("{}{path}", server.base_url()), headers, None)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let body = serde_json::from_str(&r.body).unwrap_or(Value::String(r.body));
    (r.status, body)
}

fn assert_error(what: &str, (status, body): (u16, Value), want_status: u16, code: &str) {
    assert_eq!((status, &body["error"]), (want_status, &json!(code)), "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_unless_configured() {
    let server = Server::start(ServerOpts::default()).await;
    assert_error("default config", get(&server, "/v1/demo/token", &[]).await, 404, "not_found");
    let host = format!("localhost:{}", server.port());
    assert_error(
        "default config, localhost",
        get(&server, "/v1/demo/token?name=Ana", &[("Host", &host)]).await,
        404,
        "not_found",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_tokens_for_demo_rooms_on_loopback_only() {
    let server = Server::start(ServerOpts::default().var("HERALD_DEMO_ROOMS", "demo:*")).await;
    let base = server.base_url();

    // ---- a token, asked through 127.0.0.1 ----------------------------------
    let (status, answer) = get(&server, "/v1/demo/token?name=%20Ana%20", &[]).await;
    assert_eq!(status, 200, "{answer}");
    let mut keys: Vec<&str> = answer.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["exp", "rooms", "sub", "token"], "{answer}");
    let sub = answer["sub"].as_str().unwrap().to_owned();
    let tag = sub.strip_prefix("guest-").unwrap_or_else(|| panic!("sub {sub:?}"));
    assert!(
        tag.len() == 6 && tag.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()),
        "guest tag: {sub:?}"
    );
    assert_eq!(answer["rooms"], json!(["demo:*"]));
    let exp = answer["exp"].as_u64().unwrap();
    let now = now_s();
    assert!((now + 3590..=now + 3610).contains(&exp), "exp {exp}, now {now}");
    let token = answer["token"].as_str().unwrap().to_owned();
    let claims = herald_core::auth::verify_hs256(&token, TEST_SECRET.as_bytes(), now, 2).unwrap();
    assert_eq!((claims.sub.as_str(), claims.exp), (sub.as_str(), Some(exp)));
    assert_eq!(claims.info.as_deref(), Some(r#"{"name":"Ana"}"#), "name trimmed into info");

    // ---- it publishes to a demo room, and nowhere else ---------------------
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    let demo_room = unique_room("demo:tok");
    let url = format!("{base}/v1/rooms/{demo_room}/messages");
    let r = http_request("POST", &url, &auth, Some(r#"{"data":{"text":"hi"}}"#)).await.unwrap();
    assert_eq!(r.status, 200, "publish to {demo_room}: {}", r.body);
    let (status, history) = get(&server, &format!("/v1/rooms/{demo_room}/messages?since=0"), &[]).await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["messages"][0]["from"], json!(sub), "{history}");
    let other = unique_room("lobby");
    let url = format!("{base}/v1/rooms/{other}/messages");
    let r = http_request("POST", &url, &auth, Some(r#"{"data":"x"}"#)).await.unwrap();
    let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    assert_error(&format!("publish to {other}"), (r.status, body), 403, "forbidden");

    // ---- loopback by name, and non-loopback hosts --------------------------
    let host = format!("localhost:{}", server.port());
    let (status, named) = get(&server, "/v1/demo/token", &[("Host", &host)]).await;
    assert_eq!(status, 200, "Host {host}: {named}");
    assert_ne!(named["sub"], json!(sub), "each token is a new guest");
    for host in ["herald.example.com", "192.168.1.10:8787", "localhost.example.com", "127.0.0.2"] {
        assert_error(
            &format!("Host {host}"),
            get(&server, "/v1/demo/token?name=Ana", &[("Host", host)]).await,
            404,
            "not_found",
        );
    }

    // ---- bad input -----------------------------------------------------------
    let long = "n".repeat(33);
    assert_error("33-character name", get(&server, &format!("/v1/demo/token?name={long}"), &[]).await, 400, "bad_frame");
    let r = http_request("POST", &format!("{base}/v1/demo/token"), &[], Some("{}")).await.unwrap();
    let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    assert_error("POST", (r.status, body), 405, "method_not_allowed");
}

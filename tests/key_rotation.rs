//! Keys rotate with no window in which valid tokens fail: `HERALD_SECRET`
//! may hold `kid=secret` pairs, a token naming a `kid` is checked with that
//! key, and one without is tried against each. A token naming a key the
//! server does not hold is refused. A secret shorter than 32 bytes is a
//! configuration error, told plainly, never used.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use herald_core::auth::{mint_hs256, mint_hs256_kid};
use serde_json::json;
use std::time::Duration;
use support::{http, now_s, unique_room, Client, Server, ServerOpts};

const T: Duration = Duration::from_secs(15);
const OLD: &str = "old-key-of-at-least-thirty-two-bytes-1111";
const NEW: &str = "new-key-of-at-least-thirty-two-bytes-2222";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_both_keys_work_during_a_rotation() {
    let server = Server::start(ServerOpts::default().var("HERALD_SECRET", format!("old={OLD},new={NEW}"))).await;
    let room = unique_room("rotate");
    let claims = json!({"sub": "ana", "exp": now_s() + 3600, "rooms": {"*": ["sub"]}});
    let url = |token: &str| format!("ws://127.0.0.1:{}/v1/rooms/{room}/ws?region=weur&token={token}", server.port());

    for (what, token) in [
        ("new kid", mint_hs256_kid(&claims, Some("new"), NEW.as_bytes())),
        ("old kid", mint_hs256_kid(&claims, Some("old"), OLD.as_bytes())),
        ("no kid, old key", mint_hs256(&claims, OLD.as_bytes())),
    ] {
        let c = Client::welcomed(&url(&token), T).await;
        assert_eq!(c.history()[0]["t"], "welcome", "{what}");
    }
    let unknown = mint_hs256_kid(&claims, Some("retired"), OLD.as_bytes());
    assert_eq!(Client::connect_status(&url(&unknown)).await, Some(401), "an unknown kid");
    let crossed = mint_hs256_kid(&claims, Some("new"), OLD.as_bytes());
    assert_eq!(Client::connect_status(&url(&crossed)).await, Some(401), "a kid selects its own key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_secret_is_refused_with_a_clear_error() {
    let server = Server::start(ServerOpts::default().var("HERALD_SECRET", "too-short")).await;
    let (status, body) = http("GET", &format!("{}/v1/rooms/x/messages", server.base_url()), None).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("HERALD_SECRET") && body.contains("at least 32") && !body.contains("too-short"), "{body}");
}

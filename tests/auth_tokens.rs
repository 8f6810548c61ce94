//! Tokens are verified at the Worker, before any Durable Object is touched:
//! every kind of bad token gets its exact status and code, and the room's
//! stats show that no rejected connect ever reached it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use support::{http_json, http_request, now_s, token, unique_room, Client, Server, ServerOpts};

/// An upgrade request over plain HTTP, so the refusal's body can be read.
async fn upgrade(url: &str, auth: Option<&str>) -> (u16, Value) {
    let bearer = auth.map(|t| format!("Bearer {t}")).unwrap_or_default();
    let headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("authorization", bearer.as_str()),
    ];
    let r = http_request("GET", url, &headers, None).await.unwrap();
    (r.status, serde_json::from_str(&r.body).unwrap_or(Value::String(r.body)))
}

fn claims(room: &str, caps: &[&str]) -> Value {
    json!({"sub": "ana", "exp": now_s() + 600, "rooms": {room: caps}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_at_the_edge() {
    let server = Server::start(ServerOpts::default().var("HERALD_PUBLIC_ROOMS", "public:*")).await;
    let room = unique_room("auth");
    let base = server.base_url();
    let ws = format!("{base}/v1/rooms/{room}/ws?region=weur");

    let (h, p) = {
        let t = token(&claims(&room, &["sub"]));
        let mut parts = t.split('.').map(str::to_owned);
        (parts.next().unwrap(), parts.next().unwrap())
    };
    let none_alg = format!("{}.{p}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#));
    let hs512 = format!("{}.{p}.AAAA", URL_SAFE_NO_PAD.encode(r#"{"alg":"HS512","typ":"JWT"}"#));
    let bad_sig = format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode([7u8; 32]));
    let other_secret = herald_core::auth::mint_hs256(&claims(&room, &["sub"]), b"not-the-secret");
    let expired = token(&json!({"sub":"ana","exp": now_s() - 60,"rooms":{&room:["sub"]}}));
    let not_yet = token(&json!({"sub":"ana","nbf": now_s() + 60,"rooms":{&room:["sub"]}}));
    let wrong_room = token(&claims("elsewhere", &["sub"]));
    let no_sub_cap = token(&claims(&room, &["pub", "history"]));

    let cases: Vec<(&str, Option<String>, u16, &str)> = vec![
        ("missing", None, 401, "unauthorized"),
        ("malformed", Some("not.a.token!".into()), 401, "unauthorized"),
        ("two parts", Some("abc.def".into()), 401, "unauthorized"),
        ("alg none", Some(none_alg), 401, "unauthorized"),
        ("alg HS512", Some(hs512), 401, "unauthorized"),
        ("bad signature", Some(bad_sig), 401, "unauthorized"),
        ("signed with another secret", Some(other_secret), 401, "unauthorized"),
        ("expired", Some(expired), 401, "unauthorized"),
        ("not yet valid", Some(not_yet), 401, "unauthorized"),
        ("wrong room", Some(wrong_room), 403, "forbidden"),
        ("no sub capability", Some(no_sub_cap), 403, "forbidden"),
    ];
    for (what, tok, status, code) in &cases {
        let (got, body) = upgrade(&ws, tok.as_deref()).await;
        assert_eq!((got, body["error"].as_str()), (*status, Some(*code)), "{what}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {body}");
        // Through a real WebSocket client the upgrade fails the same way.
        let ws_scheme = ws.replace("http://", "ws://");
        let url = match tok {
            Some(t) => format!("{ws_scheme}&token={t}"),
            None => ws_scheme,
        };
        assert_eq!(Client::connect_status(&url).await, Some(*status), "{what} (ws client)");
    }

    // None of those reached a relay or the room.
    let (status, stats) = http_json("GET", &format!("{base}/v1/rooms/{room}/stats"), None).await;
    assert_eq!(status, 200);
    assert_eq!(stats["connections"], 0, "{stats}");
    assert_eq!(stats["relays"], json!([]), "{stats}");
    assert_eq!(stats["wakeups"]["relays"], json!({}), "no relay was ever constructed: {stats}");

    // Good tokens: exact room, a pattern, by query and by header.
    let exact = token(&claims(&room, &["sub"]));
    let mut c = Client::connect(&format!("{}&token={exact}", ws.replace("http://", "ws://"))).await.unwrap();
    assert_eq!(c.wait_type(std::time::Duration::from_secs(10), "welcome").await["room"], room.as_str());
    let pattern_room = format!("{room}:sub");
    let pattern = token(&claims(&format!("{room}:*"), &["sub"]));
    let ws_base = base.replace("http://", "ws://");
    let mut under = Client::connect(&format!("{ws_base}/v1/rooms/{pattern_room}/ws?region=weur&token={pattern}"))
        .await
        .expect("a prefix pattern grants the rooms under it");
    under.wait_type(std::time::Duration::from_secs(10), "welcome").await;
    let (status, body) = upgrade(&format!("{base}/v1/rooms/{room}x/ws?region=weur"), Some(&pattern)).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")), "the pattern is a prefix, not a glob");

    // A public room takes anonymous readers, and still refuses a broken token.
    let public = format!("{ws_base}/v1/rooms/public:news/ws?region=weur");
    let mut reader = Client::connect(&public).await.expect("anonymous read of a public room");
    reader.wait_type(std::time::Duration::from_secs(10), "welcome").await;
    assert_eq!(Client::connect_status(&format!("{public}&token=garbage")).await, Some(401));

    // HTTP endpoints: each needs its own capability.
    let msgs = format!("{base}/v1/rooms/{room}/messages");
    let stats_url = format!("{base}/v1/rooms/{room}/stats");
    let only_sub = format!("Bearer {exact}");
    let none = "";
    for (method, url, body, auth, status, code) in [
        ("POST", &msgs, Some(r#"{"data":1}"#), none, 401, "unauthorized"),
        ("POST", &msgs, Some(r#"{"data":1}"#), only_sub.as_str(), 403, "forbidden"),
        ("GET", &msgs, None, only_sub.as_str(), 403, "forbidden"),
        ("GET", &stats_url, None, only_sub.as_str(), 403, "forbidden"),
        ("DELETE", &msgs, None, only_sub.as_str(), 403, "forbidden"),
        ("GET", &stats_url, None, none, 401, "unauthorized"),
    ] {
        let r = http_request(method, url, &[("authorization", auth)], body).await.unwrap();
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!((r.status, v["error"].as_str()), (status, Some(code)), "{method} {url} with {auth:.20}: {v}");
    }
    let publisher = format!("Bearer {}", token(&claims(&room, &["pub"])));
    let r = http_request("POST", &msgs, &[("authorization", &publisher)], Some(r#"{"data":"hi"}"#)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let m = c.wait_type(std::time::Duration::from_secs(10), "msg").await;
    assert_eq!((m["data"].as_str(), m["from"].as_str()), (Some("hi"), Some("ana")), "from is the token's sub");
}

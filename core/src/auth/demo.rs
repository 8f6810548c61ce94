//! Demo tokens: `GET /v1/demo/token` hands a browser a short-lived guest
//! token for the demo rooms, so the demo page (and the SDK's browser tests)
//! can publish and use presence without anyone running `scripts/token`.
//!
//! It mints tokens for anyone who asks, so it must never be on in
//! production. Two independent guards, both required: `HERALD_DEMO_ROOMS`
//! must be non-empty (it is empty in `wrangler.toml`; only `scripts/dev`
//! and tests set it), and the request's URL must name a loopback host. On
//! Cloudflare the URL's host is the hostname the request was routed by, which
//! is never `localhost` or `127.0.0.1`; under `wrangler dev` it is the
//! client's `Host` header, so a page served on another name (a LAN address,
//! a tunnel) is refused as well. A refused request is answered as if the
//! endpoint did not exist.
//!
//! Everything here is pure; the Worker supplies the host, the clock and the
//! random guest tag.

use super::{Capability, Keys, RoomPatterns};
use crate::error::{ErrorCode, Rejection};
use serde::Serialize;

/// How long a demo token lives, in seconds: a demo session, not a login.
pub const DEMO_TOKEN_TTL_S: u64 = 3600;
/// Longest display name, in characters (Unicode scalar values).
pub const MAX_DEMO_NAME_CHARS: usize = 32;
/// What a guest may do in each demo room: everything but `admin`, which
/// would let one guest erase the room or read its counters.
pub const DEMO_CAPS: [Capability; 4] = [Capability::Sub, Capability::Pub, Capability::History, Capability::Presence];
/// Guest ids are this prefix and a random tag, so they are recognisable in
/// `from` and presence and never collide with real users' `sub`s by accident.
pub const GUEST_PREFIX: &str = "guest-";

/// The answer of `GET /v1/demo/token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DemoToken {
    /// The HS256 token.
    pub token: String,
    /// The guest's user id (the token's `sub`).
    pub sub: String,
    /// The room patterns the token grants [`DEMO_CAPS`] on.
    pub rooms: Vec<String>,
    /// Expiry, seconds since the Unix epoch (the token's `exp`).
    pub exp: u64,
}

/// Whether the demo endpoint exists for a request to `host` (the request
/// URL's host, as the URL parser gives it: `[::1]` with brackets).
pub fn demo_enabled(demo_rooms: &RoomPatterns, host: Option<&str>) -> bool {
    !demo_rooms.is_empty() && host.is_some_and(is_loopback_host)
}

/// `localhost`, `127.0.0.1` or `::1` (bracketed or not). Deliberately a
/// short exact list rather than "resolves to loopback": no name lookup, and
/// nothing a DNS record can make true.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || matches!(host, "127.0.0.1" | "[::1]" | "::1")
}

/// The `?name=` parameter: trimmed; blank or absent is no name; otherwise
/// 1 to [`MAX_DEMO_NAME_CHARS`] characters without control characters
/// (it is shown to every member of the room through presence).
pub fn demo_name(raw: Option<&str>) -> Result<Option<String>, Rejection> {
    let Some(name) = raw.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    if name.chars().count() > MAX_DEMO_NAME_CHARS {
        return Err(Rejection::new(
            ErrorCode::BadFrame,
            format!("name must be 1 to {MAX_DEMO_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Rejection::new(ErrorCode::BadFrame, "name must not contain control characters"));
    }
    Ok(Some(name.to_owned()))
}

/// The guest's `sub` from a random tag (the Worker uses 6 lowercase
/// alphanumerics: enough that two demo tabs do not collide).
pub fn guest_sub(tag: &str) -> String {
    format!("{GUEST_PREFIX}{tag}")
}

/// The claims of a demo token: [`DEMO_CAPS`] on each demo pattern, expiring
/// [`DEMO_TOKEN_TTL_S`] after `now_s`, with `info.name` when named.
pub fn demo_claims<'a>(sub: &'a str, demo_rooms: &'a RoomPatterns, name: Option<&'a str>, now_s: u64) -> DemoClaims<'a> {
    DemoClaims {
        sub,
        iat: now_s,
        exp: now_s.saturating_add(DEMO_TOKEN_TTL_S),
        rooms: DemoRooms(demo_rooms.patterns()),
        info: name.map(|name| DemoInfo { name }),
    }
}

/// A demo token's claims, serialized as the token carries them. A struct
/// rather than a `serde_json::Value`, whose map and builder code the
/// `.wasm` would otherwise hold for this one use.
#[derive(Debug, Serialize)]
pub struct DemoClaims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    rooms: DemoRooms<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<DemoInfo<'a>>,
}

#[derive(Debug, Serialize)]
struct DemoInfo<'a> {
    name: &'a str,
}

/// `{pattern: [DEMO_CAPS…]}` for each demo pattern.
#[derive(Debug)]
struct DemoRooms<'a>(&'a [String]);

impl Serialize for DemoRooms<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let caps: Vec<&str> = DEMO_CAPS.iter().map(|c| c.as_str()).collect();
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for pattern in self.0 {
            map.serialize_entry(pattern, &caps)?;
        }
        map.end()
    }
}

/// Signs the demo token with the first key of `HERALD_SECRET` (and its
/// `kid`, if it has one, so it keeps verifying while other keys are added).
/// `None` only if `keys` holds no key, which `Keys::parse` never yields.
pub fn mint_demo_token(keys: &Keys, demo_rooms: &RoomPatterns, sub: String, name: Option<&str>, now_s: u64) -> Option<DemoToken> {
    let (kid, secret) = keys.signing(None)?;
    let claims = demo_claims(&sub, demo_rooms, name, now_s);
    Some(DemoToken {
        token: super::mint_hs256_kid(&claims, kid, secret),
        sub,
        rooms: demo_rooms.patterns().to_vec(),
        exp: now_s.saturating_add(DEMO_TOKEN_TTL_S),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{authorize, verify_with_keys};

    const A: &str = "a-secret-of-at-least-thirty-two-bytes-0001";
    const B: &str = "b-secret-of-at-least-thirty-two-bytes-0002";
    const NOW: u64 = 1_800_000_000;

    fn demo() -> RoomPatterns {
        RoomPatterns::parse("demo:*")
    }

    #[test]
    fn on_only_with_rooms_and_a_loopback_host() {
        for host in ["localhost", "LocalHost", "127.0.0.1", "[::1]", "::1"] {
            assert!(demo_enabled(&demo(), Some(host)), "{host}");
        }
        for host in ["herald.example.workers.dev", "127.0.0.2", "192.168.1.5", "localhost.evil.com", "localhost.", "[::2]", "0.0.0.0", ""] {
            assert!(!demo_enabled(&demo(), Some(host)), "{host} is not loopback");
        }
        assert!(!demo_enabled(&demo(), None), "no host, no tokens");
        assert!(!demo_enabled(&RoomPatterns::parse(" , "), Some("localhost")), "no demo rooms: off");
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(demo_name(None).unwrap(), None);
        assert_eq!(demo_name(Some("   ")).unwrap(), None, "blank is no name");
        assert_eq!(demo_name(Some("  Ana ")).unwrap().as_deref(), Some("Ana"));
        let longest = "é".repeat(MAX_DEMO_NAME_CHARS);
        assert_eq!(demo_name(Some(&longest)).unwrap().as_deref(), Some(longest.as_str()), "counted in characters, not bytes");
        let e = demo_name(Some(&"x".repeat(MAX_DEMO_NAME_CHARS + 1))).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadFrame);
        assert!(e.message.contains("32"), "{}", e.message);
        assert_eq!(demo_name(Some("a\u{7}b")).unwrap_err().code, ErrorCode::BadFrame);
    }

    #[test]
    fn token_grants_demo_rooms_only_and_expires_in_an_hour() {
        let keys = Keys::parse(A).unwrap().unwrap();
        let t = mint_demo_token(&keys, &demo(), guest_sub("abc123"), Some("Ana"), NOW).unwrap();
        assert_eq!((t.sub.as_str(), t.rooms.as_slice(), t.exp), ("guest-abc123", ["demo:*".to_owned()].as_slice(), NOW + 3600));
        let claims = verify_with_keys(&t.token, &keys, NOW, 0).unwrap();
        assert_eq!((claims.sub.as_str(), claims.exp, claims.iat), ("guest-abc123", Some(NOW + 3600), Some(NOW)));
        assert_eq!(claims.info.as_deref(), Some(r#"{"name":"Ana"}"#));
        let caps = claims.rooms.caps_for("demo:x", &claims.sub);
        assert!(DEMO_CAPS.iter().all(|c| caps.has(*c)) && !caps.has(Capability::Admin), "{caps:?}");

        let none = RoomPatterns::default();
        let g = authorize(Some(&t.token), "lobby", Some(&keys), &none, NOW, 0).unwrap();
        assert_eq!(g.require(Capability::Sub).unwrap_err().code, ErrorCode::Forbidden, "nothing outside the demo rooms");
        assert!(verify_with_keys(&t.token, &keys, NOW + 3601, 0).is_err(), "expired after an hour");

        let rooms = demo();
        let unnamed = serde_json::to_value(demo_claims("guest-x", &rooms, None, NOW)).unwrap();
        assert!(unnamed.get("info").is_none(), "{unnamed}");
        assert_eq!(unnamed["rooms"]["demo:*"], serde_json::json!(["sub", "pub", "history", "presence"]), "{unnamed}");
    }

    #[test]
    fn signed_with_the_first_key_and_its_kid() {
        let keys = Keys::parse(&format!("new={B},old={A}")).unwrap().unwrap();
        let t = mint_demo_token(&keys, &demo(), guest_sub("q"), None, NOW).unwrap();
        let header = t.token.split('.').next().unwrap();
        use base64::Engine;
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap();
        let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
        assert_eq!(header["kid"], "new", "{header}");
        let only_new = Keys::parse(&format!("new={B}")).unwrap().unwrap();
        assert!(verify_with_keys(&t.token, &only_new, NOW, 0).is_ok());
    }
}

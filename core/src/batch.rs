//! Batch publish, `POST /v1/publish`: one request that publishes to many
//! rooms, for a backend notifying many users at once.
//!
//! Everything about the request is decided here, before any room is
//! touched: the body's two forms, its bounds, every room name, and the
//! token's `pub` on every room. Only a batch that passes all of it is
//! published, so a refused batch publishes nothing. The Worker then makes
//! the same Room call as a single HTTP publish for each room (at most
//! [`PARALLEL_ROOM_CALLS`] at a time) and answers with
//! [`answer_body`], one result per room in the order the body named them.

use crate::auth::{Capability, Claims};
use crate::client_frame::{bad, json_depth, present, FrameLimits, MAX_MID_CHARS};
use crate::error::{to_json, ErrorCode, Rejection};
use crate::room_name::validate_room;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::HashSet;

/// `HERALD_BATCH_MAX_ROOMS` by default: most rooms one batch names.
pub const DEFAULT_MAX_ROOMS: usize = 1000;
/// `HERALD_BATCH_MAX_BYTES` by default: the largest batch body.
pub const DEFAULT_MAX_BYTES: usize = 1 << 20;
/// Room calls one batch has in flight at once: enough to hide each call's
/// round trip, few enough that a batch of 1000 rooms does not hold 1000
/// requests (and their bodies) open at once.
pub const PARALLEL_ROOM_CALLS: usize = 32;

/// What a batch is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most rooms (`HERALD_BATCH_MAX_ROOMS`).
    pub max_rooms: usize,
    /// Largest body, in bytes (`HERALD_BATCH_MAX_BYTES`).
    pub max_bytes: usize,
    /// Each message's `data` is bounded like a single publish's:
    /// `HERALD_MAX_FRAME_BYTES` and `HERALD_MAX_DEPTH`.
    pub frame: FrameLimits,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits { max_rooms: DEFAULT_MAX_ROOMS, max_bytes: DEFAULT_MAX_BYTES, frame: FrameLimits::default() }
    }
}

/// One room's message in a batch.
#[derive(Debug)]
pub struct BatchEntry<'a> {
    pub room: String,
    pub data: &'a RawValue,
    pub mid: Option<String>,
    pub ephemeral: bool,
}


/// Both forms' fields, each kept raw so every mistake gets its own message.
#[derive(Deserialize)]
struct WireBatch<'a> {
    #[serde(default, borrow)]
    rooms: Option<Vec<&'a RawValue>>,
    #[serde(default, borrow)]
    messages: Option<Vec<WireMessage<'a>>>,
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    mid: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    ephemeral: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct WireMessage<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    room: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    mid: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    ephemeral: Option<&'a RawValue>,
}


/// A room name as a message shows it: quoted, and cut short.
fn shown(room: &str) -> String {
    let cut: String = room.chars().take(140).collect();
    format!("{cut:?}")
}

fn parse_room(raw: Option<&RawValue>, at: &str) -> Result<String, Rejection> {
    let raw = raw.ok_or_else(|| bad(format!("{at}: room is required")))?;
    let room: String = serde_json::from_str(raw.get()).map_err(|_| bad(format!("{at}: a room is a string")))?;
    validate_room(&room).map_err(|r| Rejection::new(ErrorCode::BadRoom, format!("{at}: room {}: {}", shown(&room), r.message)))?;
    Ok(room)
}

fn parse_data<'a>(raw: Option<&'a RawValue>, at: &str, limits: FrameLimits) -> Result<&'a RawValue, Rejection> {
    let data = raw.ok_or_else(|| bad(format!("{at}: data is required (any JSON value, null included)")))?;
    let len = data.get().len();
    if len > limits.max_bytes {
        return Err(Rejection::new(ErrorCode::TooLarge, format!("{at}: data is {len} bytes; the limit is {}", limits.max_bytes)));
    }
    let depth = json_depth(data.get());
    if depth > limits.max_depth {
        return Err(bad(format!("{at}: data is nested {depth} deep; the limit is {}", limits.max_depth)));
    }
    Ok(data)
}

fn parse_mid(raw: Option<&RawValue>, at: &str) -> Result<Option<String>, Rejection> {
    let Some(raw) = raw else { return Ok(None) };
    match serde_json::from_str::<String>(raw.get()) {
        Ok(s) if !s.is_empty() && s.chars().count() <= MAX_MID_CHARS => Ok(Some(s)),
        _ => Err(bad(format!("{at}: mid must be a non-empty string of at most {MAX_MID_CHARS} characters"))),
    }
}

fn parse_flag(raw: Option<&RawValue>, at: &str) -> Result<bool, Rejection> {
    match raw.map(RawValue::get) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(bad(format!("{at}: ephemeral must be true or false"))),
    }
}

/// Parses and checks a batch body, in either form:
///
/// - `{"rooms":[R…],"data":ANY,"mid":S?,"ephemeral":B?}`: the same message
///   to every room (the `mid` is per room: each room dedups on its own);
/// - `{"messages":[{"room":R,"data":ANY,"mid":S?,"ephemeral":B?}…]}`: a
///   message of its own for each room.
///
/// Refused, naming what is wrong (and where): a body over `max_bytes`
/// (413 `too_large`); not a JSON object, both forms or neither, no rooms,
/// more than `max_rooms`, a room named twice, a bad `mid` or `ephemeral`,
/// `data` missing or nested past `HERALD_MAX_DEPTH` (400 `bad_frame`); a
/// room name that is not one (400 `bad_room`); `data` over
/// `HERALD_MAX_FRAME_BYTES` (413 `too_large`).
pub fn parse_batch(body: &str, limits: BatchLimits) -> Result<Vec<BatchEntry<'_>>, Rejection> {
    if body.len() > limits.max_bytes {
        return Err(Rejection::new(
            ErrorCode::TooLarge,
            format!("the batch is {} bytes; the limit is {} (HERALD_BATCH_MAX_BYTES)", body.len(), limits.max_bytes),
        ));
    }
    if !body.trim_start().starts_with('{') {
        return Err(bad("a batch is a JSON object: {\"rooms\":[…],\"data\":…} or {\"messages\":[…]}"));
    }
    let wire: WireBatch<'_> = serde_json::from_str(body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let count = match (&wire.rooms, &wire.messages) {
        (Some(rooms), None) => rooms.len(),
        (None, Some(messages)) => messages.len(),
        _ => return Err(bad("a batch has either rooms (one message for every room) or messages (one per room), not both")),
    };
    if count == 0 {
        return Err(bad("a batch names at least one room"));
    }
    if count > limits.max_rooms {
        return Err(bad(format!("the batch names {count} rooms; the limit is {} (HERALD_BATCH_MAX_ROOMS)", limits.max_rooms)));
    }
    let entries = match (wire.rooms, wire.messages) {
        (Some(rooms), _) => {
            let data = parse_data(wire.data, "the batch", limits.frame)?;
            let mid = parse_mid(wire.mid, "the batch")?;
            let ephemeral = parse_flag(wire.ephemeral, "the batch")?;
            rooms
                .into_iter()
                .enumerate()
                .map(|(i, raw)| {
                    let room = parse_room(Some(raw), &format!("rooms[{i}]"))?;
                    Ok(BatchEntry { room, data, mid: mid.clone(), ephemeral })
                })
                .collect::<Result<Vec<_>, Rejection>>()?
        }
        (None, Some(messages)) => {
            if wire.data.is_some() || wire.mid.is_some() || wire.ephemeral.is_some() {
                return Err(bad("with messages, data, mid and ephemeral go in each message"));
            }
            messages
                .into_iter()
                .enumerate()
                .map(|(i, m)| {
                    let at = format!("messages[{i}]");
                    Ok(BatchEntry {
                        room: parse_room(m.room, &at)?,
                        data: parse_data(m.data, &at, limits.frame)?,
                        mid: parse_mid(m.mid, &at)?,
                        ephemeral: parse_flag(m.ephemeral, &at)?,
                    })
                })
                .collect::<Result<Vec<_>, Rejection>>()?
        }
        (None, None) => Vec::new(),
    };
    let mut seen = HashSet::with_capacity(entries.len());
    if let Some(twice) = entries.iter().find(|e| !seen.insert(e.room.as_str())) {
        return Err(bad(format!("room {} is named twice; a batch publishes to each room once", shown(&twice.room))));
    }
    Ok(entries)
}

/// Checks the token's `pub` on every room of the batch (403 `forbidden`
/// naming the first room it lacks), and returns for each room whether the
/// token holds `admin` there, which exempts it from the room's HTTP
/// publish rate exactly as for a single publish.
pub fn authorize_batch(claims: &Claims, entries: &[BatchEntry<'_>]) -> Result<Vec<bool>, Rejection> {
    entries
        .iter()
        .map(|e| {
            let caps = claims.grant(&e.room).caps;
            if !caps.has(Capability::Pub) {
                return Err(Rejection::new(
                    ErrorCode::Forbidden,
                    format!("the token does not grant pub on room {}; nothing was published", shown(&e.room)),
                ));
            }
            Ok(caps.has(Capability::Admin))
        })
        .collect()
}

/// One room's result, as the JSON object in `results`:
/// `{"room":R,"seq":N,"epoch":E,"ts":MS}` when published (`seq` null for
/// an ephemeral message), `{"room":R,"error":CODE,"message":TEXT}` when
/// not, with `"retry_after":S` (seconds) when the room is rate limiting.
///
/// `status`, `body` and `retry_after` are the Room's answer to the single
/// publish call, as a client of `POST …/messages` would have had them.
pub fn room_result(room: &str, status: u16, body: &str, retry_after: Option<&str>) -> String {
    #[derive(Deserialize)]
    struct Published {
        seq: Option<u64>,
        epoch: String,
        ts: u64,
    }
    #[derive(Deserialize)]
    struct Refused {
        error: String,
        #[serde(default)]
        message: String,
    }
    if status == 200 {
        if let Ok(p) = serde_json::from_str::<Published>(body) {
            #[derive(Serialize)]
            struct Out<'a> {
                room: &'a str,
                seq: Option<u64>,
                epoch: &'a str,
                ts: u64,
            }
            return to_json(&Out { room, seq: p.seq, epoch: &p.epoch, ts: p.ts });
        }
    }
    let (code, message) = match serde_json::from_str::<Refused>(body) {
        Ok(r) if status != 200 => {
            let code = ErrorCode::ALL.into_iter().find(|c| c.as_str() == r.error).unwrap_or(ErrorCode::Internal);
            (code, r.message)
        }
        _ => (ErrorCode::Internal, format!("the room answered {status}; retry")),
    };
    let retry_after = retry_after.and_then(|s| s.trim().parse::<u64>().ok());
    failed(room, code, &message, retry_after)
}

/// A room that could not be published to, as its result object.
pub fn failed(room: &str, code: ErrorCode, message: &str, retry_after_s: Option<u64>) -> String {
    #[derive(Serialize)]
    struct Out<'a> {
        room: &'a str,
        error: &'static str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
    }
    to_json(&Out { room, error: code.as_str(), message, retry_after: retry_after_s })
}

/// The code for a Room call that failed in the runtime (no answer at all):
/// `overloaded` when the runtime says the object is, else `internal`.
pub fn call_failure_code(error_text: &str) -> ErrorCode {
    if error_text.to_ascii_lowercase().contains("overloaded") {
        ErrorCode::Overloaded
    } else {
        ErrorCode::Internal
    }
}

/// The answer body, `{"results":[…]}`, from the results in input order.
pub fn answer_body(results: &[String]) -> String {
    let mut out = String::with_capacity(16 + results.iter().map(|r| r.len() + 1).sum::<usize>());
    out.push_str("{\"results\":[");
    for (i, r) in results.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r);
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{mint_hs256, verify_hs256};
    use serde_json::{json, Value};

    const LIMITS: BatchLimits = BatchLimits { max_rooms: 3, max_bytes: 1024, frame: FrameLimits { max_bytes: 64, max_depth: 3 } };

    fn code(body: &str) -> ErrorCode {
        parse_batch(body, LIMITS).unwrap_err().code
    }

    #[test]
    fn the_rooms_form_sends_one_message_everywhere() {
        let b = parse_batch(r#"{"rooms":["a","b:c"],"data":{"n":1},"mid":"m1","ephemeral":false}"#, LIMITS).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].room.as_str(), b[0].data.get(), b[0].mid.as_deref(), b[0].ephemeral), ("a", r#"{"n":1}"#, Some("m1"), false));
        assert_eq!((b[1].room.as_str(), b[1].data.get(), b[1].mid.as_deref()), ("b:c", r#"{"n":1}"#, Some("m1")));
        let e = parse_batch(r#"{"rooms":["a"],"data":null,"ephemeral":true}"#, LIMITS).unwrap();
        assert_eq!((e[0].data.get(), e[0].mid.as_deref(), e[0].ephemeral), ("null", None, true));
    }

    #[test]
    fn the_messages_form_sends_each_its_own() {
        let b = parse_batch(
            r#"{"messages":[{"room":"a","data":1,"mid":"x"},{"room":"b","data":"two","ephemeral":true}]}"#,
            LIMITS,
        )
        .unwrap();
        assert_eq!((b[0].room.as_str(), b[0].data.get(), b[0].mid.as_deref(), b[0].ephemeral), ("a", "1", Some("x"), false));
        assert_eq!((b[1].room.as_str(), b[1].data.get(), b[1].mid.as_deref(), b[1].ephemeral), ("b", "\"two\"", None, true));
    }

    #[test]
    fn refusals() {
        for bad in [
            "nope",
            "[]",
            "{}",
            r#"{"rooms":[],"data":1}"#,
            r#"{"rooms":["a"]}"#,
            r#"{"rooms":["a"],"messages":[{"room":"b","data":1}],"data":1}"#,
            r#"{"rooms":"a","data":1}"#,
            r#"{"rooms":[1],"data":1}"#,
            r#"{"rooms":["a","a"],"data":1}"#,
            r#"{"rooms":["a","b","c","d"],"data":1}"#,
            r#"{"rooms":["a"],"data":1,"mid":""}"#,
            r#"{"rooms":["a"],"data":1,"mid":7}"#,
            r#"{"rooms":["a"],"data":1,"ephemeral":"yes"}"#,
            r#"{"rooms":["a"],"data":[[[[1]]]]}"#,
            r#"{"messages":[{"room":"a"}]}"#,
            r#"{"messages":[{"data":1}]}"#,
            r#"{"messages":[{"room":"a","data":1},{"room":"a","data":2}]}"#,
            r#"{"messages":[{"room":"a","data":1}],"data":1}"#,
            r#"{"messages":[{"room":"a","data":1}],"mid":"m"}"#,
            r#"{"messages":{"room":"a","data":1}}"#,
        ] {
            assert_eq!(code(bad), ErrorCode::BadFrame, "{bad}");
        }
        let long_mid = format!(r#"{{"rooms":["a"],"data":1,"mid":"{}"}}"#, "m".repeat(MAX_MID_CHARS + 1));
        assert_eq!(code(&long_mid), ErrorCode::BadFrame);
        let ok_mid = format!(r#"{{"rooms":["a"],"data":1,"mid":"{}"}}"#, "m".repeat(MAX_MID_CHARS));
        assert!(parse_batch(&ok_mid, LIMITS).is_ok());
        for bad_room in [r#"{"rooms":["a","a/b"],"data":1}"#, r#"{"messages":[{"room":"","data":1}]}"#, r#"{"rooms":["-x"],"data":1}"#] {
            assert_eq!(code(bad_room), ErrorCode::BadRoom, "{bad_room}");
        }
        let e = parse_batch(r#"{"rooms":["ok","a b"],"data":1}"#, LIMITS).unwrap_err();
        assert!(e.message.contains("rooms[1]") && e.message.contains("\"a b\""), "{}", e.message);
        assert_eq!(code(&format!(r#"{{"rooms":["a"],"data":"{}"}}"#, "x".repeat(63))), ErrorCode::TooLarge);
        assert!(parse_batch(&format!(r#"{{"rooms":["a"],"data":"{}"}}"#, "x".repeat(62)), LIMITS).is_ok(), "64 bytes of data");
        assert_eq!(code(&format!(r#"{{"rooms":["a"],"data":1,"pad":"{}"}}"#, "x".repeat(1024))), ErrorCode::TooLarge);
    }

    const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes!!";

    fn claims(rooms: Value) -> Claims {
        verify_hs256(&mint_hs256(&json!({"sub":"svc","rooms":rooms}), SECRET), SECRET, 0, 0).unwrap()
    }

    #[test]
    fn pub_is_needed_on_every_room_and_admin_exempts_per_room() {
        let b = parse_batch(r#"{"rooms":["user:a","user:b","ops"],"data":1}"#, LIMITS).unwrap();
        let c = claims(json!({"user:*":["pub"],"ops":["pub","admin"]}));
        assert_eq!(authorize_batch(&c, &b).unwrap(), vec![false, false, true]);
        let partial = claims(json!({"user:a":["pub"],"user:b":["sub"],"ops":["pub"]}));
        let e = authorize_batch(&partial, &b).unwrap_err();
        assert_eq!(e.code, ErrorCode::Forbidden);
        assert!(e.message.contains("\"user:b\""), "names the first refused room: {}", e.message);
        let own = parse_batch(r#"{"rooms":["user:svc"],"data":1}"#, LIMITS).unwrap();
        assert_eq!(authorize_batch(&claims(json!({"user:{sub}":["pub"]})), &own).unwrap(), vec![false]);
    }

    #[test]
    fn results_in_the_documented_shapes() {
        let ok: Value = serde_json::from_str(&room_result("a", 200, r#"{"seq":4,"epoch":"e","ts":9}"#, None)).unwrap();
        assert_eq!(ok, json!({"room":"a","seq":4,"epoch":"e","ts":9}));
        let eph: Value = serde_json::from_str(&room_result("a", 200, r#"{"seq":null,"epoch":"e","ts":9}"#, None)).unwrap();
        assert_eq!(eph, json!({"room":"a","seq":null,"epoch":"e","ts":9}));
        let limited: Value =
            serde_json::from_str(&room_result("b", 429, r#"{"error":"rate_limited","message":"slow"}"#, Some("2"))).unwrap();
        assert_eq!(limited, json!({"room":"b","error":"rate_limited","message":"slow","retry_after":2}));
        let garbage: Value = serde_json::from_str(&room_result("c", 502, "<html>", None)).unwrap();
        assert_eq!(garbage["error"], "internal");
        let unknown: Value = serde_json::from_str(&room_result("c", 500, r#"{"error":"weird"}"#, None)).unwrap();
        assert_eq!(unknown["error"], "internal");
        assert_eq!(call_failure_code("Durable Object is overloaded. Too many requests queued."), ErrorCode::Overloaded);
        assert_eq!(call_failure_code("network lost"), ErrorCode::Internal);
        let body: Value = serde_json::from_str(&answer_body(&[room_result("a", 200, r#"{"seq":1,"epoch":"e","ts":1}"#, None), failed("b", ErrorCode::Internal, "x", None)])).unwrap();
        assert_eq!(body["results"].as_array().map(Vec::len), Some(2));
        assert_eq!(answer_body(&[]), r#"{"results":[]}"#);
    }
}

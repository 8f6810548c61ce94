//! Parsing what clients send: socket frames and HTTP publish bodies.
//!
//! Parsing borrows from the input and keeps `data` as raw JSON text, so a
//! message is validated once and never re-encoded on its way to the Room.

use crate::error::{ErrorCode, Rejection};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// Longest `mid` (message id for idempotent publish), in characters.
pub const MAX_MID_CHARS: usize = 64;
/// Longest string `id` a client may tag a request with, in characters.
pub const MAX_ID_CHARS: usize = 64;
/// Most messages one history read returns.
pub const MAX_HISTORY_LIMIT: u64 = 1000;
/// Messages a history read returns when it names no limit.
pub const DEFAULT_HISTORY_LIMIT: u64 = 100;
/// The largest seq a client may name: storage holds seqs as SQLite
/// integers, so anything above is refused as input, never failed on later.
pub const MAX_SEQ: u64 = i64::MAX as u64;
/// The longest epoch a client may name (the server's are 12 characters).
pub const MAX_EPOCH_LEN: usize = 64;

/// A seq a client named (`since`): a whole number from 0 to [`MAX_SEQ`].
pub fn parse_seq(text: &str) -> Result<u64, Rejection> {
    match text.trim().parse::<u64>() {
        Ok(n) if n <= MAX_SEQ => Ok(n),
        _ => Err(bad(format!("since must be a whole number from 0 to {MAX_SEQ}"))),
    }
}

/// The longest user id (a token's `sub`), in bytes.
pub const MAX_USER_BYTES: usize = 128;

/// A user named in a query (`?user=U`): what a token's `sub` may be, 1 to
/// [`MAX_USER_BYTES`] bytes.
pub fn parse_user(user: Option<&str>) -> Result<&str, Rejection> {
    match user {
        Some(u) if !u.is_empty() && u.len() <= MAX_USER_BYTES => Ok(u),
        _ => Err(bad(format!("user is required: a token's sub, 1 to {MAX_USER_BYTES} bytes"))),
    }
}

/// `?since=N&epoch=E` on a connect: both or neither.
pub fn parse_resume(since: Option<&str>, epoch: Option<&str>) -> Result<Option<(u64, String)>, Rejection> {
    match (since, epoch) {
        (None, None) => Ok(None),
        (Some(since), Some(epoch)) if !epoch.is_empty() && epoch.len() <= MAX_EPOCH_LEN => {
            Ok(Some((parse_seq(since)?, epoch.to_owned())))
        }
        _ => Err(bad(format!(
            "resume with both since=<last seq seen> and epoch=<epoch from the welcome, at most {MAX_EPOCH_LEN} bytes>"
        ))),
    }
}

/// Bounds every client frame is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest frame or body, in bytes (`HERALD_MAX_FRAME_BYTES`).
    pub max_bytes: usize,
    /// Deepest nesting of arrays and objects in `data` (`HERALD_MAX_DEPTH`).
    pub max_depth: usize,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits { max_bytes: 65_536, max_depth: 32 }
    }
}

/// The nesting depth of a JSON text, counted in one pass without recursion,
/// so a hostile `[[[[…` cannot overflow the wasm stack here or in any
/// client that parses the message later.
pub fn json_depth(text: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// A parsed client frame.
#[derive(Debug, PartialEq)]
pub enum ClientFrame<'a> {
    /// The literal text `ping` (normally answered by the runtime's
    /// auto-response before it reaches Herald).
    Ping,
    /// `{"t":"pub",...}`.
    Pub(Publish<'a>),
    /// `{"t":"history","id":I,"since":N,"limit":L}`.
    History(HistoryQuery<'a>),
    /// `{"t":"presence","id":I,"cursor":S,"limit":L}`: a snapshot page.
    Presence(PresenceQuery<'a>),
    /// `{"t":"read","id":I,"seq":N}`: the user has read up to seq N.
    Read(ReadMark<'a>),
}

/// A user's read mark: everything up to `seq` is read.
#[derive(Debug)]
pub struct ReadMark<'a> {
    pub id: Option<&'a RawValue>,
    pub seq: u64,
}

impl PartialEq for ReadMark<'_> {
    fn eq(&self, o: &Self) -> bool {
        (raw_text(self.id), self.seq) == (raw_text(o.id), o.seq)
    }
}

/// A page of the room's members after `cursor`, at most `limit`.
#[derive(Debug)]
pub struct PresenceQuery<'a> {
    pub id: Option<&'a RawValue>,
    pub cursor: Option<String>,
    pub limit: u64,
}

impl PartialEq for PresenceQuery<'_> {
    fn eq(&self, o: &Self) -> bool {
        (raw_text(self.id), &self.cursor, self.limit) == (raw_text(o.id), &o.cursor, o.limit)
    }
}

/// The longest presence cursor (a user id) accepted.
pub const MAX_CURSOR_CHARS: usize = 1024;

/// `cursor` and `limit` of a presence snapshot, from the socket frame's
/// JSON values or the query string: the limit 1 to 1000, 100 by default;
/// the cursor a string of at most [`MAX_CURSOR_CHARS`].
pub fn parse_presence_bounds(cursor: Option<&str>, limit: Option<&str>, json: bool) -> Result<(Option<String>, u64), Rejection> {
    use crate::presence::{DEFAULT_SNAPSHOT_LIMIT, MAX_SNAPSHOT_LIMIT};
    let limit = match limit {
        None => DEFAULT_SNAPSHOT_LIMIT,
        Some(t) => match t.trim().parse::<u64>() {
            Ok(n) if (1..=MAX_SNAPSHOT_LIMIT).contains(&n) => n,
            _ => return Err(bad(format!("limit must be an integer from 1 to {MAX_SNAPSHOT_LIMIT}"))),
        },
    };
    let cursor = match cursor {
        None | Some("null") if json => None,
        None => None,
        Some(t) => {
            let text = if json { serde_json::from_str::<String>(t).map_err(|_| bad("cursor must be a string"))? } else { t.to_owned() };
            if text.chars().count() > MAX_CURSOR_CHARS {
                return Err(bad(format!("cursor must be at most {MAX_CURSOR_CHARS} characters")));
            }
            Some(text)
        }
    };
    Ok((cursor, limit))
}

/// A read of stored messages with `seq > since`, at most `limit`.
#[derive(Debug)]
pub struct HistoryQuery<'a> {
    pub id: Option<&'a RawValue>,
    pub since: u64,
    pub limit: u64,
}

impl PartialEq for HistoryQuery<'_> {
    fn eq(&self, o: &Self) -> bool {
        (raw_text(self.id), self.since, self.limit) == (raw_text(o.id), o.since, o.limit)
    }
}

/// A publish request, from a socket or from HTTP.
#[derive(Debug)]
pub struct Publish<'a> {
    /// The client's request id, echoed in the `ack`; a number or a string.
    pub id: Option<&'a RawValue>,
    /// The payload, any JSON value, kept as its original text.
    pub data: &'a RawValue,
    /// Client-chosen message id.
    pub mid: Option<String>,
    /// Deliver to current subscribers only: no seq, never stored.
    pub ephemeral: bool,
}

fn raw_text(raw: Option<&RawValue>) -> Option<&str> {
    raw.map(RawValue::get)
}

impl PartialEq for Publish<'_> {
    fn eq(&self, o: &Self) -> bool {
        (raw_text(self.id), self.data.get(), &self.mid, self.ephemeral)
            == (raw_text(o.id), o.data.get(), &o.mid, o.ephemeral)
    }
}

/// A frame that was refused, with the request id when one could be read so
/// the client can match the error to its request.
#[derive(Debug)]
pub struct FrameError<'a> {
    pub id: Option<&'a RawValue>,
    pub rejection: Rejection,
}

/// Distinguishes `"data": null` (present) from an absent `data`.
impl PartialEq for FrameError<'_> {
    fn eq(&self, o: &Self) -> bool {
        (raw_text(self.id), &self.rejection) == (raw_text(o.id), &o.rejection)
    }
}

pub(crate) fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct WireFrame<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    t: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    mid: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    ephemeral: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    since: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    limit: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    cursor: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    seq: Option<&'a RawValue>,
}

pub(crate) fn bad(message: impl Into<String>) -> Rejection {
    Rejection::new(ErrorCode::BadFrame, message)
}

fn too_large(len: usize, max: usize) -> Rejection {
    Rejection::new(
        ErrorCode::TooLarge,
        format!("frame is {len} bytes; the limit is {max}"),
    )
}

/// Parses a JSON object; arrays and scalars are refused up front because
/// serde would otherwise accept a struct written as a sequence.
fn parse_object(text: &str) -> Result<WireFrame<'_>, Rejection> {
    if !text.trim_start().starts_with('{') {
        return Err(bad("a frame must be a JSON object"));
    }
    serde_json::from_str::<WireFrame<'_>>(text).map_err(|e| bad(format!("invalid JSON: {e}")))
}

fn parse_id(raw: Option<&RawValue>) -> Result<Option<&RawValue>, Rejection> {
    let Some(raw) = raw else { return Ok(None) };
    let text = raw.get();
    let ok = match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text)
            .map(|s| s.chars().count() <= MAX_ID_CHARS)
            .unwrap_or(false),
        Some(b'-' | b'0'..=b'9') => true,
        _ => false,
    };
    if ok {
        Ok(Some(raw))
    } else {
        Err(bad(format!(
            "id must be a number or a string of at most {MAX_ID_CHARS} characters"
        )))
    }
}

fn parse_mid(raw: Option<&RawValue>) -> Result<Option<String>, Rejection> {
    let Some(raw) = raw else { return Ok(None) };
    match serde_json::from_str::<String>(raw.get()) {
        Ok(s) if !s.is_empty() && s.chars().count() <= MAX_MID_CHARS => Ok(Some(s)),
        _ => Err(bad(format!(
            "mid must be a non-empty string of at most {MAX_MID_CHARS} characters"
        ))),
    }
}

fn parse_flag(raw: Option<&RawValue>, name: &str) -> Result<bool, Rejection> {
    match raw.map(RawValue::get) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(bad(format!("{name} must be true or false"))),
    }
}

/// `since` and `limit` of a history read, from JSON numbers or query-string
/// text alike: `since` defaults to 0, `limit` to 100 and is capped at 1000.
pub fn parse_history_bounds(since: Option<&str>, limit: Option<&str>) -> Result<(u64, u64), Rejection> {
    let since = match since {
        None => 0,
        Some(s) => parse_seq(s)?,
    };
    let limit = match limit {
        None => DEFAULT_HISTORY_LIMIT,
        Some(s) => match s.trim().parse::<u64>() {
            Ok(n) if n > 0 => n.min(MAX_HISTORY_LIMIT),
            _ => return Err(bad(format!("limit must be a whole number from 1 to {MAX_HISTORY_LIMIT}"))),
        },
    };
    Ok((since, limit))
}

fn require_data(raw: Option<&RawValue>, max_depth: usize) -> Result<&RawValue, Rejection> {
    let data = raw.ok_or_else(|| bad("data is required (any JSON value, null included)"))?;
    let depth = json_depth(data.get());
    if depth > max_depth {
        return Err(bad(format!("data is nested {depth} deep; the limit is {max_depth}")));
    }
    Ok(data)
}

/// Parses one socket text frame of at most `max_bytes`.
pub fn parse_client_frame(text: &str, limits: FrameLimits) -> Result<ClientFrame<'_>, FrameError<'_>> {
    let fail = |rejection| FrameError { id: None, rejection };
    if text.len() > limits.max_bytes {
        return Err(fail(too_large(text.len(), limits.max_bytes)));
    }
    if text == "ping" {
        return Ok(ClientFrame::Ping);
    }
    let wire = parse_object(text).map_err(fail)?;
    let id = parse_id(wire.id).map_err(fail)?;
    let with_id = |rejection| FrameError { id, rejection };
    let t = wire
        .t
        .ok_or_else(|| bad("t is required"))
        .and_then(|raw| serde_json::from_str::<String>(raw.get()).map_err(|_| bad("t must be a string")))
        .map_err(with_id)?;
    match t.as_str() {
        "pub" => Ok(ClientFrame::Pub(Publish {
            id,
            data: require_data(wire.data, limits.max_depth).map_err(with_id)?,
            mid: parse_mid(wire.mid).map_err(with_id)?,
            ephemeral: parse_flag(wire.ephemeral, "ephemeral").map_err(with_id)?,
        })),
        "history" => {
            let (since, limit) =
                parse_history_bounds(wire.since.map(RawValue::get), wire.limit.map(RawValue::get)).map_err(with_id)?;
            Ok(ClientFrame::History(HistoryQuery { id, since, limit }))
        }
        "presence" => {
            let (cursor, limit) =
                parse_presence_bounds(wire.cursor.map(RawValue::get), wire.limit.map(RawValue::get), true).map_err(with_id)?;
            Ok(ClientFrame::Presence(PresenceQuery { id, cursor, limit }))
        }
        "read" => {
            let seq = wire.seq.ok_or_else(|| bad("seq is required: the last seq the user has read")).map_err(with_id)?;
            let seq = parse_seq(seq.get())
                .map_err(|_| bad(format!("seq must be a whole number from 0 to {MAX_SEQ}")))
                .map_err(with_id)?;
            Ok(ClientFrame::Read(ReadMark { id, seq }))
        }
        other => {
            let shown: String = other.chars().take(32).collect();
            Err(with_id(bad(format!("unknown frame type {shown:?}"))))
        }
    }
}

/// Parses the body of `POST /v1/rooms/{room}/messages`: `{"data":ANY,"mid":S?}`.
pub fn parse_http_publish(body: &str, limits: FrameLimits) -> Result<Publish<'_>, Rejection> {
    if body.len() > limits.max_bytes {
        return Err(too_large(body.len(), limits.max_bytes));
    }
    let wire = parse_object(body)?;
    Ok(Publish {
        id: None,
        data: require_data(wire.data, limits.max_depth)?,
        mid: parse_mid(wire.mid)?,
        ephemeral: parse_flag(wire.ephemeral, "ephemeral")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024;
    const LIMITS: FrameLimits = FrameLimits { max_bytes: MAX, max_depth: 4 };

    fn code(text: &str) -> ErrorCode {
        parse_client_frame(text, LIMITS).unwrap_err().rejection.code
    }

    #[test]
    fn parses_a_full_pub() {
        let f = parse_client_frame(
            r#"{"t":"pub","id":7,"data":{"a":[1,2]},"mid":"m-1","ephemeral":true,"extra":1}"#,
            LIMITS,
        )
        .unwrap();
        let ClientFrame::Pub(p) = f else { panic!("not a pub") };
        assert_eq!(p.id.unwrap().get(), "7");
        assert_eq!(p.data.get(), r#"{"a":[1,2]}"#);
        assert_eq!(p.mid.as_deref(), Some("m-1"));
        assert!(p.ephemeral);
    }

    #[test]
    fn null_data_is_data() {
        let ClientFrame::Pub(p) = parse_client_frame(r#"{"t":"pub","data":null}"#, LIMITS).unwrap() else {
            panic!()
        };
        assert_eq!(p.data.get(), "null");
        assert!(p.id.is_none() && !p.ephemeral && p.mid.is_none());
    }

    #[test]
    fn ping_is_its_own_frame() {
        assert_eq!(parse_client_frame("ping", LIMITS).unwrap(), ClientFrame::Ping);
    }

    #[test]
    fn bad_frames() {
        assert_eq!(code("not json"), ErrorCode::BadFrame);
        assert_eq!(code("[1,2]"), ErrorCode::BadFrame);
        assert_eq!(code("42"), ErrorCode::BadFrame);
        assert_eq!(code(r#"{"data":1}"#), ErrorCode::BadFrame);
        assert_eq!(code(r#"{"t":"nope","data":1}"#), ErrorCode::BadFrame);
        assert_eq!(code(r#"{"t":"pub"}"#), ErrorCode::BadFrame);
        assert_eq!(code(r#"{"t":"pub","data":1,"mid":""}"#), ErrorCode::BadFrame);
        assert_eq!(code(r#"{"t":"pub","data":1,"mid":7}"#), ErrorCode::BadFrame);
        let long_mid = format!(r#"{{"t":"pub","data":1,"mid":"{}"}}"#, "m".repeat(65));
        assert_eq!(code(&long_mid), ErrorCode::BadFrame);
        assert_eq!(code(r#"{"t":"pub","data":1,"ephemeral":"yes"}"#), ErrorCode::BadFrame);
        assert_eq!(code(r#"{"t":"pub","data":1,"t":"pub"}"#), ErrorCode::BadFrame);
        assert_eq!(code(r#"{"t":"pub","id":{},"data":1}"#), ErrorCode::BadFrame);
        assert_eq!(code(&format!(r#"{{"t":"pub","data":"{}"}}"#, "x".repeat(MAX))), ErrorCode::TooLarge);
    }

    #[test]
    fn depth_is_counted_outside_strings() {
        assert_eq!(json_depth("1"), 0);
        assert_eq!(json_depth(r#"[{"a":[1]}]"#), 3);
        assert_eq!(json_depth(r#""[[[[\"[[""#), 0);
        assert_eq!(json_depth(r#"{"a":"]]]","b":[[1]]}"#), 3);
        assert!(parse_client_frame(r#"{"t":"pub","data":[[[[1]]]]}"#, LIMITS).is_ok());
        assert_eq!(code(r#"{"t":"pub","data":[[[[[1]]]]]}"#), ErrorCode::BadFrame);
        assert_eq!(
            parse_http_publish(r#"{"data":{"a":{"b":{"c":{"d":{}}}}}}"#, LIMITS).unwrap_err().code,
            ErrorCode::BadFrame
        );
    }

    #[test]
    fn presence_frames() {
        let ClientFrame::Presence(p) = parse_client_frame(r#"{"t":"presence","id":2}"#, LIMITS).unwrap() else { panic!() };
        assert_eq!((p.id.map(RawValue::get), p.cursor, p.limit), (Some("2"), None, 100));
        let ClientFrame::Presence(p) = parse_client_frame(r#"{"t":"presence","cursor":"bo","limit":5}"#, LIMITS).unwrap() else { panic!() };
        assert_eq!((p.cursor.as_deref(), p.limit), (Some("bo"), 5));
        for bad in [r#"{"t":"presence","limit":0}"#, r#"{"t":"presence","limit":1001}"#, r#"{"t":"presence","cursor":5}"#] {
            assert_eq!(parse_client_frame(bad, LIMITS).unwrap_err().rejection.code, ErrorCode::BadFrame, "{bad}");
        }
        assert_eq!(parse_presence_bounds(Some("a b"), Some("7"), false).unwrap(), (Some("a b".into()), 7));
        assert!(parse_presence_bounds(None, Some("x"), false).is_err());
    }

    #[test]
    fn history_frames() {
        let f = parse_client_frame(r#"{"t":"history","id":1,"since":5,"limit":5000}"#, LIMITS).unwrap();
        let ClientFrame::History(h) = f else { panic!() };
        assert_eq!((h.id.unwrap().get(), h.since, h.limit), ("1", 5, MAX_HISTORY_LIMIT));
        let ClientFrame::History(h) = parse_client_frame(r#"{"t":"history"}"#, LIMITS).unwrap() else { panic!() };
        assert_eq!((h.since, h.limit), (0, DEFAULT_HISTORY_LIMIT));
        assert_eq!(parse_seq("9223372036854775807"), Ok(MAX_SEQ));
        assert!(parse_seq("9223372036854775808").is_err(), "past what storage can hold: refused, not failed on");
        assert_eq!(parse_resume(Some("3"), Some("e")), Ok(Some((3, "e".into()))));
        assert_eq!(parse_resume(None, None), Ok(None));
        for (since, epoch) in [(Some("3"), None), (None, Some("e")), (Some("3"), Some("")), (Some("18446744073709551615"), Some("e"))] {
            assert!(parse_resume(since, epoch).is_err(), "{since:?} {epoch:?}");
        }
        assert!(parse_resume(Some("1"), Some(&"e".repeat(MAX_EPOCH_LEN + 1))).is_err());
        for bad in [r#"{"t":"history","since":-1}"#, r#"{"t":"history","since":"x"}"#, r#"{"t":"history","limit":0}"#, r#"{"t":"history","since":1.5}"#] {
            assert_eq!(code(bad), ErrorCode::BadFrame, "{bad}");
        }
        assert_eq!(parse_history_bounds(Some("3"), Some("10")).unwrap(), (3, 10));
        assert!(parse_history_bounds(Some("a"), None).is_err());
    }

    #[test]
    fn users_in_queries() {
        assert_eq!(parse_user(Some("ana 🦀")), Ok("ana 🦀"));
        assert!(parse_user(None).is_err() && parse_user(Some("")).is_err());
        assert!(parse_user(Some(&"x".repeat(MAX_USER_BYTES))).is_ok());
        assert_eq!(parse_user(Some(&"x".repeat(MAX_USER_BYTES + 1))).unwrap_err().code, ErrorCode::BadFrame);
    }

    #[test]
    fn read_frames() {
        let ClientFrame::Read(r) = parse_client_frame(r#"{"t":"read","seq":3}"#, LIMITS).unwrap() else { panic!() };
        assert_eq!((r.id.map(RawValue::get), r.seq), (None, 3));
        let ClientFrame::Read(r) = parse_client_frame(r#"{"t":"read","id":"r1","seq":0}"#, LIMITS).unwrap() else { panic!() };
        assert_eq!((r.id.map(RawValue::get), r.seq), (Some(r#""r1""#), 0));
        for bad in [
            r#"{"t":"read"}"#,
            r#"{"t":"read","seq":-1}"#,
            r#"{"t":"read","seq":1.5}"#,
            r#"{"t":"read","seq":"3"}"#,
            r#"{"t":"read","seq":null}"#,
            r#"{"t":"read","seq":9223372036854775808}"#,
        ] {
            assert_eq!(code(bad), ErrorCode::BadFrame, "{bad}");
        }
        let e = parse_client_frame(r#"{"t":"read","id":4,"seq":"x"}"#, LIMITS).unwrap_err();
        assert_eq!(e.id.map(RawValue::get), Some("4"), "the err carries the id");
    }

    #[test]
    fn errors_echo_a_readable_id() {
        let e = parse_client_frame(r#"{"t":"pub","id":"req-1"}"#, LIMITS).unwrap_err();
        assert_eq!(e.id.unwrap().get(), "\"req-1\"");
        let e = parse_client_frame(r#"{"t":"bogus","id":3,"data":0}"#, LIMITS).unwrap_err();
        assert_eq!(e.id.unwrap().get(), "3");
    }

    #[test]
    fn http_publish_body() {
        let p = parse_http_publish(r#"{"data":"hi","mid":"x"}"#, LIMITS).unwrap();
        assert_eq!(p.data.get(), "\"hi\"");
        assert_eq!(parse_http_publish("{}", LIMITS).unwrap_err().code, ErrorCode::BadFrame);
        assert_eq!(parse_http_publish("[]", LIMITS).unwrap_err().code, ErrorCode::BadFrame);
        assert_eq!(
            parse_http_publish(&"x".repeat(MAX + 1), LIMITS).unwrap_err().code,
            ErrorCode::TooLarge
        );
    }
}

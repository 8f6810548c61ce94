//! Webhooks: the Room tells a backend when it fills or empties and who
//! comes and goes, by POSTing signed batches of events to
//! `HERALD_WEBHOOK_URL`.
//!
//! Sans-IO like the Room: [`Webhooks`] takes membership changes and the
//! answers to its requests, each with `now`, and gives out
//! [`WebhookAction`]s (persist, forget, send) from [`Webhooks::poll`] and
//! one deadline ([`Webhooks::next_deadline`]) that the Room folds into its
//! single alarm. The Room drains it like its own actions.
//!
//! **Events.** `member_added` when the presence roster gains a member (a
//! user's first connection anywhere), `member_removed` when presence emits
//! its leave (the last connection closed and `HERALD_PRESENCE_GRACE_MS`
//! passed). `room_occupied` when the room goes from no members to some,
//! before that member's `member_added`; `room_vacated` when the last
//! member's `member_removed` has been followed by `HERALD_WEBHOOK_VACATE_MS`
//! with no new member. The debounce starts where the grace ends, so a
//! vacated room is announced grace + vacate after the last connection
//! closed; a reconnect within the grace sends nothing, one within the
//! debounce sends `member_removed` and `member_added` but no vacated and no
//! second occupied. Member events go out per member whatever the room's
//! size (presence's counts mode is for clients); the queue bound is what
//! limits them.
//!
//! **Delivery.** Events are numbered and queued in order; one request per
//! room is in flight at a time, carrying up to [`MAX_BATCH_EVENTS`] events
//! (and [`MAX_BATCH_BYTES`]) from the front of the queue. A 2xx answer
//! removes them; anything else (another status, a network error, a
//! timeout) sends the same events again after a jittered backoff
//! ([`RETRY`]). An event still undelivered `HERALD_WEBHOOK_RETRY_S` after
//! it was made is dropped at its next failure, and counted.

mod machine;
mod queue;
mod sign;

pub use machine::{Outcome, SavedWebhooks, WebhookAction, WebhookRequest, WebhookState, WebhookStats, Webhooks};
pub use queue::{Event, EventQueue, MAX_QUEUE_BYTES, MAX_QUEUE_EVENTS, OCCUPANCY_RESERVE};
pub use sign::{signature, verify, SIGNATURE_HEADER, TIMESTAMP_HEADER};

use crate::backoff::Backoff;
use crate::config::ConfigError;

/// Most events in one request.
pub const MAX_BATCH_EVENTS: usize = 100;
/// Most bytes of event JSON in one request (a single larger event still
/// goes, alone).
pub const MAX_BATCH_BYTES: usize = 64 * 1024;
/// Delay before a failed request is sent again: 0.5–1 s after the first
/// failure, doubling to 30–60 s.
pub const RETRY: Backoff = Backoff { base_ms: 1_000, cap_ms: 60_000 };
/// How long the glue lets one request run before it counts as failed.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// The shortest retry window allowed: events are retried for at least
/// five minutes.
pub const MIN_RETRY_S: u64 = 300;

/// `HERALD_WEBHOOK_SECRET`, never shown in logs or errors.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        WebhookSecret(bytes.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookSecret(<{} bytes>)", self.0.len())
    }
}

/// `HERALD_WEBHOOK_*`: present only when `HERALD_WEBHOOK_URL` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// `HERALD_WEBHOOK_URL`: where events are POSTed (http or https).
    pub url: String,
    /// `HERALD_WEBHOOK_SECRET`: the HMAC key of the signature.
    pub secret: WebhookSecret,
    /// `HERALD_WEBHOOK_VACATE_MS`: how long a room must stay empty before
    /// `room_vacated`.
    pub vacate_ms: u64,
    /// `HERALD_WEBHOOK_RETRY_S`, in ms: how long an event is retried.
    pub retry_ms: u64,
}

impl WebhookConfig {
    /// Reads `HERALD_WEBHOOK_*`. `Ok(None)` when the URL is empty or unset
    /// (webhooks off). With a URL, the secret is required, of at least
    /// [`crate::auth::MIN_SECRET_BYTES`]; malformed values are errors, and
    /// the secret's value never appears in one.
    pub fn from_vars<F: Fn(&str) -> Option<String>>(lookup: &F) -> Result<Option<WebhookConfig>, ConfigError> {
        let int = |var: &'static str, range: std::ops::RangeInclusive<u64>, expected: &'static str, default: u64| match lookup(var) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if range.contains(&n) => Ok(n),
                _ => Err(ConfigError { var, value: v, expected }),
            },
        };
        let vacate_ms = int("HERALD_WEBHOOK_VACATE_MS", 0..=3_600_000, "milliseconds, from 0 to 3600000", 2_000)?;
        let retry_s = int("HERALD_WEBHOOK_RETRY_S", MIN_RETRY_S..=86_400, "seconds, from 300 to 86400", MIN_RETRY_S)?;
        let url = lookup("HERALD_WEBHOOK_URL").unwrap_or_default();
        let url = url.trim();
        if url.is_empty() {
            return Ok(None);
        }
        let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
        let host_ok = rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'));
        if !host_ok || url.len() > 2048 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ConfigError {
                var: "HERALD_WEBHOOK_URL",
                value: url.to_owned(),
                expected: "an http:// or https:// URL (at most 2048 bytes), or empty for no webhooks",
            });
        }
        let secret = lookup("HERALD_WEBHOOK_SECRET").unwrap_or_default();
        let secret = secret.trim();
        if secret.len() < crate::auth::MIN_SECRET_BYTES {
            return Err(ConfigError {
                var: "HERALD_WEBHOOK_SECRET",
                value: format!("<{} bytes, not shown>", secret.len()),
                expected: "a secret of at least 32 bytes, required when HERALD_WEBHOOK_URL is set \
                           (`npx wrangler secret put HERALD_WEBHOOK_SECRET`)",
            });
        }
        Ok(Some(WebhookConfig { url: url.to_owned(), secret: WebhookSecret::new(secret.as_bytes()), vacate_ms, retry_ms: retry_s * 1000 }))
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    RoomOccupied,
    RoomVacated,
    MemberAdded,
    MemberRemoved,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::RoomOccupied => "room_occupied",
            EventType::RoomVacated => "room_vacated",
            EventType::MemberAdded => "member_added",
            EventType::MemberRemoved => "member_removed",
        }
    }

    /// Occupancy events may use the queue's reserve.
    pub fn is_occupancy(self) -> bool {
        matches!(self, EventType::RoomOccupied | EventType::RoomVacated)
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

/// `{"id":I,"type":T,"room":R,"user":U,"ts":MS}`, `user` only for member
/// events.
pub fn event_json(id: &str, kind: EventType, room: &str, user: Option<&str>, ts: u64) -> String {
    let user = user.map_or(String::new(), |u| format!(r#","user":{}"#, json_string(u)));
    format!(r#"{{"id":{},"type":"{}","room":{}{user},"ts":{ts}}}"#, json_string(id), kind.as_str(), json_string(room))
}

/// The request body: `{"sent_at":MS,"events":[…]}`. `sent_at` is the
/// attempt's time (the `x-herald-timestamp` header), inside the body so
/// the signature covers it.
pub fn body<'a>(sent_at: u64, events: impl Iterator<Item = &'a str>) -> String {
    let events: Vec<&str> = events.collect();
    format!(r#"{{"sent_at":{sent_at},"events":[{}]}}"#, events.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn config_is_off_without_a_url_and_needs_a_secret_with_one() {
        assert_eq!(WebhookConfig::from_vars(&vars(&[])), Ok(None));
        assert_eq!(WebhookConfig::from_vars(&vars(&[("HERALD_WEBHOOK_URL", " ")])), Ok(None));
        let c = WebhookConfig::from_vars(&vars(&[("HERALD_WEBHOOK_URL", "https://example.com/hook"), ("HERALD_WEBHOOK_SECRET", SECRET)]))
            .unwrap()
            .unwrap();
        assert_eq!((c.url.as_str(), c.vacate_ms, c.retry_ms), ("https://example.com/hook", 2_000, 300_000));
        assert!(!format!("{c:?}").contains(SECRET), "the secret never reaches a log");
        for (pairs, var) in [
            (vec![("HERALD_WEBHOOK_URL", "https://example.com/hook")], "HERALD_WEBHOOK_SECRET"),
            (vec![("HERALD_WEBHOOK_URL", "https://example.com/hook"), ("HERALD_WEBHOOK_SECRET", "short")], "HERALD_WEBHOOK_SECRET"),
            (vec![("HERALD_WEBHOOK_URL", "ftp://example.com"), ("HERALD_WEBHOOK_SECRET", SECRET)], "HERALD_WEBHOOK_URL"),
            (vec![("HERALD_WEBHOOK_URL", "https://"), ("HERALD_WEBHOOK_SECRET", SECRET)], "HERALD_WEBHOOK_URL"),
            (vec![("HERALD_WEBHOOK_VACATE_MS", "soon")], "HERALD_WEBHOOK_VACATE_MS"),
            (vec![("HERALD_WEBHOOK_RETRY_S", "60")], "HERALD_WEBHOOK_RETRY_S"),
        ] {
            let err = WebhookConfig::from_vars(&vars(&pairs)).unwrap_err();
            assert_eq!(err.var, var, "{pairs:?}");
            assert!(!err.to_string().contains("short"), "the secret's value is not shown: {err}");
        }
    }

    #[test]
    fn events_and_bodies_are_json() {
        let e = event_json("p-1", EventType::MemberAdded, "lob\"by", Some("ana"), 5);
        let v: serde_json::Value = serde_json::from_str(&e).unwrap();
        assert_eq!(v, json!({"id":"p-1","type":"member_added","room":"lob\"by","user":"ana","ts":5}));
        let o = event_json("p-2", EventType::RoomVacated, "r", None, 6);
        let b: serde_json::Value = serde_json::from_str(&body(9, [e.as_str(), o.as_str()].into_iter())).unwrap();
        assert_eq!(b["sent_at"], 9);
        assert_eq!(b["events"][1], json!({"id":"p-2","type":"room_vacated","room":"r","ts":6}));
    }
}

//! The only place that knows how each server frames things.
//!
//! * `herald`: Herald's protocol. A subscriber counts as open on its
//!   `welcome` frame; messages arrive as `{"t":"msg",...,"data":D}` objects or
//!   as a JSON array (batch) of them; a publish is the text frame
//!   `{"t":"pub","data":D}` on a publisher WebSocket of the same room.
//! * `plain`: the baselines (`bench/baselines/*`). A subscriber is open when
//!   the upgrade completes; every frame is exactly the published string;
//!   a publish is D itself as a text frame on a publisher WebSocket, which
//!   the server broadcasts to every socket of the room.
//!
//! In both, D is `{"t0":<ns since loadgen start>,"i":<message index>}`, and
//! every server is published to through the same route (one publisher
//! WebSocket through wrangler's proxy worker), so the only difference between
//! servers is what they do with the string. HTTP publishing was dropped: in
//! `wrangler dev` each HTTP request costs milliseconds of CPU in the proxy
//! and the runtime, which would measure the dev server, not the fan-out.

use anyhow::{bail, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Herald,
    Plain,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Mode> {
        match s {
            "herald" => Ok(Mode::Herald),
            "plain" => Ok(Mode::Plain),
            other => bail!("unknown mode {other:?} (herald | plain)"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Herald => "herald",
            Mode::Plain => "plain",
        }
    }

    /// The subscriber URL; `region` and the token (`HERALD_TOKEN` in the
    /// environment, which scripts/bench mints) only mean something to Herald.
    pub fn ws_url(self, port: u16, room: &str, region: Option<&str>) -> String {
        let base = format!("ws://127.0.0.1:{port}/v1/rooms/{room}/ws");
        if self != Mode::Herald {
            return base;
        }
        let mut query = Vec::new();
        if let Some(r) = region {
            query.push(format!("region={r}"));
        }
        if let Ok(token) = std::env::var("HERALD_TOKEN") {
            query.push(format!("token={token}"));
        }
        if query.is_empty() {
            base
        } else {
            format!("{base}?{}", query.join("&"))
        }
    }

    /// The publisher's text frame for message `i` sent at `t0` ns.
    pub fn publish_frame(self, t0: u64, i: u64) -> String {
        match self {
            Mode::Herald => format!(r#"{{"t":"pub","data":{{"t0":{t0},"i":{i}}}}}"#),
            Mode::Plain => format!(r#"{{"t0":{t0},"i":{i}}}"#),
        }
    }

    /// Whether a subscriber must see a first frame (Herald's `welcome`)
    /// before it counts as open.
    pub fn waits_for_welcome(self) -> bool {
        self == Mode::Herald
    }

    /// A refusal of a publish (Herald's `err` frame).
    pub fn is_error(self, text: &str) -> bool {
        self == Mode::Herald && text.contains(r#""t":"err""#)
    }

    pub fn is_welcome(self, text: &str) -> bool {
        match self {
            Mode::Herald => text.contains(r#""t":"welcome""#),
            Mode::Plain => true,
        }
    }
}

/// Calls `each(t0, i)` for every benchmark message in a text frame (one
/// message, or a Herald batch of several) and returns how many it found.
/// A scan rather than a JSON parse: the load generator shares two cores with
/// the servers, and `"t0":` / `"i":` occur only in our own payload (Herald's
/// fields are t, seq, ts, data, from, mid, eph).
pub fn scan_messages(text: &str, mut each: impl FnMut(u64, u64)) -> usize {
    const T0: &str = "\"t0\":";
    const I: &str = ",\"i\":";
    let mut rest = text;
    let mut found = 0;
    while let Some(at) = rest.find(T0) {
        rest = &rest[at + T0.len()..];
        let (t0, after) = number(rest);
        rest = after;
        let Some(t0) = t0 else { continue };
        let Some(after) = rest.strip_prefix(I) else { continue };
        let (i, after) = number(after);
        rest = after;
        if let Some(i) = i {
            each(t0, i);
            found += 1;
        }
    }
    found
}

fn number(s: &str) -> (Option<u64>, &str) {
    let end = s.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(s.len());
    (s[..end].parse().ok(), &s[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> Vec<(u64, u64)> {
        let mut v = Vec::new();
        scan_messages(text, |a, b| v.push((a, b)));
        v
    }

    #[test]
    fn plain_frame() {
        assert_eq!(all(r#"{"t0":123,"i":7}"#), vec![(123, 7)]);
    }

    #[test]
    fn herald_frame_and_batch() {
        let one = r#"{"t":"msg","seq":5,"ts":1764280000000,"data":{"t0":99,"i":1},"from":null}"#;
        assert_eq!(all(one), vec![(99, 1)]);
        let batch = format!("[{one},{}]", one.replace("\"i\":1", "\"i\":2"));
        assert_eq!(all(&batch), vec![(99, 1), (99, 2)]);
        assert!(Mode::Herald.is_welcome(r#"{"t":"welcome","room":"r","seq":0}"#));
        assert_eq!(all(r#"{"t":"welcome","room":"r","seq":0}"#), vec![]);
    }

    #[test]
    fn bodies_round_trip() {
        for mode in [Mode::Herald, Mode::Plain] {
            assert_eq!(all(&mode.publish_frame(42, 9)), vec![(42, 9)]);
        }
    }
}

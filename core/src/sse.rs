//! Server-Sent Events rendering for one-way live feeds.
//!
//! Each stored message is an event `id: <epoch>:<seq>`, `event: msg`,
//! `data: <the msg JSON>`, so a browser `EventSource` resumes by itself
//! through `Last-Event-ID`. The relay renders a delivery's events once and
//! writes the same bytes to every SSE client.

use serde_json::value::RawValue;

/// A comment line, sent every `HERALD_SSE_HEARTBEAT_S` so proxies keep the
/// stream open and clients notice a dead one.
pub const HEARTBEAT: &str = ": heartbeat\n\n";

/// Tells `EventSource` how long to wait before reconnecting, in ms.
pub const RETRY: &str = "retry: 1000\n\n";

/// Appends one event. Payload lines become separate `data:` lines (the
/// client joins them with newlines), so raw JSON with line breaks is safe.
fn push_event(out: &mut String, id: Option<(&str, u64)>, event: &str, data: &str) {
    if let Some((epoch, seq)) = id {
        out.push_str(&format!("id: {epoch}:{seq}\n"));
    }
    out.push_str("event: ");
    out.push_str(event);
    out.push('\n');
    for line in data.split(['\n', '\r']) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
}

/// One event carrying a JSON object as it is (welcome, reset).
pub fn event(event: &str, data: &str) -> String {
    let mut out = String::new();
    push_event(&mut out, None, event, data);
    out
}

/// The events for a delivery frame (one message object or a batch array):
/// `msg` events, with an id for stored ones, and `reset` for an erasure.
/// Unparseable input yields nothing: frames come from the Room, not clients.
pub fn delivery_events(frame: &str, epoch: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        t: &'a str,
        seq: Option<u64>,
        epoch: Option<String>,
    }
    let items: Vec<&RawValue> = if frame.trim_start().starts_with('[') {
        serde_json::from_str(frame).unwrap_or_default()
    } else {
        serde_json::from_str(frame).map(|one| vec![one]).unwrap_or_default()
    };
    let mut out = String::new();
    for raw in items {
        let Ok(head) = serde_json::from_str::<Head<'_>>(raw.get()) else { continue };
        match (head.t, head.seq) {
            ("reset", _) => push_event(&mut out, None, "reset", raw.get()),
            ("msg", Some(seq)) => {
                push_event(&mut out, Some((head.epoch.as_deref().unwrap_or(epoch), seq)), "msg", raw.get())
            }
            ("msg", None) => push_event(&mut out, None, "msg", raw.get()),
            _ => {}
        }
    }
    out
}

/// Reads a `Last-Event-ID` of the form `<epoch>:<seq>`. Epochs never hold a
/// colon, so the last one splits. The epoch is at most
/// [`crate::client_frame::MAX_EPOCH_LEN`] bytes and the seq at most
/// [`crate::client_frame::MAX_SEQ`], as on `?since=&epoch=`.
pub fn parse_last_event_id(id: &str) -> Option<(u64, String)> {
    let (epoch, seq) = id.trim().rsplit_once(':')?;
    let seq: u64 = seq.parse().ok()?;
    let fits = !epoch.is_empty() && epoch.len() <= crate::client_frame::MAX_EPOCH_LEN && seq <= crate::client_frame::MAX_SEQ;
    fits.then(|| (seq, epoch.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_id_is_bounded() {
        assert_eq!(parse_last_event_id("e1:7"), Some((7, "e1".into())));
        assert_eq!(parse_last_event_id(&format!("{}:1", "e".repeat(65))), None, "epoch too long");
        assert_eq!(parse_last_event_id("e:9223372036854775808"), None, "seq past i64::MAX");
        assert_eq!(parse_last_event_id(":3"), None);
    }

    #[test]
    fn events_for_a_batch() {
        let frame = r#"[{"t":"msg","seq":4,"ts":1,"data":{"a":
1},"from":null},{"t":"msg","eph":true,"ts":1,"data":0,"from":null},{"t":"reset","epoch":"e2","seq":4}]"#;
        let out = delivery_events(frame, "e1");
        assert_eq!(
            out,
            "id: e1:4\nevent: msg\ndata: {\"t\":\"msg\",\"seq\":4,\"ts\":1,\"data\":{\"a\":\ndata: 1},\"from\":null}\n\n\
             event: msg\ndata: {\"t\":\"msg\",\"eph\":true,\"ts\":1,\"data\":0,\"from\":null}\n\n\
             event: reset\ndata: {\"t\":\"reset\",\"epoch\":\"e2\",\"seq\":4}\n\n"
        );
        assert_eq!(delivery_events("garbage", "e"), "");
        assert_eq!(delivery_events(r#"{"t":"msg","seq":1,"ts":1,"data":1,"from":null}"#, "e").lines().next(), Some("id: e:1"));
    }

    #[test]
    fn last_event_ids() {
        assert_eq!(parse_last_event_id("abc:12"), Some((12, "abc".into())));
        assert_eq!(parse_last_event_id(" abc:12 "), Some((12, "abc".into())));
        assert_eq!(parse_last_event_id("abc"), None);
        assert_eq!(parse_last_event_id(":3"), None);
        assert_eq!(parse_last_event_id("a:-1"), None);
    }
}

//! Rendering what the server sends. Each function returns the final frame
//! text; a broadcast is rendered once and the same text goes to every socket.

use crate::error::{to_json, Rejection};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A message as the Room orders, stores and forwards it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    /// The room's order; `None` for ephemeral messages, which are never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Milliseconds since the Unix epoch, stamped by the Room.
    pub ts: u64,
    /// The publishing user; `None` until authentication exists.
    #[serde(default)]
    pub from: Option<String>,
    /// The publisher's message id, if it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid: Option<String>,
    /// The payload, as the publisher sent it.
    pub data: Box<RawValue>,
}

impl PartialEq for Message {
    fn eq(&self, o: &Self) -> bool {
        (self.seq, self.ts, &self.from, &self.mid, self.data.get())
            == (o.seq, o.ts, &o.from, &o.mid, o.data.get())
    }
}

impl Message {
    /// The `msg` frame: `{"t":"msg","seq":N,"ts":MS,"data":ANY,"from":S|null,"mid":S?}`,
    /// or with `"eph":true` and no seq for an ephemeral message.
    pub fn to_frame(&self) -> String {
        #[derive(Serialize)]
        struct MsgFrame<'a> {
            t: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            seq: Option<u64>,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            eph: bool,
            ts: u64,
            data: &'a RawValue,
            from: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            mid: Option<&'a str>,
        }
        to_json(&MsgFrame {
            t: "msg",
            seq: self.seq,
            eph: self.seq.is_none(),
            ts: self.ts,
            data: &self.data,
            from: self.from.as_deref(),
            mid: self.mid.as_deref(),
        })
    }
}

/// Joins already-rendered frames into one text frame: a lone frame as is,
/// several as a JSON array (a batch), which clients must accept.
pub fn batch_frame<S: AsRef<str>>(frames: &[S]) -> String {
    match frames {
        [one] => one.as_ref().to_owned(),
        many => {
            let len = many.iter().map(|f| f.as_ref().len() + 1).sum::<usize>() + 1;
            let mut out = String::with_capacity(len);
            out.push('[');
            for (i, f) in many.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(f.as_ref());
            }
            out.push(']');
            out
        }
    }
}

/// What a welcome carries besides the connection's identity and position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WelcomeExtras {
    /// Present only when the client asked to resume (`?since=&epoch=`).
    pub recovered: Option<bool>,
    /// The user's read mark and unread count up to the welcome's `seq`,
    /// when known.
    pub unread: Option<(u64, u64)>,
}

/// The first frame on every connection.
pub fn welcome_frame(room: &str, conn: &str, region: &str, epoch: &str, seq: u64, extras: WelcomeExtras) -> String {
    #[derive(Serialize)]
    struct Welcome<'a> {
        t: &'static str,
        room: &'a str,
        conn: &'a str,
        region: &'a str,
        epoch: &'a str,
        seq: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        read: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        unread: Option<u64>,
    }
    let WelcomeExtras { recovered, unread } = extras;
    let (read, unread) = (unread.map(|u| u.0), unread.map(|u| u.1));
    to_json(&Welcome { t: "welcome", room, conn, region, epoch, seq, recovered, read, unread })
}

/// Tells a user's connections that their read mark moved to `seq`.
pub fn read_frame(seq: u64) -> String {
    format!(r#"{{"t":"read","seq":{seq}}}"#)
}

/// A history read's answer, `{"epoch":E,"messages":[msg…],"more":bool}`,
/// or with `"t":"history","id":I` first when it answers a socket frame.
/// `frames` are the messages' rendered frames ([`Message::to_frame`]), so a
/// reader can measure them against the page bound before wrapping them.
pub fn history_frame(id: Option<Option<&RawValue>>, epoch: &str, frames: &[String], more: bool) -> String {
    let list = format!("[{}]", frames.join(","));
    let head = match id {
        None => String::from("{"),
        Some(id) => format!(r#"{{"t":"history","id":{},"#, id.map_or("null", RawValue::get)),
    };
    format!(r#"{head}"epoch":{},"messages":{list},"more":{more}}}"#, to_json(&epoch))
}

/// Tells clients the room's history was erased: a new epoch starts at `seq`.
pub fn reset_frame(epoch: &str, seq: u64) -> String {
    #[derive(Serialize)]
    struct Reset<'a> {
        t: &'static str,
        epoch: &'a str,
        seq: u64,
    }
    to_json(&Reset { t: "reset", epoch, seq })
}

/// The reply to a `pub` that carried an `id`; no `seq` for ephemeral ones.
pub fn ack_frame(id: &RawValue, seq: Option<u64>) -> String {
    #[derive(Serialize)]
    struct Ack<'a> {
        t: &'static str,
        id: &'a RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    }
    to_json(&Ack { t: "ack", id, seq })
}

/// An error reply; `id` is the request's id when it could be read.
pub fn err_frame(id: Option<&RawValue>, rejection: &Rejection) -> String {
    #[derive(Serialize)]
    struct Err<'a> {
        t: &'static str,
        id: Option<&'a RawValue>,
        code: &'static str,
        message: &'a str,
    }
    to_json(&Err {
        t: "err",
        id,
        code: rejection.code.as_str(),
        message: &rejection.message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use serde_json::{json, Value};

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn msg_frames() {
        let m = Message { seq: Some(3), ts: 99, from: None, mid: Some("a".into()), data: raw(r#"{"x":1}"#) };
        assert_eq!(
            parse(&m.to_frame()),
            json!({"t":"msg","seq":3,"ts":99,"data":{"x":1},"from":null,"mid":"a"})
        );
        let e = Message { seq: None, ts: 5, from: Some("u".into()), mid: None, data: raw("true") };
        assert_eq!(parse(&e.to_frame()), json!({"t":"msg","eph":true,"ts":5,"data":true,"from":"u"}));
    }

    #[test]
    fn batches() {
        assert_eq!(batch_frame(&["{\"a\":1}"]), "{\"a\":1}");
        assert_eq!(parse(&batch_frame(&["1", "2", "3"])), json!([1, 2, 3]));
    }

    #[test]
    fn control_frames() {
        assert_eq!(
            parse(&welcome_frame("r", "c", "weur", "e1", 0, WelcomeExtras::default())),
            json!({"t":"welcome","room":"r","conn":"c","region":"weur","epoch":"e1","seq":0})
        );
        let extras = WelcomeExtras { recovered: Some(false), unread: Some((1, 2)) };
        let w = parse(&welcome_frame("r", "c", "oc", "e", 3, extras));
        assert_eq!((w["recovered"].as_bool(), w["read"].as_u64(), w["unread"].as_u64()), (Some(false), Some(1), Some(2)));
        assert_eq!(parse(&read_frame(7)), json!({"t":"read","seq":7}));
        let m = Message { seq: Some(1), ts: 2, from: None, mid: None, data: raw("[1]") };
        assert_eq!(
            parse(&history_frame(None, "e\"1", &[m.to_frame()], true)),
            json!({"epoch":"e\"1","messages":[{"t":"msg","seq":1,"ts":2,"data":[1],"from":null}],"more":true})
        );
        assert_eq!(
            parse(&history_frame(Some(Some(&raw("7"))), "e", &[], false)),
            json!({"t":"history","id":7,"epoch":"e","messages":[],"more":false})
        );
        assert_eq!(parse(&history_frame(Some(None), "e", &[], false))["id"], json!(null));
        assert_eq!(parse(&ack_frame(&raw("\"q\""), Some(4))), json!({"t":"ack","id":"q","seq":4}));
        assert_eq!(parse(&ack_frame(&raw("1"), None)), json!({"t":"ack","id":1}));
        let rej = Rejection::new(ErrorCode::TooLarge, "big");
        assert_eq!(
            parse(&err_frame(None, &rej)),
            json!({"t":"err","id":null,"code":"too_large","message":"big"})
        );
    }
}

//! Every internal call of the Relay ↔ Room link, typed, in one place: the
//! Relay's calls to its Room ([`RoomLink`]) and the Room's delivery to a
//! Relay ([`deliver`]). Bodies and headers are `herald_core::link`'s; this
//! file only moves them.

use super::http::{call_json, header, internal_request, js_text};
use herald_core::link::{
    self, path, DeliveryHead, JoinReply, LinkPub, PresenceAck, PresenceCall, PublishReply, RangeHead, ReadCall, ReadReply,
    RelayReport, UnreadCount,
};
use herald_core::Region;
use wasm_bindgen::JsValue;
use wasm_bindgen::JsCast;
use worker::{Env, Method, ObjectNamespace, Request, Response, Result, Stub};

/// How the Room rate-limits an HTTP history read.
pub enum HistoryRate {
    /// Under this reader's key ([`herald_core::rate::http_rate_key`]).
    Key(String),
    /// Not at all: a backend (its token holds `admin`).
    Exempt,
}

/// A Relay's handle on its Room. Each call gets its own stub: a stub whose
/// call failed stays broken, and a retry must not inherit that.
pub struct RoomLink {
    namespace: ObjectNamespace,
    room: String,
}

impl RoomLink {
    pub fn new(env: &Env, room: &str) -> Result<Self> {
        Ok(RoomLink { namespace: env.durable_object("ROOM")?, room: room.to_owned() })
    }

    fn stub(&self) -> Result<Stub> {
        self.namespace.get_by_name(&self.room)
    }

    fn headers(&self) -> [(&str, &str); 1] {
        [(link::HDR_ROOM, self.room.as_str())]
    }

    /// Reports the relay (and joins, when it has no position).
    pub async fn report(&self, report: &RelayReport) -> Result<JoinReply> {
        call_json(&self.stub()?, path::REPORT, &self.headers(), report).await
    }

    /// Sends the relay's presence news; the answer says what was applied.
    pub async fn presence(&self, call: &PresenceCall) -> Result<PresenceAck> {
        call_json(&self.stub()?, path::PRESENCE, &self.headers(), call).await
    }

    /// A user's `read` frame; the answer is their mark after it.
    pub async fn read(&self, call: &ReadCall) -> Result<ReadReply> {
        call_json(&self.stub()?, path::READ, &self.headers(), call).await
    }

    /// A user's unread count up to `upto` (the relay's cursor), for their
    /// welcome; `None` when the room has no read marks.
    pub async fn unread_for_welcome(&self, user: &str, upto: u64) -> Result<Option<UnreadCount>> {
        let url = format!("{}?user={}&upto={upto}", path::UNREAD, crate::edge::js::url_encode(user));
        let resp = self.stub()?.fetch_with_request(internal_request(Method::Get, &url, &self.headers(), None)?).await?;
        let text = String::from(js_text(&resp).await?);
        if resp.status_code() != 200 {
            return Err(worker::Error::RustError(format!("unread answered {}: {text}", resp.status_code())));
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// `GET …/unread?user=U`, answered by the Room as the client gets it:
    /// `{"user":U,"read":N,"unread":K}`.
    pub async fn unread(&self, user: &str) -> Result<Response> {
        let url = format!("{}?user={}", path::UNREAD, crate::edge::js::url_encode(user));
        self.stub()?.fetch_with_request(internal_request(Method::Get, &url, &self.headers(), None)?).await
    }

    /// A page of the room's members, rendered by the Room: as the answer to
    /// a socket's `presence` frame when `id` is given (the id as JSON text),
    /// else as the HTTP body.
    pub async fn presence_snapshot(&self, cursor: Option<&str>, limit: u64, id: Option<&str>) -> Result<Response> {
        let mut url = format!("{}?limit={limit}", path::PRESENCE_SNAPSHOT);
        if let Some(cursor) = cursor {
            url.push_str(&format!("&cursor={}", crate::edge::js::url_encode(cursor)));
        }
        let mut headers = vec![(link::HDR_ROOM, self.room.as_str())];
        if let Some(id) = id {
            headers.push(("x-herald-id", id));
        }
        self.stub()?.fetch_with_request(internal_request(Method::Get, &url, &headers, None)?).await
    }

    /// Forwards a publish batch (already JSON, so a retry sends the same
    /// bytes) by Durable Object RPC: `publish(room, batch)` on the Room's
    /// JS class (`shim/entry.mjs`), answered with `link::join_answer`'s
    /// text. RPC skips the HTTP framing (a `Request`, its headers, a body
    /// stream each way), which a stub `fetch` pays per call.
    /// The answer's delivery frame stays a JS string.
    pub async fn publish(&self, batch_json: String) -> Result<(PublishReply, Option<JsValue>)> {
        let stub: JsValue = self.stub()?.into_rpc();
        let method: js_sys::Function = js_sys::Reflect::get(&stub, &JsValue::from_str("publish"))?
            .dyn_into()
            .map_err(|_| worker::Error::RustError("the Room stub has no publish method".into()))?;
        // `Reflect.apply`, not `method.call(…)`: on an RPC stub, `call` would
        // itself be taken for a remote method's name.
        let args = js_sys::Array::of2(&JsValue::from_str(&self.room), &JsValue::from_str(&batch_json));
        let pending = js_sys::Reflect::apply(&method, &stub, &args)?;
        let answer = wasm_bindgen_futures::JsFuture::from(js_sys::Promise::resolve(&pending)).await?;
        let answer: js_sys::JsString =
            answer.dyn_into().map_err(|_| worker::Error::RustError("publish answered something other than text".into()))?;
        // Split in JS, as `link::split_answer` does: the frame never crosses
        // into Rust; only the small JSON line is read.
        let (head, frame) = match answer.index_of("\n", 0) {
            -1 => (String::from(answer), None),
            at => {
                let at = u32::try_from(at).unwrap_or(0);
                (String::from(answer.slice(0, at)), Some(JsValue::from(answer.slice(at + 1, answer.length()))))
            }
        };
        Ok((serde_json::from_str(&head)?, frame))
    }

    /// Reads stored messages `after < seq <= upto`: a gap repair, or with the
    /// client's epoch a resume.
    pub async fn range(&self, after: u64, upto: u64, epoch: Option<&str>) -> Result<(RangeHead, Option<JsValue>)> {
        let mut url = format!("{}?after={after}&upto={upto}", path::RANGE);
        if let Some(epoch) = epoch {
            url.push_str("&epoch=");
            url.push_str(&super::js::url_encode(epoch));
        }
        let req = internal_request(Method::Get, &url, &self.headers(), None)?;
        let resp = self.stub()?.fetch_with_request(req).await?;
        if resp.status_code() != 200 {
            return Err(worker::Error::RustError(format!("range read answered {}", resp.status_code())));
        }
        let head: RangeHead = serde_json::from_str(&response_header(&resp, link::HDR_RANGE)?)?;
        let text = js_text(&resp).await?;
        Ok((head, (text.length() > 0).then(|| JsValue::from(text))))
    }

    /// `GET …/messages`, answered by the Room as the client gets it: the
    /// messages, or 429 `rate_limited` with `Retry-After`.
    pub async fn history(&self, since: u64, limit: u64, rate: HistoryRate) -> Result<Response> {
        let url = format!("{}?since={since}&limit={limit}", path::HISTORY);
        let mut headers = vec![(link::HDR_ROOM, self.room.as_str())];
        match &rate {
            HistoryRate::Key(key) => headers.push((link::HDR_RATE_KEY, key.as_str())),
            HistoryRate::Exempt => headers.push((link::HDR_RATE_EXEMPT, "1")),
        }
        self.stub()?.fetch_with_request(internal_request(Method::Get, &url, &headers, None)?).await
    }

    /// `DELETE …/messages`, answered by the Room as the client gets it.
    pub async fn erase(&self) -> Result<Response> {
        self.stub()?.fetch_with_request(internal_request(Method::Post, path::ERASE, &self.headers(), None)?).await
    }

    /// `GET …/stats`, answered by the Room as the client gets it.
    pub async fn stats(&self) -> Result<Response> {
        self.stub()?.fetch_with_request(internal_request(Method::Get, path::STATS, &self.headers(), None)?).await
    }

    /// An HTTP publish, answered by the Room as the client gets it:
    /// `{"seq","epoch","ts"}`, or 429 `rate_limited` with `Retry-After`.
    /// `exempt` marks a backend (the token holds `admin`).
    pub async fn http_publish(&self, publish: &LinkPub, exempt: bool) -> Result<Response> {
        let mut headers = vec![(link::HDR_ROOM, self.room.as_str())];
        if exempt {
            headers.push((link::HDR_RATE_EXEMPT, "1"));
        }
        let body = JsValue::from_str(&serde_json::to_string(publish)?);
        self.stub()?.fetch_with_request(internal_request(Method::Post, path::HTTP_PUBLISH, &headers, Some(body))?).await
    }

    /// A `history` frame for a client, rendered by the Room. Exempt from the
    /// Room's HTTP history rate: the relay limits `history` frames per
    /// connection before asking.
    pub async fn history_frame(&self, since: u64, limit: u64, id: &str) -> Result<JsValue> {
        let url = format!("{}?since={since}&limit={limit}", path::HISTORY);
        let headers = [
            (link::HDR_ROOM, self.room.as_str()),
            ("x-herald-framed", "1"),
            ("x-herald-id", id),
            (link::HDR_RATE_EXEMPT, "1"),
        ];
        let req = internal_request(Method::Get, &url, &headers, None)?;
        let resp = self.stub()?.fetch_with_request(req).await?;
        if resp.status_code() != 200 {
            return Err(worker::Error::RustError(format!("history answered {}", resp.status_code())));
        }
        Ok(JsValue::from(js_text(&resp).await?))
    }
}

fn response_header(resp: &Response, name: &str) -> Result<String> {
    resp.headers()
        .get(name)?
        .ok_or_else(|| worker::Error::RustError(format!("answer without {name}")))
}

/// The Room's delivery to one relay: the head as a header, the frame as the
/// body. The answer is the relay's report, whose ack says what it applied.
pub async fn deliver(env: &Env, room: &str, region: Region, head: &DeliveryHead, frame: &str) -> Result<RelayReport> {
    let stub = env.durable_object("RELAY")?.get_by_name(&link::relay_name(room, region))?;
    let head = serde_json::to_string(head)?;
    let headers = [(link::HDR_ROOM, room), (link::HDR_REGION, region.as_str()), (link::HDR_DELIVERY, head.as_str())];
    let req = internal_request(Method::Post, path::DELIVER, &headers, Some(JsValue::from_str(frame)))?;
    let resp = stub.fetch_with_request(req).await?;
    let text = String::from(js_text(&resp).await?);
    if resp.status_code() != 200 {
        return Err(worker::Error::RustError(format!("relay answered {}: {text}", resp.status_code())));
    }
    Ok(serde_json::from_str(&text)?)
}

/// The head of a `deliver` call, as the Relay reads it.
pub fn delivery_head(req: &Request) -> Result<DeliveryHead> {
    Ok(serde_json::from_str(&header(req, link::HDR_DELIVERY)?)?)
}

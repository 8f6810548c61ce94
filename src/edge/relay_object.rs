//! The `Relay` Durable Object: one per (room, region). It holds the
//! region's client sockets with the Hibernation API, fans deliveries out to
//! them, and forwards their publishes to the Room. Between messages it
//! hibernates with its sockets kept; what it must remember per socket is in
//! the socket's attachment.

use super::http::{call_json, header, internal_request, js_text, json, post_for_js_text};
use super::{js, wakeups};
use herald_core::link::{self, path, JoinReply, LinkPub, PublishBatch, PublishReply};
use herald_core::relay::{trim_frame, DeliveryPlan, RelayCore, Resume};
use herald_core::server_frame::{ack_frame, err_frame};
use herald_core::single_flight::{Pushed, SingleFlight};
use herald_core::auth::{Capability, CapabilitySet, Grant};
use herald_core::close_code::CloseCode;
use herald_core::{parse_client_frame, ClientFrame, Config, ErrorCode, Region, Rejection};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use futures::channel::mpsc::{unbounded, UnboundedSender};
use herald_core::sse;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use worker::{
    console_error, durable_object, DurableObject, Env, Method, Request, Response, Result, State, Stub,
    WebSocket, WebSocketIncomingMessage, WebSocketPair, WebSocketRequestResponsePair,
};

/// Publishes forwarded to the Room in one call, at most.
const MAX_PUBLISH_BATCH: usize = 256;
/// Publishes waiting for the Room before new ones are refused `overloaded`.
const MAX_PENDING_PUBLISHES: usize = 4096;

/// The relay object's name: region first, because room names cannot
/// contain `/` and regions cannot either, so the split is unambiguous.
pub fn relay_name(room: &str, region: Region) -> String {
    format!("{region}/{room}")
}

fn parse_relay_name(name: &str) -> Option<(String, Region)> {
    let (region, room) = name.split_once('/')?;
    Some((room.to_owned(), Region::parse(region).ok()?))
}

/// What a socket carries through hibernation. Versioned and namespaced so a
/// later layout can read an older one.
#[derive(Serialize, Deserialize)]
struct Attachment {
    herald: u8,
    conn: String,
    /// The user (`sub`), `None` for an anonymous reader.
    from: Option<String>,
    caps: CapabilitySet,
    /// Token expiry, seconds since the Unix epoch.
    exp: Option<u64>,
}

impl Attachment {
    fn grant(&self) -> Grant {
        Grant { user: self.from.clone(), caps: self.caps, expires_s: self.exp, info: None }
    }
}

const ATTACHMENT_VERSION: u8 = 1;

#[durable_object]
pub struct Relay {
    inner: Rc<RelayInner>,
}

struct RelayInner {
    state: State,
    env: Env,
    wakeups: u64,
    config: std::result::Result<Config, String>,
    core: RefCell<Option<RelayCore<JsValue>>>,
    publishes: RefCell<SingleFlight<PendingPub>>,
    /// Open SSE streams. Unlike hibernatable sockets these live in memory,
    /// so an open stream keeps the relay awake.
    sse: RefCell<Vec<SseClient>>,
    heartbeat_running: Cell<bool>,
    /// Open hibernatable sockets. Walking `getWebSockets()` on every
    /// admission made connecting N clients O(N²) (56 s for 5000, against
    /// raw's 10 s), so the walk happens once after a wake and the count is
    /// then kept: +1 on accept, −1 on close, and set to the exact number each
    /// fan-out reaches. A cached zero is always recounted, because
    /// `needs_join` trusts zero to mean that no client can miss a delivery.
    open_sockets: Cell<Option<u32>>,
    /// The alarm time this incarnation set or read (ms), so admitting a
    /// client with an expiring token does not read storage every time.
    alarm_at: Cell<Option<i64>>,
    /// One delivery applied at a time. A `deliver` call and the delivery in
    /// a publish answer can both be in hand at once; if one waits on a gap
    /// repair while the other fans out the same seqs, clients would get them
    /// twice. Uncontended, the lock is ready at once.
    delivering: futures::lock::Mutex<()>,
}

/// A client the relay has let in, ready to be attached.
struct Admitted {
    grant: Grant,
    recovered: Option<bool>,
    replay: Vec<JsValue>,
    conn: String,
    welcome: String,
}

/// One SSE client: the writing end of its response stream.
struct SseClient {
    tx: UnboundedSender<std::result::Result<Vec<u8>, worker::Error>>,
    exp: Option<u64>,
}

/// A publish waiting to be forwarded, with the socket its ack goes to.
struct PendingPub {
    ws: WebSocket,
    id: Option<Box<RawValue>>,
    publish: LinkPub,
}

impl DurableObject for Relay {
    fn new(state: State, env: Env) -> Self {
        let wakeups = wakeups::constructed(&state.id().to_string());
        // `ping` is answered by the runtime itself, without waking the object.
        match WebSocketRequestResponsePair::new("ping", "pong") {
            Ok(pair) => state.set_websocket_auto_response(&pair),
            Err(e) => console_error!("relay: auto-response: {e:?}"),
        }
        let config = Config::from_vars(|k| env.var(k).ok().map(|v| v.to_string())).map_err(|e| e.to_string());
        Relay {
            inner: Rc::new(RelayInner {
                state,
                env,
                wakeups,
                config,
                core: RefCell::new(None),
                publishes: RefCell::new(SingleFlight::new(MAX_PENDING_PUBLISHES)),
                sse: RefCell::new(Vec::new()),
                heartbeat_running: Cell::new(false),
                open_sockets: Cell::new(None),
                alarm_at: Cell::new(None),
                delivering: futures::lock::Mutex::new(()),
            }),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let inner = Rc::clone(&self.inner);
        let result = match req.path().as_str() {
            path::CONNECT => inner.connect(&req).await,
            path::EVENTS => inner.events(&req).await,
            path::DELIVER => inner.deliver(req).await,
            other => Err(worker::Error::RustError(format!("no relay route {other}"))),
        };
        result.or_else(|e| {
            console_error!("relay: {e}");
            super::http::reject_with(ErrorCode::Internal, "the relay failed; retry")
        })
    }

    /// Closes the sockets whose tokens expired while they were silent.
    async fn alarm(&self) -> Result<Response> {
        let inner = Rc::clone(&self.inner);
        inner.alarm_at.set(None);
        inner.expire_silent().await;
        Response::empty()
    }

    async fn websocket_message(&self, ws: WebSocket, message: WebSocketIncomingMessage) -> Result<()> {
        let inner = Rc::clone(&self.inner);
        let text = match message {
            WebSocketIncomingMessage::String(text) => text,
            WebSocketIncomingMessage::Binary(_) => {
                inner.refuse(&ws, None, Rejection::new(ErrorCode::BadFrame, "binary frames are not supported; send JSON text"));
                return Ok(());
            }
        };
        inner.on_text(ws, &text).await;
        Ok(())
    }

    async fn websocket_close(&self, ws: WebSocket, code: usize, reason: String, _clean: bool) -> Result<()> {
        // Always answer the close; 1005/1006 cannot be sent, so those get 1000.
        let code = u16::try_from(code).ok().filter(|c| (1000..5000).contains(c) && ![1005, 1006, 1015].contains(c));
        let _ = ws.close(Some(code.unwrap_or(1000)), Some(reason));
        self.inner.open_sockets.set(self.inner.open_sockets.get().map(|n| n.saturating_sub(1)));
        self.inner.forget(&ws);
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> Result<()> {
        // An error may or may not be followed by a close event: recount.
        self.inner.open_sockets.set(None);
        self.inner.forget(&ws);
        Ok(())
    }
}

impl RelayInner {
    fn config(&self) -> Result<&Config> {
        self.config.as_ref().map_err(|e| worker::Error::RustError(e.clone()))
    }

    /// The core, created on first use from the object's name (or, failing
    /// that, the caller's headers).
    fn ensure_core(&self, req: Option<&Request>) -> Result<()> {
        if self.core.borrow().is_some() {
            return Ok(());
        }
        let identity = self.state.id().name().and_then(|n| parse_relay_name(&n));
        let (room, region) = match (identity, req) {
            (Some(id), _) => id,
            (None, Some(req)) => (header(req, link::HDR_ROOM)?, Region::parse(&header(req, link::HDR_REGION)?).map_err(|r| worker::Error::RustError(r.message))?),
            (None, None) => return Err(worker::Error::RustError("relay does not know its name".into())),
        };
        let mut core = RelayCore::new(room, region, self.wakeups, js::random_tag(6));
        if let Ok(c) = self.config() {
            core.set_publish_rate(c.pub_rate, c.pub_burst);
            core.set_retention(c.retention());
        }
        *self.core.borrow_mut() = Some(core);
        Ok(())
    }

    fn with_core<T>(&self, f: impl FnOnce(&mut RelayCore<JsValue>) -> T) -> Result<T> {
        let mut guard = self.core.borrow_mut();
        let core = guard.as_mut().ok_or_else(|| worker::Error::RustError("relay core not loaded".into()))?;
        Ok(f(core))
    }

    fn room_stub(&self) -> Result<Stub> {
        let room = self.with_core(|c| c.room().to_owned())?;
        self.env.durable_object("ROOM")?.get_by_name(&room)
    }

    fn room_header(&self) -> Result<String> {
        self.with_core(|c| c.room().to_owned())
    }

    /// Open client sockets plus open SSE streams.
    fn open_connections(&self) -> u32 {
        let sockets = match self.open_sockets.get() {
            Some(n) if n > 0 => n,
            _ => {
                let walked = self.state.get_websockets().iter().filter(|ws| js::is_open(ws)).count();
                let n = u32::try_from(walked).unwrap_or(u32::MAX);
                self.open_sockets.set(Some(n));
                n
            }
        };
        sockets.saturating_add(u32::try_from(self.sse.borrow().len()).unwrap_or(u32::MAX))
    }

    /// A client socket: join the Room if needed, accept with hibernation,
    /// send the welcome, then tell the Room the new count.
    /// Joins the Room if needed and gathers what a new client must be sent
    /// after its welcome: `(recovered, replay frames)`, `recovered` being
    /// `None` when the client did not ask to resume.
    async fn prepare_client(&self, req: &Request) -> Result<(Option<bool>, Vec<JsValue>)> {
        self.ensure_core(Some(req))?;
        let resume = resume_request(req)?;
        let open = self.open_connections();
        if self.with_core(|c| c.needs_join(open))? {
            let report = self.with_core(|c| c.join_report(open))?;
            let room = self.room_header()?;
            let reply: JoinReply = call_json(&self.room_stub()?, path::REPORT, &[(link::HDR_ROOM, &room)], &report).await?;
            // Count again: a client admitted while the join was in flight
            // must keep the cursor it was welcomed at.
            let open_now = self.open_connections();
            self.with_core(|c| c.joined(reply, open_now))?;
        }
        match resume {
            None => Ok((None, Vec::new())),
            Some((since, epoch)) => {
                let (recovered, replay, used_room) = self.collect_resume(since, &epoch).await?;
                self.with_core(|c| c.resumed(recovered, used_room))?;
                Ok((Some(recovered), replay))
            }
        }
    }

    /// Admits a WebSocket or SSE client: its grant from the Worker, the
    /// join and resume work, then its connection id and welcome. `Err(Ok(r))`
    /// is a refusal to answer with (the relay is full).
    async fn admit_client(&self, req: &Request) -> std::result::Result<Admitted, Result<Response>> {
        let grant: Grant = header(req, link::HDR_GRANT)
            .and_then(|g| Ok(serde_json::from_str(&g)?))
            .map_err(Err)?;
        let max = self.config().map_err(Err)?.max_connections_per_relay;
        if self.open_connections() >= max {
            return Err(super::http::reject_with(
                ErrorCode::Overloaded,
                "this region's relay is at its connection limit; retry later",
            ));
        }
        let (recovered, replay) = self.prepare_client(req).await.map_err(Err)?;
        // The caller must not await between this and joining the fan-out, so
        // the welcome's seq, the replay and live messages meet at one point.
        match self.with_core(|c| c.admit(recovered)) {
            Ok(Some((conn, welcome))) => Ok(Admitted { grant, recovered, replay, conn, welcome }),
            Ok(None) => Err(Err(worker::Error::RustError("relay has not joined".into()))),
            Err(e) => Err(Err(e)),
        }
    }

    async fn connect(self: Rc<Self>, req: &Request) -> Result<Response> {
        let Admitted { grant, replay, conn, welcome, .. } = match self.admit_client(req).await {
            Ok(a) => a,
            Err(answer) => return answer,
        };
        let pair = WebSocketPair::new()?;
        self.state.accept_web_socket(&pair.server);
        self.open_sockets.set(self.open_sockets.get().map(|n| n.saturating_add(1)));
        let attachment = Attachment {
            herald: ATTACHMENT_VERSION,
            conn,
            from: grant.user.clone(),
            caps: grant.caps,
            exp: grant.expires_s,
        };
        pair.server.serialize_attachment(attachment)?;
        pair.server.send_with_str(&welcome)?;
        for frame in &replay {
            js::send_shared(&pair.server, frame);
        }
        self.schedule_report();
        if let Some(exp) = grant.expires_s {
            self.schedule_expiry(exp).await;
        }
        Response::from_websocket(pair.client)
    }

    /// An SSE stream: `welcome`, then `reset` if a resume was refused, the
    /// replay, and live events.
    async fn events(self: Rc<Self>, req: &Request) -> Result<Response> {
        let Admitted { grant, recovered, replay, welcome, .. } = match self.admit_client(req).await {
            Ok(a) => a,
            Err(answer) => return answer,
        };
        let epoch = self.with_core(|c| c.epoch().unwrap_or_default().to_owned())?;
        let mut head = String::from(sse::RETRY);
        head.push_str(&sse::event("welcome", &welcome));
        if recovered == Some(false) {
            let seq = self.with_core(|c| c.cursor().unwrap_or(0))?;
            head.push_str(&sse::event("reset", &herald_core::server_frame::reset_frame(&epoch, seq)));
        }
        for frame in replay.iter().filter_map(JsValue::as_string) {
            head.push_str(&sse::delivery_events(&frame, &epoch));
        }
        let (tx, rx) = unbounded();
        tx.unbounded_send(Ok(head.into_bytes())).map_err(|e| worker::Error::RustError(e.to_string()))?;
        self.sse.borrow_mut().push(SseClient { tx, exp: grant.expires_s });
        self.schedule_report();
        self.start_heartbeat();
        let headers = worker::Headers::new();
        headers.set("content-type", "text/event-stream; charset=utf-8")?;
        headers.set("cache-control", "no-store")?;
        Ok(Response::from_stream(rx)?.with_headers(headers))
    }

    /// Writes `bytes` to every SSE client, forgetting the ones that left and
    /// ending the streams whose tokens expired.
    fn write_sse(self: &Rc<Self>, bytes: &[u8]) {
        let before = self.sse.borrow().len();
        let now_s = js::now_ms() / 1000;
        let skew = self.config().map(|c| c.clock_skew_s).unwrap_or(0);
        self.sse.borrow_mut().retain(|c| {
            let live = c.exp.is_none_or(|exp| now_s <= exp + skew);
            live && c.tx.unbounded_send(Ok(bytes.to_vec())).is_ok()
        });
        if self.sse.borrow().len() != before {
            self.schedule_report();
        }
    }

    /// Heartbeat comments while any SSE client is open; the loop ends with
    /// the last client so an idle relay can still sleep.
    fn start_heartbeat(self: &Rc<Self>) {
        if self.heartbeat_running.replace(true) {
            return;
        }
        let secs = self.config().map(|c| c.sse_heartbeat_s).unwrap_or(15);
        let this = Rc::clone(self);
        wasm_bindgen_futures::spawn_local(async move {
            loop {
                worker::Delay::from(std::time::Duration::from_secs(secs)).await;
                this.write_sse(sse::HEARTBEAT.as_bytes());
                if this.sse.borrow().is_empty() {
                    this.heartbeat_running.set(false);
                    return;
                }
            }
        });
    }

    /// The frames that bring a client who saw up to `since` in `epoch` level
    /// with this relay's cursor, from the relay's window where it reaches and
    /// from the Room's storage where it does not. Returns (recovered, frames,
    /// whether the Room was read). Ephemeral messages are not replayed.
    async fn collect_resume(&self, since: u64, epoch: &str) -> Result<(bool, Vec<JsValue>, bool)> {
        let mut frames = Vec::new();
        let mut used_room = false;
        let mut after = since;
        // Each Room read covers up to the cursor at the time; deliveries that
        // land meanwhile are in the window, so this ends in a step or two.
        for _ in 0..8 {
            let now = js::now_ms();
            match self.with_core(|c| c.plan_resume(epoch, after, now))? {
                Resume::NotRecoverable => return Ok((false, Vec::new(), used_room)),
                Resume::Frames(window) => {
                    for (frame, trim) in window {
                        let kept = frame.as_string().and_then(|f| trim_frame(&f, trim.unwrap_or(0), false));
                        if let Some(kept) = kept {
                            frames.push(JsValue::from_str(&kept));
                        }
                    }
                    return Ok((true, frames, used_room));
                }
                Resume::FromRoom { after: from, upto } => {
                    used_room = true;
                    let (recovered, frame, last) = self.read_range(from, upto, Some(epoch)).await?;
                    if !recovered {
                        return Ok((false, Vec::new(), used_room));
                    }
                    if let Some(frame) = frame {
                        frames.push(frame);
                    }
                    if last <= after {
                        return Ok((false, Vec::new(), used_room));
                    }
                    after = last;
                }
            }
        }
        Ok((false, Vec::new(), used_room))
    }

    /// Reads stored messages `after < seq <= upto` from the Room. With an
    /// epoch, the Room also says whether that is the complete range for a
    /// client of that epoch. Returns (complete, frame, last seq read).
    async fn read_range(&self, after: u64, upto: u64, epoch: Option<&str>) -> Result<(bool, Option<JsValue>, u64)> {
        let room = self.room_header()?;
        let mut url = format!("{}?after={after}&upto={upto}", path::RANGE);
        if let Some(epoch) = epoch {
            url.push_str("&epoch=");
            url.push_str(&js::url_encode(epoch));
        }
        let req = internal_request(Method::Get, &url, &[(link::HDR_ROOM, &room)], None)?;
        let resp = self.room_stub()?.fetch_with_request(req).await?;
        if resp.status_code() != 200 {
            return Err(worker::Error::RustError(format!("range read answered {}", resp.status_code())));
        }
        let recovered = resp.headers().get(link::HDR_RECOVERED)?.as_deref() == Some("1");
        let last = resp.headers().get(link::HDR_LAST)?.and_then(|v| v.parse().ok()).unwrap_or(after);
        let text = js_text(&resp).await?;
        Ok((recovered, (text.length() > 0).then(|| JsValue::from(text)), last))
    }

    /// A delivery from the Room: fan the frame out (repairing or trimming by
    /// the plan), then answer with this relay's report.
    async fn deliver(self: Rc<Self>, req: Request) -> Result<Response> {
        self.ensure_core(Some(&req))?;
        let epoch = header(&req, link::HDR_EPOCH)?;
        let seq = |name| -> Result<Option<u64>> {
            Ok(req.headers().get(name)?.and_then(|v| v.parse().ok()))
        };
        let (first, last) = (seq(link::HDR_FIRST)?, seq(link::HDR_LAST)?);
        let first_ts = seq(link::HDR_FIRST_TS)?.unwrap_or(0);
        // The body stays a JS string: it is sent to every socket as is.
        let body = JsFuture::from(req.inner().text().map_err(worker::Error::from)?).await.map_err(worker::Error::from)?;
        let reached = self.apply_delivery(&epoch, first, last, first_ts, &body).await?;
        let open = reached.unwrap_or_else(|| self.open_connections());
        json(&self.with_core(|c| c.report(open))?)
    }

    /// Fans a delivery out by the core's plan (forward, trim, skip, or repair
    /// the gap from storage first), whether it came in a `deliver` call or in
    /// the answer to this relay's publish. Returns how many clients the
    /// fan-out reached, when it fanned out: the fan-out already touches every
    /// socket, so the report's count costs no second walk.
    async fn apply_delivery(
        self: &Rc<Self>,
        epoch: &str,
        first: Option<u64>,
        last: Option<u64>,
        first_ts: u64,
        body: &JsValue,
    ) -> Result<Option<u32>> {
        let _turn = self.delivering.lock().await;
        let mut reached = None;
        match self.with_core(|c| c.plan_delivery(epoch, first, last))? {
            DeliveryPlan::Forward => {
                reached = Some(self.fan_out(body));
                self.keep(first, last, first_ts, body)?;
            }
            DeliveryPlan::Skip => {}
            DeliveryPlan::Trim { after } => {
                if let Some(kept) = body.as_string().and_then(|f| trim_frame(&f, after, true)) {
                    let kept = JsValue::from_str(&kept);
                    reached = Some(self.fan_out(&kept));
                    // The stamp is of a message before the kept ones: older
                    // is the safe side for the retention check.
                    self.keep(Some(after + 1), last, first_ts, &kept)?;
                }
            }
            DeliveryPlan::Repair { after, upto } => {
                match self.read_range(after, upto, None).await {
                    Ok((_, Some(frame), read_upto)) => {
                        self.fan_out(&frame);
                        // Unknown stamp: 0 sends resumes into it to the Room.
                        self.keep(Some(after + 1), Some(read_upto), 0, &frame)?;
                    }
                    Ok((_, None, _)) => console_error!("relay: repair {after}..{upto} found nothing"),
                    Err(e) => console_error!("relay: repair {after}..{upto} failed: {e}"),
                }
                reached = Some(self.fan_out(body));
                self.keep(first, last, first_ts, body)?;
                if let Some(last) = last {
                    self.with_core(|c| c.repaired(last))?;
                }
            }
        }
        Ok(reached)
    }

    /// Keeps a fanned-out frame of stored seqs for resuming clients.
    fn keep(&self, first: Option<u64>, last: Option<u64>, first_ts: u64, frame: &JsValue) -> Result<()> {
        if let (Some(first), Some(last)) = (first, last) {
            self.with_core(|c| c.fanned_out(first, last, first_ts, frame.clone()))?;
        }
        Ok(())
    }

    /// One JS string to every socket, and its events to every SSE stream.
    /// Returns how many clients it reached: a socket that is closing throws
    /// on `send`, so this is the open count `open_connections` would find.
    fn fan_out(self: &Rc<Self>, frame: &JsValue) -> u32 {
        let sent = self.state.get_websockets().iter().filter(|ws| js::send_shared(ws, frame)).count();
        let _ = self.with_core(|c| c.sent(sent as u64));
        self.open_sockets.set(Some(u32::try_from(sent).unwrap_or(u32::MAX)));
        if !self.sse.borrow().is_empty() {
            let epoch = self.with_core(|c| c.epoch().unwrap_or_default().to_owned()).unwrap_or_default();
            if let Some(text) = frame.as_string() {
                self.write_sse(sse::delivery_events(&text, &epoch).as_bytes());
            }
        }
        u32::try_from(sent + self.sse.borrow().len()).unwrap_or(u32::MAX)
    }

    async fn on_text(self: Rc<Self>, ws: WebSocket, text: &str) {
        if let Err(e) = self.ensure_core(None) {
            console_error!("relay: {e}");
            return;
        }
        let limits = match self.config() {
            Ok(c) => c.frame_limits(),
            Err(e) => {
                console_error!("relay: bad config: {e}");
                self.refuse(&ws, None, Rejection::new(ErrorCode::Internal, "server misconfigured"));
                return;
            }
        };
        let Some(att) = attachment(&ws) else {
            console_error!("relay: a socket without its attachment");
            return;
        };
        let now = js::now_ms();
        let skew = self.config().map(|c| c.clock_skew_s).unwrap_or(0);
        let grant = att.grant();
        if grant.expired(now / 1000, skew) {
            let close = CloseCode::TokenExpired;
            let _ = ws.close(Some(close.code()), Some(close.reason()));
            return;
        }
        match parse_client_frame(text, limits) {
            Ok(ClientFrame::Ping) => {
                let _ = ws.send_with_str("pong");
            }
            Ok(ClientFrame::History(q)) => {
                if let Err(r) = grant.require(Capability::History) {
                    self.refuse(&ws, q.id, r);
                } else if let Err(e) = self.history(&ws, q.id, q.since, q.limit).await {
                    console_error!("relay: history: {e}");
                    self.refuse(&ws, q.id, Rejection::new(ErrorCode::Internal, "history read failed; retry"));
                }
            }
            Ok(ClientFrame::Pub(p)) => {
                if let Err(r) = grant.require(Capability::Pub) {
                    self.refuse(&ws, p.id, r);
                    return;
                }
                if !self.with_core(|c| c.allow_publish(&att.conn, now)).unwrap_or(false) {
                    let (rate, burst) = self.config().map(|c| (c.pub_rate, c.pub_burst)).unwrap_or_default();
                    let message = format!("over {rate} publishes/s (burst {burst}); slow down");
                    self.refuse(&ws, p.id, Rejection::new(ErrorCode::RateLimited, message));
                    return;
                }
                let from = att.from.clone();
                let pending = PendingPub {
                    ws: ws.clone(),
                    id: p.id.map(ToOwned::to_owned),
                    publish: LinkPub { from, data: p.data.to_owned(), mid: p.mid, eph: p.ephemeral },
                };
                let pushed = self.publishes.borrow_mut().push(pending);
                match pushed {
                    Pushed::StartSender => self.forward_publishes().await,
                    Pushed::Queued => {}
                    Pushed::Full => self.refuse(&ws, p.id, Rejection::new(ErrorCode::Overloaded, "too many publishes waiting; retry")),
                }
            }
            Err(e) => self.refuse(&ws, e.id, e.rejection),
        }
    }

    /// Sets the alarm for a token expiry if it is earlier than the one set.
    async fn schedule_expiry(&self, exp_s: u64) {
        let skew = self.config().map(|c| c.clock_skew_s).unwrap_or(0);
        let at_ms = (exp_s + skew + 1) * 1000;
        let at_ms = i64::try_from(at_ms).unwrap_or(i64::MAX);
        if self.alarm_at.get().is_some_and(|set| set <= at_ms) {
            return;
        }
        let storage = self.state.storage();
        let current = storage.get_alarm().await.ok().flatten();
        if current.is_none_or(|c| at_ms < c) {
            let when = worker::ScheduledTime::new(js_sys::Date::new(&JsValue::from_f64(at_ms as f64)));
            match storage.set_alarm(when).await {
                Ok(()) => self.alarm_at.set(Some(at_ms)),
                Err(e) => console_error!("relay: set alarm: {e}"),
            }
        } else {
            self.alarm_at.set(current);
        }
    }

    /// The alarm: close sockets whose tokens expired, then set the alarm for
    /// the next expiry.
    async fn expire_silent(&self) {
        let now_s = js::now_ms() / 1000;
        let skew = self.config().map(|c| c.clock_skew_s).unwrap_or(0);
        let mut next: Option<u64> = None;
        for ws in self.state.get_websockets() {
            let Some(exp) = attachment(&ws).and_then(|a| a.exp) else { continue };
            if now_s > exp + skew {
                let close = CloseCode::TokenExpired;
                let _ = ws.close(Some(close.code()), Some(close.reason()));
            } else {
                next = Some(next.map_or(exp, |n| n.min(exp)));
            }
        }
        if let Some(exp) = next {
            self.schedule_expiry(exp).await;
        }
    }

    /// Answers a `history` frame with the Room's stored messages.
    async fn history(&self, ws: &WebSocket, id: Option<&RawValue>, since: u64, limit: u64) -> Result<()> {
        let room = self.room_header()?;
        let url = format!("{}?since={since}&limit={limit}", path::HISTORY);
        let id = id.map_or("null", RawValue::get);
        let headers = [(link::HDR_ROOM, room.as_str()), ("x-herald-framed", "1"), ("x-herald-id", id)];
        let req = internal_request(Method::Get, &url, &headers, None)?;
        let resp = self.room_stub()?.fetch_with_request(req).await?;
        if resp.status_code() != 200 {
            return Err(worker::Error::RustError(format!("history answered {}", resp.status_code())));
        }
        js::send_shared(ws, &JsValue::from(js_text(&resp).await?));
        Ok(())
    }

    /// Sends an `err` frame, and closes the socket if it has sent too many bad
    /// frames lately. Server-side failures are not the client's strike.
    fn refuse(&self, ws: &WebSocket, id: Option<&RawValue>, rejection: Rejection) {
        let _ = ws.send_with_str(err_frame(id, &rejection));
        let client_fault = matches!(rejection.code, ErrorCode::BadFrame | ErrorCode::TooLarge);
        let Some(conn) = attachment(ws).map(|a| a.conn) else { return };
        if !client_fault {
            return;
        }
        if let Ok(Some(close)) = self.with_core(|c| c.bad_frame(&conn, js::now_ms(), rejection.code)) {
            let _ = ws.close(Some(close.code()), Some(close.reason()));
        }
    }

    /// Drains the publish queue to the Room, one call at a time; publishes
    /// that arrive meanwhile ride in the next call.
    async fn forward_publishes(self: Rc<Self>) {
        loop {
            let batch = self.publishes.borrow_mut().take(MAX_PUBLISH_BATCH);
            if batch.is_empty() {
                return;
            }
            let mut replies = Vec::with_capacity(batch.len());
            let mut pubs = Vec::with_capacity(batch.len());
            for p in batch {
                replies.push((p.ws, p.id));
                pubs.push(p.publish);
            }
            let open = self.open_connections();
            let sent = async {
                let body = PublishBatch { report: self.with_core(|c| c.report(open))?, pubs };
                let room = self.room_header()?;
                let text = serde_json::to_string(&body)?;
                let answer = post_for_js_text(&self.room_stub()?, path::PUBLISH, &[(link::HDR_ROOM, &room)], text).await?;
                // One JSON line, then (with a delivery) the frame as is.
                let (head, frame) = match answer.index_of("\n", 0) {
                    -1 => (answer, None),
                    at => {
                        let at = u32::try_from(at).unwrap_or(0);
                        (answer.slice(0, at), Some(JsValue::from(answer.slice(at + 1, answer.length()))))
                    }
                };
                let reply: PublishReply = serde_json::from_str(&String::from(head))?;
                Ok::<_, worker::Error>((reply, frame))
            }
            .await;
            match sent {
                Ok((reply, frame)) => {
                    for ((ws, id), outcome) in replies.iter().zip(reply.outcomes) {
                        if let Some(id) = id {
                            let _ = ws.send_with_str(ack_frame(id, outcome.seq));
                        }
                    }
                    // The Room's delivery to this relay, riding in the answer.
                    if let (Some(d), Some(body)) = (reply.delivery, frame) {
                        if let Err(e) = self.apply_delivery(&d.epoch, d.first, d.last, d.first_ts, &body).await {
                            console_error!("relay: delivery in the publish answer: {e}");
                        }
                    }
                }
                Err(e) => {
                    console_error!("relay: publish failed: {e}");
                    for (ws, id) in &replies {
                        self.refuse(ws, id.as_deref(), Rejection::new(ErrorCode::Internal, "publish failed; retry"));
                    }
                }
            }
        }
    }

    fn forget(self: &Rc<Self>, ws: &WebSocket) {
        if self.ensure_core(None).is_err() {
            return;
        }
        if let Some(a) = attachment(ws) {
            let _ = self.with_core(|c| c.closed(&a.conn));
        }
        self.schedule_report();
    }

    /// Tells the Room this relay's connection count, coalescing changes that
    /// happen while a report is in flight into one more report.
    fn schedule_report(self: &Rc<Self>) {
        if !self.with_core(RelayCore::want_report).unwrap_or(false) {
            return;
        }
        let this = Rc::clone(self);
        wasm_bindgen_futures::spawn_local(async move {
            loop {
                let open = this.open_connections();
                let sent = async {
                    let report = this.with_core(|c| c.report(open))?;
                    let room = this.room_header()?;
                    call_json::<_, JoinReply>(&this.room_stub()?, path::REPORT, &[(link::HDR_ROOM, &room)], &report).await
                }
                .await;
                if let Err(e) = sent {
                    console_error!("relay: report failed: {e}");
                }
                if !this.with_core(RelayCore::report_done).unwrap_or(false) {
                    return;
                }
            }
        });
    }
}

/// `?since=N&epoch=E` as the router forwarded it (already validated).
fn resume_request(req: &Request) -> Result<Option<(u64, String)>> {
    let url = req.url()?;
    let mut since = None;
    let mut epoch = None;
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "since" => since = v.parse::<u64>().ok(),
            "epoch" => epoch = Some(v.into_owned()),
            _ => {}
        }
    }
    Ok(since.zip(epoch))
}

fn attachment(ws: &WebSocket) -> Option<Attachment> {
    ws.deserialize_attachment::<Attachment>().ok().flatten().filter(|a| a.herald == ATTACHMENT_VERSION)
}

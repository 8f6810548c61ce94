//! The `Relay` Durable Object: one per (room, region). It holds the
//! region's client sockets with the Hibernation API, runs [`RelayCore`],
//! and carries out what the core decides. Between messages it hibernates
//! with its sockets kept; what it must remember per socket is in the
//! socket's attachment, and its position in the room's stream is in its
//! storage.
//!
//! One concern per file: `admission` (joining the Room, resuming, welcoming
//! a client), `catch_up` (paced replays), `inbound` (client frames and publishes), `fan_out` (deliveries
//! and the core's actions), `sse` and `sse_body` (event streams), `expiry` (token expiry),
//! `attachment` and `position` (what survives hibernation).

mod admission;
mod attachment;
mod catch_up;
mod expiry;
mod fan_out;
mod inbound;
mod position;
mod sse;
mod sse_body;

use super::link_client::RoomLink;
use super::{js, wakeups};
use attachment::attachment;
use herald_core::link::{self, parse_relay_name, path};
use herald_core::relay::{BufferWatch, Frame, RelayCore};
use herald_core::single_flight::SingleFlight;
use herald_core::{Config, ErrorCode, Region, Rejection};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use wasm_bindgen::JsValue;
use worker::{
    console_error, durable_object, DurableObject, Env, Request, Response, Result, State, WebSocket,
    WebSocketIncomingMessage, WebSocketRequestResponsePair,
};

/// A frame as the relay holds it: one JS string, handed as is to every
/// socket and kept in the window without a copy into wasm memory.
#[derive(Clone, Debug)]
pub struct JsFrame(pub JsValue);

impl Frame for JsFrame {
    fn from_text(text: String) -> Self {
        JsFrame(JsValue::from(text))
    }
    fn text(&self) -> Option<String> {
        self.0.as_string()
    }
    fn size(&self) -> usize {
        js_len(&self.0)
    }
}

/// A JS string's length in UTF-16 units, read in JS without a copy: close
/// enough to bytes for a bound. 0 for anything else.
pub(super) fn js_len(frame: &JsValue) -> usize {
    use wasm_bindgen::JsCast;
    frame.dyn_ref::<js_sys::JsString>().map_or(0, |s| s.length() as usize)
}

/// The most bytes a JS string can queue on a socket: UTF-8 needs at most 3
/// bytes per UTF-16 unit. The buffer watch counts this, so it never
/// underestimates what a socket may hold.
pub(super) fn queued_bytes(frame: &JsValue) -> usize {
    js_len(frame).saturating_mul(3)
}

/// The socket buffer bound when the configuration is bad (every request is
/// then refused anyway).
const DEFAULT_WS_BUFFER_BOUND: usize = 4 << 20;

#[durable_object]
pub struct Relay {
    inner: Rc<RelayInner>,
}

struct RelayInner {
    state: State,
    env: Env,
    wakeups: u64,
    config: std::result::Result<Config, String>,
    core: RefCell<Option<RelayCore<JsFrame>>>,
    publishes: RefCell<SingleFlight<inbound::PendingPub>>,
    /// Open SSE streams. Unlike hibernatable sockets these live in memory,
    /// so an open stream keeps the relay awake.
    sse: RefCell<Vec<sse::SseClient>>,
    /// Sockets welcomed whose replay is still being read from the Room
    /// (`catch_up`): the fan-out passes them by until they are level.
    catching_up: RefCell<Vec<WebSocket>>,
    heartbeat_running: Cell<bool>,
    /// Open hibernatable sockets. Walking `getWebSockets()` on every
    /// admission made connecting N clients O(N²), so the walk happens once
    /// after a wake and the count is then kept: +1 on accept, −1 on close,
    /// and set to the exact number each fan-out reaches. A cached zero is
    /// always recounted, because `needs_join` trusts zero to mean that no
    /// client can miss a delivery.
    open_sockets: Cell<Option<u32>>,
    /// The alarm time this incarnation set or read (ms), so admitting a
    /// client with an expiring token does not read storage every time.
    alarm_at: Cell<Option<i64>>,
    /// When a fan-out reads the sockets' `bufferedAmount` (see
    /// [`BufferWatch`]): every frame sent to a socket is counted in it.
    buffer_watch: RefCell<BufferWatch>,
    /// Sockets already forgotten (an error can be followed by a close).
    forgotten: RefCell<std::collections::VecDeque<String>>,
    /// `deliver` calls waiting for the core to say they are done, by token
    /// (one or two in flight: a `Vec`, not a map).
    answers: RefCell<Vec<(u64, futures::channel::oneshot::Sender<()>)>>,
    next_token: Cell<u64>,
}

impl DurableObject for Relay {
    fn new(state: State, env: Env) -> Self {
        let wakeups = wakeups::constructed(&state.id().to_string());
        // `ping` is answered by the runtime itself, without waking the object.
        match WebSocketRequestResponsePair::new("ping", "pong") {
            Ok(pair) => state.set_websocket_auto_response(&pair),
            Err(e) => console_error!("relay: auto-response: {e:?}"),
        }
        let config = super::vars::config(&env).map_err(|e| e.to_string());
        let ws_bound = config.as_ref().map_or(DEFAULT_WS_BUFFER_BOUND, |c| c.ws_max_buffer_bytes);
        Relay {
            inner: Rc::new(RelayInner {
                state,
                env,
                wakeups,
                config,
                core: RefCell::new(None),
                publishes: RefCell::new(SingleFlight::new(inbound::MAX_PENDING_PUBLISHES, inbound::MAX_PENDING_PUBLISH_BYTES)),
                sse: RefCell::new(Vec::new()),
                catching_up: RefCell::new(Vec::new()),
                heartbeat_running: Cell::new(false),
                open_sockets: Cell::new(None),
                alarm_at: Cell::new(None),
                buffer_watch: RefCell::new(BufferWatch::new(ws_bound)),
                forgotten: RefCell::new(std::collections::VecDeque::new()),
                answers: RefCell::new(Vec::new()),
                next_token: Cell::new(0),
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
    /// The configuration, or the error naming the bad variable. Every path
    /// that needs a setting goes through here: no silent defaults.
    fn config(&self) -> Result<&Config> {
        self.config.as_ref().map_err(|e| worker::Error::RustError(format!("bad configuration: {e}")))
    }

    /// The core, created on first use from the object's name (or, failing
    /// that, the caller's headers), with the position it persisted.
    fn ensure_core(&self, req: Option<&Request>) -> Result<()> {
        if self.core.borrow().is_some() {
            return Ok(());
        }
        let config = self.config()?;
        let identity = self.state.id().name().and_then(|n| parse_relay_name(&n));
        let (room, region) = match (identity, req) {
            (Some(id), _) => id,
            (None, Some(req)) => (
                super::http::header(req, link::HDR_ROOM)?,
                Region::parse(&super::http::header(req, link::HDR_REGION)?).map_err(|r| worker::Error::RustError(r.message))?,
            ),
            (None, None) => return Err(worker::Error::RustError("relay does not know its name".into())),
        };
        // The construction time numbers the incarnation: it grows.
        let mut core = RelayCore::new(room, region, self.wakeups, js::random_tag(6), js::now_ms());
        core.set_publish_rate(config.pub_rate, config.pub_burst);
        core.set_history_rate(config.history_rate, config.history_burst);
        core.set_retention(config.retention());
        // A replay from the window goes out in one step once a client holds
        // at most half its bound, so the window keeps under the other half.
        let client_bound = config.sse_max_buffer_bytes.min(config.ws_max_buffer_bytes);
        core.set_window_bytes(herald_core::relay::RELAY_WINDOW_BYTES.min(client_bound / 2));
        if let Some(saved) = position::load(&self.state.storage().sql())? {
            core.restore(saved);
        }
        *self.core.borrow_mut() = Some(core);
        Ok(())
    }

    fn with_core<T>(&self, f: impl FnOnce(&mut RelayCore<JsFrame>) -> T) -> Result<T> {
        let mut guard = self.core.borrow_mut();
        let core = guard.as_mut().ok_or_else(|| worker::Error::RustError("relay core not loaded".into()))?;
        Ok(f(core))
    }

    fn room_link(&self) -> Result<RoomLink> {
        let room = self.with_core(|c| c.room().to_owned())?;
        RoomLink::new(&self.env, &room)
    }

    /// Sends one frame to one socket outside a fan-out, counting it for the
    /// buffer watch. `false` when the socket would not take it (closing).
    fn send_one(&self, ws: &WebSocket, frame: &JsValue) -> bool {
        self.buffer_watch.borrow_mut().sent_one(queued_bytes(frame));
        js::send_shared(ws, frame)
    }

    /// [`Self::send_one`] for a frame built in Rust.
    fn send_text(&self, ws: &WebSocket, text: &str) -> bool {
        self.buffer_watch.borrow_mut().sent_one(text.len());
        ws.send_with_str(text).is_ok()
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

    fn forget(self: &Rc<Self>, ws: &WebSocket) {
        if self.ensure_core(None).is_err() {
            return;
        }
        if let Some(a) = attachment(ws) {
            // An error may be followed by a close for the same socket: only
            // the first counts.
            let mut forgotten = self.forgotten.borrow_mut();
            if forgotten.contains(&a.conn) {
                return;
            }
            if forgotten.len() >= 1024 {
                forgotten.pop_front();
            }
            forgotten.push_back(a.conn.clone());
            drop(forgotten);
            // After a wake, the members are rebuilt from the other sockets,
            // without this one: its leave is then already in them.
            let rebuilt_now = !self.with_core(|c| c.presence_ready()).unwrap_or(true);
            if rebuilt_now {
                let _ = self.presence_rebuild(Some(&a.conn));
            }
            let _ = self.with_core(|c| {
                c.closed(&a.conn);
                c.user_left(&a.user_key());
                if !rebuilt_now {
                    c.member_left(a.member());
                }
            });
        }
        self.schedule_report();
        self.schedule_presence();
    }

    /// Counts the members of the sockets this object woke with, once. SSE
    /// streams do not survive a wake (they keep the object awake), so
    /// sockets are all there is.
    fn presence_once(&self) -> Result<()> {
        if self.with_core(|c| c.presence_ready())? {
            return Ok(());
        }
        self.presence_rebuild(None)
    }

    /// Rebuilds the members from the open sockets, leaving out `closing`
    /// (the connection id of a socket being forgotten).
    fn presence_rebuild(&self, closing: Option<&str>) -> Result<()> {
        let members: Vec<(String, Option<String>)> = self
            .state
            .get_websockets()
            .iter()
            .filter(|ws| js::is_open(ws))
            .filter_map(attachment)
            .filter(|a| Some(a.conn.as_str()) != closing)
            .map(|a| (a.member().to_owned(), a.info.clone()))
            .collect();
        self.with_core(|c| c.presence_rebuilt(members))
    }

    /// Sends the relay's presence news to the Room, one call at a time,
    /// until it owes nothing; after a failure it waits (jittered, up to
    /// 4 s) and tries again.
    fn schedule_presence(self: &Rc<Self>) {
        let Ok(Some(first)) = self.with_core(|c| c.presence_call()) else { return };
        let this = Rc::clone(self);
        wasm_bindgen_futures::spawn_local(async move {
            let mut call = Some(first);
            while let Some(c) = call.take() {
                let answer = async { this.room_link()?.presence(&c).await }.await;
                let failures = match answer {
                    Ok(ack) => this.with_core(|core| core.presence_answered(Some(ack))).unwrap_or(0),
                    Err(e) => {
                        console_error!("relay: presence call failed: {e}");
                        this.with_core(|core| core.presence_answered(None)).unwrap_or(1)
                    }
                };
                if failures > 0 {
                    let delay = herald_core::room::REDELIVERY.delay(failures, &mut herald_core::backoff::Rng::new(js::now_ms()));
                    worker::Delay::from(std::time::Duration::from_millis(delay)).await;
                }
                call = this.with_core(|core| core.presence_call()).ok().flatten();
            }
        });
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
                let sent = async { this.room_link()?.report(&this.with_core(|c| c.report(open))?).await }.await;
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

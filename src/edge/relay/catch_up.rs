//! Bringing a resuming client level with the live fan-out, one page at a
//! time.
//!
//! A replay that reaches past the relay's window is read from the Room in
//! pages of at most a mebibyte (`herald_core::page`), each sent once it
//! fits in what the client may have buffered, and the next is read only
//! once the client has taken most of the last one. Meanwhile the client is welcomed but held out of the live
//! fan-out; deliveries it misses land in the window, and the last step
//! sends them from there and joins the fan-out with no `await` in between,
//! so replay and live traffic meet without a gap or a duplicate. The relay
//! never holds more than a page per resuming client, however far back the
//! client asks.

use super::sse_body::{Chunk, StreamOut};
use super::{js_len, JsFrame, RelayInner};
use crate::edge::js;
use herald_core::outbox::Pushed;
use herald_core::relay::{trim_frame, Resume};
use herald_core::server_frame::reset_frame;
use herald_core::{sse, CloseCode};
use std::rc::Rc;
use std::time::Duration;
use wasm_bindgen::JsValue;
use worker::{console_error, WebSocket};

/// How often a paced replay looks whether its client has drained.
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// How long a replay waits for its client to take a page before it counts
/// the client as too slow.
const DRAIN_PATIENCE_MS: u64 = 30_000;
/// Attempts at one Room read before the replay gives up (the client is then
/// closed with a transient code and resumes again).
const READ_ATTEMPTS: u32 = 3;

/// Where a replay goes.
pub(super) enum Target {
    Socket(WebSocket),
    Stream(Rc<StreamOut>),
}

/// What a resuming client is sent after its welcome.
pub(super) struct Replay {
    pub epoch: String,
    /// Frames to send first (the relay's window, or the first Room page).
    pub frames: Vec<JsValue>,
    /// `None`: those frames bring the client level with the relay as of its
    /// welcome, and it joins the fan-out at once. `Some(seq)`: they reach
    /// `seq`, and the rest is read page by page.
    pub after: Option<u64>,
}

enum End {
    /// Level, and in the fan-out.
    Live,
    /// The client stopped taking what it was sent.
    Slow,
    /// The Room could not be read.
    Failed,
    /// The client left.
    Gone,
}

impl Target {
    /// Sends one frame through `relay` (so a socket's frame is counted in
    /// its buffer watch); `Err` says how the replay ends when it could not.
    fn send(&self, relay: &RelayInner, frame: &JsValue, epoch: &str, bound: usize) -> Result<(), End> {
        match self {
            Target::Socket(ws) => relay.send_one(ws, frame).then_some(()).ok_or(End::Gone),
            Target::Stream(out) => {
                let Some(text) = frame.as_string() else { return Ok(()) };
                match out.push(Chunk::new(&sse::delivery_events(&text, epoch)), bound) {
                    Pushed::Queued => Ok(()),
                    Pushed::Overflowed => Err(End::Slow),
                    Pushed::Closed => Err(End::Gone),
                }
            }
        }
    }

    fn backlog(&self) -> usize {
        match self {
            Target::Socket(ws) => js::buffered_amount(ws),
            Target::Stream(out) => out.unsent(),
        }
    }

    fn gone(&self) -> bool {
        match self {
            Target::Socket(ws) => !js::is_open(ws),
            Target::Stream(out) => out.is_closed(),
        }
    }
}

impl RelayInner {
    /// Sends a replay, in the background when it continues from the Room.
    /// Returns once what can go at once has gone; with `after: None` the
    /// client is live on return.
    pub(super) fn start_catch_up(self: &Rc<Self>, target: Target, replay: Replay) {
        if replay.after.is_none() {
            let bound = self.buffer_bound(&target);
            let sent = replay.frames.iter().try_for_each(|frame| target.send(self, frame, &replay.epoch, bound));
            self.end_catch_up(&target, sent.err().unwrap_or(End::Live));
            return;
        }
        if let Target::Socket(ws) = &target {
            self.catching_up.borrow_mut().push(ws.clone());
        }
        let this = Rc::clone(self);
        wasm_bindgen_futures::spawn_local(async move {
            let end = this.catch_up(&target, replay).await;
            this.end_catch_up(&target, end);
        });
    }

    fn buffer_bound(&self, target: &Target) -> usize {
        let config = self.config().ok();
        match target {
            Target::Socket(_) => config.map_or(4 << 20, |c| c.ws_max_buffer_bytes),
            Target::Stream(_) => config.map_or(4 << 20, |c| c.sse_max_buffer_bytes),
        }
    }

    async fn catch_up(&self, target: &Target, replay: Replay) -> End {
        let bound = self.buffer_bound(target);
        let Replay { epoch, frames, after } = replay;
        if let Err(end) = frames.iter().try_for_each(|frame| target.send(self, frame, &epoch, bound)) {
            return end;
        }
        let Some(mut after) = after else { return End::Live };
        loop {
            if let Some(end) = self.drained(target, bound).await {
                return end;
            }
            let now = js::now_ms();
            let plan = match self.with_core(|c| c.plan_resume(&epoch, after, now)) {
                Ok(plan) => plan,
                Err(_) => return End::Failed,
            };
            match plan {
                Resume::Frames(window) => {
                    // From here to joining the fan-out nothing awaits.
                    let sent = window.into_iter().try_for_each(|(JsFrame(frame), trim)| {
                        match frame.as_string().and_then(|f| trim_frame(&f, trim.unwrap_or(0), false)) {
                            Some(kept) => target.send(self, &JsValue::from_str(&kept), &epoch, bound),
                            None => Ok(()),
                        }
                    });
                    return sent.err().unwrap_or(End::Live);
                }
                Resume::NotRecoverable => return self.jump(target, bound),
                Resume::FromRoom { after: from, upto } => {
                    let Some((head, frame)) = self.read_page(from, upto, &epoch).await else { return End::Failed };
                    if !head.recovered || head.last <= after {
                        // Pruned (or erased) while the replay ran.
                        return self.jump(target, bound);
                    }
                    if let Some(frame) = frame {
                        if let Some(end) = self.room_for(target, js_len(&frame), bound).await {
                            return end;
                        }
                        if let Err(end) = target.send(self, &frame, &epoch, bound) {
                            return end;
                        }
                    }
                    after = head.last;
                }
            }
        }
    }

    /// The rest of the replay is no longer stored (pruned meanwhile, or the
    /// room was erased): a `reset` to where the relay is, then live.
    fn jump(&self, target: &Target, bound: usize) -> End {
        let Ok((epoch, seq)) = self.with_core(|c| (c.epoch().unwrap_or_default().to_owned(), c.cursor().unwrap_or(0))) else {
            return End::Failed;
        };
        let sent = target.send(self, &JsValue::from_str(&reset_frame(&epoch, seq)), &epoch, bound);
        sent.err().unwrap_or(End::Live)
    }

    /// Waits until the client holds at most half the bound. `None` when it
    /// does; otherwise how the replay ends.
    async fn drained(&self, target: &Target, bound: usize) -> Option<End> {
        self.wait_for(target, |backlog| backlog <= bound / 2).await
    }

    /// Waits until a page of `len` bytes fits within the bound, or the
    /// client holds nothing (a page larger than a small bound then goes
    /// alone, as a single large message does).
    async fn room_for(&self, target: &Target, len: usize, bound: usize) -> Option<End> {
        // SSE adds an `id:`/`event:` head per message: an eighth is ample.
        let len = len.saturating_add(len / 8);
        self.wait_for(target, |backlog| backlog == 0 || backlog.saturating_add(len) <= bound).await
    }

    async fn wait_for(&self, target: &Target, ready: impl Fn(usize) -> bool) -> Option<End> {
        let started = js::now_ms();
        loop {
            if target.gone() {
                return Some(End::Gone);
            }
            if ready(target.backlog()) {
                return None;
            }
            if js::now_ms().saturating_sub(started) > DRAIN_PATIENCE_MS {
                return Some(End::Slow);
            }
            worker::Delay::from(DRAIN_POLL).await;
        }
    }

    async fn read_page(
        &self,
        from: u64,
        upto: u64,
        epoch: &str,
    ) -> Option<(herald_core::link::RangeHead, Option<JsValue>)> {
        for attempt in 1..=READ_ATTEMPTS {
            let read = async { self.room_link()?.range(from, upto, Some(epoch)).await }.await;
            match read {
                Ok(page) => return Some(page),
                Err(e) => console_error!("relay: replay read {from}..{upto} failed (attempt {attempt}): {e}"),
            }
            worker::Delay::from(Duration::from_millis(100 * u64::from(attempt))).await;
        }
        None
    }

    /// Lets the client into the fan-out, or closes it.
    fn end_catch_up(&self, target: &Target, end: End) {
        match target {
            Target::Socket(ws) => {
                self.catching_up.borrow_mut().retain(|c| !js::same_socket(c, ws));
                let close = match end {
                    End::Live | End::Gone => None,
                    End::Slow => Some(CloseCode::TooSlow),
                    End::Failed => Some(CloseCode::InternalError),
                };
                if let Some(code) = close {
                    let _ = ws.close(Some(code.code()), Some(code.reason()));
                }
            }
            Target::Stream(out) => match end {
                End::Live => self.sse_live(out),
                End::Slow | End::Failed | End::Gone => out.close(),
            },
        }
        if matches!(end, End::Slow) {
            let _ = self.with_core(|c| c.slow_closed());
        }
    }
}

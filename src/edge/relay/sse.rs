//! Server-sent event streams: the same fan-out as sockets, written as SSE
//! events with `id: epoch:seq`, plus heartbeat comments. An open stream
//! lives in memory and keeps the relay awake; the heartbeat loop ends with
//! the last stream.
//!
//! Each delivery is rendered to SSE text once, and that one buffer
//! (`Chunk`) is queued on every live stream (`sse_body`). A client further
//! behind than `HERALD_SSE_MAX_BUFFER_BYTES` is cut off, its queue freed at
//! once, and it reconnects with `Last-Event-ID` and resumes.

use super::admission::Admitted;
use super::catch_up::Target;
use super::sse_body::{Body, Chunk, StreamOut};
use super::RelayInner;
use crate::edge::js;
use herald_core::outbox::Pushed;
use herald_core::server_frame::reset_frame;
use herald_core::sse;
use std::rc::Rc;
use worker::{Request, Response, Result};

/// One SSE client.
pub(super) struct SseClient {
    pub out: Rc<StreamOut>,
    exp: Option<u64>,
    /// The key its connection counts under.
    key: String,
    /// Who it is in presence.
    member: String,
    /// Its user (`sub`), `None` for an anonymous reader: it gets that
    /// user's `read` events.
    pub user: Option<String>,
    /// Receives the fan-out. A resuming stream is not live until its
    /// replay has caught up (`catch_up`).
    pub live: bool,
}

impl RelayInner {
    /// An SSE stream: `welcome`, then `reset` if a resume was refused, the
    /// replay, and live events.
    pub(super) async fn events(self: Rc<Self>, req: &Request) -> Result<Response> {
        let Admitted { grant, key, recovered, replay, welcome, conn } = match self.admit_client(req).await {
            Ok(a) => a,
            Err(answer) => return answer,
        };
        let epoch = self.with_core(|c| c.epoch().unwrap_or_default().to_owned())?;
        let bound = self.config()?.sse_max_buffer_bytes;
        let mut head = String::from(sse::RETRY);
        head.push_str(&sse::event("welcome", &welcome));
        if recovered == Some(false) {
            let seq = self.with_core(|c| c.cursor().unwrap_or(0))?;
            head.push_str(&sse::event("reset", &reset_frame(&epoch, seq)));
        }
        let out = Rc::new(StreamOut::default());
        out.push(Chunk::new(&head), bound);
        let live = replay.is_none();
        // A stream is a member too: its user, or itself when anonymous.
        let member = grant.user.clone().unwrap_or(conn);
        self.presence_once()?;
        self.with_core(|c| c.member_connected(&member, grant.info.as_deref()))?;
        self.schedule_presence();
        let user = grant.user.clone();
        self.sse.borrow_mut().push(SseClient { out: Rc::clone(&out), exp: grant.expires_s, key, member, user, live });
        if let Some(replay) = replay {
            self.start_catch_up(Target::Stream(Rc::clone(&out)), replay);
        }
        self.schedule_report();
        self.start_heartbeat();
        let headers = worker::Headers::new();
        headers.set("content-type", "text/event-stream; charset=utf-8")?;
        headers.set("cache-control", "no-store")?;
        Ok(Response::from_stream(Body(out))?.with_headers(headers))
    }

    /// Writes `text` to every live SSE client as one shared chunk,
    /// forgetting the ones that left, ending the streams whose tokens
    /// expired, and cutting off the ones too far behind.
    pub(super) fn write_sse(self: &Rc<Self>, text: &str) {
        self.write_sse_for(text, None);
    }

    /// [`RelayInner::write_sse`] for the streams of `user` only, or every
    /// stream when `None`.
    pub(super) fn write_sse_for(self: &Rc<Self>, text: &str, user: Option<&str>) {
        let now_s = js::now_ms() / 1000;
        let Ok((skew, bound)) = self.config().map(|c| (c.clock_skew_s, c.sse_max_buffer_bytes)) else { return };
        let chunk = Chunk::new(text);
        let mut gone: Vec<(String, String)> = Vec::new();
        let mut slow = 0;
        let mut peak = 0;
        self.sse.borrow_mut().retain(|c| {
            if c.out.is_closed() {
                gone.push((c.key.clone(), c.member.clone()));
                return false;
            }
            if !c.live {
                return true;
            }
            if c.exp.is_some_and(|exp| now_s > exp.saturating_add(skew)) {
                c.out.close();
                gone.push((c.key.clone(), c.member.clone()));
                return false;
            }
            if user.is_some() && c.user.as_deref() != user {
                return true;
            }
            match c.out.push(chunk.clone(), bound) {
                Pushed::Queued => {
                    peak = peak.max(c.out.unsent());
                    true
                }
                Pushed::Overflowed => {
                    slow += 1;
                    gone.push((c.key.clone(), c.member.clone()));
                    false
                }
                Pushed::Closed => {
                    gone.push((c.key.clone(), c.member.clone()));
                    false
                }
            }
        });
        let _ = self.with_core(|c| {
            c.saw_buffer(peak);
            (0..slow).for_each(|_| c.slow_closed());
            for (key, member) in &gone {
                c.user_left(key);
                c.member_left(member);
            }
        });
        if !gone.is_empty() {
            self.schedule_report();
            self.schedule_presence();
        }
    }

    /// Marks a caught-up stream live, unless it went away meanwhile.
    pub(super) fn sse_live(&self, out: &Rc<StreamOut>) {
        for c in self.sse.borrow_mut().iter_mut() {
            if Rc::ptr_eq(&c.out, out) {
                c.live = true;
            }
        }
    }

    /// Heartbeat comments while any SSE client is open.
    fn start_heartbeat(self: &Rc<Self>) {
        let Ok(secs) = self.config().map(|c| c.sse_heartbeat_s) else { return };
        if self.heartbeat_running.replace(true) {
            return;
        }
        let this = Rc::clone(self);
        wasm_bindgen_futures::spawn_local(async move {
            loop {
                worker::Delay::from(std::time::Duration::from_secs(secs)).await;
                this.write_sse(sse::HEARTBEAT);
                if this.sse.borrow().is_empty() {
                    this.heartbeat_running.set(false);
                    return;
                }
            }
        });
    }
}

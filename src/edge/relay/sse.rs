//! Server-sent event streams: the same fan-out as sockets, written as SSE
//! events with `id: epoch:seq`, plus heartbeat comments. An open stream
//! lives in memory and keeps the relay awake; the heartbeat loop ends with
//! the last stream.

use super::admission::Admitted;
use super::RelayInner;
use crate::edge::js;
use futures::channel::mpsc::{unbounded, UnboundedSender};
use herald_core::server_frame::reset_frame;
use herald_core::sse;
use std::rc::Rc;
use wasm_bindgen::JsValue;
use worker::{Request, Response, Result};

/// One SSE client: the writing end of its response stream.
pub(super) struct SseClient {
    tx: UnboundedSender<std::result::Result<Vec<u8>, worker::Error>>,
    exp: Option<u64>,
    /// The key its connection counts under.
    key: String,
}

impl RelayInner {
    /// An SSE stream: `welcome`, then `reset` if a resume was refused, the
    /// replay, and live events.
    pub(super) async fn events(self: Rc<Self>, req: &Request) -> Result<Response> {
        let Admitted { grant, key, recovered, replay, welcome, .. } = match self.admit_client(req).await {
            Ok(a) => a,
            Err(answer) => return answer,
        };
        let epoch = self.with_core(|c| c.epoch().unwrap_or_default().to_owned())?;
        let mut head = String::from(sse::RETRY);
        head.push_str(&sse::event("welcome", &welcome));
        if recovered == Some(false) {
            let seq = self.with_core(|c| c.cursor().unwrap_or(0))?;
            head.push_str(&sse::event("reset", &reset_frame(&epoch, seq)));
        }
        for frame in replay.iter().filter_map(JsValue::as_string) {
            head.push_str(&sse::delivery_events(&frame, &epoch));
        }
        let (tx, rx) = unbounded();
        tx.unbounded_send(Ok(head.into_bytes())).map_err(|e| worker::Error::RustError(e.to_string()))?;
        self.sse.borrow_mut().push(SseClient { tx, exp: grant.expires_s, key });
        self.schedule_report();
        self.start_heartbeat();
        let headers = worker::Headers::new();
        headers.set("content-type", "text/event-stream; charset=utf-8")?;
        headers.set("cache-control", "no-store")?;
        Ok(Response::from_stream(rx)?.with_headers(headers))
    }

    /// Writes `bytes` to every SSE client, forgetting the ones that left and
    /// ending the streams whose tokens expired.
    pub(super) fn write_sse(self: &Rc<Self>, bytes: &[u8]) {
        let now_s = js::now_ms() / 1000;
        let Ok(skew) = self.config().map(|c| c.clock_skew_s) else { return };
        let mut gone = Vec::new();
        self.sse.borrow_mut().retain(|c| {
            let live = c.exp.is_none_or(|exp| now_s <= exp.saturating_add(skew));
            let kept = live && c.tx.unbounded_send(Ok(bytes.to_vec())).is_ok();
            if !kept {
                gone.push(c.key.clone());
            }
            kept
        });
        if !gone.is_empty() {
            let _ = self.with_core(|c| gone.iter().for_each(|key| c.user_left(key)));
            self.schedule_report();
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
                this.write_sse(sse::HEARTBEAT.as_bytes());
                if this.sse.borrow().is_empty() {
                    this.heartbeat_running.set(false);
                    return;
                }
            }
        });
    }
}

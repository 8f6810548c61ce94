//! Frames from client sockets, as the core's verdict says: pings, history
//! reads, refusals, and publishes, which are forwarded to the Room in
//! batches, one call at a time.

use super::attachment::attachment;
use super::{JsFrame, RelayInner};
use crate::edge::js;
use herald_core::close_code::CloseCode;
use herald_core::link::{LinkPub, PublishBatch, ReadCall};
use herald_core::relay::Inbound;
use herald_core::server_frame::{ack_frame, err_frame};
use herald_core::single_flight::Pushed;
use herald_core::{ErrorCode, Rejection};
use serde_json::value::RawValue;
use std::rc::Rc;
use wasm_bindgen::JsValue;
use worker::{console_error, WebSocket};

/// Publishes forwarded to the Room in one call, at most.
const MAX_PUBLISH_BATCH: usize = 256;
/// Bytes of publishes in one call to the Room, at most (a single larger
/// publish goes alone): the call's body and its retries' copies are held
/// while it is in flight, so 256 maximal publishes (16 MiB) would be too much.
const MAX_PUBLISH_BATCH_BYTES: usize = 1024 * 1024;
/// Publishes waiting for the Room before new ones are refused `overloaded`.
pub(super) const MAX_PENDING_PUBLISHES: usize = 4096;
/// Bytes of publishes waiting for the Room or in the call to it, past which
/// new ones are refused `overloaded` like past [`MAX_PENDING_PUBLISHES`]:
/// the count alone allows 4096 × 64 KiB = 256 MiB.
pub(super) const MAX_PENDING_PUBLISH_BYTES: usize = 8 * 1024 * 1024;

/// A publish waiting to be forwarded, with the socket its ack goes to.
pub(super) struct PendingPub {
    ws: WebSocket,
    id: Option<Box<RawValue>>,
    publish: LinkPub,
}

impl RelayInner {
    /// Carries out the core's verdict on one client frame.
    pub(super) async fn on_text(self: Rc<Self>, ws: WebSocket, text: &str) {
        let verdict = self.ensure_core(None).and_then(|()| {
            let config = self.config()?;
            let att = attachment(&ws).ok_or_else(|| worker::Error::RustError("a socket without its attachment".into()))?;
            let (limits, skew) = (config.frame_limits(), config.clock_skew_s);
            self.with_core(|c| c.handle_client_frame(js::now_ms(), &att.conn, &att.grant(), text, limits, skew))
        });
        let verdict = match verdict {
            Ok(v) => v,
            Err(e) => {
                console_error!("relay: {e}");
                self.send_text(&ws, &err_frame(None, &Rejection::new(ErrorCode::Internal, "server misconfigured")));
                return;
            }
        };
        match verdict {
            Inbound::Pong => {
                self.send_text(&ws, "pong");
            }
            Inbound::Close(code) => {
                let _ = ws.close(Some(code.code()), Some(code.reason()));
            }
            Inbound::Refuse { id, rejection, close } => self.send_refusal(&ws, id, &rejection, close),
            Inbound::History { id, since, limit } => {
                if let Err(e) = self.history(&ws, id, since, limit).await {
                    console_error!("relay: history: {e}");
                    self.refuse(&ws, id, Rejection::new(ErrorCode::Internal, "history read failed; retry"));
                }
            }
            Inbound::Presence { id, cursor, limit } => {
                if let Err(e) = self.presence_snapshot(&ws, id, cursor.as_deref(), limit).await {
                    console_error!("relay: presence: {e}");
                    self.refuse(&ws, id, Rejection::new(ErrorCode::Internal, "presence read failed; retry"));
                }
            }
            Inbound::Read { id, read } => {
                if let Err(e) = self.read(&ws, id, &read).await {
                    console_error!("relay: read: {e}");
                    self.refuse(&ws, id, Rejection::new(ErrorCode::Internal, "read failed; retry"));
                }
            }
            Inbound::Publish { id, publish } => {
                let bytes = publish.payload_bytes() + id.map_or(0, |i| i.get().len());
                let pending = PendingPub { ws: ws.clone(), id: id.map(ToOwned::to_owned), publish };
                let pushed = self.publishes.borrow_mut().push(pending, bytes);
                match pushed {
                    Pushed::StartSender => self.forward_publishes().await,
                    Pushed::Queued => {}
                    Pushed::Full => {
                        let message = format!(
                            "too many publishes waiting at this relay ({MAX_PENDING_PUBLISHES}, or {} MiB); retry",
                            MAX_PENDING_PUBLISH_BYTES >> 20
                        );
                        self.refuse(&ws, id, Rejection::new(ErrorCode::Overloaded, message));
                    }
                }
            }
        }
    }

    /// Answers a `history` frame with the Room's stored messages.
    async fn history(&self, ws: &WebSocket, id: Option<&RawValue>, since: u64, limit: u64) -> worker::Result<()> {
        let frame = self.room_link()?.history_frame(since, limit, id.map_or("null", RawValue::get)).await?;
        self.send_one(ws, &frame);
        Ok(())
    }

    /// Forwards a `read` frame to the Room, and acks it when it has an id,
    /// with the user's mark after it. The mark's move reaches this socket
    /// too, as a `read` frame through the Room, like every other connection
    /// of the user.
    async fn read(&self, ws: &WebSocket, id: Option<&RawValue>, read: &ReadCall) -> worker::Result<()> {
        let reply = self.room_link()?.read(read).await?;
        if let Some(id) = id {
            self.send_text(ws, &ack_frame(id, Some(reply.read)));
        }
        Ok(())
    }

    /// Answers a `presence` frame with a page of the Room's members.
    async fn presence_snapshot(&self, ws: &WebSocket, id: Option<&RawValue>, cursor: Option<&str>, limit: u64) -> worker::Result<()> {
        let id = id.map_or("null", RawValue::get);
        let resp = self.room_link()?.presence_snapshot(cursor, limit, Some(id)).await?;
        if resp.status_code() != 200 {
            return Err(worker::Error::RustError(format!("presence answered {}", resp.status_code())));
        }
        self.send_one(ws, &JsValue::from(crate::edge::http::js_text(&resp).await?));
        Ok(())
    }

    /// Sends an `err` frame, and closes the socket when the core says the
    /// client has sent too many bad frames lately.
    pub(super) fn refuse(&self, ws: &WebSocket, id: Option<&RawValue>, rejection: Rejection) {
        let conn = attachment(ws).map(|a| a.conn).unwrap_or_default();
        match self.with_core(|c| c.refusal(js::now_ms(), &conn, id, rejection)) {
            Ok(Inbound::Refuse { id, rejection, close }) => self.send_refusal(ws, id, &rejection, close),
            Ok(_) => {}
            Err(e) => console_error!("relay: {e}"),
        }
    }

    /// Drains the publish queue to the Room, one call at a time; publishes
    /// that arrive meanwhile ride in the next call. Each `take` also tells
    /// the queue the last batch is done, which frees its bytes. A call whose answer does
    /// not come is sent again, same batch id, as the core's retry policy
    /// says: the Room answers a retry with the seqs it already stored, so
    /// publishers get one ack and nothing is stored twice.
    async fn forward_publishes(self: Rc<Self>) {
        // Behind a large fan-out, more publishes are likely queued in the
        // runtime: one turn lets them join this call (see
        // `GATHER_FROM_CONNECTIONS`). The queue keeps arrival order.
        if herald_core::relay::gather_before_forwarding(self.open_connections()) {
            worker::Delay::from(std::time::Duration::ZERO).await;
        }
        loop {
            let batch = self.publishes.borrow_mut().take(MAX_PUBLISH_BATCH, MAX_PUBLISH_BATCH_BYTES);
            if batch.is_empty() {
                return;
            }
            let mut replies = Vec::with_capacity(batch.len());
            let mut pubs = Vec::with_capacity(batch.len());
            for p in batch {
                replies.push((p.ws, p.id));
                pubs.push(p.publish);
            }
            let sent = self.publish_with_retries(pubs).await;
            match sent {
                Ok((reply, frame)) => {
                    for ((ws, id), outcome) in replies.iter().zip(reply.outcomes) {
                        if let Some(id) = id {
                            self.send_text(ws, &ack_frame(id, outcome.seq));
                        }
                    }
                    // The Room's delivery to this relay, riding in the answer.
                    if let Some(head) = reply.delivery {
                        let _ = self.with_core(|c| c.handle_delivery(None, head, frame.map(JsFrame)));
                        self.pump();
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

    async fn publish_with_retries(
        &self,
        pubs: Vec<LinkPub>,
    ) -> worker::Result<(herald_core::link::PublishReply, Option<wasm_bindgen::JsValue>)> {
        let open = self.open_connections();
        let body = self.with_core(|c| PublishBatch { id: c.next_batch_id(), report: c.report(open), pubs })?;
        let text = serde_json::to_string(&body)?;
        let link = self.room_link()?;
        let mut attempt = 1;
        loop {
            match link.publish(text.clone()).await {
                Ok(answer) => return Ok(answer),
                Err(e) => match self.with_core(|c| c.publish_retry_delay(attempt))? {
                    Some(ms) => {
                        console_error!("relay: publish attempt {attempt} failed ({e}); retrying");
                        worker::Delay::from(std::time::Duration::from_millis(ms)).await;
                        attempt += 1;
                    }
                    None => return Err(e),
                },
            }
        }
    }
}

impl RelayInner {
    fn send_refusal(&self, ws: &WebSocket, id: Option<&RawValue>, rejection: &Rejection, close: Option<CloseCode>) {
        self.send_text(ws, &err_frame(id, rejection));
        if let Some(close) = close {
            let _ = ws.close(Some(close.code()), Some(close.reason()));
        }
    }
}

//! Frames from client sockets: pings, history reads, and publishes, which
//! are forwarded to the Room in batches, one call at a time.

use super::attachment::attachment;
use super::{JsFrame, RelayInner};
use crate::edge::js;
use herald_core::auth::Capability;
use herald_core::close_code::CloseCode;
use herald_core::link::{LinkPub, PublishBatch};
use herald_core::server_frame::{ack_frame, err_frame};
use herald_core::single_flight::Pushed;
use herald_core::{parse_client_frame, ClientFrame, ErrorCode, Rejection};
use serde_json::value::RawValue;
use std::rc::Rc;
use worker::{console_error, WebSocket};

/// Publishes forwarded to the Room in one call, at most.
const MAX_PUBLISH_BATCH: usize = 256;
/// Publishes waiting for the Room before new ones are refused `overloaded`.
pub(super) const MAX_PENDING_PUBLISHES: usize = 4096;

/// A publish waiting to be forwarded, with the socket its ack goes to.
pub(super) struct PendingPub {
    ws: WebSocket,
    id: Option<Box<RawValue>>,
    publish: LinkPub,
}

impl RelayInner {
    pub(super) async fn on_text(self: Rc<Self>, ws: WebSocket, text: &str) {
        if let Err(e) = self.ensure_core(None) {
            console_error!("relay: {e}");
            self.refuse(&ws, None, Rejection::new(ErrorCode::Internal, "server misconfigured"));
            return;
        }
        let Ok(config) = self.config() else { return };
        let (limits, skew, (rate, burst)) = (config.frame_limits(), config.clock_skew_s, (config.pub_rate, config.pub_burst));
        let Some(att) = attachment(&ws) else {
            console_error!("relay: a socket without its attachment");
            return;
        };
        let now = js::now_ms();
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
                    let message = format!("over {rate} publishes/s (burst {burst}); slow down");
                    self.refuse(&ws, p.id, Rejection::new(ErrorCode::RateLimited, message));
                    return;
                }
                let pending = PendingPub {
                    ws: ws.clone(),
                    id: p.id.map(ToOwned::to_owned),
                    publish: LinkPub { from: att.from.clone(), data: p.data.to_owned(), mid: p.mid, eph: p.ephemeral },
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

    /// Answers a `history` frame with the Room's stored messages.
    async fn history(&self, ws: &WebSocket, id: Option<&RawValue>, since: u64, limit: u64) -> worker::Result<()> {
        let frame = self.room_link()?.history_frame(since, limit, id.map_or("null", RawValue::get)).await?;
        js::send_shared(ws, &frame);
        Ok(())
    }

    /// Sends an `err` frame, and closes the socket if it has sent too many bad
    /// frames lately. Server-side failures are not the client's strike.
    pub(super) fn refuse(&self, ws: &WebSocket, id: Option<&RawValue>, rejection: Rejection) {
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
    /// that arrive meanwhile ride in the next call. A call whose answer does
    /// not come is sent again, same batch id, as the core's retry policy
    /// says: the Room answers a retry with the seqs it already stored, so
    /// publishers get one ack and nothing is stored twice.
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
            let sent = self.publish_with_retries(pubs).await;
            match sent {
                Ok((reply, frame)) => {
                    for ((ws, id), outcome) in replies.iter().zip(reply.outcomes) {
                        if let Some(id) = id {
                            let _ = ws.send_with_str(ack_frame(id, outcome.seq));
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

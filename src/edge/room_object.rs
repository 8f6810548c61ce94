//! The `Room` Durable Object: one per room, the primary. It runs
//! [`RoomCore`], persists what it orders, and delivers to relays with stub
//! `fetch` calls. It holds no sockets, so it is evicted whenever idle.

use super::http::{header, internal_request, json, json_text, read_json, reject};
use super::{js, storage, wakeups};
use herald_core::link::{self, path, JoinReply, LinkPub, PublishBatch, PublishReply, RelayReport};
use herald_core::room::{Delivery, RoomAction, RoomCore};
use herald_core::server_frame::{batch_frame, Message};
use herald_core::{ErrorCode, Rejection};
use serde::Deserialize;
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::JsValue;
use worker::{console_error, durable_object, DurableObject, Env, Method, Request, Response, Result, State};

/// Longest range a relay may ask for in one gap repair.
const MAX_RANGE: u64 = 1000;

#[durable_object(fetch)]
pub struct Room {
    inner: Rc<RoomInner>,
}

struct RoomInner {
    state: State,
    env: Env,
    wakeups: u64,
    core: RefCell<Option<RoomCore>>,
}

impl DurableObject for Room {
    fn new(state: State, env: Env) -> Self {
        let wakeups = wakeups::constructed(&state.id().to_string());
        Room { inner: Rc::new(RoomInner { state, env, wakeups, core: RefCell::new(None) }) }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let inner = Rc::clone(&self.inner);
        match inner.route(req).await {
            Ok(resp) => Ok(resp),
            Err(e) => {
                console_error!("room: {e}");
                reject(&Rejection::new(ErrorCode::Internal, "the room failed; retry"))
            }
        }
    }
}

#[derive(Deserialize)]
struct RangeQuery {
    after: u64,
    upto: u64,
}

impl RoomInner {
    /// Loads the core from storage on first use. The room name comes from
    /// the caller's header because it is needed before anything else.
    fn ensure_core(&self, req: &Request) -> Result<()> {
        if self.core.borrow().is_some() {
            return Ok(());
        }
        let room = match self.state.id().name() {
            Some(name) => name,
            None => header(req, link::HDR_ROOM)?,
        };
        let restored = storage::load(&self.state.storage().sql())?;
        let core = RoomCore::new(room, restored, js::random_tag(12));
        *self.core.borrow_mut() = Some(core);
        Ok(())
    }

    fn with_core<T>(&self, f: impl FnOnce(&mut RoomCore) -> T) -> Result<T> {
        let mut guard = self.core.borrow_mut();
        let core = guard
            .as_mut()
            .ok_or_else(|| worker::Error::RustError("room core not loaded".into()))?;
        Ok(f(core))
    }

    async fn route(self: Rc<Self>, mut req: Request) -> Result<Response> {
        self.ensure_core(&req)?;
        let result = match req.path().as_str() {
            path::REPORT => {
                let report: RelayReport = read_json(&mut req).await?;
                let reply: JoinReply = self.with_core(|c| c.report(report))?;
                json(&reply)
            }
            path::PUBLISH => {
                let batch: PublishBatch = read_json(&mut req).await?;
                let now = js::now_ms();
                let reply = self.with_core(|c| {
                    c.report(batch.report);
                    PublishReply {
                        epoch: c.epoch().to_owned(),
                        outcomes: batch.pubs.into_iter().map(|p| c.publish(now, p)).collect(),
                    }
                })?;
                self.pump()?;
                json(&reply)
            }
            path::HTTP_PUBLISH => {
                let p: LinkPub = read_json(&mut req).await?;
                let now = js::now_ms();
                let (outcome, epoch) = self.with_core(|c| (c.publish(now, p), c.epoch().to_owned()))?;
                self.pump()?;
                json(&serde_json::json!({"seq": outcome.seq, "epoch": epoch, "ts": outcome.ts}))
            }
            path::RANGE => {
                let q: RangeQuery = req.query()?;
                let upto = q.upto.min(q.after.saturating_add(MAX_RANGE));
                let messages = storage::range(&self.state.storage().sql(), q.after, upto, MAX_RANGE)?;
                let frames: Vec<String> = messages.iter().map(Message::to_frame).collect();
                let body = if frames.is_empty() { String::new() } else { batch_frame(&frames) };
                json_text(body, 200)
            }
            path::STATS => {
                let stats = self.with_core(|c| c.stats(self.wakeups))?;
                json(&stats)
            }
            other => reject(&Rejection::new(ErrorCode::NotFound, format!("no room route {other}"))),
        };
        // Anything the handler queued (saving a relay table) is carried out
        // before the answer leaves, so the output gate covers it.
        self.pump()?;
        result
    }

    /// Carries out the core's actions until it has none. Storage writes run
    /// inline; deliveries run as tasks that feed their result back and pump
    /// again, so each relay has at most one delivery in flight.
    fn pump(self: &Rc<Self>) -> Result<()> {
        loop {
            let Some(action) = self.with_core(RoomCore::poll_action)? else {
                return Ok(());
            };
            let sql = self.state.storage().sql();
            match action {
                RoomAction::SaveMeta { epoch, seq } => storage::save_meta(&sql, &epoch, seq)?,
                RoomAction::Store(message) => storage::store_message(&sql, &message)?,
                RoomAction::SaveRelays(table) => storage::save_relays(&sql, &table)?,
                RoomAction::Deliver(delivery) => {
                    let this = Rc::clone(self);
                    wasm_bindgen_futures::spawn_local(async move { this.deliver(delivery).await });
                }
            }
        }
    }

    async fn deliver(self: Rc<Self>, d: Delivery) {
        let region = d.region;
        let result = self.send_delivery(&d).await.map_err(|e| {
            console_error!("room: delivery to {region} failed: {e}");
        });
        if self.with_core(|c| c.delivered(region, result)).is_ok() {
            if let Err(e) = self.pump() {
                console_error!("room: {e}");
            }
        }
    }

    async fn send_delivery(&self, d: &Delivery) -> Result<RelayReport> {
        let room = self.with_core(|c| c.room().to_owned())?;
        let stub = self
            .env
            .durable_object("RELAY")?
            .get_by_name(&super::relay_object::relay_name(&room, d.region))?;
        let first = d.first.map(|s| s.to_string()).unwrap_or_default();
        let last = d.last.map(|s| s.to_string()).unwrap_or_default();
        let mut headers = vec![
            (link::HDR_ROOM, room.as_str()),
            (link::HDR_REGION, d.region.as_str()),
            (link::HDR_EPOCH, d.epoch.as_str()),
        ];
        if d.first.is_some() {
            headers.push((link::HDR_FIRST, first.as_str()));
            headers.push((link::HDR_LAST, last.as_str()));
        }
        let req = internal_request(Method::Post, path::DELIVER, &headers, Some(JsValue::from_str(&d.frame)))?;
        let mut resp = stub.fetch_with_request(req).await?;
        let text = resp.text().await?;
        if resp.status_code() != 200 {
            return Err(worker::Error::RustError(format!("relay answered {}: {text}", resp.status_code())));
        }
        Ok(serde_json::from_str(&text)?)
    }
}

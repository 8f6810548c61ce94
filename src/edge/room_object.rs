//! The `Room` Durable Object: one per room, the primary. It runs
//! [`RoomCore`], persists what it orders, and delivers to relays with stub
//! `fetch` calls. It holds no sockets, so it is evicted whenever idle.

use super::http::{header, internal_request, json, json_text, read_json, reject};
use super::{js, storage, wakeups};
use herald_core::link::{self, path, JoinReply, LinkPub, PublishBatch, PublishReply, RelayReport, ReplyDelivery};
use herald_core::room::{Delivery, RoomAction, RoomCore};
use herald_core::server_frame::{batch_frame, history_frame, Message};
use herald_core::{Config, ErrorCode, Rejection};
use serde::Deserialize;
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::JsValue;
use worker::{console_error, durable_object, DurableObject, Env, Method, Request, Response, Result, State};

/// Longest range a relay may ask for in one gap repair.
const MAX_RANGE: u64 = 1000;

#[durable_object(alarm)]
pub struct Room {
    inner: Rc<RoomInner>,
}

struct RoomInner {
    state: State,
    env: Env,
    wakeups: u64,
    config: std::result::Result<Config, String>,
    core: RefCell<Option<RoomCore>>,
}

impl DurableObject for Room {
    fn new(state: State, env: Env) -> Self {
        let wakeups = wakeups::constructed(&state.id().to_string());
        let config = Config::from_vars(|k| env.var(k).ok().map(|v| v.to_string())).map_err(|e| e.to_string());
        Room { inner: Rc::new(RoomInner { state, env, wakeups, config, core: RefCell::new(None) }) }
    }

    async fn alarm(&self) -> Result<Response> {
        let inner = Rc::clone(&self.inner);
        if let Err(e) = inner.ensure_core(None).and_then(|()| {
            inner.with_core(|c| c.alarm(js::now_ms()))?;
            inner.pump()
        }) {
            console_error!("room: alarm: {e}");
        }
        Response::empty()
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
    epoch: Option<String>,
}

#[derive(Deserialize)]
struct HistoryParams {
    since: u64,
    limit: u64,
}

impl RoomInner {
    /// Loads the core from storage on first use. The room name comes from
    /// the caller's header because it is needed before anything else.
    fn ensure_core(&self, req: Option<&Request>) -> Result<()> {
        if self.core.borrow().is_some() {
            return Ok(());
        }
        let room = match (self.state.id().name(), req) {
            (Some(name), _) => name,
            (None, Some(req)) => header(req, link::HDR_ROOM)?,
            (None, None) => return Err(worker::Error::RustError("room does not know its name".into())),
        };
        let config = self.config.as_ref().map_err(|e| worker::Error::RustError(e.clone()))?;
        let restored = storage::load(&self.state.storage().sql())?;
        let mut core = RoomCore::new(room, restored, js::random_tag(12), config.retention());
        core.set_max_batch(config.max_batch);
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
        self.ensure_core(Some(&req))?;
        let result = match req.path().as_str() {
            path::REPORT => {
                let report: RelayReport = read_json(&mut req).await?;
                let reply: JoinReply = self.with_core(|c| c.report(report))?;
                json(&reply)
            }
            path::PUBLISH => {
                let batch: PublishBatch = read_json(&mut req).await?;
                let now = js::now_ms();
                let region = batch.report.region;
                let (reply, frame) = self.with_core(|c| {
                    c.report(batch.report);
                    let outcomes = batch.pubs.into_iter().map(|p| c.publish(now, p)).collect();
                    // Before the pump, so the publishing relay's messages ride
                    // in this answer rather than in a call of their own.
                    let (delivery, frame) = match c.reply_delivery(region) {
                        Some(d) => {
                            let first_ts = d.first_ts.unwrap_or(0);
                            (Some(ReplyDelivery { epoch: d.epoch, first: d.first, last: d.last, first_ts }), Some(d.frame))
                        }
                        None => (None, None),
                    };
                    (PublishReply { epoch: c.epoch().to_owned(), outcomes, delivery }, frame)
                })?;
                self.pump()?;
                let mut body = serde_json::to_string(&reply)?;
                if let Some(frame) = frame {
                    body.push('\n');
                    body.push_str(&frame);
                }
                json_text(body, 200)
            }
            path::HTTP_PUBLISH => {
                let p: LinkPub = read_json(&mut req).await?;
                let now = js::now_ms();
                let (outcome, epoch) = self.with_core(|c| (c.publish(now, p), c.epoch().to_owned()))?;
                self.pump()?;
                json(&serde_json::json!({"seq": outcome.seq, "epoch": epoch, "ts": outcome.ts}))
            }
            path::RANGE => {
                // Gap repair (no epoch) and resume (with the client's epoch).
                let q: RangeQuery = req.query()?;
                let now = js::now_ms();
                let recovered = match &q.epoch {
                    Some(epoch) => self.with_core(|c| c.recoverable(now, epoch, q.after))?,
                    None => true,
                };
                let upto = q.upto.min(q.after.saturating_add(MAX_RANGE));
                let messages = if recovered {
                    storage::range(&self.state.storage().sql(), q.after, upto, MAX_RANGE)?
                } else {
                    Vec::new()
                };
                let frames: Vec<String> = messages.iter().map(Message::to_frame).collect();
                let body = if frames.is_empty() { String::new() } else { batch_frame(&frames) };
                let last = messages.last().and_then(|m| m.seq).unwrap_or(q.after);
                let resp = json_text(body, 200)?;
                resp.headers().set(link::HDR_RECOVERED, if recovered { "1" } else { "0" })?;
                resp.headers().set(link::HDR_LAST, &last.to_string())?;
                Ok(resp)
            }
            path::HISTORY => {
                let q: HistoryParams = req.query()?;
                let plan = self.with_core(|c| c.read(js::now_ms(), q.since, q.limit))?;
                let mut messages = storage::range(&self.state.storage().sql(), plan.after, plan.upto, plan.limit + 1)?;
                let more = messages.len() as u64 > plan.limit;
                messages.truncate(plan.limit as usize);
                let epoch = self.with_core(|c| c.epoch().to_owned())?;
                let id = req.headers().get("x-herald-id")?;
                let id_raw = id.as_deref().and_then(|t| serde_json::value::RawValue::from_string(t.to_owned()).ok());
                let framed = req.headers().has("x-herald-framed")?;
                let head = framed.then_some(id_raw.as_deref());
                json_text(history_frame(head, &epoch, &messages, more), 200)
            }
            path::ERASE => {
                let reply = self.with_core(|c| c.erase(js::random_tag(12)))?;
                json(&serde_json::json!({"epoch": reply.epoch, "seq": reply.seq}))
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
                RoomAction::Prune(p) => storage::prune(&sql, &p)?,
                RoomAction::EraseAll => storage::erase_all(&sql)?,
                RoomAction::SetAlarm(at) => {
                    let storage = self.state.storage();
                    wasm_bindgen_futures::spawn_local(async move {
                        let when = worker::ScheduledTime::new(js_sys::Date::new(&JsValue::from_f64(at as f64)));
                        if let Err(e) = storage.set_alarm(when).await {
                            console_error!("room: set alarm: {e}");
                        }
                    });
                }
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
        let first_ts = d.first_ts.map(|t| t.to_string()).unwrap_or_default();
        if d.first.is_some() {
            headers.push((link::HDR_FIRST, first.as_str()));
            headers.push((link::HDR_LAST, last.as_str()));
            headers.push((link::HDR_FIRST_TS, first_ts.as_str()));
        }
        let req = internal_request(Method::Post, path::DELIVER, &headers, Some(JsValue::from_str(&d.frame)))?;
        let resp = stub.fetch_with_request(req).await?;
        let text = String::from(super::http::js_text(&resp).await?);
        if resp.status_code() != 200 {
            return Err(worker::Error::RustError(format!("relay answered {}: {text}", resp.status_code())));
        }
        Ok(serde_json::from_str(&text)?)
    }
}

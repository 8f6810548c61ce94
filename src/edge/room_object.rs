//! The `Room` Durable Object: one per room, the primary. It runs
//! [`RoomCore`], persists what it orders, and delivers to relays with stub
//! `fetch` calls. It holds no sockets, so it is evicted whenever idle.

use super::http::{header, json, json_text, read_json, reject};
use super::url::Url;
use super::{js, link_client, storage, wakeups, webhook};
use herald_core::link::{self, join_answer, path, JoinReply, LinkPub, PublishBatch, PublishReply, RelayReport};
use herald_core::room::{Delivery, RoomAction, RoomCore};
use herald_core::server_frame::{batch_frame, history_frame};
use herald_core::webhook::{Outcome, WebhookAction, WebhookRequest};
use herald_core::{Config, ErrorCode, Rejection};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::JsValue;
use worker::{console_error, durable_object, DurableObject, Env, Request, Response, Result, State};

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
        let config = super::vars::config(&env).map_err(|e| e.to_string());
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

/// The link's publish call, made by Durable Object RPC: the Room's JS class
/// (`shim/entry.mjs`, which extends `DurableObject` so that the runtime
/// allows RPC) forwards `publish(room, batch)` here. Stub `fetch` carried it
/// before; RPC saves the HTTP framing on the hottest internal call.
#[wasm_bindgen::prelude::wasm_bindgen]
impl Room {
    /// Orders and stores a relay's publish batch (JSON, a
    /// [`PublishBatch`]); the answer is [`join_answer`]'s text. A thrown
    /// error means nothing can be said of the batch: the relay sends it
    /// again with the same id, and the Room answers what it stored.
    #[wasm_bindgen::prelude::wasm_bindgen(js_name = publishRpc)]
    pub fn publish_rpc(&self, room: String, batch: String) -> std::result::Result<String, JsValue> {
        self.inner.publish(&room, &batch).map_err(|e| {
            console_error!("room: publish: {e}");
            JsValue::from(js_sys::Error::new(&format!("the room failed: {e}")))
        })
    }
}

impl RoomInner {
    fn publish(self: &Rc<Self>, room: &str, batch: &str) -> Result<String> {
        self.ensure_core_named(room)?;
        let batch: PublishBatch = serde_json::from_str(batch)?;
        let now = js::now_ms();
        let region = batch.report.region;
        let (reply, frame, fail) = self.with_core(|c| {
            let outcomes = c.publish_batch(now, batch);
            // Before the pump, so the publishing relay's messages ride in
            // this answer rather than in a call of their own.
            let delivery = c.reply_delivery(now, region);
            let reply = PublishReply { epoch: c.epoch().to_owned(), outcomes, delivery: delivery.as_ref().map(|d| d.head.clone()) };
            (reply, delivery.map(|d| d.frame), c.fail_publish_answer())
        })?;
        self.pump()?;
        if fail {
            // Fault injection: stored, but the answer is "lost".
            return Err(worker::Error::RustError("fault injected: publish answer dropped".into()));
        }
        Ok(join_answer(&reply, frame.as_deref())?)
    }

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
        self.load_core(room)
    }

    /// [`Self::ensure_core`] for an RPC call, which names the room itself.
    fn ensure_core_named(&self, caller: &str) -> Result<()> {
        if self.core.borrow().is_some() {
            return Ok(());
        }
        self.load_core(self.state.id().name().unwrap_or_else(|| caller.to_owned()))
    }

    fn load_core(&self, room: String) -> Result<()> {
        let config = self.config.as_ref().map_err(|e| worker::Error::RustError(e.clone()))?;
        let restored = storage::load(&self.state.storage().sql())?;
        // The construction time numbers the incarnation: it grows.
        let mut core = RoomCore::new(room, restored, js::random_tag(12), config.retention(), js::now_ms());
        core.set_max_batch(config.max_batch);
        core.set_faults(config.faults);
        core.set_http_publish_rate(config.pub_rate, config.pub_burst);
        core.set_http_history_rate(config.history_rate, config.history_burst);
        core.set_presence_config(config.presence);
        if let Some(hook) = config.webhook.clone() {
            let saved = webhook::load(&self.state.storage().sql())?;
            core.set_webhooks(js::now_ms(), hook, saved, js::random_tag(12));
        }
        core.set_reads_used(storage::reads_used(&self.state.storage().sql())?);
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
                let reply: JoinReply = self.with_core(|c| c.report(js::now_ms(), report))?;
                json(&reply)
            }
            path::HTTP_PUBLISH => {
                let p: LinkPub = read_json(&mut req).await?;
                let now = js::now_ms();
                let exempt = req.headers().get(link::HDR_RATE_EXEMPT)?.is_some();
                if let Err(retry_ms) = self.with_core(|c| c.admit_http_publish(now, p.from.as_deref(), exempt))? {
                    let (rate, burst) = self.with_core(|c| c.http_publish_rate())?;
                    let resp = reject(&Rejection::new(
                        ErrorCode::RateLimited,
                        format!("over {rate} publishes/s (burst {burst}) for this user in this room; retry after the Retry-After seconds"),
                    ))?;
                    resp.headers().set("retry-after", &retry_ms.div_ceil(1000).max(1).to_string())?;
                    return Ok(resp);
                }
                let (outcome, epoch) = self.with_core(|c| (c.publish(now, p), c.epoch().to_owned()))?;
                self.pump()?;
                json(&Published { seq: outcome.seq, epoch: &epoch, ts: outcome.ts })
            }
            path::RANGE => {
                // Gap repair (no epoch) and resume (with the client's epoch).
                let q = Url::of(&req)?;
                let (after, upto, epoch) = (q.required_u64("after")?, q.required_u64("upto")?, q.param("epoch"));
                let (plan, fail) = self.with_core(|c| (c.range(js::now_ms(), after, upto, epoch.as_deref()), c.fail_range()))?;
                if fail {
                    return reject(&Rejection::new(ErrorCode::Internal, "fault injected: range read failed"));
                }
                let mut head = plan.head;
                // One page, bounded in bytes as well as count; the relay
                // reads again from `head.last` for the rest.
                let page = storage::read_page(&self.state.storage().sql(), head.from, plan.upto, plan.limit)?;
                let body = if page.frames.is_empty() { String::new() } else { batch_frame(&page.frames) };
                head.last = page.last.unwrap_or(head.from);
                let resp = json_text(body, 200)?;
                resp.headers().set(link::HDR_RANGE, &serde_json::to_string(&head)?)?;
                Ok(resp)
            }
            path::HISTORY => {
                if let Some(refused) = self.history_over_rate(&req)? {
                    return Ok(refused);
                }
                let q = Url::of(&req)?;
                let (since, limit) = (q.required_u64("since")?, q.required_u64("limit")?);
                let plan = self.with_core(|c| c.read(js::now_ms(), since, limit))?;
                let page = storage::read_page(&self.state.storage().sql(), plan.after, plan.upto, plan.limit)?;
                let epoch = self.with_core(|c| c.epoch().to_owned())?;
                let id = req.headers().get("x-herald-id")?;
                let id_raw = id.as_deref().and_then(|t| serde_json::value::RawValue::from_string(t.to_owned()).ok());
                let framed = req.headers().has("x-herald-framed")?;
                let head = framed.then_some(id_raw.as_deref());
                json_text(history_frame(head, &epoch, &page.frames, page.more), 200)
            }
            path::PRESENCE => {
                let call: link::PresenceCall = read_json(&mut req).await?;
                let ack = self.with_core(|c| c.presence_call(js::now_ms(), call))?;
                json(&ack)
            }
            path::PRESENCE_SNAPSHOT => {
                let q = Url::of(&req)?;
                let limit = q.required_u64("limit")?;
                let limit = usize::try_from(limit.clamp(1, herald_core::presence::MAX_SNAPSHOT_LIMIT)).unwrap_or(1);
                let page = self.with_core(|c| c.presence_snapshot(q.param("cursor").as_deref(), limit))?;
                let id = req.headers().get("x-herald-id")?;
                json_text(herald_core::presence::snapshot_frame(id.as_deref(), &page), 200)
            }
            path::READ => {
                let call: link::ReadCall = read_json(&mut req).await?;
                // Read and moved in one synchronous step: no other call
                // comes between the stored mark and the new one.
                let stored = storage::read_mark(&self.state.storage().sql(), &call.user)?;
                let reply = self.with_core(|c| c.mark_read(js::now_ms(), &call.user, stored, call.seq))?;
                json(&reply)
            }
            path::UNREAD => {
                let q = Url::of(&req)?;
                let user = q.param("user").ok_or_else(|| worker::Error::RustError("query parameter user missing".into()))?;
                // A relay welcoming the user names its cursor: count up to
                // it, and answer `null` when the room has no read marks.
                let upto = q.optional_u64("upto")?;
                let sql = self.state.storage().sql();
                if upto.is_some() && !self.with_core(|c| c.reads_used())? {
                    // A room without marks: the welcome carries no count.
                    return json_text("null".into(), 200);
                }
                let read = storage::read_mark(&sql, &user)?;
                let plan = self.with_core(|c| c.unread_plan(js::now_ms(), read, upto))?;
                let unread = storage::count_unread(&sql, plan, &user)?;
                match upto {
                    Some(_) => json(&link::UnreadCount { read, unread }),
                    None => json(&UserUnread { user: &user, read, unread }),
                }
            }
            path::ERASE => {
                let (epoch, seq) = self.with_core(|c| c.erase(js::now_ms(), js::random_tag(12)))?;
                json(&Erased { epoch: &epoch, seq })
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

    /// The 429 for an HTTP history read over its reader's rate, or `None`
    /// to go on. Reads marked exempt (a backend's, or a socket's through its
    /// relay, which limits those per connection) always go on; any other
    /// read without a key is limited under the empty key, so a caller that
    /// forgets to name the reader is limited rather than free.
    fn history_over_rate(&self, req: &Request) -> Result<Option<Response>> {
        let exempt = req.headers().get(link::HDR_RATE_EXEMPT)?.is_some();
        let key = req.headers().get(link::HDR_RATE_KEY)?.unwrap_or_default();
        let Err(retry_ms) = self.with_core(|c| c.admit_http_history(js::now_ms(), &key, exempt))? else {
            return Ok(None);
        };
        let (rate, burst) = self.with_core(|c| c.http_history_rate())?;
        let resp = reject(&Rejection::new(
            ErrorCode::RateLimited,
            format!("over {rate} history reads/s (burst {burst}) for this user in this room; retry after the Retry-After seconds"),
        ))?;
        resp.headers().set("retry-after", &retry_ms.div_ceil(1000).max(1).to_string())?;
        Ok(Some(resp))
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
                RoomAction::SaveMeta(meta) => storage::save_meta(&sql, &meta)?,
                RoomAction::Store(message) => storage::store_message(&sql, &message)?,
                RoomAction::SaveRelays(table) => storage::save_relays(&sql, &table)?,
                RoomAction::Prune(p) => storage::prune(&sql, &p)?,
                RoomAction::EraseAll => storage::erase_all(&sql)?,
                RoomAction::RememberBatch { id, outcomes, ts } => storage::remember_batch(&sql, &id, &outcomes, ts)?,
                RoomAction::SavePresence { changed, links } => storage::save_presence(&sql, &changed, &links)?,
                RoomAction::SaveRead { user, seq } => storage::save_read(&sql, &user, seq)?,
                RoomAction::SetAlarm(at) => {
                    let storage = self.state.storage();
                    wasm_bindgen_futures::spawn_local(async move {
                        let when = worker::ScheduledTime::new(js_sys::Date::new(&JsValue::from_f64(at as f64)));
                        if let Err(e) = storage.set_alarm(when).await {
                            console_error!("room: set alarm: {e}");
                        }
                    });
                }
                RoomAction::Webhook(WebhookAction::Save { events, state }) => webhook::save(&sql, &events, &state)?,
                RoomAction::Webhook(WebhookAction::Forget { upto }) => webhook::forget(&sql, upto)?,
                RoomAction::Webhook(WebhookAction::Send(request)) => {
                    // Its own task: the fan-out never waits on the receiver.
                    let this = Rc::clone(self);
                    wasm_bindgen_futures::spawn_local(async move { this.send_webhook(request).await });
                }
                RoomAction::Deliver(delivery) => {
                    let this = Rc::clone(self);
                    wasm_bindgen_futures::spawn_local(async move { this.deliver(delivery).await });
                }
            }
        }
    }

    /// One webhook request; its answer goes back to the core, which may
    /// send the next batch or set the retry alarm.
    async fn send_webhook(self: Rc<Self>, request: WebhookRequest) {
        let outcome = webhook::send(&request).await;
        if !matches!(outcome, Outcome::Status(200..=299)) {
            let room = self.with_core(|c| c.room().to_owned()).unwrap_or_default();
            console_error!("room {room}: webhook of {} events failed: {outcome:?}", request.events);
        }
        if self.with_core(|c| c.webhook_sent(js::now_ms(), request.id, outcome)).is_ok() {
            if let Err(e) = self.pump() {
                console_error!("room: {e}");
            }
        }
    }

    async fn deliver(self: Rc<Self>, d: Delivery) {
        let region = d.region;
        let sent = async {
            let room = self.with_core(|c| c.room().to_owned())?;
            link_client::deliver(&self.env, &room, region, &d.head, &d.frame).await
        }
        .await;
        let result = sent.map(Some).map_err(|e| {
            console_error!("room: delivery to {region} failed: {e}");
        });
        if self.with_core(|c| c.delivered(js::now_ms(), region, result)).is_ok() {
            if let Err(e) = self.pump() {
                console_error!("room: {e}");
            }
        }
    }
}

// The Room's HTTP answers, as docs/PROTOCOL.md gives them. Structs, not
// `serde_json::json!`: its map builder would be the `.wasm`'s only
// `serde_json::Value` code.

/// `POST …/messages`: `{"seq","epoch","ts"}` (`seq` null when ephemeral).
#[derive(serde::Serialize)]
struct Published<'a> {
    seq: Option<u64>,
    epoch: &'a str,
    ts: u64,
}

/// `GET …/unread?user=U`: `{"user","read","unread"}`.
#[derive(serde::Serialize)]
struct UserUnread<'a> {
    user: &'a str,
    read: u64,
    unread: u64,
}

/// `DELETE …/messages`: the new epoch and the seq it starts after.
#[derive(serde::Serialize)]
struct Erased<'a> {
    epoch: &'a str,
    seq: u64,
}

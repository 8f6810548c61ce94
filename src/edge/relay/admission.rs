//! Letting a client in: the join with the Room when the relay needs one,
//! the resume replay, then the connection id and welcome from the core.

use super::attachment::{attach, attachment, Attachment};
use super::catch_up::{Replay, Target};
use super::{JsFrame, RelayInner};
use crate::edge::http::{header, reject};
use crate::edge::js;
use crate::edge::url::Url;
use herald_core::auth::{Capability, Grant};
use herald_core::link;
use herald_core::link::UnreadCount;
use herald_core::relay::{trim_frame, user_key, user_tag, Resume, UnreadAsk, WelcomeUnread};
use std::rc::Rc;
use wasm_bindgen::JsValue;
use worker::{console_error, Request, Response, Result, WebSocketPair};

/// What a client is sent after its welcome, and its unread count.
struct Prepared {
    recovered: Option<bool>,
    replay: Option<Replay>,
    unread: Option<(UnreadAsk, UnreadCount)>,
}

/// A client the relay has let in, ready to be attached.
pub(super) struct Admitted {
    pub grant: Grant,
    /// The key the connection counts under.
    pub key: String,
    pub recovered: Option<bool>,
    /// What follows the welcome of a recovered resume.
    pub replay: Option<Replay>,
    pub conn: String,
    pub welcome: String,
}

impl RelayInner {
    /// Joins the Room if needed and starts what a new client must be sent
    /// after its welcome: `(recovered, replay)`, `recovered` being `None`
    /// when the client did not ask to resume; and the user's unread count
    /// when the room has read marks. The resume and the count are asked of
    /// the Room at once, so a connect waits for one round trip, not two.
    async fn prepare_client(&self, req: &Request, grant: &Grant) -> Result<Prepared> {
        self.ensure_core(Some(req))?;
        let resume = resume_request(req)?;
        let open = self.open_connections();
        if self.with_core(|c| c.needs_join(open))? {
            let report = self.with_core(|c| c.join_report(open))?;
            let reply = self.room_link()?.report(&report).await?;
            // Count again: a client admitted while the join was in flight
            // must keep the cursor it was welcomed at.
            let open_now = self.open_connections();
            self.with_core(|c| c.joined(reply, open_now))?;
        }
        let resumed = self.resume_client(resume, grant);
        let (resumed, unread) = futures::future::join(resumed, self.ask_unread(grant.user.as_deref())).await;
        let (recovered, replay) = resumed?;
        Ok(Prepared { recovered, replay, unread })
    }

    /// `(recovered, replay)` for a client that asked to resume.
    async fn resume_client(&self, resume: Option<(u64, String)>, grant: &Grant) -> Result<(Option<bool>, Option<Replay>)> {
        let Some((since, epoch)) = resume else { return Ok((None, None)) };
        let may_read_history = grant.caps.has(Capability::History);
        let (replay, used_room) = self.start_resume(since, epoch, may_read_history).await?;
        self.with_core(|c| c.resumed(replay.is_some(), used_room))?;
        Ok((Some(replay.is_some()), replay))
    }

    /// The user's unread count for their welcome, up to the cursor now,
    /// when the room has read marks (or the relay does not know yet).
    /// Users without a `sub` have no mark. A Room that cannot answer costs
    /// the client its count, never its connection.
    async fn ask_unread(&self, user: Option<&str>) -> Option<(UnreadAsk, UnreadCount)> {
        let ask = self.with_core(|c| c.unread_ask(user)).ok().flatten()?;
        let answer = async { self.room_link()?.unread_for_welcome(user.unwrap_or_default(), ask.upto).await }.await;
        match answer {
            Ok(count) => {
                let _ = self.with_core(|c| c.unread_answered(count));
                count.map(|count| (ask, count))
            }
            Err(e) => {
                console_error!("relay: unread count: {e}; welcoming without it");
                None
            }
        }
    }

    /// Admits a WebSocket or SSE client: its grant from the Worker, the
    /// join and resume work, then its connection id and welcome. `Err(Ok(r))`
    /// is a refusal to answer with (the relay is full).
    pub(super) async fn admit_client(self: &Rc<Self>, req: &Request) -> std::result::Result<Admitted, Result<Response>> {
        let grant: Grant = header(req, link::HDR_GRANT)
            .and_then(|g| link::decode_grant(&g).ok_or_else(|| worker::Error::RustError("unreadable grant header".into())))
            .map_err(Err)?;
        let config = self.config().map_err(Err)?;
        let (max_relay, max_user) = (config.max_connections_per_relay, config.max_connections_per_user);
        self.ensure_core(Some(req)).map_err(Err)?;
        let ip = req.headers().get("cf-connecting-ip").ok().flatten();
        let key = user_key(grant.user.as_deref(), ip.as_deref());
        self.count_users_once().map_err(Err)?;
        // The place is reserved before any await, so simultaneous connects
        // see each other; it counts in reports from here until the caller
        // accepts the client (`end_admission`), so the Room never takes the
        // relay for empty.
        let open = self.open_connections();
        if let Err(r) = self.with_core(|c| c.reserve(&key, open, max_relay, max_user)).map_err(Err)? {
            return Err(reject(&r));
        }
        let prepared = self.prepare_client(req, &grant).await;
        let Prepared { recovered, replay, unread } = match prepared {
            Ok(p) => p,
            Err(e) => {
                let _ = self.with_core(|c| {
                    c.end_admission();
                    c.user_left(&key);
                });
                return Err(Err(e));
            }
        };
        // The caller must not await between this and joining the fan-out, so
        // the welcome's seq, the replay and live messages meet at one point.
        self.pump(); // what the answers changed (the relay's position) is saved
        let user = grant.user.as_deref().unwrap_or_default();
        let unread = unread.map(|(ask, count)| WelcomeUnread { user, ask, count });
        let admitted = self.with_core(|c| {
            c.end_admission();
            let admitted = c.admit_with_unread(recovered, unread);
            if admitted.is_none() {
                c.user_left(&key);
            }
            admitted
        });
        match admitted {
            Ok(Some((conn, welcome))) => Ok(Admitted { grant, key, recovered, replay, conn, welcome }),
            Ok(None) => Err(Err(worker::Error::RustError("relay has not joined".into()))),
            Err(e) => Err(Err(e)),
        }
    }

    /// Counts the sockets this object woke with by user, once.
    fn count_users_once(&self) -> Result<()> {
        if self.with_core(|c| c.users_counted())? {
            return Ok(());
        }
        let keys: Vec<String> = self
            .state
            .get_websockets()
            .iter()
            .filter(|ws| js::is_open(ws))
            .filter_map(|ws| attachment(ws).map(|a| a.user_key()))
            .collect();
        self.with_core(|c| c.count_users(keys.iter().map(String::as_str)))
    }

    pub(super) async fn connect(self: Rc<Self>, req: &Request) -> Result<Response> {
        let Admitted { grant, key, replay, conn, welcome, .. } = match self.admit_client(req).await {
            Ok(a) => a,
            Err(answer) => return answer,
        };
        // Counted before this socket is accepted, so it is not counted twice.
        self.presence_once()?;
        let pair = WebSocketPair::new()?;
        // Tags pick sockets without walking them all: the presence frames
        // it asked for, and the user's own `read` frames.
        let mut tags: Vec<String> = presence_tag(req, &grant)?.into_iter().map(str::to_owned).collect();
        tags.extend(grant.user.as_deref().map(user_tag));
        if tags.is_empty() {
            self.state.accept_web_socket(&pair.server);
        } else {
            let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
            self.state.accept_websocket_with_tags(&pair.server, &tags);
        }
        self.open_sockets.set(self.open_sockets.get().map(|n| n.saturating_add(1)));
        let attachment = Attachment::new(conn, &grant, key);
        let member = attachment.member().to_owned();
        attach(&pair.server, attachment)?;
        self.with_core(|c| c.member_connected(&member, grant.info.as_deref()))?;
        self.schedule_presence();
        // A new socket, not in the watch's peak: it holds its welcome.
        if !self.send_text(&pair.server, &welcome) {
            return Err(worker::Error::RustError("the new socket refused its welcome".into()));
        }
        if let Some(replay) = replay {
            self.start_catch_up(Target::Socket(pair.server.clone()), replay);
        }
        self.schedule_report();
        self.schedule_expiry(&grant).await;
        Response::from_websocket(pair.client)
    }

    /// Whether a client who saw up to `since` in `epoch` can be brought
    /// level, and its replay's first step: the relay's window where it
    /// reaches, else the first page from the Room's storage (the Room's
    /// answer says whether the rest is still stored). `None` when it cannot
    /// be; also whether the Room was read. Ephemeral messages are not
    /// replayed.
    ///
    /// A replay from the window is part of the subscription; one from
    /// storage reads history, so it needs the `history` capability. Without
    /// it, a resume the window cannot serve is not recovered.
    async fn start_resume(&self, since: u64, epoch: String, may_read_history: bool) -> Result<(Option<Replay>, bool)> {
        let now = js::now_ms();
        match self.with_core(|c| c.plan_resume(&epoch, since, now))? {
            Resume::NotRecoverable => Ok((None, false)),
            Resume::Frames(window) => {
                let frames = window
                    .into_iter()
                    .filter_map(|(JsFrame(frame), trim)| {
                        frame.as_string().and_then(|f| trim_frame(&f, trim.unwrap_or(0), false))
                    })
                    .map(|kept| JsValue::from_str(&kept))
                    .collect();
                Ok((Some(Replay { epoch, frames, after: None }), false))
            }
            Resume::FromRoom { .. } if !may_read_history => Ok((None, false)),
            Resume::FromRoom { after, upto } => {
                let (head, frame) = self.room_link()?.range(after, upto, Some(&epoch)).await?;
                if !head.recovered || head.last <= after {
                    return Ok((None, true));
                }
                Ok((Some(Replay { epoch, frames: frame.into_iter().collect(), after: Some(head.last) }), true))
            }
        }
    }
}

/// The hibernation tag that picks which presence frames a socket gets:
/// [`TAG_PRESENCE`] for `?presence=events`, [`TAG_PRESENCE_COUNTS`] for
/// `?presence=counts`, none without either (or without the `presence`
/// capability, which the Worker already refused).
fn presence_tag(req: &Request, grant: &Grant) -> Result<Option<&'static str>> {
    if !grant.caps.has(Capability::Presence) {
        return Ok(None);
    }
    let mode = Url::of(req)?.param("presence");
    Ok(match mode.as_deref() {
        Some("events") => Some(TAG_PRESENCE),
        Some("counts") => Some(TAG_PRESENCE_COUNTS),
        _ => None,
    })
}

/// Sockets that get `join`/`leave` events (and counts past the maximum).
pub(super) const TAG_PRESENCE: &str = "presence";
/// Sockets that get coalesced counts only.
pub(super) const TAG_PRESENCE_COUNTS: &str = "presence-counts";

/// `?since=N&epoch=E` as the router forwarded it (already validated).
fn resume_request(req: &Request) -> Result<Option<(u64, String)>> {
    let url = Url::of(req)?;
    let since = url.param("since").and_then(|v| v.parse::<u64>().ok());
    Ok(since.zip(url.param("epoch")))
}

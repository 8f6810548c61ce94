//! The Worker: validates what it can before any Durable Object is touched
//! (bad input costs the origin nothing), picks the client's region, and
//! routes to the regional Relay or to the Room.

use super::http::{json_text, read_body_bounded, reject, reject_with};
use super::js;
use super::link_client::{HistoryRate, RoomLink};
use super::url::Url;
use herald_core::link::relay_name;
use herald_core::link::{self, path, LinkPub};
use herald_core::auth::{authorize, verify_token, Capability, Grant, Keys};
use herald_core::batch;
use herald_core::rate::http_rate_key;
use herald_core::{parse_history_bounds, parse_http_publish, parse_presence_bounds, validate_room, Config, ErrorCode, Region, Rejection};
use futures::StreamExt;
use worker::{Env, Headers, Method, Request, Response, Result};

pub async fn handle(req: Request, env: Env) -> Result<Response> {
    let config = match super::vars::config(&env) {
        Ok(c) => c,
        Err(e) => return reject_with(ErrorCode::Internal, format!("server misconfigured: {e}")),
    };
    let path = super::url::Url::of(&req)?.path();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method(), segments.as_slice()) {
        // `/` and the demo page are static assets (wrangler.toml `[assets]`),
        // answered before the Worker runs; `/` reaching here is a 404.
        (Method::Get, ["healthz"]) => json_text(r#"{"ok":true}"#.into(), 200),
        (_, ["healthz"]) => reject_with(ErrorCode::MethodNotAllowed, "only GET is allowed here"),
        (_, ["v1", "demo", "token"]) => super::demo_token::handle(&req, &env, &config),
        (Method::Post, ["v1", "publish"]) => batch_publish(req, &env, &config).await,
        (_, ["v1", "publish"]) => reject_with(ErrorCode::MethodNotAllowed, "only POST is allowed here"),
        (_, ["v1", "rooms", room, rest @ ..]) => {
            let room = percent_decode(room);
            if let Err(r) = validate_room(&room) {
                return reject(&r);
            }
            let method = req.method();
            let needs = match (&method, rest) {
                (Method::Get, ["ws"] | ["events"]) => Some(Capability::Sub),
                (Method::Post, ["messages"]) => Some(Capability::Pub),
                (Method::Get, ["messages"]) => Some(Capability::History),
                (Method::Get, ["presence"]) => Some(Capability::Presence),
                (Method::Delete, ["messages"]) | (Method::Get, ["stats"] | ["unread"]) => Some(Capability::Admin),
                _ => None,
            };
            // A short or malformed HERALD_SECRET fails every room request with
            // an error naming it, instead of checking tokens with a weak key.
            let keys = match keys(&env) {
                Ok(k) => k,
                Err(e) => return reject_with(ErrorCode::Internal, format!("server misconfigured: {e}")),
            };
            // Every token is checked here, before any Durable Object is touched.
            let grant = match needs.map(|cap| grant_for(&req, keys.as_ref(), &config, &room, cap)) {
                Some(Ok(g)) => g,
                Some(Err(r)) => return reject(&r),
                None => Grant { user: None, caps: Default::default(), expires_s: None, info: None },
            };
            match (method, rest) {
                (Method::Get, ["ws"]) => connect(req, &env, &config, &room, &grant).await,
                (Method::Get, ["events"]) => events(req, &env, &config, &room, &grant).await,
                (Method::Post, ["messages"]) => publish(req, &env, &config, &room, &grant).await,
                (Method::Get, ["messages"]) => history(&req, &env, &room, &grant).await,
                (Method::Delete, ["messages"]) => erase(&env, &room).await,
                (Method::Get, ["stats"]) => stats(&env, &room).await,
                (Method::Get, ["presence"]) => presence(&req, &env, &room).await,
                (Method::Get, ["unread"]) => unread(&req, &env, &room).await,
                (_, ["ws"] | ["messages"] | ["stats"] | ["events"] | ["presence"] | ["unread"]) => {
                    reject_with(ErrorCode::MethodNotAllowed, "method not allowed on this endpoint")
                }
                _ => reject_with(ErrorCode::NotFound, "no such endpoint"),
            }
        }
        _ => reject_with(ErrorCode::NotFound, "no such endpoint"),
    }
}

/// The token from `?token=` (browsers cannot set headers on a WebSocket) or
/// `Authorization: Bearer`.
fn presented_token(req: &Request) -> Option<String> {
    let from_query = Url::of(req).ok().and_then(|u| u.param("token"));
    from_query.or_else(|| {
        let auth = req.headers().get("authorization").ok().flatten()?;
        auth.strip_prefix("Bearer ").map(|t| t.trim().to_owned())
    })
}

/// The token keys from `HERALD_SECRET` (a wrangler secret in production,
/// `.dev.vars` locally; see `herald_core::auth::Keys`). A malformed or short
/// secret is a configuration error naming the variable.
pub(super) fn keys(env: &Env) -> std::result::Result<Option<Keys>, String> {
    let value = env
        .secret("HERALD_SECRET")
        .map(|s| s.to_string())
        .or_else(|_| env.var("HERALD_SECRET").map(|v| v.to_string()))
        .unwrap_or_default();
    Keys::parse(&value)
}

fn grant_for(req: &Request, keys: Option<&Keys>, config: &Config, room: &str, cap: Capability) -> std::result::Result<Grant, Rejection> {
    let now_s = js::now_ms() / 1000;
    let token = presented_token(req);
    let grant = authorize(
        token.as_deref(),
        room,
        keys,
        &config.public_rooms,
        now_s,
        config.clock_skew_s,
    )?;
    grant.require(cap)?;
    Ok(grant)
}

/// Room names arrive URL-encoded; a name that decodes to something invalid
/// is refused by `validate_room` like any other.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes.get(i), bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (Some(b'%'), Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (Some(b), _, _) => {
                out.push(*b);
                i += 1;
            }
            (None, _, _) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The client's region: `?region=` when trusted, else `cf`, else the default.
fn pick_region(req: &Request, config: &Config) -> std::result::Result<Region, Rejection> {
    if config.trust_region_param {
        let url = Url::of(req).map_err(|_| Rejection::new(ErrorCode::BadFrame, "bad URL"))?;
        if let Some(hint) = url.param("region") {
            return Region::parse(&hint);
        }
    }
    let (continent, country, longitude) = js::cf_location(req);
    Ok(Region::from_location(continent.as_deref(), country.as_deref(), longitude)
        .unwrap_or(config.default_region))
}

async fn connect(req: Request, env: &Env, config: &Config, room: &str, grant: &Grant) -> Result<Response> {
    let upgrade = req.headers().get("upgrade")?.unwrap_or_default();
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return reject_with(ErrorCode::UpgradeRequired, "this endpoint speaks WebSocket; send Upgrade: websocket");
    }
    let resume = match resume_query(&req) {
        Ok(r) => r,
        Err(r) => return reject(&r),
    };
    if let Some(mode) = Url::of(&req)?.param("presence") {
        if mode != "events" && mode != "counts" {
            return reject(&Rejection::new(ErrorCode::BadFrame, "presence must be \"events\" or \"counts\""));
        }
        if let Err(r) = grant.require(Capability::Presence) {
            return reject(&r);
        }
    }
    to_relay(req, env, config, room, path::CONNECT, resume, grant).await
}

/// SSE: resumes from `?since=&epoch=`, or from the `Last-Event-ID` header a
/// browser's `EventSource` sends by itself when it reconnects.
async fn events(req: Request, env: &Env, config: &Config, room: &str, grant: &Grant) -> Result<Response> {
    // `Last-Event-ID` wins over the query: an `EventSource` reconnects to
    // the URL it was opened with, so `?since=` there is where it started,
    // and the header is where it got to.
    let resume = match req.headers().get("last-event-id")? {
        Some(id) => match herald_core::sse::parse_last_event_id(&id) {
            Some(r) => Some(r),
            None => return reject_with(ErrorCode::BadFrame, "Last-Event-ID must be <epoch>:<seq>"),
        },
        None => match resume_query(&req) {
            Ok(r) => r,
            Err(r) => return reject(&r),
        },
    };
    to_relay(req, env, config, room, path::EVENTS, resume, grant).await
}

/// Forwards a client connection to the relay of its region.
async fn to_relay(
    req: Request,
    env: &Env,
    config: &Config,
    room: &str,
    relay_path: &str,
    resume: Option<(u64, String)>,
    grant: &Grant,
) -> Result<Response> {
    let region = match pick_region(&req, config) {
        Ok(r) => r,
        Err(r) => return reject(&r),
    };
    let stub = env
        .durable_object("RELAY")?
        .get_by_name_with_location_hint(&relay_name(room, region), region.as_str())?;
    // A fresh request keeps the upgrade headers and adds who we are.
    let headers = Headers::new();
    for (k, v) in req.headers().entries() {
        headers.set(&k, &v)?;
    }
    headers.set(link::HDR_ROOM, room)?;
    headers.set(link::HDR_REGION, region.as_str())?;
    headers.set(link::HDR_GRANT, &link::encode_grant(grant)?)?;
    // The token itself goes no further than the Worker.
    headers.delete("authorization")?;
    // The presence subscription (validated by the caller) rides along.
    let presence = Url::of(&req)?.param("presence");
    let mut query = Vec::new();
    if let Some((since, epoch)) = resume {
        query.push(format!("since={since}&epoch={}", js::url_encode(&epoch)));
    }
    if let Some(mode) = presence {
        query.push(format!("presence={}", js::url_encode(&mode)));
    }
    let target = if query.is_empty() { relay_path.to_owned() } else { format!("{relay_path}?{}", query.join("&")) };
    let forwarded = super::http::new_request(Method::Get, &super::http::internal_url(&target), &headers, None)?;
    stub.fetch_with_request(forwarded).await
}

/// `?since=N&epoch=E` on a connect, checked by the core.
fn resume_query(req: &Request) -> std::result::Result<Option<(u64, String)>, Rejection> {
    let url = Url::of(req).map_err(|_| Rejection::new(ErrorCode::BadFrame, "bad URL"))?;
    let get = |name: &str| url.param(name);
    herald_core::client_frame::parse_resume(get("since").as_deref(), get("epoch").as_deref())
}

/// `GET …/messages`: limited at the Room per reader (the token's `sub`, or
/// the IP of an anonymous one) unless the token holds `admin`.
async fn history(req: &Request, env: &Env, room: &str, grant: &Grant) -> Result<Response> {
    let url = Url::of(req)?;
    let get = |name: &str| url.param(name);
    let (since, limit) = match parse_history_bounds(get("since").as_deref(), get("limit").as_deref()) {
        Ok(b) => b,
        Err(r) => return reject(&r),
    };
    let rate = if grant.require(Capability::Admin).is_ok() {
        HistoryRate::Exempt
    } else {
        let ip = req.headers().get("cf-connecting-ip")?;
        HistoryRate::Key(http_rate_key(grant.user.as_deref(), ip.as_deref()))
    };
    RoomLink::new(env, room)?.history(since, limit, rate).await
}

/// `GET …/presence?cursor=&limit=`: a page of the members.
async fn presence(req: &Request, env: &Env, room: &str) -> Result<Response> {
    let url = Url::of(req)?;
    let get = |name: &str| url.param(name);
    let (cursor, limit) = match parse_presence_bounds(get("cursor").as_deref(), get("limit").as_deref(), false) {
        Ok(b) => b,
        Err(r) => return reject(&r),
    };
    RoomLink::new(env, room)?.presence_snapshot(cursor.as_deref(), limit, None).await
}

/// `GET …/unread?user=U`: a user's read mark and unread count.
async fn unread(req: &Request, env: &Env, room: &str) -> Result<Response> {
    let user = Url::of(req)?.param("user");
    match herald_core::client_frame::parse_user(user.as_deref()) {
        Ok(user) => RoomLink::new(env, room)?.unread(user).await,
        Err(r) => reject(&r),
    }
}

async fn erase(env: &Env, room: &str) -> Result<Response> {
    RoomLink::new(env, room)?.erase().await
}

async fn publish(req: Request, env: &Env, config: &Config, room: &str, grant: &Grant) -> Result<Response> {
    let body = match read_body_bounded(&req, config.max_frame_bytes).await? {
        Ok(b) => b,
        Err(r) => return reject(&r),
    };
    let p = match parse_http_publish(&body, config.frame_limits()) {
        Ok(p) => p,
        Err(r) => return reject(&r),
    };
    let link_pub = LinkPub { from: grant.user.clone(), data: p.data.to_owned(), mid: p.mid, eph: p.ephemeral };
    let exempt = grant.require(Capability::Admin).is_ok();
    RoomLink::new(env, room)?.http_publish(&link_pub, exempt).await
}

async fn stats(env: &Env, room: &str) -> Result<Response> {
    RoomLink::new(env, room)?.stats().await
}

/// `POST /v1/publish`: one message to each of many rooms. The token is
/// checked first (401 before the body is read), then the whole body, every
/// room name and `pub` on every room, all in the core: a batch refused
/// there publishes nothing. Then each room gets the same Room call as a
/// single HTTP publish (its dedup, its per-user rate, `admin` exempt), at
/// most [`batch::PARALLEL_ROOM_CALLS`] at a time, and the answer is 200
/// with one result per room in input order, failed rooms included.
async fn batch_publish(req: Request, env: &Env, config: &Config) -> Result<Response> {
    let keys = match keys(env) {
        Ok(k) => k,
        Err(e) => return reject_with(ErrorCode::Internal, format!("server misconfigured: {e}")),
    };
    let token = presented_token(&req);
    let claims = match verify_token(token.as_deref(), keys.as_ref(), js::now_ms() / 1000, config.clock_skew_s) {
        Ok(c) => c,
        Err(r) => return reject(&r),
    };
    let body = match read_body_bounded(&req, config.batch_max_bytes).await? {
        Ok(b) => b,
        Err(r) => return reject(&r),
    };
    let entries = match batch::parse_batch(&body, config.batch_limits()) {
        Ok(e) => e,
        Err(r) => return reject(&r),
    };
    let exempt = match batch::authorize_batch(&claims, &entries) {
        Ok(e) => e,
        Err(r) => return reject(&r),
    };
    let from = &claims.sub;
    let calls = entries.iter().zip(exempt).map(|(entry, exempt)| async move {
        // Built when the call starts: only the calls in flight hold a copy.
        let link_pub = LinkPub { from: Some(from.clone()), data: entry.data.to_owned(), mid: entry.mid.clone(), eph: entry.ephemeral };
        match batch_room_call(env, &entry.room, &link_pub, exempt).await {
            Ok(result) => result,
            Err(e) => {
                let text = e.to_string();
                worker::console_error!("batch publish to {}: {text}", entry.room);
                batch::failed(&entry.room, batch::call_failure_code(&text), "the room call failed; retry with the same mid", None)
            }
        }
    });
    let results: Vec<String> = futures::stream::iter(calls).buffered(batch::PARALLEL_ROOM_CALLS).collect().await;
    json_text(batch::answer_body(&results), 200)
}

/// One room of a batch: the single publish's Room call, its answer turned
/// into the room's result.
async fn batch_room_call(env: &Env, room: &str, link_pub: &LinkPub, exempt: bool) -> Result<String> {
    let mut resp = RoomLink::new(env, room)?.http_publish(link_pub, exempt).await?;
    let status = resp.status_code();
    let retry_after = resp.headers().get("retry-after")?;
    let text = resp.text().await?;
    Ok(batch::room_result(room, status, &text, retry_after.as_deref()))
}

//! `GET /v1/demo/token`: glue for the dev-only guest tokens of
//! `herald_core::auth::demo`, which decides everything (whether the endpoint
//! exists, the name, the claims). Here: the URL's host, the clock, the
//! random guest tag and the key.

use super::http::{json, reject, reject_with};
use super::js;
use herald_core::auth::demo;
use herald_core::{Config, ErrorCode};
use worker::{Env, Method, Request, Response, Result};

pub fn handle(req: &Request, env: &Env, config: &Config) -> Result<Response> {
    let url = super::url::Url::of(req)?;
    // Off (HERALD_DEMO_ROOMS empty) or not asked through a loopback host:
    // the endpoint does not exist, whatever the method.
    if !demo::demo_enabled(&config.demo_rooms, Some(url.host().as_str())) {
        return reject_with(ErrorCode::NotFound, "no such endpoint");
    }
    if req.method() != Method::Get {
        return reject_with(ErrorCode::MethodNotAllowed, "only GET is allowed here");
    }
    let raw_name = url.param("name");
    let name = match demo::demo_name(raw_name.as_deref()) {
        Ok(n) => n,
        Err(r) => return reject(&r),
    };
    let keys = match super::router::keys(env) {
        Ok(Some(k)) => k,
        Ok(None) => return reject_with(ErrorCode::Internal, "server misconfigured: demo tokens need HERALD_SECRET"),
        Err(e) => return reject_with(ErrorCode::Internal, format!("server misconfigured: {e}")),
    };
    let sub = demo::guest_sub(&js::random_tag(6));
    match demo::mint_demo_token(&keys, &config.demo_rooms, sub, name.as_deref(), js::now_ms() / 1000) {
        Some(token) => json(&token),
        None => reject_with(ErrorCode::Internal, "server misconfigured: HERALD_SECRET holds no key"),
    }
}

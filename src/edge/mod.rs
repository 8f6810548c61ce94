//! The edge layer: the Worker's router and the two Durable Object classes.
//!
//! This layer decides nothing. It reads requests, storage and the clock,
//! hands them to `herald_core`, and carries out what the core returns.

mod demo_token;
mod http;
mod js;
mod link_client;
mod relay;
mod room_object;
mod router;
mod sql_row;
mod storage;
mod url;
mod vars;
mod wakeups;
mod webhook;


use worker::{event, Context, Env, Request, Response, Result};

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    router::handle(req, env).await.or_else(|e| {
        worker::console_error!("worker: {e}");
        http::reject_with(herald_core::ErrorCode::Internal, "internal error; retry")
    })
}

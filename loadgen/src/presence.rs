//! `presence`: N members over the target's regions, each its own member
//! (anonymous readers of a public room: a connection id each), then the
//! time until the Room's snapshot counts exactly N, the workerd CPU that
//! took, and the Room's deliveries per presence change (at most one per
//! relay, and fewer once changes share a coalesced counts frame).
//! Herald only.

use crate::http::get_json;
use crate::procs;
use crate::session::Target;
use anyhow::{anyhow, bail, Result};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Opens one anonymous member socket and waits for its welcome; the socket
/// is then read (and its frames dropped) until the returned handle drops.
async fn member(port: u16, room: &str, region: &str) -> Result<tokio::task::JoinHandle<()>> {
    let url = format!("ws://127.0.0.1:{port}/v1/rooms/{room}/ws?region={region}");
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await?;
    match ws.next().await {
        Some(Ok(m)) if m.to_text().is_ok_and(|t| t.contains(r#""t":"welcome""#)) => {}
        other => bail!("no welcome: {other:?}"),
    }
    Ok(tokio::spawn(async move { while ws.next().await.is_some() {} }))
}

async fn counted(port: u16, room: &str) -> Result<u64> {
    let v = get_json(port, &format!("/v1/rooms/{room}/presence?limit=1")).await?;
    v["count"].as_u64().ok_or_else(|| anyhow!("no count in {v}"))
}

pub async fn run(target: &Target, room: &str, n: usize, concurrency: usize, deadline: Duration) -> Result<Value> {
    if target.regions.is_empty() {
        bail!("presence needs regions=a+b+c on the target");
    }
    let procs_before = target.processes();
    let stats_before = get_json(target.port, &format!("/v1/rooms/{room}/stats")).await.ok();
    let t0 = Instant::now();
    let sem = std::sync::Arc::new(Semaphore::new(concurrency.max(1)));
    let opens = (0..n).map(|k| {
        let (sem, region) = (std::sync::Arc::clone(&sem), target.regions[k % target.regions.len()].clone());
        async move {
            let _permit = sem.acquire_owned().await.map_err(|e| anyhow!("{e}"))?;
            member(target.port, room, &region).await
        }
    });
    let results: Vec<Result<tokio::task::JoinHandle<()>>> = futures_util::stream::iter(opens).buffer_unordered(concurrency.max(1)).collect().await;
    let all_open = t0.elapsed();
    let mut members = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(h) => members.push(h),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    let opened = members.len() as u64;
    let mut count = 0;
    while t0.elapsed() < deadline {
        count = counted(target.port, room).await.unwrap_or(0);
        if count == opened {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exact_after = t0.elapsed();
    let procs_after = target.processes();
    let stats = get_json(target.port, &format!("/v1/rooms/{room}/stats")).await?;
    let sends = stats["primary_sends"].as_u64().unwrap_or(0)
        - stats_before.as_ref().and_then(|s| s["primary_sends"].as_u64()).unwrap_or(0);
    let relays = stats["relays"].as_array().map_or(0, Vec::len);
    for m in &members {
        m.abort();
    }
    errors.sort();
    errors.dedup();
    Ok(json!({
        "kind": "presence",
        "room": room,
        "requested": n,
        "opened": opened,
        "counted": count,
        "exact": count == opened && opened == n as u64,
        "all_open_s": all_open.as_secs_f64(),
        "exact_after_s": exact_after.as_secs_f64(),
        "room_deliveries": sends,
        "relays": relays,
        "deliveries_per_change": if opened > 0 { sends as f64 / opened as f64 } else { 0.0 },
        "cpu": procs::cpu_delta_ms(&procs_before, &procs_after),
        "errors": errors,
    }))
}

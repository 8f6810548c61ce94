//! `notify`: the notification pattern's cost. Subscribers on R rooms (1 to
//! 3 per room, a fixed mix: room k has 1 + k mod 3), then per round one
//! batch publish (`POST /v1/publish`, the `rooms` form, a `mid` per round)
//! to every room, timing each subscriber from the moment the request is
//! sent to the moment its message arrives: p50, p99 and the last one, the
//! time to the batch's answer, and the workerd CPU per room (Worker, Rooms
//! and relays together, from the processes' CPU time over the round), and
//! after each round how often three sampled rooms' objects have been
//! constructed (woken) so far. Herald only.

use crate::http::HttpConn;
use crate::mode::{scan_messages, Mode};
use crate::procs;
use crate::session::Target;
use anyhow::{anyhow, bail, Result};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Subscribers of room `k`: 1, 2, 3, 1, 2, 3, … (two per room on average).
pub fn subscribers_of(k: usize) -> usize {
    1 + k % 3
}

/// What a subscriber reports: (its index, the round, arrival ns, t0 ns).
type Arrival = (usize, u64, u64, u64);

fn now_ns(clock: Instant) -> u64 {
    u64::try_from(clock.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Opens one subscriber, waits for its welcome, then reads until dropped,
/// reporting each benchmark message (`{"t0":…,"i":round}`) it receives.
async fn subscriber(
    url: String,
    idx: usize,
    clock: Instant,
    tx: mpsc::UnboundedSender<Arrival>,
) -> Result<tokio::task::JoinHandle<()>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    match ws.next().await {
        Some(Ok(Message::Text(t))) if Mode::Herald.is_welcome(t.as_str()) => {}
        other => bail!("no welcome: {other:?}"),
    }
    Ok(tokio::spawn(async move {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                let at = now_ns(clock);
                scan_messages(t.as_str(), |t0, round| {
                    let _ = tx.send((idx, round, at, t0));
                });
            }
        }
    }))
}

/// How many times the Room and the relays of three rooms (the first, the
/// middle and the last) have been constructed so far, from their stats,
/// read after the round (reading wakes the Room, so never before it): a
/// rise from one round to the next shows objects that had been evicted or
/// had hibernated and were woken by the batch.
async fn sampled_wakeups(port: u16, rooms: &[String]) -> Value {
    let picks = [0, rooms.len() / 2, rooms.len() - 1];
    let (mut room, mut relays) = (0u64, 0u64);
    for &k in &picks {
        let Ok(stats) = crate::http::get_json(port, &format!("/v1/rooms/{}/stats", rooms[k])).await else {
            return Value::Null;
        };
        room += stats["wakeups"]["room"].as_u64().unwrap_or(0);
        relays += stats["wakeups"]["relays"].as_object().map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
    }
    json!({"rooms": picks.len(), "room": room, "relays": relays})
}

fn hist_ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e3
}

pub struct NotifyOpts {
    pub rooms: usize,
    pub rounds: usize,
    pub concurrency: usize,
    pub deadline: Duration,
    pub label: String,
}

pub async fn run(target: &Target, o: &NotifyOpts) -> Result<Value> {
    if o.rooms == 0 {
        bail!("--rooms must be at least 1");
    }
    let clock = Instant::now();
    let regions = if target.regions.is_empty() { vec!["weur".to_owned()] } else { target.regions.clone() };
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros()) % 0xffff_ffff;
    let rooms: Vec<String> = (0..o.rooms).map(|k| format!("notify-{}-{stamp:x}:{k}", o.label)).collect();
    // (room index, subscriber URL), regions round-robin over subscribers.
    let mut plan = Vec::new();
    for (k, room) in rooms.iter().enumerate() {
        for _ in 0..subscribers_of(k) {
            let region = &regions[plan.len() % regions.len()];
            plan.push((k, Mode::Herald.ws_url(target.port, room, Some(region))));
        }
    }
    let expected = plan.len();
    eprintln!("[loadgen] {}: opening {expected} subscribers on {} rooms", o.label, o.rooms);
    let (tx, mut rx) = mpsc::unbounded_channel::<Arrival>();
    let t0 = Instant::now();
    let opens = plan.iter().enumerate().map(|(idx, (_, url))| subscriber(url.clone(), idx, clock, tx.clone()));
    let opened: Vec<Result<tokio::task::JoinHandle<()>>> =
        futures_util::stream::iter(opens).buffered(o.concurrency.max(1)).collect().await;
    let all_open_s = t0.elapsed().as_secs_f64();
    let mut handles = Vec::new();
    let mut connect_errors = Vec::new();
    for r in opened {
        match r {
            Ok(h) => handles.push(h),
            Err(e) => connect_errors.push(format!("{e:#}")),
        }
    }
    if !connect_errors.is_empty() {
        for h in &handles {
            h.abort();
        }
        connect_errors.dedup();
        bail!("{} of {expected} subscribers failed to open: {:?}", connect_errors.len(), connect_errors.iter().take(3).collect::<Vec<_>>());
    }
    eprintln!("[loadgen] {}: {expected} subscribers open in {all_open_s:.1} s", o.label);
    // Let the relays' first reports to their Rooms settle before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let rooms_json = serde_json::to_string(&rooms)?;
    let mut rounds = Vec::new();
    for round in 0..o.rounds.max(1) as u64 {
        // A connection per round: an idle kept-alive one may have been closed.
        let mut conn = HttpConn::connect(target.port).await?;
        let procs_before = target.processes();
        let sent = now_ns(clock);
        // `data` written by hand: `scan_messages` reads "t0" before "i".
        let body = format!(r#"{{"rooms":{rooms_json},"data":{{"t0":{sent},"i":{round}}},"mid":"notify-{round}"}}"#);
        let (status, answer) = conn.request("POST", "/v1/publish", Some(&body)).await?;
        let answered_ms = (now_ns(clock) - sent) as f64 / 1e6;
        if status != 200 {
            bail!("batch publish answered {status}: {}", answer.chars().take(300).collect::<String>());
        }
        let answer: Value = serde_json::from_str(&answer)?;
        let results = answer["results"].as_array().ok_or_else(|| anyhow!("no results in the answer"))?;
        let failed_rooms = results.iter().filter(|r| r.get("error").is_some()).count();
        let in_order = results.len() == rooms.len() && results.iter().zip(&rooms).all(|(r, room)| r["room"] == *room);
        let seq_ok = results.iter().all(|r| r["seq"].as_u64() == Some(round + 1));

        let mut got = vec![false; expected];
        let (mut received, mut dups, mut stray) = (0usize, 0u64, 0u64);
        let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        let mut last_ns = sent;
        let deadline = tokio::time::Instant::now() + o.deadline;
        while received < expected {
            let Ok(Some((idx, r, at, t0))) = tokio::time::timeout_at(deadline, rx.recv()).await else { break };
            if r != round || t0 != sent {
                stray += 1;
                continue;
            }
            if std::mem::replace(&mut got[idx], true) {
                dups += 1;
                continue;
            }
            received += 1;
            last_ns = last_ns.max(at);
            hist.saturating_record(((at.saturating_sub(sent)) / 1000).max(1));
        }
        // A short wait for anything arriving twice, inside the CPU window.
        let settle = tokio::time::Instant::now() + Duration::from_millis(300);
        while let Ok(Some((idx, r, _, t0))) = tokio::time::timeout_at(settle, rx.recv()).await {
            if r == round && t0 == sent && got.get(idx).copied().unwrap_or(false) {
                dups += 1;
            } else {
                stray += 1;
            }
        }
        let procs_after = target.processes();
        let cpu = procs::cpu_delta_ms(&procs_before, &procs_after);
        let wakeups = sampled_wakeups(target.port, &rooms).await;
        let per_room = |k: &str| cpu[k].as_f64().map(|ms| ms / o.rooms as f64);
        let entry = json!({
            "round": round,
            "answered_ms": answered_ms,
            "received": received,
            "expected": expected,
            "duplicates": dups,
            "stray": stray,
            "failed_rooms": failed_rooms,
            "results_in_order": in_order,
            "seqs_ok": seq_ok,
            "latency_ms": {
                "p50": if received > 0 { hist_ms(&hist, 0.5) } else { f64::NAN },
                "p99": if received > 0 { hist_ms(&hist, 0.99) } else { f64::NAN },
                "last": (last_ns - sent) as f64 / 1e6,
            },
            "cpu": cpu,
            "cpu_ms_per_room": {"user": per_room("user_ms"), "proxy": per_room("proxy_ms")},
            "sampled_wakeups": wakeups,
        });
        eprintln!(
            "[loadgen] {} round {round}: answered {answered_ms:.0} ms, p50 {:.1} ms, p99 {:.1} ms, last {:.1} ms, {received}/{expected} received, {dups} dup, {failed_rooms} rooms failed, CPU {} ms",
            o.label,
            entry["latency_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
            entry["latency_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
            entry["latency_ms"]["last"].as_f64().unwrap_or(f64::NAN),
            entry["cpu"]["user_ms"],
        );
        rounds.push(entry);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for h in &handles {
        h.abort();
    }
    Ok(json!({
        "kind": "notify",
        "label": o.label,
        "target": {"name": target.name, "port": target.port, "regions": regions},
        "rooms": o.rooms,
        "subscribers": expected,
        "all_open_s": all_open_s,
        "rounds": rounds,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_to_three_subscribers_per_room_two_on_average() {
        let counts: Vec<usize> = (0..6).map(subscribers_of).collect();
        assert_eq!(counts, vec![1, 2, 3, 1, 2, 3]);
        assert_eq!((0..999).map(subscribers_of).sum::<usize>(), 1998);
    }
}

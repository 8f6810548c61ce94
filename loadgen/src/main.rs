//! Fan-out load generator for `scripts/bench`.
//!
//! * `run`: for each round and each target (order rotated every round, so
//!   drift hits every server alike), open N subscribers to a fresh room,
//!   publish M messages at a rate, measure, close.
//! * `saturate`: open N subscribers on every target, then step the publish
//!   rate up, running the targets in turn at each step, until a target's
//!   p99 reaches the limit or it loses a message.
//! * `coldstart`: spawn a server command (own process group), time spawn →
//!   WebSocket open → first frame, stop it by its process group.
//! * `presence`: N members of one room over the target's regions; the time
//!   until the Room counts them exactly, its CPU, and the Room's deliveries
//!   per presence change.
//! * `notify`: subscribers on many rooms (1 to 3 each), then rounds of one
//!   batch publish to every room; the time from the request to each
//!   subscriber's message, and the CPU per room (Herald).
//! * `report`: turn the JSON files of a bench run into a markdown table.
//!
//! Loopback only: every URL is built from 127.0.0.1 and a port.

mod http;
mod mode;
mod notify;
mod presence;
mod procs;
mod report;
mod session;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use session::{OpenOpts, PhaseOpts, Session, Target};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "loadgen", about = "Fan-out load generator (Herald bench)")]
struct Cli {
    /// Tokio worker threads (the servers share the machine's cores).
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// `name=N,mode=herald|plain,port=P[,pgid=G][,regions=a+b+c]`; repeatable.
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// Subscribers per target.
    #[arg(long, short)]
    n: usize,
    /// Concurrent connection attempts.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    #[arg(long, default_value_t = 30)]
    connect_timeout_s: u64,
    /// Flood mode (rate 0): messages in flight on the publisher socket.
    #[arg(long, default_value_t = 8)]
    window: u64,
    /// Stop waiting for deliveries after this long without progress.
    #[arg(long, default_value_t = 2000)]
    drain_idle_ms: u64,
    #[arg(long, default_value_t = 30)]
    drain_max_s: u64,
    /// Pause after closing a session, so its teardown does not overlap the next.
    #[arg(long, default_value_t = 1500)]
    settle_ms: u64,
    /// Scenario label for the report.
    #[arg(long)]
    label: String,
    /// Room name prefix (a fresh room per session).
    #[arg(long, default_value = "bench")]
    room_prefix: String,
    /// Write the JSON result here (also printed to stdout).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    Run {
        #[command(flatten)]
        common: Common,
        /// Messages per measurement.
        #[arg(long, short)]
        m: u64,
        /// Publish rate in messages/s; 0 = flood with --window in flight.
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Warm-up messages before the measurement (not reported).
        #[arg(long, default_value_t = 20)]
        warmup: u64,
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
    Saturate {
        #[command(flatten)]
        common: Common,
        /// Rates to try, in messages/s, ascending, comma-separated.
        #[arg(long, value_delimiter = ',')]
        rates: Vec<f64>,
        /// Seconds of publishing per step.
        #[arg(long, default_value_t = 4.0)]
        step_s: f64,
        /// A step passes while p99 stays under this, with nothing lost.
        #[arg(long, default_value_t = 100.0)]
        p99_limit_ms: f64,
        #[arg(long, default_value_t = 20)]
        warmup: u64,
    },
    Coldstart {
        #[arg(long)]
        name: String,
        #[arg(long)]
        mode: String,
        #[arg(long)]
        port: u16,
        /// Herald region for the probe socket.
        #[arg(long)]
        region: Option<String>,
        #[arg(long, default_value_t = 3)]
        samples: usize,
        #[arg(long, default_value_t = 60)]
        deadline_s: u64,
        #[arg(long)]
        cwd: Option<PathBuf>,
        #[arg(long)]
        out: Option<PathBuf>,
        /// The server command, after `--`; it must listen on --port.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// N members (anonymous readers of a public room) over the target's
    /// regions, until the Room's snapshot counts them exactly (Herald).
    Presence {
        #[arg(long = "target")]
        target: String,
        #[arg(long, short)]
        n: usize,
        #[arg(long, default_value_t = 64)]
        connect_concurrency: usize,
        /// A room the server lets anyone read (`HERALD_PUBLIC_ROOMS`).
        #[arg(long)]
        room: String,
        #[arg(long, default_value_t = 120)]
        deadline_s: u64,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Subscribers on --rooms rooms (room k has 1 + k mod 3), then per
    /// round one batch publish (`POST /v1/publish`) to every room (Herald).
    Notify {
        #[arg(long = "target")]
        target: String,
        #[arg(long, default_value_t = 1000)]
        rooms: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long, default_value_t = 64)]
        connect_concurrency: usize,
        /// How long a round waits for every subscriber's message.
        #[arg(long, default_value_t = 60)]
        deadline_s: u64,
        #[arg(long, default_value = "notify")]
        label: String,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    Report {
        /// Result directory of one bench run.
        dir: PathBuf,
    },
    /// Exit non-zero if any server of a bench run lost, duplicated or failed
    /// (the smoke run in `scripts/test`; speed is not judged).
    Check {
        dir: PathBuf,
    },
    /// Print the port of the runtime's own entry socket under a `wrangler
    /// dev` process group: the user workerd's listener that answers
    /// `GET /healthz`, which bypasses wrangler's proxy worker.
    RuntimePort {
        #[arg(long)]
        pgid: i32,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(cli.threads.max(1)).enable_all().build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Report { dir } => {
                print!("{}", report::render(&dir)?);
                Ok(())
            }
            Cmd::Check { dir } => {
                let problems = report::problems(&dir)?;
                for p in &problems {
                    eprintln!("[loadgen] check: {p}");
                }
                if problems.is_empty() {
                    println!("check: every server delivered every message exactly once");
                    Ok(())
                } else {
                    bail!("{} problems in {}", problems.len(), dir.display())
                }
            }
            Cmd::RuntimePort { pgid } => {
                println!("{}", runtime_port(pgid).await?);
                Ok(())
            }
            cmd => {
                let limit = procs::raise_fd_limit()?;
                let (out, value) = match cmd {
                    Cmd::Run { common, m, rate, warmup, rounds } => (common.out.clone(), run(&common, m, rate, warmup, rounds).await?),
                    Cmd::Saturate { common, rates, step_s, p99_limit_ms, warmup } => {
                        (common.out.clone(), saturate(&common, &rates, step_s, p99_limit_ms, warmup).await?)
                    }
                    Cmd::Coldstart { name, mode, port, region, samples, deadline_s, cwd, out, command } => {
                        (out, coldstart(&name, &mode, port, region, samples, deadline_s, cwd, &command).await?)
                    }
                    Cmd::Presence { target, n, connect_concurrency, room, deadline_s, out } => {
                        let target = Target::parse(&target)?;
                        let deadline = Duration::from_secs(deadline_s);
                        (out, presence::run(&target, &room, n, connect_concurrency, deadline).await?)
                    }
                    Cmd::Notify { target, rooms, rounds, connect_concurrency, deadline_s, label, out } => {
                        let target = Target::parse(&target)?;
                        let opts = notify::NotifyOpts {
                            rooms,
                            rounds,
                            concurrency: connect_concurrency,
                            deadline: Duration::from_secs(deadline_s),
                            label,
                        };
                        (out, notify::run(&target, &opts).await?)
                    }
                    Cmd::Report { .. } | Cmd::RuntimePort { .. } | Cmd::Check { .. } => unreachable_cmd()?,
                };
                let mut value = value;
                value["fd_limit"] = json!(limit);
                let text = serde_json::to_string_pretty(&value)?;
                if let Some(path) = out {
                    std::fs::write(&path, &text).with_context(|| format!("write {}", path.display()))?;
                }
                println!("{text}");
                Ok(())
            }
        }
    })
}

fn unreachable_cmd() -> Result<(Option<PathBuf>, Value)> {
    Err(anyhow!("handled above"))
}

/// The user workerd's entry port in process group `pgid`: of its listeners
/// (entry, inspector, debug), the one that serves the worker's `/healthz`.
async fn runtime_port(pgid: i32) -> Result<u16> {
    let user = procs::workerd_in_group(pgid)
        .into_iter()
        .find(|p| p.role == "user")
        .ok_or_else(|| anyhow!("no user workerd in process group {pgid}"))?;
    for port in procs::listening_ports(user.pid) {
        let probe = async {
            let mut conn = http::HttpConn::connect(port).await?;
            conn.request("GET", "/healthz", None).await
        };
        if let Ok(Ok((200, _))) = tokio::time::timeout(Duration::from_secs(2), probe).await {
            return Ok(port);
        }
    }
    bail!("workerd {} has no listener answering /healthz", user.pid)
}

fn targets(c: &Common) -> Result<Vec<Target>> {
    c.targets.iter().map(|t| Target::parse(t)).collect()
}

fn room_name(c: &Common, target: &Target, k: usize) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
    format!("{}-{}-{}-{:x}-{k}", c.room_prefix, c.label, target.name, nanos % 0xffff_ffff)
}

fn open_opts(c: &Common) -> OpenOpts {
    OpenOpts { n: c.n, concurrency: c.connect_concurrency, connect_timeout: Duration::from_secs(c.connect_timeout_s) }
}

fn phase_opts(c: &Common) -> PhaseOpts {
    PhaseOpts {
        window: c.window,
        drain_idle: Duration::from_millis(c.drain_idle_ms),
        drain_max: Duration::from_secs(c.drain_max_s),
    }
}

fn target_json(t: &Target) -> Value {
    json!({"name": t.name, "mode": t.mode.name(), "port": t.port, "regions": t.regions})
}

async fn run(c: &Common, m: u64, rate: f64, warmup: u64, rounds: usize) -> Result<Value> {
    let clock = Instant::now();
    let targets = targets(c)?;
    let mut results = Vec::new();
    for round in 0..rounds.max(1) {
        for j in 0..targets.len() {
            let target = targets[(j + round) % targets.len()].clone();
            eprintln!("[loadgen] {} round {round}: {} N={} M={m} rate={rate}", c.label, target.name, c.n);
            let room = room_name(c, &target, round);
            let mut s = match Session::open(target.clone(), room.clone(), clock, &open_opts(c)).await {
                Ok(s) => s,
                Err(e) => {
                    // One server failing must not cost the others their run.
                    eprintln!("[loadgen]   {}: session failed: {e:#}", target.name);
                    results.push(json!({"target": target_json(&target), "round": round, "room": room, "error": format!("{e:#}")}));
                    tokio::time::sleep(Duration::from_millis(c.settle_ms)).await;
                    continue;
                }
            };
            let mut entry = json!({"target": target_json(&target), "round": round, "room": room, "connect": s.connect.clone()});
            if s.opened() > 0 {
                if warmup > 0 {
                    let w = s.measure(warmup, rate, &phase_opts(c)).await?;
                    entry["warmup_lost"] = w["lost"].clone();
                }
                let r = s.measure(m, rate, &phase_opts(c)).await?;
                eprintln!(
                    "[loadgen]   {:.0} deliveries/s, p50 {:.1} ms, p99 {:.1} ms, lost {}, dup {}",
                    r["deliveries_per_s"].as_f64().unwrap_or(0.0),
                    r["latency_ms"]["p50"].as_f64().unwrap_or(0.0),
                    r["latency_ms"]["p99"].as_f64().unwrap_or(0.0),
                    r["lost"],
                    r["duplicates"]
                );
                entry["result"] = r;
            }
            s.close().await;
            tokio::time::sleep(Duration::from_millis(c.settle_ms)).await;
            results.push(entry);
        }
    }
    Ok(json!({"kind": "run", "label": c.label, "n": c.n, "m": m, "rate": rate, "rounds": rounds, "results": results}))
}

async fn saturate(c: &Common, rates: &[f64], step_s: f64, p99_limit_ms: f64, warmup: u64) -> Result<Value> {
    if rates.is_empty() {
        bail!("--rates is empty");
    }
    let clock = Instant::now();
    let targets = targets(c)?;
    let mut sessions = Vec::new();
    for t in &targets {
        eprintln!("[loadgen] {}: opening {} subscribers on {}", c.label, c.n, t.name);
        let mut s = Session::open(t.clone(), room_name(c, t, 0), clock, &open_opts(c)).await?;
        if warmup > 0 && s.opened() > 0 {
            s.measure(warmup, 0.0, &phase_opts(c)).await?;
        }
        sessions.push(Some(s));
    }
    let mut steps = Vec::new();
    let mut best: Vec<Option<Value>> = vec![None; targets.len()];
    let mut failed_at: Vec<Option<Value>> = vec![None; targets.len()];
    for (step, &rate) in rates.iter().enumerate() {
        let m = ((rate * step_s).round() as u64).max(10);
        let mut any = false;
        for j in 0..targets.len() {
            let idx = (j + step) % targets.len();
            let Some(s) = sessions[idx].as_mut() else { continue };
            any = true;
            // A step that fails is run once more, for every server alike: a
            // 4 s step's p99 rests on a few messages, and one stall of the
            // shared machine (a GC, an fsync) should not end a server's search.
            let (mut r, mut reason, mut p99) = (Value::Null, None, f64::MAX);
            for attempt in 1..=SATURATION_ATTEMPTS {
                r = s.measure(m, rate, &phase_opts(c)).await?;
                p99 = r["latency_ms"]["p99"].as_f64().unwrap_or(f64::MAX);
                reason = step_failure(&r, rate, p99_limit_ms);
                eprintln!(
                    "[loadgen] {} rate {rate}/s: {} {:.0} deliveries/s p99 {p99:.1} ms {} (attempt {attempt})",
                    c.label,
                    targets[idx].name,
                    r["deliveries_per_s"].as_f64().unwrap_or(0.0),
                    reason.as_deref().unwrap_or("ok")
                );
                steps.push(json!({"target": targets[idx].name, "rate": rate, "attempt": attempt, "pass": reason.is_none(), "reason": reason, "result": r}));
                if reason.is_none() {
                    break;
                }
            }
            if let Some(reason) = reason {
                failed_at[idx] = Some(json!({"rate": rate, "reason": reason}));
                if let Some(s) = sessions[idx].take() {
                    s.close().await;
                }
            } else {
                best[idx] = Some(json!({"rate": rate, "deliveries_per_s": r["deliveries_per_s"], "frames_per_s": r["frames_per_s"], "p99_ms": p99, "msgs_per_frame": r["msgs_per_frame"], "cpu": r["cpu"]}));
            }
        }
        if !any {
            break;
        }
    }
    let mut summary = Vec::new();
    for (idx, t) in targets.iter().enumerate() {
        let connect = sessions[idx].as_ref().map(|s| s.connect.clone());
        summary.push(json!({"target": target_json(t), "best": best[idx], "failed_at": failed_at[idx], "connect": connect}));
    }
    for s in sessions.into_iter().flatten() {
        s.close().await;
    }
    Ok(json!({"kind": "saturate", "label": c.label, "n": c.n, "rates": rates, "step_s": step_s, "p99_limit_ms": p99_limit_ms, "summary": summary, "steps": steps}))
}

/// Attempts per saturation step before a server is out.
const SATURATION_ATTEMPTS: u32 = 2;

/// Why a saturation step failed, or `None` when it passed.
fn step_failure(r: &Value, rate: f64, p99_limit_ms: f64) -> Option<String> {
    let p99 = r["latency_ms"]["p99"].as_f64().unwrap_or(f64::MAX);
    let achieved = r["rate_achieved"].as_f64().unwrap_or(0.0);
    let lost = r["lost"].as_u64().unwrap_or(u64::MAX);
    let errors = r["publish_errors"].as_u64().unwrap_or(u64::MAX);
    if lost > 0 {
        Some(format!("lost {lost}"))
    } else if r["duplicates"].as_u64().unwrap_or(0) > 0 {
        Some("duplicates".to_owned())
    } else if errors > 0 {
        Some(format!("{errors} publish errors"))
    } else if p99 >= p99_limit_ms {
        Some(format!("p99 {p99:.1} ms"))
    } else if achieved < 0.95 * rate {
        Some(format!("publisher reached only {achieved:.0}/s"))
    } else {
        None
    }
}

#[allow(clippy::too_many_arguments)]
async fn coldstart(
    name: &str,
    mode: &str,
    port: u16,
    region: Option<String>,
    samples: usize,
    deadline_s: u64,
    cwd: Option<PathBuf>,
    command: &[String],
) -> Result<Value> {
    use futures_util::StreamExt;
    use std::os::unix::process::CommandExt;
    let mode = mode::Mode::parse(mode)?;
    let (prog, args) = command.split_first().ok_or_else(|| anyhow!("no command"))?;
    let url = mode.ws_url(port, "coldstart", region.as_deref());
    let mut out = Vec::new();
    for k in 0..samples.max(1) {
        let mut cmd = std::process::Command::new(prog);
        cmd.args(args).process_group(0).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        if let Some(d) = &cwd {
            cmd.current_dir(d);
        }
        let t0 = Instant::now();
        let mut child = cmd.spawn().with_context(|| format!("spawn {prog}"))?;
        let pgid = i32::try_from(child.id()).unwrap_or(0);
        let deadline = t0 + Duration::from_secs(deadline_s);
        let mut sample = json!({"sample": k});
        loop {
            if Instant::now() >= deadline {
                sample["error"] = json!("deadline");
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                sample["error"] = json!(format!("server exited: {status}"));
                break;
            }
            let attempt = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(url.as_str())).await;
            let Ok(Ok((mut ws, _))) = attempt else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            sample["open_ms"] = json!(t0.elapsed().as_secs_f64() * 1e3);
            if mode.waits_for_welcome() {
                let first = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
                match first {
                    Ok(Some(Ok(_))) => sample["first_frame_ms"] = json!(t0.elapsed().as_secs_f64() * 1e3),
                    _ => sample["error"] = json!("no first frame"),
                }
            }
            let _ = ws.close(None).await;
            break;
        }
        procs::signal_group(pgid, libc::SIGTERM);
        let stop = Instant::now();
        while stop.elapsed() < Duration::from_secs(5) && (child.try_wait().ok().flatten().is_none() || procs::group_alive(pgid)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        procs::signal_group(pgid, libc::SIGKILL);
        let _ = child.wait();
        eprintln!("[loadgen] coldstart {name} #{k}: {sample}");
        out.push(sample);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(json!({"kind": "coldstart", "name": name, "mode": mode.name(), "samples": out}))
}

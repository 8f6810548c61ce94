//! Markdown tables from one bench run's JSON files (`bench/results/<run>/`).
//! Every number is read from the files; ratios are against the `raw` target
//! of the same scenario, measured in the same run.

use anyhow::{Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

fn f(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |x| format!("{x:.digits$}"))
}

fn ptr(v: &Value, path: &str) -> Option<f64> {
    v.pointer(path).and_then(Value::as_f64)
}

/// What is wrong with a bench run's `run` results: a session that failed,
/// a measurement missing, or a message lost or duplicated. Empty when every
/// server delivered everything exactly once. Speed is not judged here.
pub fn problems(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (file, v) in read_results(dir)? {
        if v["kind"] == "presence" && v["exact"] != true {
            out.push(format!("{file}: presence counted {} of {} members ({} opened)", v["counted"], v["requested"], v["opened"]));
        }
        if v["kind"] == "notify" {
            for r in v["rounds"].as_array().cloned().unwrap_or_default() {
                let clean = r["received"] == r["expected"]
                    && r["duplicates"] == 0
                    && r["failed_rooms"] == 0
                    && r["results_in_order"] == true
                    && r["seqs_ok"] == true;
                if !clean {
                    out.push(format!(
                        "{file}: notify round {}: received {} of {}, {} duplicates, {} rooms failed, results in order {}, seqs {}",
                        r["round"], r["received"], r["expected"], r["duplicates"], r["failed_rooms"], r["results_in_order"], r["seqs_ok"]
                    ));
                }
            }
        }
        if v["kind"] != "run" {
            continue;
        }
        for r in v["results"].as_array().cloned().unwrap_or_default() {
            let who = format!("{file}: {} round {}", r["target"]["name"].as_str().unwrap_or("?"), r["round"]);
            if let Some(e) = r["error"].as_str() {
                out.push(format!("{who}: {e}"));
            } else if r["result"].is_null() {
                out.push(format!("{who}: no measurement (no subscriber opened)"));
            } else {
                let (lost, dup) = (r["result"]["lost"].as_u64(), r["result"]["duplicates"].as_u64());
                if lost != Some(0) || dup != Some(0) {
                    out.push(format!("{who}: lost {lost:?}, duplicated {dup:?}"));
                }
                if r["connect"]["failed"].as_u64().unwrap_or(0) > 0 {
                    out.push(format!("{who}: {} connects failed", r["connect"]["failed"]));
                }
            }
        }
    }
    Ok(out)
}

/// The JSON files of a run, by file name, in name order.
fn read_results(dir: &Path) -> Result<Vec<(String, Value)>> {
    let mut files: Vec<(String, Value)> = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))?.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&p)?;
        let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
        files.push((p.file_name().and_then(|n| n.to_str()).unwrap_or("").to_owned(), v));
    }
    Ok(files)
}

pub fn render(dir: &Path) -> Result<String> {
    let files = read_results(dir)?;
    let mut md = String::new();

    // Fan-out runs.
    let runs: Vec<&Value> = files.iter().map(|(_, v)| v).filter(|v| v["kind"] == "run").collect();
    if !runs.is_empty() {
        writeln!(md, "| scenario | server | N | msgs | rate msg/s | deliveries/s | × raw | p50 ms | p99 ms | max ms | lost | dup | msgs/frame | all open s | RSS KB/conn | CPU ms/1k deliv (user+proxy) | primary sends/msg |")?;
        writeln!(md, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")?;
        for run in runs {
            let label = run["label"].as_str().unwrap_or("?");
            let mut by_target: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
            let mut order: Vec<String> = Vec::new();
            for e in run["results"].as_array().into_iter().flatten() {
                let name = e["target"]["name"].as_str().unwrap_or("?").to_owned();
                if !order.contains(&name) {
                    order.push(name.clone());
                }
                by_target.entry(name).or_default().push(e);
            }
            let med = |name: &str, path: &str| median(by_target.get(name).into_iter().flatten().filter_map(|e| ptr(e, path)).collect());
            let raw_dps = med("raw", "/result/deliveries_per_s");
            order.sort_by_key(|n| match n.as_str() { "raw" => 0, "partyserver" => 1, _ => 2 });
            for name in &order {
                let dps = med(name, "/result/deliveries_per_s");
                let ratio = match (dps, raw_dps) { (Some(a), Some(b)) if b > 0.0 => Some(a / b), _ => None };
                let cpu = med(name, "/result/cpu/user_ms").zip(med(name, "/result/cpu/proxy_ms")).zip(med(name, "/result/delivered"))
                    .map(|((u, p), d)| if d > 0.0 { format!("{:.1}+{:.1}", u * 1000.0 / d, p * 1000.0 / d) } else { "–".into() })
                    .unwrap_or_else(|| "–".into());
                let lost: f64 = by_target.get(name).into_iter().flatten().filter_map(|e| ptr(e, "/result/lost")).sum();
                let dup: f64 = by_target.get(name).into_iter().flatten().filter_map(|e| ptr(e, "/result/duplicates")).sum();
                let failed: f64 = by_target.get(name).into_iter().flatten().filter_map(|e| ptr(e, "/connect/failed")).sum();
                let n = format!("{}{}", run["n"], if failed > 0.0 { format!(" ({failed} failed)") } else { String::new() });
                let rate = run["rate"].as_f64().map_or("–".into(), |r| if r > 0.0 { format!("{r}") } else { "max".into() });
                writeln!(
                    md,
                    "| {label} | {name} | {n} | {} | {rate} | {} | {} | {} | {} | {} | {lost} | {dup} | {} | {} | {} | {cpu} | {} |",
                    run["m"],
                    f(dps, 0),
                    f(ratio, 2),
                    f(med(name, "/result/latency_ms/p50"), 1),
                    f(med(name, "/result/latency_ms/p99"), 1),
                    f(med(name, "/result/latency_ms/max"), 1),
                    f(med(name, "/result/msgs_per_frame"), 2),
                    f(med(name, "/connect/all_open_ms").map(|x| x / 1e3), 2),
                    f(med(name, "/connect/rss_per_conn_kb"), 1),
                    f(med(name, "/result/herald_stats/primary_sends_per_msg"), 2),
                )?;
            }
        }
        writeln!(md)?;
    }

    // Saturation.
    for (_, v) in files.iter().filter(|(_, v)| v["kind"] == "saturate") {
        writeln!(md, "Saturation at N = {} (step {} s per rate; pass = p99 < {} ms, nothing lost, rate sustained):\n", v["n"], v["step_s"], v["p99_limit_ms"])?;
        writeln!(md, "| server | highest passing rate msg/s | deliveries/s there | × raw | msgs/frame | p99 ms | failed at |")?;
        writeln!(md, "|---|--:|--:|--:|--:|--:|---|")?;
        let summary = v["summary"].as_array().cloned().unwrap_or_default();
        let raw_dps = summary.iter().find(|s| s["target"]["name"] == "raw").and_then(|s| ptr(s, "/best/deliveries_per_s"));
        for s in &summary {
            let dps = ptr(s, "/best/deliveries_per_s");
            let ratio = match (dps, raw_dps) { (Some(a), Some(b)) if b > 0.0 => Some(a / b), _ => None };
            let failed = if s["failed_at"].is_null() { "not reached".to_owned() } else { format!("{} msg/s: {}", s["failed_at"]["rate"], s["failed_at"]["reason"].as_str().unwrap_or("")) };
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {failed} |",
                s["target"]["name"].as_str().unwrap_or("?"),
                f(ptr(s, "/best/rate"), 0),
                f(dps, 0),
                f(ratio, 2),
                f(ptr(s, "/best/msgs_per_frame"), 2),
                f(ptr(s, "/best/p99_ms"), 1),
            )?;
        }
        writeln!(md)?;
        shared_rate_latency(&mut md, v)?;
    }

    // Presence.
    let presences: Vec<&Value> = files.iter().map(|(_, v)| v).filter(|v| v["kind"] == "presence").collect();
    if !presences.is_empty() {
        writeln!(md, "| presence (members over regions) | opened | counted | all open s | exact after s | CPU ms per member (user+proxy) | Room deliveries per change (relays) |")?;
        writeln!(md, "|---|--:|--:|--:|--:|--:|--:|")?;
        for p in presences {
            let opened = p["opened"].as_f64().unwrap_or(0.0).max(1.0);
            let per = |k: &str| p["cpu"][k].as_f64().map(|ms| ms / opened);
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {}+{} | {} ({}) |",
                p["requested"],
                p["opened"],
                p["counted"],
                f(p["all_open_s"].as_f64(), 1),
                f(p["exact_after_s"].as_f64(), 1),
                f(per("user_ms"), 2),
                f(per("proxy_ms"), 2),
                f(p["deliveries_per_change"].as_f64(), 3),
                p["relays"],
            )?;
        }
        writeln!(md)?;
    }

    // Notifications: one batch publish to many rooms.
    let notifies: Vec<&Value> = files.iter().map(|(_, v)| v).filter(|v| v["kind"] == "notify").collect();
    if !notifies.is_empty() {
        writeln!(md, "| notify (rooms, subscribers) | round | batch answered ms | p50 ms | p99 ms | last ms | received | dup | CPU ms per room (user+proxy) | wakeups so far, 3 sampled rooms (Room/relays) |")?;
        writeln!(md, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")?;
        for v in notifies {
            for r in v["rounds"].as_array().into_iter().flatten() {
                writeln!(
                    md,
                    "| {} rooms, {} subscribers | {} | {} | {} | {} | {} | {}/{} | {} | {}+{} | {}/{} |",
                    v["rooms"],
                    v["subscribers"],
                    r["round"],
                    f(ptr(r, "/answered_ms"), 0),
                    f(ptr(r, "/latency_ms/p50"), 1),
                    f(ptr(r, "/latency_ms/p99"), 1),
                    f(ptr(r, "/latency_ms/last"), 1),
                    r["received"],
                    r["expected"],
                    r["duplicates"],
                    f(ptr(r, "/cpu_ms_per_room/user"), 2),
                    f(ptr(r, "/cpu_ms_per_room/proxy"), 2),
                    r["sampled_wakeups"]["room"],
                    r["sampled_wakeups"]["relays"],
                )?;
            }
        }
        writeln!(md)?;
    }

    // Cold start.
    let colds: Vec<&Value> = files.iter().map(|(_, v)| v).filter(|v| v["kind"] == "coldstart").collect();
    if !colds.is_empty() {
        writeln!(md, "| cold start (spawn `wrangler dev` →) | samples | WebSocket open ms (median) | first frame ms (median) |")?;
        writeln!(md, "|---|--:|--:|--:|")?;
        for c in colds {
            let samples = c["samples"].as_array().cloned().unwrap_or_default();
            let col = |k: &str| median(samples.iter().filter_map(|s| s[k].as_f64()).collect());
            writeln!(md, "| {} | {} | {} | {} |", c["name"].as_str().unwrap_or("?"), samples.len(), f(col("open_ms"), 0), f(col("first_frame_ms"), 0))?;
        }
        writeln!(md)?;
    }

    // Build facts written by scripts/bench.
    if let Some((_, meta)) = files.iter().find(|(_, v)| v["kind"] == "meta") {
        if let (Some(raw), Some(gz)) = (meta["wasm_bytes"].as_f64(), meta["wasm_gzip_bytes"].as_f64()) {
            writeln!(md, "Herald .wasm: {:.1} KB raw, {:.1} KB gzip -9.\n", raw / 1024.0, gz / 1024.0)?;
        }
        if let Some(route) = meta["route"].as_str() {
            let how = if route == "proxy" { "the dev port, through wrangler's proxy worker" } else { "the runtime's entry socket (user workerd), bypassing wrangler's proxy worker" };
            writeln!(md, "Route: every server through {how}.\n")?;
        }
        if let Some(obs) = meta["observability"].as_str() {
            writeln!(md, "wrangler's local observability tail: {obs} for every server.\n")?;
        }
    }
    Ok(md)
}

/// p99 at each rate that every server of a saturation run sustained, with
/// each server's ratio to `raw`: the latency comparison at equal load.
fn shared_rate_latency(md: &mut String, v: &Value) -> std::fmt::Result {
    let names: Vec<String> = v["summary"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["target"]["name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let steps = v["steps"].as_array().cloned().unwrap_or_default();
    let passed = |name: &str, rate: f64| {
        steps
            .iter()
            .find(|s| s["target"] == name && s["rate"].as_f64() == Some(rate) && s["pass"] == true)
            .and_then(|s| ptr(s, "/result/latency_ms/p99"))
    };
    let rates: Vec<f64> = v["rates"].as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default();
    let rows: Vec<(f64, Vec<f64>)> = rates
        .iter()
        .filter_map(|&rate| names.iter().map(|n| passed(n, rate)).collect::<Option<Vec<f64>>>().map(|p| (rate, p)))
        .collect();
    if rows.is_empty() || names.is_empty() {
        return Ok(());
    }
    let raw = names.iter().position(|n| n == "raw");
    writeln!(md, "p99 ms at the rates every server sustained (× raw in brackets):\n")?;
    writeln!(md, "| rate msg/s | {} |", names.join(" | "))?;
    writeln!(md, "|--:|{}", "--:|".repeat(names.len()))?;
    for (rate, p99s) in rows {
        let cells: Vec<String> = p99s
            .iter()
            .map(|p| match raw.map(|i| p99s[i]) {
                Some(r) if r > 0.0 => format!("{p:.1} ({:.2})", p / r),
                _ => format!("{p:.1}"),
            })
            .collect();
        writeln!(md, "| {rate} | {} |", cells.join(" | "))?;
    }
    writeln!(md)
}

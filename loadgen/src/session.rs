//! N subscribers of one room on one server, and one measured publish phase.

use crate::http::get_json;
use crate::mode::{scan_messages, Mode};
use crate::procs;
use anyhow::{anyhow, bail, Result};
use futures_util::stream::{SplitSink, StreamExt};
use futures_util::SinkExt;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;

/// A server under test: `name=herald,mode=herald,port=8787,pgid=123,regions=weur+apac`.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub mode: Mode,
    pub port: u16,
    pub pgid: Option<i32>,
    /// Subscribers are spread round-robin over these (Herald only).
    pub regions: Vec<String>,
}

impl Target {
    pub fn parse(spec: &str) -> Result<Target> {
        let (mut name, mut mode, mut port, mut pgid, mut regions) = (None, None, None, None, Vec::new());
        for kv in spec.split(',') {
            let (k, v) = kv.split_once('=').ok_or_else(|| anyhow!("target field {kv:?} is not key=value"))?;
            match k {
                "name" => name = Some(v.to_owned()),
                "mode" => mode = Some(Mode::parse(v)?),
                "port" => port = Some(v.parse()?),
                "pgid" => pgid = Some(v.parse()?),
                "regions" => regions = v.split('+').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
                other => bail!("unknown target field {other:?}"),
            }
        }
        let mode = mode.ok_or_else(|| anyhow!("target {spec:?}: mode= is required"))?;
        Ok(Target {
            name: name.unwrap_or_else(|| mode.name().to_owned()),
            mode,
            port: port.ok_or_else(|| anyhow!("target {spec:?}: port= is required"))?,
            pgid,
            regions,
        })
    }

    pub fn processes(&self) -> Vec<procs::ProcSample> {
        self.pgid.map(procs::workerd_in_group).unwrap_or_default()
    }
}

/// What one subscriber saw during the current phase.
#[derive(Default)]
struct SubStats {
    base: u64,
    m: u64,
    seen: Vec<u64>,
    lat_us: Vec<u32>,
    msgs: u64,
    frames: u64,
    dups: u64,
    stray: u64,
    errors: u64,
    first_error: Option<String>,
    last_rx_ns: u64,
    closed: bool,
}

impl SubStats {
    fn reset(&mut self, base: u64, m: u64) {
        *self = SubStats { base, m, seen: vec![0; usize::try_from(m.div_ceil(64)).unwrap_or(0)], ..SubStats::default() };
    }
}

struct Sub {
    stats: Arc<Mutex<SubStats>>,
    sink: Sink,
    task: JoinHandle<()>,
}

pub struct Session {
    pub target: Target,
    pub room: String,
    clock: Instant,
    subs: Vec<Sub>,
    received: Arc<AtomicU64>,
    /// The publishing socket; it receives its own messages too, which is
    /// how the flood mode keeps a bounded window in flight.
    publisher: Sub,
    echoed: Arc<AtomicU64>,
    echo: Arc<Notify>,
    next_i: u64,
    pub connect: Value,
}

fn now_ns(clock: Instant) -> u64 {
    u64::try_from(clock.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn lock(m: &Mutex<SubStats>) -> std::sync::MutexGuard<'_, SubStats> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub struct OpenOpts {
    pub n: usize,
    pub concurrency: usize,
    pub connect_timeout: Duration,
}

impl Session {
    /// Opens `n` subscribers with bounded concurrency and waits until all are
    /// open (Herald: welcomed). Failed connects are counted, not retried.
    pub async fn open(target: Target, room: String, clock: Instant, o: &OpenOpts) -> Result<Session> {
        let received = Arc::new(AtomicU64::new(0));
        let rss_before = target.processes();
        let sem = Arc::new(Semaphore::new(o.concurrency.max(1)));
        let t_start = Instant::now();
        let mut handles = Vec::with_capacity(o.n);
        for k in 0..o.n {
            let region = (!target.regions.is_empty()).then(|| target.regions[k % target.regions.len()].clone());
            let url = target.mode.ws_url(target.port, &room, region.as_deref());
            let (sem, received, mode, timeout) = (Arc::clone(&sem), Arc::clone(&received), target.mode, o.connect_timeout);
            handles.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await.map_err(|e| anyhow!("{e}"))?;
                let t = Instant::now();
                let sub = tokio::time::timeout(timeout, open_one(url, mode, clock, received, None))
                    .await
                    .map_err(|_| anyhow!("connect timed out"))??;
                Ok::<_, anyhow::Error>((sub, t.elapsed()))
            }));
        }
        let mut subs = Vec::with_capacity(o.n);
        let mut hist = Histogram::<u64>::new(3)?;
        let mut errors: Vec<String> = Vec::new();
        for h in handles {
            match h.await {
                Ok(Ok((sub, dt))) => {
                    hist.record(u64::try_from(dt.as_micros()).unwrap_or(u64::MAX))?;
                    subs.push(sub);
                }
                Ok(Err(e)) => errors.push(e.to_string()),
                Err(e) => errors.push(e.to_string()),
            }
        }
        let all_open = t_start.elapsed();
        let (echoed, echo) = (Arc::new(AtomicU64::new(0)), Arc::new(Notify::new()));
        let url = target.mode.ws_url(target.port, &room, target.regions.first().map(String::as_str));
        let publisher = tokio::time::timeout(o.connect_timeout, open_one(url, target.mode, clock, Arc::clone(&echoed), Some(Arc::clone(&echo))))
            .await
            .map_err(|_| anyhow!("publisher connect timed out"))??;
        // Let the server finish what the opens started (Herald's relay
        // reports) before memory is read.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_after = target.processes();
        let opened = subs.len();
        errors.sort();
        errors.dedup();
        let rss_b = procs::rss_json(&rss_before);
        let rss_a = procs::rss_json(&rss_after);
        let per_conn = |key: &str| {
            let d = rss_a[key].as_i64().unwrap_or(0) - rss_b[key].as_i64().unwrap_or(0);
            if opened > 0 { d as f64 / opened as f64 } else { 0.0 }
        };
        let connect = json!({
            "requested": o.n,
            "opened": opened,
            "failed": o.n - opened,
            "errors": errors.iter().take(5).collect::<Vec<_>>(),
            "all_open_ms": all_open.as_secs_f64() * 1e3,
            "per_conn_ms": {"p50": hist.value_at_quantile(0.5) as f64 / 1e3, "p99": hist.value_at_quantile(0.99) as f64 / 1e3, "max": hist.max() as f64 / 1e3},
            "rss_before": rss_b,
            "rss_open": rss_a,
            "rss_per_conn_kb": per_conn("total_kb"),
            "rss_per_conn_kb_user": per_conn("user_kb"),
        });
        Ok(Session { target, room, clock, subs, received, publisher, echoed, echo, next_i: 0, connect })
    }

    pub fn opened(&self) -> usize {
        self.subs.len()
    }

    /// Publishes `m` messages at `rate` msg/s (0: as fast as `publishers`
    /// keep-alive connections allow), waits for deliveries to stop, and
    /// reports latency, throughput, loss and duplicates.
    pub async fn measure(&mut self, m: u64, rate: f64, p: &PhaseOpts) -> Result<Value> {
        let base = self.next_i;
        self.next_i += m;
        for s in &self.subs {
            lock(&s.stats).reset(base, m);
        }
        self.received.store(0, Ordering::Relaxed);
        let stats_path = format!("/v1/rooms/{}/stats", self.room);
        let herald = self.target.mode == Mode::Herald;
        let stats_before = if herald { get_json(self.target.port, &stats_path).await.ok() } else { None };
        let procs_before = self.target.processes();
        let clock = self.clock;

        // One publisher socket. With a rate, message k is due at
        // start + k/rate (open loop); without, at most `window` messages are
        // in flight, counted by the publisher's own copies coming back.
        lock(&self.publisher.stats).reset(base, m);
        self.echoed.store(0, Ordering::Relaxed);
        let start = Instant::now();
        let start_ns = now_ns(clock);
        let (mut max_lag_us, mut last_sent_ns, mut stalled, mut send_error) = (0u64, start_ns, false, None::<String>);
        'send: for k in 0..m {
            if rate > 0.0 {
                let due = start + Duration::from_secs_f64(k as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                max_lag_us = max_lag_us.max(u64::try_from(due.elapsed().as_micros()).unwrap_or(0));
            } else {
                let waiting = Instant::now();
                while k.saturating_sub(self.echoed.load(Ordering::Relaxed)) >= p.window.max(1) {
                    let _ = tokio::time::timeout(Duration::from_millis(50), self.echo.notified()).await;
                    if waiting.elapsed() >= p.drain_max {
                        stalled = true;
                        break 'send;
                    }
                }
            }
            let t0 = now_ns(clock);
            last_sent_ns = t0;
            if let Err(e) = self.publisher.sink.send(Message::text(self.target.mode.publish_frame(t0, base + k))).await {
                send_error = Some(e.to_string());
                break;
            }
        }
        let publish_s = (last_sent_ns - start_ns) as f64 / 1e9;

        // Drain: until everything arrived, nothing arrived for drain_idle,
        // or drain_max passed.
        let expected = m * self.subs.len() as u64;
        let drain_start = Instant::now();
        let (mut last_count, mut last_change) = (self.received.load(Ordering::Relaxed), Instant::now());
        loop {
            let c = self.received.load(Ordering::Relaxed);
            if c >= expected || last_change.elapsed() >= p.drain_idle || drain_start.elapsed() >= p.drain_max {
                break;
            }
            if c != last_count {
                last_count = c;
                last_change = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let procs_after = self.target.processes();
        let (pub_errors, first_error, echoes) = {
            let st = lock(&self.publisher.stats);
            (st.errors, st.first_error.clone(), st.msgs)
        };

        let mut lat = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        let (mut msgs, mut frames, mut unique, mut dups, mut stray, mut closed, mut last_rx) = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64, start_ns);
        for s in &self.subs {
            let st = lock(&s.stats);
            for &l in &st.lat_us {
                lat.saturating_record(u64::from(l.max(1)));
            }
            msgs += st.msgs;
            frames += st.frames;
            dups += st.dups;
            stray += st.stray;
            closed += u64::from(st.closed);
            unique += st.seen.iter().map(|w| u64::from(w.count_ones())).sum::<u64>();
            last_rx = last_rx.max(st.last_rx_ns);
        }
        let window_s = (last_rx.saturating_sub(start_ns)) as f64 / 1e9;
        let per_s = |x: u64| if window_s > 0.0 { x as f64 / window_s } else { 0.0 };
        let ms = |us: u64| us as f64 / 1e3;
        let stats_after = if herald { get_json(self.target.port, &stats_path).await.ok() } else { None };
        let herald_stats = match (&stats_before, &stats_after) {
            (Some(b), Some(a)) => {
                let d = |k: &str| a[k].as_f64().unwrap_or(0.0) - b[k].as_f64().unwrap_or(0.0);
                json!({
                    "primary_sends": d("primary_sends"),
                    "primary_sends_per_msg": d("primary_sends") / m.max(1) as f64,
                    "relay_sends": d("relay_sends"),
                    "relays": a["relays"].as_array().map_or(0, Vec::len),
                    "after": a,
                })
            }
            _ => Value::Null,
        };
        Ok(json!({
            "subscribers": self.subs.len(),
            "messages": m,
            "rate_offered": rate,
            "rate_achieved": if publish_s > 0.0 { (m.saturating_sub(1)) as f64 / publish_s } else { 0.0 },
            "window": if rate > 0.0 { Value::Null } else { json!(p.window) },
            "publish_stalled": stalled,
            "publish_send_error": send_error,
            "publish_errors": pub_errors,
            "publish_first_error": first_error,
            "publish_max_lag_ms": ms(max_lag_us),
            "publisher_echoes": echoes,
            "expected": expected,
            "delivered": msgs,
            "unique": unique,
            "lost": expected.saturating_sub(unique),
            "duplicates": dups,
            "stray": stray,
            "subscribers_closed": closed,
            "frames": frames,
            "msgs_per_frame": if frames > 0 { msgs as f64 / frames as f64 } else { 0.0 },
            "window_s": window_s,
            "deliveries_per_s": per_s(msgs),
            "frames_per_s": per_s(frames),
            "latency_ms": {
                "p50": ms(lat.value_at_quantile(0.5)),
                "p90": ms(lat.value_at_quantile(0.9)),
                "p99": ms(lat.value_at_quantile(0.99)),
                "max": ms(lat.max()),
                "mean": lat.mean() / 1e3,
            },
            "cpu": procs::cpu_delta_ms(&procs_before, &procs_after),
            "rss_after": procs::rss_json(&procs_after),
            "herald_stats": herald_stats,
        }))
    }

    /// Closes every subscriber (close frame, bounded wait) and stops the tasks.
    pub async fn close(self) {
        let mut closers = Vec::new();
        for mut s in self.subs.into_iter().chain([self.publisher]) {
            closers.push(tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(2), s.sink.send(Message::Close(None))).await;
                s.task.abort();
            }));
        }
        for c in closers {
            let _ = c.await;
        }
    }
}

pub struct PhaseOpts {
    /// Messages in flight in flood mode (rate 0).
    pub window: u64,
    pub drain_idle: Duration,
    pub drain_max: Duration,
}

async fn open_one(url: String, mode: Mode, clock: Instant, received: Arc<AtomicU64>, notify: Option<Arc<Notify>>) -> Result<Sub> {
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    let (sink, mut stream) = ws.split();
    if mode.waits_for_welcome() {
        loop {
            match stream.next().await {
                Some(Ok(Message::Text(t))) if mode.is_welcome(t.as_str()) => break,
                Some(Ok(Message::Text(t))) => bail!("first frame was not a welcome: {}", t.as_str()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => bail!("closed before the welcome"),
            }
        }
    }
    let stats = Arc::new(Mutex::new(SubStats::default()));
    let st = Arc::clone(&stats);
    let task = tokio::spawn(async move {
        while let Some(item) = stream.next().await {
            let text = match &item {
                Ok(Message::Text(t)) => t.as_str(),
                Ok(Message::Binary(b)) => std::str::from_utf8(b).unwrap_or(""),
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            let now = now_ns(clock);
            let mut s = lock(&st);
            s.frames += 1;
            if mode.is_error(text) {
                s.errors += 1;
                if s.first_error.is_none() {
                    s.first_error = Some(text.chars().take(300).collect());
                }
            }
            let (base, m) = (s.base, s.m);
            let SubStats { seen, lat_us, dups, stray, msgs, .. } = &mut *s;
            let n = scan_messages(text, |t0, i| {
                if i < base || i >= base + m {
                    *stray += 1;
                    return;
                }
                let k = (i - base) as usize;
                let (w, bit) = (k / 64, 1u64 << (k % 64));
                if seen[w] & bit != 0 {
                    *dups += 1;
                } else {
                    seen[w] |= bit;
                }
                *msgs += 1;
                lat_us.push(u32::try_from(now.saturating_sub(t0) / 1000).unwrap_or(u32::MAX));
            });
            s.last_rx_ns = now;
            drop(s);
            received.fetch_add(n as u64, Ordering::Relaxed);
            if let Some(notify) = &notify {
                notify.notify_one();
            }
        }
        lock(&st).closed = true;
    });
    Ok(Sub { stats, sink, task })
}

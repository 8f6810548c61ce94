//! Integration-test harness shared by every scenario in `tests/`
//! (each scenario file declares `mod support;`).
//!
//! * [`Server`] runs a real `wrangler dev --local` (workerd + our wasm) on free
//!   loopback ports, in its own process group, with its own persistence dir.
//! * [`Client`] is a WebSocket client that understands Herald's batching
//!   (a JSON-array text frame is a batch of frames).
//! * [`http`] / [`http_json`] are a minimal HTTP/1.1 client.
//!
//! The worker is NOT built here: `bash scripts/test` builds it once into
//! `build/` and exports `HERALD_SKIP_BUILD=1`; the harness forces that for the
//! wrangler children too, so concurrent servers never rebuild or race on
//! `build/`. Run the scenarios by hand with `bash scripts/build && cargo test`.
//!
//! Waiting is always "until this specific thing happens, with a deadline",
//! never a fixed sleep.
#![allow(dead_code)] // each scenario uses a different subset
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

pub mod sse;

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use tokio_tungstenite::tungstenite::Error as WsError;

/// How long a server may take from spawn to a 200 on `/healthz`.
pub const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long `stop` waits after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `<target>/itest`: logs and persistence dirs (scripts/test wipes it).
fn itest_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.parent().unwrap_or(tmp).join("itest");
    std::fs::create_dir_all(&dir).expect("create target/itest");
    dir
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:x}{:x}-{}",
        std::process::id(),
        nanos % 0x1_0000_0000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A room name no other test (or earlier run) uses: `<prefix>-<hex>-<n>`.
pub fn unique_room(prefix: &str) -> String {
    format!("{prefix}-{}", unique_suffix())
}

/// A free loopback port, never handed out twice by this test binary (the
/// kernel may reuse a port between our probe and wrangler's bind otherwise).
fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        if given.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
}

// ---------------------------------------------------------------- Tokens --

/// The `HERALD_SECRET` every test server runs with.
pub const TEST_SECRET: &str = "herald-integration-test-secret-0123456789";

pub fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// An HS256 token for `claims`, signed with [`TEST_SECRET`].
pub fn token(claims: &Value) -> String {
    herald_core::auth::mint_hs256(claims, TEST_SECRET.as_bytes())
}

/// A token with every capability on every room, valid for an hour: what the
/// scenarios that are not about auth use by default.
pub fn admin_token() -> String {
    token(&serde_json::json!({
        "sub": "tester",
        "exp": now_s() + 3600,
        "rooms": {"*": ["sub", "pub", "presence", "history", "admin"]}
    }))
}

// ---------------------------------------------------------------- Server --

#[derive(Debug, Clone, Default)]
pub struct ServerOpts {
    /// Durable Object storage directory. `None`: a fresh one under
    /// `target/itest/`, deleted when the server is dropped without a panic.
    /// Pass the same dir to a second `Server` to simulate a redeploy.
    pub persist_dir: Option<PathBuf>,
    /// Extra `--var NAME:VALUE` overrides of wrangler.toml `[vars]`
    /// (`HERALD_TRUST_REGION_PARAM=1` is always set; override it here).
    pub vars: Vec<(String, String)>,
}

impl ServerOpts {
    pub fn var(mut self, name: &str, value: impl ToString) -> Self {
        self.vars.push((name.to_owned(), value.to_string()));
        self
    }
}

/// A running `wrangler dev --local`. Stopped (process group SIGTERM, then
/// SIGKILL) by [`Server::stop`] or on drop.
pub struct Server {
    child: Option<Child>,
    port: u16,
    inspector_port: u16,
    persist_dir: PathBuf,
    owns_persist_dir: bool,
    vars: Vec<(String, String)>,
    log_path: PathBuf,
    startup: Duration,
}

impl Server {
    pub async fn start(opts: ServerOpts) -> Server {
        check_build();
        let (persist_dir, owns) = match opts.persist_dir {
            Some(dir) => (dir, false),
            None => (itest_dir().join(format!("state-{}", unique_suffix())), true),
        };
        let mut server = Server {
            child: None,
            port: free_port(),
            inspector_port: free_port(),
            persist_dir,
            owns_persist_dir: owns,
            vars: opts.vars,
            log_path: PathBuf::new(),
            startup: Duration::ZERO,
        };
        // A port that was free when probed may be taken by another process
        // (or one of workerd's own sockets) before wrangler binds it: retry
        // on fresh ports. `restart` keeps its ports and does not retry.
        for _ in 0..3 {
            if !server.spawn_and_wait_for(true).await {
                return server;
            }
            eprintln!("[harness] a port was taken during startup; retrying on fresh ports");
            server.port = free_port();
            server.inspector_port = free_port();
        }
        server.spawn_and_wait().await;
        server
    }

    /// Stop, then start again on the same ports with the same persistence
    /// dir and vars (Durable Object storage survives; memory does not).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn_and_wait().await;
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The room socket URL in `region`, carrying [`admin_token`] so every
    /// scenario goes through real token verification.
    pub fn ws_url(&self, room: &str, region: &str) -> String {
        format!(
            "ws://127.0.0.1:{}/v1/rooms/{room}/ws?region={region}&token={}",
            self.port,
            admin_token()
        )
    }

    /// The room socket URL in `region` with no token.
    pub fn ws_url_anon(&self, room: &str, region: &str) -> String {
        format!("ws://127.0.0.1:{}/v1/rooms/{room}/ws?region={region}", self.port)
    }

    /// The room socket URL without a `region` parameter.
    pub fn ws_url_default_region(&self, room: &str) -> String {
        format!("ws://127.0.0.1:{}/v1/rooms/{room}/ws", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn persist_dir(&self) -> &Path {
        &self.persist_dir
    }

    /// wrangler's combined stdout/stderr of the latest start.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Time from spawning wrangler to the first 200 from `/healthz`
    /// (latest start).
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    fn spawn_and_wait_cmd(&self) -> Command {
        let root = repo_root();
        let bin = root.join("node_modules/.bin");
        // Same environment as scripts/env.sh: node 24 from node_modules
        // first (wrangler 4 needs node >= 22.12), no telemetry, no banner.
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new(bin.join("wrangler"));
        cmd.current_dir(root)
            .env("PATH", path)
            .env("HERALD_SKIP_BUILD", "1")
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("WRANGLER_HIDE_BANNER", "true")
            .env("CI", "true") // non-interactive output
            .args(["dev", "--local", "--ip", "127.0.0.1"])
            .args(["--port", &self.port.to_string()])
            .args(["--inspector-port", &self.inspector_port.to_string()])
            .arg("--persist-to")
            .arg(&self.persist_dir)
            .arg("--show-interactive-dev-session=false")
            .args(["--var", "HERALD_TRUST_REGION_PARAM:1"])
            .args(["--var", &format!("HERALD_SECRET:{TEST_SECRET}")])
            // Every scenario's clients share one token (one user); the
            // per-user cap has a scenario of its own, which sets it back.
            .args(["--var", "HERALD_MAX_CONNECTIONS_PER_USER:100000"]);
        for (k, v) in &self.vars {
            cmd.args(["--var", &format!("{k}:{v}")]);
        }
        cmd
    }

    async fn spawn_and_wait(&mut self) {
        self.spawn_and_wait_for(false).await;
    }

    /// Starts wrangler and waits until it is healthy. Returns true (instead
    /// of failing) only when `addr_in_use_ok` and wrangler exited because an
    /// address was already in use.
    async fn spawn_and_wait_for(&mut self, addr_in_use_ok: bool) -> bool {
        self.log_path = itest_dir().join(format!("wrangler-{}.log", unique_suffix()));
        let log = File::create(&self.log_path).expect("create wrangler log");
        let log2 = log.try_clone().expect("clone log handle");
        let mut cmd = self.spawn_and_wait_cmd();
        {
            use std::os::unix::process::CommandExt;
            // Own process group: wrangler spawns workerd, and stop() must
            // reach both without touching anything else on the machine.
            cmd.process_group(0);
        }
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        let t0 = Instant::now();
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("spawning wrangler failed ({e}); run `bash scripts/setup` (node_modules missing?)")
        });
        self.child = Some(child);

        let deadline = t0 + START_DEADLINE;
        let url = format!("{}/healthz", self.base_url());
        loop {
            let probe = http_request("GET", &url, &[], None);
            if let Ok(Ok(HttpResponse { status: 200, .. })) =
                tokio::time::timeout(Duration::from_secs(2), probe).await
            {
                break;
            }
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.kill_group().await; // workerd may outlive wrangler
                let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
                if addr_in_use_ok && log.contains("Address already in use") {
                    return true;
                }
                self.fail(&format!("wrangler exited during startup ({status})"));
            }
            if Instant::now() >= deadline {
                self.kill_group().await;
                self.fail(&format!(
                    "wrangler not healthy within {START_DEADLINE:?} at {url}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.startup = t0.elapsed();
        eprintln!(
            "[harness] wrangler on :{} healthy in {} ms (log {})",
            self.port,
            self.startup.as_millis(),
            self.log_path.display()
        );
        false
    }

    fn fail(&self, what: &str) -> ! {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "{what}\n--- log {} (last 40 lines) ---\n{}",
            self.log_path.display(),
            tail.join("\n")
        );
    }

    /// SIGTERM the process group, wait up to [`STOP_GRACE`], then SIGKILL.
    pub async fn stop(&mut self) {
        self.kill_group().await;
    }

    async fn kill_group(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pgid = child.id() as libc::pid_t; // == pid: process_group(0)
        signal_group(pgid, libc::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() && !group_alive(pgid) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        signal_group(pgid, libc::SIGKILL);
        let _ = child.wait();
    }
}

fn signal_group(pgid: libc::pid_t, sig: libc::c_int) {
    if pgid > 0 {
        // SAFETY: kill(2) with a negative pid signals exactly our child's
        // process group; no memory is involved.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

fn group_alive(pgid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks whether the group still has members.
    pgid > 0 && unsafe { libc::kill(-pgid, 0) } == 0
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Synchronous twin of kill_group: Drop cannot await.
            let pgid = child.id() as libc::pid_t;
            signal_group(pgid, libc::SIGTERM);
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline
                && (child.try_wait().ok().flatten().is_none() || group_alive(pgid))
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            signal_group(pgid, libc::SIGKILL);
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "[harness] wrangler log: {} (state: {})",
                self.log_path.display(),
                self.persist_dir.display()
            );
        } else if self.owns_persist_dir {
            let _ = std::fs::remove_dir_all(&self.persist_dir);
        }
    }
}

/// Fails fast, with the fix, when the worker was never built; warns when the
/// build looks older than the Rust sources (the harness never rebuilds).
fn check_build() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let index = repo_root().join("build/index.js");
        let Ok(meta) = std::fs::metadata(&index) else {
            panic!(
                "{} is missing: the integration tests run the built worker. \
                 Run `bash scripts/test` (or `bash scripts/build` before `cargo test`).",
                index.display()
            );
        };
        let built = meta.modified().ok();
        let newest = ["src", "core/src"]
            .iter()
            .filter_map(|d| newest_mtime(&repo_root().join(d)))
            .max();
        if let (Some(built), Some(newest)) = (built, newest) {
            if newest > built {
                eprintln!(
                    "[harness] WARNING: build/ is older than the Rust sources; \
                     run `bash scripts/build` to test the current code"
                );
            }
        }
    });
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().ok().and_then(|m| m.modified().ok())
        };
        newest = newest.max(t);
    }
    newest
}

// ---------------------------------------------------------------- Client --

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// WebSocket client. Every text frame is decoded as JSON; a JSON array is a
/// batch and is expanded into its elements, in order; text that is not JSON
/// (e.g. `"pong"`) is delivered as `Value::String`. Binary frames are treated
/// like text when they are UTF-8.
///
/// Bookkeeping for exactly-once checks:
/// * [`Client::history`]: every element ever received, in arrival order
///   (including those returned by `next_msg` / `wait_for`).
/// * [`Client::drain_seen`]: elements that `wait_for` skipped over because
///   they did not match (kept, not discarded).
pub struct Client {
    ws: Ws,
    pending: VecDeque<Value>,
    seen: Vec<Value>,
    history: Vec<Value>,
    close_code: Option<u16>,
    ended: bool,
    largest_frame: usize,
}

impl Client {
    pub async fn connect(url: &str) -> Result<Client, WsError> {
        let (ws, _resp) = tokio_tungstenite::connect_async(url).await?;
        Ok(Client::over_socket(ws))
    }

    fn over_socket(ws: Ws) -> Client {
        Client {
            ws,
            pending: VecDeque::new(),
            seen: Vec::new(),
            history: Vec::new(),
            close_code: None,
            ended: false,
            largest_frame: 0,
        }
    }

    /// Connects over a TCP stream the caller set up (e.g. with a small
    /// receive buffer).
    pub async fn over(url: &str, stream: TcpStream) -> Result<Client, WsError> {
        let (ws, _resp) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)).await?;
        Ok(Client::over_socket(ws))
    }

    /// Connects and waits for the `welcome` frame, panicking if either
    /// fails within `timeout`: the usual first step of a scenario.
    pub async fn welcomed(url: &str, timeout: Duration) -> Client {
        let mut c = Client::connect(url).await.unwrap_or_else(|e| panic!("connect {url}: {e}"));
        c.wait_type(timeout, "welcome").await;
        c
    }

    /// The HTTP status of a refused upgrade, e.g. `Some(404)`.
    pub async fn connect_status(url: &str) -> Option<u16> {
        match tokio_tungstenite::connect_async(url).await {
            Ok(_) => None,
            Err(WsError::Http(resp)) => Some(resp.status().as_u16()),
            Err(_) => None,
        }
    }

    pub async fn try_send_text(&mut self, text: &str) -> Result<(), WsError> {
        self.ws.send(Message::text(text)).await
    }

    pub async fn send_text(&mut self, text: &str) {
        if let Err(e) = self.try_send_text(text).await {
            panic!("websocket send failed: {e}");
        }
    }

    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), WsError> {
        self.ws.send(Message::binary(bytes)).await
    }

    /// The next frame (batch element), or `None` if none arrives within
    /// `timeout` or the socket closed.
    pub async fn next_msg(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(v) = self.pending.pop_front() {
                return Some(v);
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(item) => self.absorb(item),
            }
        }
    }

    /// The first frame matching `pred` within `timeout`; the non-matching
    /// frames before it are kept in the `seen` buffer ([`Client::drain_seen`]).
    /// Panics on timeout, listing what did arrive.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        match self.try_wait_for(timeout, pred).await {
            Some(v) => v,
            None => panic!(
                "no matching frame within {timeout:?}; close code {:?}; skipped frames: {}",
                self.close_code,
                serde_json::to_string(&self.seen).unwrap_or_default()
            ),
        }
    }

    /// Like [`Client::wait_for`], returning `None` instead of panicking.
    pub async fn try_wait_for(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self.next_msg(left).await?;
            if pred(&v) {
                return Some(v);
            }
            self.seen.push(v);
        }
    }

    /// Shorthand: wait for a frame whose `"t"` field (Herald's frame type) equals `ty`.
    pub async fn wait_type(&mut self, timeout: Duration, ty: &str) -> Value {
        self.wait_for(timeout, |v| v.get("t").and_then(Value::as_str) == Some(ty))
            .await
    }

    /// Takes the frames `wait_for` skipped.
    pub fn drain_seen(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.seen)
    }

    /// Every frame received so far, in order (batches expanded).
    pub fn history(&self) -> &[Value] {
        &self.history
    }

    /// Sends a normal close (1000) and waits briefly for the server's reply.
    pub async fn close(&mut self) {
        self.close_with(1000, "bye").await;
    }

    pub async fn close_with(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_owned().into(),
        };
        let _ = self.ws.send(Message::Close(Some(frame))).await;
        let _ = self.wait_closed(Duration::from_secs(2)).await;
    }

    /// Waits for the server to close the socket and returns the close code:
    /// the code of the close frame (1005 if it had none), or 1006 if the
    /// connection ended without one. `None` if still open at the deadline.
    /// Data frames arriving meanwhile are queued for `next_msg` as usual.
    pub async fn wait_closed(&mut self, timeout: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.ended {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(item) => self.absorb(item),
            }
        }
        self.close_code
    }

    /// The close code, if the socket has closed.
    /// The longest text frame received, in bytes.
    pub fn largest_frame(&self) -> usize {
        self.largest_frame
    }

    pub fn close_code(&self) -> Option<u16> {
        self.close_code
    }

    /// The seqs of the stored `msg` frames received so far, in arrival order
    /// (ephemeral messages, which have no seq, are left out).
    pub fn msg_seqs(&self) -> Vec<u64> {
        self.history
            .iter()
            .filter(|f| f["t"] == "msg")
            .filter_map(|f| f["seq"].as_u64())
            .collect()
    }

    /// Reads frames until a stored `msg` with seq >= `last` has been
    /// received (one received earlier counts), or `deadline` passes; true if
    /// it was. What it reads stays in [`Client::history`]; judge the stream
    /// from there.
    pub async fn read_through_seq(&mut self, last: u64, deadline: Instant) -> bool {
        let reached = |f: &Value| f["t"] == "msg" && f["seq"].as_u64().is_some_and(|s| s >= last);
        if self.history.iter().any(reached) {
            return true;
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_msg(left).await {
                Some(f) if reached(&f) => return true,
                Some(_) => {}
                None => return false,
            }
        }
    }

    fn absorb(&mut self, item: Option<Result<Message, WsError>>) {
        match item {
            Some(Ok(Message::Text(t))) => {
                self.largest_frame = self.largest_frame.max(t.len());
                self.push_text(t.as_str())
            }
            Some(Ok(Message::Binary(b))) => match std::str::from_utf8(&b) {
                Ok(t) => self.push_text(t),
                Err(_) => self.push(Value::String(format!("<{} binary bytes>", b.len()))),
            },
            Some(Ok(Message::Close(frame))) => {
                self.close_code = Some(frame.map(|f| u16::from(f.code)).unwrap_or(1005));
                self.ended = true;
            }
            Some(Ok(_)) => {} // ping/pong: tungstenite answers pings itself
            Some(Err(_)) | None => {
                self.close_code.get_or_insert(1006);
                self.ended = true;
            }
        }
    }

    fn push_text(&mut self, text: &str) {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(items)) => items.into_iter().for_each(|v| self.push(v)),
            Ok(v) => self.push(v),
            Err(_) => self.push(Value::String(text.to_owned())),
        }
    }

    fn push(&mut self, v: Value) {
        self.history.push(v.clone());
        self.pending.push_back(v);
    }
}

// ------------------------------------------------------------------ HTTP --

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `(status, body)`; panics on connection errors (use [`http_request`] to
/// handle them). The body, if any, is sent as `application/json`.
pub async fn http(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    match http_request(method, url, &[], body).await {
        Ok(r) => (r.status, r.body),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

/// Publishes `body` (`{"data":…}`) to `room` over HTTP and returns the
/// answer, asserting it is 200.
pub async fn http_pub(server: &Server, room: &str, body: Value) -> Value {
    let url = format!("{}/v1/rooms/{room}/messages", server.base_url());
    let (status, v) = http_json("POST", &url, Some(&body)).await;
    assert_eq!(status, 200, "POST {body}: {v}");
    v
}

/// Publishes each body over HTTP like [`http_pub`], at most `width` at a
/// time, and returns the answers in the order of `bodies` (the Room may
/// order concurrent publishes differently).
pub async fn http_pub_many(server: &Server, room: &str, bodies: Vec<Value>, width: usize) -> Vec<Value> {
    futures_util::stream::iter(bodies)
        .map(|body| http_pub(server, room, body))
        .buffered(width.max(1))
        .collect()
        .await
}

/// The room's `stats` (with the harness's admin token), asserting 200.
pub async fn room_stats(server: &Server, room: &str) -> Value {
    let (status, v) = http_json("GET", &format!("{}/v1/rooms/{room}/stats", server.base_url()), None).await;
    assert_eq!(status, 200, "{v}");
    v
}

/// Polls the room's `stats` until `pred` holds, for up to `timeout`: relays
/// report asynchronously.
pub async fn room_stats_until(server: &Server, room: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let s = room_stats(server, room).await;
        if pred(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "stats never settled: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `(status, parsed body)`; a body that is not JSON becomes `Value::String`.
pub async fn http_json(method: &str, url: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(Value::to_string);
    let (status, text) = http(method, url, body.as_deref()).await;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// Minimal HTTP/1.1 over a fresh connection (`Connection: close`), with
/// extra request headers; understands Content-Length and chunked bodies.
/// Sends `Authorization: Bearer <admin_token>` unless the caller gives an
/// `authorization` header; an empty one means "send no token". A `host`
/// header given by the caller replaces the URL's authority (to look like a
/// request for another name).
pub async fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<HttpResponse> {
    let invalid = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| invalid("only http:// URLs"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = TcpStream::connect(authority).await?;
    let host = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map_or(authority, |(_, v)| *v);
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: herald-itest\r\n"
    );
    for (k, v) in headers.iter().filter(|(k, _)| !k.eq_ignore_ascii_case("host")) {
        if !v.is_empty() || !k.eq_ignore_ascii_case("authorization") {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization")) {
        req.push_str(&format!("Authorization: Bearer {}\r\n", admin_token()));
    }
    if let Some(b) = body {
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{b}", b.len()));
    } else {
        req.push_str("Content-Length: 0\r\n\r\n");
    }
    stream.write_all(req.as_bytes()).await?;

    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[head_end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body).ok_or_else(|| invalid("bad chunked body"))?;
    } else if let Some(len) = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_str = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Re-exported so scenarios need no direct tungstenite dependency.
#[allow(unused_imports)] // only some scenarios build frames by hand
pub use tungstenite::Message as WsMessage;

/// Welcomes `per_region` clients in each of `regions`, named `region#n`, in
/// a room nobody has published to yet (every welcome is at seq 0).
pub async fn clients_in(server: &Server, room: &str, regions: &[&str], per_region: usize, timeout: Duration) -> Vec<(String, Client)> {
    let mut clients = Vec::new();
    for region in regions {
        for n in 0..per_region {
            let c = Client::welcomed(&server.ws_url(room, region), timeout).await;
            let w = &c.history()[0];
            assert_eq!((w["region"].as_str(), w["seq"].as_u64()), (Some(*region), Some(0)), "{w}");
            clients.push((format!("{region}#{n}"), c));
        }
    }
    clients
}

/// Panics, saying what is wrong, unless `c` received exactly the stored
/// messages `1..=last`, once each, in order, and no `reset` or `err`.
pub fn assert_exactly_once_in_order(who: &str, c: &Client, last: u64) {
    if let Some(f) = c.history().iter().find(|f| f["t"] == "reset" || f["t"] == "err") {
        panic!("{who}: unexpected frame {f}");
    }
    let seqs = c.msg_seqs();
    if seqs.iter().copied().eq(1..=last) {
        return;
    }
    let mut counts: std::collections::BTreeMap<u64, u32> = std::collections::BTreeMap::new();
    for s in &seqs {
        *counts.entry(*s).or_default() += 1;
    }
    let missing: Vec<u64> = (1..=last).filter(|s| !counts.contains_key(s)).take(20).collect();
    let repeated: Vec<u64> = counts.iter().filter(|(_, n)| **n > 1).map(|(s, _)| *s).take(20).collect();
    let disorder = seqs.windows(2).position(|w| w[1] <= w[0]);
    panic!(
        "{who}: {} stored messages, expected 1..={last} once each in order; \
         missing (first 20) {missing:?}, repeated (first 20) {repeated:?}, \
         first out-of-order index {disorder:?}",
        seqs.len()
    );
}

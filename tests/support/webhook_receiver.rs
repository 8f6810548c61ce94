//! A tiny HTTP/1.1 webhook receiver on loopback for the webhook scenarios
//! (`#[path = "support/webhook_receiver.rs"] mod webhook_receiver;`).
//!
//! Each request is read whole (Content-Length or chunked), recorded, and
//! answered as scripted: the next scripted reply, else the default. A
//! `Hang` reply never answers; the receiver only notes when the sender
//! gives up on the connection.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The `HERALD_WEBHOOK_SECRET` the scenarios use.
pub const WEBHOOK_SECRET: &str = "webhook-integration-test-secret-0123456789";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Status(u16),
    /// Keep the connection open and never answer.
    Hang,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub reply: Reply,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn accepted(&self) -> bool {
        matches!(self.reply, Reply::Status(s) if (200..300).contains(&s))
    }

    /// The body's events.
    pub fn events(&self) -> Vec<Value> {
        let v: Value = serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body));
        v["events"].as_array().unwrap_or_else(|| panic!("no events array: {}", self.body)).clone()
    }
}

#[derive(Default)]
struct Script {
    next: VecDeque<Reply>,
    default: Option<Reply>,
}

pub struct Receiver {
    pub port: u16,
    script: Arc<Mutex<Script>>,
    rx: mpsc::UnboundedReceiver<Received>,
    /// Every request so far, in arrival order (those `next` returned too).
    pub log: Vec<Received>,
    /// Hung connections: whether the sender has closed each.
    hung: Arc<Mutex<Vec<bool>>>,
}

impl Receiver {
    /// Listening on 127.0.0.1, answering 200 unless told otherwise.
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        let port = listener.local_addr().expect("receiver addr").port();
        let script = Arc::new(Mutex::new(Script { next: VecDeque::new(), default: Some(Reply::Status(200)) }));
        let hung = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::unbounded_channel();
        let (s, h) = (Arc::clone(&script), Arc::clone(&hung));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, Arc::clone(&s), Arc::clone(&h), tx.clone()));
            }
        });
        Receiver { port, script, rx, log: Vec::new(), hung }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// The replies to the next requests, in order; then the default.
    pub fn script(&self, replies: &[Reply]) {
        self.script.lock().unwrap().next.extend(replies.iter().copied());
    }

    pub fn set_default(&self, reply: Reply) {
        self.script.lock().unwrap().default = Some(reply);
    }

    /// The next request within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Received> {
        let r = tokio::time::timeout(timeout, self.rx.recv()).await.ok().flatten()?;
        self.log.push(r.clone());
        Some(r)
    }

    /// Reads requests until the events of the accepted ones satisfy
    /// `done`, panicking at the deadline with what arrived.
    pub async fn accepted_until(&mut self, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.accepted_events();
            if done(&events) {
                return events;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if self.next(left).await.is_none() {
                panic!("webhook events never arrived; accepted so far: {}", serde_json::to_string(&events).unwrap_or_default());
            }
        }
    }

    /// The events of every accepted request, in arrival order.
    pub fn accepted_events(&self) -> Vec<Value> {
        self.log.iter().filter(|r| r.accepted()).flat_map(Received::events).collect()
    }

    /// How many hung connections the sender has not closed.
    pub fn hung_open(&self) -> usize {
        self.hung.lock().unwrap().iter().filter(|closed| !**closed).count()
    }
}

/// `type` or `type:user`, for comparing sequences.
pub fn label(e: &Value) -> String {
    match e["user"].as_str() {
        Some(u) => format!("{}:{u}", e["type"].as_str().unwrap_or("?")),
        None => e["type"].as_str().unwrap_or("?").to_owned(),
    }
}

/// The labels of `room`'s events.
pub fn labels(events: &[Value], room: &str) -> Vec<String> {
    events.iter().filter(|e| e["room"] == room).map(label).collect()
}

/// The number part of an event id (`<prefix>-<n>`).
pub fn id_number(e: &Value) -> u64 {
    let id = e["id"].as_str().unwrap_or_else(|| panic!("no id: {e}"));
    id.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("id {id} does not end in -<n>"))
}

/// Serves one request per connection (answers close it).
async fn serve(mut stream: TcpStream, script: Arc<Mutex<Script>>, hung: Arc<Mutex<Vec<bool>>>, tx: mpsc::UnboundedSender<Received>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let found = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break Some((i + 4, String::from_utf8_lossy(&buf[..i]).into_owned()));
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let Some((head_end, head)) = found else { return };
    let mut lines = head.split("\r\n");
    let mut start = lines.next().unwrap_or_default().split(' ');
    let (method, path) = (start.next().unwrap_or_default().to_owned(), start.next().unwrap_or_default().to_owned());
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())).collect();
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let length = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse::<usize>().ok()).unwrap_or(0);
    buf.drain(..head_end);
    let body = loop {
        if chunked {
            if let Some((body, used)) = dechunk(&buf) {
                buf.drain(..used);
                break body;
            }
        } else if buf.len() >= length {
            let body: Vec<u8> = buf.drain(..length).collect();
            break body;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let reply = {
        let mut s = script.lock().unwrap();
        s.next.pop_front().or(s.default).unwrap_or(Reply::Status(200))
    };
    let received = Received { method, path, headers, body: String::from_utf8_lossy(&body).into_owned(), reply, at: Instant::now() };
    // A hang is registered before the request is reported, so a test
    // that saw the request sees the hang.
    let hung_index = (reply == Reply::Hang).then(|| {
        let mut h = hung.lock().unwrap();
        h.push(false);
        h.len() - 1
    });
    let _ = tx.send(received);
    match reply {
        Reply::Status(status) => {
            let resp = format!("HTTP/1.1 {status} Scripted\r\ncontent-length: 2\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nok");
            let _ = stream.write_all(resp.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
        Reply::Hang => {
            // Until the sender gives up on it.
            loop {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            if let Some(i) = hung_index {
                hung.lock().unwrap()[i] = true;
            }
        }
    }
}

/// A complete chunked body at the front of `data`: (body, bytes used).
fn dechunk(data: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let line_end = data[at..].windows(2).position(|w| w == b"\r\n")? + at;
        let size = usize::from_str_radix(std::str::from_utf8(&data[at..line_end]).ok()?.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailers end with an empty line.
            let end = data[at..].windows(2).position(|w| w == b"\r\n")? + at;
            return Some((out, end + 2));
        }
        out.extend_from_slice(data.get(at..at + size)?);
        at += size + 2;
        if at > data.len() {
            return None;
        }
    }
}

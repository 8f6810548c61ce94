//! A streaming Server-Sent Events reader for the scenarios: plain HTTP/1.1
//! over TCP, chunked or not, parsed event by event as bytes arrive.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One parsed event; a comment line (`: heartbeat`) comes as `comment`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub comment: Option<String>,
}

pub struct SseStream {
    stream: TcpStream,
    pub status: u16,
    pub content_type: String,
    chunked: bool,
    raw: Vec<u8>,
    text: String,
    ended: bool,
}

impl SseStream {
    /// GETs `url` with `headers` and reads the response head. Sends the
    /// admin token unless `headers` has an `authorization` entry (empty: none).
    pub async fn open(url: &str, headers: &[(&str, &str)]) -> std::io::Result<SseStream> {
        Self::open_with(url, headers, None).await
    }

    /// Like [`SseStream::open`], with the socket's receive buffer set to
    /// `recv_buffer` bytes: a client meant to stall then holds little in the
    /// kernel, so the relay sees it fall behind after a few messages.
    pub async fn open_with(url: &str, headers: &[(&str, &str)], recv_buffer: Option<u32>) -> std::io::Result<SseStream> {
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
        let rest = url.strip_prefix("http://").ok_or_else(|| bad("only http://"))?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let addr = tokio::net::lookup_host(authority).await?.next().ok_or_else(|| bad("no address"))?;
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        if let Some(bytes) = recv_buffer {
            socket.set_recv_buffer_size(bytes)?;
        }
        let mut stream = socket.connect(addr).await?;
        let mut req = format!("GET {} HTTP/1.1\r\nHost: {authority}\r\nAccept: text/event-stream\r\n", if path.is_empty() { "/" } else { path });
        for (k, v) in headers {
            if !v.is_empty() || !k.eq_ignore_ascii_case("authorization") {
                req.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        // Like `http_request`: the admin token unless the caller says otherwise.
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization")) {
            req.push_str(&format!("Authorization: Bearer {}\r\n", super::admin_token()));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        let head_end = loop {
            if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
                .await
                .map_err(|_| bad("no response head within 20 s"))??;
            if n == 0 {
                return Err(bad("connection closed before the response head"));
            }
            raw.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
        let rest = raw[head_end + 4..].to_vec();
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let header = |name: &str| {
            head.lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_owned())
        };
        let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let content_type = header("content-type").unwrap_or_default();
        let mut s = SseStream { stream, status, content_type, chunked, raw: Vec::new(), text: String::new(), ended: false };
        s.absorb(&rest);
        Ok(s)
    }

    /// The server ended the response (as opposed to a read timing out).
    pub fn ended(&self) -> bool {
        self.ended
    }

    fn absorb(&mut self, bytes: &[u8]) {
        if !self.chunked {
            self.text.push_str(&String::from_utf8_lossy(bytes));
            return;
        }
        self.raw.extend_from_slice(bytes);
        loop {
            let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else { return };
            let size_text = String::from_utf8_lossy(&self.raw[..line_end]).to_string();
            let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16) else {
                self.ended = true;
                return;
            };
            if size == 0 {
                self.ended = true;
                return;
            }
            if self.raw.len() < line_end + 2 + size + 2 {
                return;
            }
            let chunk = self.raw[line_end + 2..line_end + 2 + size].to_vec();
            self.text.push_str(&String::from_utf8_lossy(&chunk));
            self.raw.drain(..line_end + 2 + size + 2);
        }
    }

    fn take_event(&mut self) -> Option<SseEvent> {
        let end = self.text.find("\n\n")?;
        let block: String = self.text.drain(..end + 2).collect();
        let mut ev = SseEvent::default();
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(c) = line.strip_prefix(':') {
                ev.comment = Some(c.trim().to_owned());
            } else if let Some((field, value)) = line.split_once(':') {
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => ev.id = Some(value.to_owned()),
                    "event" => ev.event = Some(value.to_owned()),
                    "data" => data.push(value.to_owned()),
                    _ => {}
                }
            }
        }
        ev.data = data.join("\n");
        Some(ev)
    }

    /// The next event or comment within `timeout`; `None` on timeout or end.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(ev) = self.take_event() {
                return Some(ev);
            }
            if self.ended {
                return None;
            }
            let mut buf = [0u8; 8192];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => self.ended = true,
                Ok(Ok(n)) => self.absorb(&buf[..n]),
            }
        }
    }

    /// The next event that is not a comment or a bare `retry:`.
    pub async fn next_data_event(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let ev = self.next_event(left).await?;
            // Comments and field-only blocks (`retry:`) carry no event.
            if ev.comment.is_none() && (ev.event.is_some() || !ev.data.is_empty()) {
                return Some(ev);
            }
        }
    }
}

/// A real `EventSource` (Node's WHATWG one, `tests/eventsource_client.mjs`)
/// reading `url` until it sees the message with seq `until`; each event is
/// one JSON line on its stdout: `{"type","id","data"}`.
pub struct EventSourceClient {
    pub child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl EventSourceClient {
    pub fn spawn(url: &str, until: u64) -> EventSourceClient {
        use tokio::io::AsyncBufReadExt;
        let root = env!("CARGO_MANIFEST_DIR");
        let mut child = tokio::process::Command::new(format!("{root}/node_modules/.bin/node"))
            .args(["--experimental-eventsource", &format!("{root}/tests/eventsource_client.mjs"), url, &until.to_string()])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node from node_modules (scripts/setup installs it)");
        let stdout = child.stdout.take().expect("piped stdout");
        EventSourceClient { child, lines: tokio::io::BufReader::new(stdout).lines() }
    }

    /// The client's next event, within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> serde_json::Value {
        let line = tokio::time::timeout(timeout, self.lines.next_line()).await.expect("an event in time").unwrap();
        serde_json::from_str(&line.expect("the client exited early")).unwrap()
    }
}

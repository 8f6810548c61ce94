//! A minimal keep-alive HTTP/1.1 client for publishes and Herald's stats,
//! loopback only. Understands Content-Length and chunked bodies.

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub struct HttpConn {
    port: u16,
    stream: BufReader<TcpStream>,
}

impl HttpConn {
    pub async fn connect(port: u16) -> Result<HttpConn> {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connect 127.0.0.1:{port}"))?;
        tcp.set_nodelay(true)?;
        Ok(HttpConn { port, stream: BufReader::new(tcp) })
    }

    /// One request on the kept-alive connection: `(status, body)`.
    pub async fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
        let body = body.unwrap_or("");
        // Herald's stats need a token with `admin`; the bench's carries it.
        let auth = std::env::var("HERALD_TOKEN").map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.port,
            body.len()
        );
        self.stream.get_mut().write_all(req.as_bytes()).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        if line.is_empty() {
            bail!("connection closed before the status line");
        }
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line {line:?}"))?;
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim(), v.trim());
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.parse::<usize>().ok();
                } else if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                }
            }
        }
        let mut out = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.stream.read_line(&mut line).await?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                    .map_err(|_| anyhow!("bad chunk size {line:?}"))?;
                let mut chunk = vec![0; size + 2];
                self.stream.read_exact(&mut chunk).await?;
                chunk.truncate(size);
                out.extend_from_slice(&chunk);
                if size == 0 {
                    break;
                }
            }
        } else if let Some(n) = length {
            out.resize(n, 0);
            self.stream.read_exact(&mut out).await?;
        } else {
            bail!("response without length (Connection: close is not supported)");
        }
        Ok((status, String::from_utf8_lossy(&out).into_owned()))
    }
}

/// One-shot GET returning the body as JSON.
pub async fn get_json(port: u16, path: &str) -> Result<serde_json::Value> {
    let mut c = HttpConn::connect(port).await?;
    let (status, body) = c.request("GET", path, None).await?;
    if status != 200 {
        bail!("GET {path}: {status} {body}");
    }
    Ok(serde_json::from_str(&body)?)
}

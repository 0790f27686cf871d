//! The NATS JetStream peer for S4 (`--target nats-js`, `../shared/peers/nats`):
//! each client publishes over its own TCP connection in the NATS text protocol
//! with a reply subject and counts a report when JetStream's stored ack
//! (`{"stream":…,"seq":…}`) comes back, as an executor using `js.publish()`
//! would. The stream (`HERALD_S4`, subjects `s4.>`, file storage, limits
//! retention) is created fresh for the run; afterwards its message count must
//! cover every acknowledged publish. Written here rather than with async-nats
//! so the load generator's cost per message is the same few lines as for Herald,
//! and no TLS/nkeys stack is compiled for a benchmark.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub const STREAM: &str = "HERALD_S4";

/// One NATS connection with an inbox for replies.
pub struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    inbox: String,
    out: Vec<u8>,
}

/// A reply on the inbox: the number it was sent with, and its payload.
pub struct Reply {
    pub n: u64,
    pub payload: Vec<u8>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr, name: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("NATS connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (r, writer) = stream.into_split();
        let mut conn =
            Self { reader: BufReader::new(r), writer, inbox: format!("_INBOX.{name}"), out: Vec::new() };
        let mut line = String::new();
        conn.reader.read_line(&mut line).await?;
        if !line.starts_with("INFO ") {
            bail!("NATS server said {line:?} instead of INFO");
        }
        let hello = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"headers\":false}}\r\nSUB {}.* 1\r\nPING\r\n",
            conn.inbox
        );
        conn.writer.write_all(hello.as_bytes()).await?;
        loop {
            line.clear();
            if conn.reader.read_line(&mut line).await? == 0 {
                bail!("NATS closed the connection during the handshake");
            }
            match line.trim_end() {
                "PONG" => return Ok(conn),
                l if l.starts_with("-ERR") => bail!("NATS: {l}"),
                _ => {}
            }
        }
    }

    /// Queues `PUB subject inbox.n` with `payload`; [`Conn::flush`] sends.
    pub fn publish(&mut self, subject: &str, n: u64, payload: &[u8]) {
        use std::io::Write;
        let _ = write!(self.out, "PUB {subject} {}.{n} {}\r\n", self.inbox, payload.len());
        self.out.extend_from_slice(payload);
        self.out.extend_from_slice(b"\r\n");
    }

    pub async fn flush(&mut self) -> anyhow::Result<()> {
        self.writer.write_all(&self.out).await?;
        self.out.clear();
        Ok(())
    }

    /// The next reply on the inbox (server `PING`s are answered on the way).
    pub async fn reply(&mut self) -> anyhow::Result<Reply> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line).await? == 0 {
                bail!("NATS closed the connection");
            }
            let l = line.trim_end();
            if l == "PING" {
                self.writer.write_all(b"PONG\r\n").await?;
                continue;
            }
            if l.starts_with("-ERR") {
                bail!("NATS: {l}");
            }
            // MSG <subject> <sid> [reply-to] <#bytes>
            let Some(rest) = l.strip_prefix("MSG ") else { continue };
            let parts: Vec<&str> = rest.split(' ').collect();
            let len: usize =
                parts.last().and_then(|n| n.parse().ok()).ok_or_else(|| anyhow!("bad MSG line {l}"))?;
            let n = parts[0].rsplit('.').next().and_then(|n| n.parse().ok()).unwrap_or(0);
            let mut payload = vec![0; len + 2];
            self.reader.read_exact(&mut payload).await?;
            payload.truncate(len);
            return Ok(Reply { n, payload });
        }
    }

    /// A JetStream API request and its JSON answer.
    async fn request(
        &mut self,
        subject: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        self.publish(subject, 0, body.to_string().as_bytes());
        self.flush().await?;
        let reply = tokio::time::timeout(Duration::from_secs(10), self.reply())
            .await
            .context("JetStream API timed out")??;
        Ok(serde_json::from_slice(&reply.payload)?)
    }
}

/// Deletes and creates the S4 stream, so the run starts empty.
pub async fn fresh_stream(addr: SocketAddr) -> anyhow::Result<()> {
    let mut c = Conn::connect(addr, "setup").await?;
    let _ = c.request(&format!("$JS.API.STREAM.DELETE.{STREAM}"), &serde_json::json!({})).await?;
    let config = serde_json::json!({
        "name": STREAM, "subjects": ["s4.>"], "storage": "file", "retention": "limits",
        "max_bytes": 1i64 << 30, "discard": "old", "num_replicas": 1,
    });
    let answer = c.request(&format!("$JS.API.STREAM.CREATE.{STREAM}"), &config).await?;
    if let Some(e) = answer.get("error") {
        bail!("creating the JetStream stream: {e} (is JetStream enabled? run ../shared/peers/nats/run.sh)");
    }
    Ok(())
}

/// Messages stored in the S4 stream.
pub async fn stored(addr: SocketAddr) -> anyhow::Result<u64> {
    let mut c = Conn::connect(addr, "info").await?;
    let info = c.request(&format!("$JS.API.STREAM.INFO.{STREAM}"), &serde_json::json!({})).await?;
    info["state"]["messages"].as_u64().ok_or_else(|| anyhow!("stream info without a message count: {info}"))
}

/// Whether a publish ack says stored (`{"stream":…,"seq":…}`), else its error.
pub fn ack_ok(payload: &[u8]) -> Result<(), String> {
    let v: serde_json::Value = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    match v.get("error") {
        None if v.get("seq").is_some() => Ok(()),
        None => Err(format!("unexpected ack {v}")),
        Some(e) => Err(e.to_string()),
    }
}

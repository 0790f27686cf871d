//! The peers' wire protocols (`../shared/peers/`), so that one load generator
//! drives Herald and what a team would deploy instead, in the same run:
//!
//! - `nats`: publishers speak core NATS over TCP (`PUB` then `PING`; the publish
//!   counts when its `PONG` comes back, nothing stored); subscribers speak the NATS
//!   text protocol inside WebSocket frames (`CONNECT`, `SUB`, `PING`, then `MSG`s,
//!   several to a frame or one split across frames).
//! - `socketio`: publishers use the seed's REST route `POST /api/v1/tasks`;
//!   subscribers speak Engine.IO 4 / Socket.IO 5 over a plain WebSocket (`40` with
//!   the token, `421["subscribe",…]`, then `42["task_created",{…}]` frames).
//!
//! Both deliver the seed design's `task_created` frame (about 320 bytes) with the
//! send time in the title (`herald-bench t<ns>`), which is how subscribers of these
//! targets find a frame's send time (see `Stamp::Title`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use crate::metrics::now_ns;
use crate::net::Ws;

/// The title prefix that carries the send time on the peer targets.
pub const STAMPED_TITLE: &str = "herald-bench t";
/// The subject (NATS) or room (Socket.IO) every peer subscriber listens on.
pub const SUBJECT: &str = "task_updates";

/// The seed design's `task_created` frame with the send time in its title: what
/// the NATS publisher sends, byte for byte the shape the other peers deliver.
pub fn task_created_frame() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // A UUID-shaped id; the timestamps have the seed's format and length.
    let id = format!("00000000-0000-4000-8000-{n:012x}");
    let at = "2026-01-01T00:00:00.000000";
    format!(
        r#"{{"type":"task_created","data":{{"task_id":"{id}","id":"{id}","title":"{STAMPED_TITLE}{}","description":"","agent_id":null,"status":"pending","progress":0,"created_at":"{at}","updated_at":"{at}"}}}}"#,
        now_ns()
    )
}

/// The send time stamped into a frame's title, if it has one.
pub fn titled_send_time(text: &str) -> Option<u64> {
    let key = "\"title\":\"herald-bench t";
    let rest = &text[text.find(key)? + key.len()..];
    rest[..rest.find('"')?].parse().ok()
}

/// A core-NATS publisher over TCP. Publishes may be issued concurrently; each
/// is followed by a `PING`, and the server's `PONG`s come back in order, so the
/// n-th `PONG` acknowledges the n-th publish.
pub struct NatsPub {
    write: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Arc<std::sync::Mutex<VecDeque<oneshot::Sender<()>>>>,
}

impl NatsPub {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Arc<Self>> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("NATS connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let info = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .context("NATS INFO timed out")??
            .ok_or_else(|| anyhow!("NATS closed before INFO"))?;
        if !info.starts_with("INFO") {
            bail!("NATS: expected INFO, got {info}");
        }
        write.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\n").await?;
        let this = Arc::new(Self { write: tokio::sync::Mutex::new(write), pending: Default::default() });
        let reader = this.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if line == "PONG" {
                    if let Some(tx) = reader.pending.lock().expect("lock").pop_front() {
                        let _ = tx.send(());
                    }
                } else if line == "PING" {
                    let _ = reader.write.lock().await.write_all(b"PONG\r\n").await;
                } else if line.starts_with("-ERR") {
                    eprintln!("NATS publisher: {line}");
                }
            }
            // Closed: every waiting publish fails.
            reader.pending.lock().expect("lock").clear();
        });
        Ok(this)
    }

    /// Publishes one stamped frame on [`SUBJECT`] and waits for the server's `PONG`.
    pub async fn publish(&self) -> anyhow::Result<()> {
        let payload = task_created_frame();
        let msg = format!("PUB {SUBJECT} {}\r\n{payload}\r\nPING\r\n", payload.len());
        let (tx, rx) = oneshot::channel();
        {
            let mut w = self.write.lock().await;
            self.pending.lock().expect("lock").push_back(tx);
            w.write_all(msg.as_bytes()).await?;
        }
        tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .context("NATS PONG timed out")?
            .map_err(|_| anyhow!("NATS connection closed"))
    }
}

/// How a subscriber's frames are read, per target.
pub enum Wire {
    /// One JSON frame per WebSocket text message (Herald, the seed).
    Json,
    /// Engine.IO/Socket.IO packets, one per text message.
    SocketIo,
    /// The NATS text protocol over WebSocket: a byte stream cut into frames anywhere.
    Nats(Vec<u8>),
}

impl Wire {
    /// Calls `payload` with the text of every delivery `msg` carries; returns a
    /// reply to send (a pong), if the protocol asks for one.
    pub fn frame(&mut self, msg: Message, mut payload: impl FnMut(&str)) -> Option<Message> {
        match self {
            Self::Json => {
                if let Message::Text(t) = msg {
                    payload(&t);
                }
                None
            }
            Self::SocketIo => match msg {
                Message::Text(t) if t.as_str() == "2" => Some(Message::Text("3".into())),
                Message::Text(t) => {
                    if let Some(event) = t.strip_prefix("42") {
                        payload(event);
                    }
                    None
                }
                _ => None,
            },
            Self::Nats(buf) => {
                match msg {
                    Message::Binary(b) => buf.extend_from_slice(&b),
                    Message::Text(t) => buf.extend_from_slice(t.as_bytes()),
                    _ => return None,
                }
                let mut reply = None;
                let mut at = 0;
                while let Some(eol) = find_crlf(&buf[at..]) {
                    let line = &buf[at..at + eol];
                    if let Some(args) = line.strip_prefix(b"MSG ") {
                        // MSG <subject> <sid> [reply-to] <#bytes>
                        let len: usize = std::str::from_utf8(args)
                            .ok()
                            .and_then(|a| a.rsplit(' ').next())
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0);
                        let start = at + eol + 2;
                        if buf.len() < start + len + 2 {
                            break; // the rest of the payload is in a later frame
                        }
                        if let Ok(text) = std::str::from_utf8(&buf[start..start + len]) {
                            payload(text);
                        }
                        at = start + len + 2;
                    } else {
                        if line == b"PING" {
                            reply = Some(Message::Binary("PONG\r\n".into()));
                        }
                        at += eol + 2;
                    }
                }
                buf.drain(..at);
                reply
            }
        }
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

/// NATS over WebSocket: waits for `INFO`, subscribes to [`SUBJECT`], and returns
/// once the `PONG` after the `SUB` says the subscription is in place.
pub async fn nats_subscribe(ws: &mut Ws) -> anyhow::Result<()> {
    let mut seen = Vec::new();
    let mut sent = false;
    while let Some(msg) = ws.next().await {
        match msg? {
            Message::Binary(b) => seen.extend_from_slice(&b),
            Message::Text(t) => seen.extend_from_slice(t.as_bytes()),
            Message::Close(_) => break,
            _ => continue,
        }
        if !sent && seen.starts_with(b"INFO") && find_crlf(&seen).is_some() {
            let hello = format!(
                "CONNECT {{\"verbose\":false,\"pedantic\":false,\"protocol\":1}}\r\nSUB {SUBJECT} 1\r\nPING\r\n"
            );
            ws.send(Message::Binary(hello.into_bytes().into())).await?;
            seen.clear();
            sent = true;
        } else if sent && seen.windows(6).any(|w| w == b"PONG\r\n") {
            return Ok(());
        } else if seen.starts_with(b"-ERR") {
            bail!("NATS: {}", String::from_utf8_lossy(&seen));
        }
    }
    bail!("NATS WebSocket closed during the subscription")
}

/// Socket.IO over a plain WebSocket: the Engine.IO open packet, the namespace
/// connect with the token (`40{"token":…}`), then `subscribe` with ack id 1.
pub async fn socketio_subscribe(ws: &mut Ws, token: &str) -> anyhow::Result<()> {
    let mut step = 0;
    while let Some(msg) = ws.next().await {
        let Message::Text(t) = msg? else { continue };
        match (step, t.as_str()) {
            (_, "2") => ws.send(Message::Text("3".into())).await?,
            (0, open) if open.starts_with('0') => {
                let connect = format!("40{}", serde_json::json!({ "token": token }));
                ws.send(Message::Text(connect.into())).await?;
                step = 1;
            }
            (1, ok) if ok.starts_with("40") => {
                let sub = format!("421{}", serde_json::json!(["subscribe", SUBJECT]));
                ws.send(Message::Text(sub.into())).await?;
                step = 2;
            }
            (1, refused) if refused.starts_with("44") => bail!("Socket.IO refused the connection: {refused}"),
            (2, ack) if ack.starts_with("431") => {
                if ack.contains("\"error\"") {
                    bail!("Socket.IO refused the subscription: {ack}");
                }
                return Ok(());
            }
            _ => {}
        }
    }
    bail!("Socket.IO WebSocket closed during the subscription")
}

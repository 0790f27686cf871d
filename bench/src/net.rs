//! Clients: tokens, gRPC `TaskService`, seed-protocol REST calls, and
//! WebSocket connections (optionally from several loopback source addresses).

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use herald::auth::Minter;
use herald::domain::Role;
use herald::proto::task_service_client::TaskServiceClient;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::{Args, Target};

pub type Ws = WebSocketStream<TcpStream>;

pub use herald::cli::Bearer;

pub type Tasks = TaskServiceClient<InterceptedService<Channel, Bearer>>;

/// What every scenario needs: the options, a token, and where the server is.
pub struct Ctx {
    pub args: Args,
    pub token: String,
    pub base: String,
    /// `--url` as a socket address (the NATS target's publishers connect here over TCP).
    pub addr: SocketAddr,
    /// Where WebSocket subscribers connect (`--subscribe-url`, else `--url`).
    pub ws_addr: SocketAddr,
    pub ws_url: String,
}

/// `http://HOST:PORT` on loopback, as a socket address and `HOST:PORT`.
fn loopback(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let hostport = url
        .trim_end_matches('/')
        .split_once("://")
        .map(|(_, hostport)| hostport)
        .ok_or_else(|| anyhow!("a URL must be SCHEME://HOST:PORT (loopback only), got {url}"))?
        .to_string();
    let addr: SocketAddr = hostport
        .replacen("localhost:", "127.0.0.1:", 1)
        .parse()
        .with_context(|| format!("a URL must name an IP address and port: {hostport}"))?;
    if !addr.ip().is_loopback() {
        bail!("herald-bench only sends load to loopback addresses, not {}", addr.ip());
    }
    Ok((addr, hostport))
}

impl Ctx {
    pub fn new(args: &Args) -> anyhow::Result<Self> {
        let token = Minter::hs256(args.secret.as_bytes())
            .mint("herald-bench", &[Role::Admin], None, Duration::from_secs(24 * 3600))
            .context("minting a token")?;
        let base = args.url.trim_end_matches('/').to_string();
        let (addr, _) = loopback(&base)?;
        let (ws_addr, ws_hostport) = loopback(args.subscribe_url.as_deref().unwrap_or(&base))?;
        let ws_url = match args.target {
            Target::Nats => format!("ws://{ws_hostport}/"),
            Target::Socketio => format!("ws://{ws_hostport}/socket.io/?EIO=4&transport=websocket"),
            _ => format!("ws://{ws_hostport}/ws?token={token}"),
        };
        Ok(Self { args: args.clone(), token, base, addr, ws_addr, ws_url })
    }

    pub fn target(&self) -> Target {
        self.args.target
    }

    /// A new HTTP/2 connection with the bearer token on every call.
    pub async fn tasks(&self) -> anyhow::Result<Tasks> {
        let channel = Endpoint::from_shared(self.base.clone())?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .with_context(|| format!("gRPC connect to {}", self.base))?;
        let bearer = Bearer(format!("Bearer {}", self.token).parse()?);
        Ok(TaskServiceClient::with_interceptor(channel, bearer)
            .max_decoding_message_size(1 << 30)
            .max_encoding_message_size(1 << 30))
    }

    /// A seed-protocol HTTP client with one keep-alive connection.
    pub fn rest(&self) -> anyhow::Result<Rest> {
        self.rest_pool(1)
    }

    /// A seed-protocol HTTP client keeping up to `conns` keep-alive connections.
    pub fn rest_pool(&self, conns: usize) -> anyhow::Result<Rest> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(conns)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Rest { client, base: format!("{}/api/v1", self.base), auth: format!("Bearer {}", self.token) })
    }

    /// The loopback address the i-th of `n` client sockets binds to, if spreading.
    pub fn source_ip(&self, i: usize, n: usize) -> Option<Ipv4Addr> {
        let k = self.args.source_ips.map_or(n.div_ceil(20_000).max(1), |k| k.max(1) as usize).min(250);
        (k > 1).then(|| Ipv4Addr::new(127, 0, 0, 1 + (i % k) as u8))
    }

    /// Opens `/ws`, reads the welcome frame, subscribes to `channel` and waits for
    /// `subscribed` (a task channel's snapshot follows it and is left to the reader).
    /// The peers subscribe to `task_updates` in their own protocols (`peers.rs`).
    pub async fn ws_subscribe(&self, channel: &str, source: Option<Ipv4Addr>) -> anyhow::Result<Ws> {
        let fut = async {
            let mut ws = self.ws_connect(source).await?;
            match self.target() {
                Target::Nats => {
                    crate::peers::nats_subscribe(&mut ws).await?;
                    return anyhow::Ok(ws);
                }
                Target::Socketio => {
                    crate::peers::socketio_subscribe(&mut ws, &self.token).await?;
                    return anyhow::Ok(ws);
                }
                _ => {}
            }
            expect_frame(&mut ws, "connection").await?;
            let sub = serde_json::json!({ "type": "subscribe", "channel": channel });
            ws.send(Message::Text(sub.to_string().into())).await?;
            expect_frame(&mut ws, "subscribed").await?;
            anyhow::Ok(ws)
        };
        tokio::time::timeout(Duration::from_secs(30), fut).await.context("WebSocket set-up timed out")?
    }

    /// Opens `/ws` and reads the welcome frame.
    pub async fn ws_open(&self, source: Option<Ipv4Addr>) -> anyhow::Result<Ws> {
        let mut ws = self.ws_connect(source).await?;
        expect_frame(&mut ws, "connection").await?;
        Ok(ws)
    }

    async fn ws_connect(&self, source: Option<Ipv4Addr>) -> anyhow::Result<Ws> {
        let socket = TcpSocket::new_v4()?;
        if let Some(ip) = source {
            // Pick the port at connect time, so TIME_WAIT ports are reused as usual.
            let one: libc::c_int = 1;
            // SAFETY: a valid socket and option value of the right size.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    &one as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
            socket.bind(SocketAddr::from((ip, 0)))?;
        }
        let stream = socket.connect(self.ws_addr).await.context("TCP connect")?;
        stream.set_nodelay(true)?;
        let config = WebSocketConfig::default().read_buffer_size(16 * 1024).write_buffer_size(0);
        let (ws, _) = tokio_tungstenite::client_async_with_config(self.ws_url.as_str(), stream, Some(config))
            .await
            .context("WebSocket handshake")?;
        Ok(ws)
    }
}

async fn expect_frame(ws: &mut Ws, kind: &str) -> anyhow::Result<()> {
    while let Some(msg) = ws.next().await {
        if let Message::Text(t) = msg? {
            let v: serde_json::Value = serde_json::from_str(&t)?;
            match v["type"].as_str() {
                Some(k) if k == kind => return Ok(()),
                Some("error") => bail!("server answered an error: {t}"),
                _ => continue,
            }
        }
    }
    bail!("socket closed while waiting for '{kind}'")
}

/// Seed 000's REST calls.
#[derive(Clone)]
pub struct Rest {
    client: reqwest::Client,
    base: String,
    auth: String,
}

impl Rest {
    /// `POST /api/v1/tasks`: the new task's id.
    pub async fn create_task(&self, title: &str) -> anyhow::Result<String> {
        let resp = self
            .client
            .post(format!("{}/tasks", self.base))
            .header("authorization", &self.auth)
            .json(&serde_json::json!({ "title": title }))
            .send()
            .await?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.context("create task: JSON body")?;
        if !status.is_success() {
            bail!("create task: HTTP {status}: {body}");
        }
        body["id"].as_str().map(str::to_string).ok_or_else(|| anyhow!("create task: no id in {body}"))
    }

    /// `PUT /api/v1/tasks/{id}/progress` with `{"progress": p}`.
    pub async fn progress(&self, id: &str, progress: u32) -> anyhow::Result<()> {
        let resp = self
            .client
            .put(format!("{}/tasks/{id}/progress", self.base))
            .header("authorization", &self.auth)
            .json(&serde_json::json!({ "progress": progress }))
            .send()
            .await?;
        let status = resp.status();
        let _ = resp.bytes().await;
        if !status.is_success() {
            bail!("progress: HTTP {status}");
        }
        Ok(())
    }

    /// Herald's `GET /api/v1/tasks/{id}/progress` (stored history); `None` when
    /// the server has no such route (the seed design).
    pub async fn stored_progress(&self, id: &str) -> anyhow::Result<Option<u64>> {
        let resp = self
            .client
            .get(format!("{}/tasks/{id}/progress", self.base))
            .header("authorization", &self.auth)
            .send()
            .await?;
        if !resp.status().is_success() {
            return Ok(None);
        }
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        Ok(body["progress"].as_array().map(|a| a.len() as u64))
    }
}

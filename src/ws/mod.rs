//! The WebSocket bridge: `GET /ws` speaks the JSON task-progress protocol over
//! the same subscriptions as gRPC; `/ws/tasks/{id}` and
//! `/ws/agent-progress/{id}` keep the task-status and agent-progress
//! socket clients working (`compat`). The handshake is authenticated before any socket is opened.

mod compat;
pub mod protocol;
mod session;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use axum::Extension;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::auth::Verifier;
use crate::config::{Origins, WsConfig};
use crate::domain::{Actor, AppError, Permission};

/// A write that takes longer than this means the peer stopped reading.
pub const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Sends a close frame, giving up after [`WRITE_TIMEOUT`].
pub async fn close_with<S>(sink: &mut S, code: u16, reason: &'static str)
where
    S: futures_util::Sink<axum::extract::ws::Message> + Unpin,
{
    use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
    use futures_util::SinkExt;
    let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
}

/// Answers the peer's close frame: the WebSocket library queues the reply
/// and sends it on the next flush, which a session that just stops never
/// does (the peer would see 1006 instead of its own code).
pub async fn answer_close<S>(sink: &mut S)
where
    S: futures_util::Sink<axum::extract::ws::Message> + Unpin,
{
    use futures_util::SinkExt;
    let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.flush()).await;
}

/// Ends a connection whose input the WebSocket library refused with the code
/// RFC 6455 gives the reason: 1009 too big (refused from the frame header,
/// before the payload is read), 1002 a protocol violation, 1007 invalid UTF-8.
pub async fn refuse_input<S>(sink: &mut S, e: &axum::Error)
where
    S: futures_util::Sink<axum::extract::ws::Message> + Unpin,
{
    use tungstenite::Error;
    let refused = std::error::Error::source(e).and_then(|inner| inner.downcast_ref::<Error>());
    let (code, reason) = match refused {
        Some(Error::Capacity(_)) => (1009, "message too big"),
        Some(Error::Protocol(_)) => (1002, "protocol error"),
        Some(Error::Utf8(_)) => (1007, "invalid UTF-8 in a text frame"),
        _ => return,
    };
    tracing::debug!(error = %e, code, "websocket input refused");
    close_with(sink, code, reason).await;
}

/// Shared by every WebSocket session of this node.
pub struct WsState {
    pub app: App,
    pub verifier: Verifier,
    pub config: WsConfig,
    /// `HERALD_CORS_ORIGINS`, here the pages allowed to open a socket.
    origins: Origins,
    pub node_id: String,
    connections: AtomicUsize,
    events_sent: AtomicU64,
}

impl WsState {
    pub fn new(app: App, verifier: Verifier, config: WsConfig, origins: Origins) -> Arc<Self> {
        let node_id = app.node_id().to_string();
        Arc::new(Self {
            app,
            verifier,
            config,
            origins,
            node_id,
            connections: AtomicUsize::new(0),
            events_sent: AtomicU64::new(0),
        })
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn count_sent(&self, n: usize) {
        self.count_sent_over(n, "websocket");
    }

    /// Counts events sent to clients of `transport` (websocket, sse).
    pub fn count_sent_over(&self, n: usize, transport: &'static str) {
        self.events_sent.fetch_add(n as u64, Ordering::Relaxed);
        metrics::counter!("herald_deliveries_total", "transport" => transport).increment(n as u64);
    }

    /// Live figures for `GET /api/v1/websocket/status`. Channel names are the
    /// caller's tenant's only; the other figures are the node's.
    pub fn status(&self, actor: &Actor) -> BridgeStatus {
        let hub = self.app.hub().stats();
        BridgeStatus {
            node_id: self.node_id.clone(),
            connections: self.connections(),
            max_connections: self.config.max_connections,
            subscriptions_per_channel: self.app.hub().channel_counts(&actor.tenant),
            events_published: hub.events_published,
            events_sent: self.events_sent.load(Ordering::Relaxed),
            slow_consumer: SlowConsumerStats {
                progress_collapsed: hub.progress_collapsed,
                disconnects: hub.slow_consumer_disconnects,
            },
        }
    }
}

/// `GET /api/v1/websocket/status`.
#[derive(Serialize, ToSchema)]
pub struct BridgeStatus {
    node_id: String,
    /// Open WebSocket and SSE connections on this node.
    connections: usize,
    max_connections: usize,
    /// Subscribers per channel name, the caller's tenant only.
    subscriptions_per_channel: HashMap<String, usize>,
    events_published: u64,
    events_sent: u64,
    slow_consumer: SlowConsumerStats,
}

/// What the slow-consumer policy (hub/outbox.rs) has done on this node.
#[derive(Serialize, ToSchema)]
pub struct SlowConsumerStats {
    /// Progress reports replaced by a newer one before a slow client read them.
    progress_collapsed: u64,
    /// Clients dropped for being too slow.
    disconnects: u64,
}

/// A connection's inbound message budget: `rate_limit` messages (text,
/// binary and control pings alike) per `rate_window`.
pub struct RateLimit {
    window_start: tokio::time::Instant,
    count: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new()
    }
}

impl RateLimit {
    pub fn new() -> Self {
        Self { window_start: tokio::time::Instant::now(), count: 0 }
    }

    /// Counts one message; false when it is over the budget.
    pub fn allow(&mut self, cfg: &WsConfig) -> bool {
        if self.window_start.elapsed() >= cfg.rate_window {
            *self = Self::new();
        }
        self.count = self.count.saturating_add(1);
        let allowed = self.count <= cfg.rate_limit;
        if !allowed {
            metrics::counter!("herald_rate_limited_total", "surface" => "websocket").increment(1);
        }
        allowed
    }
}

/// Holds one of the node's connection slots while a session runs; `route`
/// labels `herald_ws_connections`.
pub struct Slot(Arc<WsState>, &'static str);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("herald_ws_connections", "route" => self.1).decrement(1);
    }
}

/// When a token runs out, as a timer deadline: a session (WebSocket or SSE)
/// ends then unless the token was refreshed. The same deadline ends gRPC streams.
pub use crate::auth::expiry as token_deadline;

/// A slot, or 503 when the node is at its connection limit (WebSocket and
/// SSE connections count against the same limit).
pub fn take_slot(state: &Arc<WsState>, route: &'static str) -> Result<Slot, AppError> {
    let n = state.connections.fetch_add(1, Ordering::Relaxed);
    metrics::gauge!("herald_ws_connections", "route" => route).increment(1);
    let slot = Slot(state.clone(), route);
    if n >= state.config.max_connections {
        return Err(AppError::Unavailable(format!(
            "this node has reached its limit of {} WebSocket connections; try another node or later",
            state.config.max_connections
        )));
    }
    Ok(slot)
}

/// A subscription for a stream served over HTTP (the WebSocket routes, SSE,
/// AG-UI). Over the node's stream limit that is 503, as `/ws` answers at its
/// handshake: the node is full and another node may not be, which is not the
/// caller's own limit (429). gRPC keeps `RESOURCE_EXHAUSTED`.
pub fn open_subscription(app: &App, actor: &Actor) -> Result<crate::app::Subscription, AppError> {
    app.subscription(actor).map_err(|e| match e {
        AppError::ResourceExhausted(m) => AppError::Unavailable(m),
        e => e,
    })
}

#[derive(Deserialize)]
pub struct Handshake {
    token: Option<String>,
    #[serde(alias = "cursor", alias = "last_seq")]
    after_seq: Option<u64>,
}

/// The token from `?token=`, `Authorization: Bearer`, or a
/// `Sec-WebSocket-Protocol` offer of `bearer, <jwt>` or `bearer.<jwt>`.
fn handshake_token(q: &Handshake, headers: &HeaderMap) -> Option<String> {
    if let Some(t) = q.token.as_ref().filter(|t| !t.is_empty()) {
        return Some(t.clone());
    }
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if let Some(t) = auth.and_then(|a| a.strip_prefix("Bearer ")) {
        return Some(t.trim().to_string());
    }
    let offered = headers.get(header::SEC_WEBSOCKET_PROTOCOL).and_then(|v| v.to_str().ok())?;
    let parts: Vec<&str> = offered.split(',').map(str::trim).collect();
    if let Some(t) = parts.iter().find_map(|p| p.strip_prefix("bearer.")) {
        return Some(t.to_string());
    }
    let i = parts.iter().position(|p| *p == "bearer")?;
    parts.get(i + 1).map(|t| t.to_string())
}

/// The caller, or why the upgrade is refused (with 403, which the protocol's clients expect).
/// With `HERALD_CORS_ORIGINS` set, a browser page (it always sends `Origin`)
/// must be Herald's own or a listed origin, so another site cannot open a
/// socket with a token it got hold of. Clients that are not browsers send no
/// `Origin` and are not checked.
fn authenticate(state: &WsState, q: &Handshake, headers: &HeaderMap) -> Result<Actor, AppError> {
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let same_origin = origin.split_once("://").is_some_and(|(_, authority)| Some(authority) == host);
        if !same_origin && !state.origins.allows(origin) {
            return Err(AppError::PermissionDenied(format!(
                "origin {origin} is not allowed to open a WebSocket (HERALD_CORS_ORIGINS)"
            )));
        }
    }
    let verified = handshake_token(q, headers)
        .ok_or_else(|| AppError::Unauthenticated("missing token".into()))
        .and_then(|token| state.verifier.verify(&token));
    let actor = verified?;
    crate::telemetry::record_caller(&actor);
    // A token without roles may do nothing: refused here rather than after the upgrade.
    actor.require(Permission::Read)?;
    Ok(actor)
}

fn forbidden(e: AppError) -> Response {
    let body = json!({ "error": { "code": e.code(), "message": e.public_message() } });
    let mut res = (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
    if let Some(r) = crate::auth::audit::Refusal::of(&e) {
        res.extensions_mut().insert(r);
    }
    res
}

/// Per-connection socket buffers. Clients send small frames, so a small read
/// buffer (tungstenite's default is 128 KiB, allocated up front and zero-filled,
/// so resident) keeps idle connections cheap: 1 KiB holds any control frame and
/// the usual subscribe or decision; a bigger frame grows the buffer to its
/// declared length (up to the frame limit). Writes are batched and flushed per batch.
const READ_BUFFER: usize = 1024;
const WRITE_BUFFER: usize = 16 * 1024;

fn upgrade(ws: WebSocketUpgrade, state: &WsState) -> WebSocketUpgrade {
    // Messages over HERALD_WS_MAX_FRAME get an error frame; past 4× the limit
    // the socket closes with 1009. Both the frame and the message limit are
    // set: the library checks a frame's declared length in its header, so a
    // huge frame is refused before its payload is read (by default it would
    // buffer up to 16 MiB first).
    let hard_limit = state.config.max_frame.saturating_mul(4).max(1024);
    ws.protocols(["bearer"])
        .max_frame_size(hard_limit)
        .max_message_size(hard_limit)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
}

/// The sockets (not JSON: left out of the OpenAPI document) and the bridge's
/// status (documented).
pub fn routes(state: Arc<WsState>) -> OpenApiRouter {
    OpenApiRouter::new()
        .route("/ws", get(bridge))
        .route("/ws/tasks/{task_id}", get(compat_socket).layer(Extension(compat::Style::TaskEvents)))
        .route(
            "/ws/agent-progress/{task_id}",
            get(compat_socket).layer(Extension(compat::Style::AgentProgress)),
        )
        .merge(crate::http::no_store(OpenApiRouter::new().routes(routes!(status))))
        .with_state(state)
}

async fn bridge(
    ws: WebSocketUpgrade,
    State(state): State<Arc<WsState>>,
    Query(q): Query<Handshake>,
    headers: HeaderMap,
    remote: Option<Extension<crate::auth::audit::Remote>>,
) -> Response {
    let remote = remote.map(|Extension(r)| r.0);
    let actor = match authenticate(&state, &q, &headers) {
        Ok(a) => a,
        Err(e) => return forbidden(e),
    };
    let slot = match take_slot(&state, "/ws") {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    // Refused before the upgrade, with a JSON body, rather than upgraded and closed.
    if let Err(e) = state.app.check_stream_room() {
        return AppError::Unavailable(e.public_message()).into_response();
    }
    upgrade(ws, &state).on_upgrade(move |socket| session::run(socket, state, actor, slot, remote))
}

/// The per-task compatibility sockets (task-status, agent-progress); the
/// route says which style.
async fn compat_socket(
    ws: WebSocketUpgrade,
    State(state): State<Arc<WsState>>,
    Extension(style): Extension<compat::Style>,
    Path(task_id): Path<String>,
    Query(q): Query<Handshake>,
    headers: HeaderMap,
) -> Response {
    compat_upgrade(ws, state, task_id, q, headers, style).await
}

async fn compat_upgrade(
    ws: WebSocketUpgrade,
    state: Arc<WsState>,
    task_id: String,
    q: Handshake,
    headers: HeaderMap,
    style: compat::Style,
) -> Response {
    let actor = match authenticate(&state, &q, &headers) {
        Ok(a) => a,
        Err(e) => return forbidden(e),
    };
    // (A cursor retention has overtaken is dropped below, not refused.)
    if let Some(after) = q.after_seq
        && let Err(e) = state.app.check_cursor(after).await
        && !matches!(e, AppError::CursorExpired { .. })
    {
        return e.into_response();
    }
    // An unknown task is refused before the upgrade, like a bad token.
    let opened = match open_subscription(&state.app, &actor) {
        Ok(mut sub) => sub.add_task_snapshot(&task_id).await.map(|task| (sub, task)),
        Err(e) => Err(e),
    };
    let (sub, task) = match opened {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let route = match style {
        compat::Style::TaskEvents => "/ws/tasks/{task_id}",
        compat::Style::AgentProgress => "/ws/agent-progress/{task_id}",
    };
    let slot = match take_slot(&state, route) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    // A cursor retention has overtaken is dropped: the client gets the
    // task's current state, as on a first connection.
    let after = match q.after_seq {
        Some(a) if matches!(state.app.check_cursor(a).await, Err(AppError::CursorExpired { .. })) => None,
        a => a,
    };
    let expires = crate::auth::expiry(&actor);
    upgrade(ws, &state)
        .on_upgrade(move |socket| compat::run(socket, state, sub, task, after, expires, style, slot))
}

/// Live figures of the WebSocket bridge and SSE on this node.
#[utoipa::path(
    get,
    path = "/api/v1/websocket/status",
    tag = "meta",
    responses((status = 200, body = BridgeStatus), crate::http::openapi::Errors),
    security(("bearer" = [])),
)]
async fn status(State(state): State<Arc<WsState>>, headers: HeaderMap) -> Response {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match state.verifier.verify_bearer(auth).and_then(|a| a.require(Permission::Read).map(|()| a)) {
        Ok(actor) => axum::Json(state.status(&actor)).into_response(),
        Err(e) => e.into_response(),
    }
}

//! Refused callers: every failed authentication and permission denial, on
//! every surface, is counted (`herald_auth_failures_total{reason, surface}`
//! through the `metrics` facade) and logged at info with its reason, surface
//! and remote address — never the token — at most [`LOG_PER_SECOND`] lines a
//! second, so a flood of forged tokens cannot flood the log.
//!
//! One middleware ([`refusals`]) sees every answer: HTTP 401/403 (the JSON
//! API, WebSocket and SSE handshakes) and gRPC `UNAUTHENTICATED` /
//! `PERMISSION_DENIED`. Refusals inside an open WebSocket (a bad
//! `refresh_token`, a denied decision) are recorded by the session itself.

use parking_lot::Mutex;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::domain::AppError;

/// Log lines about refusals per second at most; the rest are counted only,
/// and their number is logged with the next line.
pub const LOG_PER_SECOND: u32 = 20;

/// The remote address of a request (`ConnectInfo` of the node's listener),
/// also for handlers that record refusals themselves (the WebSocket session).
#[derive(Debug, Clone, Copy)]
pub struct Remote(pub SocketAddr);

/// Put on a 401/403 response by whoever refused, with the reason.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// A permission denial rather than a failed authentication.
    pub denied: bool,
    pub message: String,
}

impl Refusal {
    /// The refusal an error stands for, if it is one.
    pub fn of(e: &AppError) -> Option<Self> {
        match e {
            AppError::Unauthenticated(m) => Some(Self { denied: false, message: m.clone() }),
            AppError::PermissionDenied(m) => Some(Self { denied: true, message: m.clone() }),
            _ => None,
        }
    }
}

/// A short, bounded label for the metric: never the message itself.
fn reason_label(denied: bool, message: &str) -> &'static str {
    if denied {
        return "permission_denied";
    }
    let m = message.to_ascii_lowercase();
    [
        ("expired", "expired"),
        ("not valid yet", "not_yet_valid"),
        ("signature", "bad_signature"),
        ("missing", "missing_token"),
        ("reserved", "reserved_subject"),
        ("issuer", "wrong_issuer"),
        ("audience", "wrong_audience"),
        ("role", "bad_roles"),
    ]
    .into_iter()
    .find(|(needle, _)| m.contains(needle))
    .map_or("invalid_token", |(_, label)| label)
}

struct LogBudget {
    window: Instant,
    logged: u32,
    suppressed: u64,
}

static BUDGET: Mutex<Option<LogBudget>> = Mutex::new(None);

/// Counts and (within the log budget) logs one refusal.
pub fn record(surface: &'static str, remote: Option<SocketAddr>, denied: bool, message: &str) {
    let reason = reason_label(denied, message);
    metrics::counter!("herald_auth_failures_total", "reason" => reason, "surface" => surface).increment(1);
    let suppressed = {
        let mut budget = BUDGET.lock();
        let b = budget.get_or_insert(LogBudget { window: Instant::now(), logged: 0, suppressed: 0 });
        if b.window.elapsed() >= Duration::from_secs(1) {
            b.window = Instant::now();
            b.logged = 0;
        }
        if b.logged >= LOG_PER_SECOND {
            b.suppressed += 1;
            return;
        }
        b.logged += 1;
        std::mem::take(&mut b.suppressed)
    };
    let remote = remote.map_or_else(|| "unknown".to_string(), |r| r.to_string());
    let kind = if denied { "permission denied" } else { "authentication failed" };
    tracing::info!(surface, %remote, reason, detail = message, suppressed_before = suppressed, "{kind}");
}

/// Records an application error if it is a refusal.
pub fn record_error(surface: &'static str, remote: Option<SocketAddr>, e: &AppError) {
    if let Some(r) = Refusal::of(e) {
        record(surface, remote, r.denied, &r.message);
    }
}

fn surface(path: &str, grpc: bool) -> &'static str {
    if grpc {
        "grpc"
    } else if path.starts_with("/ws") {
        "websocket"
    } else if path.starts_with("/api/v1/stream") {
        "sse"
    } else {
        "http"
    }
}

fn grpc_refusal(headers: &HeaderMap) -> Option<(bool, String)> {
    let denied = match headers.get("grpc-status")?.as_bytes() {
        b"16" => false,
        b"7" => true,
        _ => return None,
    };
    let raw = headers.get("grpc-message").and_then(|v| v.to_str().ok()).unwrap_or_default();
    Some((denied, percent_decode(raw)))
}

/// grpc-message is percent-encoded.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The middleware: notes the remote address for handlers, then records the
/// answer if it refused the caller.
pub async fn refusals(mut req: Request, next: Next) -> Response {
    let remote = req.extensions().get::<ConnectInfo<Remote>>().map(|c| c.0);
    if let Some(r) = remote {
        req.extensions_mut().insert(r);
    }
    let remote = remote.map(|r| r.0);
    let grpc = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let surface = surface(req.uri().path(), grpc);
    let res = next.run(req).await;
    if grpc {
        if let Some((denied, message)) = grpc_refusal(res.headers()) {
            record(surface, remote, denied, &message);
        }
    } else if matches!(res.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        match res.extensions().get::<Refusal>() {
            Some(r) => record(surface, remote, r.denied, &r.message),
            None => record(surface, remote, res.status() == StatusCode::FORBIDDEN, "refused"),
        }
    }
    res
}

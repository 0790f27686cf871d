//! Server-Sent Events: `GET /api/v1/stream?channel=…&channel=…` streams the
//! same events as `/ws`, for `EventSource`: `event: <type>`, `id: <cursor>`,
//! `data: <the WebSocket frame's JSON>`. It is a thin adapter over the app's
//! [`Subscription`] (replay from a cursor, then live) with the bridge's
//! connection limit, tenancy, slow-consumer policy and token expiry.
//!
//! The cursor. Seqs are global per tenant and a subscription yields events in
//! seq order, so the last seq sent resumes every channel of the stream. One
//! event can belong to several of the stream's channels (`task_updates` and
//! `task:{id}`); its copies leave together, in channel-name order, and only
//! the last one carries `id: <seq>`. The ones before it carry
//! `id: <seq>;<channel>`, so a connection dropped between two copies resumes
//! with the remaining ones: nothing twice, nothing lost.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::sleep_until;
use tokio_stream::wrappers::ReceiverStream;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::{End, Subscription};
use crate::domain::{Actor, AppError, AppResult, Channel};
use crate::encode::event_envelope;
use crate::http::openapi::Errors;
use crate::hub::{CloseReason, Delivery};
use crate::ws::protocol::{close, collapsed_frame, error_frame, event_frame};
use crate::ws::{Slot, WRITE_TIMEOUT, WsState, take_slot, token_deadline};

/// A comment line this often keeps proxies from closing an idle stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// What `EventSource` waits before reconnecting (the `retry:` field).
const RETRY: Duration = Duration::from_secs(1);
/// Events queued between the subscription and the HTTP body; a client that
/// leaves them unread for [`WRITE_TIMEOUT`] is too slow and is dropped.
const QUEUE: usize = 64;

type Item = Result<SseEvent, Infallible>;

pub fn routes(state: Arc<WsState>) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(stream)).with_state(state)
}

/// Where a stream resumes: after `seq`, or, with `through`, after the copies of
/// event `seq` on the channels up to `through` (in name order).
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    pub seq: u64,
    pub through: Option<String>,
}

impl Cursor {
    /// `<seq>` or `<seq>;<channel>`, as sent in `id:`.
    pub fn parse(s: &str) -> AppResult<Self> {
        let bad =
            || AppError::invalid(format!("invalid Last-Event-ID '{s}': expected <seq> or <seq>;<channel>"));
        let (seq, through) = match s.trim().split_once(';') {
            Some((seq, ch)) if !ch.is_empty() => (seq, Some(ch.to_string())),
            Some(_) => return Err(bad()),
            None => (s.trim(), None),
        };
        let seq: u64 = seq.parse().map_err(|_| bad())?;
        if seq == 0 && through.is_some() {
            return Err(bad());
        }
        Ok(Self { seq, through })
    }

    fn id(&self) -> String {
        match &self.through {
            Some(ch) => format!("{};{ch}", self.seq),
            None => self.seq.to_string(),
        }
    }

    /// The seq to replay after: inside an event, that event is replayed and
    /// its copies up to `through` are skipped.
    fn replay_after(&self) -> u64 {
        if self.through.is_some() { self.seq - 1 } else { self.seq }
    }

    fn skips(&self, seq: u64, channel: &str) -> bool {
        self.seq == seq && self.through.as_deref().is_some_and(|t| channel <= t)
    }
}

struct Query {
    channels: BTreeSet<String>,
    token: Option<String>,
    after_seq: Option<u64>,
}

/// `channel` may repeat (or list several, comma-separated); unknown
/// parameters are ignored, as a cache-busting one may be added by a client.
fn parse_query(q: Option<&str>) -> AppResult<(Query, Vec<Channel>)> {
    let mut query = Query { channels: BTreeSet::new(), token: None, after_seq: None };
    let mut channels = Vec::new();
    for (k, v) in form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
        match &*k {
            "channel" | "channels" => {
                for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    let ch = Channel::parse(name)?;
                    if query.channels.insert(ch.to_string()) {
                        channels.push(ch);
                    }
                }
            }
            "token" if !v.is_empty() => query.token = Some(v.into_owned()),
            "after_seq" | "cursor" | "last_seq" => {
                // Seqs are stored as i64: a larger cursor is no seq at all.
                let seq = v
                    .parse::<i64>()
                    .ok()
                    .and_then(|s| u64::try_from(s).ok())
                    .ok_or_else(|| AppError::invalid(format!("after_seq '{v}' is not a seq")))?;
                query.after_seq = Some(seq);
            }
            _ => {}
        }
    }
    Ok((query, channels))
}

/// The channels' events as Server-Sent Events: `event: <type>`, `id: <cursor>`,
/// `data: <the WebSocket frame's JSON>` (the `Event` schema), after a first
/// `subscribed` event; a comment line every 15 s. A `close` event says why the
/// stream ends (token expired, slow consumer, restart); reconnect with
/// `Last-Event-ID`.
#[utoipa::path(
    get,
    path = "/api/v1/stream",
    tag = "streams",
    params(
        ("channel" = Vec<String>, Query, explode = true,
         description = "Channels to stream (repeat, or comma-separate): task_updates, agent_status, approvals, task:{id}, agent:{id}, execution:{id}",
         min_items = 1, max_items = 16,
         pattern = r"^(task_updates|agent_status|approvals|(task|agent|execution):[A-Za-z0-9_.:-]{1,128})$"),
        ("after_seq" = Option<u64>, Query, description = "Resume after this seq (Last-Event-ID wins when both are sent)"),
        ("Last-Event-ID" = Option<String>, Header, nullable = false,
         description = "`<seq>` or `<seq>;<channel>`, as sent in `id:`; EventSource sends it on reconnect (empty: none)",
         pattern = r"^(|[0-9]{1,18}|[1-9][0-9]{0,17};(task_updates|agent_status|approvals|(task|agent|execution):[A-Za-z0-9_.:-]{1,128}))$"),
    ),
    responses(
        (status = 200, description = "The event stream; each `data:` line is an `Event`", content_type = "text/event-stream", body = SseFrame),
        Errors,
    ),
    security(("bearer" = []), ("token_query" = [])),
)]
async fn stream(State(state): State<Arc<WsState>>, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    match open(state, q, &headers).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn open(state: Arc<WsState>, q: Option<String>, headers: &HeaderMap) -> AppResult<Response> {
    let (query, channels) = parse_query(q.as_deref())?;
    let actor = match &query.token {
        Some(t) => state.verifier.verify(t)?,
        None => {
            let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            state.verifier.verify_bearer(auth).map_err(|e| match e {
                AppError::Unauthenticated(m) if auth.is_none() => AppError::Unauthenticated(format!(
                    "{m}: send Authorization: Bearer <jwt> or ?token=<jwt> (EventSource cannot set headers)"
                )),
                e => e,
            })?
        }
    };
    if channels.is_empty() {
        return Err(AppError::invalid("name at least one channel: ?channel=task_updates&channel=task:{id}"));
    }
    let max = state.config.max_subscriptions;
    if channels.len() > max {
        return Err(AppError::ResourceExhausted(format!("at most {max} channels per stream")));
    }
    for ch in &channels {
        state.app.check_channel(&actor, ch).await?;
    }
    // EventSource sends Last-Event-ID on reconnect, with the URL it first used:
    // the header is the newer cursor.
    let last_event_id = match headers.get("last-event-id").map(|v| v.to_str()) {
        Some(Ok(s)) if !s.trim().is_empty() => Some(Cursor::parse(s)?),
        Some(Err(_)) => return Err(AppError::invalid("Last-Event-ID is not text")),
        _ => None,
    };
    let cursor = last_event_id.or(query.after_seq.map(|seq| Cursor { seq, through: None }));
    // A cursor retention has overtaken: say so, then start live as without one.
    let mut expired = None;
    let cursor = match cursor {
        Some(c) => match state.app.check_cursor(c.seq).await {
            Err(AppError::CursorExpired { oldest_seq, .. }) => {
                expired = Some(oldest_seq);
                None
            }
            _ => Some(c),
        },
        None => None,
    };
    let slot = take_slot(&state, "/api/v1/stream")?;
    let mut sub = crate::ws::open_subscription(&state.app, &actor)?;
    let start = match cursor {
        Some(c) => {
            sub.add(channels, Some(c.replay_after()));
            c
        }
        None => Cursor { seq: sub.add_live(channels).await?, through: None },
    };
    let hello = json!({
        "type": "subscribed",
        "channels": query.channels.iter().collect::<Vec<_>>(),
        "after_seq": start.seq,
    });
    let (tx, rx) = mpsc::channel::<Item>(QUEUE);
    if let Some(oldest_seq) = expired {
        let frame = json!({ "type": "cursor_expired", "oldest_seq": oldest_seq });
        let event = SseEvent::default().event("cursor_expired").data(frame.to_string());
        tx.try_send(Ok(event)).expect("an empty queue has room");
    }
    let first = SseEvent::default().event("subscribed").id(start.id()).retry(RETRY).data(hello.to_string());
    tx.try_send(Ok(first)).expect("an empty queue has room");
    let pump = Pump { state, sub, channels: query.channels, skip: Some(start), tx, _slot: slot };
    tokio::spawn(pump.run(actor));
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response())
}

/// One Server-Sent Event as the document describes it (SSE and AG-UI): its
/// fields as a client's parser reads them.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // a schema only: axum's `Event` writes the frames
pub struct SseFrame {
    /// The event's type (`subscribed`, an event type, `progress_collapsed`,
    /// `cursor_expired`, `close`, `error`); absent on AG-UI streams.
    event: Option<String>,
    /// The resume cursor to send back as `Last-Event-ID`.
    id: Option<String>,
    /// How long EventSource waits before reconnecting, in milliseconds.
    retry: Option<u64>,
    /// JSON text: an `Event`, or the control frame named by `event`; on AG-UI
    /// streams an AG-UI event.
    data: String,
}

/// Moves one stream's deliveries into its HTTP body.
struct Pump {
    state: Arc<WsState>,
    sub: Subscription,
    channels: BTreeSet<String>,
    /// The resume cursor, while the event it points into may still come.
    skip: Option<Cursor>,
    tx: mpsc::Sender<Item>,
    _slot: Slot,
}

impl Pump {
    async fn run(mut self, actor: Actor) {
        let expires = token_deadline(&actor);
        let mut last = 0u64;
        loop {
            let batch = tokio::select! {
                b = self.sub.next_batch() => b,
                _ = sleep_until(expires) => {
                    return self.close(close::TOKEN_EXPIRED, "token_expired", "token expired: reconnect with a fresh token and after_seq").await;
                }
                _ = self.tx.closed() => return,
            };
            let batch = match batch {
                Ok(b) => b,
                Err(End::Closed(CloseReason::Shutdown)) => {
                    return self
                        .close(
                            close::SERVICE_RESTART,
                            "restart",
                            "herald is restarting: reconnect with Last-Event-ID",
                        )
                        .await;
                }
                Err(End::Closed(CloseReason::Overflow)) => {
                    return self
                        .close(
                            close::SLOW_CONSUMER,
                            "slow_consumer",
                            "too slow: reconnect with Last-Event-ID",
                        )
                        .await;
                }
                Err(End::Failed(e)) => {
                    let _ = self.send(SseEvent::default().event("error").data(error_frame(&e))).await;
                    return;
                }
                // Retention overtook the replay under way: as at connect time,
                // cursor_expired, then live from a fresh `subscribed`.
                Err(End::Expired { channels, oldest_seq, .. }) => {
                    if !self.resync(channels, oldest_seq).await {
                        return;
                    }
                    continue;
                }
            };
            let mut sent = 0;
            for d in batch {
                // A later copy of an event whose copies have all left.
                if d.event.seq <= last {
                    continue;
                }
                last = d.event.seq;
                let marker = collapsed_frame(&d)
                    .map(|m| SseEvent::default().event("progress_collapsed").data(m.as_str()));
                if let Some(marker) = marker
                    && !self.send(marker).await
                {
                    return;
                }
                for event in self.copies(&d) {
                    if !self.send(event).await {
                        return;
                    }
                    sent += 1;
                }
            }
            self.state.count_sent_over(sent, "sse");
        }
    }

    /// Every copy of `d`'s event on this stream's channels, in name order; the
    /// last one's id is the plain seq.
    fn copies(&mut self, d: &Delivery) -> Vec<SseEvent> {
        let seq = d.event.seq;
        let mine: Vec<String> =
            d.event.channels().iter().map(Channel::to_string).filter(|c| self.channels.contains(c)).collect();
        let mut mine: Vec<&String> = mine.iter().collect();
        mine.sort();
        let skip = self.skip.take_if(|c| c.seq <= seq);
        let mut out = Vec::new();
        for (i, ch) in mine.iter().enumerate() {
            if skip.as_ref().is_some_and(|c| c.skips(seq, ch)) {
                continue;
            }
            let data = if **ch == *d.channel {
                event_frame(d).as_str().to_string()
            } else {
                serde_json::to_string(&event_envelope(&d.event, ch)).expect("events always serialize")
            };
            let id = if i + 1 == mine.len() { seq.to_string() } else { format!("{seq};{ch}") };
            out.push(SseEvent::default().event(d.event.payload.type_name()).id(id).data(data));
        }
        out
    }

    async fn resync(&mut self, channels: Vec<Channel>, oldest_seq: u64) -> bool {
        let frame = json!({ "type": "cursor_expired", "oldest_seq": oldest_seq });
        if !self.send(SseEvent::default().event("cursor_expired").data(frame.to_string())).await {
            return false;
        }
        let seq = match self.sub.add_live(channels).await {
            Ok(seq) => seq,
            Err(e) => {
                let _ = self.send(SseEvent::default().event("error").data(error_frame(&e))).await;
                return false;
            }
        };
        self.skip = None;
        let hello = json!({ "type": "subscribed", "channels": self.channels.iter().collect::<Vec<_>>(), "after_seq": seq });
        self.send(SseEvent::default().event("subscribed").id(seq.to_string()).data(hello.to_string())).await
    }

    async fn send(&self, event: SseEvent) -> bool {
        matches!(self.tx.send_timeout(Ok(event), WRITE_TIMEOUT).await, Ok(()))
    }

    /// Tells the client why the stream ends, with the WebSocket close code.
    async fn close(&self, code: u16, reason: &str, message: &str) {
        let data = json!({ "type": "close", "code": code, "reason": reason, "message": message });
        let _ = self.send(SseEvent::default().event("close").data(data.to_string())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_are_refused() {
        assert_eq!(Cursor::parse("42").unwrap(), Cursor { seq: 42, through: None });
        let inside = Cursor::parse("42;task:a").unwrap();
        assert_eq!(inside.id(), "42;task:a");
        assert_eq!(inside.replay_after(), 41);
        assert!(
            inside.skips(42, "task:a") && inside.skips(42, "approvals") && !inside.skips(42, "task_updates")
        );
        assert!(!inside.skips(43, "task:a"));
        for bad in ["", "x", "-1", "0;task:a", "5;"] {
            assert!(Cursor::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}

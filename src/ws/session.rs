//! One `/ws` connection, on one task: a `select!` over the client's frames,
//! the subscription's deliveries, the ping timer and the token's expiry.
//! One task (not a reader and a writer joined by a channel) because idle
//! connections are the common case and a second task plus its channel would
//! double what each one costs (BENCHMARKS.md, S3). Replies, snapshots and
//! events still leave in one well-defined order, and either direction ending
//! ends the session. Handling a client frame may wait on the application
//! (a database read, a decision); deliveries queue in the outbox meanwhile.
//! What an idle session costs is guarded by a test (the session future's size).

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::time::{Instant, sleep_until};

use super::protocol::{
    ClientFrame, close, collapsed_frame, error_frame, event_frame, required, snapshot_frame,
};
use super::{
    RateLimit, Slot, WRITE_TIMEOUT, WsState, answer_close, close_with, refuse_input, token_deadline,
};
use crate::app::{App, End, Subscription};
use crate::domain::{Actor, AppError, Channel, DecisionKind};
use crate::hub::{CloseReason, Delivery};

/// What handling a client frame asks the session to do.
enum Control {
    Send(String),
    Subscribe { channel: Channel, after: Option<u64> },
    Unsubscribe(Channel),
    Refreshed,
}

struct Session {
    state: Arc<WsState>,
    actor: Actor,
    sub: Subscription,
    subscribed: HashSet<Channel>,
    rate: RateLimit,
    expires: Instant,
    awaiting_pong: bool,
    remote: Option<std::net::SocketAddr>,
}

pub async fn run(
    mut socket: WebSocket,
    state: Arc<WsState>,
    actor: Actor,
    _slot: Slot,
    remote: Option<std::net::SocketAddr>,
) {
    let connection_id = uuid::Uuid::new_v4().to_string();
    let sub = match state.app.subscription(&actor) {
        Ok(s) => s,
        // The handshake checked for room; another stream took it meanwhile.
        Err(AppError::ResourceExhausted(_)) => {
            return close_with(&mut socket, close::TRY_AGAIN_LATER, "stream limit reached: try later").await;
        }
        Err(e) => {
            e.log_if_internal();
            return close_with(&mut socket, close::INTERNAL_ERROR, "internal error").await;
        }
    };
    let welcome = json!({ "type": "connection", "status": "connected", "connection_id": connection_id });
    if !send(&mut socket, Message::Text(welcome.to_string().into())).await {
        return;
    }
    tracing::debug!(%connection_id, subject = %actor.subject, "websocket connected");
    let mut ping = tokio::time::interval(state.config.ping_interval);
    ping.tick().await;
    let mut s = Session {
        expires: token_deadline(&actor),
        state,
        actor,
        sub,
        subscribed: HashSet::new(),
        rate: RateLimit::new(),
        awaiting_pong: false,
        remote,
    };
    // One timer for the token's expiry, reset when it is refreshed: a sleep
    // made anew in every turn of the loop would enter and leave the timer
    // wheel (two driver locks) for every batch of deliveries (S1).
    let expiry = sleep_until(s.expires);
    tokio::pin!(expiry);
    loop {
        if expiry.deadline() != s.expires {
            expiry.as_mut().reset(s.expires);
        }
        let open = tokio::select! {
            msg = socket.recv() => match msg {
                // Boxed: handling a client frame can wait on the application
                // (subscribe, execute, decide), and that future is several
                // times the size of the rest of the session. Inline, every idle
                // connection would carry its space (S3); boxed, only a
                // connection handling a frame does, for as long as it does.
                Some(Ok(msg)) => Box::pin(s.on_message(&mut socket, msg)).await,
                Some(Err(e)) => {
                    refuse_input(&mut socket, &e).await;
                    false
                }
                None => false,
            },
            batch = s.sub.next_batch() => s.on_deliveries(&mut socket, batch).await,
            _ = ping.tick() => s.on_ping(&mut socket).await,
            () = &mut expiry => {
                close_with(&mut socket, close::TOKEN_EXPIRED, "token expired").await;
                false
            }
        };
        if !open {
            break;
        }
    }
    tracing::debug!(%connection_id, "websocket closed");
}

impl Session {
    /// Handles one client frame; false when the session is over.
    async fn on_message(&mut self, socket: &mut WebSocket, msg: Message) -> bool {
        let text = match msg {
            Message::Text(t) => Ok(t),
            Message::Binary(_) => Err(AppError::invalid("binary frames are not supported; send JSON text")),
            Message::Pong(_) => {
                self.awaiting_pong = false;
                return true;
            }
            Message::Ping(_) => {
                // Control pings count too: past the limit the connection
                // closes rather than answer them (tungstenite pongs by itself).
                if !self.rate.allow(&self.state.config) {
                    close_with(socket, close::POLICY, "rate limit exceeded").await;
                    return false;
                }
                return true;
            }
            Message::Close(_) => {
                answer_close(socket).await;
                return false;
            }
        };
        let cfg = &self.state.config;
        let reply = if !self.rate.allow(cfg) {
            Err(AppError::ResourceExhausted(format!(
                "rate limit: at most {} messages per {:?}; this one was dropped",
                cfg.rate_limit, cfg.rate_window
            )))
        } else {
            match text {
                Ok(t) if t.len() > cfg.max_frame => Err(AppError::invalid(format!(
                    "message of {} bytes exceeds the limit of {}",
                    t.len(),
                    cfg.max_frame
                ))),
                Ok(t) => handle(&t, &self.state, &mut self.actor, &mut self.subscribed).await,
                Err(e) => Err(e),
            }
        };
        let controls = reply.unwrap_or_else(|e| {
            crate::auth::audit::record_error("websocket", self.remote, &e);
            vec![Control::Send(error_frame(&e))]
        });
        for control in controls {
            let ok = match control {
                Control::Send(text) => send(socket, Message::Text(text.into())).await,
                Control::Subscribe { channel, after } => {
                    let open = subscribe(socket, &mut self.sub, channel.clone(), after).await;
                    self.note_subscribed(channel);
                    open
                }
                Control::Unsubscribe(channel) => {
                    self.sub.remove(&channel);
                    let reply = json!({ "type": "unsubscribed", "channel": channel.to_string() });
                    send(socket, Message::Text(reply.to_string().into())).await
                }
                Control::Refreshed => {
                    self.expires = token_deadline(&self.actor);
                    let reply = json!({ "type": "token_refreshed", "expires_at": self.actor.expires_at });
                    send(socket, Message::Text(reply.to_string().into())).await
                }
            };
            if !ok {
                return false;
            }
        }
        true
    }

    /// Writes a batch of deliveries with one flush; false when the session is over.
    async fn on_deliveries(
        &mut self,
        socket: &mut WebSocket,
        batch: Result<Vec<Arc<Delivery>>, End>,
    ) -> bool {
        let batch = match batch {
            Ok(b) => b,
            Err(End::Closed(CloseReason::Shutdown)) => {
                close_with(socket, close::SERVICE_RESTART, "herald is restarting").await;
                return false;
            }
            Err(End::Closed(CloseReason::Overflow)) => {
                close_with(socket, close::SLOW_CONSUMER, "too slow: resume from your last seq").await;
                return false;
            }
            Err(End::Failed(e)) => {
                send(socket, Message::Text(error_frame(&e).into())).await;
                close_with(socket, close::INTERNAL_ERROR, "internal error").await;
                return false;
            }
            // Retention overtook a replay under way: as at subscribe time.
            Err(End::Expired { channels, oldest_seq, .. }) => {
                for channel in channels {
                    // Boxed: a resync reads snapshots from the store, and
                    // that future would otherwise sit in every idle session.
                    let open = Box::pin(resync(socket, &mut self.sub, channel.clone(), oldest_seq)).await;
                    self.note_subscribed(channel);
                    if !open {
                        return false;
                    }
                }
                return true;
            }
        };
        let n = batch.len();
        let write = async {
            for d in &batch {
                if let Some(marker) = collapsed_frame(d) {
                    socket.feed(Message::Text(marker)).await?;
                }
                socket.feed(Message::Text(event_frame(d))).await?;
            }
            socket.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(())) => {
                self.state.count_sent(n);
                true
            }
            Ok(Err(_)) => false,
            Err(_) => {
                close_with(socket, close::SLOW_CONSUMER, "too slow: resume from your last seq").await;
                false
            }
        }
    }

    /// Counts `channel` as subscribed when the subscription has it (a
    /// snapshot that failed left it out).
    fn note_subscribed(&mut self, channel: Channel) {
        if self.sub.is_subscribed(&channel) {
            self.subscribed.insert(channel);
        } else {
            self.subscribed.remove(&channel);
        }
    }

    /// Pings; a peer that did not answer the previous ping is dropped.
    async fn on_ping(&mut self, socket: &mut WebSocket) -> bool {
        if self.awaiting_pong {
            close_with(socket, close::PING_TIMEOUT, "no pong").await;
            return false;
        }
        self.awaiting_pong = true;
        send(socket, Message::Ping(Default::default())).await
    }
}

async fn handle(
    text: &str,
    state: &WsState,
    actor: &mut Actor,
    subscribed: &mut HashSet<Channel>,
) -> Result<Vec<Control>, AppError> {
    let send = |v: serde_json::Value| Ok(vec![Control::Send(v.to_string())]);
    let app = &state.app;
    match ClientFrame::parse(text)? {
        ClientFrame::Ping => send(json!({ "type": "pong" })),
        ClientFrame::Subscribe { channel, after_seq } => {
            let channel = Channel::parse(&required("channel", channel)?)?;
            state.app.check_channel(actor, &channel).await?;
            if let Some(after) = after_seq {
                match state.app.check_cursor(after).await {
                    // Answered in `subscribe` with cursor_expired and a fresh start.
                    Ok(()) | Err(AppError::CursorExpired { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            check_room(state, subscribed, Some(&channel))?;
            // `subscribed` counts it once `subscribe` has succeeded (its
            // snapshot can fail).
            Ok(vec![Control::Subscribe { channel, after: after_seq }])
        }
        ClientFrame::Unsubscribe { channel } => {
            let channel = Channel::parse(&required("channel", channel)?)?;
            subscribed.remove(&channel);
            Ok(vec![Control::Unsubscribe(channel)])
        }
        ClientFrame::RefreshToken { token } => {
            let fresh = state.verifier.verify(&required("token", token)?)?;
            if fresh.subject != actor.subject || fresh.tenant != actor.tenant {
                return Err(AppError::PermissionDenied(
                    "a refreshed token must have the same subject and tenant".into(),
                ));
            }
            *actor = fresh;
            Ok(vec![Control::Refreshed])
        }
        ClientFrame::Execute { agent_id, input, task_id } => {
            // The new execution's channel is one more subscription: refused
            // before anything is started.
            check_room(state, subscribed, None)?;
            let e = app.execute(actor, &required("agent_id", agent_id)?, input, task_id, None).await?;
            let channel = Channel::Execution(e.id.clone());
            let accepted = json!({ "type": "execute_accepted", "execution_id": e.id, "status": e.status });
            // From seq 0: the replay brings execution_created and anything since.
            Ok(vec![Control::Send(accepted.to_string()), Control::Subscribe { channel, after: Some(0) }])
        }
        ClientFrame::Cancel { execution_id, reason } => {
            let e =
                app.cancel_execution(actor, &required("execution_id", execution_id)?, reason, None).await?;
            send(json!({ "type": "cancel_accepted", "execution_id": e.id, "status": e.status }))
        }
        ClientFrame::Approve { approval_id, message } => {
            decide(app, actor, approval_id, DecisionKind::Approve, None, message).await
        }
        ClientFrame::Reject { approval_id, message } => {
            decide(app, actor, approval_id, DecisionKind::Reject, None, message).await
        }
        ClientFrame::Edit { approval_id, arguments, message } => {
            let arguments = Some(arguments.ok_or_else(|| AppError::invalid("missing field 'arguments'"))?);
            decide(app, actor, approval_id, DecisionKind::Edit, arguments, message).await
        }
        ClientFrame::Respond { approval_id, message } => {
            decide(app, actor, approval_id, DecisionKind::Respond, None, message).await
        }
    }
}

/// Refuses a subscription past `max_subscriptions` (re-subscribing to
/// `channel`, already counted, is not one more).
fn check_room(
    state: &WsState,
    subscribed: &HashSet<Channel>,
    channel: Option<&Channel>,
) -> Result<(), AppError> {
    let max = state.config.max_subscriptions;
    if channel.is_some_and(|c| subscribed.contains(c)) || subscribed.len() < max {
        return Ok(());
    }
    Err(AppError::ResourceExhausted(format!("at most {max} subscriptions per connection")))
}

async fn decide(
    app: &App,
    actor: &Actor,
    approval_id: Option<String>,
    kind: DecisionKind,
    arguments: Option<Value>,
    message: String,
) -> Result<Vec<Control>, AppError> {
    let a = app.decide(actor, &required("approval_id", approval_id)?, kind, arguments, message).await?;
    let reply = json!({ "type": "decided", "approval_id": a.id, "execution_id": a.execution_id, "decision": a.decision });
    Ok(vec![Control::Send(reply.to_string())])
}

async fn send(socket: &mut WebSocket, msg: Message) -> bool {
    matches!(tokio::time::timeout(WRITE_TIMEOUT, socket.send(msg)).await, Ok(Ok(())))
}

async fn subscribe(
    socket: &mut WebSocket,
    sub: &mut Subscription,
    channel: Channel,
    after: Option<u64>,
) -> bool {
    if let Some(a) = after {
        match sub.cursor_expired(a).await {
            Ok(None) => {}
            Ok(Some(oldest_seq)) => return resync(socket, sub, channel, oldest_seq).await,
            Err(e) => return send(socket, Message::Text(error_frame(&e).into())).await,
        }
    }
    subscribe_from(socket, sub, channel, after).await
}

/// Retention removed events after the client's cursor: say so, then
/// subscribe as without one (a snapshot first on task:{id}).
async fn resync(socket: &mut WebSocket, sub: &mut Subscription, channel: Channel, oldest_seq: u64) -> bool {
    let frame = json!({ "type": "cursor_expired", "channel": channel.to_string(), "oldest_seq": oldest_seq });
    send(socket, Message::Text(frame.to_string().into())).await
        && subscribe_from(socket, sub, channel, None).await
}

async fn subscribe_from(
    socket: &mut WebSocket,
    sub: &mut Subscription,
    channel: Channel,
    after: Option<u64>,
) -> bool {
    let name = channel.to_string();
    let mut reply = json!({ "type": "subscribed", "channel": name });
    if let Some(a) = after {
        reply["after_seq"] = a.into();
    }
    let snapshot = match (&channel, after) {
        (Channel::Task(id), None) => match sub.add_task_snapshot(id).await {
            Ok(task) => Some(snapshot_frame("task_snapshot", &name, task.last_seq, &task)),
            Err(e) => return send(socket, Message::Text(error_frame(&e).into())).await,
        },
        (Channel::Execution(id), None) => match sub.add_execution_snapshot(id).await {
            Ok(e) => Some(snapshot_frame("execution_snapshot", &name, e.last_seq, &e)),
            Err(e) => return send(socket, Message::Text(error_frame(&e).into())).await,
        },
        (_, None) => {
            // Live from here: a client that drops before any event of this
            // channel resumes exactly with this as its cursor, and nothing at
            // or below it is delivered.
            match sub.add_live(vec![channel]).await {
                Ok(seq) => reply["seq"] = seq.into(),
                Err(e) => e.log_if_internal(),
            }
            None
        }
        (_, Some(_)) => {
            sub.add(vec![channel], after);
            None
        }
    };
    if !send(socket, Message::Text(reply.to_string().into())).await {
        return false;
    }
    match snapshot {
        Some(s) => send(socket, Message::Text(s.into())).await,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    fn future_size<F, Fut>(_: F) -> usize
    where
        F: FnOnce(WebSocket, Arc<WsState>, Actor, Slot, Option<std::net::SocketAddr>) -> Fut,
        Fut: Future,
    {
        std::mem::size_of::<Fut>()
    }

    /// Every idle connection holds one session future (S3 in BENCHMARKS.md:
    /// ≤ 8 KiB per idle connection in all). Handling a client frame is boxed so
    /// that the application's futures are not part of it.
    #[test]
    fn an_idle_session_future_stays_small() {
        let size = future_size(run);
        println!("session future: {size} bytes");
        // 2,712 bytes in a debug build (release is smaller). It had grown to
        // 7,504 when a retention resync (store reads for snapshots) was
        // awaited inline in `on_deliveries`; that path is boxed now.
        assert!(size <= 4096, "the session future is {size} bytes");
    }
}

//! One `/ws` connection. The socket is split: the reader parses and checks
//! client frames; the writer owns the subscription and is the only one who
//! writes, so replies, snapshots and events leave in one well-defined order.
//! When either half ends, both stop.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use super::protocol::{ClientFrame, close, error_frame, event_frame, required, snapshot_frame};
use super::{Sink, Slot, WRITE_TIMEOUT, WsState, close_with};
use crate::app::App;
use crate::app::{End, Subscription};
use crate::domain::{Actor, AppError, Channel, DecisionKind};
use crate::hub::CloseReason;
use serde_json::Value;

/// What the reader asks the writer to do.
enum Control {
    Send(String),
    Subscribe { channel: Channel, after: Option<u64> },
    Unsubscribe(Channel),
    Refreshed(Actor),
    Pong,
}

pub async fn run(socket: WebSocket, state: Arc<WsState>, actor: Actor, _slot: Slot) {
    let connection_id = uuid::Uuid::new_v4().to_string();
    let sub = match state.app.subscription(&actor) {
        Ok(s) => s,
        Err(e) => return e.log_if_internal(),
    };
    let (mut sink, stream) = socket.split();
    let welcome = json!({ "type": "connection", "status": "connected", "connection_id": connection_id });
    if sink.send(Message::Text(welcome.to_string().into())).await.is_err() {
        return;
    }
    tracing::debug!(%connection_id, subject = %actor.subject, "websocket connected");
    // The reader runs on its own task; this task writes. When the reader ends
    // it drops its sender and the writer sees the end of its control channel;
    // when the writer ends, the reader is aborted.
    let (tx, rx) = mpsc::channel(32);
    let reader = tokio::spawn(read(stream, state.clone(), actor.clone(), tx));
    write(sink, state, actor, sub, rx).await;
    reader.abort();
    tracing::debug!(%connection_id, "websocket closed");
}

struct RateLimit {
    window_start: Instant,
    count: u32,
}

async fn read(
    mut stream: SplitStream<WebSocket>,
    state: Arc<WsState>,
    mut actor: Actor,
    tx: mpsc::Sender<Control>,
) {
    let cfg = &state.config;
    let mut rate = RateLimit { window_start: Instant::now(), count: 0 };
    let mut subscribed = HashSet::new();
    while let Some(Ok(msg)) = stream.next().await {
        let text = match msg {
            Message::Text(t) => Ok(t),
            Message::Binary(_) => Err(AppError::invalid("binary frames are not supported; send JSON text")),
            Message::Pong(_) => {
                let _ = tx.send(Control::Pong).await;
                continue;
            }
            Message::Ping(_) => continue,
            Message::Close(_) => return,
        };
        if rate.window_start.elapsed() >= cfg.rate_window {
            rate = RateLimit { window_start: Instant::now(), count: 0 };
        }
        rate.count += 1;
        let reply = if rate.count > cfg.rate_limit {
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
                Ok(t) => handle(&t, &state, &mut actor, &mut subscribed).await,
                Err(e) => Err(e),
            }
        };
        let controls = reply.unwrap_or_else(|e| vec![Control::Send(error_frame(&e))]);
        for control in controls {
            if tx.send(control).await.is_err() {
                return;
            }
        }
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
            if !subscribed.contains(&channel) && subscribed.len() >= state.config.max_subscriptions {
                return Err(AppError::ResourceExhausted(format!(
                    "at most {} subscriptions per connection",
                    state.config.max_subscriptions
                )));
            }
            subscribed.insert(channel.clone());
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
            *actor = fresh.clone();
            Ok(vec![Control::Refreshed(fresh)])
        }
        ClientFrame::Execute { agent_id, input, task_id } => {
            let input = match input {
                Value::String(s) => json!({ "prompt": s }),
                other => other,
            };
            let e = app.execute(actor, &required("agent_id", agent_id)?, input, task_id).await?;
            let channel = Channel::Execution(e.id.clone());
            subscribed.insert(channel.clone());
            let accepted = json!({ "type": "execute_accepted", "execution_id": e.id, "status": e.status });
            // From seq 0: the replay brings execution_created and anything since.
            Ok(vec![Control::Send(accepted.to_string()), Control::Subscribe { channel, after: Some(0) }])
        }
        ClientFrame::Cancel { execution_id, reason } => {
            let e = app.cancel_execution(actor, &required("execution_id", execution_id)?, reason).await?;
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

async fn send(sink: &mut Sink, msg: Message) -> bool {
    matches!(tokio::time::timeout(WRITE_TIMEOUT, sink.send(msg)).await, Ok(Ok(())))
}

fn expiry(actor: &Actor) -> Instant {
    let left = actor.expires_at.saturating_sub(chrono::Utc::now().timestamp()).max(0) as u64;
    Instant::now() + Duration::from_secs(left.min(100 * 365 * 24 * 3600))
}

async fn write(
    mut sink: Sink,
    state: Arc<WsState>,
    actor: Actor,
    mut sub: Subscription,
    mut rx: mpsc::Receiver<Control>,
) {
    let mut expires = expiry(&actor);
    let mut ping = tokio::time::interval(state.config.ping_interval);
    ping.tick().await;
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            control = rx.recv() => {
                let Some(control) = control else { return };
                let ok = match control {
                    Control::Send(text) => send(&mut sink, Message::Text(text.into())).await,
                    Control::Subscribe { channel, after } => subscribe(&mut sink, &mut sub, channel, after).await,
                    Control::Unsubscribe(channel) => {
                        sub.remove(&channel);
                        let reply = json!({ "type": "unsubscribed", "channel": channel.to_string() });
                        send(&mut sink, Message::Text(reply.to_string().into())).await
                    }
                    Control::Refreshed(fresh) => {
                        expires = expiry(&fresh);
                        let reply = json!({ "type": "token_refreshed", "expires_at": fresh.expires_at });
                        send(&mut sink, Message::Text(reply.to_string().into())).await
                    }
                    Control::Pong => {
                        awaiting_pong = false;
                        true
                    }
                };
                if !ok {
                    return;
                }
            }
            batch = sub.next_batch() => match batch {
                Ok(batch) => {
                    let n = batch.len();
                    for d in batch {
                        let frame = Message::Text(event_frame(&d));
                        if tokio::time::timeout(WRITE_TIMEOUT, sink.feed(frame)).await.is_err() {
                            return close_with(&mut sink, close::SLOW_CONSUMER, "too slow: resume from your last seq").await;
                        }
                    }
                    if tokio::time::timeout(WRITE_TIMEOUT, sink.flush()).await.map_or(true, |r| r.is_err()) {
                        return;
                    }
                    state.count_sent(n);
                }
                Err(End::Closed(CloseReason::Shutdown)) => {
                    return close_with(&mut sink, close::SERVICE_RESTART, "herald is restarting").await;
                }
                Err(End::Closed(CloseReason::Overflow)) => {
                    return close_with(&mut sink, close::SLOW_CONSUMER, "too slow: resume from your last seq").await;
                }
                Err(End::Failed(e)) => {
                    let _ = send(&mut sink, Message::Text(error_frame(&e).into())).await;
                    return close_with(&mut sink, 1011, "internal error").await;
                }
            },
            _ = ping.tick() => {
                if awaiting_pong {
                    return close_with(&mut sink, close::PING_TIMEOUT, "no pong").await;
                }
                awaiting_pong = true;
                if !send(&mut sink, Message::Ping(Default::default())).await {
                    return;
                }
            }
            _ = sleep_until(expires) => {
                return close_with(&mut sink, close::TOKEN_EXPIRED, "token expired").await;
            }
        }
    }
}

async fn subscribe(sink: &mut Sink, sub: &mut Subscription, channel: Channel, after: Option<u64>) -> bool {
    let name = channel.to_string();
    let mut reply = json!({ "type": "subscribed", "channel": name });
    if let Some(a) = after {
        reply["after_seq"] = a.into();
    }
    let snapshot = match (&channel, after) {
        (Channel::Task(id), None) => match sub.add_task_snapshot(id).await {
            Ok(task) => Some(snapshot_frame(&name, &task)),
            Err(e) => return send(sink, Message::Text(error_frame(&e).into())).await,
        },
        _ => {
            sub.add(vec![channel], after);
            if after.is_none() {
                // Live from here: a client that drops before any event of
                // this channel resumes exactly with this as its cursor.
                match sub.current_seq().await {
                    Ok(seq) => reply["seq"] = seq.into(),
                    Err(e) => e.log_if_internal(),
                }
            }
            None
        }
    };
    if !send(sink, Message::Text(reply.to_string().into())).await {
        return false;
    }
    match snapshot {
        Some(s) => send(sink, Message::Text(s.into())).await,
        None => true,
    }
}

//! The per-task sockets that hand-built progress servers offered, kept working
//! on Herald's event stream, so their clients connect unchanged:
//! - `/ws/tasks/{id}`, the task-status socket: first `connection_established` with
//!   `event_type`, `task_id`, `client_id`; then `{event_type, task_id, seq,
//!   timestamp, data}` frames. `task_progress` becomes `progress_update`.
//! - `/ws/agent-progress/{id}`, the agent-progress socket: flat `{step, tool, message,
//!   percent, timestamp, error}` frames, `{"heartbeat": true}` every 15 s,
//!   closed after `completed`/`failed`, and after 60 s without an event.
//!
//! Both start with the task's current state (agent-progress clients used to miss
//! what happened before they connected) and accept `?after_seq=` to resume.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::{Instant, interval_at, sleep_until};

use super::protocol::close;
use super::{RateLimit, Slot, WRITE_TIMEOUT, WsState, answer_close, close_with, refuse_input};
use crate::encode::{data, timestamp};

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;
use crate::app::{End, Subscription};
use crate::domain::{Channel, Event, EventPayload, Task, TaskStatus};
use crate::hub::CloseReason;

#[derive(Debug, Clone, Copy)]
pub enum Style {
    TaskEvents,
    AgentProgress,
}

#[allow(clippy::too_many_arguments)]
pub async fn run(
    socket: WebSocket,
    state: Arc<WsState>,
    mut sub: Subscription,
    task: Task,
    after: Option<u64>,
    expires: Instant,
    style: Style,
    _slot: Slot,
) {
    let (mut sink, mut stream) = socket.split();
    let mut first = vec![opening(style, &task)];
    let resuming = after.is_some_and(|a| a < task.last_seq);
    if let (Some(a), true) = (after, resuming) {
        sub.add(vec![Channel::Task(task.id.clone())], Some(a));
    } else if task.status.is_terminal() || matches!(style, Style::AgentProgress) {
        first.push(current_state(style, &task));
    }
    for frame in first {
        if !send(&mut sink, frame.to_string()).await {
            return;
        }
    }
    if task.status.is_terminal() && !resuming {
        return finish(&mut sink).await;
    }
    let cfg = &state.config;
    let mut heartbeat = interval_at(Instant::now() + cfg.heartbeat_interval, cfg.heartbeat_interval);
    let mut idle_deadline = Instant::now() + cfg.idle_timeout;
    let mut rate = RateLimit::new();
    loop {
        tokio::select! {
            batch = sub.next_batch() => match batch {
                Ok(batch) => {
                    idle_deadline = Instant::now() + cfg.idle_timeout;
                    let mut done = false;
                    for d in &batch {
                        done |= d.event.payload.is_terminal();
                        let frame = frame(style, &d.event);
                        if !send(&mut sink, frame.to_string()).await {
                            return;
                        }
                    }
                    state.count_sent(batch.len());
                    if done {
                        return finish(&mut sink).await;
                    }
                }
                Err(End::Closed(CloseReason::Shutdown)) => return close_with(&mut sink, close::SERVICE_RESTART, "herald is restarting").await,
                Err(End::Closed(CloseReason::Overflow)) => return close_with(&mut sink, close::SLOW_CONSUMER, "too slow").await,
                Err(End::Failed(e)) => {
                    e.log_if_internal();
                    return close_with(&mut sink, close::INTERNAL_ERROR, "internal error").await;
                }
                // Retention pruned events after the client's after_seq: these
                // routes have no cursor_expired frame, so the client gets the
                // task's current state (as without after_seq) and live events.
                Err(End::Expired { .. }) => match sub.add_task_snapshot(&task.id).await {
                    Ok(now) => {
                        if !send(&mut sink, current_state(style, &now).to_string()).await {
                            return;
                        }
                        if now.status.is_terminal() {
                            return finish(&mut sink).await;
                        }
                    }
                    Err(e) => {
                        e.log_if_internal();
                        return close_with(&mut sink, close::INTERNAL_ERROR, "internal error").await;
                    }
                },
            },
            msg = stream.next() => match msg {
                // Every inbound message, pings included, spends the rate budget;
                // these routes have no error frame, so past it they close.
                Some(Ok(Message::Text(_) | Message::Binary(_) | Message::Ping(_))) if !rate.allow(cfg) => {
                    return close_with(&mut sink, close::POLICY, "rate limit exceeded").await;
                }
                Some(Ok(Message::Text(t))) if is_ping(&t) => {
                    let reply = json!({ "event_type": "heartbeat", "task_id": task.id, "timestamp": now() });
                    if !send(&mut sink, reply.to_string()).await {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) => return answer_close(&mut sink).await,
                Some(Err(e)) => return refuse_input(&mut sink, &e).await,
                None => return,
                Some(Ok(_)) => {}
            },
            _ = heartbeat.tick() => {
                let beat = match style {
                    Style::AgentProgress => json!({ "heartbeat": true, "timestamp": now() }),
                    Style::TaskEvents => json!({ "event_type": "heartbeat", "task_id": task.id, "timestamp": now() }),
                };
                if !send(&mut sink, beat.to_string()).await {
                    return;
                }
            }
            _ = sleep_until(expires) => {
                return close_with(&mut sink, close::TOKEN_EXPIRED, "token expired").await;
            }
            _ = sleep_until(idle_deadline), if matches!(style, Style::AgentProgress) => {
                return close_with(&mut sink, close::IDLE_TIMEOUT, "no progress for the idle timeout").await;
            }
        }
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn is_ping(text: &str) -> bool {
    let v: Value = serde_json::from_str(text).unwrap_or_default();
    matches!(v.get("type").and_then(Value::as_str), Some("ping" | "heartbeat"))
}

fn opening(style: Style, task: &Task) -> Value {
    match style {
        Style::TaskEvents => json!({
            "event_type": "connection_established",
            "task_id": task.id,
            "client_id": format!("client_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            "timestamp": now(),
            "data": { "status": task.status, "progress": task.progress, "seq": task.last_seq },
        }),
        Style::AgentProgress => json!({ "connected": true, "task_id": task.id, "timestamp": now() }),
    }
}

/// The task as it stands, in the route's own frame shape.
fn current_state(style: Style, task: &Task) -> Value {
    let (step, message, error) = match task.status {
        TaskStatus::Completed => ("completed".to_string(), task.result.clone(), false),
        TaskStatus::Failed => ("failed".to_string(), task.error.clone(), true),
        TaskStatus::Cancelled => ("failed".to_string(), "cancelled".to_string(), true),
        _ => (task.step.clone(), task.message.clone(), false),
    };
    match style {
        Style::AgentProgress => json!({
            "step": step, "tool": task.tool, "message": message, "percent": task.progress,
            "timestamp": task.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), "error": error,
        }),
        Style::TaskEvents => json!({
            "event_type": "task_snapshot", "task_id": task.id, "seq": task.last_seq, "timestamp": now(), "data": task,
        }),
    }
}

fn frame(style: Style, e: &Event) -> Value {
    match style {
        Style::TaskEvents => {
            let event_type = match &e.payload {
                EventPayload::TaskProgress(p) if p.status == TaskStatus::Completed => "task_completed",
                EventPayload::TaskProgress(_) => "progress_update",
                other => other.type_name(),
            };
            json!({
                "event_type": event_type,
                "task_id": e.payload.resource().to_string().trim_start_matches("task:"),
                "seq": e.seq,
                "timestamp": timestamp(e),
                "data": data(&e.payload),
            })
        }
        Style::AgentProgress => {
            let (step, tool, message, percent, error) = match &e.payload {
                EventPayload::TaskProgress(p) => {
                    let step =
                        if p.status == TaskStatus::Completed { "completed".into() } else { p.step.clone() };
                    (step, p.tool.clone(), p.message.clone(), p.progress, p.error)
                }
                EventPayload::TaskCompleted(f) => {
                    ("completed".into(), String::new(), f.detail.clone(), 100, false)
                }
                EventPayload::TaskFailed(f) => {
                    ("failed".into(), String::new(), f.detail.clone(), f.progress, true)
                }
                EventPayload::TaskCancelled(f) => {
                    ("failed".into(), String::new(), format!("cancelled: {}", f.detail), f.progress, true)
                }
                EventPayload::TaskCreated(_)
                | EventPayload::AgentUpdate(_)
                | EventPayload::Execution(_)
                | EventPayload::Approval(_) => (String::new(), String::new(), String::new(), 0, false),
            };
            json!({ "step": step, "tool": tool, "message": message, "percent": percent, "timestamp": timestamp(e), "error": error, "seq": e.seq })
        }
    }
}

/// Sends one text frame within [`WRITE_TIMEOUT`] (as `/ws` does): a client
/// that stops reading is dropped instead of holding the task and its slot.
async fn send(sink: &mut Sink, text: String) -> bool {
    matches!(tokio::time::timeout(WRITE_TIMEOUT, sink.send(Message::Text(text.into()))).await, Ok(Ok(())))
}

async fn finish(sink: &mut Sink) {
    close_with(sink, close::NORMAL, "task finished").await;
}

//! AG-UI: `POST /api/v1/agui/{agent_id}` takes AG-UI's `RunAgentInput`, starts
//! an execution of the agent and answers its events as AG-UI events over SSE
//! (encoded as `@ag-ui/encoder` does, plus `id:`); `GET
//! /api/v1/agui/runs/{run_id}` streams the same run again, from its start or
//! after `Last-Event-ID`, then live. The stream ends after `RUN_FINISHED` or
//! `RUN_ERROR`. [`Translator`] is the mapping (README has it as a table).
//!
//! Ids: one execution event can become several AG-UI events; the last one
//! carries `id: <seq>`, the ones before it `id: <seq>;<n>` (the n-th of that
//! seq), so a rejoin resumes exactly where the client was. The translator is
//! stateful (an open text message, open steps), so a rejoin always replays
//! the execution's log from its start and only sends what follows the cursor.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::time::sleep_until;
use tokio_stream::wrappers::ReceiverStream;

use crate::app::{End, Subscription};
use crate::domain::{Actor, AppError, AppResult, Channel, Event};
use crate::sse::KEEP_ALIVE;
use crate::ws::{Slot, WRITE_TIMEOUT, WsState, take_slot, token_deadline};

type Item = Result<SseEvent, Infallible>;

pub fn routes(state: Arc<WsState>) -> Router {
    Router::new()
        .route("/api/v1/agui/{agent_id}", post(run))
        .route("/api/v1/agui/runs/{run_id}", get(rejoin))
        .with_state(state)
}

/// AG-UI's `RunAgentInput` (camelCase, as `@ag-ui/client` sends it).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunAgentInput {
    thread_id: Option<String>,
    run_id: Option<String>,
    #[serde(default)]
    messages: Vec<Value>,
    #[serde(default)]
    tools: Vec<Value>,
    #[serde(default)]
    context: Vec<Value>,
    #[serde(default)]
    state: Value,
    #[serde(default)]
    forwarded_props: Value,
}

/// Where a stream resumes: after every AG-UI event of `seq`, or after the
/// first `n + 1` of them.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Cursor {
    seq: u64,
    within: Option<usize>,
}

impl Cursor {
    fn parse(s: &str) -> AppResult<Self> {
        let bad = || AppError::invalid(format!("invalid Last-Event-ID '{s}': expected <seq> or <seq>;<n>"));
        let (seq, within) = match s.trim().split_once(';') {
            Some((seq, n)) => (seq, Some(n.parse().map_err(|_| bad())?)),
            None => (s.trim(), None),
        };
        Ok(Self { seq: seq.parse().map_err(|_| bad())?, within })
    }

    /// True when the `i`-th AG-UI event of `seq` was sent before.
    fn covers(&self, seq: u64, i: usize) -> bool {
        match self.within {
            _ if seq < self.seq => true,
            None => seq == self.seq,
            Some(n) => seq == self.seq && i <= n,
        }
    }
}

fn token(headers: &HeaderMap, query: Option<&str>, state: &WsState) -> AppResult<Actor> {
    let from_query = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, v)| k == "token" && !v.is_empty())
        .map(|(_, v)| v.into_owned());
    match from_query {
        Some(t) => state.verifier.verify(&t),
        None => {
            let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            state.verifier.verify_bearer(auth)
        }
    }
}

async fn run(
    State(state): State<Arc<WsState>>,
    Path(agent_id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let started = async {
        let actor = token(&headers, None, &state)?;
        let input: RunAgentInput = serde_json::from_slice(&body)
            .map_err(|e| AppError::invalid(format!("invalid RunAgentInput: {e}")))?;
        let thread_id = input.thread_id.ok_or_else(|| AppError::invalid("missing field 'threadId'"))?;
        let run_id = input.run_id.ok_or_else(|| AppError::invalid("missing field 'runId'"))?;
        let exec_input = json!({
            "threadId": thread_id, "runId": run_id, "messages": input.messages, "state": input.state,
            "tools": input.tools, "context": input.context, "forwardedProps": input.forwarded_props,
        });
        let slot = take_slot(&state, "/api/v1/agui/{agent_id}")?;
        let e = state.app.start_agui_run(&actor, &agent_id, &run_id, &thread_id, exec_input).await?;
        open(&state, actor, slot, e.id, thread_id, run_id, None)
    };
    started.await.unwrap_or_else(IntoResponse::into_response)
}

async fn rejoin(
    State(state): State<Arc<WsState>>,
    Path(run_id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let joined = async {
        let actor = token(&headers, q.as_deref(), &state)?;
        let cursor = match headers.get("last-event-id").map(|v| v.to_str()) {
            Some(Ok(s)) if !s.trim().is_empty() => Some(Cursor::parse(s)?),
            Some(Err(_)) => return Err(AppError::invalid("Last-Event-ID is not text")),
            _ => None,
        };
        let run = state.app.agui_run(&actor, &run_id).await?;
        let slot = take_slot(&state, "/api/v1/agui/runs/{run_id}")?;
        open(&state, actor, slot, run.execution_id, run.thread_id, run_id, cursor)
    };
    joined.await.unwrap_or_else(IntoResponse::into_response)
}

fn open(
    state: &Arc<WsState>,
    actor: Actor,
    slot: Slot,
    execution_id: String,
    thread_id: String,
    run_id: String,
    cursor: Option<Cursor>,
) -> AppResult<Response> {
    let mut sub = state.app.subscription(&actor)?;
    // From the start: the translation of an event depends on the ones before.
    sub.add(vec![Channel::Execution(execution_id)], Some(0));
    let (tx, rx) = mpsc::channel::<Item>(64);
    let pump = Pump { sub, translator: Translator::new(thread_id, run_id), cursor, tx, _slot: slot };
    tokio::spawn(pump.run(token_deadline(&actor)));
    let sse = Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE));
    Ok(([(header::CACHE_CONTROL, "no-cache")], sse).into_response())
}

struct Pump {
    sub: Subscription,
    translator: Translator,
    cursor: Option<Cursor>,
    tx: mpsc::Sender<Item>,
    _slot: Slot,
}

impl Pump {
    /// Ends after `RUN_FINISHED` / `RUN_ERROR`, when the client leaves, when
    /// the token expires, or when Herald stops (the client rejoins).
    async fn run(mut self, expires: tokio::time::Instant) {
        loop {
            let batch = tokio::select! {
                b = self.sub.next_batch() => b,
                _ = sleep_until(expires) => return,
                _ = self.tx.closed() => return,
            };
            let batch = match batch {
                Ok(b) => b,
                Err(End::Failed(e)) => return e.log_if_internal(),
                Err(End::Closed(_)) => return,
            };
            for d in batch {
                let seq = d.event.seq;
                let out = self.translator.push(&d.event);
                let n = out.len();
                for (i, event) in out.into_iter().enumerate() {
                    if self.cursor.is_some_and(|c| c.covers(seq, i)) {
                        continue;
                    }
                    let id = if i + 1 == n { seq.to_string() } else { format!("{seq};{i}") };
                    let sse = SseEvent::default().id(id).data(event.to_string());
                    if !matches!(self.tx.send_timeout(Ok(sse), WRITE_TIMEOUT).await, Ok(())) {
                        return;
                    }
                }
                if self.translator.done {
                    return;
                }
            }
        }
    }
}

/// Herald's execution events → AG-UI events. Stateful: it knows which text
/// message, reasoning message and steps are open, and closes them where
/// AG-UI's verifier wants them closed. Ids are derived from seqs, so the same
/// log always gives the same events.
pub struct Translator {
    thread_id: String,
    run_id: String,
    started: bool,
    text: Option<String>,
    reasoning: Option<String>,
    steps: Vec<String>,
    pub done: bool,
}

/// The AG-UI event `kind` with `fields`; `timestamp` in milliseconds.
fn ev(kind: &str, ts: i64, fields: Value) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), kind.into());
    m.insert("timestamp".into(), ts.into());
    if let Value::Object(f) = fields {
        m.extend(f.into_iter().filter(|(_, v)| !v.is_null()));
    }
    Value::Object(m)
}

/// A string as is; anything else as its JSON text.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

impl Translator {
    pub fn new(thread_id: String, run_id: String) -> Self {
        Self {
            thread_id,
            run_id,
            started: false,
            text: None,
            reasoning: None,
            steps: Vec::new(),
            done: false,
        }
    }

    fn start(&mut self, ts: i64, out: &mut Vec<Value>) {
        if !self.started {
            self.started = true;
            out.push(ev("RUN_STARTED", ts, json!({ "threadId": self.thread_id, "runId": self.run_id })));
        }
    }

    fn close_text(&mut self, ts: i64, out: &mut Vec<Value>) {
        if let Some(id) = self.text.take() {
            out.push(ev("TEXT_MESSAGE_END", ts, json!({ "messageId": id })));
        }
    }

    fn close_reasoning(&mut self, ts: i64, out: &mut Vec<Value>) {
        if let Some(id) = self.reasoning.take() {
            out.push(ev("REASONING_MESSAGE_END", ts, json!({ "messageId": id })));
            out.push(ev("REASONING_END", ts, json!({ "messageId": id })));
        }
    }

    fn close_all(&mut self, ts: i64, out: &mut Vec<Value>) {
        self.close_text(ts, out);
        self.close_reasoning(ts, out);
        while let Some(step) = self.steps.pop() {
            out.push(ev("STEP_FINISHED", ts, json!({ "stepName": step })));
        }
    }

    /// The AG-UI events of one stored event of the execution.
    pub fn push(&mut self, event: &Event) -> Vec<Value> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        let (seq, ts) = (event.seq, event.timestamp.timestamp_millis());
        let kind = event.payload.type_name().to_string();
        let d = crate::encode::data(&event.payload);
        match kind.as_str() {
            "execution_created" | "cancel_requested" => {}
            "execution_started" => self.start(ts, &mut out),
            "thinking" => {
                self.start(ts, &mut out);
                self.close_text(ts, &mut out);
                let id = match &self.reasoning {
                    Some(id) => id.clone(),
                    None => {
                        let id = format!("reasoning-{seq}");
                        out.push(ev("REASONING_START", ts, json!({ "messageId": id })));
                        out.push(ev(
                            "REASONING_MESSAGE_START",
                            ts,
                            json!({ "messageId": id, "role": "reasoning" }),
                        ));
                        self.reasoning = Some(id.clone());
                        id
                    }
                };
                let delta = text_of(&d["text"]);
                if !delta.is_empty() {
                    out.push(ev("REASONING_MESSAGE_CONTENT", ts, json!({ "messageId": id, "delta": delta })));
                }
            }
            "message_delta" => {
                self.start(ts, &mut out);
                self.close_reasoning(ts, &mut out);
                let id = match &self.text {
                    Some(id) => id.clone(),
                    None => {
                        let id = format!("msg-{seq}");
                        out.push(ev(
                            "TEXT_MESSAGE_START",
                            ts,
                            json!({ "messageId": id, "role": "assistant" }),
                        ));
                        self.text = Some(id.clone());
                        id
                    }
                };
                let delta = text_of(&d["text"]);
                if !delta.is_empty() {
                    out.push(ev("TEXT_MESSAGE_CONTENT", ts, json!({ "messageId": id, "delta": delta })));
                }
            }
            "tool_call" => {
                self.start(ts, &mut out);
                self.close_text(ts, &mut out);
                self.close_reasoning(ts, &mut out);
                let id = text_of(&d["tool_call_id"]);
                out.push(ev(
                    "TOOL_CALL_START",
                    ts,
                    json!({ "toolCallId": id, "toolCallName": text_of(&d["tool"]) }),
                ));
                let args = text_of(&d["arguments"]);
                if !args.is_empty() {
                    out.push(ev("TOOL_CALL_ARGS", ts, json!({ "toolCallId": id, "delta": args })));
                }
                out.push(ev("TOOL_CALL_END", ts, json!({ "toolCallId": id })));
            }
            "tool_result" => {
                self.start(ts, &mut out);
                self.close_text(ts, &mut out);
                self.close_reasoning(ts, &mut out);
                out.push(ev(
                    "TOOL_CALL_RESULT",
                    ts,
                    json!({ "messageId": format!("result-{seq}"), "toolCallId": text_of(&d["tool_call_id"]),
                            "content": text_of(&d["result"]), "role": "tool" }),
                ));
            }
            "subagent_start" => {
                self.start(ts, &mut out);
                self.close_text(ts, &mut out);
                self.close_reasoning(ts, &mut out);
                let name = text_of(&d["name"]);
                out.push(ev("STEP_STARTED", ts, json!({ "stepName": name })));
                self.steps.push(name);
            }
            "subagent_end" => {
                self.start(ts, &mut out);
                self.close_text(ts, &mut out);
                self.close_reasoning(ts, &mut out);
                let name = text_of(&d["name"]);
                if let Some(i) = self.steps.iter().rposition(|s| *s == name) {
                    self.steps.remove(i);
                    out.push(ev("STEP_FINISHED", ts, json!({ "stepName": name })));
                }
            }
            "approval_required" => {
                self.start(ts, &mut out);
                self.close_text(ts, &mut out);
                self.close_reasoning(ts, &mut out);
                let value = json!({
                    "approval_id": d["approval_id"], "tool_call_id": d["tool_call_id"], "action": d["action"],
                    "arguments": d["arguments"], "allowed_decisions": d["allowed_decisions"],
                    "deadline": d["deadline"], "deadline_decision": d["deadline_decision"],
                });
                out.push(ev("CUSTOM", ts, json!({ "name": "herald.approval_required", "value": value })));
            }
            "approved" | "rejected" | "edited" | "responded" => {
                self.start(ts, &mut out);
                let value = json!({
                    "approval_id": d["approval_id"], "tool_call_id": d["tool_call_id"], "action": d["action"],
                    "decision": d["decision"], "arguments": d["arguments"], "message": d["message"],
                    "decided_by": d["decided_by"], "decided_at": d["decided_at"],
                });
                out.push(ev("CUSTOM", ts, json!({ "name": "herald.approval_decided", "value": value })));
            }
            "executor_detached" | "executor_reattached" => {
                self.start(ts, &mut out);
                let name = format!("herald.{kind}");
                out.push(ev("CUSTOM", ts, json!({ "name": name, "value": { "status": d["status"] } })));
            }
            "complete" => {
                self.start(ts, &mut out);
                self.close_all(ts, &mut out);
                let result = json!({ "threadId": self.thread_id, "runId": self.run_id, "result": text_of(&d["output"]) });
                out.push(ev("RUN_FINISHED", ts, result));
                self.done = true;
            }
            "error" | "cancelled" => {
                self.start(ts, &mut out);
                self.close_text(ts, &mut out);
                self.close_reasoning(ts, &mut out);
                let (code, message) = match kind.as_str() {
                    "cancelled" => ("cancelled", format!("cancelled: {}", text_of(&d["detail"]))),
                    _ if d["by"] == "herald" => ("executor_lost", text_of(&d["message"])),
                    _ => ("agent_error", text_of(&d["message"])),
                };
                out.push(ev("RUN_ERROR", ts, json!({ "message": message, "code": code })));
                self.done = true;
            }
            _ => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::ExecutionEvent;
    use crate::domain::{EventPayload, ExecutionStatus};

    fn exec(seq: u64, kind: &str, data: Value) -> Event {
        Event {
            seq,
            tenant: "t".into(),
            timestamp: chrono::Utc::now(),
            actor: "a".into(),
            payload: EventPayload::Execution(ExecutionEvent {
                execution_id: "e".into(),
                kind: kind.into(),
                status: ExecutionStatus::Running,
                data,
            }),
        }
    }

    fn types(out: &[Value]) -> Vec<&str> {
        out.iter().map(|e| e["type"].as_str().unwrap()).collect()
    }

    #[test]
    fn a_run_maps_to_balanced_ag_ui_events_with_stable_ids() {
        let mut t = Translator::new("th".into(), "r".into());
        assert!(t.push(&exec(1, "execution_created", json!({}))).is_empty());
        assert_eq!(types(&t.push(&exec(2, "execution_started", json!({})))), ["RUN_STARTED"]);
        let m = t.push(&exec(3, "message_delta", json!({ "text": "Hel" })));
        assert_eq!(types(&m), ["TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT"]);
        let m2 = t.push(&exec(4, "message_delta", json!({ "text": "lo" })));
        assert_eq!(types(&m2), ["TEXT_MESSAGE_CONTENT"]);
        assert_eq!(m[0]["messageId"], m2[0]["messageId"]);
        let call =
            t.push(&exec(5, "tool_call", json!({ "tool_call_id": "c", "tool": "x", "arguments": {"a": 1} })));
        assert_eq!(types(&call), ["TEXT_MESSAGE_END", "TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END"]);
        assert_eq!(call[2]["delta"], r#"{"a":1}"#);
        let step = t.push(&exec(6, "subagent_start", json!({ "name": "s", "detail": "" })));
        assert_eq!(types(&step), ["STEP_STARTED"]);
        let think = t.push(&exec(7, "thinking", json!({ "text": "hmm" })));
        assert_eq!(
            types(&think),
            ["REASONING_START", "REASONING_MESSAGE_START", "REASONING_MESSAGE_CONTENT"]
        );
        let done = t.push(&exec(8, "complete", json!({ "output": "ok" })));
        assert_eq!(types(&done), ["REASONING_MESSAGE_END", "REASONING_END", "STEP_FINISHED", "RUN_FINISHED"]);
        assert_eq!((done[3]["result"].as_str(), done[3]["runId"].as_str()), (Some("ok"), Some("r")));
        assert!(t.done && t.push(&exec(9, "message_delta", json!({ "text": "late" }))).is_empty());
    }

    #[test]
    fn a_failure_before_any_executor_still_starts_the_run() {
        let mut t = Translator::new("th".into(), "r".into());
        let out = t.push(&exec(2, "cancelled", json!({ "detail": "no" })));
        assert_eq!(types(&out), ["RUN_STARTED", "RUN_ERROR"]);
        assert_eq!(out[1]["code"], "cancelled");
    }

    #[test]
    fn cursors_cover_what_was_sent() {
        let c = Cursor::parse("7;1").unwrap();
        assert!(c.covers(6, 5) && c.covers(7, 0) && c.covers(7, 1) && !c.covers(7, 2) && !c.covers(8, 0));
        let c = Cursor::parse("7").unwrap();
        assert!(c.covers(7, 9) && !c.covers(8, 0));
        assert!(Cursor::parse("x").is_err() && Cursor::parse("7;x").is_err());
    }
}

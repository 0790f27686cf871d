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

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::time::sleep_until;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::{End, Subscription};
use crate::domain::event::{
    ApprovalEvent, ApprovalKind, Cancelled, ErrorSource, ExecutionEvent, ExecutionKind,
};
use crate::domain::{Actor, AppError, AppResult, Channel, Event, EventPayload};
use crate::http::openapi::Errors;
use crate::sse::KEEP_ALIVE;
use crate::ws::{Slot, WRITE_TIMEOUT, WsState, take_slot, token_deadline};

type Item = Result<SseEvent, Infallible>;

pub fn routes(state: Arc<WsState>) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(run)).routes(routes!(rejoin)).with_state(state)
}

/// AG-UI's `RunAgentInput` (camelCase, as `@ag-ui/client` sends it).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunAgentInput {
    #[schema(required = true, nullable = false, min_length = 1, max_length = 128)]
    thread_id: Option<String>,
    /// Used once per tenant: the id a rejoin names.
    #[schema(required = true, nullable = false, min_length = 1, max_length = 128)]
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

/// Starts an execution of the agent with the messages and state as its input
/// and streams it as AG-UI events (`data:` JSON as `@ag-ui/encoder` writes
/// it, `id: <seq>`) until `RUN_FINISHED` or `RUN_ERROR`.
#[utoipa::path(
    post,
    path = "/api/v1/agui/{agent_id}",
    tag = "streams",
    params(("agent_id" = String, Path, description = "The agent to run (letters, digits and _ - . :)", min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.:-]+$")),
    request_body = RunAgentInput,
    responses(
        (status = 200, description = "AG-UI events", content_type = "text/event-stream", body = crate::sse::SseFrame),
        Errors,
    ),
    security(("bearer" = [])),
)]
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
        // Room for the stream is taken before the run starts: a node that
        // is full refuses (503) without leaving a run nobody watches.
        let slot = take_slot(&state, "/api/v1/agui/{agent_id}")?;
        let sub = crate::ws::open_subscription(&state.app, &actor)?;
        let e = state.app.start_agui_run(&actor, &agent_id, &run_id, &thread_id, exec_input).await?;
        open(&actor, slot, sub, e.id, thread_id, run_id, None, false)
    };
    started.await.unwrap_or_else(IntoResponse::into_response)
}

/// The same run again, from its start or after `Last-Event-ID`, then live.
#[utoipa::path(
    get,
    path = "/api/v1/agui/runs/{run_id}",
    tag = "streams",
    params(
        ("run_id" = String, Path, description = "The `runId` the run was started with"),
        ("Last-Event-ID" = Option<String>, Header, nullable = false,
         description = "`<seq>` or `<seq>;<n>`, as sent in `id:` (empty: none)",
         pattern = r"^([0-9]{1,18}(;[0-9]{1,9})?)?$"),
    ),
    responses(
        (status = 200, description = "AG-UI events", content_type = "text/event-stream", body = crate::sse::SseFrame),
        Errors,
    ),
    security(("bearer" = []), ("token_query" = [])),
)]
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
        // A run whose creation retention pruned cannot be translated; a
        // quiet run would otherwise wait for an event that may never come.
        let channel = Channel::Execution(run.execution_id.clone());
        let first = state.app.events(&actor, &channel, 0, 1).await?;
        let pruned = first.first().is_none_or(|e| e.payload.type_name() != "execution_created");
        let slot = take_slot(&state, "/api/v1/agui/runs/{run_id}")?;
        let sub = crate::ws::open_subscription(&state.app, &actor)?;
        open(&actor, slot, sub, run.execution_id, run.thread_id, run_id, cursor, pruned)
    };
    joined.await.unwrap_or_else(IntoResponse::into_response)
}

/// Streams the run; with `pruned` (its log's start is gone), only the
/// `RUN_ERROR` that says so.
#[allow(clippy::too_many_arguments)]
fn open(
    actor: &Actor,
    slot: Slot,
    mut sub: Subscription,
    execution_id: String,
    thread_id: String,
    run_id: String,
    cursor: Option<Cursor>,
    pruned: bool,
) -> AppResult<Response> {
    // From the start: the translation of an event depends on the ones before.
    sub.add(vec![Channel::Execution(execution_id)], Some(0));
    let (tx, rx) = mpsc::channel::<Item>(64);
    let translator = Translator::new(thread_id, run_id);
    let mut pump = Pump { sub, translator, from_start: false, cursor, tx, _slot: slot };
    let expires = token_deadline(actor);
    tokio::spawn(async move { if pruned { pump.expired().await } else { pump.run(expires).await } });
    let sse = Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE));
    Ok(([(header::CACHE_CONTROL, "no-cache")], sse).into_response())
}

struct Pump {
    sub: Subscription,
    translator: Translator,
    /// The replay began with the execution's creation (nothing pruned).
    from_start: bool,
    cursor: Option<Cursor>,
    tx: mpsc::Sender<Item>,
    _slot: Slot,
}

impl Pump {
    /// The run's log no longer starts where the translation needs it:
    /// `RUN_ERROR` with code `cursor_expired` (after a `RUN_STARTED` if this
    /// stream has sent nothing yet, as AG-UI wants every run to start), then
    /// the end. The client starts a new run or reads the execution's state.
    async fn expired(&mut self) {
        let ts = chrono::Utc::now().timestamp_millis();
        let mut out = Vec::new();
        if self.cursor.is_none() {
            self.translator.start(ts, &mut out);
        }
        let message = "retention (HERALD_RETENTION) removed the start of this run's events: \
                       it cannot be replayed; read the execution's state instead";
        out.push(ev("RUN_ERROR", ts, json!({ "message": message, "code": "cursor_expired" })));
        for event in out {
            let sse = SseEvent::default().data(event.to_string());
            if !matches!(self.tx.send_timeout(Ok(sse), WRITE_TIMEOUT).await, Ok(())) {
                return;
            }
        }
    }

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
                Err(End::Expired { .. }) => return self.expired().await,
            };
            for d in batch {
                // The translation needs the run's log from its start; retention
                // may have pruned it (before a rejoin, or under a replay).
                if !self.from_start {
                    if d.event.payload.type_name() != "execution_created" {
                        return self.expired().await;
                    }
                    self.from_start = true;
                }
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
        match &event.payload {
            EventPayload::Execution(e) => self.execution(e, seq, ts, &mut out),
            EventPayload::Approval(a) => self.approval(a, ts, &mut out),
            EventPayload::TaskCreated(_)
            | EventPayload::TaskProgress(_)
            | EventPayload::TaskCompleted(_)
            | EventPayload::TaskFailed(_)
            | EventPayload::TaskCancelled(_)
            | EventPayload::AgentUpdate(_) => {}
        }
        out
    }

    fn execution(&mut self, e: &ExecutionEvent, seq: u64, ts: i64, out: &mut Vec<Value>) {
        use ExecutionKind as K;
        match &e.kind {
            K::Created(_) | K::CancelRequested(_) => {}
            K::Started(_) => self.start(ts, out),
            K::Thinking(t) => {
                self.start(ts, out);
                self.close_text(ts, out);
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
                if !t.text.is_empty() {
                    out.push(ev(
                        "REASONING_MESSAGE_CONTENT",
                        ts,
                        json!({ "messageId": id, "delta": t.text }),
                    ));
                }
            }
            K::MessageDelta(t) => {
                self.start(ts, out);
                self.close_reasoning(ts, out);
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
                if !t.text.is_empty() {
                    out.push(ev("TEXT_MESSAGE_CONTENT", ts, json!({ "messageId": id, "delta": t.text })));
                }
            }
            K::ToolCall(call) => {
                self.start(ts, out);
                self.close_text(ts, out);
                self.close_reasoning(ts, out);
                let id = &call.tool_call_id;
                out.push(ev("TOOL_CALL_START", ts, json!({ "toolCallId": id, "toolCallName": call.tool })));
                let args = text_of(&call.arguments);
                if !args.is_empty() {
                    out.push(ev("TOOL_CALL_ARGS", ts, json!({ "toolCallId": id, "delta": args })));
                }
                out.push(ev("TOOL_CALL_END", ts, json!({ "toolCallId": id })));
            }
            K::ToolResult(r) => {
                self.start(ts, out);
                self.close_text(ts, out);
                self.close_reasoning(ts, out);
                out.push(ev(
                    "TOOL_CALL_RESULT",
                    ts,
                    json!({ "messageId": format!("result-{seq}"), "toolCallId": r.tool_call_id,
                            "content": text_of(&r.result), "role": "tool" }),
                ));
            }
            K::SubagentStart(sub) => {
                self.start(ts, out);
                self.close_text(ts, out);
                self.close_reasoning(ts, out);
                out.push(ev("STEP_STARTED", ts, json!({ "stepName": sub.name })));
                self.steps.push(sub.name.clone());
            }
            K::SubagentEnd(sub) => {
                self.start(ts, out);
                self.close_text(ts, out);
                self.close_reasoning(ts, out);
                if let Some(i) = self.steps.iter().rposition(|s| *s == sub.name) {
                    self.steps.remove(i);
                    out.push(ev("STEP_FINISHED", ts, json!({ "stepName": sub.name })));
                }
            }
            K::ExecutorDetached(_) | K::ExecutorReattached(_) => {
                self.start(ts, out);
                let name = format!("herald.{}", e.kind.type_name());
                out.push(ev("CUSTOM", ts, json!({ "name": name, "value": { "status": e.status } })));
            }
            K::Complete(done) => {
                self.start(ts, out);
                self.close_all(ts, out);
                let result =
                    json!({ "threadId": self.thread_id, "runId": self.run_id, "result": done.output });
                out.push(ev("RUN_FINISHED", ts, result));
                self.done = true;
            }
            K::Error(err) => {
                let code = if err.by == Some(ErrorSource::Herald) { "executor_lost" } else { "agent_error" };
                self.fail(code, err.message.clone(), ts, out);
            }
            K::Cancelled(c) => {
                let reason = match c {
                    Cancelled::ByHerald(s) => s.detail.as_deref().unwrap_or_default(),
                    Cancelled::ByExecutor(_) => "",
                };
                self.fail("cancelled", format!("cancelled: {reason}"), ts, out);
            }
        }
    }

    /// Ends the run with `RUN_ERROR`.
    fn fail(&mut self, code: &str, message: String, ts: i64, out: &mut Vec<Value>) {
        self.start(ts, out);
        self.close_text(ts, out);
        self.close_reasoning(ts, out);
        out.push(ev("RUN_ERROR", ts, json!({ "message": message, "code": code })));
        self.done = true;
    }

    fn approval(&mut self, a: &ApprovalEvent, ts: i64, out: &mut Vec<Value>) {
        use ApprovalKind as K;
        match &a.kind {
            K::Required(r) => {
                self.start(ts, out);
                self.close_text(ts, out);
                self.close_reasoning(ts, out);
                let value = json!({
                    "approval_id": a.approval_id, "tool_call_id": r.tool_call_id, "action": r.action,
                    "arguments": r.arguments, "allowed_decisions": r.allowed_decisions,
                    "deadline": r.deadline, "deadline_decision": r.deadline_decision,
                });
                out.push(ev("CUSTOM", ts, json!({ "name": "herald.approval_required", "value": value })));
            }
            K::Approved(d) | K::Rejected(d) | K::Edited(d) | K::Responded(d) => {
                self.start(ts, out);
                let value = json!({
                    "approval_id": a.approval_id, "tool_call_id": d.tool_call_id, "action": d.action,
                    "decision": d.decision, "arguments": d.arguments, "message": d.message,
                    "decided_by": d.decided_by, "decided_at": d.decided_at,
                });
                out.push(ev("CUSTOM", ts, json!({ "name": "herald.approval_decided", "value": value })));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event of a running execution from its stored form; `data` is
    /// completed with a status change's fields (other kinds ignore them).
    fn exec(seq: u64, kind: &str, data: Value) -> Event {
        let mut full = json!({
            "execution_id": "e", "status": "running",
            "agent_id": "a", "task_id": null, "detail": null, "output": null, "error": null,
        });
        full.as_object_mut().unwrap().extend(data.as_object().unwrap().clone());
        Event {
            seq,
            tenant: "t".into(),
            timestamp: chrono::Utc::now(),
            actor: "a".into(),
            payload: crate::encode::payload(kind, full).unwrap(),
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

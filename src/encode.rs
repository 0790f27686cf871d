//! The event's one JSON form. Every surface that shows an event as JSON takes
//! it from here: the WebSocket bridge's frames and the compatibility routes'
//! `data`, the HTTP listings, SSE, the Redis link between nodes, and the
//! `data` column of the event log. gRPC carries the same `data` object as a
//! string (`grpc::convert`).
//!
//! - [`data`] / [`payload`]: a payload to its snake_case `data` object and
//!   back (from its type name and that object: the log's and Redis' form;
//!   [`payload_from_text`] reads the stored text without a `Value`).
//!   An execution's or approval's `data` is one flat object: its ids (and an
//!   execution's `status`) beside the fields of its kind, which
//!   [`execution_data`] / [`approval_data`] give alone (gRPC's `data` text).
//! - [`EventJson`] / [`event_json`]: the envelope
//!   `{"type", "seq", "channel", "timestamp", "actor", "data"}` (its schema in
//!   `/openapi.json` is derived from [`EventJson`]); the bytes are
//!   what the hub caches per delivery ([`crate::hub::Delivery::json`]), so N
//!   subscribers cost one encoding. A replay writes the same bytes around the
//!   stored `data` text ([`event_json_stored`]).

use bytes::Bytes;
use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::domain::event::{
    ApprovalDecided, ApprovalEvent, ApprovalKind, ApprovalRequired, ExecutionEvent, ExecutionKind,
};
use crate::domain::{Event, EventPayload, ExecutionStatus};

/// An event's time as clients see it: RFC 3339, milliseconds, `Z`.
pub fn timestamp(e: &Event) -> String {
    e.timestamp.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One event on one channel, as every JSON surface shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Event)]
pub struct EventJson {
    /// `task_created`, `task_progress`, `task_completed`, `task_failed`,
    /// `task_cancelled`, `agent_update`, or an execution's or approval's event
    /// (`execution_started`, `message_delta`, `tool_call`, `approval_required`,
    /// `approved`, … as proto/ names them).
    #[serde(rename = "type")]
    #[schema(examples("task_progress"))]
    pub event_type: String,
    /// Its place in the tenant's log: the resume cursor.
    pub seq: u64,
    /// The channel it is shown on, e.g. `task:{id}` or `task_updates`.
    pub channel: String,
    /// RFC 3339, milliseconds, `Z`.
    #[schema(format = DateTime)]
    pub timestamp: String,
    /// The token subject that caused it.
    pub actor: String,
    /// The payload, snake_case; its fields depend on `type`.
    #[schema(value_type = Object)]
    pub data: Value,
}

/// The event on `channel`: the same on the socket, over SSE and in HTTP
/// listings.
pub fn event_envelope(e: &Event, channel: &str) -> EventJson {
    EventJson {
        event_type: e.payload.type_name().to_string(),
        seq: e.seq,
        channel: channel.to_string(),
        timestamp: timestamp(e),
        actor: e.actor.clone(),
        data: data(&e.payload),
    }
}

/// [`event_envelope`] serialized: valid UTF-8 JSON text.
pub fn event_json(e: &Event, channel: &str) -> Bytes {
    Bytes::from(serde_json::to_vec(&event_envelope(e, channel)).expect("events always serialize"))
}

/// [`event_json`] written around the event's stored `data` text (the log's
/// column, which [`data`] wrote) instead of its payload: a replay frames
/// thousands of events per page, and building every `data` object again was
/// a third of the server's work catching a subscriber up (S7 in
/// BENCHMARKS.md). The bytes are [`event_json`]'s
/// (`a_stored_event_frames_as_its_payload_does`), keys in `EventJson`'s order.
pub fn event_json_stored(e: &Event, channel: &str, data: &str) -> Bytes {
    fn string(out: &mut Vec<u8>, s: &str) {
        serde_json::to_writer(out, s).expect("strings always serialize");
    }
    let mut out = Vec::with_capacity(104 + channel.len() + e.actor.len() + data.len());
    out.extend_from_slice(b"{\"type\":");
    string(&mut out, e.payload.type_name());
    out.extend_from_slice(b",\"seq\":");
    out.extend_from_slice(itoa::Buffer::new().format(e.seq).as_bytes());
    out.extend_from_slice(b",\"channel\":");
    string(&mut out, channel);
    out.extend_from_slice(b",\"timestamp\":");
    string(&mut out, &timestamp(e));
    out.extend_from_slice(b",\"actor\":");
    string(&mut out, &e.actor);
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data.as_bytes());
    out.push(b'}');
    Bytes::from(out)
}

/// The payload's `data` object, as clients see it and the log stores it.
pub fn data(payload: &EventPayload) -> Value {
    use EventPayload as P;
    let v = match payload {
        P::TaskCreated(p) => serde_json::to_value(p),
        P::TaskProgress(p) => serde_json::to_value(p),
        P::TaskCompleted(p) | P::TaskFailed(p) | P::TaskCancelled(p) => serde_json::to_value(p),
        P::AgentUpdate(p) => serde_json::to_value(p),
        P::Execution(e) => Ok(with_ids(
            execution_data(&e.kind),
            [("execution_id", json!(e.execution_id)), ("status", json!(e.status))],
        )),
        P::Approval(a) => Ok(with_ids(
            approval_data(&a.kind),
            [("approval_id", json!(a.approval_id)), ("execution_id", json!(a.execution_id))],
        )),
    };
    rename_detail(payload, v.expect("payloads always serialize"))
}

/// The fields of what happened to an execution, without its id and status.
pub fn execution_data(kind: &ExecutionKind) -> Value {
    use ExecutionKind as K;
    let v = match kind {
        K::Created(s) | K::Started(s) | K::CancelRequested(s) | K::ExecutorDetached(s) => {
            serde_json::to_value(s)
        }
        K::ExecutorReattached(s) => serde_json::to_value(s),
        K::Thinking(t) | K::MessageDelta(t) => serde_json::to_value(t),
        K::ToolCall(c) => serde_json::to_value(c),
        K::ToolResult(r) => serde_json::to_value(r),
        K::SubagentStart(s) | K::SubagentEnd(s) => serde_json::to_value(s),
        K::Complete(o) => serde_json::to_value(o),
        K::Error(e) => serde_json::to_value(e),
        K::Cancelled(c) => serde_json::to_value(c),
    };
    v.expect("payloads always serialize")
}

/// The fields of what happened to an approval, without its ids.
pub fn approval_data(kind: &ApprovalKind) -> Value {
    use ApprovalKind as K;
    let v = match kind {
        K::Required(r) => serde_json::to_value(r),
        K::Approved(d) | K::Rejected(d) | K::Edited(d) | K::Responded(d) => serde_json::to_value(d),
    };
    v.expect("payloads always serialize")
}

fn with_ids<const N: usize>(mut data: Value, ids: [(&str, Value); N]) -> Value {
    if let Some(obj) = data.as_object_mut() {
        obj.extend(ids.into_iter().map(|(k, v)| (k.to_string(), v)));
    }
    data
}

/// Finished tasks share one payload; its `detail` is named for what it is.
fn rename_detail(payload: &EventPayload, mut data: Value) -> Value {
    let name = match payload {
        EventPayload::TaskCompleted(_) => "result",
        EventPayload::TaskFailed(_) => "error",
        EventPayload::TaskCancelled(_) => "reason",
        _ => return data,
    };
    if let Some(obj) = data.as_object_mut()
        && let Some(detail) = obj.remove("detail")
    {
        obj.insert(name.into(), detail);
    }
    data
}

/// Rebuilds a payload from its type name and `data` object (the log's and
/// the Redis link's form).
pub fn payload(event_type: &str, data: Value) -> Result<EventPayload, serde_json::Error> {
    payload_from(event_type, &data)
}

/// [`payload`] from the `data` object's text, read straight into the
/// payload's types without building a [`Value`] first (a replay reads
/// thousands per page).
pub fn payload_from_text(event_type: &str, data: &str) -> Result<EventPayload, serde_json::Error> {
    payload_from(event_type, data)
}

/// Where a payload's fields are read from: a parsed `data` object or its
/// text. Execution and approval events read theirs twice (the kind's fields,
/// then the ids beside them).
trait Data: Copy {
    fn read<T: serde::de::DeserializeOwned>(self) -> Result<T, serde_json::Error>;
}

impl Data for &Value {
    fn read<T: serde::de::DeserializeOwned>(self) -> Result<T, serde_json::Error> {
        T::deserialize(self)
    }
}

impl Data for &str {
    fn read<T: serde::de::DeserializeOwned>(self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self)
    }
}

fn payload_from(event_type: &str, data: impl Data) -> Result<EventPayload, serde_json::Error> {
    use EventPayload as P;
    Ok(match event_type {
        "task_created" => P::TaskCreated(data.read()?),
        "task_progress" => P::TaskProgress(data.read()?),
        "task_completed" => P::TaskCompleted(data.read()?),
        "task_failed" => P::TaskFailed(data.read()?),
        "task_cancelled" => P::TaskCancelled(data.read()?),
        "agent_update" => P::AgentUpdate(data.read()?),
        other => {
            if let Some(e) = execution(other, data)? {
                P::Execution(e)
            } else if let Some(a) = approval(other, data)? {
                P::Approval(a)
            } else {
                return Err(serde::de::Error::custom(format!("unknown event type '{other}'")));
            }
        }
    })
}

/// The ids every execution event's `data` carries beside its kind's fields.
#[derive(Deserialize)]
struct ExecutionIds {
    execution_id: String,
    status: ExecutionStatus,
}

/// An execution event from its type name and `data`; `None` if the type is
/// not an execution's.
fn execution(event_type: &str, data: impl Data) -> Result<Option<ExecutionEvent>, serde_json::Error> {
    use ExecutionKind as K;
    fn from<T: serde::de::DeserializeOwned>(data: impl Data) -> Result<T, serde_json::Error> {
        data.read()
    }
    let kind = match event_type {
        "execution_created" => K::Created(from(data)?),
        "execution_started" => K::Started(from(data)?),
        "thinking" => K::Thinking(from(data)?),
        "tool_call" => K::ToolCall(from(data)?),
        "tool_result" => K::ToolResult(from(data)?),
        "message_delta" => K::MessageDelta(from(data)?),
        "subagent_start" => K::SubagentStart(from(data)?),
        "subagent_end" => K::SubagentEnd(from(data)?),
        "complete" => K::Complete(from(data)?),
        "error" => K::Error(from(data)?),
        "cancel_requested" => K::CancelRequested(from(data)?),
        "cancelled" => K::Cancelled(from(data)?),
        "executor_detached" => K::ExecutorDetached(from(data)?),
        "executor_reattached" => K::ExecutorReattached(from(data)?),
        _ => return Ok(None),
    };
    let ids: ExecutionIds = from(data)?;
    Ok(Some(ExecutionEvent { execution_id: ids.execution_id, status: ids.status, kind }))
}

#[derive(Deserialize)]
struct ApprovalIds {
    approval_id: String,
    execution_id: String,
}

/// An approval event from its type name and `data`; `None` if the type is
/// not an approval's.
fn approval(event_type: &str, data: impl Data) -> Result<Option<ApprovalEvent>, serde_json::Error> {
    use ApprovalKind as K;
    fn from(data: impl Data) -> Result<ApprovalDecided, serde_json::Error> {
        data.read()
    }
    let kind = match event_type {
        "approval_required" => K::Required(data.read::<ApprovalRequired>()?),
        "approved" => K::Approved(from(data)?),
        "rejected" => K::Rejected(from(data)?),
        "edited" => K::Edited(from(data)?),
        "responded" => K::Responded(from(data)?),
        _ => return Ok(None),
    };
    let ids: ApprovalIds = data.read()?;
    Ok(Some(ApprovalEvent { approval_id: ids.approval_id, execution_id: ids.execution_id, kind }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TaskStatus;
    use crate::domain::event::TaskFinished;
    use serde_json::json;

    #[test]
    fn data_round_trips_through_its_stored_form() {
        let p = EventPayload::TaskFailed(TaskFinished {
            task_id: "t".into(),
            status: TaskStatus::Failed,
            progress: 40,
            detail: "boom".into(),
        });
        let data = data(&p);
        assert_eq!(data["error"], "boom");
        assert_eq!(data["status"], "failed");
        assert_eq!(payload("task_failed", data).unwrap(), p);
    }

    #[test]
    fn the_envelope_is_the_bridge_frame() {
        let p = EventPayload::TaskFailed(TaskFinished {
            task_id: "t".into(),
            status: TaskStatus::Failed,
            progress: 40,
            detail: "boom".into(),
        });
        let at = chrono::DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        let e = Event { seq: 7, tenant: "x".into(), timestamp: at, actor: "ann".into(), payload: p };
        let v: Value = serde_json::from_slice(&event_json(&e, "task:t")).unwrap();
        assert_eq!(
            v,
            json!({"type": "task_failed", "seq": 7, "channel": "task:t", "timestamp": "2023-11-14T22:13:20.123Z",
                   "actor": "ann", "data": {"task_id": "t", "status": "failed", "progress": 40, "error": "boom"}})
        );
    }

    #[test]
    fn an_unknown_event_type_is_refused() {
        let err = payload("execution_paused", json!({"execution_id": "x", "status": "running"})).unwrap_err();
        assert!(err.to_string().contains("unknown event type 'execution_paused'"), "{err}");
    }

    /// Every execution and approval event the domain makes, in order.
    fn golden_events() -> Vec<crate::domain::EventPayload> {
        use crate::domain::{Approval, ApprovalRequest, DecisionKind, Execution, Report};
        let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap();
        let now = at(1_700_000_000_123);
        let mut out = Vec::new();
        let (mut e, ev) = Execution::create(
            "x1".into(),
            "bot".into(),
            json!({"prompt": "hi"}),
            Some("t1".into()),
            "ten",
            "ann",
            now,
        )
        .unwrap();
        out.push(ev);
        out.push(e.start("s1", now).unwrap());
        for r in [
            Report::Thinking { text: "hmm".into() },
            Report::ToolCall {
                tool_call_id: "c1".into(),
                tool: "search".into(),
                arguments: json!({"q": "x", "n": 2.5}),
            },
            Report::ToolResult {
                tool_call_id: "c1".into(),
                result: json!(["a", {"b": null}]),
                is_error: false,
            },
            Report::MessageDelta { text: "Hel".into() },
            Report::SubagentStart { name: "sub".into(), detail: "d".into() },
            Report::SubagentEnd { name: "sub".into(), detail: "".into() },
        ] {
            out.push(e.report(r, now).unwrap());
        }
        let (a, ev) = Approval::request(
            "ap1".into(),
            "x1",
            ApprovalRequest {
                tool_call_id: "c2".into(),
                action: "rm".into(),
                arguments: json!({"path": "/tmp"}),
                allowed_decisions: vec![DecisionKind::Approve, DecisionKind::Edit],
                arguments_schema: Some(json!({"required": ["path"]})),
                deadline: Some(chrono::DateTime::from_timestamp(1_900_000_000, 456_789_000).unwrap()),
                deadline_decision: None,
            },
            "ten",
            "bot-token",
            now,
        )
        .unwrap();
        out.push(ev);
        let (a2, ev) = Approval::request(
            "ap2".into(),
            "x1",
            ApprovalRequest {
                tool_call_id: "c3".into(),
                action: "ls".into(),
                arguments: json!(null),
                allowed_decisions: vec![],
                arguments_schema: None,
                deadline: None,
                deadline_decision: None,
            },
            "ten",
            "bot-token",
            now,
        )
        .unwrap();
        out.push(ev);
        let all = [DecisionKind::Approve, DecisionKind::Reject, DecisionKind::Edit, DecisionKind::Respond];
        for (i, kind) in all.into_iter().enumerate() {
            let mut a = a.clone();
            a.allowed_decisions = all.to_vec();
            let args = (kind == DecisionKind::Edit).then(|| json!({"path": "/var"}));
            out.push(
                a.decide(kind, args, format!("m{i}"), "bob", false, at(1_700_000_001_000 + i as i64))
                    .unwrap(),
            );
        }
        let mut a2 = a2;
        out.push(a2.decide(DecisionKind::Reject, None, String::new(), "herald", true, now).unwrap());
        let (ev, _) = e.request_cancel("stop".into(), now).unwrap();
        out.push(ev);
        out.push(e.detach(now).unwrap());
        out.push(e.reattach("s2", now).unwrap());
        out.push(e.take_over("s3", now).unwrap());
        out.push(e.cancel_timed_out(at(1_800_000_000_000), now).unwrap());
        let done = |r: Report| {
            let (mut e, _) =
                Execution::create("x2".into(), "bot".into(), json!(null), None, "ten", "ann", now).unwrap();
            e.start("s1", now).unwrap();
            e.report(r, now).unwrap()
        };
        out.push(done(Report::Complete { output: "ok".into() }));
        out.push(done(Report::Error { message: "boom".into() }));
        out.push(done(Report::Cancelled { output: "part".into() }));
        let (mut q, _) =
            Execution::create("x3".into(), "bot".into(), json!(1), None, "ten", "ann", now).unwrap();
        out.push(q.request_cancel("nope".into(), now).unwrap().0);
        let (mut d, _) =
            Execution::create("x4".into(), "bot".into(), json!(1), None, "ten", "ann", now).unwrap();
        d.start("s1", now).unwrap();
        d.detach(now).unwrap();
        out.push(d.abandon(at(1_800_000_000_000), now).unwrap());
        out
    }

    /// Each event's stored form, gRPC `data` text and AG-UI events, one line each.
    fn golden_lines() -> Vec<String> {
        golden_events()
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let grpc = match crate::grpc::convert::payload(&p) {
                    crate::proto::event::Payload::ExecutionEvent(x) => {
                        format!("{} {} {}", x.execution_id, x.status, x.data)
                    }
                    crate::proto::event::Payload::ApprovalEvent(x) => {
                        format!("{} {} {}", x.approval_id, x.execution_id, x.data)
                    }
                    _ => unreachable!(),
                };
                let e = Event {
                    seq: i as u64 + 1,
                    tenant: "ten".into(),
                    timestamp: chrono::DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
                    actor: "ann".into(),
                    payload: p.clone(),
                };
                let agui = crate::agui::Translator::new("th".into(), "r".into()).push(&e);
                let stored = serde_json::to_string(&data(&p)).unwrap();
                assert_eq!(
                    payload(p.type_name(), serde_json::from_str(&stored).unwrap()).unwrap(),
                    p,
                    "round trip {stored}"
                );
                format!(
                    "{}\n  stored {stored}\n  frame {}\n  grpc {grpc}\n  agui {}",
                    p.type_name(),
                    String::from_utf8(event_json(&e, "execution:x1").to_vec()).unwrap(),
                    serde_json::to_string(&agui).unwrap()
                )
            })
            .collect()
    }

    /// Every kind of event: the execution and approval ones above and each
    /// task and agent event, with text that JSON must escape.
    fn every_event() -> Vec<Event> {
        use crate::domain::event::{AgentUpdate, TaskCreated, TaskProgress};
        use crate::domain::{AgentStatus, TaskStatus};
        let finished = |status, detail: &str| TaskFinished {
            task_id: "t\"1".into(),
            status,
            progress: 100,
            detail: detail.into(),
        };
        let tasks = [
            EventPayload::TaskCreated(TaskCreated {
                task_id: "t\"1".into(),
                title: "Crème \u{1F600} \\ \n".into(),
                description: String::new(),
                agent_id: Some("a1".into()),
                status: TaskStatus::Pending,
            }),
            EventPayload::TaskProgress(TaskProgress {
                task_id: "t\"1".into(),
                status: TaskStatus::InProgress,
                progress: 50,
                step: "s\t".into(),
                tool: "grep".into(),
                message: "<\u{7}>".into(),
                error: true,
            }),
            EventPayload::TaskCompleted(finished(TaskStatus::Completed, "ok")),
            EventPayload::TaskFailed(finished(TaskStatus::Failed, "boom")),
            EventPayload::TaskCancelled(finished(TaskStatus::Cancelled, "stop")),
            EventPayload::AgentUpdate(AgentUpdate {
                agent_id: "a1".into(),
                status: AgentStatus::Online,
                name: "Ann".into(),
                agent_type: "bot".into(),
                capabilities: vec!["x".into(), "y\"".into()],
            }),
        ];
        let at = chrono::DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        tasks
            .into_iter()
            .chain(golden_events())
            .enumerate()
            .map(|(i, payload)| Event {
                seq: 10_000_000_000 + i as u64,
                tenant: "ten".into(),
                timestamp: at,
                actor: "ann \"the\" \u{1}admin".into(),
                payload,
            })
            .collect()
    }

    /// A replay frames an event from its stored `data` text; the bytes must
    /// be those of the event encoded from its payload, and the text must load
    /// back into the payload it was written from.
    #[test]
    fn a_stored_event_frames_as_its_payload_does() {
        let events = every_event();
        assert_eq!(events.len(), 6 + golden_events().len());
        for e in events {
            let stored = serde_json::to_string(&data(&e.payload)).unwrap();
            for channel in ["task_updates", "execution:x1", "task:t\"1"] {
                assert_eq!(
                    String::from_utf8(event_json_stored(&e, channel, &stored).to_vec()).unwrap(),
                    String::from_utf8(event_json(&e, channel).to_vec()).unwrap(),
                );
            }
            assert_eq!(payload_from_text(e.payload.type_name(), &stored).unwrap(), e.payload, "{stored}");
        }
        let err = payload_from_text("execution_paused", r#"{"execution_id":"x","status":"running"}"#);
        assert!(err.unwrap_err().to_string().contains("unknown event type 'execution_paused'"));
    }

    /// `Event::is_on` answers as `Event::channels` does, for every kind of
    /// event and channel.
    #[test]
    fn an_event_is_on_exactly_its_channels() {
        use crate::domain::Channel;
        let channels = [
            Channel::TaskUpdates,
            Channel::AgentStatus,
            Channel::Approvals,
            Channel::Task("t\"1".into()),
            Channel::Task("x1".into()),
            Channel::Task("a1".into()),
            Channel::Agent("a1".into()),
            Channel::Agent("t\"1".into()),
            Channel::Execution("x1".into()),
            Channel::Execution("x2".into()),
            Channel::Execution("t\"1".into()),
        ];
        let mut on = 0;
        for e in every_event() {
            for ch in &channels {
                assert_eq!(e.is_on(ch), e.channels().contains(ch), "{} on {ch}", e.payload.type_name());
                on += usize::from(e.is_on(ch));
            }
        }
        assert!(on > every_event().len(), "every event is on one channel at least; some on two");
    }

    /// `tests/data/event_forms.txt` was written by the untyped events (before
    /// `ExecutionKind`/`ApprovalKind`, commit 2f89ca3): the log, the socket,
    /// gRPC and AG-UI must keep seeing exactly those bytes, and every stored
    /// form must load back into the event it came from.
    #[test]
    fn every_execution_and_approval_event_keeps_its_wire_forms() {
        let want = include_str!("../tests/data/event_forms.txt");
        let got = golden_lines().join("\n") + "\n";
        assert_eq!(got.lines().count(), want.lines().count());
        for (g, w) in got.lines().zip(want.lines()) {
            // The envelope's keys follow `EventJson`'s field order since
            // /openapi.json derives its schema from it; the frame is compared as
            // JSON, every other form byte for byte.
            match (g.strip_prefix("  frame "), w.strip_prefix("  frame ")) {
                (Some(g), Some(w)) => assert_eq!(
                    serde_json::from_str::<Value>(g).unwrap(),
                    serde_json::from_str::<Value>(w).unwrap()
                ),
                _ => assert_eq!(g, w),
            }
        }
    }
}

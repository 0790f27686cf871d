//! The event's one JSON form. Every surface that shows an event as JSON takes
//! it from here: the WebSocket bridge's frames and the compatibility routes'
//! `data`, the HTTP listings, SSE, the Redis link between nodes, and the
//! `data` column of the event log. gRPC carries the same `data` object as a
//! string (`grpc::convert`).
//!
//! - [`data`] / [`payload`]: a payload to its snake_case `data` object and
//!   back (from its type name and that object: the log's and Redis' form).
//! - [`event_value`] / [`event_json`]: the envelope
//!   `{"type", "seq", "channel", "timestamp", "actor", "data"}`; the bytes are
//!   what the hub caches per delivery ([`crate::hub::Delivery::json`]), so N
//!   subscribers cost one encoding.

use bytes::Bytes;
use chrono::SecondsFormat;
use serde_json::{Value, json};

use crate::domain::{Event, EventPayload};

/// An event's time as clients see it: RFC 3339, milliseconds, `Z`.
pub fn timestamp(e: &Event) -> String {
    e.timestamp.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The event on `channel` as JSON: the same on the socket, over SSE and in
/// HTTP listings.
pub fn event_value(e: &Event, channel: &str) -> Value {
    json!({
        "type": e.payload.type_name(),
        "seq": e.seq,
        "channel": channel,
        "timestamp": timestamp(e),
        "actor": e.actor,
        "data": data(&e.payload),
    })
}

/// [`event_value`] serialized: valid UTF-8 JSON text.
pub fn event_json(e: &Event, channel: &str) -> Bytes {
    Bytes::from(event_value(e, channel).to_string())
}

/// The payload's `data` object, as clients see it and the log stores it.
pub fn data(payload: &EventPayload) -> Value {
    use EventPayload as P;
    let v = match payload {
        P::TaskCreated(p) => serde_json::to_value(p),
        P::TaskProgress(p) => serde_json::to_value(p),
        P::TaskCompleted(p) | P::TaskFailed(p) | P::TaskCancelled(p) => serde_json::to_value(p),
        P::AgentUpdate(p) => serde_json::to_value(p),
        P::Execution(p) => serde_json::to_value(p),
        P::Approval(p) => serde_json::to_value(p),
    };
    rename_detail(payload, v.expect("payloads always serialize"))
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
    use EventPayload as P;
    use serde_json::from_value as from;
    Ok(match event_type {
        "task_created" => P::TaskCreated(from(data)?),
        "task_progress" => P::TaskProgress(from(data)?),
        "task_completed" => P::TaskCompleted(from(data)?),
        "task_failed" => P::TaskFailed(from(data)?),
        "task_cancelled" => P::TaskCancelled(from(data)?),
        "agent_update" => P::AgentUpdate(from(data)?),
        kind if data.get("approval_id").is_some() => {
            let mut a: crate::domain::event::ApprovalEvent = from(data)?;
            a.kind = kind.into();
            strip(&mut a.data, &["approval_id", "execution_id"]);
            P::Approval(a)
        }
        kind => {
            let mut e: crate::domain::event::ExecutionEvent = from(data)?;
            e.kind = kind.into();
            strip(&mut e.data, &["execution_id", "status"]);
            P::Execution(e)
        }
    })
}

/// `#[serde(flatten)]` also collects the named fields into the rest; drop them.
fn strip(data: &mut Value, keys: &[&str]) {
    if let Some(obj) = data.as_object_mut() {
        for k in keys {
            obj.remove(*k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TaskStatus;
    use crate::domain::event::TaskFinished;

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
}

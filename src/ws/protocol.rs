//! The JSON protocol of `GET /ws`: client frames in, server frames out. Event
//! frames are a faithful translation of the gRPC `Event`:
//! `{"type", "seq", "channel", "timestamp", "actor", "data"}`.

use axum::extract::ws::Utf8Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::domain::AppError;
use crate::hub::Delivery;

/// Close codes the bridge uses (also in README.md).
pub mod close {
    /// Normal closure: the agent-progress socket after `completed` / `failed`.
    pub const NORMAL: u16 = 1000;
    /// Herald is restarting: reconnect and resume from the last seq.
    pub const SERVICE_RESTART: u16 = 1012;
    /// Herald failed internally (logged once); reconnect and resume.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The agent-progress socket saw no event for its idle timeout.
    pub const IDLE_TIMEOUT: u16 = 4000;
    /// The token expired and was not refreshed.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// The peer did not answer pings.
    pub const PING_TIMEOUT: u16 = 4002;
    /// Policy violation: far past the message rate limit (control pings included).
    pub const POLICY: u16 = 1008;
    /// Too slow: the outbound queue overflowed; resume from the last seq.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// The node is at its stream limit (`HERALD_MAX_STREAMS`): try another
    /// node or later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Subscribe {
        channel: Option<String>,
        #[serde(default, alias = "cursor", alias = "last_seq")]
        after_seq: Option<u64>,
    },
    Unsubscribe {
        channel: Option<String>,
    },
    Ping,
    RefreshToken {
        token: Option<String>,
    },
    /// Run an agent (the approval loop's start); the connection is subscribed to the execution.
    Execute {
        agent_id: Option<String>,
        #[serde(default)]
        input: Value,
        task_id: Option<String>,
    },
    Cancel {
        execution_id: Option<String>,
        #[serde(default)]
        reason: String,
    },
    Approve {
        #[serde(alias = "request_id", alias = "id")]
        approval_id: Option<String>,
        #[serde(default, alias = "comment")]
        message: String,
    },
    Reject {
        #[serde(alias = "request_id", alias = "id")]
        approval_id: Option<String>,
        #[serde(default, alias = "reason")]
        message: String,
    },
    Edit {
        #[serde(alias = "request_id", alias = "id")]
        approval_id: Option<String>,
        #[serde(alias = "edited_arguments", alias = "args")]
        arguments: Option<Value>,
        #[serde(default, alias = "comment")]
        message: String,
    },
    Respond {
        #[serde(alias = "request_id", alias = "id")]
        approval_id: Option<String>,
        #[serde(default, alias = "text", alias = "response")]
        message: String,
    },
}

/// The types a client may send, for the error message about an unknown one.
pub const CLIENT_TYPES: &str =
    "subscribe, unsubscribe, ping, refresh_token, execute, cancel, approve, reject, edit, respond";

impl ClientFrame {
    /// Parses a text frame, telling invalid JSON, an unknown type and a
    /// malformed known type apart.
    pub fn parse(text: &str) -> Result<Self, AppError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| AppError::invalid(format!("invalid JSON: {e}")))?;
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| AppError::invalid("every message needs a string field 'type'"))?
            .to_string();
        serde_json::from_value(value).map_err(|e| {
            if e.to_string().contains("unknown variant") {
                AppError::invalid(format!("unknown message type '{kind}'; expected one of {CLIENT_TYPES}"))
            } else {
                AppError::invalid(format!("malformed '{kind}' message: {e}"))
            }
        })
    }
}

pub fn required(field: &str, v: Option<String>) -> Result<String, AppError> {
    v.filter(|s| !s.is_empty()).ok_or_else(|| AppError::invalid(format!("missing field '{field}'")))
}

/// The one mapping from an error to a JSON frame.
pub fn error_frame(e: &AppError) -> String {
    e.log_if_internal();
    json!({ "type": "error", "code": e.code(), "message": e.public_message() }).to_string()
}

/// The event frame of a delivery: its JSON, encoded once and shared by all
/// subscribers. Checking it is UTF-8 is a pass over bytes the socket copies
/// anyway; the hub caches bytes so that one encoding serves every surface.
pub fn event_frame(d: &Delivery) -> Utf8Bytes {
    Utf8Bytes::try_from(d.json()).expect("encode makes UTF-8 JSON")
}

/// Sent before a delivery whose outbox collapsed older progress reports of
/// its task (slow consumer): which seqs were skipped, so a client that needs
/// every report resumes from its cursor.
pub fn collapsed_frame(d: &Delivery) -> Option<Utf8Bytes> {
    let c = d.collapsed?;
    let frame = json!({
        "type": "progress_collapsed",
        "channel": &*d.channel,
        "task_id": d.resource_id(),
        "first_seq": c.first_seq,
        "last_seq": c.last_seq,
        "count": c.count,
    });
    Some(Utf8Bytes::from(frame.to_string()))
}

/// Sent after `subscribed` when a client joins a task's (`task_snapshot`) or
/// an execution's (`execution_snapshot`) channel without a cursor: the state
/// as stored; events with a greater seq follow.
pub fn snapshot_frame(kind: &str, channel: &str, seq: u64, state: &impl serde::Serialize) -> String {
    json!({ "type": kind, "seq": seq, "channel": channel, "data": state }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_tells_errors_apart() {
        assert!(ClientFrame::parse("invalid json {{{").unwrap_err().to_string().contains("invalid JSON"));
        let unknown = ClientFrame::parse(r#"{"type":"unknown_type","data":{}}"#).unwrap_err();
        assert!(unknown.to_string().contains("unknown message type 'unknown_type'"));
        let ok =
            ClientFrame::parse(r#"{"type":"subscribe","channel":"task_updates","after_seq":7}"#).unwrap();
        assert!(matches!(ok, ClientFrame::Subscribe { after_seq: Some(7), .. }));
    }
}

//! The one event envelope and its payloads. Payloads serialize to the snake_case
//! JSON `data` object that WebSocket clients see and that the log stores.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::agent::AgentStatus;
use super::channel::{Channel, TOPIC_AGENTS, TOPIC_TASKS};
use super::task::TaskStatus;

/// A stored event. `seq` is global, gap-free and only grows (see `storage`).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub seq: u64,
    pub tenant: String,
    pub timestamp: DateTime<Utc>,
    pub actor: String,
    pub payload: EventPayload,
}

/// An event before the log has given it a sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub tenant: String,
    pub timestamp: DateTime<Utc>,
    pub actor: String,
    pub payload: EventPayload,
}

impl NewEvent {
    pub fn with_seq(self, seq: u64) -> Event {
        Event {
            seq,
            tenant: self.tenant,
            timestamp: self.timestamp,
            actor: self.actor,
            payload: self.payload,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum EventPayload {
    TaskCreated(TaskCreated),
    TaskProgress(TaskProgress),
    TaskCompleted(TaskFinished),
    TaskFailed(TaskFinished),
    TaskCancelled(TaskFinished),
    AgentUpdate(AgentUpdate),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCreated {
    pub task_id: String,
    pub title: String,
    pub description: String,
    pub agent_id: Option<String>,
    pub status: TaskStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskProgress {
    pub task_id: String,
    pub status: TaskStatus,
    pub progress: u8,
    pub step: String,
    pub tool: String,
    pub message: String,
    pub error: bool,
}

/// Completed, failed and cancelled share one shape; `detail` is the result,
/// the error or the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFinished {
    pub task_id: String,
    pub status: TaskStatus,
    pub progress: u8,
    #[serde(alias = "result", alias = "error", alias = "reason")]
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentUpdate {
    pub agent_id: String,
    pub status: AgentStatus,
    pub name: String,
    #[serde(rename = "type")]
    pub agent_type: String,
    pub capabilities: Vec<String>,
}

impl EventPayload {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::TaskCreated(_) => "task_created",
            Self::TaskProgress(_) => "task_progress",
            Self::TaskCompleted(_) => "task_completed",
            Self::TaskFailed(_) => "task_failed",
            Self::TaskCancelled(_) => "task_cancelled",
            Self::AgentUpdate(_) => "agent_update",
        }
    }

    /// The topic channel every event of this kind goes to.
    pub fn topic(&self) -> &'static str {
        match self {
            Self::AgentUpdate(_) => TOPIC_AGENTS,
            _ => TOPIC_TASKS,
        }
    }

    /// The resource channel: `task:{id}` or `agent:{id}`.
    pub fn resource(&self) -> Channel {
        match self {
            Self::TaskCreated(p) => Channel::Task(p.task_id.clone()),
            Self::TaskProgress(p) => Channel::Task(p.task_id.clone()),
            Self::TaskCompleted(p) | Self::TaskFailed(p) | Self::TaskCancelled(p) => {
                Channel::Task(p.task_id.clone())
            }
            Self::AgentUpdate(p) => Channel::Agent(p.agent_id.clone()),
        }
    }

    /// True for the last event a task will ever have.
    pub fn is_terminal(&self) -> bool {
        match self {
            Self::TaskCompleted(_) | Self::TaskFailed(_) | Self::TaskCancelled(_) => true,
            Self::TaskProgress(p) => p.status.is_terminal(),
            _ => false,
        }
    }

    /// Progress reports of a running task may be collapsed to the latest one for
    /// a slow consumer; nothing else may be dropped.
    pub fn is_collapsible(&self) -> bool {
        matches!(self, Self::TaskProgress(p) if !p.status.is_terminal())
    }

    /// The JSON `data` object, as clients see it.
    pub fn data_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("payloads always serialize");
        let data = v.get_mut("data").map(serde_json::Value::take).unwrap_or_default();
        self.rename_detail(data)
    }

    fn rename_detail(&self, mut data: serde_json::Value) -> serde_json::Value {
        let name = match self {
            Self::TaskCompleted(_) => "result",
            Self::TaskFailed(_) => "error",
            Self::TaskCancelled(_) => "reason",
            _ => return data,
        };
        if let Some(obj) = data.as_object_mut()
            && let Some(detail) = obj.remove("detail")
        {
            obj.insert(name.into(), detail);
        }
        data
    }

    /// Rebuilds a payload from its stored type name and data.
    pub fn from_stored(event_type: &str, data: serde_json::Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(serde_json::json!({ "type": event_type, "data": data }))
    }
}

impl Event {
    /// Both channels the event is published on.
    pub fn channels(&self) -> [Channel; 2] {
        let topic = match self.payload.topic() {
            TOPIC_AGENTS => Channel::AgentStatus,
            _ => Channel::TaskUpdates,
        };
        [topic, self.payload.resource()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_round_trips_through_its_stored_form() {
        let p = EventPayload::TaskFailed(TaskFinished {
            task_id: "t".into(),
            status: TaskStatus::Failed,
            progress: 40,
            detail: "boom".into(),
        });
        let data = p.data_json();
        assert_eq!(data["error"], "boom");
        assert_eq!(data["status"], "failed");
        assert_eq!(EventPayload::from_stored("task_failed", data).unwrap(), p);
    }
}

//! The one event envelope and its payloads. Payloads derive the serde form of
//! their snake_case JSON `data` object; `crate::encode` owns the JSON itself.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::agent::AgentStatus;
use super::channel::{Channel, TOPIC_AGENTS, TOPIC_APPROVALS, TOPIC_TASKS};
use super::execution::ExecutionStatus;
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

#[derive(Debug, Clone, PartialEq)]
pub enum EventPayload {
    TaskCreated(TaskCreated),
    TaskProgress(TaskProgress),
    TaskCompleted(TaskFinished),
    TaskFailed(TaskFinished),
    TaskCancelled(TaskFinished),
    AgentUpdate(AgentUpdate),
    /// Everything an execution does: `execution_created`, `execution_started`,
    /// the executor's `thinking`, `tool_call`, `tool_result`, `message_delta`,
    /// `subagent_start`, `subagent_end`, `complete`, `error`, and
    /// `cancel_requested`, `cancelled`, `executor_detached`, `executor_reattached`.
    Execution(ExecutionEvent),
    /// `approval_required`, `approved`, `rejected`, `edited`, `responded`.
    Approval(ApprovalEvent),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionEvent {
    pub execution_id: String,
    #[serde(skip)]
    pub kind: String,
    pub status: ExecutionStatus,
    #[serde(flatten)]
    pub data: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalEvent {
    pub approval_id: String,
    pub execution_id: String,
    #[serde(skip)]
    pub kind: String,
    #[serde(flatten)]
    pub data: serde_json::Value,
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
    pub fn type_name(&self) -> &str {
        match self {
            Self::Execution(e) => &e.kind,
            Self::Approval(a) => &a.kind,
            Self::TaskCreated(_) => "task_created",
            Self::TaskProgress(_) => "task_progress",
            Self::TaskCompleted(_) => "task_completed",
            Self::TaskFailed(_) => "task_failed",
            Self::TaskCancelled(_) => "task_cancelled",
            Self::AgentUpdate(_) => "agent_update",
        }
    }

    /// The topic channel every event of this kind goes to ("" for none).
    pub fn topic(&self) -> &'static str {
        match self {
            Self::AgentUpdate(_) => TOPIC_AGENTS,
            Self::Approval(_) => TOPIC_APPROVALS,
            Self::Execution(_) => "",
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
            Self::Execution(e) => Channel::Execution(e.execution_id.clone()),
            Self::Approval(a) => Channel::Execution(a.execution_id.clone()),
        }
    }

    /// True for the last event a task or execution will ever have.
    pub fn is_terminal(&self) -> bool {
        match self {
            Self::TaskCompleted(_) | Self::TaskFailed(_) | Self::TaskCancelled(_) => true,
            Self::TaskProgress(p) => p.status.is_terminal(),
            Self::Execution(e) => e.status.is_terminal(),
            _ => false,
        }
    }

    /// Progress reports of a running task may be collapsed to the latest one for
    /// a slow consumer; nothing else may be dropped.
    pub fn is_collapsible(&self) -> bool {
        matches!(self, Self::TaskProgress(p) if !p.status.is_terminal())
    }
}

/// One entry of a task's progress history: every event that changed its
/// status or progress. The history is read from the event log itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressEntry {
    pub seq: u64,
    pub progress: u8,
    pub status: TaskStatus,
    pub step: String,
    pub tool: String,
    pub message: String,
    pub error: bool,
    pub at: DateTime<Utc>,
}

impl ProgressEntry {
    pub fn from_event(e: &Event) -> Option<Self> {
        let (status, progress, step, tool, message, error) = match &e.payload {
            EventPayload::TaskProgress(p) => {
                (p.status, p.progress, p.step.clone(), p.tool.clone(), p.message.clone(), p.error)
            }
            EventPayload::TaskCompleted(p) | EventPayload::TaskCancelled(p) => {
                (p.status, p.progress, String::new(), String::new(), p.detail.clone(), false)
            }
            EventPayload::TaskFailed(p) => {
                (p.status, p.progress, String::new(), String::new(), p.detail.clone(), true)
            }
            _ => return None,
        };
        Some(Self { seq: e.seq, progress, status, step, tool, message, error, at: e.timestamp })
    }
}

impl Event {
    /// The channels the event is published on: its topic, if any, and its resource.
    pub fn channels(&self) -> Vec<Channel> {
        let topic = match self.payload.topic() {
            TOPIC_AGENTS => Some(Channel::AgentStatus),
            TOPIC_APPROVALS => Some(Channel::Approvals),
            TOPIC_TASKS => Some(Channel::TaskUpdates),
            _ => None,
        };
        topic.into_iter().chain([self.payload.resource()]).collect()
    }
}

//! The one event envelope and its payloads. Payloads derive the serde form of
//! their snake_case JSON `data` object; `crate::encode` owns the JSON itself.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::agent::AgentStatus;
use super::approval::DecisionKind;
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
    /// Everything an execution does ([`ExecutionKind`]).
    Execution(ExecutionEvent),
    /// An approval asked for or decided ([`ApprovalKind`]).
    Approval(ApprovalEvent),
}

/// An event of one execution: which execution, its status after the event,
/// and what happened. In JSON the three share one flat `data` object
/// (`crate::encode`).
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionEvent {
    pub execution_id: String,
    pub status: ExecutionStatus,
    pub kind: ExecutionKind,
}

/// What happened to an execution; the variant is the event's type name.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecutionKind {
    Created(StatusChange),
    Started(StatusChange),
    Thinking(Text),
    ToolCall(ToolCall),
    ToolResult(ToolResult),
    MessageDelta(Text),
    SubagentStart(Subagent),
    SubagentEnd(Subagent),
    Complete(Output),
    Error(ExecutionError),
    CancelRequested(StatusChange),
    Cancelled(Cancelled),
    ExecutorDetached(StatusChange),
    ExecutorReattached(StatusChange),
}

impl ExecutionKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Created(_) => "execution_created",
            Self::Started(_) => "execution_started",
            Self::Thinking(_) => "thinking",
            Self::ToolCall(_) => "tool_call",
            Self::ToolResult(_) => "tool_result",
            Self::MessageDelta(_) => "message_delta",
            Self::SubagentStart(_) => "subagent_start",
            Self::SubagentEnd(_) => "subagent_end",
            Self::Complete(_) => "complete",
            Self::Error(_) => "error",
            Self::CancelRequested(_) => "cancel_requested",
            Self::Cancelled(_) => "cancelled",
            Self::ExecutorDetached(_) => "executor_detached",
            Self::ExecutorReattached(_) => "executor_reattached",
        }
    }
}

/// A change of an execution's status made by Herald (created, started, a
/// cancel, an executor gone or back): the execution's agent and task, the
/// reason (`detail`, for cancels), and its output and error so far. Absent
/// values are `null` in JSON, not left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusChange {
    pub agent_id: String,
    pub task_id: Option<String>,
    pub detail: Option<String>,
    pub output: Option<String>,
    pub error: Option<String>,
}

/// `thinking` and `message_delta`: a piece of text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Text {
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub tool_call_id: String,
    pub tool: String,
    /// The tool's arguments, as the agent gave them.
    pub arguments: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolResult {
    pub tool_call_id: String,
    /// What the tool returned, as the agent gave it.
    pub result: serde_json::Value,
    pub is_error: bool,
}

/// `subagent_start` and `subagent_end`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subagent {
    pub name: String,
    pub detail: String,
}

/// `complete`, and `cancelled` as the executor acknowledges it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub output: String,
}

/// `error`: the agent's, or Herald's (`"by": "herald"`) when the executor went
/// away and did not come back in time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionError {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<ErrorSource>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorSource {
    Herald,
}

/// `cancelled` has two shapes: Herald cancelling (a queued execution, or a
/// cancel the executor did not acknowledge in time) is a status change with
/// the reason in `detail`; the executor acknowledging says what it produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Cancelled {
    // First: only this shape has `agent_id`, which tells the two apart.
    ByHerald(StatusChange),
    ByExecutor(Output),
}

/// An event of one approval of an execution.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalEvent {
    pub approval_id: String,
    pub execution_id: String,
    pub kind: ApprovalKind,
}

/// What happened to an approval; the variant is the event's type name.
#[derive(Debug, Clone, PartialEq)]
pub enum ApprovalKind {
    Required(ApprovalRequired),
    Approved(ApprovalDecided),
    Rejected(ApprovalDecided),
    Edited(ApprovalDecided),
    Responded(ApprovalDecided),
}

impl ApprovalKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Required(_) => "approval_required",
            Self::Approved(_) => "approved",
            Self::Rejected(_) => "rejected",
            Self::Edited(_) => "edited",
            Self::Responded(_) => "responded",
        }
    }

    /// The decision event of `d`, named for its kind.
    pub fn decided(d: ApprovalDecided) -> Self {
        match d.decision {
            DecisionKind::Approve => Self::Approved(d),
            DecisionKind::Reject => Self::Rejected(d),
            DecisionKind::Edit => Self::Edited(d),
            DecisionKind::Respond => Self::Responded(d),
        }
    }
}

/// `approval_required`: what the agent asks to do and how it may be decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequired {
    pub tool_call_id: String,
    pub action: String,
    /// The arguments the agent proposes, as it gave them.
    pub arguments: serde_json::Value,
    pub allowed_decisions: Vec<DecisionKind>,
    /// A JSON schema the edited arguments must meet, as the agent gave it.
    pub arguments_schema: Option<serde_json::Value>,
    pub deadline: Option<DateTime<Utc>>,
    pub deadline_decision: DecisionKind,
    pub requested_by: String,
}

/// `approved`, `rejected`, `edited` and `responded`: the decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalDecided {
    pub tool_call_id: String,
    pub action: String,
    pub decision: DecisionKind,
    /// The arguments finally approved (null for reject and respond).
    pub arguments: serde_json::Value,
    pub message: String,
    pub decided_by: String,
    pub decided_at: DateTime<Utc>,
    pub by_deadline: bool,
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
            Self::Execution(e) => e.kind.type_name(),
            Self::Approval(a) => a.kind.type_name(),
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

    /// Whether `channel` is one of [`Event::channels`], without building them
    /// (a replay asks for every event of a page).
    pub fn is_on(&self, channel: &Channel) -> bool {
        use EventPayload as P;
        let resource = match &self.payload {
            P::TaskCreated(p) => &p.task_id,
            P::TaskProgress(p) => &p.task_id,
            P::TaskCompleted(p) | P::TaskFailed(p) | P::TaskCancelled(p) => &p.task_id,
            P::AgentUpdate(p) => &p.agent_id,
            P::Execution(e) => &e.execution_id,
            P::Approval(a) => &a.execution_id,
        };
        match channel {
            Channel::TaskUpdates => self.payload.topic() == TOPIC_TASKS,
            Channel::AgentStatus => self.payload.topic() == TOPIC_AGENTS,
            Channel::Approvals => self.payload.topic() == TOPIC_APPROVALS,
            Channel::Task(id) => {
                id == resource
                    && matches!(
                        self.payload,
                        P::TaskCreated(_)
                            | P::TaskProgress(_)
                            | P::TaskCompleted(_)
                            | P::TaskFailed(_)
                            | P::TaskCancelled(_)
                    )
            }
            Channel::Agent(id) => id == resource && matches!(self.payload, P::AgentUpdate(_)),
            Channel::Execution(id) => {
                id == resource && matches!(self.payload, P::Execution(_) | P::Approval(_))
            }
        }
    }
}

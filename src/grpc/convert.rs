//! Protobuf <-> domain conversions for the gRPC transport. Requests become
//! domain inputs through `TryFrom`, refusing what is missing or malformed.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use crate::app::dispatch::ExecutorCommand;
use crate::domain::ProgressEntry;
use crate::domain::event::{AgentUpdate, TaskCreated, TaskFinished, TaskProgress};
use crate::domain::execution::{NotJson, parse_json};
use crate::domain::{
    Agent, AgentRegistration, AgentStatus, AppError, Approval, ApprovalRequest, Decision, DecisionKind,
    Event, EventPayload, Execution, ExecutionStatus, NewTask, ProgressReport, Report, Task, TaskStatus,
};
use crate::proto as pb;

pub fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

pub fn task_status(s: TaskStatus) -> pb::TaskStatus {
    match s {
        TaskStatus::Pending => pb::TaskStatus::Pending,
        TaskStatus::InProgress => pb::TaskStatus::InProgress,
        TaskStatus::Completed => pb::TaskStatus::Completed,
        TaskStatus::Failed => pb::TaskStatus::Failed,
        TaskStatus::Cancelled => pb::TaskStatus::Cancelled,
    }
}

pub fn task_status_from(v: i32) -> Result<TaskStatus, AppError> {
    match pb::TaskStatus::try_from(v) {
        Ok(pb::TaskStatus::Pending) => Ok(TaskStatus::Pending),
        Ok(pb::TaskStatus::InProgress) => Ok(TaskStatus::InProgress),
        Ok(pb::TaskStatus::Completed) => Ok(TaskStatus::Completed),
        Ok(pb::TaskStatus::Failed) => Ok(TaskStatus::Failed),
        Ok(pb::TaskStatus::Cancelled) => Ok(TaskStatus::Cancelled),
        _ => Err(AppError::invalid(format!("status {v} is not a task status"))),
    }
}

pub fn execution_status(s: ExecutionStatus) -> pb::ExecutionStatus {
    match s {
        ExecutionStatus::Queued => pb::ExecutionStatus::Queued,
        ExecutionStatus::Running => pb::ExecutionStatus::Running,
        ExecutionStatus::AwaitingApproval => pb::ExecutionStatus::AwaitingApproval,
        ExecutionStatus::Detached => pb::ExecutionStatus::Detached,
        ExecutionStatus::Completed => pb::ExecutionStatus::Completed,
        ExecutionStatus::Failed => pb::ExecutionStatus::Failed,
        ExecutionStatus::Cancelled => pb::ExecutionStatus::Cancelled,
    }
}

pub fn agent_status(s: AgentStatus) -> pb::AgentStatus {
    match s {
        AgentStatus::Created => pb::AgentStatus::Created,
        AgentStatus::Online => pb::AgentStatus::Online,
        AgentStatus::Busy => pb::AgentStatus::Busy,
        AgentStatus::Idle => pb::AgentStatus::Idle,
        AgentStatus::Offline => pb::AgentStatus::Offline,
    }
}

/// The status a heartbeat reports; unset means online.
pub fn heartbeat_status(v: i32) -> Result<AgentStatus, AppError> {
    match pb::AgentStatus::try_from(v) {
        Ok(pb::AgentStatus::Unspecified | pb::AgentStatus::Online) => Ok(AgentStatus::Online),
        Ok(pb::AgentStatus::Busy) => Ok(AgentStatus::Busy),
        Ok(pb::AgentStatus::Idle) => Ok(AgentStatus::Idle),
        _ => Err(AppError::invalid("a heartbeat may report ONLINE, BUSY or IDLE")),
    }
}

/// An id the request must name (not blank).
pub fn required_id(field: &str, id: &str) -> Result<String, AppError> {
    required_text(field, id)
}

/// A text field that must not be blank (a tool's or an action's name).
pub fn required_text(field: &str, value: &str) -> Result<String, AppError> {
    if value.trim().is_empty() {
        return Err(AppError::invalid(format!("{field} is required")));
    }
    Ok(value.to_string())
}

impl From<Task> for pb::Task {
    fn from(t: Task) -> Self {
        Self {
            status: task_status(t.status).into(),
            progress: t.progress.into(),
            created_at: Some(timestamp(t.created_at)),
            updated_at: Some(timestamp(t.updated_at)),
            completed_at: t.completed_at.map(timestamp),
            id: t.id,
            title: t.title,
            description: t.description,
            agent_id: t.agent_id.unwrap_or_default(),
            step: t.step,
            tool: t.tool,
            message: t.message,
            error: t.error,
            result: t.result,
            created_by: t.created_by,
            tenant: t.tenant,
            last_seq: t.last_seq,
        }
    }
}

impl From<Agent> for pb::Agent {
    fn from(a: Agent) -> Self {
        Self {
            status: agent_status(a.status).into(),
            created_at: Some(timestamp(a.created_at)),
            last_seen_at: Some(timestamp(a.last_seen_at)),
            id: a.id,
            name: a.name,
            r#type: a.agent_type,
            capabilities: a.capabilities,
            tenant: a.tenant,
            last_seq: a.last_seq,
        }
    }
}

impl From<ProgressEntry> for pb::ProgressEntry {
    fn from(p: ProgressEntry) -> Self {
        Self {
            progress: p.progress.into(),
            status: task_status(p.status).into(),
            step: p.step,
            tool: p.tool,
            message: p.message,
            error: p.error,
            at: Some(timestamp(p.at)),
            seq: p.seq,
        }
    }
}

impl TryFrom<pb::CreateTaskRequest> for NewTask {
    type Error = AppError;
    fn try_from(r: pb::CreateTaskRequest) -> Result<Self, AppError> {
        Ok(Self {
            title: r.title,
            description: r.description,
            agent_id: Some(r.agent_id).filter(|a| !a.is_empty()),
        })
    }
}

impl TryFrom<pb::ReportProgressRequest> for ProgressReport {
    type Error = AppError;
    fn try_from(r: pb::ReportProgressRequest) -> Result<Self, AppError> {
        required_id("id", &r.id)?;
        Ok(Self {
            progress: r.progress.into(),
            step: r.step,
            tool: r.tool,
            message: r.message,
            error: r.error,
        })
    }
}

impl TryFrom<pb::RegisterAgentRequest> for AgentRegistration {
    type Error = AppError;
    fn try_from(r: pb::RegisterAgentRequest) -> Result<Self, AppError> {
        Ok(Self {
            id: required_id("agent_id", &r.agent_id)?,
            name: r.name,
            agent_type: r.r#type,
            capabilities: r.capabilities,
        })
    }
}

fn finished(p: TaskFinished) -> (String, i32, u32, String) {
    (p.task_id, task_status(p.status).into(), p.progress.into(), p.detail)
}

pub fn payload(p: &EventPayload) -> pb::event::Payload {
    use pb::event::Payload;
    match p.clone() {
        EventPayload::TaskCreated(TaskCreated { task_id, title, description, agent_id, status }) => {
            Payload::TaskCreated(pb::TaskCreated {
                task_id,
                title,
                description,
                agent_id: agent_id.unwrap_or_default(),
                status: task_status(status).into(),
            })
        }
        EventPayload::TaskProgress(TaskProgress {
            task_id,
            status,
            progress,
            step,
            tool,
            message,
            error,
        }) => Payload::TaskProgress(pb::TaskProgress {
            task_id,
            status: task_status(status).into(),
            progress: progress.into(),
            step,
            tool,
            message,
            error,
        }),
        EventPayload::TaskCompleted(f) => {
            let (task_id, status, progress, result) = finished(f);
            Payload::TaskCompleted(pb::TaskCompleted { task_id, status, progress, result })
        }
        EventPayload::TaskFailed(f) => {
            let (task_id, status, progress, error) = finished(f);
            Payload::TaskFailed(pb::TaskFailed { task_id, status, progress, error })
        }
        EventPayload::TaskCancelled(f) => {
            let (task_id, status, progress, reason) = finished(f);
            Payload::TaskCancelled(pb::TaskCancelled { task_id, status, progress, reason })
        }
        EventPayload::AgentUpdate(AgentUpdate { agent_id, status, name, agent_type, capabilities }) => {
            Payload::AgentUpdate(pb::AgentUpdate {
                agent_id,
                status: agent_status(status).into(),
                name,
                r#type: agent_type,
                capabilities,
            })
        }
        EventPayload::Execution(e) => Payload::ExecutionEvent(pb::ExecutionEvent {
            status: execution_status(e.status).into(),
            data: crate::encode::execution_data(&e.kind).to_string(),
            execution_id: e.execution_id,
        }),
        EventPayload::Approval(a) => Payload::ApprovalEvent(pb::ApprovalEvent {
            data: crate::encode::approval_data(&a.kind).to_string(),
            approval_id: a.approval_id,
            execution_id: a.execution_id,
        }),
    }
}

pub fn event(e: &Event, channel: &str) -> pb::Event {
    pb::Event {
        seq: e.seq,
        channel: channel.to_string(),
        r#type: e.payload.type_name().to_string(),
        timestamp: Some(timestamp(e.timestamp)),
        actor: e.actor.clone(),
        resource: e.payload.resource().to_string(),
        payload: Some(payload(&e.payload)),
        progress_collapsed: None,
    }
}

/// A delivered event, with the progress reports collapsed before it, if any.
pub fn delivery(d: &crate::hub::Delivery) -> pb::Event {
    let mut e = event(&d.event, &d.channel);
    e.progress_collapsed = d.collapsed.map(|c| pb::ProgressCollapsed {
        task_id: d.resource_id(),
        first_seq: c.first_seq,
        last_seq: c.last_seq,
        count: c.count,
    });
    e
}

pub fn decision_kind(k: DecisionKind) -> pb::DecisionKind {
    match k {
        DecisionKind::Approve => pb::DecisionKind::Approve,
        DecisionKind::Reject => pb::DecisionKind::Reject,
        DecisionKind::Edit => pb::DecisionKind::Edit,
        DecisionKind::Respond => pb::DecisionKind::Respond,
    }
}

pub fn decision_kind_from(v: i32) -> Result<DecisionKind, AppError> {
    match pb::DecisionKind::try_from(v) {
        Ok(pb::DecisionKind::Approve) => Ok(DecisionKind::Approve),
        Ok(pb::DecisionKind::Reject) => Ok(DecisionKind::Reject),
        Ok(pb::DecisionKind::Edit) => Ok(DecisionKind::Edit),
        Ok(pb::DecisionKind::Respond) => Ok(DecisionKind::Respond),
        _ => Err(AppError::invalid("kind must be APPROVE, REJECT, EDIT or RESPOND")),
    }
}

fn json_or_empty(v: &serde_json::Value) -> String {
    if v.is_null() { String::new() } else { v.to_string() }
}

fn time_from(t: &Timestamp) -> Result<DateTime<Utc>, AppError> {
    DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
        .ok_or_else(|| AppError::invalid("timestamp out of range"))
}

impl From<Execution> for pb::Execution {
    fn from(e: Execution) -> Self {
        Self {
            status: execution_status(e.status).into(),
            input: json_or_empty(&e.input),
            created_at: Some(timestamp(e.created_at)),
            updated_at: Some(timestamp(e.updated_at)),
            id: e.id,
            agent_id: e.agent_id,
            task_id: e.task_id.unwrap_or_default(),
            output: e.output,
            error: e.error,
            cancel_requested: e.cancel_requested,
            created_by: e.created_by,
            tenant: e.tenant,
            last_seq: e.last_seq,
        }
    }
}

impl From<Decision> for pb::Decision {
    fn from(d: Decision) -> Self {
        Self {
            kind: decision_kind(d.kind).into(),
            arguments: json_or_empty(&d.arguments),
            message: d.message,
            decided_by: d.decided_by,
            decided_at: Some(timestamp(d.decided_at)),
            by_deadline: d.by_deadline,
        }
    }
}

impl From<Approval> for pb::Approval {
    fn from(a: Approval) -> Self {
        Self {
            arguments: json_or_empty(&a.arguments),
            allowed_decisions: a.allowed_decisions.iter().map(|k| decision_kind(*k).into()).collect(),
            arguments_schema: a.arguments_schema.as_ref().map(|s| s.to_string()).unwrap_or_default(),
            deadline: a.deadline.map(timestamp),
            deadline_decision: decision_kind(a.deadline_decision).into(),
            status: if a.decision.is_some() {
                pb::ApprovalStatus::Decided
            } else {
                pb::ApprovalStatus::Pending
            }
            .into(),
            requested_at: Some(timestamp(a.requested_at)),
            decision: a.decision.map(Into::into),
            id: a.id,
            execution_id: a.execution_id,
            tool_call_id: a.tool_call_id,
            action: a.action,
            requested_by: a.requested_by,
            tenant: a.tenant,
            last_seq: a.last_seq,
        }
    }
}

impl From<ExecutorCommand> for pb::ExecutorCommand {
    fn from(c: ExecutorCommand) -> Self {
        use pb::executor_command::Command as C;
        let command = match c {
            ExecutorCommand::Execute { execution, resumed } => C::Execute(pb::ExecuteCommand {
                input: json_or_empty(&execution.input),
                execution_id: execution.id,
                task_id: execution.task_id.unwrap_or_default(),
                resumed,
            }),
            ExecutorCommand::Cancel { execution_id, reason } => {
                C::Cancel(pb::CancelCommand { execution_id, reason })
            }
            ExecutorCommand::Decision { approval, decision } => C::Decision(pb::DecisionCommand {
                execution_id: approval.execution_id,
                approval_id: approval.id,
                tool_call_id: approval.tool_call_id,
                decision: Some(decision.into()),
            }),
        };
        Self { command: Some(command) }
    }
}

impl TryFrom<pb::report_event_request::Event> for Report {
    type Error = AppError;
    fn try_from(e: pb::report_event_request::Event) -> Result<Self, AppError> {
        use pb::report_event_request::Event as E;
        Ok(match e {
            E::Thinking(t) => Report::Thinking { text: t.text },
            E::ToolCall(t) => Report::ToolCall {
                tool_call_id: required_id("tool_call.tool_call_id", &t.tool_call_id)?,
                tool: required_text("tool_call.tool", &t.tool)?,
                arguments: parse_json("tool_call.arguments", &t.arguments, NotJson::Refuse)?,
            },
            E::ToolResult(t) => Report::ToolResult {
                tool_call_id: required_id("tool_result.tool_call_id", &t.tool_call_id)?,
                result: parse_json("tool_result.result", &t.result, NotJson::Text)?,
                is_error: t.is_error,
            },
            E::MessageDelta(m) => Report::MessageDelta { text: m.text },
            E::SubagentStart(s) => Report::SubagentStart { name: s.name, detail: s.detail },
            E::SubagentEnd(s) => Report::SubagentEnd { name: s.name, detail: s.detail },
            E::Complete(c) => Report::Complete { output: c.output },
            E::Error(e) => Report::Error { message: e.message },
            E::Cancelled(c) => Report::Cancelled { output: c.output },
        })
    }
}

impl TryFrom<pb::RequestApprovalRequest> for ApprovalRequest {
    type Error = AppError;
    fn try_from(r: pb::RequestApprovalRequest) -> Result<Self, AppError> {
        let schema = parse_json("arguments_schema", &r.arguments_schema, NotJson::Refuse)?;
        Ok(Self {
            tool_call_id: required_id("tool_call_id", &r.tool_call_id)?,
            action: required_text("action", &r.action)?,
            arguments: parse_json("arguments", &r.arguments, NotJson::Refuse)?,
            allowed_decisions: r
                .allowed_decisions
                .into_iter()
                .map(decision_kind_from)
                .collect::<Result<_, _>>()?,
            arguments_schema: (!schema.is_null()).then_some(schema),
            deadline: r.deadline.as_ref().map(time_from).transpose()?,
            deadline_decision: match r.deadline_decision {
                0 => None,
                k => Some(decision_kind_from(k)?),
            },
        })
    }
}

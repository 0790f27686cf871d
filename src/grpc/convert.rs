//! Protobuf <-> domain conversions for the gRPC transport. Requests become
//! domain inputs through `TryFrom`, refusing what is missing or malformed.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use crate::domain::event::{AgentUpdate, TaskCreated, TaskFinished, TaskProgress};
use crate::domain::{
    Agent, AgentRegistration, AgentStatus, AppError, Event, EventPayload, ExecutionStatus, NewTask,
    ProgressReport, Task, TaskStatus,
};
use crate::proto as pb;
use crate::storage::ProgressEntry;

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

pub fn required_id(field: &str, id: &str) -> Result<String, AppError> {
    if id.trim().is_empty() {
        return Err(AppError::invalid(format!("{field} is required")));
    }
    Ok(id.to_string())
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
            data: e.data.to_string(),
            execution_id: e.execution_id,
        }),
        EventPayload::Approval(a) => Payload::ApprovalEvent(pb::ApprovalEvent {
            data: a.data.to_string(),
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
    }
}

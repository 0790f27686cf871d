//! Rows to domain values and back. A row that does not decode is an internal
//! error: the schema and the domain disagree.

use chrono::{DateTime, TimeZone, Utc};

use super::entities::{agent, event, progress, task};
use crate::domain::{Agent, AgentStatus, AppError, Event, EventPayload, Task, TaskStatus};

pub fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn corrupt(what: &str, value: &str) -> AppError {
    AppError::internal(anyhow::anyhow!("stored {what} '{value}' is not valid"))
}

pub fn task_from_row(m: task::Model) -> Result<Task, AppError> {
    Ok(Task {
        status: TaskStatus::parse(&m.status).ok_or_else(|| corrupt("task status", &m.status))?,
        id: m.id,
        tenant: m.tenant,
        title: m.title,
        description: m.description,
        agent_id: m.agent_id,
        progress: m.progress.clamp(0, 100) as u8,
        step: m.step,
        tool: m.tool,
        message: m.message,
        error: m.error,
        result: m.result,
        created_by: m.created_by,
        created_at: time(m.created_at),
        updated_at: time(m.updated_at),
        completed_at: m.completed_at.map(time),
        last_seq: m.last_seq as u64,
    })
}

pub fn task_to_row(t: &Task) -> task::Model {
    task::Model {
        id: t.id.clone(),
        tenant: t.tenant.clone(),
        title: t.title.clone(),
        description: t.description.clone(),
        agent_id: t.agent_id.clone(),
        status: t.status.as_str().into(),
        progress: t.progress.into(),
        step: t.step.clone(),
        tool: t.tool.clone(),
        message: t.message.clone(),
        error: t.error.clone(),
        result: t.result.clone(),
        created_by: t.created_by.clone(),
        created_at: millis(t.created_at),
        updated_at: millis(t.updated_at),
        completed_at: t.completed_at.map(millis),
        last_seq: t.last_seq as i64,
    }
}

pub fn agent_from_row(m: agent::Model) -> Result<Agent, AppError> {
    Ok(Agent {
        status: AgentStatus::parse(&m.status).ok_or_else(|| corrupt("agent status", &m.status))?,
        capabilities: serde_json::from_str(&m.capabilities)
            .map_err(|_| corrupt("agent capabilities", &m.capabilities))?,
        id: m.id,
        tenant: m.tenant,
        name: m.name,
        agent_type: m.agent_type,
        created_at: time(m.created_at),
        last_seen_at: time(m.last_seen_at),
        last_seq: m.last_seq as u64,
    })
}

pub fn agent_to_row(a: &Agent) -> agent::Model {
    agent::Model {
        tenant: a.tenant.clone(),
        id: a.id.clone(),
        name: a.name.clone(),
        agent_type: a.agent_type.clone(),
        capabilities: serde_json::to_string(&a.capabilities).expect("strings serialize"),
        status: a.status.as_str().into(),
        created_at: millis(a.created_at),
        last_seen_at: millis(a.last_seen_at),
        last_seq: a.last_seq as i64,
    }
}

pub fn event_from_row(m: event::Model) -> Result<Event, AppError> {
    let data: serde_json::Value =
        serde_json::from_str(&m.data).map_err(|_| corrupt("event data", &m.data))?;
    let payload =
        EventPayload::from_stored(&m.event_type, data).map_err(|_| corrupt("event", &m.event_type))?;
    Ok(Event {
        seq: m.seq as u64,
        tenant: m.tenant,
        timestamp: time(m.created_at),
        actor: m.actor,
        payload,
    })
}

pub fn event_to_row(e: &Event) -> event::Model {
    event::Model {
        seq: e.seq as i64,
        tenant: e.tenant.clone(),
        topic: e.payload.topic().into(),
        resource: e.payload.resource().to_string(),
        event_type: e.payload.type_name().into(),
        actor: e.actor.clone(),
        created_at: millis(e.timestamp),
        data: serde_json::to_string(&e.payload.data_json()).expect("json serializes"),
    }
}

/// One row of the progress history, written for every event that changes a
/// task's status or progress.
pub fn progress_row(e: &Event) -> Option<progress::Model> {
    let (task_id, status, pct, step, tool, message, error) = match &e.payload {
        EventPayload::TaskProgress(p) => (
            &p.task_id,
            p.status,
            p.progress,
            p.step.clone(),
            p.tool.clone(),
            p.message.clone(),
            p.error,
        ),
        EventPayload::TaskCompleted(p) | EventPayload::TaskCancelled(p) => (
            &p.task_id,
            p.status,
            p.progress,
            String::new(),
            String::new(),
            p.detail.clone(),
            false,
        ),
        EventPayload::TaskFailed(p) => (
            &p.task_id,
            p.status,
            p.progress,
            String::new(),
            String::new(),
            p.detail.clone(),
            true,
        ),
        _ => return None,
    };
    Some(progress::Model {
        seq: e.seq as i64,
        task_id: task_id.clone(),
        progress: pct.into(),
        status: status.as_str().into(),
        step,
        tool,
        message,
        error,
        created_at: millis(e.timestamp),
    })
}

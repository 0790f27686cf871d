//! Rows to domain values and back. A row that does not decode is an internal
//! error: the schema and the domain disagree.

use chrono::{DateTime, TimeZone, Utc};

use super::StoredEvent;
use super::entities::{agent, approval, event, execution, task};
use crate::domain::{
    Agent, AgentStatus, AppError, Approval, DecisionKind, Event, Execution, ExecutionStatus, Task, TaskStatus,
};

pub fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A stored timestamp (milliseconds since the epoch); one out of chrono's
/// range is a corrupt row, not 1970.
pub fn time(ms: i64) -> Result<DateTime<Utc>, AppError> {
    Utc.timestamp_millis_opt(ms).single().ok_or_else(|| corrupt("timestamp", &ms.to_string()))
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
        created_at: time(m.created_at)?,
        updated_at: time(m.updated_at)?,
        completed_at: m.completed_at.map(time).transpose()?,
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
        created_at: time(m.created_at)?,
        last_seen_at: time(m.last_seen_at)?,
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
    Ok(stored_event_from_row(m)?.event)
}

/// An event with its `data` column's text kept beside it.
pub fn stored_event_from_row(m: event::Model) -> Result<StoredEvent, AppError> {
    let event = event_from_parts(m.seq, &m.tenant, m.actor, m.created_at, &m.event_type, &m.data)?;
    Ok(StoredEvent { event, data: m.data })
}

/// An event from its stored columns; `data` is the column's JSON text.
pub fn event_from_parts(
    seq: i64,
    tenant: &str,
    actor: String,
    created_at: i64,
    event_type: &str,
    data: &str,
) -> Result<Event, AppError> {
    let payload =
        crate::encode::payload_from_text(event_type, data).map_err(|_| corrupt("event", event_type))?;
    Ok(Event { seq: seq as u64, tenant: tenant.into(), timestamp: time(created_at)?, actor, payload })
}

pub fn event_to_row(e: &Event) -> event::Model {
    let resource = e.payload.resource().to_string();
    event::Model {
        seq: e.seq as i64,
        tenant: e.tenant.clone(),
        topic: e.payload.topic().into(),
        resource_key: resource_key(&e.tenant, &resource),
        resource,
        event_type: e.payload.type_name().into(),
        actor: e.actor.clone(),
        created_at: millis(e.timestamp),
        data: serde_json::to_string(&crate::encode::data(&e.payload)).expect("json serializes"),
    }
}

/// The log's key for a resource channel (`task:{id}`, …) in a tenant: the
/// 64-bit FNV-1a hash of the tenant, a NUL and the channel, less its top bit
/// (a non-negative BIGINT). `events_by_resource_key (resource_key, seq)`
/// indexes the log by it rather than by the two strings: each batch appends
/// to one spot of that index per resource, and short integer keys make the
/// inserts cheaper (BENCHMARKS.md, "The log indexed by a resource's key").
/// Readers also compare `resource` itself, so two channels that share a key
/// never see each other's events.
///
/// Stored in every row, so it must never change; the test pins it.
pub fn resource_key(tenant: &str, resource: &str) -> i64 {
    (fnv1a(tenant.bytes().chain([0]).chain(resource.bytes())) >> 1) as i64
}

fn fnv1a(bytes: impl Iterator<Item = u8>) -> u64 {
    bytes.fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn json_text(v: &serde_json::Value) -> String {
    serde_json::to_string(v).expect("json serializes")
}

fn json_value(what: &str, s: &str) -> Result<serde_json::Value, AppError> {
    serde_json::from_str(s).map_err(|_| corrupt(what, s))
}

pub fn execution_from_row(m: execution::Model) -> Result<Execution, AppError> {
    Ok(Execution {
        status: ExecutionStatus::parse(&m.status).ok_or_else(|| corrupt("execution status", &m.status))?,
        input: json_value("execution input", &m.input)?,
        id: m.id,
        tenant: m.tenant,
        agent_id: m.agent_id,
        task_id: m.task_id,
        output: m.output,
        error: m.error,
        cancel_requested: m.cancel_requested_at.is_some(),
        cancel_requested_at: m.cancel_requested_at.map(time).transpose()?,
        executor: m.executor,
        executor_subject: m.executor_subject,
        detached_at: m.detached_at.map(time).transpose()?,
        pending_approvals: m.pending_approvals.max(0) as u32,
        created_by: m.created_by,
        created_at: time(m.created_at)?,
        updated_at: time(m.updated_at)?,
        last_seq: m.last_seq as u64,
    })
}

pub fn execution_to_row(e: &Execution) -> execution::Model {
    execution::Model {
        id: e.id.clone(),
        tenant: e.tenant.clone(),
        agent_id: e.agent_id.clone(),
        task_id: e.task_id.clone(),
        input: json_text(&e.input),
        status: e.status.as_str().into(),
        output: e.output.clone(),
        error: e.error.clone(),
        cancel_requested_at: e.cancel_requested_at.map(millis),
        executor: e.executor.clone(),
        executor_subject: e.executor_subject.clone(),
        detached_at: e.detached_at.map(millis),
        pending_approvals: e.pending_approvals as i32,
        created_by: e.created_by.clone(),
        created_at: millis(e.created_at),
        updated_at: millis(e.updated_at),
        last_seq: e.last_seq as i64,
    }
}

pub fn approval_from_row(m: approval::Model) -> Result<Approval, AppError> {
    let decision = match &m.decision {
        Some(d) => Some(serde_json::from_str(d).map_err(|_| corrupt("approval decision", d))?),
        None => None,
    };
    Ok(Approval {
        arguments: json_value("approval arguments", &m.arguments)?,
        allowed_decisions: serde_json::from_str(&m.allowed_decisions)
            .map_err(|_| corrupt("allowed decisions", &m.allowed_decisions))?,
        arguments_schema: m
            .arguments_schema
            .as_deref()
            .map(|s| json_value("arguments schema", s))
            .transpose()?,
        deadline_decision: DecisionKind::parse(&m.deadline_decision)
            .ok_or_else(|| corrupt("deadline decision", &m.deadline_decision))?,
        id: m.id,
        tenant: m.tenant,
        execution_id: m.execution_id,
        tool_call_id: m.tool_call_id,
        action: m.action,
        deadline: m.deadline.map(time).transpose()?,
        requested_by: m.requested_by,
        requested_at: time(m.requested_at)?,
        decision,
        last_seq: m.last_seq as u64,
    })
}

pub fn approval_to_row(a: &Approval) -> approval::Model {
    approval::Model {
        id: a.id.clone(),
        tenant: a.tenant.clone(),
        execution_id: a.execution_id.clone(),
        tool_call_id: a.tool_call_id.clone(),
        action: a.action.clone(),
        arguments: json_text(&a.arguments),
        allowed_decisions: serde_json::to_string(&a.allowed_decisions).expect("serializes"),
        arguments_schema: a.arguments_schema.as_ref().map(json_text),
        deadline: a.deadline.map(millis),
        deadline_decision: a.deadline_decision.as_str().into(),
        requested_by: a.requested_by.clone(),
        requested_at: millis(a.requested_at),
        decision: a.decision.as_ref().map(|d| serde_json::to_string(d).expect("serializes")),
        decided_at: a.decision.as_ref().map(|d| millis(d.decided_at)),
        last_seq: a.last_seq as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::{fnv1a, resource_key, time};

    /// The key is in every stored event: a change here would hide every
    /// earlier event from its resource's readers.
    #[test]
    fn the_resource_key_is_fnv1a_and_does_not_change() {
        // FNV-1a's published test vectors.
        assert_eq!(fnv1a("".bytes()), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a".bytes()), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a("foobar".bytes()), 0x8594_4171_f739_67e8);
        assert_eq!(resource_key("acme", "task:t1"), (fnv1a("acme\0task:t1".bytes()) >> 1) as i64);
        assert_eq!(resource_key("", "task:t1"), 0x4ac4_ca16_c576_d189);
        assert_ne!(resource_key("a", "task:t1"), resource_key("", "atask:t1"));
        assert!(resource_key("tenant", "execution:e") >= 0);
    }

    #[test]
    fn an_out_of_range_stored_timestamp_is_an_error_not_1970() {
        assert_eq!(time(1_700_000_000_123).unwrap().timestamp_millis(), 1_700_000_000_123);
        let err = time(i64::MAX).unwrap_err();
        assert_eq!(err.code(), "internal", "{err:?}");
    }
}

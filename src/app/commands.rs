//! The commands the writer applies: each loads what it needs through the unit
//! of work, applies a domain rule, and puts back the new state and its event.
//! A command that fails changes nothing.

use chrono::{DateTime, SubsecRound, Utc};

use crate::domain::{
    Actor, Agent, AgentRegistration, AgentStatus, AppError, AppResult, Approval, ApprovalRequest,
    DecisionKind, EventPayload, Execution, NewEvent, NewTask, ProgressReport, Report, Task,
};
use crate::storage::{LockKeys, UnitOfWork};

#[derive(Debug, Clone)]
pub enum Command {
    CreateTask {
        id: String,
        new: NewTask,
    },
    StartTask {
        id: String,
    },
    ReportProgress {
        id: String,
        report: ProgressReport,
    },
    CompleteTask {
        id: String,
        result: String,
    },
    FailTask {
        id: String,
        error: String,
    },
    CancelTask {
        id: String,
        reason: String,
    },
    RegisterAgent(AgentRegistration),
    Heartbeat {
        id: String,
        status: AgentStatus,
    },
    /// Sent by the liveness sweeper; re-checked under the row lock so a
    /// heartbeat that raced it wins.
    ExpireAgent {
        id: String,
        cutoff: DateTime<Utc>,
    },
    Execute {
        id: String,
        agent_id: String,
        input: serde_json::Value,
        task_id: Option<String>,
    },
    /// An attached executor takes a queued execution.
    StartExecution {
        id: String,
        executor: String,
        /// The token subject of that session.
        executor_subject: String,
    },
    /// An executor attached: it takes the executions it says it was running
    /// (`running`, from a session that is gone), then its agent's detached
    /// and queued executions.
    AttachExecutor {
        agent_id: String,
        executor: String,
        running: Vec<String>,
    },
    /// An attached executor takes a detached execution of its agent (failover).
    ReattachExecution {
        id: String,
        executor: String,
        /// The token subject of that session.
        executor_subject: String,
    },
    /// An executor's stream ended: its executions wait for it to come back.
    DetachExecutor {
        executor: String,
    },
    /// Detaches executions whose executor's node instance is not among
    /// `alive` (a node that stopped, or this node's previous boot).
    DetachDeadNodes {
        alive: Vec<String>,
    },
    /// This node's heartbeat, under its instance id (`{node_id}/{boot id}`).
    /// Through the writer like every write: on SQLite a second writer would
    /// make the writer's transactions fail with BUSY. At start-up
    /// (`retire_others`) the rows of earlier boots of the same node id go: a
    /// process restarted with a fixed `HERALD_NODE_ID` must not keep its
    /// predecessor's executor sessions looking alive.
    TouchNode {
        instance: String,
        retire_others: bool,
    },
    /// `session`: the executor session reporting (None: an admin, or refused).
    Report {
        execution_id: String,
        session: Option<String>,
        report: Report,
    },
    CancelExecution {
        id: String,
        reason: String,
    },
    /// Sent by the sweeper: fail a detached execution past the grace period,
    /// or cancel one whose cancel was not acknowledged in time.
    ExpireExecution {
        id: String,
        detached_before: DateTime<Utc>,
        cancel_before: DateTime<Utc>,
    },
    RequestApproval {
        id: String,
        execution_id: String,
        session: Option<String>,
        request: ApprovalRequest,
    },
    Decide {
        approval_id: String,
        kind: DecisionKind,
        arguments: Option<serde_json::Value>,
        message: String,
    },
    /// Sent by the sweeper when an approval's deadline passed.
    DecideByDeadline {
        approval_id: String,
    },
}

impl Command {
    /// Adds the rows this command locks by key to `keys`, so the writer can
    /// lock a whole batch's rows in one fixed order (`UnitOfWork::lock_ahead`).
    pub fn lock_keys(&self, tenant: &str, keys: &mut LockKeys) {
        match self {
            Self::StartTask { id }
            | Self::ReportProgress { id, .. }
            | Self::CompleteTask { id, .. }
            | Self::FailTask { id, .. }
            | Self::CancelTask { id, .. }
            | Self::Execute { task_id: Some(id), .. } => {
                keys.tasks.insert(id.clone());
            }
            Self::RegisterAgent(AgentRegistration { id, .. })
            | Self::Heartbeat { id, .. }
            | Self::ExpireAgent { id, .. } => {
                keys.agents.insert((tenant.to_string(), id.clone()));
            }
            Self::StartExecution { id, .. }
            | Self::ReattachExecution { id, .. }
            | Self::CancelExecution { id, .. }
            | Self::ExpireExecution { id, .. }
            | Self::Report { execution_id: id, .. }
            | Self::RequestApproval { execution_id: id, .. } => {
                keys.executions.insert(id.clone());
            }
            Self::AttachExecutor { running, .. } => keys.executions.extend(running.iter().cloned()),
            Self::Decide { approval_id, .. } | Self::DecideByDeadline { approval_id } => {
                keys.approvals.insert(approval_id.clone());
            }
            // New rows, or rows found by a query while the command runs.
            Self::CreateTask { .. }
            | Self::Execute { task_id: None, .. }
            | Self::DetachExecutor { .. }
            | Self::DetachDeadNodes { .. }
            | Self::TouchNode { .. } => {}
        }
    }
}

/// What a command leaves behind, before its events have seq numbers.
#[derive(Debug, Clone)]
pub enum Outcome {
    Task(Task),
    Agent(Agent),
    Execution(Execution),
    Approval(Approval),
    /// Executions an executor took: (execution, true when it was resumed).
    Claimed(Vec<(Execution, bool)>),
    Done,
}

impl Outcome {
    pub fn set_last_seq(&mut self, seq: u64) {
        match self {
            Self::Task(t) => t.last_seq = seq,
            Self::Agent(a) => a.last_seq = seq,
            Self::Execution(e) => e.last_seq = seq,
            Self::Approval(a) => a.last_seq = seq,
            Self::Claimed(_) | Self::Done => {}
        }
    }
}

fn emit(uow: &mut UnitOfWork, actor: &Actor, now: DateTime<Utc>, payload: EventPayload) {
    emit_in(uow, &actor.tenant, &actor.subject, now, payload);
}

/// Emits in a given tenant: for commands that span tenants (start-up).
fn emit_in(uow: &mut UnitOfWork, tenant: &str, subject: &str, now: DateTime<Utc>, payload: EventPayload) {
    uow.emit(NewEvent { tenant: tenant.into(), timestamp: now, actor: subject.into(), payload });
}

pub async fn apply(uow: &mut UnitOfWork, actor: &Actor, cmd: Command) -> AppResult<Outcome> {
    // The store keeps milliseconds; answers must equal what a later read returns.
    let now = Utc::now().trunc_subsecs(3);
    let tenant = actor.tenant.as_str();
    match cmd {
        Command::CreateTask { id, new } => {
            let (task, event) = Task::create(id, new, tenant, &actor.subject, now)?;
            uow.put_task(task.clone(), true);
            emit(uow, actor, now, event);
            Ok(Outcome::Task(task))
        }
        Command::StartTask { id } => change_task(uow, actor, &id, now, |t| t.start(now)).await,
        Command::ReportProgress { id, report } => {
            change_task(uow, actor, &id, now, |t| t.report_progress(report, now)).await
        }
        Command::CompleteTask { id, result } => {
            change_task(uow, actor, &id, now, |t| t.complete(result, now)).await
        }
        Command::FailTask { id, error } => change_task(uow, actor, &id, now, |t| t.fail(error, now)).await,
        Command::CancelTask { id, reason } => {
            change_task(uow, actor, &id, now, |t| t.cancel(reason, now)).await
        }
        Command::RegisterAgent(reg) => {
            reg.validate()?;
            let (agent, event, is_new) = match uow.agent(tenant, &reg.id).await? {
                Some(mut agent) => {
                    let event = agent.reregister(reg, now)?;
                    (agent, event, false)
                }
                None => {
                    let (agent, event) = Agent::register(reg, tenant, now)?;
                    (agent, Some(event), true)
                }
            };
            uow.put_agent(agent.clone(), is_new);
            if let Some(e) = event {
                emit(uow, actor, now, e);
            }
            Ok(Outcome::Agent(agent))
        }
        Command::Heartbeat { id, status } => {
            let mut agent = uow
                .agent(tenant, &id)
                .await?
                .ok_or_else(|| AppError::not_found(format!("agent {id} not found; register it first")))?;
            let event = agent.heartbeat(status, now)?;
            uow.put_agent(agent.clone(), false);
            if let Some(e) = event {
                emit(uow, actor, now, e);
            }
            Ok(Outcome::Agent(agent))
        }
        Command::ExpireAgent { id, cutoff } => {
            let mut agent = uow
                .agent(tenant, &id)
                .await?
                .ok_or_else(|| AppError::not_found(format!("agent {id} not found")))?;
            if let Some(e) = agent.expire(cutoff) {
                uow.put_agent(agent.clone(), false);
                emit(uow, actor, now, e);
            }
            Ok(Outcome::Agent(agent))
        }
        Command::Execute { id, agent_id, input, task_id } => {
            if let Some(t) = &task_id {
                uow.task(tenant, t).await?;
            }
            let (execution, event) =
                Execution::create(id, agent_id, input, task_id, tenant, &actor.subject, now)?;
            uow.put_execution(execution.clone(), true);
            emit(uow, actor, now, event);
            Ok(Outcome::Execution(execution))
        }
        Command::StartExecution { id, executor, executor_subject } => {
            let mut e = uow.execution(tenant, &id).await?;
            let event = e.start(&executor, now)?;
            e.executor_subject = Some(executor_subject);
            uow.put_execution(e.clone(), false);
            emit(uow, actor, now, event);
            Ok(Outcome::Execution(e))
        }
        Command::AttachExecutor { agent_id, executor, running } => {
            let mut claimed = Vec::new();
            for id in running {
                let Ok(mut e) = uow.execution(tenant, &id).await else { continue };
                // Only the same executor identity (token subject) takes a
                // running execution over; a detached one is free to claim.
                let same_subject = e.executor_subject.as_deref().is_none_or(|s| s == actor.subject);
                if e.agent_id != agent_id || !same_subject {
                    continue;
                }
                if let Some(event) = e.take_over(&executor, now) {
                    e.executor_subject = Some(actor.subject.clone());
                    uow.put_execution(e.clone(), false);
                    emit(uow, actor, now, event);
                    claimed.push((e, true));
                }
            }
            for mut e in uow.queued_executions(tenant, &agent_id).await? {
                let resumed = e.status == crate::domain::ExecutionStatus::Detached;
                let event = if resumed { e.reattach(&executor, now) } else { e.start(&executor, now).ok() };
                if let Some(event) = event {
                    e.executor_subject = Some(actor.subject.clone());
                    uow.put_execution(e.clone(), false);
                    emit(uow, actor, now, event);
                    claimed.push((e, resumed));
                }
            }
            Ok(Outcome::Claimed(claimed))
        }
        Command::ReattachExecution { id, executor, executor_subject } => {
            let mut e = uow.execution(tenant, &id).await?;
            let event = e.reattach(&executor, now).ok_or_else(|| {
                AppError::precondition(format!("execution {id} is {}, not detached", e.status.as_str()))
            })?;
            e.executor_subject = Some(executor_subject);
            uow.put_execution(e.clone(), false);
            emit(uow, actor, now, event);
            Ok(Outcome::Execution(e))
        }
        Command::DetachExecutor { executor } => {
            for e in uow.executions_of(&executor).await? {
                detach(uow, e, now);
            }
            Ok(Outcome::Done)
        }
        Command::TouchNode { instance, retire_others } => {
            uow.touch_node(&instance, retire_others, now).await?;
            Ok(Outcome::Done)
        }
        Command::DetachDeadNodes { alive } => {
            for e in uow.attached_executions().await? {
                // `{node_id}/{boot id}/{session}`: the instance is all but the last part.
                let node = e.executor.as_deref().and_then(|x| x.rsplit_once('/')).map(|(n, _)| n);
                if !node.is_some_and(|n| alive.iter().any(|a| a == n)) {
                    detach(uow, e, now);
                }
            }
            Ok(Outcome::Done)
        }
        Command::Report { execution_id, session, report } => {
            let mut e = uow.execution(tenant, &execution_id).await?;
            e.check_reporter(actor, session.as_deref())?;
            let event = e.report(report, now)?;
            uow.put_execution(e.clone(), false);
            emit(uow, actor, now, event);
            Ok(Outcome::Execution(e))
        }
        Command::CancelExecution { id, reason } => {
            let mut e = uow.execution(tenant, &id).await?;
            let (event, _) = e.request_cancel(reason, now)?;
            uow.put_execution(e.clone(), false);
            emit(uow, actor, now, event);
            Ok(Outcome::Execution(e))
        }
        Command::ExpireExecution { id, detached_before, cancel_before } => {
            let mut e = uow.execution(tenant, &id).await?;
            let event = e.abandon(detached_before, now).or_else(|| e.cancel_timed_out(cancel_before, now));
            if let Some(event) = event {
                uow.put_execution(e.clone(), false);
                emit(uow, actor, now, event);
            }
            Ok(Outcome::Execution(e))
        }
        Command::RequestApproval { id, execution_id, session, request } => {
            let mut e = uow.execution(tenant, &execution_id).await?;
            e.check_reporter(actor, session.as_deref())?;
            // An executor that restarted asks again: it gets the same approval.
            // The same key for a different request is refused, never answered
            // with another request's (maybe approved) approval.
            if let Some(existing) = uow.approval_for_call(&execution_id, &request.tool_call_id).await? {
                if !existing.same_request(&request) {
                    return Err(AppError::AlreadyExists(format!(
                        "tool_call_id '{}' of execution {execution_id} already names approval {} for '{}' \
                         with other arguments; use a new tool_call_id for a new request",
                        request.tool_call_id, existing.id, existing.action
                    )));
                }
                return Ok(Outcome::Approval(existing));
            }
            e.approval_requested(now)?;
            let (approval, event) =
                Approval::request(id, &execution_id, request, tenant, &actor.subject, now)?;
            uow.put_execution(e, false);
            uow.put_approval(approval.clone(), true);
            emit(uow, actor, now, event);
            Ok(Outcome::Approval(approval))
        }
        Command::Decide { approval_id, kind, arguments, message } => {
            decide(uow, actor, &approval_id, kind, arguments, message, false, now).await
        }
        Command::DecideByDeadline { approval_id } => {
            let a = uow.approval(tenant, &approval_id).await?;
            if !a.is_pending() || a.deadline.is_none_or(|d| d > now) {
                return Ok(Outcome::Approval(a));
            }
            decide(uow, actor, &approval_id, a.deadline_decision, None, "deadline passed".into(), true, now)
                .await
        }
    }
}

fn detach(uow: &mut UnitOfWork, mut e: Execution, now: DateTime<Utc>) {
    if let Some(event) = e.detach(now) {
        let tenant = e.tenant.clone();
        uow.put_execution(e, false);
        emit_in(uow, &tenant, "herald", now, event);
    }
}

#[allow(clippy::too_many_arguments)]
async fn decide(
    uow: &mut UnitOfWork,
    actor: &Actor,
    approval_id: &str,
    kind: DecisionKind,
    arguments: Option<serde_json::Value>,
    message: String,
    by_deadline: bool,
    now: DateTime<Utc>,
) -> AppResult<Outcome> {
    let mut a = uow.approval(&actor.tenant, approval_id).await?;
    if a.is_repeat(kind, &arguments, &message, &actor.subject) {
        return Ok(Outcome::Approval(a));
    }
    let mut e = uow.execution(&actor.tenant, &a.execution_id).await?;
    if e.status.is_terminal() && a.is_pending() {
        return Err(AppError::precondition(format!(
            "execution {} is already {}; approval {approval_id} can no longer be decided",
            e.id,
            e.status.as_str()
        )));
    }
    let event = a.decide(kind, arguments, message, &actor.subject, by_deadline, now)?;
    e.approval_decided(now);
    uow.put_execution(e, false);
    uow.put_approval(a.clone(), false);
    emit(uow, actor, now, event);
    Ok(Outcome::Approval(a))
}

async fn change_task(
    uow: &mut UnitOfWork,
    actor: &Actor,
    id: &str,
    now: DateTime<Utc>,
    change: impl FnOnce(&mut Task) -> AppResult<EventPayload>,
) -> AppResult<Outcome> {
    let mut task = uow.task(&actor.tenant, id).await?;
    let event = change(&mut task)?;
    uow.put_task(task.clone(), false);
    emit(uow, actor, now, event);
    Ok(Outcome::Task(task))
}

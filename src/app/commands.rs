//! The commands the writer applies: each loads what it needs through the unit
//! of work, applies a domain rule, and puts back the new state and its event.
//! A command that fails changes nothing.

use chrono::{DateTime, SubsecRound, Utc};

use crate::domain::{
    Actor, Agent, AgentRegistration, AgentStatus, AppError, AppResult, EventPayload, NewEvent, NewTask,
    ProgressReport, Task,
};
use crate::storage::UnitOfWork;

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
}

/// What a command leaves behind, before its events have seq numbers.
#[derive(Debug, Clone)]
pub enum Outcome {
    Task(Task),
    Agent(Agent),
}

impl Outcome {
    pub fn set_last_seq(&mut self, seq: u64) {
        match self {
            Self::Task(t) => t.last_seq = seq,
            Self::Agent(a) => a.last_seq = seq,
        }
    }
}

fn emit(uow: &mut UnitOfWork, actor: &Actor, now: DateTime<Utc>, payload: EventPayload) {
    uow.emit(NewEvent {
        tenant: actor.tenant.clone(),
        timestamp: now,
        actor: actor.subject.clone(),
        payload,
    });
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
    }
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

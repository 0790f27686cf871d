//! Executor sessions and nodes: an executor attaching takes its executions,
//! one leaving (or a node stopping) leaves them detached, and each node
//! records that it is alive. Detaching is Herald's doing: its events are by
//! `herald`, in the execution's tenant.

use chrono::{DateTime, Utc};

use super::{Command, Ctx, emit_in};
use crate::domain::{AppResult, Execution, ExecutionStatus};
use crate::storage::{LockKeys, UnitOfWork};

/// An executor attached: it takes the executions it says it was running
/// (`running`, from a session that is gone), then its agent's detached and
/// queued executions. Answers what it took, each with whether it was resumed.
#[derive(Debug, Clone)]
pub(crate) struct AttachExecutor {
    pub agent_id: String,
    pub executor: String,
    pub running: Vec<String>,
}

impl Command for AttachExecutor {
    type Output = Vec<(Execution, bool)>;

    fn lock_keys(&self, _tenant: &str, keys: &mut LockKeys) {
        keys.executions.extend(self.running.iter().cloned());
    }

    async fn apply(&self, uow: &mut UnitOfWork, cx: &Ctx<'_>) -> AppResult<Self::Output> {
        let (tenant, subject, now) = (cx.tenant(), &cx.actor.subject, cx.now);
        let mut claimed = Vec::new();
        for id in &self.running {
            let Ok(mut e) = uow.execution(tenant, id).await else { continue };
            // Only the same executor identity (token subject) takes a
            // running execution over; a detached one is free to claim.
            let same_subject = e.executor_subject.as_deref().is_none_or(|s| s == subject);
            if e.agent_id != self.agent_id || !same_subject {
                continue;
            }
            if let Some(event) = e.take_over(&self.executor, now) {
                e.executor_subject = Some(subject.clone());
                uow.put_execution(e.clone(), false);
                cx.emit(uow, event);
                claimed.push((e, true));
            }
        }
        for mut e in uow.queued_executions(tenant, &self.agent_id).await? {
            let resumed = e.status == ExecutionStatus::Detached;
            let event =
                if resumed { e.reattach(&self.executor, now) } else { e.start(&self.executor, now).ok() };
            if let Some(event) = event {
                e.executor_subject = Some(subject.clone());
                uow.put_execution(e.clone(), false);
                cx.emit(uow, event);
                claimed.push((e, resumed));
            }
        }
        Ok(claimed)
    }
}

/// An executor's stream ended: its executions wait for it to come back.
#[derive(Debug, Clone)]
pub(crate) struct DetachExecutor {
    pub executor: String,
}

impl Command for DetachExecutor {
    type Output = ();

    async fn apply(&self, uow: &mut UnitOfWork, cx: &Ctx<'_>) -> AppResult<()> {
        for e in uow.executions_of(&self.executor).await? {
            detach(uow, e, cx.now);
        }
        Ok(())
    }
}

/// Detaches executions whose executor's node instance is not among `alive`
/// (a node that stopped, or this node's previous boot).
#[derive(Debug, Clone)]
pub(crate) struct DetachDeadNodes {
    pub alive: Vec<String>,
}

impl Command for DetachDeadNodes {
    type Output = ();

    async fn apply(&self, uow: &mut UnitOfWork, cx: &Ctx<'_>) -> AppResult<()> {
        for e in uow.attached_executions().await? {
            // `{node_id}/{boot id}/{session}`: the instance is all but the last part.
            let node = e.executor.as_deref().and_then(|x| x.rsplit_once('/')).map(|(n, _)| n);
            if !node.is_some_and(|n| self.alive.iter().any(|a| a == n)) {
                detach(uow, e, cx.now);
            }
        }
        Ok(())
    }
}

/// This node's heartbeat, under its instance id (`{node_id}/{boot id}`).
/// Through the writer like every write: on SQLite a second writer would make
/// the writer's transactions fail with BUSY. At start-up (`retire_others`)
/// the rows of earlier boots of the same node id go: a process restarted
/// with a fixed `HERALD_NODE_ID` must not keep its predecessor's executor
/// sessions looking alive.
#[derive(Debug, Clone)]
pub(crate) struct TouchNode {
    pub instance: String,
    pub retire_others: bool,
}

impl Command for TouchNode {
    type Output = ();

    async fn apply(&self, uow: &mut UnitOfWork, cx: &Ctx<'_>) -> AppResult<()> {
        uow.touch_node(&self.instance, self.retire_others, cx.now).await
    }
}

fn detach(uow: &mut UnitOfWork, mut e: Execution, now: DateTime<Utc>) {
    if let Some(event) = e.detach(now) {
        let tenant = e.tenant.clone();
        uow.put_execution(e, false);
        emit_in(uow, &tenant, "herald", now, event);
    }
}
